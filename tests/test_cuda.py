"""CUDA tests (`pytest -m cuda`): stages one and two on the GPU agree with the CPU.

The whole module is skipped where CUDA is not available, so CI is unchanged.
`STPIPE_TEST_DEVICE=cpu` runs the same tests with the CPU as the device under test: every test body,
command and comparison runs on a machine without a GPU (both sides are then CPU runs, so it checks
the logic, not the GPU's numbers). The GPU host has neither Ray nor Dask: extraction and fine-tuning
run in-process (`--executor local`) and nothing here imports them. TV-L1's kernels on CUDA vs CPU
are tested in tests/test_flow_cuda.py; here flow runs inside `extract` (eager, STPIPE_FLOW_COMPILE=0,
so no compile time).

Random-init weights throughout (the GPU host may not hold ImageNet files). Tolerances, as relative
L2 errors ||device - cpu|| / ||cpu||:
  backbones, float32 (TF32 off)         1e-3
  backbones, autocast vs float32        bf16 5e-2, fp16 1e-2 (CPU probe: <= 1.2e-2 and <= 7.4e-4)
  extract stores, features              2e-2 (TF32 on, as users run it); 6e-2 with --amp bf16
  extract stores, flow                  mean |difference| <= 0.25 px, 99th percentile <= 1 px
  train-head/finetune without amp       val loss within 1% of the CPU run's (dropout 0: same samples)
  with --amp                            finite, val loss within 10% of the CPU run's
  evaluate / predict of a CPU-trained run (float32, TF32 off): loss within 1e-3 relative,
                                        probabilities within 1e-3
"""

from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import pytest
import torch

from pipeline.backbones import BACKBONES, build_backbone
from pipeline.flow import dequantize_flow
from pipeline.store import FeatureStore

DEVICE = os.environ.get("STPIPE_TEST_DEVICE", "cuda")
ON_CUDA = torch.device(DEVICE).type == "cuda"

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(),
                       reason="no CUDA device (STPIPE_TEST_DEVICE=cpu runs these tests on the CPU)"),
]

# random-init mobilenet_v2, efficientnet_b0 and googlenet give features of 1e-9..1e-13, below
# float16's range: autocast to fp16 is compared on backbones whose random features keep their scale
AMP_BACKBONES = ("tiny_resnet", "resnet50", "squeezenet1_1")


def rel_error(got: torch.Tensor | np.ndarray, want: torch.Tensor | np.ndarray) -> float:
    got, want = torch.as_tensor(got).double().cpu(), torch.as_tensor(want).double().cpu()
    return float((got - want).norm() / want.norm().clamp(min=1e-30))


@pytest.fixture
def exact_fp32():
    """TF32 off, so float32 on the GPU is compared with float32 on the CPU."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def small_input(backbone) -> torch.Tensor:
    """A small batch (64 px: every registered network still has a spatial map) of the backbone's kind."""
    channels = backbone.meta["in_channels"]
    shape = (1, channels, 8, 64, 64) if backbone.meta["kind"] == "video" else (2, channels, 64, 64)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


# ---- backbones ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_runs_on_the_device_as_on_the_cpu(name, exact_fp32):
    cpu = build_backbone(name, weights="none", device="cpu")
    on_device = copy.deepcopy(cpu).to(DEVICE)
    x = small_input(cpu)
    want = cpu.forward_features(x)
    got = on_device.forward_features(x.to(DEVICE))
    assert got.device.type == torch.device(DEVICE).type and got.dtype == torch.float32 and got.shape == want.shape
    error = rel_error(got, want)
    assert error <= 1e-3, f"{name}: relative error {error:.2e} on {DEVICE}"


@pytest.mark.parametrize("amp, tolerance", [("bf16", 5e-2), ("fp16", 1e-2)])
@pytest.mark.parametrize("name", AMP_BACKBONES)
def test_mixed_precision_stays_close_to_float32(name, amp, tolerance):
    full = build_backbone(name, weights="none", device=DEVICE)
    mixed = build_backbone(name, weights="none", device=DEVICE, amp=amp)
    mixed.load_state_dict(full.state_dict())
    x = small_input(full).to(DEVICE)
    want, got = full.forward_features(x), mixed.forward_features(x)
    assert got.dtype == torch.float32 and mixed.meta["amp"] == amp  # autocast inside, float32 out
    error = rel_error(got, want)
    assert math.isfinite(error) and error <= tolerance, f"{name} {amp}: relative error {error:.2e}"


