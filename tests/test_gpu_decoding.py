"""GPU decoding (`--decoder`, pipeline/decoding/gpu.py): the choice, the per-video fallback to the CPU,
and the device path's decode/resize/crop run on the CPU against the CPU decoders' frames.

The GPU pool is device-independent except for its decoders: on the CPU device, nvJPEG's call
(`torchvision.io.decode_jpeg(list, device=...)`) decodes with libjpeg-turbo and a stand-in for NVDEC
(PyAV at the native size) feeds the same selection, resize, crops and hand-over. CUDA tests (marked
`cuda`, skipped without a GPU; `benchmarks/gpu/run.sh --parts gpudecode`) compare stores made with
`--decoder auto/nvdec` and `--decoder cpu` on the GPU host. Tolerances (relative L2 of features,
||gpu - cpu|| / ||cpu||, random-init tiny backbone):
  JPEG folders, nvJPEG vs PIL            2e-2 (as tests/test_cuda.py's extract stores): the decoders'
                                         IDCTs differ by a level here and there, the resize by <= 1
  video files, NVDEC vs FFmpeg           1e-1: frames at the native size resized on the device vs
                                         FFmpeg's scaler converting and resizing at once (the CPU
                                         stand-in measures 0.039 at most on the demo clips, 32x32
                                         upscaled to 72, the largest resize difference)
"""

from __future__ import annotations

import csv
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.decoding import gpu
from pipeline.decoding.core import DecodeSpec, Frames, OwnBuffers, Task, decode_video
from pipeline.decoding.pool import ThreadDecoders
from pipeline.errors import ConfigError
from pipeline.extraction import ExtractConfig, Extractor
from pipeline.extraction import decoders as choosing
from pipeline.extraction.models import load_models
from pipeline.progress import Note
from pipeline.store import FeatureStore
from pipeline.video import FrameSelection, read_frames
from stages import extract

CLIP = "carphone_pristine.mp4"  # 176x144 H.264, 120 frames


def config(manifest, store, **kw):
    base = dict(manifest=str(manifest), output=str(store), backbone="tiny", weights="none", executor="local",
                batch_size=8, chunk_frames=4)
    return ExtractConfig(**{**base, **kw})


def rel_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def notes_of(sink: list):
    return lambda event: isinstance(event, Note) and sink.append(event.message)


class PyAVSource:
    """A stand-in for NVDEC on the CPU: PyAV decodes at the native size, batches of 4 frames. It raises
    on open for paths containing `fails_on_open`, after its first batch for `fails_later`."""

    name = "PyAV stand-in"

    def __init__(self, fails_on_open: str = "", fails_later: str = ""):
        self.fails_on_open, self.fails_later, self.used = fails_on_open, fails_later, []

    def batches(self, path, stop):
        if self.fails_on_open and self.fails_on_open in path:
            raise RuntimeError("cuvidCreateDecoder: codec profile not supported (stand-in)")
        self.used.append(Path(path).stem)
        with av.open(path) as container:
            frames = []
            for i, frame in enumerate(container.decode(video=0)):
                if i >= stop:
                    break
                frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1))
                if len(frames) == 4:
                    yield torch.stack(frames)
                    frames = []
                    if self.fails_later and self.fails_later in path:
                        raise RuntimeError("NVDEC: decode error in frame 5 (stand-in)")
            if frames:
                yield torch.stack(frames)


