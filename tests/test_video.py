import numpy as np
import pytest
from PIL import Image

from pipeline.demo_data import write_mp4
from pipeline.errors import VideoError
from pipeline.video import FrameSelection, iter_chunks, probe, read_frames, read_frames_with_indices


def ramp_clip(frames=30, h=48, w=64):
    """Each frame's brightness encodes its index, so decoded frames can be identified."""
    values = np.linspace(10, 240, frames).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (frames, h, w, 3)).copy()


def frame_ids(frames, n):
    values = np.linspace(10, 240, n)
    return [int(np.abs(values - f.mean()).argmin()) for f in frames]


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "ramp.mp4"
    write_mp4(path, ramp_clip(), fps=10)
    return path


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "frames"
    path.mkdir()
    for i, frame in enumerate(ramp_clip(12)):
        Image.fromarray(frame).save(path / f"{i + 1:05d}.png")
    return path


def test_probe_counts_frames_and_reads_size(clip):
    info = probe(clip)
    assert (info.num_frames, info.width, info.height, info.fps, info.is_folder) == (30, 64, 48, 10.0, False)
    assert info.duration == pytest.approx(3.0)


def test_all_frames_in_order(clip):
    frames, idx = read_frames_with_indices(clip)
    assert frames.shape == (30, 48, 64, 3) and frames.dtype == np.uint8
    assert idx.tolist() == list(range(30))
    assert frame_ids(frames, 30) == list(range(30))


@pytest.mark.parametrize(
    "select, start, end, expected",
    [
        (FrameSelection(mode="step", step=7), None, None, [0, 7, 14, 21, 28]),
        (FrameSelection(mode="fps", fps=2.5), None, None, [0, 4, 8, 12, 16, 20, 24, 28]),
        (FrameSelection(mode="uniform", num=3), None, None, [5, 15, 25]),
        (FrameSelection(), 1.0, 1.5, [10, 11, 12, 13, 14]),
        (FrameSelection(mode="uniform", num=4), 2.0, 2.2, [20, 20, 21, 21]),  # short: repeats
        (FrameSelection(max_frames=3), 0.5, None, [5, 6, 7]),
    ],
)
def test_selection_and_trimming(clip, select, start, end, expected):
    frames, idx = read_frames_with_indices(clip, select=select, start=start, end=end)
    assert idx.tolist() == expected
    assert frame_ids(frames, 30) == expected


def test_resize_by_short_side_keeps_aspect(clip):
    assert read_frames(clip, short_side=24).shape == (30, 24, 32, 3)


def test_chunks_are_bounded_and_lazy(clip):
    chunks = iter_chunks(clip, chunk_size=8)
    first = next(chunks)
    assert first.frames.shape[0] == 8
    sizes = [first.frames.shape[0]] + [c.frames.shape[0] for c in chunks]
    assert sizes == [8, 8, 8, 6]


def test_frame_folder(folder):
    info = probe(folder, folder_fps=12)
    assert info.is_folder and info.num_frames == 12 and (info.width, info.height) == (64, 48)
    frames, idx = read_frames_with_indices(folder, select=FrameSelection(mode="uniform", num=4))
    assert idx.tolist() == [1, 4, 7, 10] and frame_ids(frames, 12) == [1, 4, 7, 10]


def test_frame_folder_with_bad_images(folder):
    Image.new("RGB", (10, 10)).save(folder / "00005.png")
    with pytest.raises(VideoError, match=r"00005\.png: frame size 10x10 differs"):
        read_frames(folder)
    (folder / "00005.png").write_bytes(b"not a png")
    with pytest.raises(VideoError, match=r"00005\.png: not a readable image"):
        read_frames(folder)


def test_empty_folder(tmp_path):
    with pytest.raises(VideoError, match="holds no images"):
        probe(tmp_path)


@pytest.mark.parametrize("content, message", [(b"", "file is empty"), (b"hello, not a video\n", "not a readable video")])
def test_non_videos_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError, match=rf"bad\.mp4: {message}"):
        read_frames(path)


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="missing.mp4: file not found"):
        probe(tmp_path / "missing.mp4")


def test_truncated_file_is_an_error_or_a_shorter_video(tmp_path, clip):
    data = clip.read_bytes()
    for cut in (100, len(data) // 2):
        path = tmp_path / f"cut{cut}.mp4"
        path.write_bytes(data[:cut])
        try:
            frames = read_frames(path)
        except VideoError as exc:
            assert str(exc).startswith(str(path))
        else:
            assert 0 < len(frames) < 30


def test_trim_window_outside_video(clip):
    with pytest.raises(VideoError, match="holds no frames"):
        read_frames(clip, start=5.0)
    with pytest.raises(VideoError, match="must be after start"):
        read_frames(clip, start=1.0, end=0.5)


@pytest.mark.parametrize("name", ["Megamind_bugy.avi", "carphone_pristine.mp4", "tree.avi", "vtest.avi"])
def test_shared_clips_decode(assets_dir, name):
    path = assets_dir / "videos" / name
    info = probe(path)
    count = sum(len(c.indices) for c in iter_chunks(path, short_side=64, chunk_size=100))
    assert count == info.num_frames > 0
