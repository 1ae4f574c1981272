"""Stage three: end-to-end fine-tuning from a train-head run, on tiny backbones and demo videos."""

import copy
import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from pipeline.backbones import build_backbone, build_flow_backbone
from pipeline.errors import ConfigError, ManifestError, RunError, StoreError
from pipeline.extraction import ExtractConfig
from pipeline.finetune.augment import crop_flow, multiscale_box
from pipeline.finetune.config import FinetuneConfig
from pipeline.finetune.data import ClipDataset, Request, epoch_steps, shard
from pipeline.finetune.loop import Dist, evaluate
from pipeline.finetune.model import FinetuneModel, build_finetune_model
from pipeline.finetune.source import prepare
from pipeline.finetune.st_resnet import STResNetTrunks, TemporalConv, collapse_to_2d
from pipeline.progress import Advanced, Note
from pipeline.store import FeatureStore
from pipeline.training.config import TrainHeadConfig
from pipeline.training.data import load_split
from pipeline.training.loop import make_source, predict
from pipeline.training.model import build_model, load_checkpoint
from pipeline.training.tensorboard_events import EVENT_FILES
from pipeline.training.tensorboard_events import available as tensorboard_available
from pipeline.video import read_frames, read_frames_at
from stages import extract, finetune, train_head

SEGMENTS = 3


# ---- shared data: a tiny store with flow, head runs (demo videos: conftest.py) --------------------


def extract_store(demo, path, **kw):
    base = dict(manifest=str(demo / "manifest.csv"), output=str(path), backbone="tiny", weights="none",
                executor="local", batch_size=8, flow=True, flow_method="tvl1-opencv", flow_short_side=32)
    extract.run(ExtractConfig(**{**base, **kw}))
    return str(path)


@pytest.fixture(scope="module")
def store(demo, tmp_path_factory):
    """tiny backbone, cached TV-L1 flow and flow-stream features."""
    return extract_store(demo, tmp_path_factory.mktemp("stores") / "tiny.zarr", flow_features=True)


def head_run(store, out, **kw):
    base = dict(store=store, out=str(out), head="mlp", segments=SEGMENTS, epochs=2, batch_size=4, dropout=0.0,
                recipe="paper")
    train_head.run(TrainHeadConfig(**{**base, **kw}))
    return str(out)


@pytest.fixture(scope="module")
def two_stream_run(store, tmp_path_factory):
    return head_run(store, tmp_path_factory.mktemp("runs") / "head", modality="rgb+flow")


def ft_config(run, demo, out, **kw):
    base = dict(run=run, manifest=str(demo / "manifest.csv"), out=str(out), epochs=2, batch_size=4,
                loader_workers=0, lr=0.05)
    return FinetuneConfig(**{**base, **kw})


# ---- the starting point is exactly the head run -------------------------------------------------


def test_network_starts_as_the_head_run_on_its_cached_features(demo, store, two_stream_run, tmp_path):
    """Rebuilt backbones + decoded centre frames reproduce the cached features, so the fine-tune's
    first evaluation gives the head run's logits (up to the store's float16)."""
    setup = prepare(ft_config(two_stream_run, demo, tmp_path / "x"))
    assert setup.streams == ("rgb", "flow") and setup.segments == SEGMENTS and len(setup.val) == 10
    model = build_finetune_model(setup)
    pre = {s: model.backbones[s].preprocessor for s in setup.streams}
    ours = evaluate(model, ClipDataset(setup, setup.val, preprocessors=pre, train=False), num_classes=10,
                    dist=Dist(), batch_size=4, workers=0)["logits"]
    checkpoint = load_checkpoint(f"{two_stream_run}/checkpoint.pt")
    head = build_model(checkpoint["spec"])
    head.load_state_dict(checkpoint["model"])
    split = load_split(FeatureStore.open(store), "val", streams=("rgb", "flow"))
    source = make_source(split, device=torch.device("cpu"), num_segments=SEGMENTS, stats=None, max_batch=16)
    cached, _ = predict(head, source, views=1, batch_size=16)
    assert list(split.video_ids) == [v.video_id for v in setup.val]
    np.testing.assert_allclose(ours.numpy(), cached.numpy(), rtol=0, atol=2e-3 * float(cached.abs().max()) + 1e-6)