class StandInNvc:
    """A stand-in for the PyNvVideoCodec module (its `SimpleDecoder` API), decoding with PyAV on the CPU:
    frames are (H, W, 3) uint8 tensors, which speak DLPack as PyNvVideoCodec's frames do."""

    class OutputColorType:
        RGB = "RGB"

    def __init__(self, fails: str = ""):
        self.fails, self.opened, self.reconfigured = fails, [], []
        module = self

        class SimpleDecoder:
            def __init__(self, path, gpu_id=0, cuda_stream=0, use_device_memory=True, output_color_type=None):
                assert output_color_type == "RGB" and use_device_memory
                module.opened.append(Path(path).stem)
                self._open(path)

            def _open(self, path):
                self.path = path
                with av.open(path) as container:
                    self.frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
                self.position = 0

            def reconfigure_decoder(self, path):
                module.reconfigured.append(Path(path).stem)
                self._open(path)

            def get_batch_frames(self, n):
                if module.fails and module.fails in self.path and self.position:
                    raise RuntimeError("stand-in decode error")
                out = self.frames[self.position : self.position + n]
                self.position += len(out)
                return out

        self.SimpleDecoder = SimpleDecoder


def test_the_nvdec_adapter_with_a_stand_in_module(demo, monkeypatch):
    """NvdecSource against PyNvVideoCodec's API (a stand-in module, on the CPU device): frames in
    presentation order in batches, one decoder per thread pointed at each next file, a fresh one
    after an error; the crops equal those of the PyAV stand-in source."""
    import sys

    module = StandInNvc(fails="moving_up_000")
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", module)
    assert gpu.nvdec_missing() is None
    assert choosing.place(config(demo / "manifest.csv", "s", decoder="nvdec"), "cuda").nvdec
    source = gpu.NvdecSource(torch.device("cpu"), batch=4)
    spec = DecodeSpec(resize=(72,), crop=64, views="flip", chunk_frames=4)
    cpu = torch.device("cpu")
    for stem in ("moving_left_000", "moving_right_000", "moving_up_000", "moving_down_000"):
        task = Task(str(demo / "videos" / f"{stem}.mp4"))
        try:
            got = [r for r in gpu.decode_on_device(task, spec, cpu, source) if isinstance(r, Frames)]
        except RuntimeError:
            assert stem == "moving_up_000"
            continue
        want = [r for r in gpu.decode_on_device(task, spec, cpu, PyAVSource()) if isinstance(r, Frames)]
        assert np.array_equal(np.concatenate([r.indices for r in got]), np.arange(6))
        assert torch.equal(torch.cat([r.crops for r in got], 1), torch.cat([r.crops for r in want], 1))
    assert module.opened == ["moving_left_000", "moving_down_000"]  # a fresh session after the error
    assert module.reconfigured == ["moving_right_000", "moving_up_000"]


def extract_on_device(cfg: ExtractConfig, *, video=None, jpeg=False, notes: list | None = None):
    """`cfg` extracted with GPU decoders on the CPU device (CPU threads behind them); (stats, pool)."""
    notes = [] if notes is None else notes
    models = load_models(cfg)
    work = extract.plan(cfg, models)
    extractor = Extractor(cfg, work.store, device=models.device, backbone=models.backbone, progress=notes_of(notes))
    spec = choosing.decode_spec(cfg, models.backbone)
    pool = gpu.GpuDecoders(spec, models.device, video=video, jpeg=jpeg, cpu=lambda: ThreadDecoders(spec, 2),
                           progress=notes_of(notes))
    extractor.decoders = pool
    try:
        stats = extractor.process(work.jobs)
    finally:
        extractor.close()
    return stats, pool


# ---- the choice -------------------------------------------------------------------------------


def test_auto_decodes_on_the_cpu_without_cuda_and_says_so(demo, tmp_path):
    notes: list[str] = []
    result = extract.run(config(demo / "manifest.csv", tmp_path / "s.zarr"), progress=notes_of(notes))
    assert result.done == 20
    lines = [n for n in notes if n.startswith("decoding")]
    assert len(lines) == 1 and "--decoder auto: the compute device is cpu" in lines[0], notes
    assert choosing.place(config(demo / "manifest.csv", "s", decoder="cpu"), "cuda") == \
        choosing.Placement(False, False, "--decoder cpu")


