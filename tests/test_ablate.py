"""Ablations: the grid and `all` filtering, shared features, resume, crash-retry, outputs, Ray, CLI."""

from __future__ import annotations

import json
import os
from fnmatch import fnmatch

import numpy as np
import pytest
from store_fixtures import make_store

from cli import main
from pipeline.ablation import AblateConfig, TrialUpdate, expand_grid
from pipeline.ablation.grid import Trial
from pipeline.ablation.report import aggregate, summary_markdown
from pipeline.ablation.results import read_results
from pipeline.ablation.shared import load_shared
from pipeline.config import read_yaml
from pipeline.errors import ConfigError, RegistryError
from pipeline.heads import HEADS
from pipeline.progress import Advanced, Note
from pipeline.store import FeatureStore
from pipeline.training.runs import RUN_FILES
from pipeline.training.tensorboard_events import EVENT_FILES
from pipeline.training.tensorboard_events import available as tensorboard_available
from stages import ablate

TRAIN = {"epochs": 3, "lr": 0.05, "batch_size": 16, "proj_dim": 16}


@pytest.fixture(scope="module")
def pooled_url(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("stores") / "pooled.zarr")
    make_store(url, dim=8, flow_features=True, flow_dim=6, views=1, per_class={"train": 8, "val": 4})
    return url


@pytest.fixture(scope="module")
def spatial_url(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("stores") / "maps.zarr")
    make_store(url, dim=6, spatial=(2, 2), views=1, per_class={"train": 4, "val": 2})
    return url


def trial_events(into: list, pick=lambda p: p):
    """A progress callback keeping `pick(p)` (when truthy) of each trial's TrialUpdate."""
    def progress(event):
        if isinstance(event, Advanced) and isinstance(event.item, TrialUpdate):
            kept = pick(event.item)
            if kept:
                into.append(kept)
    return progress


def config(store, out, **kw):
    base = dict(store=store, out=str(out), heads=("mlp", "tsn"), segments=(4,), seeds=(0,), train=TRAIN,
                executor="local")
    return AblateConfig(**{**base, **kw})


# ---- the grid ------------------------------------------------------------------------------------


def test_all_on_pooled_store_leaves_out_spatial_heads_with_reason(pooled_url, tmp_path):
    cfg = config(pooled_url, tmp_path, heads=("all",), segments=(1, 4), modalities=("rgb", "rgb+flow"), seeds=(0, 1))
    grid = expand_grid(cfg, FeatureStore.open(pooled_url))
    spatial = [h for h in HEADS.names() if HEADS.meta(h)["input_kind"] == "spatial"]
    pooled = [h for h in HEADS.names() if h not in spatial]
    out_entirely = {s.head: s.reason for s in grid.skipped if s.setting is None}
    assert sorted(out_entirely) == sorted(spatial)
    assert all("spatial feature maps" in reason for reason in out_entirely.values())
    # trn_multiscale needs two segments: left out at 1 segment only, for both modalities
    partial = [(s.head, s.setting) for s in grid.skipped if s.setting is not None]
    assert partial == [("trn_multiscale", (1, "rgb")), ("trn_multiscale", (1, "rgb+flow"))]
    assert grid.heads == pooled
    assert len(grid.trials) == (len(pooled) * 4 - 2) * 2
    assert len(set(grid.trials)) == len(grid.trials)
    assert Trial("trn_multiscale", 4, "rgb+flow", 1) in grid.trials


def test_all_on_spatial_store_keeps_every_head(spatial_url, tmp_path):
    grid = expand_grid(config(spatial_url, tmp_path, heads=("all",)), FeatureStore.open(spatial_url))
    assert grid.heads == HEADS.names() and not grid.skipped
    assert grid.stream_shapes == {"rgb": (6, 2, 2)}


def test_explicit_heads_that_cannot_run_are_one_line_errors(pooled_url, spatial_url, tmp_path):
    pooled = FeatureStore.open(pooled_url)
    with pytest.raises(ConfigError, match="--heads fcn3d: needs spatial feature maps"):
        expand_grid(config(pooled_url, tmp_path, heads=("mlp", "fcn3d")), pooled)
    with pytest.raises(ConfigError, match="--heads trn_multiscale: no setting .* at least 2 segments"):
        expand_grid(config(pooled_url, tmp_path, heads=("trn_multiscale",), segments=(1,)), pooled)
    with pytest.raises(RegistryError, match="nope"):
        expand_grid(config(pooled_url, tmp_path, heads=("nope",)), pooled)
    with pytest.raises(ConfigError, match="--modality flow: .* no 'flow_feat' features"):
        expand_grid(config(spatial_url, tmp_path, modalities=("flow",)), FeatureStore.open(spatial_url))


