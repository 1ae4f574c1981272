"""Stage one's decoders: the scaler's sizes, numpy crops, processes vs threads, dead and hung decoders."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.backbones import build_backbone
from pipeline.decoding.core import Frames, Opened, OwnBuffers, Task, decode_video, resized_size
from pipeline.extraction import ExtractConfig
from pipeline.extraction import decoders as choosing
from pipeline.progress import Note
from pipeline.store import FeatureStore
from pipeline.video import read_frames
from pipeline.views import make_views
from stages import extract


def config(demo, store, **kw):
    base = dict(manifest=str(demo / "manifest.csv"), output=str(store), backbone="tiny", weights="none",
                executor="local", batch_size=8, chunk_frames=4)
    return ExtractConfig(**{**base, **kw})


@pytest.mark.parametrize("resize", [(256,), (72,), (128, 171)])
def test_decoded_size_is_torchvisions_resize(resize):
    from torchvision.transforms.v2.functional._geometry import _compute_resized_output_size

    for width, height in [(720, 528), (176, 144), (320, 240), (768, 576), (240, 320), (1920, 1080), (33, 97)]:
        h, w = _compute_resized_output_size((height, width), list(resize))
        assert resized_size(width, height, resize) == (w, h), (width, height, resize)


@pytest.mark.parametrize("views", ["center", "flip", "multi10"])
def test_numpy_crops_equal_the_torch_views(demo, views):
    """Crops cut while decoding = the preprocessor's resize + make_views on the same frames."""
    from pipeline.extraction.decoders import decode_spec

    backbone = build_backbone("tiny", weights="none")
    cfg = config(demo, "unused.zarr", views=views, chunk_frames=4)
    path = str(demo / "videos" / "moving_left_000.mp4")
    records = list(decode_video(Task(path), decode_spec(cfg, backbone), OwnBuffers()))
    assert isinstance(records[0], Opened) and records[0].expected == 6
    crops = np.concatenate([r.crops for r in records if isinstance(r, Frames)], axis=1)
    pre = backbone.preprocessor
    frames = torch.from_numpy(read_frames(path, short_side=pre.resize_size[0]))
    want = make_views(pre.resize(frames), views=views, size=pre.crop_size).numpy()
    assert crops.shape == want.shape and np.array_equal(crops, want)


def test_processes_and_threads_write_identical_stores(demo, tmp_path):
    """chunk_frames=1: each 6-frame video passes through its decoder's 2 slots three times over."""
    a = extract.run(config(demo, tmp_path / "p.zarr", decode_procs=2, chunk_frames=1))
    notes = []
    b = extract.run(config(demo, tmp_path / "t.zarr", decode_procs=0, chunk_frames=1),
                    progress=lambda e: isinstance(e, Note) and notes.append(e.message))
    assert (a.done, b.done) == (20, 20)
    p, t = FeatureStore.open(str(tmp_path / "p.zarr")), FeatureStore.open(str(tmp_path / "t.zarr"))
    for video_id in p.index()["video_id"]:
        assert np.array_equal(p.read(video_id, "rgb"), t.read(video_id, "rgb")), video_id
        assert p.video_attrs(video_id)["frame_index"] == t.video_attrs(video_id)["frame_index"]
    assert any("decoding in" in n for n in notes)


def test_flow_in_decoder_processes_equals_threads(demo, tmp_path):
    flow = dict(flow=True, flow_method="tvl1-fastest", flow_short_side=32, flow_batch=3, flow_compile="off")
    extract.run(config(demo, tmp_path / "p.zarr", decode_procs=2, **flow))
    threads = config(demo, tmp_path / "t.zarr", **flow)
    from pipeline.extraction import Extractor
    from pipeline.extraction.models import load_models

    models = load_models(threads)
    work = extract.plan(threads, models)
    extractor = Extractor(threads, work.store, device=models.device, backbone=models.backbone,
                          flow_method=models.flow_method, cores=1)  # one core: threads
    try:
        extractor.process(work.jobs)
        assert extractor.decoders.kind == "threads"
    finally:
        extractor.close()
    p, t = FeatureStore.open(str(tmp_path / "p.zarr")), FeatureStore.open(str(tmp_path / "t.zarr"))
    for video_id in ("moving_left_000", "zooming_out_001"):
        assert np.array_equal(p.read(video_id, "flow"), t.read(video_id, "flow")), video_id


def test_the_choice(demo, tmp_path):
    cfg = config(demo, tmp_path / "s.zarr")
    assert choosing.choose(cfg, 20, cores=1).kind == "threads"
    assert choosing.choose(cfg, 1, cores=8).kind == "threads"
    assert choosing.choose(cfg, 20, cores=8) == choosing.Choice("processes", 8, "8 cores")
    assert choosing.choose(config(demo, "s", decode_procs=3), 20, cores=8).workers == 3
    gpu_flow = SimpleNamespace(device=torch.device("cuda"))
    assert choosing.choose(config(demo, "s", flow=True), 20, gpu_flow, cores=8).kind == "threads"