def test_nvdec_without_cuda_is_one_line_before_any_work(demo, tmp_path, stpipe):
    """The CLI, a YAML file and the API say the same, and nothing is written."""
    store = tmp_path / "s.zarr"
    flags = ["extract", "-m", demo / "manifest.csv", "-o", store, "--backbone", "tiny", "--weights", "none",
             "--executor", "local"]
    code, out, err = stpipe([*flags, "--decoder", "nvdec"])
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1, err
    assert lines[0].startswith("stpipe: error: --decoder nvdec needs a CUDA compute device (this run's is cpu)")
    assert "--decoder cpu or auto" in lines[0]
    yaml = tmp_path / "extract.yaml"
    yaml.write_text("decoder: nvdec\n")
    code, _, yaml_err = stpipe([*flags, "--config", yaml])
    assert code != 0 and yaml_err == err
    with pytest.raises(ConfigError) as api:
        extract.run(config(demo / "manifest.csv", store, decoder="nvdec"))
    assert f"stpipe: error: {api.value}" == lines[0]
    assert not store.exists()
    yaml.write_text("decoder: gpu\n")
    code, _, err = stpipe([*flags, "--config", yaml])
    assert code != 0 and "decoder" in err and "gpu" in err and len(err.strip().splitlines()) == 1


def test_nvdec_on_a_cuda_host_names_what_is_missing(demo, monkeypatch):
    manifest = demo / "manifest.csv"
    missing = "PyNvVideoCodec not importable: No module named 'PyNvVideoCodec'"
    monkeypatch.setattr(gpu, "nvdec_missing", lambda: missing)
    with pytest.raises(ConfigError, match=r"needs PyNvVideoCodec not importable.*pip install 'stpipe-video\[nvdec\]'"):
        choosing.place(config(manifest, "s", decoder="nvdec"), "cuda")
    auto = choosing.place(config(manifest, "s"), "cuda")  # JPEG folders on the GPU, video files on the CPU
    assert (auto.gpu, auto.nvdec) == (True, False) and "pip install 'stpipe-video[nvdec]'" in auto.why
    with pytest.raises(ConfigError, match="flow"):
        choosing.place(config(manifest, "s", decoder="nvdec", flow=True), "cuda")
    assert not choosing.place(config(manifest, "s", flow=True), "cuda").gpu
    monkeypatch.setattr(gpu, "nvdec_missing", lambda: None)
    assert choosing.place(config(manifest, "s", decoder="nvdec"), "cuda") == \
        choosing.Placement(True, True, "--decoder nvdec")


# ---- the fallback -----------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["tiny", "tiny_video"])
def test_a_video_the_gpu_cannot_decode_is_decoded_on_the_cpu_with_one_note(demo, tmp_path, backbone):
    """One video fails on open (CPU-decoded at once), one after its first frames (failed, retried on the
    CPU); both equal a CPU-only run exactly. The other 18 go through the stand-in: same frames selected,
    features within the resize's difference. Image and video backbones (clips of device tensors)."""
    manifest = demo / "manifest.csv"
    extract.run(config(manifest, tmp_path / "cpu.zarr", decoder="cpu", backbone=backbone))
    source = PyAVSource(fails_on_open="moving_left_000", fails_later="zooming_out_001")
    notes: list[str] = []
    stats, pool = extract_on_device(config(manifest, tmp_path / "gpu.zarr", backbone=backbone), video=source,
                                    notes=notes)
    assert (stats.done, stats.failed) == (20, 0)
    assert notes.count("decoding in 2 thread(s) of the compute process, for the videos not decoded on cpu") == 1
    notes = [n for n in notes if "decoded on the CPU" in n]
    assert len(notes) == 2, notes
    assert "moving_left_000.mp4: decoded on the CPU (RuntimeError: cuvidCreateDecoder" in notes[0]
    assert "zooming_out_001.mp4: decoded on the CPU (RuntimeError: NVDEC: decode error" in notes[1]
    assert pool.fallbacks == 2 and pool.cpu is None  # closed with the extractor
    assert len(source.used) == 19 and "moving_left_000" not in source.used
    cpu, dev = FeatureStore.open(str(tmp_path / "cpu.zarr")), FeatureStore.open(str(tmp_path / "gpu.zarr"))
    errors = []
    for video_id in cpu.index()["video_id"]:
        assert dev.video_attrs(video_id)["frame_index"] == cpu.video_attrs(video_id)["frame_index"]
        want, got = cpu.read(video_id, "rgb"), dev.read(video_id, "rgb")
        if video_id in ("moving_left_000", "zooming_out_001"):
            assert np.array_equal(got, want), video_id
        else:
            errors.append(rel_error(got, want))
    assert max(errors) < 0.1, errors  # 32x32 clips upscaled to 72: the scalers' largest difference


