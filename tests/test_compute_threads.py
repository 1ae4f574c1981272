"""The compute process's thread count: measured choice (ThreadGovernor) and features that do not depend on it."""

import numpy as np
import pytest
import torch

from pipeline.extraction import ExtractConfig
from pipeline.extraction.threads import ThreadGovernor, levels
from pipeline.progress import Note
from pipeline.store import FeatureStore
from stages import extract


class Pipeline:
    """A simulated extraction on a fake clock. At n threads the decoders deliver `decode(n, t)` frames/s
    and the forward takes `forward(n, t)`; a batch takes its rows at the slower of the two, of which
    the compute thread is busy for rows / forward (the rest it waits for frames)."""

    def __init__(self, decode, forward, most, batch=8, **kw):
        self.now, self.decode, self.forward, self.batch = 0.0, decode, forward, batch
        self.threads_set, self.choices = [], []
        self.governor = ThreadGovernor(most, self.threads_set.append, clock=lambda: self.now,
                                       on_choice=lambda n, rates: self.choices.append((n, dict(rates))), **kw)

    @property
    def threads(self):
        return self.threads_set[-1]

    def run(self, seconds):
        end = self.now + seconds
        while self.now < end:
            n, t = self.threads, self.now
            self.now += self.batch / min(self.decode(n, t), self.forward(n, t))
            self.governor.forwarded(self.batch, self.batch / self.forward(n, t))


def table(values):
    return lambda n, t: values[n]


def test_levels_halve_down_from_the_cores():
    assert levels(1) == [1]
    assert levels(2) == [1, 2]
    assert levels(6) == [1, 2, 4, 6]
    assert levels(16) == [1, 2, 4, 8, 16]


def test_decode_bound_takes_one_thread_and_says_so():
    """Two cores, a pooling-only backbone (measured: 2,586 frames/s on two threads, 3,385 on one)."""
    sim = Pipeline(table({1: 3385.0, 2: 2586.0}), table({1: 17000.0, 2: 20000.0}), most=2)
    assert sim.threads == 2  # starts where the process was given
    sim.run(20)
    assert sim.threads == 1
    assert len(sim.choices) == 1 and sim.choices[0][0] == 1
    assert sim.choices[0][1][1] == pytest.approx(3385.0) and sim.choices[0][1][2] == pytest.approx(2586.0)


def test_forward_bound_never_tries_fewer_threads():
    """mobilenet_v2 on two cores: the compute thread is never waiting, so one thread cannot be faster
    and is never tried (a trial would cost half the forward's speed for its window)."""
    sim = Pipeline(table({1: 3400.0, 2: 3000.0}), table({1: 120.0, 2: 234.0}), most=2)
    sim.run(600)
    assert set(sim.threads_set) == {2} and sim.choices == []


def test_hill_climbs_to_the_best_count_of_many_cores():
    decode = {1: 1000.0, 2: 950.0, 4: 900.0, 8: 600.0, 16: 400.0}  # decoders lose cores to the forward
    forward = {1: 300.0, 2: 550.0, 4: 1000.0, 8: 1800.0, 16: 3000.0}
    sim = Pipeline(table(decode), table(forward), most=16)
    sim.run(30)
    assert sim.threads == 4
    assert [n for n, _ in sim.choices] == [4]


def test_a_difference_within_the_noise_margin_does_not_move_it():
    sim = Pipeline(table({1: 1030.0, 2: 1000.0}), table({1: 9000.0, 2: 9000.0}), most=2)
    sim.run(100)
    assert sim.threads == 2 and sim.choices == []


def test_it_follows_a_change_of_load():
    """Decode-bound first (one thread wins); later the forward becomes the bottleneck (a busier machine
    gave the decoders their cores back, say) and two threads win again."""
    sim = Pipeline(table({1: 3400.0, 2: 2600.0}), lambda n, t: (17000.0 if t < 100 else 500.0) * n, most=2)
    sim.run(100)
    assert sim.threads == 1
    sim.run(300)
    assert sim.threads == 2
    assert [n for n, _ in sim.choices] == [1, 2]


