"""Per-head training recipes: what train-head/ablate/demo use for the settings a user leaves out."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli import cli
from pipeline.config import build_config, from_dict
from pipeline.errors import ConfigError
from pipeline.heads import HEADS
from pipeline.heads.recipes import RECIPE_FIELDS, RECIPES, SGD_RECIPE, head_recipe
from pipeline.training.config import TrainHeadConfig


def test_every_registered_head_has_a_recipe():
    assert set(RECIPES) == set(HEADS.names())
    assert all(HEADS.meta(head)["recipe"] is RECIPES[head] is head_recipe(head) for head in HEADS.names())


@pytest.mark.parametrize("head", ["gru", "fcn3d"])
def test_recipe_fills_what_the_user_leaves_out(head):
    recipe = head_recipe(head)
    cfg = from_dict(TrainHeadConfig, {"store": "s", "head": head, "lr": 0.5}).resolved()
    assert cfg.lr == 0.5  # given: kept
    assert (cfg.weight_decay, cfg.epochs, cfg.proj_dim, cfg.dropout, cfg.optimizer, cfg.schedule) == (
        recipe.weight_decay, recipe.epochs, recipe.proj_dim, recipe.dropout, recipe.optimizer, recipe.schedule)


def test_paper_recipe_keeps_the_papers_sgd_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("store: s\nhead: gru\nrecipe: paper\n")
    cfg = build_config(TrainHeadConfig, path, {"epochs": 7})
    paper = cfg.resolved()
    assert (paper.optimizer, paper.lr, paper.weight_decay, paper.schedule, paper.epochs, paper.proj_dim,
            paper.temporal_center) == ("sgd", 1e-3, 5e-4, "plateau", 7, 256, 0.0)
    assert TrainHeadConfig(store="s", head="gru", recipe="paper", epochs=7) == cfg
    with pytest.raises(ConfigError, match="recipe: 'fast' is not one of 'head', 'paper'"):
        from_dict(TrainHeadConfig, {"store": "s", "recipe": "fast"})
    with pytest.raises(ConfigError, match="recipe must be one of head, paper"):
        TrainHeadConfig(store="s", recipe="fast")


@pytest.mark.parametrize("head", ["lstm", "mlp"])
def test_api_cli_and_yaml_build_one_config(tmp_path, head):
    """The same arguments mean the same config whichever way they come in, resolved from the head's recipe."""
    recipe = head_recipe(head)
    api = TrainHeadConfig(store="s", head=head, epochs=3)
    path = tmp_path / "c.yaml"
    path.write_text(f"store: s\nhead: {head}\nepochs: 3\n")
    assert api == build_config(TrainHeadConfig, None, {"store": "s", "head": head, "epochs": 3, "lr": None}) == \
        build_config(TrainHeadConfig, path) == from_dict(TrainHeadConfig, {"store": "s", "head": head, "epochs": 3})
    assert {k: getattr(api.resolved(), k) for k in RECIPE_FIELDS} == {**recipe.fields(), "epochs": 3}
    assert api.given == ("epochs",) and api.recipe == "head"


def test_replace_means_what_a_fresh_config_with_those_arguments_means():
    """A config holds what the user gave; the recipe is resolved from it, so changing the head changes
    the recipe values, and changing the seed marks nothing as given."""
    from dataclasses import replace

    lstm = TrainHeadConfig(store="s", head="lstm", segments=4, epochs=3)
    mlp = replace(lstm, head="mlp")
    assert mlp == TrainHeadConfig(store="s", head="mlp", segments=4, epochs=3)
    assert mlp.resolved() == TrainHeadConfig(store="s", head="mlp", segments=4, epochs=3).resolved()
    assert (mlp.resolved().lr, mlp.resolved().temporal_center, mlp.resolved().proj_dim) == (
        head_recipe("mlp").lr, head_recipe("mlp").temporal_center, head_recipe("mlp").proj_dim)
    assert lstm.resolved().lr != mlp.resolved().lr  # the recipes differ: mlp's values came from mlp's
    assert replace(lstm, seed=1).given == ("epochs",)
    assert replace(lstm, seed=1).identity() == {**lstm.identity(), "seed": 1}


def test_saved_configs_read_back_unchanged():
    """A run's saved config holds every resolved value, so reading it back resolves nothing."""
    from pipeline.config import config_to_dict

    cfg = TrainHeadConfig(store="s", head="gru", lr=0.5).resolved()
    saved = config_to_dict(cfg)
    assert all(saved[k] is not None for k in RECIPE_FIELDS)
    assert TrainHeadConfig.from_saved(saved) == from_dict(TrainHeadConfig, saved) == cfg
    assert TrainHeadConfig.from_saved(saved).given == RECIPE_FIELDS  # all of them are in the file


def test_saved_config_is_not_refilled_from_todays_recipe():
    """A recipe field a saved file lacks predates that field: the paper recipe's value, never today's recipe."""
    saved = {"store": "s", "head": "lstm", **{k: v for k, v in head_recipe("lstm").fields().items()
                                              if k != "temporal_center"}}
    old = TrainHeadConfig.from_saved(saved)
    assert old.temporal_center == SGD_RECIPE.temporal_center == 0.0 and old.lr == head_recipe("lstm").lr
    assert TrainHeadConfig(store="s", head="lstm").resolved().temporal_center == head_recipe("lstm").temporal_center == 0.75