@pytest.mark.parametrize("fault", ["crash", "hang"])
def test_a_dead_or_hung_decoder_fails_its_video_and_the_run_goes_on(demo, tmp_path, monkeypatch, fault):
    monkeypatch.setenv("STPIPE_DECODE_FAULT", f"{fault}:moving_left_000")
    result = extract.run(config(demo, tmp_path / "s.zarr", decode_procs=2, decode_timeout=3))
    assert (result.done, result.failed) == (19, 1)
    store = FeatureStore.open(str(tmp_path / "s.zarr"))
    (failure,) = store.failures()
    assert failure.video_id == "moving_left_000"
    assert ("decoder process died (killed by SIGKILL)" if fault == "crash" else "decoding stalled") in failure.error
    assert failure.attempts == (2 if fault == "crash" else 1)  # a crash is retried once, a hang is not
    monkeypatch.delenv("STPIPE_DECODE_FAULT")
    again = extract.run(config(demo, tmp_path / "s.zarr", decode_procs=2))
    assert (again.done, again.skipped) == (1, 19)


def test_decoder_processes_do_not_import_torch(demo):
    """A decoder without flow starts without torch (start-up time and memory)."""
    import subprocess
    import sys

    code = ("import sys; from pipeline.decoding import core, pool, worker; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_ray_driver_builds_no_model_and_writes_the_local_provenance(demo, tmp_path, monkeypatch):
    """The driver describes the models from metadata (meta device); the store's provenance equals a
    local run's. Ray itself is replaced by a worker that loads the models as an actor does."""
    import pipeline.distributed as distributed
    from pipeline.extraction import Extractor
    from pipeline.extraction.models import load_models

    kw = dict(flow=True, flow_method="tvl1-fastest", flow_short_side=32, flow_features=True, flow_stack=3,
              flow_compile="off")
    extract.run(config(demo, tmp_path / "local.zarr", **kw))

    def worker(cfg, jobs, progress=None):  # what an actor does, in this process
        models = load_models(cfg)
        store = FeatureStore.open(cfg.output, mode="r+")
        extractor = Extractor(cfg, store, device=models.device, backbone=models.backbone,
                              flow_method=models.flow_method, flow_backbone=models.flow_backbone, progress=progress)
        try:
            return extractor.process(jobs)
        finally:
            extractor.close()

    def no_models(cfg, device=None):
        raise AssertionError("the driver built its models")

    monkeypatch.setattr(distributed, "run_extraction", worker)
    monkeypatch.setattr(extract, "load_models", no_models)
    result = extract.run(config(demo, tmp_path / "ray.zarr", executor="ray", **kw))
    assert (result.done, result.failed) == (20, 0)
    local, ray = FeatureStore.open(str(tmp_path / "local.zarr")).meta, FeatureStore.open(str(tmp_path / "ray.zarr")).meta
    for key in ("backbone", "flow", "views", "content", "config_hash"):
        assert local[key] == ray[key], key
    assert local["flow"]["backbone"]["in_channels"] == 6 and local["flow"]["params"]


def test_a_video_failing_mid_chunk_gives_its_slot_back():
    """A decoder's slot acquired for a chunk of a video that then fails was never sent, so no "free"
    comes back for it: the decoder reclaims it (else two such videos leave it waiting forever)."""
    import numpy as np

    from pipeline.decoding.worker import SlotBuffers

    class NoMessages:
        def recv(self):
            raise AssertionError("waited for a slot that nobody will hand back")

    buffers = SlotBuffers(NoMessages(), np.zeros(64, np.uint8), 16, [4, 5])
    for _ in range(3):  # three videos in a row fail while filling their first chunk
        slot, _ = buffers.acquire(8)
        buffers.reclaim()
    slot, _ = buffers.acquire(8)
    buffers.sent(slot)  # handed over: not reclaimed by a later failure
    other, _ = buffers.acquire(8)
    buffers.reclaim()
    assert buffers.free == [other] and slot not in buffers.free


@pytest.mark.parametrize("clip, size", [("vtest.avi", (341, 256)), ("vtest.avi", (224, 224)),
                                        ("carphone_pristine.mp4", (312, 256)), ("Megamind_bugy.avi", (224, 224))])
def test_the_planar_scaler_is_as_close_to_torchvision_as_the_packed_one(assets_dir, clip, size):
    """Frames are scaled to planar RGB (gbrp: swscale's fast output). Against torchvision's antialiased
    resize of the native frame it is at least as close as packed rgb24 (what stores were made with
    before): mean within 0.15 of a level, no more large errors (p99); at some sizes (vtest to 341x256)
    the two are identical."""
    import av
    from av.video.reformatter import VideoReformatter
    from torchvision.transforms.v2.functional import resize

    from pipeline.video import _rgb

    width, height = size
    scaler = VideoReformatter()
    ours, packed, want = [], [], []
    with av.open(str(assets_dir / "videos" / clip)) as container:
        for _, frame in zip(range(12), container.decode(video=0)):
            ours.append(_rgb(frame, scaler, width, height, "BILINEAR").astype(int))
            packed.append(frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BILINEAR"))
            native = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
            want.append(resize(native, [height, width], antialias=True).permute(1, 2, 0).numpy())
    ours, packed, want = np.stack(ours), np.stack(packed).astype(int), np.stack(want).astype(int)
    assert ours.shape == (12, height, width, 3)
    if clip == "vtest.avi" and size == (341, 256):
        assert np.array_equal(ours, packed)
    ours_off, packed_off = np.abs(ours - want), np.abs(packed - want)
    assert ours_off.mean() <= packed_off.mean() + 0.15 and ours_off.mean() < 1.5
    assert np.percentile(ours_off, 99) <= np.percentile(packed_off, 99)


def test_cpu_batches_are_normalised_in_place_as_before():
    """The CPU batch is made by normalising each piece straight into a reused float batch; it equals
    concatenating, converting, normalising and zero-padding (the way every store was made)."""
    from pipeline.extraction.batching import Batcher

    backbone = build_backbone("tiny", weights="none")
    seen = []
    backbone.forward_features = lambda x: (seen.append(x.clone()), x.mean(dim=(2, 3)))[1]
    batcher = Batcher(backbone, "cpu", 8, in_flight=0, pinned=False, deliver=lambda *a: None,
                      stats=SimpleNamespace(batches=0, padded_rows=0))
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(0, 256, (1, n, 3, 32, 32), dtype=torch.uint8, generator=g) for n in (3, 2))
    batcher.add("a", a)
    batcher.add("b", b)
    batcher.run(force=True)  # 5 rows and 3 of padding
    batcher.add("b", b)
    batcher.run(force=True)  # 2 rows: the reused buffer's rows 2-4 held frames and must be zero again
    pre = backbone.preprocessor
    first = torch.cat([pre.normalize(torch.cat([a[0], b[0]])), torch.zeros(3, 3, 32, 32)])
    second = torch.cat([pre.normalize(b[0]), torch.zeros(6, 3, 32, 32)])
    assert len(seen) == 2 and torch.equal(seen[0], first) and torch.equal(seen[1], second)


NORMALISE_AS_STORES_WERE_MADE = """
import torch
from pipeline.backbones.preprocess import ImagePreprocess

pre = ImagePreprocess(resize_size=[256], crop_size=224, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
scale = torch.tensor([1 / s for s in pre.std]).view(3, 1, 1)
shift = torch.tensor([-m / s for m, s in zip(pre.mean, pre.std)]).view(3, 1, 1)
for width in (224, 299, 33, 7):  # vector lengths and tails
    x = torch.arange(2 * 256 * width).remainder(256).to(torch.uint8).view(2, 1, 256, width).expand(2, 3, 256, width)
    want = torch.addcmul(shift, x.float(), scale / 255.0)  # how every store was made
    out = torch.full(want.shape, float("nan"))
    assert torch.equal(pre.normalize(x), want) and torch.equal(pre.normalize(x, out=out), want), width
    floats = x.float() / 255.0
    assert torch.equal(pre.normalize(floats), torch.addcmul(shift, floats, scale)), width
print(torch.backends.cpu.get_cpu_capability())
"""


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
def test_cpu_normalisation_equals_the_addcmul_stores_were_made_with(capability):
    """The CPU path normalises per channel (4x faster than addcmul's broadcasting kernel); it must give
    addcmul's floats to the bit with every kernel ATen may pick on a user's CPU."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "ATEN_CPU_CAPABILITY": capability}
    done = subprocess.run([sys.executable, "-c", NORMALISE_AS_STORES_WERE_MADE], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    if done.stdout.strip().lower() != capability:
        pytest.skip(f"this CPU runs {done.stdout.strip()} kernels, not {capability}")


@pytest.mark.parametrize("env, want", [({}, "10000"), ({"OMP_WAIT_POLICY": "PASSIVE"}, "None"),
                                       ({"GOMP_SPINCOUNT": "300000"}, "300000")])
def test_openmp_threads_spin_briefly_unless_the_user_says(env, want):
    """torch's OpenMP threads would spin for their cores while decoder processes need them: importing
    the package (before torch, as the CLI, decoder processes and Ray workers do) shortens the spin."""
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = "import pipeline, os; print(os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == want