def test_bad_configs_fail_before_any_work(pooled_url, tmp_path):
    with pytest.raises(ConfigError, match="'all' cannot be combined"):
        config(pooled_url, tmp_path, heads=("all", "mlp"))
    with pytest.raises(ConfigError, match="unknown 'depth'"):
        config(pooled_url, tmp_path, modalities=("depth",))
    with pytest.raises(ConfigError, match="'seed' is set by the grid"):
        config(pooled_url, tmp_path, train={"seed": 3})
    with pytest.raises(ConfigError, match="lr must be > 0"):
        config(pooled_url, tmp_path, train={"lr": -1})
    with pytest.raises(ConfigError, match="repeats"):
        config(pooled_url, tmp_path, seeds=(0, 0))


def test_trials_share_one_copy_of_the_features(pooled_url, tmp_path):
    cfg = config(pooled_url, tmp_path, heads=("mlp", "gru"), modalities=("rgb", "flow", "rgb+flow"))
    store = FeatureStore.open(pooled_url)
    grid = expand_grid(cfg, store)
    shared = load_shared(store, grid, memory_budget_bytes=2**30, stats_dir=str(tmp_path))
    assert set(shared.parts) == {(s, m, True) for s in ("train", "val") for m in ("rgb", "flow")}
    rgb = shared.train_data(Trial("mlp", 4, "rgb", 0))
    both = shared.train_data(Trial("gru", 4, "rgb+flow", 1))
    assert both.train.streams["rgb"].frames is rgb.train.streams["rgb"].frames  # the same array, not a copy
    assert set(both.val.streams) == {"rgb", "flow"} and len(both.train) == len(rgb.train) == 32


# ---- running, resuming, failing ------------------------------------------------------------------


def test_local_ablation_writes_every_output(pooled_url, tmp_path, monkeypatch):
    monkeypatch.chdir(os.path.dirname(pooled_url))  # the titles name the store from here
    events = []
    result = ablate.run(config(pooled_url, tmp_path, heads=("mlp", "tsn"), seeds=(0, 1)), progress=trial_events(events))
    assert [r.status for r in result.records] == ["ok"] * 4
    rows = read_results(result.results)
    assert [(r["head"], r["seed"], r["status"]) for r in rows] == [("mlp", 0, "ok"), ("mlp", 1, "ok"),
                                                                  ("tsn", 0, "ok"), ("tsn", 1, "ok")]
    for row in rows:
        metrics = json.loads((tmp_path / "trials" / f"{row['head']}_4seg_rgb_seed{row['seed']}" / "metrics.json").read_text())
        assert row["val_top1"] == pytest.approx(metrics["val_top1"], abs=1e-6)
        assert row["params"] == metrics["params"] > 0 and row["macs"] == metrics["macs"] > 0
        assert row["train_seconds"] > 0 and row["epochs"] == 3
    run_dir = tmp_path / "trials" / "mlp_4seg_rgb_seed0"
    own = {p.name for p in run_dir.iterdir() if not fnmatch(p.name, EVENT_FILES)}
    assert {"config.yaml", "checkpoint.pt", "last.pt", "metrics.jsonl", "metrics.json", "curves.png",
            "confusion.png"} <= own <= set(RUN_FILES)
    assert bool(list(run_dir.glob(EVENT_FILES))) == tensorboard_available()  # each trial's curves
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# Ablation on pooled.zarr\n")
    assert "| Model | MFLOPs | Params | 4 seg. rgb |" in summary
    mlp = [r["val_top1"] * 100 for r in rows if r["head"] == "mlp"]
    assert f"{np.mean(mlp):.1f} ± {np.std(mlp, ddof=1):.1f}" in summary
    assert (tmp_path / "accuracy_vs_macs.png").read_bytes()[:4] == b"\x89PNG"
    assert [e.kind for e in events].count("done") == 4 and events[-1].done == 4 and events[-1].running == 0