def test_training_samples_differ_by_epoch_but_not_by_worker(demo, store, two_stream_run, tmp_path):
    setup = prepare(ft_config(two_stream_run, demo, tmp_path / "x", flip=True))
    model = build_finetune_model(setup)
    pre = {s: model.backbones[s].preprocessor for s in setup.streams}
    data = ClipDataset(setup, setup.train, preprocessors=pre, train=True)
    a, b, c = data[Request(3, 1)], data[Request(3, 1)], data[Request(3, 2)]
    assert a["inputs"]["rgb"].shape == (SEGMENTS, 3, 64, 64) and a["inputs"]["flow"].shape == (SEGMENTS, 10, 64, 64)
    assert all(torch.equal(a["inputs"][s], b["inputs"][s]) for s in setup.streams)
    assert not torch.equal(a["inputs"]["rgb"], c["inputs"]["rgb"])
    steps = epoch_steps(10, batch_size=4, seed=0, epoch=1, min_last=2)
    assert [len(s) for s in steps] == [4, 4, 2] and sorted(np.concatenate(steps)) == list(range(10))
    parts = [p for r in range(2) for p in shard(steps[0], rank=r, world=2, accum=1)]
    assert sorted(np.concatenate(parts)) == sorted(steps[0])


def test_multiscale_corner_crop_and_flow_flip():
    rng = np.random.default_rng(0)
    boxes = [multiscale_box(72, 96, size=64, scales=(1, 0.875, 0.75, 0.66), max_distort=1, flip=True, rng=rng)
             for _ in range(2000)]
    sides = {b.height for b in boxes} | {b.width for b in boxes}
    assert sides == {72, 63, 54, 47} - {63} | {64}  # 63 is within 3 px of the input size, so it snaps to 64
    assert all(abs([72, 64, 54, 47].index(b.height) - [72, 64, 54, 47].index(b.width)) <= 1 for b in boxes)
    assert all(b.top + b.height <= 72 and b.left + b.width <= 96 for b in boxes)
    assert len({(b.top, b.left) for b in boxes if (b.height, b.width) == (54, 54)}) == 13  # TSN's fixed positions
    assert {b.flip for b in boxes} == {True, False}
    flow = torch.zeros(1, 2, 72, 96)
    flow[:, 0] = 2.0  # everything moves right by 2 px
    box = replace(boxes[0], top=0, left=0, height=72, width=72, flip=True)
    out = crop_flow(flow, box, 36)
    assert torch.allclose(out[:, 0], torch.full((1, 36, 36), -1.0))  # mirrored: left, and half as far at half size


# ---- end to end ---------------------------------------------------------------------------------


def test_cli_finetune_writes_the_run_dir(demo, two_stream_run, tmp_path, stpipe):
    out = tmp_path / "ft"
    code, stdout, err = stpipe(["finetune", "--run", two_stream_run, "-m", str(demo / "manifest.csv"), "-o", str(out),
                                "--epochs", "2", "--batch-size", "4", "--loader-workers", "0", "--lr", "0.05"])
    assert code == 0, err
    assert "val top-1" in stdout and "head only" in stdout and "--backbone-checkpoint" in stdout
    for name in ("config.yaml", "checkpoint.pt", "last.pt", "metrics.jsonl", "metrics.json", "curves.png",
                 "confusion.png", "backbone.pt", "backbone.json", "flow_backbone.pt", "flow_backbone.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["streams"] == ["rgb", "flow"] and metrics["failed_videos"] == 0
    assert metrics["frames_per_second"] > 0 and metrics["head_only_val_top1"] is not None
    last = torch.load(out / "last.pt", weights_only=True)
    start = build_backbone("tiny", weights="none").state_dict()
    assert not torch.equal(last["model"]["backbones.rgb.trunk.0.weight"], start["trunk.0.weight"])  # it learned
    assert torch.load(out / "checkpoint.pt", weights_only=True)["kind"] == "finetune"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert len(list(out.glob(EVENT_FILES))) == int(tensorboard_available())  # the curves, for TensorBoard
    # re-running the finished command resumes: nothing is redone
    code, stdout, _ = stpipe(["finetune", "--run", two_stream_run, "-m", str(demo / "manifest.csv"), "-o", str(out),
                              "--epochs", "2", "--batch-size", "4", "--loader-workers", "0", "--lr", "0.05"])
    assert code == 0 and "epoch   1" not in stdout


def test_resume_mid_epoch_ends_identical(demo, two_stream_run, tmp_path):
    cfg = ft_config(two_stream_run, demo, tmp_path / "a", checkpoint_every=1, batch_size=2, epochs=2)
    finetune.run(cfg)

    class Stop(Exception):
        pass

    batches = 0

    def stop_in_epoch_two(event):
        nonlocal batches
        batches += isinstance(event, Advanced) and event.task.startswith("epoch")
        if batches == 7:  # epoch 1 has 5 steps; stop inside epoch 2
            raise Stop

    interrupted = replace(cfg, out=str(tmp_path / "b"))
    with pytest.raises(Stop):
        finetune.run(interrupted, progress=stop_in_epoch_two)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["state"]["step"] == 1
    result = finetune.run(replace(interrupted, resume=True))
    assert result.resumed
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in "ab")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["train_videos"] for r in b["state"]["history"]] == [10, 10]
    for ra, rb in zip(a["state"]["history"], b["state"]["history"]):
        assert ra["val_loss"] == rb["val_loss"] and ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-6)


