"""Stage two: sampling, the fast data path, learning, resume, checkpoints, stats, bad input, CLI."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from store_fixtures import make_store

from pipeline.errors import ConfigError, HeadError, RunError, StoreError
from pipeline.progress import Finished, Note
from pipeline.store import FeatureStore
from pipeline.training.batches import MemoryFeatures, eval_plans, segment_indices, train_plans
from pipeline.training.config import TrainHeadConfig
from pipeline.training.data import load_split
from pipeline.training.fusion import choose_weights
from pipeline.training.loop import TrainData, make_source, num_views, predict, train
from pipeline.training.model import build_model, load_checkpoint
from pipeline.training.stats import compute_stats
from pipeline.training.streaming import ZarrFeatures, iterate_batches
from stages import evaluate, train_head


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("stores") / "order.zarr")
    make_store(url, flow_features=True, flow_dim=8, failed=["train/class_0/001"], incomplete=["train/class_1/002"])
    return url


@pytest.fixture(scope="module")
def store(store_url):
    return FeatureStore.open(store_url)


@pytest.fixture(scope="module")
def spatial_url(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("stores") / "maps.zarr")
    make_store(url, spatial=(2, 3), dim=6, per_class={"train": 4, "val": 2})
    return url


def config(store_url, out="", **kw):
    # the paper's SGD recipe (recipe="paper"): these tests' learning rates are SGD's
    base = dict(store=store_url, out=out, head="mlp", segments=4, epochs=3, lr=0.05, batch_size=16, proj_dim=32,
                recipe="paper")
    return TrainHeadConfig(**{**base, **kw})


# ---- sampling ----------------------------------------------------------------------------------


def test_train_indices_fall_inside_their_segments():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 200, (500,), generator=gen)
    n = 8
    idx = segment_indices(lengths, n, torch.rand(500, n, generator=gen))
    for length, row in zip(lengths.tolist(), idx.tolist()):
        for t, i in enumerate(row):
            start, end = t * length // n, (t + 1) * length // n
            assert start <= i < end
    assert (idx[:, 1:] > idx[:, :-1]).all()  # one frame per segment, in order


def test_train_positions_cover_the_whole_segment():
    lengths = torch.full((4000,), 80)  # 10 frames per segment
    idx = segment_indices(lengths, 8, torch.rand(4000, 8, generator=torch.Generator().manual_seed(1)))
    assert set(idx[:, 3].tolist()) == set(range(30, 40))


def test_eval_takes_segment_middles():
    idx = segment_indices(torch.tensor([16, 17, 8]), 4)
    assert idx.tolist() == [[2, 6, 10, 14], [2, 6, 10, 14], [1, 3, 5, 7]]


def test_short_videos_repeat_frames_in_order():
    for positions in (None, torch.rand(1, 8)):
        idx = segment_indices(torch.tensor([3]), 8, positions)[0]
        assert idx.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert segment_indices(torch.tensor([1]), 4).tolist() == [[0, 0, 0, 0]]


def test_plans_visit_every_video_once_and_drop_a_lone_last_sample():
    plans = train_plans(33, 16, 4, torch.Generator().manual_seed(0))
    seen = torch.cat([p.videos for p in plans])
    assert [len(p.videos) for p in plans] == [16, 16] and len(set(seen.tolist())) == 32
    assert [len(p.videos) for p in train_plans(34, 16, 4, torch.Generator())] == [16, 16, 2]


# ---- the data path -----------------------------------------------------------------------------


def naive_sample(split, video, positions, view_draw, n, view=0):
    """Per-sample Python reference: straight from the numpy split."""
    out = {}
    for name, s in split.streams.items():
        length, offset = int(s.lengths[video]), int(s.offsets[video])
        frames = []
        for t in range(n):
            start, end = t * length // n, (t + 1) * length // n
            size = max(end - start, 1)
            pick = size // 2 if positions is None else min(int(float(positions[t]) * size), size - 1)
            frames.append(start + pick)
        v = view if view_draw is None else min(int(float(view_draw) * s.views), s.views - 1)
        out[name] = s.frames[v, offset + np.array(frames)].astype(np.float32)
    return out


def test_gather_equals_the_naive_per_sample_reference(store):
    split = load_split(store, "train", streams=("rgb", "flow"))
    source = MemoryFeatures(split, device=torch.device("cpu"), num_segments=5, max_batch=8)
    plans = train_plans(len(split), 8, 5, torch.Generator().manual_seed(3))
    views_used = set()
    for plan in plans[:6]:
        x, y = source.gather(plan)
        for b, video in enumerate(plan.videos.tolist()):
            ref = naive_sample(split, video, plan.positions[b], plan.view_draw[b], 5)
            for name in ("rgb", "flow"):
                np.testing.assert_array_equal(x[name][b].numpy(), ref[name])
            assert y[b] == split.labels[video]
            views_used.add(min(int(float(plan.view_draw[b]) * 2), 1))
    assert views_used == {0, 1}  # a random cached view per sample
    plan = eval_plans(len(split), 8)[1]
    for view in (0, 1):
        x, _ = source.gather(plan, view)
        for b, video in enumerate(plan.videos.tolist()):
            np.testing.assert_array_equal(x["rgb"][b].numpy(), naive_sample(split, video, None, None, 5, view)["rgb"])


def test_iterate_precomputes_rows_for_all_plans_and_equals_gather(store):
    split = load_split(store, "train", streams=("rgb", "flow"))
    stats = {s: (np.full(d.frame_shape, 0.5, np.float32), np.full(d.frame_shape, 2.0, np.float32))
             for s, d in split.streams.items()}
    source = make_source(split, device=torch.device("cpu"), num_segments=5, stats=stats, max_batch=4)
    # training plans (drawn views), then evaluation plans (given views, middle frames), one larger
    # than max_batch (the buffers grow), each plan under every view, in one call
    plans = train_plans(len(split), 4, 5, torch.Generator().manual_seed(1))[:3] + eval_plans(len(split), 6)[:2]
    expected = []
    for plan in plans:
        for view in (0, 1):
            x, y = source.gather(plan, view)
            expected.append(({k: v.clone() for k, v in x.items()}, y.clone()))
    got = [({k: v.clone() for k, v in x.items()}, y.clone()) for x, y in source.iterate(plans, views=(0, 1))]
    assert len(got) == len(expected) == 10
    for (xa, ya), (xb, yb) in zip(got, expected):
        assert torch.equal(ya, yb)
        for name in ("rgb", "flow"):
            assert xa[name].dtype == torch.float32 and torch.equal(xa[name], xb[name])
    plan = plans[-1]  # a standardised evaluation batch against the per-sample reference
    x, _ = next(source.iterate([plan], views=(1,)))
    for b, video in enumerate(plan.videos.tolist()):
        ref = naive_sample(split, video, None, None, 5, view=1)
        for name in ("rgb", "flow"):
            np.testing.assert_array_equal(x[name][b].numpy(), (ref[name] - np.float32(0.5)) * np.float32(0.5))
    assert list(source.iterate([])) == []


def test_streamed_features_equal_in_memory_ones(store):
    memory = load_split(store, "train", streams=("rgb", "flow"))
    streamed = load_split(store, "train", streams=("rgb", "flow"), memory_budget_bytes=1000)
    assert streamed.streamed and not memory.streamed
    assert any("streaming from Zarr" in n for n in streamed.notes)
    cpu = torch.device("cpu")
    a = MemoryFeatures(memory, device=cpu, num_segments=4, max_batch=16)
    b = ZarrFeatures(streamed, device=cpu, num_segments=4)
    plans = train_plans(len(memory), 16, 4, torch.Generator().manual_seed(0))
    for (xa, ya), (xb, yb) in zip(iterate_batches(a, plans), iterate_batches(b, plans)):
        assert torch.equal(ya, yb)
        for name in xa:
            assert torch.equal(xa[name], xb[name])
    b.close()


def test_evaluation_averages_the_logits_of_all_views(store):
    split = load_split(store, "val")
    torch.manual_seed(0)
    model = build_model({"fusion": "single", "heads": {"rgb": dict(name="lstm", num_classes=4, num_segments=4, in_dim=16,
                                                                     spatial=None, streams=["rgb"], proj_dim=8)}})
    source = make_source(split, device=torch.device("cpu"), num_segments=4, stats=None, max_batch=8)
    logits, labels = predict(model, source, views=2, batch_size=8)
    model.eval()
    with torch.no_grad():
        per_view = [torch.stack([model({"rgb": torch.from_numpy(naive_sample(split, v, None, None, 4, view)["rgb"])[None]})[0]
                                 for v in range(len(split))]) for view in (0, 1)]
    torch.testing.assert_close(logits, (per_view[0] + per_view[1]) / 2, rtol=1e-5, atol=1e-5)
    assert labels.tolist() == split.labels.tolist()


def test_pooled_heads_get_maps_averaged_once_at_load(spatial_url):
    store = FeatureStore.open(spatial_url)
    pooled = load_split(store, "train", pooled=True)
    maps = load_split(store, "train", pooled=False)
    assert pooled.streams["rgb"].frames.shape[2:] == (6,) and maps.streams["rgb"].frames.shape[2:] == (6, 2, 3)
    expected = maps.streams["rgb"].frames.astype(np.float32).mean(axis=(-2, -1))
    np.testing.assert_allclose(pooled.streams["rgb"].frames, expected, atol=2e-3)


# ---- training ----------------------------------------------------------------------------------


def test_order_aware_head_learns_what_tsn_cannot(store):
    data = TrainData(load_split(store, "train"), load_split(store, "val"), store.classes)
    mlp = train(config("x", head="mlp", epochs=8), data)
    tsn = train(config("x", head="tsn", epochs=8), data)
    assert mlp.val["top1"] >= 0.9
    assert tsn.val["top1"] <= 0.75  # within a time-reversed pair an average of frames is at chance
    assert mlp.history[0]["samples_per_second"] > 0 and mlp.complexity["params"] > 0


def test_two_stream_late_and_joint_fusion(store):
    streams = ("rgb", "flow")
    data = TrainData(load_split(store, "train", streams=streams), load_split(store, "val", streams=streams), store.classes)
    late = train(config("x", head="mlp", modality="rgb+flow", epochs=6), data)
    assert set(late.spec["heads"]) == {"rgb", "flow"} and late.val["top1"] >= 0.9
    joint = train(config("x", head="st_resnet", modality="rgb+flow", fusion="joint", epochs=2), data)
    assert list(joint.spec["heads"]) == ["joint"] and joint.model.streams == ("rgb", "flow")
    with pytest.raises(ConfigError, match="two-stream head"):
        train(config("x", head="mlp", modality="rgb+flow", fusion="joint"), data)


def _decoupled_flow(split, seed=0):
    """`split` with its flow features dealt out to other videos of it: a stream that carries no label."""
    order = np.random.default_rng(seed).permutation(len(split))
    flow = split.streams["flow"]
    return dataclasses.replace(split, streams={**split.streams, "flow": dataclasses.replace(
        flow, offsets=flow.offsets[order].copy(), lengths=flow.lengths[order].copy())})


def test_late_fusion_weights_are_chosen_on_training_videos_only(store):
    streams = ("rgb", "flow")
    train_split, val = (_decoupled_flow(load_split(store, s, streams=streams)) for s in ("train", "val"))
    cfg = config("x", head="mlp", modality="rgb+flow", epochs=6)
    chosen = choose_weights(cfg, TrainData(train_split, val, store.classes))
    shuffled = dataclasses.replace(val, labels=np.random.default_rng(1).permutation(val.labels))
    assert choose_weights(cfg, TrainData(train_split, shuffled, store.classes)) == chosen
    assert chosen["inner_train_videos"] + chosen["inner_val_videos"] == len(train_split)
    assert chosen["weights"]["rgb"] > 0.5 > chosen["weights"]["flow"]  # the label-free stream is turned down
    assert sum(chosen["weights"].values()) == pytest.approx(1.0) and len(chosen["grid"]) == 11


def test_a_late_fusion_run_keeps_its_weights_and_evaluate_applies_them(store_url, tmp_path):
    out = tmp_path / "run"
    result = train_head.run(config(store_url, str(out), head="mlp", modality="rgb+flow", epochs=3))
    weights = result.metrics["fusion"]["weights"]
    assert json.loads((out / "fusion.json").read_text())["weights"] == weights
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    model = build_model(checkpoint["spec"])
    assert checkpoint["spec"]["weights"] == weights and model.weights == pytest.approx(weights)
    model.load_state_dict(checkpoint["model"])
    store = FeatureStore.open(store_url)
    val = load_split(store, "val", streams=("rgb", "flow"))
    source = make_source(val, device=torch.device("cpu"), num_segments=4, stats=None, max_batch=64)
    per_stream = {}
    for stream in ("rgb", "flow"):
        model.set_weights({s: float(s == stream) for s in ("rgb", "flow")})
        per_stream[stream], labels = predict(model, source, views=num_views(val), batch_size=64)
    fused = sum(weights[s] * per_stream[s] for s in per_stream)
    top1 = float((fused.argmax(1) == labels).float().mean())
    assert evaluate.run(evaluate.EvaluateConfig(run=str(out), split="val")).top1 == pytest.approx(top1)
    assert result.metrics["val_top1"] == pytest.approx(top1)


@pytest.mark.parametrize("val_shares_groups", [False, True])
def test_late_fusion_holds_out_whole_groups_only_when_val_does(tmp_path, val_shares_groups):
    # two groups per split, each half of every class: whole groups hold out half of train, per video a quarter
    url = str(tmp_path / "grouped.zarr")
    make_store(url, flow_features=True, flow_dim=8, per_class={"train": 8, "val": 4},
               group_of=lambda split, c, k: f"{'' if val_shares_groups else split}{k % 2}")
    result = train_head.run(config(url, str(tmp_path / "run"), head="tsn", modality="rgb+flow", epochs=2))
    assert result.metrics["fusion"]["inner_val_videos"] == (8 if val_shares_groups else 16)


def test_spatial_head_trains_on_maps(spatial_url, tmp_path):
    result = train_head.run(config(spatial_url, str(tmp_path / "run"), head="fcn3d", epochs=1))
    assert result.metrics["macs"] > 0 and 0 <= result.metrics["val_top1"] <= 1


def test_run_dir_files_and_weights_only_checkpoints(store_url, tmp_path):
    out = tmp_path / "run"
    result = train_head.run(config(store_url, str(out), head="trn_multiscale", standardize=True))
    for name in ("config.yaml", "checkpoint.pt", "last.pt", "metrics.jsonl", "metrics.json", "curves.png",
                 "confusion.png", "stats.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("val_top1", "val_top5", "val_mean_class_acc", "params", "macs", "epochs", "train_seconds",
                "samples_per_second"):
        assert key in metrics
    assert len((out / "metrics.jsonl").read_text().splitlines()) == metrics["epochs"] == 3
    best = torch.load(out / "checkpoint.pt", weights_only=True)
    torch.load(out / "last.pt", weights_only=True)
    model = build_model(best["spec"])
    model.load_state_dict(best["model"])
    assert set(best["stats"]) == {"rgb"}
    assert best["val_top1"] == max(r["val_top1"] for r in result.train.history)
    again = evaluate.run(evaluate.EvaluateConfig(run=str(out), split="val"))
    assert again.top1 == pytest.approx(metrics["val_top1"])
    test = evaluate.run(evaluate.EvaluateConfig(run=str(out), split="test"))
    assert test.videos == 16 and (out / "eval_test.json").is_file()
    assert len(json.loads((out / "eval_test.json").read_text())["per_class"]) == 4


def test_evaluate_out_writes_per_video_predictions_per_class_and_confusion(store_url, tmp_path, stpipe):
    out = str(tmp_path / "run")
    train_head.run(config(store_url, out, epochs=2))
    result = evaluate.run(evaluate.EvaluateConfig(run=out, split="val", out=str(tmp_path / "res" / "val.csv"),
                                                  top_k=2))
    assert [p.name for p in result.outputs] == ["val.csv", "val_per_class.csv", "val_confusion.csv",
                                                "val_confusion.png"]
    with open(result.outputs[0]) as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["video_id", "label", "correct", "class_1", "probability_1", "class_2", "probability_2"]
    assert len(rows) == result.videos == len({r["video_id"] for r in rows})
    for row in rows:
        assert row["video_id"].startswith("val/") and row["label"] == row["video_id"].split("/")[1]  # the fixture's ids
        assert row["correct"] == str(int(row["class_1"] == row["label"]))
        assert 1 >= float(row["probability_1"]) >= float(row["probability_2"]) >= 0
    assert np.mean([int(r["correct"]) for r in rows]) == pytest.approx(result.top1)
    with open(result.outputs[1]) as handle:
        per_class = list(csv.DictReader(handle))
    assert [c["class"] for c in per_class] == [c["class"] for c in result.per_class]
    assert sum(int(c["support"]) for c in per_class) == len(rows)
    with open(result.outputs[2]) as handle:
        matrix = list(csv.reader(handle))
    counts = np.array([[int(v) for v in line[1:]] for line in matrix[1:]])
    assert matrix[0][1:] == [line[0] for line in matrix[1:]] == [c["class"] for c in per_class]
    assert counts.sum() == len(rows) and np.trace(counts) == sum(int(r["correct"]) for r in rows)
    for line, row_counts in zip(matrix[1:], counts):  # a row per true class
        assert row_counts.sum() == sum(1 for r in rows if r["label"] == line[0])
    assert result.outputs[3].read_bytes()[:4] == b"\x89PNG"
    code, stdout, _ = stpipe(["evaluate", "--run", out, "--out", tmp_path / "val.json", "--top-k", "3"])
    assert code == 0 and f"per-video predictions: {tmp_path / 'val.json'}" in stdout
    dumped = json.loads((tmp_path / "val.json").read_text())
    assert [(d["video_id"], d["label"], d["correct"], d["top"][0]["class"]) for d in dumped] == \
        [(r["video_id"], r["label"], r["correct"] == "1", r["class_1"]) for r in rows]
    assert {len(d["top"]) for d in dumped} == {3}
    code, _, err = stpipe(["evaluate", "--run", out, "--out", tmp_path / "val.txt"])
    assert code == 2 and "expected a .csv or .json file" in err


class Interrupt(Exception):
    pass


def test_resume_ends_identical_to_an_uninterrupted_run(store_url, tmp_path):
    kw = dict(head="trn_multiscale", epochs=4, plateau_patience=1, lr=0.5)
    whole = train_head.run(config(store_url, str(tmp_path / "whole"), **kw))

    with pytest.raises(Interrupt):
        train_head.run(config(store_url, str(tmp_path / "cut"), **kw), progress=_raise_after(2))
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 2
    resumed = train_head.run(config(store_url, str(tmp_path / "cut"), resume=True, **kw))
    assert resumed.resumed
    a = load_checkpoint(tmp_path / "whole" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    drop = ("seconds", "samples_per_second")
    assert [{k: v for k, v in r.items() if k not in drop} for r in whole.train.history] == \
           [{k: v for k, v in r.items() if k not in drop} for r in resumed.train.history]


# ---- statistics --------------------------------------------------------------------------------


def test_stats_equal_numpy_in_memory_and_streamed(store, spatial_url):
    split = load_split(store, "train")
    frames = split.streams["rgb"].frames.astype(np.float64).reshape(-1, 16)
    stats = compute_stats(store, split, "rgb", pooled=True)
    np.testing.assert_allclose(stats.mean, frames.mean(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(stats.std, frames.std(axis=0), rtol=1e-8)
    streamed = load_split(store, "train", memory_budget_bytes=1.0)  # over the budget: read video by video
    assert streamed.streamed
    video_by_video = compute_stats(store, streamed, "rgb", pooled=True)
    np.testing.assert_allclose(video_by_video.std, stats.std, rtol=1e-10)
    assert (video_by_video.values, video_by_video.fingerprint) == (stats.values, stats.fingerprint)
    maps = FeatureStore.open(spatial_url)
    part = load_split(maps, "train", pooled=False)
    per_channel = np.moveaxis(part.streams["rgb"].frames.astype(np.float64), 2, -1).reshape(-1, 6)
    stats = compute_stats(maps, part, "rgb", pooled=False)
    np.testing.assert_allclose(stats.std, per_channel.std(axis=0), rtol=1e-8)
    assert stats.values == per_channel.shape[0]


@pytest.fixture
def packed(store_url, tmp_path):
    import shutil

    from pipeline.store.pack import write_pack

    url = str(tmp_path / "packed.zarr")
    shutil.copytree(store_url, url)
    write_pack(FeatureStore.open(url, mode="r+"))
    return url


def test_the_pack_keeps_each_splits_stats_and_a_rebuild_drops_them(packed):
    from pipeline.store.pack import open_pack, write_pack
    from pipeline.training.stats import cached_stats

    store = FeatureStore.open(packed, mode="r+")
    part = load_split(store, "train")
    kept = cached_stats(store, part, "rgb", pooled=True)
    assert kept is not None and set(open_pack(store, "rgb").stats) == {"train", "val", "test"}
    computed = compute_stats(store, part, "rgb", pooled=True)
    np.testing.assert_allclose(kept.mean, computed.mean, rtol=1e-10)
    np.testing.assert_allclose(kept.std, computed.std, rtol=1e-8)
    assert (kept.videos, kept.values) == (computed.videos, computed.values)
    other = load_split(store, "val")  # another split's videos: the train stats do not match it
    assert cached_stats(store, other, "rgb", pooled=True).fingerprint != kept.fingerprint
    store.root["pack/rgb"].attrs["stats"] = {}  # as a pack built by older code
    store.__dict__.pop("_packs", None)
    assert cached_stats(store, part, "rgb", pooled=True) is None
    write_pack(store, force=True)
    assert cached_stats(store, part, "rgb", pooled=True) == kept


class _ChunkReads:
    """The chunk keys zarr reads from local stores (metadata documents left out)."""

    def __init__(self, monkeypatch):
        from zarr.storage import LocalStore

        self.keys: list[str] = []
        original = LocalStore.get

        async def get(store, key, *args, **kw):
            if "/c/" in key:
                self.keys.append(key)
            return await original(store, key, *args, **kw)

        monkeypatch.setattr(LocalStore, "get", get)

    def take(self) -> list[str]:
        taken, self.keys[:] = sorted(self.keys), []
        return taken


@pytest.mark.parametrize("kind", ["pack", "groups", "maps"])
def test_stats_come_from_the_features_read_not_a_second_read(kind, packed, store_url, spatial_url, tmp_path,
                                                             monkeypatch):
    from pipeline.training.features import load_features

    url, pooled = {"pack": (packed, True), "groups": (store_url, True), "maps": (spatial_url, False)}[kind]
    reads = _ChunkReads(monkeypatch)

    def load(standardize: bool, stats_dir):
        found = load_features(FeatureStore.open(url), uses=[(("rgb",), pooled)], splits=("train", "val"),
                              memory_budget_bytes=2**30, standardize=standardize, stats_dir=str(stats_dir))
        return found, reads.take()

    plain, plain_reads = load(False, tmp_path / "a")
    standardised, standardised_reads = load(True, tmp_path / "b")
    assert plain_reads and standardised_reads == plain_reads
    assert set(standardised.stats) == {("rgb", pooled)}
    if kind == "pack":
        assert all(key.startswith(("pack/", "index/")) for key in plain_reads), plain_reads
    again, again_reads = load(True, tmp_path / "b")  # a later run: the kept stats, still no extra read
    assert again_reads == plain_reads and again.stats == standardised.stats


# ---- bad input ---------------------------------------------------------------------------------


def test_failed_and_incomplete_videos_are_skipped_with_counts(store):
    split = load_split(store, "train")
    assert len(split) == 4 * 12 - 2
    assert any("1 failed" in n for n in split.notes) and any("1 incomplete" in n for n in split.notes)


def test_empty_or_unlabelled_splits_are_one_line_errors(store, tmp_path):
    with pytest.raises(StoreError, match="split 'holdout' has no complete videos"):
        load_split(store, "holdout")
    url = str(tmp_path / "unlabelled.zarr")
    make_store(url, per_class={"train": 2, "test": 1}, unlabelled_split="test")
    with pytest.raises(StoreError, match="split 'test' has no labelled videos"):
        load_split(FeatureStore.open(url), "test")


def test_missing_class_in_train_is_a_warning(tmp_path):
    url = str(tmp_path / "gap.zarr")
    make_store(url, num_classes=4, per_class={"train": 3, "val": 2})
    store = FeatureStore.open(url)
    train_split = load_split(store, "train")
    keep = train_split.labels != 3  # drop class 3 from training
    for s in train_split.streams.values():
        s.offsets, s.lengths = s.offsets[keep], s.lengths[keep]
    train_split.labels, train_split.keys = train_split.labels[keep], train_split.keys[keep]
    notes = []
    train(config(url, epochs=1), TrainData(train_split, load_split(store, "val"), store.classes),
          progress=lambda event: isinstance(event, Note) and notes.append(event.message))
    assert any("1 class(es) have no training videos" in n and "class_3" in n for n in notes)


def test_mismatched_modality_and_feature_kind_are_clear_errors(spatial_url, tmp_path):
    with pytest.raises(StoreError, match="flow stream needs 'flow_feat' arrays"):
        train_head.run(config(spatial_url, str(tmp_path / "a"), modality="flow"))
    pooled_url = str(tmp_path / "pooled.zarr")
    make_store(pooled_url, per_class={"train": 2, "val": 1})
    with pytest.raises(StoreError, match="needs spatial feature maps"):
        train_head.run(config(pooled_url, str(tmp_path / "b"), head="convlstm"))


def test_run_dir_with_another_config_is_refused(store_url, tmp_path):
    out = str(tmp_path / "run")
    train_head.run(config(store_url, out, epochs=1))
    with pytest.raises(RunError, match=r"different config \(differs in: head; head .mlp. there, .lstm. here\)"):
        train_head.run(config(store_url, out, epochs=1, head="lstm"))
    assert train_head.run(config(store_url, out, epochs=1, head="lstm", overwrite=True)).metrics["head"] == "lstm"
    with pytest.raises(RunError, match="nothing to resume"):
        train_head.run(config(store_url, str(tmp_path / "new"), resume=True))


def test_a_start_that_fails_early_does_not_block_the_corrected_command(store_url, tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(StoreError, match="split 'holdout'"):
        train_head.run(config(store_url, out, epochs=1, val_split="holdout"))
    with pytest.raises(HeadError, match="no option .hiddn."):
        train_head.run(config(store_url, out, epochs=1, head_options={"hiddn": 3}))
    assert train_head.run(config(store_url, out, epochs=1)).metrics["epochs"] == 1


def test_evaluate_refuses_a_store_with_other_classes_or_shapes(store_url, tmp_path):
    out = str(tmp_path / "run")
    train_head.run(config(store_url, out, epochs=1))
    other = str(tmp_path / "other.zarr")
    make_store(other, num_classes=6, per_class={"train": 1, "val": 1})
    with pytest.raises(StoreError, match="classes differ"):
        evaluate.run(evaluate.EvaluateConfig(run=out, store=other))
    wider = str(tmp_path / "wider.zarr")
    make_store(wider, dim=24, per_class={"train": 1, "val": 1})
    with pytest.raises(StoreError, match=r"rgb features have shape \[24\]"):
        evaluate.run(evaluate.EvaluateConfig(run=out, store=wider))
    with pytest.raises(StoreError, match=r"rgb features have shape \[24\]"):  # continuing the run on it
        train_head.run(config(wider, out, epochs=1))


# ---- CLI ---------------------------------------------------------------------------------------


def test_cli_train_evaluate_stats(store_url, tmp_path, stpipe):
    out = str(tmp_path / "run")
    code, stdout, err = stpipe(["train-head", "-s", store_url, "--head", "gru", "--segments", "4", "-o", out,
                                "--epochs", "2", "--lr", "0.05"])
    assert code == 0, err
    assert "val top-1" in stdout.splitlines()[-1] and "samples/s" in stdout
    assert "skipping 1 failed" in err
    code, stdout, _ = stpipe(["evaluate", "--run", out, "--split", "test"])
    assert code == 0 and "top-1" in stdout and "eval_test.json" in stdout
    code, _, err = stpipe(["train-head", "-s", store_url, "--head", "mlp", "--segments", "4", "-o", out])
    assert code == 2 and err.startswith("stpipe: error:") and len(err.strip().splitlines()) == 1


def test_cli_stats_caches_in_the_store(tmp_path, stpipe):
    url = str(tmp_path / "s.zarr")
    make_store(url, per_class={"train": 2, "val": 1})
    code, stdout, err = stpipe(["stats", url])
    assert code == 0, err
    assert "16 channels" in stdout
    assert "train_rgb_pooled" in FeatureStore.open(url).root["stats"].attrs  # the name pooled heads look up


def test_spatial_batches_are_channels_last_and_equal_the_reference(spatial_url):
    split = load_split(FeatureStore.open(spatial_url), "train", streams=("rgb",), pooled=False)
    source = MemoryFeatures(split, device=torch.device("cpu"), num_segments=3, max_batch=4)
    plan = train_plans(len(split), 4, 3, torch.Generator().manual_seed(0))[0]
    x, _ = source.gather(plan)
    frames = x["rgb"].flatten(0, 1)  # what the spatial projection sees, (B*T, C, H, W)
    assert frames.is_contiguous(memory_format=torch.channels_last) and not frames.is_contiguous()
    for b, video in enumerate(plan.videos.tolist()):
        np.testing.assert_array_equal(x["rgb"][b].numpy(),
                                      naive_sample(split, video, plan.positions[b], plan.view_draw[b], 3)["rgb"])


def test_amp_on_cpu_needs_native_bf16(monkeypatch, store_url):
    from pipeline import device as device_mod

    cpu = torch.device("cpu")
    data, _ = train_head.load_data(config(store_url), FeatureStore.open(store_url))
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: False)
    on, note = device_mod.amp_on(cpu, True)
    assert not on and "no native bf16" in note
    assert device_mod.amp_on(cpu, False) == (False, "")
    notes = []
    train(config(store_url, epochs=1, amp=True), data,
          progress=lambda event: isinstance(event, Note) and notes.append(event.message))
    assert any("amp ignored" in n for n in notes)
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: True)
    assert device_mod.amp_on(cpu, True) == (True, "")
    seen = []
    real_autocast = torch.autocast

    def spy(*args, **kw):  # the training step and evaluation really autocast to bf16 on the CPU
        seen.append((kw.get("device_type"), kw.get("dtype"), kw.get("enabled")))
        return real_autocast(*args, **kw)

    monkeypatch.setattr(torch, "autocast", spy)
    result = train(config(store_url, epochs=2, amp=True), data)
    assert ("cpu", torch.bfloat16, True) in seen
    assert np.isfinite(result.history[-1]["train_loss"])


def test_a_diverged_run_stops_with_one_clear_error(store_url, tmp_path):
    with pytest.raises(RunError, match=r"training diverged: the loss is nan in epoch 1; lower the learning rate"):
        train_head.run(config(store_url, str(tmp_path / "run"), lr=float("inf"), epochs=2))


def test_resume_accepts_a_last_pt_written_before_a_field_existed(store_url, tmp_path):
    """A last.pt from before temporal_center existed resumes when the run uses its default (0)."""
    kw = dict(head="gru", epochs=3, lr=0.1, temporal_center=0.0)
    with pytest.raises(Interrupt):
        train_head.run(config(store_url, str(tmp_path / "run"), **kw),
                       progress=_raise_after(1))
    last = tmp_path / "run" / "last.pt"
    payload = load_checkpoint(last)
    del payload["identity"]["temporal_center"]
    torch.save(payload, last)
    assert train_head.run(config(store_url, str(tmp_path / "run"), resume=True, **kw)).resumed
    with pytest.raises(RunError, match="differs in: temporal_center"):
        train_head.run(config(store_url, str(tmp_path / "run"), resume=True, **{**kw, "temporal_center": 0.5}))


def _raise_after(epoch):
    """A progress callback that interrupts the run once epoch `epoch` has finished."""
    def progress(event):
        if isinstance(event, Finished) and event.task.startswith(f"epoch {epoch}/"):
            raise Interrupt
    return progress