def test_rerun_resumes_without_repeating_trials(pooled_url, tmp_path, monkeypatch):
    ablate.run(config(pooled_url, tmp_path, seeds=(0,)))
    stamp = (tmp_path / "trials" / "mlp_4seg_rgb_seed0" / "metrics.json").stat().st_mtime_ns
    started = []
    grown = config(pooled_url, tmp_path, seeds=(0, 1))  # one more seed: only its trials run
    result = ablate.run(grown, progress=trial_events(started, lambda p: p.kind == "start" and p.trial.name))
    assert started == ["mlp_4seg_rgb_seed1", "tsn_4seg_rgb_seed1"]
    assert [r.resumed for r in result.records] == [True, False, True, False]
    assert (tmp_path / "trials" / "mlp_4seg_rgb_seed0" / "metrics.json").stat().st_mtime_ns == stamp
    started.clear()
    ablate.run(grown, progress=trial_events(started, lambda p: p.trial.name))
    assert started == [] and len(read_results(tmp_path / "results.csv")) == 4
    with pytest.raises(ConfigError, match=r"different settings \(differs in: epochs\)"):
        ablate.run(config(pooled_url, tmp_path, train={**TRAIN, "epochs": 4}))


def test_ablation_settings_hold_what_the_user_gave_not_a_probe_trials_recipe(pooled_url, tmp_path):
    """A recipe field left out is each head's own (not shared, not compared on a re-run); one given is both."""
    from pipeline.heads.recipes import RECIPE_FIELDS

    shared = config(pooled_url, tmp_path, train={"epochs": 3}).settings()
    assert shared["epochs"] == 3 and shared["batch_size"] == 64
    assert not set(shared) & (set(RECIPE_FIELDS) - {"epochs"})
    assert config(pooled_url, tmp_path, train={"lr": 0.01}).settings()["lr"] == 0.01


def test_crashed_trial_is_retried_once_then_reported_failed(pooled_url, tmp_path, monkeypatch):
    from pipeline.training import session

    real_train = session.train
    calls = []

    def flaky_train(cfg, data, **kw):
        calls.append(cfg.head)
        if cfg.head == "gru" or (cfg.head == "tsn" and calls.count("tsn") == 1):
            raise RuntimeError(f"simulated crash in {cfg.head}")
        return real_train(cfg, data, **kw)

    monkeypatch.setattr(session, "train", flaky_train)
    events = []
    result = ablate.run(config(pooled_url, tmp_path, heads=("mlp", "tsn", "gru")), progress=trial_events(events))
    assert calls == ["mlp", "tsn", "tsn", "gru", "gru"]  # a retry goes ahead of untried trials
    by_head = {r.trial.head: r for r in result.records}
    assert (by_head["tsn"].status, by_head["tsn"].attempts) == ("ok", 2)
    assert (by_head["gru"].status, by_head["gru"].attempts) == ("failed", 2)
    assert "RuntimeError: simulated crash in gru" in by_head["gru"].error
    rows = {r["head"]: r for r in read_results(result.results)}
    assert rows["gru"]["status"] == "failed" and rows["gru"]["val_top1"] is None  # kept, never dropped
    assert "simulated crash in gru" in rows["gru"]["error"]
    assert [(e.kind, e.trial.head) for e in events if e.kind in ("retry", "failed")] == [("retry", "tsn"),
                                                                                          ("retry", "gru"),
                                                                                          ("failed", "gru")]
    assert events[-1].failed == 1
    summary = result.summary.read_text()
    assert "| gru | – | – | failed |" in summary and "## Failed trials" in summary
    assert json.loads((tmp_path / "failures.json").read_text())["gru_4seg_rgb_seed0"]["attempts"] == 2

    monkeypatch.setattr(session, "train", real_train)  # fixed: the next run retries only the failed one
    started, notes = [], []
    trials = trial_events(started, lambda p: p.kind == "start" and p.trial.head)

    def progress(event):
        if isinstance(event, Note):
            notes.append(event.message)
        trials(event)

    again = ablate.run(config(pooled_url, tmp_path, heads=("mlp", "tsn", "gru")), progress=progress)
    assert started == ["gru"] and not again.failed and not (tmp_path / "failures.json").exists()
    assert "trying again 1 trial(s) that failed in the last run: gru_4seg_rgb_seed0" in notes