def test_a_run_made_with_partial_bn_continues_as_it_was_made(demo, two_stream_run, tmp_path):
    """Runs saved before `batch_norm` and `clip_grad` existed (`partial_bn`, no clipping) resume with
    what they had: their config.yaml and last.pt identity read as partial BN without clipping."""
    cfg = ft_config(two_stream_run, demo, tmp_path / "old", batch_norm="partial", clip_grad=0.0, epochs=1)
    finetune.run(cfg)
    config = yaml.safe_load((tmp_path / "old" / "config.yaml").read_text())
    config["partial_bn"] = config.pop("batch_norm") == "partial"
    del config["clip_grad"]
    (tmp_path / "old" / "config.yaml").write_text(yaml.safe_dump(config))
    last = torch.load(tmp_path / "old" / "last.pt", weights_only=False)
    last["identity"]["partial_bn"] = last["identity"].pop("batch_norm") == "partial"
    del last["identity"]["clip_grad"]
    torch.save(last, tmp_path / "old" / "last.pt")
    result = finetune.run(replace(cfg, resume=True))  # read, matched, and nothing left to train
    assert result.resumed and result.metrics["epochs"] == 1
    with pytest.raises(RunError, match="batch_norm, clip_grad"):  # today's defaults are another run
        finetune.run(ft_config(two_stream_run, demo, tmp_path / "old", epochs=1, resume=True))


# ---- ST-ResNet and partial BN -------------------------------------------------------------------


def _two_resnets():
    return (build_backbone("tiny_resnet", weights="none", device="cpu"),
            build_flow_backbone("tiny_resnet", stack=5, weights="none", device="cpu"))