def test_a_short_window_needs_its_batches():
    """Slow batches (0.5 s each) are still measured over several batches, not one."""
    sim = Pipeline(table({1: 20.0, 2: 16.0}), table({1: 9000.0, 2: 9000.0}), most=2, window=0.5)
    sim.run(1.4)  # the skipped batch, then two: past the window, short of the batches
    assert sim.threads_set == [2]
    sim.run(0.5)  # the third: measured, waiting for frames: on to one thread
    assert sim.threads_set == [2, 1]


def test_the_forward_gives_the_same_features_on_any_thread_count(assets_dir):
    """Why the count may change mid-run: stored (float16) features are bit-identical across counts."""
    from pipeline.backbones import build_backbone
    from pipeline.video import read_frames
    from pipeline.views import make_views

    backbone = build_backbone("mobilenet_v2", weights="none")
    pre = backbone.preprocessor
    frames = read_frames(str(assets_dir / "videos" / "carphone_pristine.mp4"), short_side=pre.resize_size[0])
    inputs = pre.normalize(make_views(torch.from_numpy(frames[:16]).permute(0, 3, 1, 2), views="center", size=pre.crop_size)[0])
    before = torch.get_num_threads()
    out = {}
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            with torch.inference_mode():
                out[n] = backbone.forward_features(inputs).to(torch.float16).numpy()
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(out[1], out[2]) and np.array_equal(out[1], out[3])


def config(demo, store, **kw):
    base = dict(manifest=str(demo / "manifest.csv"), output=str(store), backbone="tiny", weights="none",
                executor="local", batch_size=4, chunk_frames=4, decode_procs=2)
    return ExtractConfig(**{**base, **kw})


def test_a_run_whose_threads_change_every_batch_writes_the_store_of_a_fixed_count(demo, tmp_path, monkeypatch):
    from pipeline.extraction import extractor as extractor_module

    counts = []

    class Flipping:  # in the governor's place: another count after every batch
        def __init__(self, most, set_threads, **kw):
            self.set_threads = set_threads

        def forwarded(self, rows, seconds):
            counts.append(1 + len(counts) % 2)
            self.set_threads(counts[-1])

    monkeypatch.setattr(extractor_module, "ThreadGovernor", Flipping)
    before = torch.get_num_threads()
    try:
        governed = extract.run(config(demo, tmp_path / "g.zarr"))
    finally:
        torch.set_num_threads(before)
    assert len(counts) > 10  # the governor's place was taken: every batch changed the count
    fixed = extract.run(config(demo, tmp_path / "f.zarr", compute_threads=2))
    torch.set_num_threads(before)
    assert governed.done == fixed.done == 20
    g, f = FeatureStore.open(str(tmp_path / "g.zarr")), FeatureStore.open(str(tmp_path / "f.zarr"))
    for video_id in g.index()["video_id"]:
        assert np.array_equal(g.read(video_id, "rgb"), f.read(video_id, "rgb")), video_id


def test_a_fixed_count_is_used_and_not_governed_and_the_count_is_given_back(demo, tmp_path, monkeypatch):
    from pipeline.extraction.batching import Batcher

    notes, during = [], []
    stage = Batcher.stage
    monkeypatch.setattr(Batcher, "stage", lambda self, batch: (during.append(torch.get_num_threads()),
                                                               stage(self, batch))[1])
    monkeypatch.setattr(extract, "apply_threads", lambda: None)  # the extractor is given 2 (not a load-aware count)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        extract.run(config(demo, tmp_path / "s.zarr", compute_threads=1),
                    progress=lambda e: isinstance(e, Note) and notes.append(e.message))
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert during and set(during) == {1}  # every batch ran on the fixed count
    assert not any("compute threads" in n for n in notes)
    assert after == 2  # given back: the caller's later work in this process is not left on 1


def test_a_negative_count_is_a_config_error(demo):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="compute_threads must be >= 0"):
        config(demo, "s.zarr", compute_threads=-1)