def test_hyper_parameter_grid_multiplies_trials_and_sets_their_configs(pooled_url, tmp_path):
    cfg = config(pooled_url, tmp_path, heads=("mlp",), seeds=(0, 1), grid={"lr": (0.01, 0.1), "dropout": (0.0,)})
    grid = expand_grid(cfg, FeatureStore.open(pooled_url))
    assert len(grid.trials) == 2 * 2  # lr points x seeds
    assert grid.settings == [(4, "rgb", "dropout=0.0 lr=0.01"), (4, "rgb", "dropout=0.0 lr=0.1")]
    trial = grid.trials[-1]
    assert trial.name == "mlp_4seg_rgb_dropout0.0_lr0.1_seed1"
    trial_cfg = cfg.trial_config(head=trial.head, segments=4, modality="rgb", seed=1, out="x", params=trial.params)
    assert (trial_cfg.lr, trial_cfg.dropout, trial_cfg.epochs) == (0.1, 0.0, TRAIN["epochs"])  # grid over train
    assert cfg.settings()["grid"] == {"dropout": [0.0], "lr": [0.01, 0.1]}


def test_hyper_parameter_grid_errors_are_one_line(pooled_url, tmp_path):
    with pytest.raises(ConfigError, match="--grid: 'seed' is set by the grid or the ablation itself"):
        config(pooled_url, tmp_path, grid={"seed": (1, 2)})
    with pytest.raises(ConfigError, match="--grid: 'speed' is not a train-head setting"):
        config(pooled_url, tmp_path, grid={"speed": (1,)})
    with pytest.raises(ConfigError, match="lr must be > 0"):
        config(pooled_url, tmp_path, grid={"lr": (0.1, -1)})
    with pytest.raises(ConfigError, match=r"--grid lr: \[0.1, 0.1\] repeats a value"):
        config(pooled_url, tmp_path, grid={"lr": (0.1, 0.1)})


def test_grid_summary_names_each_heads_best_point():
    rows = [dict(head="mlp", segments=8, modality="rgb", grid=f"lr={lr}", seed=s, status="ok", val_top1=v, macs=1,
                 head_params=1, head_macs=1)
            for lr, top1 in ((0.01, (0.5, 0.6)), (0.1, (0.8, 0.9))) for s, v in enumerate(top1)]
    settings = [(8, "rgb", "lr=0.01"), (8, "rgb", "lr=0.1")]
    text = summary_markdown(rows, heads=["mlp"], settings=settings, seeds=(0, 1))
    assert "| Model | MFLOPs | Params | 8 seg. rgb lr=0.01 | 8 seg. rgb lr=0.1 |" in text
    assert "- mlp, 8 seg. rgb: lr=0.1 -> 85.0 ± 7.1" in text


def test_summary_cells_follow_table_3():
    rows = [dict(head="mlp", segments=8, modality="rgb", seed=s, status="ok", val_top1=v, macs=2e6,
                 head_params=1_062_939, head_macs=1_062_912) for s, v in enumerate((0.8, 0.9, 1.0))]
    rows += [dict(head="tsn", segments=8, modality="rgb", seed=s, status=st, val_top1=v, macs=3e5, head_params=0,
                  head_macs=0) for s, (st, v) in enumerate((("ok", 0.5), ("ok", 0.4), ("failed", None)))]
    cells = aggregate(rows)
    assert cells[("mlp", (8, "rgb"))].mean == pytest.approx(90.0)
    assert cells[("mlp", (8, "rgb"))].std == pytest.approx(10.0)  # sample std over seeds
    text = summary_markdown(rows, heads=["mlp", "tsn"], settings=[(8, "rgb")], seeds=(0, 1, 2))
    assert "| mlp | 2.13 | 1.06M | **90.0 ± 10.0** |" in text
    assert "| tsn | 0 | 0.00M | 45.0 ± 7.1 (2/3 seeds) |" in text


# ---- Ray and the CLI -----------------------------------------------------------------------------


def crash_or_train(trial, shared, *, device):
    """A trial whose worker process dies (as an OOM kill would) for gru; trains nothing otherwise."""
    if trial.head == "gru":
        os._exit(1)
    return {"val_top1": 1.0, "device": device, "rows": int(shared.train_data(trial).train.streams["rgb"].frames.shape[1])}