def test_st_resnet_conversion_starts_equal_to_the_2d_network():
    rgb, flow = _two_resnets()
    plain = copy.deepcopy(rgb.trunk)
    reference = STResNetTrunks(copy.deepcopy(rgb.trunk), copy.deepcopy(flow.trunk), temporal=False)
    converted = STResNetTrunks(copy.deepcopy(rgb.trunk), copy.deepcopy(flow.trunk), temporal=True)
    for trunk in (plain, *reference.trunks, *converted.trunks):
        trunk.eval()
    assert converted.connections == 4 and converted.temporal_filters == 16  # the paper's 4 and 16
    torch.manual_seed(0)
    frame, stack = torch.randn(2, 1, 3, 64, 64), torch.randn(2, 1, 10, 64, 64)
    static = (frame.expand(2, 4, 3, 64, 64).flatten(0, 1), stack.expand(2, 4, 10, 64, 64).flatten(0, 1))
    converted.set_segments(4)
    with torch.no_grad():
        for want, got in zip(reference(*static), converted(*static)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        moving = (torch.randn(8, 3, 64, 64), torch.randn(8, 10, 64, 64))
        assert not torch.allclose(converted(*moving)[0], reference(*moving)[0], atol=1e-4)  # time now matters
        # collapsed for per-frame re-extraction (taps summed, residuals dropped): the original 2D trunk
        torch.testing.assert_close(collapse_to_2d(converted.trunks[0])(moving[0]), plain(moving[0]),
                                   rtol=1e-5, atol=1e-5)
    # each temporal filter is the 2D filter applied to the average of its 3 neighbours (ends repeated)
    conv = torch.nn.Conv2d(6, 5, 1)
    temporal = TemporalConv(conv, 3)
    temporal.num_segments = 4
    x = torch.randn(2 * 4, 6, 3, 3)
    clips = x.view(2, 4, 6, 3, 3)
    padded = torch.cat([clips[:, :1], clips, clips[:, -1:]], 1)
    average = (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) / 3
    torch.testing.assert_close(temporal(x), conv(average.flatten(0, 1)), rtol=1e-5, atol=1e-6)


def test_batch_norm_frozen_partial_or_training():
    backbone = build_backbone("tiny_resnet", weights="none", device="cpu")
    head = build_model({"fusion": "single", "heads": {"rgb": dict(
        name="mlp", num_classes=4, num_segments=2, dropout=0.0, proj_dim=8, in_dim=128, spatial=None, streams=["rgb"])}})
    model = FinetuneModel({"rgb": backbone}, head, batch_norm="partial")
    norms = [m for m in backbone.trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [(m.running_mean.clone(), m.weight.clone()) for m in norms]
    model.train()
    assert norms[0].training and not any(m.training for m in norms[1:])
    optimizer = torch.optim.SGD(model.parameter_groups(0.1, 1.0), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model({"rgb": torch.randn(2, 2, 3, 64, 64)})["rgb"], torch.tensor([0, 1]))
    loss.backward()
    optimizer.step()
    assert not torch.equal(norms[0].running_mean, before[0][0]) and not torch.equal(norms[0].weight, before[0][1])
    for m, (mean, weight) in zip(norms[1:], before[1:]):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.weight, weight) and not m.weight.requires_grad
    full = FinetuneModel({"rgb": build_backbone("tiny_resnet", weights="none", device="cpu")}, head, batch_norm="train")
    assert all(m.training for m in full.train().modules() if isinstance(m, torch.nn.BatchNorm2d))
    frozen_backbone = build_backbone("tiny_resnet", weights="none", device="cpu")
    frozen = FinetuneModel({"rgb": frozen_backbone}, head)  # the default
    norms = [m for m in frozen_backbone.trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    frozen.train()({"rgb": torch.randn(2, 2, 3, 64, 64)})
    assert not any(m.training or m.weight.requires_grad for m in norms)
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))


@pytest.fixture(scope="module")
def resnet_run(demo, tmp_path_factory):
    """An RGB head run on a tiny_resnet store with cached flow (no flow-stream features)."""
    where = tmp_path_factory.mktemp("resnet")
    return head_run(extract_store(demo, where / "resnet.zarr", backbone="tiny_resnet"), where / "head")


def test_st_resnet_finetune_on_a_new_motion_stream(demo, resnet_run, tmp_path):
    """The RGB head run fine-tuned as two streams with ST-ResNet fusion: the motion stream is built
    from the RGB weights (cross-modality init) and gets a new head."""
    cfg = ft_config(resnet_run, demo, tmp_path / "ft", modality="rgb+flow", fusion="st-resnet", st_stages=(4, 5),
                    epochs=1)
    result = finetune.run(cfg)
    assert result.metrics["streams"] == ["rgb", "flow"] and result.metrics["fusion"] == "st-resnet"
    exported = build_backbone("tiny_resnet", weights=str(result.backbone_files["rgb"]), device="cpu")
    state = torch.load(result.backbone_files["rgb"], weights_only=True)
    assert state["trunk.7.1.conv1.weight"].shape[-2:] == (1, 1) and state["trunk.7.1.conv1.weight"].ndim == 4
    assert exported.meta["name"] == "tiny_resnet"
    with pytest.raises(ConfigError, match="joins an appearance and a motion stream"):
        prepare(replace(cfg, modality="rgb"))


# ---- Ray Train: 2 workers = 1 worker with the same global batch -----------------------------------


