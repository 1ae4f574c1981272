"""Runs that did not train are said to be so (pipeline.training.collapse), and `--select` chooses a
recipe on an inner split of the training split (pipeline.training.select)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from store_fixtures import make_store

from pipeline.ablation.report import aggregate, summary_markdown
from pipeline.config import from_dict
from pipeline.progress import Note
from pipeline.store import FeatureStore
from pipeline.training.collapse import collapse_notes, prior_entropy
from pipeline.training.config import TrainHeadConfig
from pipeline.training.data import load_split
from pipeline.training.loop import TrainData
from pipeline.training.select import inner_split, select
from stages import train_head


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("stores") / "order.zarr")
    make_store(url, per_class={"train": 8, "val": 4})
    return url


@pytest.fixture(scope="module")
def data(store_url):
    store = FeatureStore.open(store_url)
    return TrainData(load_split(store, "train"), load_split(store, "val"), store.classes)


def config(store_url, out="", **kw):
    base = dict(store=store_url, out=out, head="mlp", segments=4, epochs=3, lr=0.05, batch_size=16, proj_dim=16,
                optimizer="adamw", schedule="cosine")
    return TrainHeadConfig(**{**base, **kw})


# ---- collapse -----------------------------------------------------------------------------------


def test_prior_entropy_is_the_constant_prediction_loss():
    assert prior_entropy(np.array([0, 1, 2, 3] * 5), 4) == pytest.approx(math.log(4))
    assert prior_entropy(np.array([0, 0, 0, 1]), 3) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))


def test_collapse_notes_name_a_flat_loss_and_one_predicted_class():
    labels = np.array([0, 1, 2] * 10)
    flat = [{"train_loss": math.log(3) - 0.01}] * 5
    learning = [{"train_loss": 1.0}, {"train_loss": 0.4}]
    one_class = np.array([[3, 0, 0], [4, 0, 0], [2, 0, 0]])
    spread = np.array([[3, 0, 0], [0, 4, 0], [1, 0, 1]])
    notes = collapse_notes(flat, labels, 3, one_class, ["a", "b", "c"])
    assert len(notes) == 2 and "never fell clearly below" in notes[0] and "('a')" in notes[1]
    assert collapse_notes(learning, labels, 3, spread, ["a", "b", "c"]) == []


def test_a_run_that_does_not_train_says_so_in_metrics_and_on_the_terminal(store_url, tmp_path):
    events = []
    result = train_head.run(config(store_url, str(tmp_path / "run"), lr=1e-9, epochs=2),
                            progress=events.append)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["collapsed"] is True and result.train.collapsed
    assert any(n.startswith("collapsed: the training loss never fell") for n in metrics["notes"])
    assert any(isinstance(e, Note) and e.message.startswith("collapsed:") for e in events)
    ok = train_head.run(config(store_url, str(tmp_path / "ok"), epochs=6))
    assert ok.metrics["collapsed"] is False and not any(n.startswith("collapsed") for n in ok.metrics["notes"])


def test_ablate_summary_marks_collapsed_trials_and_keeps_them_out_of_the_mean():
    rows = [dict(head="trn_multiscale", segments=8, modality="rgb", seed=s, status="ok", val_top1=v, macs=1,
                 head_params=1, head_macs=1, collapsed=c) for s, (v, c) in enumerate(((0.6, 0), (0.125, 1), (0.5, 0)))]
    cell = aggregate(rows)[("trn_multiscale", (8, "rgb"))]
    assert cell.mean == pytest.approx(55.0) and cell.runs == 2 and cell.collapsed == 1
    text = summary_markdown(rows, heads=["trn_multiscale"], settings=[(8, "rgb")], seeds=(0, 1, 2))
    assert "55.0 ± 7.1** (2/3 seeds, 1 collapsed)" in text
    assert "## Collapsed trials" in text and "- trn_multiscale 8 seg. rgb seed 1: val top-1 12.5" in text
    all_collapsed = [dict(r, collapsed=1) for r in rows]
    assert "| collapsed |" in summary_markdown(all_collapsed, heads=["trn_multiscale"], settings=[(8, "rgb")],
                                               seeds=(0, 1, 2))


# ---- select -------------------------------------------------------------------------------------


def test_inner_split_is_stratified_disjoint_and_deterministic(data):
    a_train, a_val = inner_split(data.train, seed=0)
    b_train, b_val = inner_split(data.train, seed=0)
    assert list(a_val.video_ids) == list(b_val.video_ids)
    assert not set(a_train.video_ids) & set(a_val.video_ids)
    assert len(a_train) + len(a_val) == len(data.train)
    assert np.bincount(a_val.labels).tolist() == [2, 2, 2, 2]  # a quarter of each class's 8
    other = inner_split(data.train, seed=1)[1]
    assert list(other.video_ids) != list(a_val.video_ids)
    # the held-out part reads the same features as the whole split (no copies)
    assert a_val.streams["rgb"].frames is data.train.streams["rgb"].frames


def test_select_searches_each_axis_and_never_sees_val(data, monkeypatch):
    seen = []
    import pipeline.training.select as select_module

    real_train = select_module.train

    def spy(cfg, inner, **kw):
        seen.append(set(inner.train.video_ids) | set(inner.val.video_ids))
        return real_train(cfg, inner, **kw)

    monkeypatch.setattr(select_module, "train", spy)
    cfg = config("x", epochs=2, temporal_center=0.0)
    found = select(cfg, data)
    assert all(ids <= set(data.train.video_ids) for ids in seen)  # only training videos
    assert len(found.points) == len(seen) == 8  # start + lr x2 + epochs + center + dropout + proj_dim x2
    best = max(p["inner_top1"] for p in found.points)
    chosen = found.record()["chosen"]
    assert any(p["inner_top1"] == best for p in found.points)
    assert set(chosen) == {"lr", "epochs", "temporal_center", "dropout", "proj_dim"}
    assert found.chosen.store == cfg.store and found.chosen.seed == cfg.seed
    assert found.points[-1]["epochs"] == 2 * cfg.epochs  # the longer length is tried last
    assert all(1 <= p["epochs_run"] <= p["epochs"] for p in found.points)


def test_inner_runs_stop_early_once_inner_top1_stops_improving(data):
    from dataclasses import replace

    from pipeline.training.loop import train
    from pipeline.training.select import patience

    frozen = replace(config("x", epochs=12), lr=1e-12)  # (nearly) frozen: top-1 never improves after epoch 1
    result = train(frozen, data, patience=patience(12))
    assert patience(12) == 3 and patience(40) == 10
    assert result.epochs == 1 + 3 and result.stopped == "val top-1 did not improve for 3 epochs"
    assert train(frozen, data).epochs == 12  # without patience: every epoch


def test_train_head_select_records_the_search_and_resumes_the_choice(store_url, tmp_path):
    out = tmp_path / "run"
    cfg = config(store_url, str(out), head="tsn", epochs=2, select=True)
    first = train_head.run(cfg)
    record = first.metrics["select"]
    assert len(record["points"]) == 5  # tsn: start, lr x2, epochs, dropout (no projection width or centring)
    assert (out / "selection.json").is_file()
    assert json.loads((out / "metrics.json").read_text())["select"]["chosen"] == record["chosen"]
    assert first.metrics["epochs"] == record["chosen"]["epochs"]
    again = train_head.run(cfg)  # the same command again: no new search, the finished run is continued
    assert again.metrics["select"]["points"] == record["points"]


# ---- raw CNN features (issue 20: trn_multiscale stuck at ln K) ----------------------------------


@pytest.fixture(scope="module")
def cnn_like_url(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("stores") / "cnn.zarr")
    make_store(url, dim=1280, per_class={"train": 12, "val": 6}, cnn_like=True, views=1)
    return url


def test_default_recipe_trains_trn_on_raw_cnn_like_features(cnn_like_url, tmp_path):
    """On non-negative, uncentred features AdamW's first steps pushed every projected channel below
    zero for every clip, and TRN's leading ReLU then passed nothing; the recipes standardise."""
    cfg = from_dict(TrainHeadConfig, dict(store=cnn_like_url, out=str(tmp_path / "trn"), head="trn_multiscale",
                                          segments=4, batch_size=16))
    assert cfg.resolved().standardize
    result = train_head.run(cfg)
    assert min(r["train_loss"] for r in result.train.history) < 0.5 * math.log(4)
    assert not result.metrics["collapsed"] and result.metrics["val_top1"] >= 0.9


def test_ablate_standardises_trials_whose_recipe_asks(cnn_like_url, tmp_path):
    from pipeline.ablation import AblateConfig
    from pipeline.training.model import load_checkpoint
    from stages import ablate

    cfg = AblateConfig(store=cnn_like_url, out=str(tmp_path / "abl"), heads=("mlp",), segments=(4,), seeds=(0,),
                       executor="local", trial_plots=False, train={"epochs": 1, "batch_size": 16})
    paper = AblateConfig(**{**cfg.__dict__, "out": str(tmp_path / "paper"),
                            "train": {**cfg.train, "recipe": "paper"}})
    for run_cfg, standardised in ((cfg, True), (paper, False)):
        record = ablate.run(run_cfg).records[0]
        assert record.status == "ok", record.error
        assert bool(load_checkpoint(record.run_dir / "checkpoint.pt").get("stats")) is standardised