def test_ablation_on_embedded_ray(pooled_url, tmp_path):
    ray = pytest.importorskip("ray")
    from pipeline.ablation.runner import run_trials
    from pipeline.distributed import ray_session, trial_executor

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cfg = config(pooled_url, tmp_path, modalities=("rgb+flow",), executor="ray", cpus_per_trial=1, max_concurrent=2)
    events = []
    with ray_session("", num_cpus=2):  # one embedded Ray for both parts of this test
        result = ablate.run(cfg, progress=trial_events(events))
        assert [r.status for r in result.records] == ["ok"] * 2, [r.error for r in result.records]
        assert max(e.running for e in events) == 2  # trials ran side by side
        assert all(r.metrics["dispatch_seconds"] >= 0 for r in result.records)
        assert (tmp_path / "trials" / "tsn_4seg_rgb+flow_seed0" / "checkpoint.pt").is_file()

        # a worker that dies is a crashed trial: retried once on a fresh worker, then reported failed
        ray.cloudpickle.register_pickle_by_value(__import__(__name__))
        store = FeatureStore.open(pooled_url)
        grid = expand_grid(config(pooled_url, tmp_path, heads=("mlp", "gru")), store)
        shared = load_shared(store, grid, memory_budget_bytes=2**30, stats_dir=str(tmp_path))
        with trial_executor(crash_or_train, shared, cpus_per_trial=1) as executor:
            outcomes = {t.head: (o, n) for t, o, n in run_trials(grid.trials, executor, max_retries=1)}
    assert outcomes["mlp"][0].ok and outcomes["mlp"][0].metrics["device"] == "cpu"
    assert outcomes["mlp"][0].metrics["rows"] == shared.parts[("train", "rgb", True)].streams["rgb"].frames.shape[1]
    crashed, attempts = outcomes["gru"]
    assert not crashed.ok and attempts == 2 and crashed.error.startswith("Ray worker lost")
    local = ablate.run(config(pooled_url, tmp_path / "local", modalities=("rgb+flow",)))
    for a, b in zip(result.records, local.records):  # same trials, same numbers, wherever they ran
        assert a.metrics["val_top1"] == pytest.approx(b.metrics["val_top1"])


def test_cli_ablate_prints_progress_summary_and_paths(pooled_url, tmp_path, capsys):
    args = ["ablate", "-s", pooled_url, "-o", str(tmp_path), "--heads", "mlp,tsn", "--segments", "4", "--seeds", "0",
            "--executor", "local", "--epochs", "1", "--proj-dim", "8", "--lr", "0.05", "--train-options",
            '{"batch_size": 32}']
    main(args)
    captured = capsys.readouterr()
    assert "done    mlp 4 seg. rgb seed 0: top-1" in captured.err
    assert "| Model | MFLOPs | Params | 4 seg. rgb |" in captured.out
    assert f"summary: {tmp_path / 'summary.md'}" in captured.out
    saved = ablate.load_config(tmp_path)
    assert saved.train == {"epochs": 1, "lr": 0.05, "proj_dim": 8, "batch_size": 32} and saved.heads == ("mlp", "tsn")


def test_cli_names_left_out_heads(pooled_url, tmp_path, capsys):
    from cli import _rendered
    from stages.ablate import _announce

    grid = expand_grid(config(pooled_url, tmp_path, heads=("all",), segments=(1,)), FeatureStore.open(pooled_url))
    with _rendered() as show:
        _announce(grid, 0, show)
    err = capsys.readouterr().err
    assert "left out: fcn3d: needs spatial feature maps" in err
    assert "left out: trn_multiscale at 1 seg. rgb: needs at least 2 segments" in err


# ---- stpipe demo ---------------------------------------------------------------------------------


def test_demo_weights_come_from_the_cache_or_assets_else_random_init(tmp_path, monkeypatch):
    from stages.demo import resolve_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("STPIPE_ASSETS", raising=False)
    weights, note = resolve_weights("mobilenet_v2", "auto")
    assert weights == "none" and "randomly initialised" in note
    assets = tmp_path / "assets"
    (assets / "weights").mkdir(parents=True)
    (assets / "weights" / "mobilenet_v2-b0353104.pth").write_bytes(b"not really weights")
    monkeypatch.setenv("STPIPE_ASSETS", str(assets))
    weights, note = resolve_weights("mobilenet_v2", "auto")
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    assert weights == "IMAGENET1K_V1" and "copied" in note and cached.read_bytes() == b"not really weights"
    monkeypatch.delenv("STPIPE_ASSETS")
    assert resolve_weights("mobilenet_v2", "auto")[0] == "IMAGENET1K_V1"  # now found in the cache itself
    assert resolve_weights("tiny", "auto")[0] == "none"