@pytest.mark.ray
def test_two_ray_train_workers_equal_one(demo, store, tmp_path, monkeypatch):
    """gloo DDP over 2 CPU workers vs the in-process single worker (the same loop with world size 1).
    Every path is relative, the head run's store too (as its config.yaml records it): Ray Train
    workers run in a trial folder of their own, not in this working directory (issue 15).

    The slowest test here (Ray and two worker processes start: ~20-50 s on a busy 2-core machine)."""
    import os

    from pipeline.distributed import ray_session

    monkeypatch.chdir(tmp_path)
    run = head_run(os.path.relpath(store), "head", modality="rgb+flow")
    manifest = os.path.relpath(demo / "manifest.csv")
    finetune.run(ft_config(run, demo, "one", manifest=manifest))
    with ray_session("", num_cpus=2):
        two = finetune.run(ft_config(run, demo, "two", manifest=manifest, workers=2))
    assert two.metrics["workers"] == 2 and str(two.run_dir) == "two"
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("one", "two"))
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-5, atol=1e-6)
    assert not torch.equal(a["model"]["backbones.rgb.trunk.0.weight"],
                           build_backbone("tiny", weights="none").state_dict()["trunk.0.weight"])
    for ra, rb in zip(a["state"]["history"], b["state"]["history"]):
        assert rb["train_videos"] == ra["train_videos"]
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=1e-5) and rb["val_top1"] == ra["val_top1"]


# ---- micro-batches sized from the memory available (issue 21) -----------------------------------


def test_micro_batches_accumulate_to_the_plain_step(demo, two_stream_run, tmp_path):
    """The optimizer step is the same whatever the micro-batch: one video at a time with 4
    accumulation steps ends where the plain step of 4 does (the tiny backbone has no BatchNorm, so
    nothing depends on the micro-batch but float rounding)."""
    notes = []
    plain = finetune.run(ft_config(two_stream_run, demo, tmp_path / "plain"),
                         progress=lambda e: isinstance(e, Note) and notes.append(e.message))
    micro = finetune.run(ft_config(two_stream_run, demo, tmp_path / "micro", micro_batch=1))
    assert plain.metrics["micro_batch"]["micro_batch"] == 4 and plain.metrics["micro_batch"]["accum_steps"] == 1
    assert plain.metrics["micro_batch"]["clip_gb"] > 0  # measured
    assert micro.metrics["micro_batch"]["micro_batch"] == 1 and micro.metrics["micro_batch"]["accum_steps"] == 4
    assert any(n.startswith("micro-batch 4 video(s) x 1 accumulation step(s)") and "available" in n for n in notes)
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("plain", "micro"))
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-4, atol=1e-6)
    for ra, rb in zip(a["state"]["history"], b["state"]["history"], strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)
        assert (ra["micro_batch"], rb["micro_batch"], rb["accum_steps"]) == (4, 1, 4)


def test_clip_grad_bounds_every_step(demo, two_stream_run, tmp_path):
    """With the gradient's norm clipped at c, SGD without momentum or decay moves the weights by at
    most lr x c per step; without clipping the same steps move them further."""
    base = dict(epochs=1, momentum=0.0, weight_decay=0.0, lr=0.05)
    start = finetune.run(ft_config(two_stream_run, demo, tmp_path / "start", **base, clip_grad=1e-12))
    clipped = finetune.run(ft_config(two_stream_run, demo, tmp_path / "clipped", **base, clip_grad=0.01))
    free = finetune.run(ft_config(two_stream_run, demo, tmp_path / "free", **base, clip_grad=0.0))
    a, b, c = (load_checkpoint(r.run_dir / "last.pt") for r in (start, clipped, free))
    steps = b["state"]["history"][0]["train_videos"] // 4 + 1

    def moved(x):
        return sum(float((x["model"][k].float() - a["model"][k].float()).pow(2).sum()) for k in a["model"]
                   if a["model"][k].is_floating_point()) ** 0.5

    assert 0 < moved(b) <= 0.05 * 0.01 * steps * 1.001
    assert moved(c) > 0.05 * 0.01 * steps