# ---- stage one: stores made on the device vs on the CPU ------------------------------------------


EXTRACT_CASES = {  # id: (backbone, features, flow, amp)
    "tiny-pooled": ("tiny", "pooled", False, ""),
    "tiny_resnet-spatial": ("tiny_resnet", "spatial", False, ""),
    "tiny-pooled-flow": ("tiny", "pooled", True, ""),
    "tiny-spatial-flow": ("tiny", "spatial", True, ""),
    "tiny_resnet-pooled-bf16": ("tiny_resnet", "pooled", False, "bf16"),
    "tiny_video-pooled": ("tiny_video", "pooled", False, ""),
}


def extract_args(demo, store, device, backbone, features, flow, amp) -> list:
    # decoding on the CPU both sides: this compares the compute (GPU decoding: tests/test_gpu_decoding.py)
    args = ["extract", "-m", demo / "manifest.csv", "-o", store, "--backbone", backbone, "--weights", "none",
            "--features", features, "--executor", "local", "--device", device, "--decoder", "cpu"]
    if flow:
        args += ["--flow", "--flow-method", "tvl1-fastest", "--flow-short-side", "32"]
    if amp:
        args += ["--amp", amp]
    return args


@pytest.mark.parametrize("case", list(EXTRACT_CASES))
def test_extract_on_the_device_writes_the_cpu_store(case, demo, tmp_path, stpipe, monkeypatch):
    backbone, features, flow, amp = EXTRACT_CASES[case]
    monkeypatch.setenv("STPIPE_FLOW_COMPILE", "0")
    cpu_url, dev_url = tmp_path / "cpu.zarr", tmp_path / "device.zarr"
    code, _, err = stpipe(extract_args(demo, cpu_url, "cpu", backbone, features, flow, ""))
    assert code == 0, err
    code, _, err = stpipe(extract_args(demo, dev_url, DEVICE, backbone, features, flow, amp))
    assert code == 0, err
    cpu, dev = FeatureStore.open(str(cpu_url)), FeatureStore.open(str(dev_url))
    assert dev.meta["backbone"]["amp"] == (amp or None)
    ia, ib = cpu.index(), dev.index()
    assert list(ia["video_id"]) == list(ib["video_id"]) and set(ib["status"]) == {"complete"}
    assert list(ia["num_frames"]) == list(ib["num_frames"])
    tolerance = 6e-2 if amp else 2e-2
    errors, flow_diffs = [], []
    for video_id in ia["video_id"]:
        video_id = str(video_id)
        assert cpu.video_attrs(video_id)["frame_index"] == dev.video_attrs(video_id)["frame_index"]
        want, got = cpu.read(video_id, "rgb"), dev.read(video_id, "rgb")
        assert got.dtype == np.float16 and got.shape == want.shape, video_id
        errors.append(rel_error(got, want))
        if flow:
            a, b = cpu.read(video_id, "flow"), dev.read(video_id, "flow")
            assert b.dtype == a.dtype == np.uint8 and b.shape == a.shape, video_id
            bound = cpu.video_group(video_id)["flow"].attrs["bound"]
            flow_diffs.append(np.abs(dequantize_flow(b, bound=bound) - dequantize_flow(a, bound=bound)).ravel())
    assert max(errors) <= tolerance, f"{case}: relative error up to {max(errors):.2e}"
    if flow:
        diffs = np.concatenate(flow_diffs)
        mean, p99 = float(diffs.mean()), float(np.percentile(diffs, 99))
        assert mean <= 0.25 and p99 <= 1.0, f"flow: mean |difference| {mean:.3f} px, 99th percentile {p99:.3f} px"


# ---- stage two ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(demo, tmp_path_factory):
    """The demo videos through the tiny backbone, on the CPU (the features both sides train on)."""
    from pipeline.extraction import ExtractConfig
    from stages import extract

    url = str(tmp_path_factory.mktemp("cuda-store") / "tiny.zarr")
    extract.run(ExtractConfig(manifest=str(demo / "manifest.csv"), output=url, backbone="tiny", weights="none",
                              executor="local", device="cpu"))
    return url


def train_args(store, out, device, head, *amp) -> list:
    return ["train-head", "-s", store, "--head", head, "--segments", "3", "-o", out, "--epochs", "3",
            "--batch-size", "4", "--lr", "0.05", "--dropout", "0", "--device", device, *amp]