def test_heads_command_shows_each_recipe():
    result = CliRunner().invoke(cli, ["heads", "--classes", "10", "--feature-shape", "16x2x2", "--proj-dim", "8"])
    assert result.exit_code == 0, result.output
    for head in HEADS.names():
        line = next(row for row in result.output.splitlines() if row.startswith(head + " "))
        assert head_recipe(head).short() in line


def test_temporal_center_is_a_recipe_field_of_the_config():
    recipe = head_recipe("lstm")
    assert from_dict(TrainHeadConfig, {"store": "s", "head": "lstm"}).resolved().temporal_center == \
        recipe.temporal_center
    assert from_dict(TrainHeadConfig, {"store": "s", "head": "lstm", "temporal_center": 0}).temporal_center == 0
    assert from_dict(TrainHeadConfig, {"store": "s", "head": "lstm", "recipe": "paper"}).resolved().temporal_center == 0
    assert "temporal_center" in TrainHeadConfig.identity_fields  # a run dir refuses another value
    with pytest.raises(ConfigError, match="temporal_center must be a fraction in"):
        from_dict(TrainHeadConfig, {"store": "s", "head": "lstm", "temporal_center": 2})


def test_temporal_center_reaches_the_head_spec():
    from pipeline.training.model import build_model, model_spec

    cfg = from_dict(TrainHeadConfig, {"store": "s", "head": "gru", "temporal_center": 0.5, "proj_dim": 8})
    spec = model_spec(cfg, num_classes=5, frame_shapes={"rgb": (12,)})
    assert spec["heads"]["rgb"]["temporal_center"] == 0.5
    assert build_model(spec).projection.centered == 4
    with pytest.raises(ConfigError, match="'temporal_center' is set by train-head itself"):
        model_spec(from_dict(TrainHeadConfig, {"store": "s", "head": "gru", "head_options": {"temporal_center": 1}}),
                   num_classes=5, frame_shapes={"rgb": (12,)})


@pytest.mark.parametrize("head", ["mlp", "trn_multiscale", "lstm"])
def test_order_aware_recipes_see_how_a_clip_changes_not_only_what_it_shows(head):
    """Issue 35: most of an order-aware head's projected channels ignore a clip's static content (what
    an unseen source looks like); the rest keep it (flow's static part, the direction, is information)."""
    import torch

    from pipeline.training.model import build_model, model_spec

    cfg = from_dict(TrainHeadConfig, {"store": "s", "head": head}).resolved()
    projection = build_model(model_spec(cfg, num_classes=5, frame_shapes={"rgb": (12,)})).projection.eval()
    x = torch.randn(4, cfg.segments, 12, generator=torch.Generator().manual_seed(0))
    scene = 3 * torch.randn(4, 1, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        moved = (projection(x + scene) - projection(x)).abs().amax(dim=(0, 1))
    centred = round(0.75 * cfg.proj_dim)
    assert moved[:centred].max() < 1e-5 and moved[centred:].min() > 0


class _Stop(Exception):
    pass


@pytest.mark.parametrize("command", ["train-head", "ablate"])
def test_cli_sets_temporal_center(monkeypatch, command):
    import stages.ablate
    import stages.train_head

    seen = []

    def capture(cfg, **kw):
        seen.append(cfg)
        raise _Stop

    monkeypatch.setattr(stages.train_head, "run", capture)
    monkeypatch.setattr(stages.ablate, "run", capture)
    args = [command, "-s", "store.zarr", "-o", "out", "--temporal-center", "0.25"]
    CliRunner().invoke(cli, args + (["--head", "gru"] if command == "train-head" else ["--heads", "gru"]))
    (cfg,) = seen
    value = cfg.temporal_center if command == "train-head" else cfg.train["temporal_center"]
    assert value == 0.25


TIMING = ("seconds", "samples_per_second", "train_seconds", "load_seconds", "step_seconds")


def test_api_cli_and_yaml_train_the_same_head_identically(tmp_path):
    """One head trained through the Python API, the CLI's flags and a YAML file: the same metrics; the API's
    run is then resumed by the CLI with the same flags (the same config, so it is accepted)."""
    import json

    from store_fixtures import make_store

    from stages import train_head

    store = str(tmp_path / "s.zarr")
    make_store(store, per_class={"train": 6, "val": 3})
    args = dict(head="gru", segments=4, epochs=2, batch_size=16, device="cpu")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in args.items()]
    train_head.run(TrainHeadConfig(store=store, out=str(tmp_path / "api"), **args))
    cli_run = CliRunner().invoke(cli, ["train-head", "-s", store, "-o", str(tmp_path / "cli"), *flags])
    assert cli_run.exit_code == 0, cli_run.output
    (tmp_path / "c.yaml").write_text("".join(f"{k}: {v}\n" for k, v in
                                             dict(args, store=store, out=str(tmp_path / "yaml")).items()))
    yaml_run = CliRunner().invoke(cli, ["train-head", "--config", str(tmp_path / "c.yaml")])
    assert yaml_run.exit_code == 0, yaml_run.output

    def metrics(name):
        data = json.loads((tmp_path / name / "metrics.json").read_text())
        return {k: v for k, v in data.items() if k not in TIMING}

    assert metrics("api") == metrics("cli") == metrics("yaml")
    assert metrics("api")["val_top1"] > 0  # it trained
    resumed = CliRunner().invoke(cli, ["train-head", "-s", store, "-o", str(tmp_path / "api"), *flags, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "different config" not in resumed.output
