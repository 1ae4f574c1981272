"""The bad-inputs corpus: broken, odd and hostile videos and ids, generated from one good demo video.

`make_corpus(out, good)` writes the files under `out/bad/` and returns `Case`s: a video id, its
manifest path (relative to `out`), and what must happen: `complete`, `failed` (with a reason
matching `reason`), or `either` (FFmpeg's error concealment decides; both are acceptable as long
as the run goes on and a failure has a one-line reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    video_id: str
    path: str
    expect: str  # complete | failed | either
    what: str  # one line for RELIABILITY.md
    reason: str = ""  # substring of the failure reason, when failed
    frames: int | None = None  # expected num_frames, when complete


def write_video(path: Path, frames, *, fps: int = 12, pts_ms: list[int] | None = None,
                codec: str = "libx264") -> None:
    """Frames (T, H, W, 3) uint8, or any iterable of (H, W, 3) frames -> mp4; `pts_ms` gives each
    frame its own time (variable frame rate)."""
    import itertools

    import av

    frames = iter(frames)
    first = next(frames)
    frames = itertools.chain([first], frames)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = first.shape[1], first.shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "bf": "0"}  # no B-frames: the presentation order is as given
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            if pts_ms is not None:
                vf.pts, vf.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_corpus(out: Path, good: Path, rng: np.random.Generator) -> list[Case]:
    from pipeline.video import read_frames

    bad = out / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    frames = read_frames(good)
    cases: list[Case] = []

    def case(video_id, name, expect, what, reason="", frames=None):
        cases.append(Case(video_id, f"bad/{name}", expect, what, reason, frames))

    # broken files
    (bad / "empty.mp4").write_bytes(b"")
    case("zero_byte", "empty.mp4", "failed", "zero-byte file", "file is empty")
    (bad / "text.mp4").write_text("this is a text file, not a video\n")
    case("text_as_mp4", "text.mp4", "failed", "text file named .mp4", "not a readable video")
    case("missing_file", "nowhere.mp4", "failed", "missing file", "file not found")
    for fraction in (0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999):
        cut = max(1, int(len(data) * fraction))
        name = f"truncated_{fraction:g}.mp4"
        (bad / name).write_bytes(data[:cut])
        case(f"truncated_at_{cut}_of_{len(data)}", name, "either", f"truncated at byte {cut} of {len(data)}")
    for k, span in enumerate((64, 4096)):
        corrupt = bytearray(data)
        start = len(data) // 3
        corrupt[start : start + span] = rng.integers(0, 256, size=span, dtype=np.uint8).tobytes()
        (bad / f"corrupt_{span}.mp4").write_bytes(bytes(corrupt))
        case(f"corrupted_stream_{k}", f"corrupt_{span}.mp4", "either", f"{span} random bytes in the middle of the stream")
    # odd but valid videos
    write_video(bad / "one_frame.mp4", frames[:1])
    case("one_frame", "one_frame.mp4", "complete", "1-frame video", frames=1)
    for fmt, codec, reason in (("mp4", "libx264", "no video stream"), ("avi", "mpeg4", "video stream has no frames")):
        _write_empty_video(bad / f"zero_frames.{fmt}", frames.shape[1:3], fmt, codec)
        case(f"zero_frames_{fmt}", f"zero_frames.{fmt}", "failed", f"0-frame video (.{fmt}, encoder closed without frames)",
             reason)
    big = np.asarray(Image.fromarray(frames[0]).resize((3840, 2160), Image.BILINEAR))
    write_video(bad / "uhd.mp4", np.stack([big, big[:, ::-1], big[::-1]]))
    case("uhd_4k", "uhd.mp4", "complete", "4K (3840x2160) video, 3 frames", frames=3)
    times = np.cumsum(rng.integers(20, 200, size=len(frames))).tolist()  # 20-200 ms between frames
    write_video(bad / "vfr.mp4", frames, pts_ms=[int(t) for t in times])
    case("variable_frame_rate", "vfr.mp4", "complete", "variable frame rate (20-200 ms gaps)", frames=len(frames))
    # frame folders
    for name, spoil in (("folder_corrupt", "corrupt"), ("folder_sized", "sized"), ("folder_ok", None)):
        folder = bad / name
        folder.mkdir(exist_ok=True)
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{i + 1:05d}.jpg")
        if spoil == "corrupt":
            (folder / "00003.jpg").write_bytes(b"\xff\xd8garbage")
        elif spoil == "sized":
            Image.fromarray(frames[3]).resize((20, 24)).save(folder / "00004.jpg")
    case("frames_with_corrupt_image", "folder_corrupt", "failed", "frame folder with a corrupt image", "00003.jpg")
    case("frames_with_other_size", "folder_sized", "failed", "frame folder with a differently sized image",
         "00004.jpg: frame size 20x24 differs")
    case("frame_folder", "folder_ok", "complete", "frame folder (control)", frames=len(frames))
    (bad / "empty_folder").mkdir(exist_ok=True)
    case("frames_none", "empty_folder", "failed", "empty frame folder", "holds no images")
    return cases


def hostile_ids() -> list[str]:
    """Ids that must stay inside the store and round-trip exactly (all point at the good video)."""
    return ["../escape", "../../../../tmp/stpipe-escape", "a/b", "a~2fb", "/abs/olute", "..", ".hidden",
            "__init__", "ünïcödé 日本語 🎬", "x" * 300, "ü" * 200, "back\\slash", "zarr.json", "index"]


def _write_empty_video(path: Path, size, fmt: str, codec: str) -> None:
    """A container whose encoder got no frames: mp4 then drops the stream, AVI keeps an empty one."""
    import av

    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=12)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