def val_loss(run_dir) -> float:
    return json.loads((run_dir / "metrics.json").read_text())["val_loss"]


@pytest.mark.parametrize("head", ["gru", "trn_multiscale"])
def test_train_head_on_the_device_matches_the_cpu(head, store, tmp_path, stpipe):
    runs = {name: tmp_path / name for name in ("cpu", "device", "device-amp")}
    for name, device, amp in (("cpu", "cpu", ["--no-amp"]), ("device", DEVICE, ["--no-amp"]),
                              ("device-amp", DEVICE, ["--amp"])):
        code, _, err = stpipe(train_args(store, runs[name], device, head, *amp))
        assert code == 0, f"{name}: {err}"
    want = val_loss(runs["cpu"])
    got, got_amp = val_loss(runs["device"]), val_loss(runs["device-amp"])
    assert abs(got - want) <= 1e-2 * want, f"{head}: val loss {got:.5f} on {DEVICE}, {want:.5f} on the CPU"
    assert math.isfinite(got_amp) and abs(got_amp - want) <= 0.1 * want, f"{head} amp: val loss {got_amp:.5f}"


@pytest.fixture(scope="module")
def cpu_run(store, tmp_path_factory):
    """A train-head run made on the CPU, for evaluate, predict and finetune on the device (amp off: the
    run's setting is what evaluate uses on CUDA, and these compare float32 with float32)."""
    from pipeline.training.config import TrainHeadConfig
    from stages import train_head

    out = tmp_path_factory.mktemp("cuda-runs") / "gru"
    train_head.run(TrainHeadConfig(store=store, out=str(out), head="gru", segments=3, epochs=2, batch_size=4,
                                   lr=0.05, dropout=0.0, device="cpu", amp=False, recipe="paper"))
    return out


def test_evaluate_on_the_device_matches_the_cpu(cpu_run, stpipe, exact_fp32):
    results = {}
    for device in ("cpu", DEVICE):
        code, out, err = stpipe(["evaluate", "--run", cpu_run, "--split", "val", "--device", device, "--json"])
        assert code == 0, err
        results[device] = json.loads(out)
    want, got = results["cpu"], results[DEVICE]
    assert got["videos"] == want["videos"]
    assert abs(got["loss"] - want["loss"]) <= 1e-3 * want["loss"] + 1e-3, (got["loss"], want["loss"])


def test_predict_on_the_device_matches_the_cpu(cpu_run, demo, stpipe, exact_fp32):
    videos = [demo / "videos" / f"{v}.mp4" for v in ("moving_left_000", "zooming_in_001")]
    results = {}
    for device in ("cpu", DEVICE):
        code, out, err = stpipe(["predict", "--run", cpu_run, *videos, "--top-k", "10", "--device", device, "--json"])
        assert code == 0, err
        results[device] = json.loads(out)
    for want, got in zip(results["cpu"], results[DEVICE]):
        assert not got["error"]
        p_want = {item["class"]: item["probability"] for item in want["top"]}
        p_got = {item["class"]: item["probability"] for item in got["top"]}
        assert p_got.keys() == p_want.keys()
        worst = max(abs(p_got[c] - p_want[c]) for c in p_want)
        assert worst <= 1e-3, f"{got['video']}: probabilities differ by up to {worst:.2e}"


def test_finetune_on_the_device_matches_the_cpu(cpu_run, demo, tmp_path, stpipe):
    base = ["finetune", "--run", cpu_run, "-m", demo / "manifest.csv", "--epochs", "1", "--batch-size", "4",
            "--loader-workers", "0", "--lr", "0.05", "--executor", "local"]
    runs = {}
    for name, device, amp in (("cpu", "cpu", ["--no-amp"]), ("device", DEVICE, ["--no-amp"]),
                              ("device-amp", DEVICE, [])):
        runs[name] = tmp_path / name
        code, _, err = stpipe([*base, "-o", runs[name], "--device", device, *amp])
        assert code == 0, f"{name}: {err}"
        assert (runs[name] / "backbone.pt").is_file()
    want = val_loss(runs["cpu"])
    got, got_amp = val_loss(runs["device"]), val_loss(runs["device-amp"])
    assert abs(got - want) <= 1e-2 * want, f"finetune: val loss {got:.5f} on {DEVICE}, {want:.5f} on the CPU"
    assert math.isfinite(got_amp) and abs(got_amp - want) <= 0.1 * want, f"finetune amp: val loss {got_amp:.5f}"
