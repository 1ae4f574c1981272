"""Runs saved before configs resolved their recipe in their own construction (commit f7105b0) still
resume: the fixtures in tests/fixtures/runs-f7105b0 are train-head runs stopped after epoch 1, written by
that commit's code (tests/fixtures/make_old_runs.py says how), on a store this test rebuilds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from store_fixtures import make_store

from cli import cli
from pipeline.errors import RunError, StpipeError
from pipeline.training.config import TrainHeadConfig
from pipeline.training.model import load_checkpoint
from stages import train_head

FIXTURES = Path(__file__).parent / "fixtures" / "runs-f7105b0"
ARGS = dict(head="lstm", segments=4, epochs=3, batch_size=16, proj_dim=32, device="cpu")  # as make_old_runs.py
FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in ARGS.items()]
TIMING = ("seconds", "samples_per_second", "train_seconds", "load_seconds", "step_seconds")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("old-runs") / "s.zarr")
    make_store(url, per_class={"train": 6, "val": 3})
    return url


def copy(name: str, tmp_path: Path) -> Path:
    out = tmp_path / name
    shutil.copytree(FIXTURES / name, out)
    return out


def history(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def same_history(*runs: Path) -> bool:
    """Epoch for epoch the same metrics. The fixtures' first epoch was computed on another CPU, whose
    float32 kernels (AVX2 vs AVX-512 sums) differ in the last bits (1e-7 of a loss), so values match to
    1e-4 relative: a run continued with other values (lr 1e-3 for 6e-3, another optimizer) is off by
    percents from its second epoch on."""
    first, *others = (history(run) for run in runs)
    return all(len(other) == len(first) and all(a.keys() == b.keys() and a == pytest.approx(b, rel=1e-4, abs=1e-6)
                                                for a, b in zip(first, other)) for other in others)


def test_a_cli_run_resumes_from_the_cli_and_the_api_with_the_same_arguments(store, tmp_path):
    saved = load_checkpoint(FIXTURES / "cli" / "last.pt")
    assert saved["state"]["epoch"] == 1 and saved["identity"]["lr"] == 6e-3  # the lstm recipe, as the CLI filled it
    by_cli = copy("cli", tmp_path)
    result = CliRunner().invoke(cli, ["train-head", "-s", store, "-o", str(by_cli), *FLAGS])
    assert result.exit_code == 0, result.output
    assert f"resuming {by_cli} after epoch 1" in result.output
    by_api = copy("cli", tmp_path / "api")
    train_head.run(TrainHeadConfig(store=store, out=str(by_api), **ARGS))
    # the recipes standardise since (issue 20): a run made before continues as it was made, without
    fresh = train_head.run(TrainHeadConfig(store=store, out=str(tmp_path / "fresh"), standardize=False, **ARGS))
    assert TrainHeadConfig(store=store, **ARGS).resolved().standardize
    assert yaml.safe_load((by_cli / "config.yaml").read_text())["standardize"] is False
    # the old files mean what a run of today's code with the same values does, epoch for epoch
    assert same_history(by_cli, by_api, Path(fresh.run_dir))
    assert len(history(by_cli)) == 3


def test_a_value_the_user_gives_still_decides(store, tmp_path):
    """Only recipe fields left to the recipe follow the run; one the user sets differently is refused."""
    out = copy("cli", tmp_path)
    with pytest.raises(RunError, match="differs in: lr; lr 0.006 there, 0.001 here"):
        train_head.run(TrainHeadConfig(store=store, out=str(out), lr=1e-3, **ARGS))


def test_an_api_run_of_the_papers_sgd_values_continues_with_them(store, tmp_path):
    """TrainHeadConfig(head=...) used to mean the paper's SGD values and now means the head's recipe: the
    same call continues the old run with the values it was made with, as recipe="paper" would."""
    out = copy("api", tmp_path)
    assert load_checkpoint(out / "last.pt")["identity"]["optimizer"] == "sgd"
    result = train_head.run(TrainHeadConfig(store=store, out=str(out), **ARGS))
    assert result.metrics["epochs"] == 3
    fresh = train_head.run(TrainHeadConfig(store=store, out=str(tmp_path / "fresh"), recipe="paper", **ARGS))
    assert same_history(out, Path(fresh.run_dir))


def test_files_that_predate_a_recipe_field_read_as_the_paper_recipe_in_both_readers(store, tmp_path):
    """config.yaml and last.pt written before temporal_center existed: both read it as 0 (what those runs
    did), not as today's lstm recipe (0.75), and the run continues with 0; a different value is refused."""
    out = copy("cli", tmp_path)
    config = yaml.safe_load((out / "config.yaml").read_text())
    del config["temporal_center"]
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    saved = torch.load(out / "last.pt", weights_only=False)
    del saved["identity"]["temporal_center"]
    torch.save(saved, out / "last.pt")
    result = CliRunner().invoke(cli, ["train-head", "-s", store, "-o", str(out), *FLAGS, "--temporal-center", "0.5"])
    assert isinstance(result.exception, RunError) and "differs in: temporal_center;" in str(result.exception)
    result = CliRunner().invoke(cli, ["train-head", "-s", store, "-o", str(out), *FLAGS])
    assert result.exit_code == 0, result.output
    assert f"resuming {out} after epoch 1" in result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["temporal_center"] == 0


# ---- files saved by commit 1b12725, before one module decided run identity (tests/fixtures/make_runs_1b12725.py)

TODAY = Path(__file__).parent / "fixtures" / "runs-1b12725"
TODAY_ARGS = dict(head="lstm", segments=4, batch_size=16, proj_dim=8, device="cpu")  # as make_runs_1b12725.py
TODAY_ABLATE = dict(heads=("mlp", "lstm"), segments=(4,), seeds=(0,), train={"epochs": 2, "batch_size": 16},
                    executor="local", trial_plots=False)


def test_a_run_saved_before_one_identity_resumes_as_it_was_made(store, tmp_path):
    out = tmp_path / "train"
    shutil.copytree(TODAY / "train", out)
    result = CliRunner().invoke(cli, ["train-head", "-s", store, "-o", str(out),
                                      *[f"--{k.replace('_', '-')}={v}" for k, v in TODAY_ARGS.items()]])
    assert result.exit_code == 0, result.output
    assert f"resuming {out} after epoch 1" in result.output
    fresh = train_head.run(TrainHeadConfig(store=store, out=str(tmp_path / "fresh"), **TODAY_ARGS))
    assert same_history(out, Path(fresh.run_dir)) and len(history(out)) == 20  # the lstm recipe's epochs


def test_an_ablation_saved_before_one_identity_resumes_even_when_a_recipe_changed(store, tmp_path, monkeypatch):
    """Its ablation.yaml holds a probe mlp trial's resolved recipe as shared settings: neither that nor a
    changed recipe refuses the re-run, and the finished trials are not repeated (they keep their values)."""
    from dataclasses import replace

    from pipeline.ablation import AblateConfig
    from pipeline.heads import recipes
    from stages import ablate

    out = tmp_path / "ablation"
    shutil.copytree(TODAY / "ablation", out)
    cfg = AblateConfig(store=store, out=str(out), **TODAY_ABLATE)
    assert all(r.resumed for r in ablate.run(cfg).records)
    monkeypatch.setitem(recipes.RECIPES, "mlp", replace(recipes.RECIPES["mlp"], lr=0.05, proj_dim=16))
    assert all(r.resumed for r in ablate.run(cfg).records)
    with pytest.raises(StpipeError, match="differs in: epochs"):
        ablate.run(replace(cfg, train={"epochs": 3, "batch_size": 16}))
