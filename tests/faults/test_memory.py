"""Memory: long videos extract in bounded memory; stores over the memory budget train by streaming.

Default: a store over train-head's memory budget (forced tiny) trains through the streaming path
and ends identical to the in-memory run. Slow (`-m slow`): peak RSS of `stpipe extract` on a
10,000-frame video against a 1,000-frame one (target: under 2 GB and not growing with length),
and of `stpipe train-head` on a 1.2 GB store streamed under a 0.1 GB budget against loading it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fault_tools import REPO
from store_fixtures import make_store

from pipeline.training.config import TrainHeadConfig
from stages import train_head

TIMING = ("seconds", "samples_per_second")


def peak_rss_mib(argv: list[str], log: Path) -> float:
    """Run `python -m cli argv` to the end; its peak RSS (MiB) from the kernel's accounting (wait4)."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", *argv], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, log.read_text()[-2000:]
    return usage.ru_maxrss / 1024


def test_store_over_the_memory_budget_trains_by_streaming(tmp_path):
    url = str(tmp_path / "s.zarr")
    make_store(url, per_class={"train": 8, "val": 4})
    options = dict(store=url, head="trn_multiscale", segments=4, epochs=3, batch_size=16, proj_dim=32, device="cpu")
    in_memory = train_head.run(TrainHeadConfig(out=str(tmp_path / "mem"), memory_budget_gb=4.0, **options))
    notes = []
    streamed = train_head.run(TrainHeadConfig(out=str(tmp_path / "stream"), memory_budget_gb=1e-6, **options),
                              progress=lambda event: notes.append(getattr(event, "message", "")))
    assert sum("streamed from Zarr" in n for n in notes) == 2, notes  # train and val
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in in_memory.train.history] == \
           [{k: v for k, v in r.items() if k not in TIMING} for r in streamed.train.history]
    assert in_memory.metrics["val_top1"] == streamed.metrics["val_top1"]


@pytest.mark.slow
def test_ten_thousand_frame_video_extracts_in_bounded_memory(tmp_path):
    from corpus import write_video
    from PIL import Image

    from pipeline.demo_data import CLASSES

    coarse = np.random.default_rng(0).integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((320, 240), Image.BICUBIC))  # smooth: cheap to encode
    peaks = {}
    for frames in (1_000, 10_000):
        video = tmp_path / f"long{frames}.mp4"
        write_video(video, (np.roll(base, 3 * i, axis=1) for i in range(frames)), fps=25)  # streamed, never whole
        manifest = tmp_path / f"long{frames}.csv"
        manifest.write_text(f"video_id,path,label,split\nlong,{video},{CLASSES[0]},train\n")
        manifest.with_name(f"long{frames}.classes.txt").write_text("\n".join(CLASSES) + "\n")
        peaks[frames] = peak_rss_mib(["extract", "-m", str(manifest), "-o", str(tmp_path / f"s{frames}.zarr"),
                                      "--backbone", "tiny", "--weights", "none", "--executor", "local"],
                                     tmp_path / f"extract{frames}.log")
    print(f"peak RSS of stpipe extract: {peaks[1_000]:.0f} MiB at 1,000 frames, {peaks[10_000]:.0f} MiB at 10,000")
    assert peaks[10_000] < 2048
    assert peaks[10_000] < peaks[1_000] + 200  # does not grow with the video's length


@pytest.mark.slow
def test_store_larger_than_the_budget_streams_in_bounded_memory(tmp_path):
    url = str(tmp_path / "big.zarr")
    make_store(url, num_classes=10, per_class={"train": 250, "val": 50}, dim=2048, views=1, lengths=(90, 110))
    size = sum(p.stat().st_size for p in Path(url).rglob("*") if p.is_file()) / 2**20
    common = ["train-head", "-s", url, "--head", "mlp", "--segments", "8", "--epochs", "1", "--device", "cpu"]
    streamed = peak_rss_mib([*common, "-o", str(tmp_path / "stream"), "--memory-budget-gb", "0.1"], tmp_path / "s.log")
    loaded = peak_rss_mib([*common, "-o", str(tmp_path / "mem"), "--memory-budget-gb", "8"], tmp_path / "m.log")
    print(f"train-head on a {size:.0f} MiB store: peak RSS {streamed:.0f} MiB streamed (0.1 GB budget), "
          f"{loaded:.0f} MiB loaded")
    assert "streamed from Zarr" in (tmp_path / "s.log").read_text()
    assert streamed < loaded - 0.5 * size and streamed < size