def test_micro_batch_fits_the_budget():
    from pipeline.errors import RunError
    from pipeline.finetune.sizing import BUDGET, fit
    from pipeline.memory import Available

    gb = 10**9
    free = Available(int(10 * gb / BUDGET), "MemAvailable")  # a budget of 10 GB
    assert fit(2 * gb, 1 * gb, free, share=32) == 4  # (10 - 1) // 2
    assert fit(2 * gb, 1 * gb, free, share=3) == 3  # never more than the worker's share
    assert fit(2 * gb, 1 * gb, free, share=32, local_workers=2) == 2  # two workers share the machine
    assert fit(20 * gb, 1 * gb, free, share=32) == 1  # over the budget but it fits what is free: one at a time
    with pytest.raises(RunError, match=r"not enough memory to fine-tune even one clip .* lower --segments"):
        fit(30 * gb, 1 * gb, free, share=32)


def test_one_clip_that_cannot_fit_stops_before_any_work(demo, two_stream_run, tmp_path, monkeypatch, stpipe):
    import pipeline.finetune.sizing as sizing
    from pipeline.memory import Available

    monkeypatch.setattr(sizing, "available", lambda device: Available(1000, "MemAvailable"))
    out = tmp_path / "ft"
    code, stdout, err = stpipe(["finetune", "--run", two_stream_run, "-m", str(demo / "manifest.csv"), "-o", str(out),
                                "--epochs", "1", "--batch-size", "4", "--loader-workers", "0"])
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("stpipe: error: not enough memory to fine-tune even one clip (3 segments through rgb "
                           "tiny, flow tiny)") and "0.0 GB (MemAvailable) is available" in line
    assert "--segments" in line and not (out / "checkpoint.pt").exists()  # not even the first evaluation ran


def test_measuring_leaves_the_network_as_it_was(demo, two_stream_run, tmp_path):
    from pipeline.finetune.sizing import measure

    setup = prepare(ft_config(two_stream_run, demo, tmp_path / "x", batch_norm="train"))
    model = build_finetune_model(setup)
    model.eval()
    before = copy.deepcopy(model.state_dict())
    like = {s: torch.zeros(1, SEGMENTS, p.channels, p.crop_size, p.crop_size)
            for s, p in ((s, model.backbones[s].preprocessor) for s in setup.streams)}
    sized = measure(model, setup, device=torch.device("cpu"), share=8, amp=False, dtype=torch.bfloat16,
                    inputs_like=like)
    assert 1 <= sized.micro_batch <= 8 and sized.clip_bytes > 0 and sized.available.bytes > 0
    assert not model.training and all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_peak_memory_of_a_piece_of_work():
    from pipeline.memory import Peak, available

    with Peak("cpu") as peak:
        x = torch.ones(50_000_000)  # 200 MB, touched
        del x
    assert 180e6 < peak.bytes < 400e6
    assert available("cpu").bytes > 0


# ---- stage two benefits: re-extraction with the fine-tuned backbone ------------------------------


def test_reextract_with_the_finetuned_backbone(demo, store, two_stream_run, tmp_path):
    result = finetune.run(ft_config(two_stream_run, demo, tmp_path / "ft", epochs=1))
    path = result.backbone_files["rgb"]
    exported = torch.load(path, weights_only=True)
    best = load_checkpoint(tmp_path / "ft" / "checkpoint.pt")["model"]
    assert all(torch.equal(v, best[f"backbones.rgb.{k}"]) for k, v in exported.items())  # the best network's
    # what extract loads is the file: make it visibly different from the store's backbone
    exported["trunk.0.weight"] = exported["trunk.0.weight"] * 2
    torch.save(exported, path)
    new = extract_store(demo, tmp_path / "ft.zarr", flow=False, backbone_checkpoint=str(path))
    tuned = build_backbone("tiny", weights=str(path), device="cpu")
    frames = torch.from_numpy(read_frames(demo / "videos" / "moving_left_000.mp4", short_side=72))
    want = tuned.forward_features(tuned.preprocess(frames)).numpy()
    got = FeatureStore.open(new).read("moving_left_000", "rgb")[0].astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-3)
    old = FeatureStore.open(store).read("moving_left_000", "rgb")[0].astype(np.float32)
    assert not np.allclose(old, got, rtol=1e-2, atol=1e-3)
    assert FeatureStore.open(new).meta["backbone"]["weights"] == str(path.resolve())
    head_run(new, tmp_path / "head2", epochs=1)  # stage two trains on the new cache
    assert (tmp_path / "head2" / "checkpoint.pt").is_file()
    with pytest.raises(ConfigError, match="was fine-tuned from tiny; pass --backbone tiny"):
        extract.run(ExtractConfig(manifest=str(demo / "manifest.csv"), output=str(tmp_path / "x.zarr"),
                                  backbone="tiny_resnet", backbone_checkpoint=str(path), executor="local"))