@pytest.mark.parametrize(("start", "end", "num"), [(0.5, 3.5, 50), (0.5, 0.7, 10)])
def test_the_stand_in_path_on_a_real_clip_selects_the_cpu_frames(assets_dir, start, end, num):
    """Frame selection, trimming and chunking of the device path = the CPU decoders' (the second case
    repeats frames: 10 picked from 6); the crops differ only by the resize (native-size frames resized
    by torchvision vs FFmpeg's scaler)."""
    path = str(assets_dir / "videos" / CLIP)
    spec = DecodeSpec(resize=(72,), crop=64, views="multi3", chunk_frames=16,
                      select=FrameSelection(mode="uniform", num=num))
    task = Task(path, start=start, end=end)
    cpu = [r for r in decode_video(task, spec, OwnBuffers()) if isinstance(r, Frames)]
    dev = [r for r in gpu.decode_on_device(task, spec, torch.device("cpu"), PyAVSource())
           if isinstance(r, Frames)]
    indices = np.concatenate([r.indices for r in dev])
    assert np.array_equal(indices, np.concatenate([r.indices for r in cpu])) and len(indices) == num
    want = np.concatenate([r.crops for r in cpu], axis=1).astype(np.float64)
    got = torch.cat([r.crops for r in dev], dim=1).numpy().astype(np.float64)
    assert got.shape == want.shape and np.abs(got - want).mean() < 3  # levels of 255


# ---- JPEG frame folders (nvJPEG's path, run on the CPU) ------------------------------------------


@pytest.fixture(scope="module")
def folders(assets_dir, tmp_path_factory):
    """24 frames of a real clip as a JPEG folder and as a PNG folder, with a manifest of both."""
    out = tmp_path_factory.mktemp("folders")
    frames = read_frames(assets_dir / "videos" / CLIP, select=FrameSelection(max_frames=24))
    for suffix in ("jpg", "png"):
        folder = out / f"carphone_{suffix}"
        folder.mkdir()
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{i + 1:05d}.{suffix}", quality=90)
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id", "path", "label", "split"])
        writer.writerow(["carphone_jpg", "carphone_jpg", "a", "train"])
        writer.writerow(["carphone_png", "carphone_png", "b", "train"])
    return out


@pytest.mark.parametrize(("resize", "crop", "views"), [((72,), 64, "multi10"), ((256,), 224, "flip"),
                                                        ((128, 171), 112, "center")])
def test_jpeg_folder_on_the_device_path_equals_the_cpu_frames(folders, resize, crop, views):
    """decode_jpeg (list, on the CPU device) + the batched device resize/crops vs PIL + the CPU crops:
    within one level (measured: identical at a 2x downscale, one level on <= 14% of pixels elsewhere)."""
    spec = DecodeSpec(resize=resize, crop=crop, views=views, chunk_frames=5, select=FrameSelection(mode="step", step=2))
    task = Task(str(folders / "carphone_jpg"))
    cpu = [r for r in decode_video(task, spec, OwnBuffers()) if isinstance(r, Frames)]
    dev = [r for r in gpu.decode_on_device(task, spec, torch.device("cpu"), None) if isinstance(r, Frames)]
    assert np.array_equal(np.concatenate([r.indices for r in dev]), np.arange(0, 24, 2))
    want = np.concatenate([r.crops for r in cpu], axis=1).astype(int)
    got = torch.cat([r.crops for r in dev], dim=1)
    assert got.dtype == torch.uint8 and tuple(got.shape) == want.shape
    assert np.abs(got.numpy().astype(int) - want).max() <= 1