def test_cli_demo_runs_every_step_and_resumes(tmp_path, capsys):
    pytest.importorskip("cv2")
    config_file = tmp_path / "demo.yaml"
    config_file.write_text(
        "videos_per_class: 2\nframes: 6\nsize: 32\nbackbone: tiny\nweights: none\nflow_method: tvl1-opencv\n"
        "heads: [mlp, tsn]\nsegments: [3]\nmodalities: [rgb, flow]\nseeds: [0]\nexecutor: local\n"
        "train: {epochs: 1, proj_dim: 8, batch_size: 8}\n")
    out = tmp_path / "demo"
    main(["demo", "-o", str(out), "--config", str(config_file)])
    captured = capsys.readouterr()
    assert "demo: backbone tiny: weights none (as given)" in captured.err
    assert "| Model | MFLOPs | Params | 3 seg. rgb | 3 seg. flow |" in captured.out
    assert f"plot:    {out / 'ablation' / 'accuracy_vs_macs.png'}" in captured.out
    assert "order-blind tsn" in captured.out
    rows = read_results(out / "ablation" / "results.csv")
    assert [(r["head"], r["modality"], r["status"]) for r in rows] == [
        ("mlp", "rgb", "ok"), ("mlp", "flow", "ok"), ("tsn", "rgb", "ok"), ("tsn", "flow", "ok")]
    store_config = FeatureStore.open(str(out / "features.zarr")).meta["config"]
    assert store_config["flow_features"] is True
    from stages.demo import native_bf16

    # bf16 autocast for the backbone where the hardware has it natively; the heads train in float32
    assert store_config.get("amp", "") == ("bf16" if native_bf16() else "")
    trial_dir = out / "ablation" / "trials" / "mlp_3seg_rgb_seed0"
    assert read_yaml(trial_dir / "config.yaml")["amp"] is False
    assert (trial_dir / "metrics.json").is_file() and not (trial_dir / "curves.png").exists()  # no per-trial plots
    main(["demo", "-o", str(out), "--config", str(config_file)])  # resumes: nothing is redone
    assert "4 finished earlier, not repeated" in capsys.readouterr().err


def test_grid_axes_parse():
    from pipeline.ablation.grid import parse_grid

    assert parse_grid(("lr=1e-3,3e-3", "weight-decay=0.1", "standardize=true")) == {
        "lr": [0.001, 0.003], "weight_decay": [0.1], "standardize": [True]}
    assert parse_grid(()) is None
    with pytest.raises(ConfigError, match="--grid: expected FIELD=V1,V2"):
        parse_grid(("lr",))


def test_plot_labels_of_neighbouring_heads_do_not_overlap():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from pipeline.ablation.report import place_labels

    # the light heads: many at ~1e6 MACs and close accuracies, two settings on top of each other
    points = [(f"head_{i}", (1e6 * (1 + 0.05 * (i % 4)), 50 + 0.4 * i), 1.0) for i in range(12)]
    points += [("tsn", (1e5, 45.0), 2.0), ("convlstm", (5e7, 60.0), 1.0)]
    fig, ax = plt.subplots(figsize=(9, 6))
    for _, (x, y), err in points:
        ax.errorbar([x], [y], yerr=[err], fmt="o", capsize=3, markersize=6)
    ax.set_xscale("log")
    fig.tight_layout()
    labels = place_labels(ax, points)
    renderer = fig.canvas.get_renderer()
    for a in labels:
        a.update_positions(renderer)
    boxes = [Text.get_window_extent(a, renderer) for a in labels]  # the text, without its line to the point
    frame = ax.get_window_extent(renderer)
    assert [a.get_text() for a in labels] == [name for name, _, _ in points]
    for i, box in enumerate(boxes):
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        assert not any(box.overlaps(other) for other in boxes[i + 1:]), labels[i].get_text()
        for _, point, _ in points:  # no label covers a point
            assert not box.contains(*ax.transData.transform(point))
    plt.close(fig)