# ---- bad input ----------------------------------------------------------------------------------


def _copy_run(run, dest, **config_changes):
    shutil.copytree(run, dest)
    config = yaml.safe_load((dest / "config.yaml").read_text())
    config.update(config_changes)
    (dest / "config.yaml").write_text(yaml.safe_dump(config))
    return str(dest)


def test_a_run_whose_store_is_gone_or_different(demo, store, two_stream_run, resnet_run, tmp_path):
    gone = _copy_run(two_stream_run, tmp_path / "gone", store=str(tmp_path / "missing.zarr"))
    with pytest.raises(StoreError, match=r"was trained on store .*missing.zarr, which is gone"):
        prepare(ft_config(gone, demo, tmp_path / "x"))
    moved = _copy_run(resnet_run, tmp_path / "moved", store=store)  # tiny's 64-d features, not tiny_resnet's 128
    with pytest.raises(StoreError, match=r"rgb features have shape \[64\]; run .*moved was trained on \[128\]"):
        prepare(ft_config(moved, demo, tmp_path / "x"))
    checkpoint = load_checkpoint(f"{moved}/checkpoint.pt")  # same shapes, another extract config
    checkpoint["store"] = dict(checkpoint["store"], streams={"rgb": {"views": 1, "frame_shape": [64]}})
    torch.save(checkpoint, f"{moved}/checkpoint.pt")
    with pytest.raises(StoreError, match="made by a different extract config"):
        prepare(ft_config(moved, demo, tmp_path / "x"))


def test_segments_a_fixed_length_head_cannot_take(demo, two_stream_run, tmp_path):
    with pytest.raises(ConfigError, match="--segments 5: head 'mlp' was trained on 3 segments"):
        prepare(ft_config(two_stream_run, demo, tmp_path / "x", segments=5))


def test_a_manifest_missing_store_videos(demo, two_stream_run, tmp_path):
    rows = list(csv.DictReader(open(demo / "manifest.csv")))
    short = tmp_path / "short.csv"
    with open(short, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["video_id"] != "moving_right_001")
    shutil.copy(demo / "manifest.classes.txt", tmp_path / "short.classes.txt")
    with pytest.raises(ManifestError, match=r"1 of the store's 10 train videos are not in this manifest \(first: "
                                            r"'moving_right_001'\)"):
        prepare(replace(ft_config(two_stream_run, demo, tmp_path / "x"), manifest=str(short), root=str(demo)))


def test_a_corrupt_video_is_skipped_and_counted(demo, two_stream_run, tmp_path):
    root = tmp_path / "videos"
    shutil.copytree(demo / "videos", root / "videos")
    (root / "videos" / "moving_up_001.mp4").write_bytes(b"not a video at all" * 100)
    result = finetune.run(replace(ft_config(two_stream_run, demo, tmp_path / "ft"), root=str(root)))
    assert result.metrics["failed_videos"] == 1
    assert "moving_up_001" in result.metrics["failures"]
    history = load_checkpoint(tmp_path / "ft" / "last.pt")["state"]["history"]
    assert all(r["train_videos"] == 9 and r["failed_videos"] == 1 for r in history)


def test_read_frames_at_source_ordinals(demo):
    path = demo / "videos" / "zooming_in_000.mp4"
    every = read_frames(path, short_side=72)
    picked = read_frames_at(path, np.array([0, 3, 3, 5]), short_side=72)
    assert np.array_equal(picked, every[[0, 3, 3, 5]])


def test_divergence_stops_with_a_reason_and_keeps_the_best(demo, two_stream_run, tmp_path):
    result = finetune.run(ft_config(two_stream_run, demo, tmp_path / "ft", lr=1e12, epochs=3))
    assert result.metrics["stopped"].startswith("training diverged in epoch 1")
    assert result.metrics["epochs"] == 1 and result.metrics["best_epoch"] == 0  # the untouched network is kept
    assert result.metrics["val_top1"] == result.metrics["start_val_top1"]
    assert result.metrics["notes"][-1].startswith("fine-tuning never beat its start")