def test_a_png_folder_falls_back_and_a_jpeg_folder_matches(folders, tmp_path):
    manifest = folders / "manifest.csv"
    extract.run(config(manifest, tmp_path / "cpu.zarr", decoder="cpu"))
    notes: list[str] = []
    stats, _ = extract_on_device(config(manifest, tmp_path / "gpu.zarr"), jpeg=True, notes=notes)
    assert (stats.done, stats.failed) == (2, 0)
    notes = [n for n in notes if "decoded on the CPU" in n]
    assert len(notes) == 1 and notes[0].endswith("carphone_png: decoded on the CPU (the folder holds .png "
                                                 "images; nvJPEG reads JPEG only)"), notes
    cpu, dev = FeatureStore.open(str(tmp_path / "cpu.zarr")), FeatureStore.open(str(tmp_path / "gpu.zarr"))
    assert np.array_equal(dev.read("carphone_png", "rgb"), cpu.read("carphone_png", "rgb"))
    assert rel_error(dev.read("carphone_jpg", "rgb"), cpu.read("carphone_jpg", "rgb")) < 1e-3


# ---- on a GPU ---------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.cuda
@needs_cuda
def test_nvjpeg_features_equal_cpu_decoded_features(folders, tmp_path):
    manifest = folders / "manifest.csv"
    extract.run(config(manifest, tmp_path / "cpu.zarr", decoder="cpu", device="cuda"))
    notes: list[str] = []
    extract.run(config(manifest, tmp_path / "gpu.zarr", decoder="auto", device="cuda"), progress=notes_of(notes))
    assert any("JPEG frame folders with nvJPEG" in n for n in notes), notes
    assert sum("decoded on the CPU" in n for n in notes) == 1  # the PNG folder
    cpu, dev = FeatureStore.open(str(tmp_path / "cpu.zarr")), FeatureStore.open(str(tmp_path / "gpu.zarr"))
    for video_id in ("carphone_jpg", "carphone_png"):
        assert rel_error(dev.read(video_id, "rgb"), cpu.read(video_id, "rgb")) < 2e-2, video_id


@pytest.mark.cuda
@needs_cuda
def test_nvdec_features_equal_cpu_decoded_features(assets_dir, tmp_path):
    missing = gpu.nvdec_missing()
    if missing:
        pytest.skip(f"{missing} ({gpu.NVDEC_INSTALL})")
    manifest = tmp_path / "clips.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id", "path", "label", "split"])
        for clip in sorted((assets_dir / "videos").iterdir()):
            writer.writerow([clip.stem, str(clip), "a", "train"])
    kw = dict(max_frames=64, device="cuda")
    extract.run(config(manifest, tmp_path / "cpu.zarr", decoder="cpu", **kw))
    notes: list[str] = []
    result = extract.run(config(manifest, tmp_path / "gpu.zarr", decoder="nvdec", **kw), progress=notes_of(notes))
    assert result.failed == 0 and any("video files with NVDEC" in n for n in notes), notes
    fell_back = {Path(n.split(": decoded on the CPU")[0]).stem for n in notes if ": decoded on the CPU" in n}
    cpu, dev = FeatureStore.open(str(tmp_path / "cpu.zarr")), FeatureStore.open(str(tmp_path / "gpu.zarr"))
    assert len(fell_back) < len(cpu.index()["video_id"]), notes  # at least one clip went through NVDEC
    for video_id in cpu.index()["video_id"]:
        assert dev.video_attrs(video_id)["frame_index"] == cpu.video_attrs(video_id)["frame_index"], video_id
        err = rel_error(dev.read(video_id, "rgb"), cpu.read(video_id, "rgb"))
        assert err < (1e-6 if video_id in fell_back else 1e-1), (video_id, err)
