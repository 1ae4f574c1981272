"""Per-head training recipes: what train-head/ablate/demo use for the settings a user leaves out."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli import cli
from pipeline.config import build_config, from_dict
from pipeline.errors import ConfigError
from pipeline.heads import HEADS
from pipeline.heads.recipes import RECIPES, head_recipe
from pipeline.training.config import TrainHeadConfig


def test_every_registered_head_has_a_recipe():
    assert set(RECIPES) == set(HEADS.names())


@pytest.mark.parametrize("head", ["gru", "fcn3d"])
def test_recipe_fills_what_the_user_leaves_out(head):
    recipe = head_recipe(head)
    cfg = from_dict(TrainHeadConfig, {"store": "s", "head": head, "lr": 0.5})
    assert cfg.lr == 0.5  # given: kept
    assert (cfg.weight_decay, cfg.epochs, cfg.proj_dim, cfg.dropout, cfg.optimizer, cfg.schedule) == (
        recipe.weight_decay, recipe.epochs, recipe.proj_dim, recipe.dropout, recipe.optimizer, recipe.schedule)


def test_paper_recipe_keeps_seed_000_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("store: s\nhead: gru\nrecipe: paper\n")
    cfg = build_config(TrainHeadConfig, path, {"epochs": 7})
    paper = TrainHeadConfig(store="s")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.schedule, cfg.epochs) == (
        paper.optimizer, paper.lr, paper.weight_decay, paper.schedule, 7)
    with pytest.raises(ConfigError, match="recipe must be one of head, paper"):
        from_dict(TrainHeadConfig, {"store": "s", "recipe": "fast"})


def test_saved_configs_read_back_unchanged():
    """A run's saved config holds every field, so reading it back fills in nothing."""
    from pipeline.config import config_to_dict

    cfg = TrainHeadConfig(store="s", head="gru")  # direct construction: the dataclass (paper) defaults
    assert from_dict(TrainHeadConfig, config_to_dict(cfg)) == cfg


def test_heads_command_shows_each_recipe():
    result = CliRunner().invoke(cli, ["heads", "--classes", "10", "--feature-shape", "16x2x2", "--proj-dim", "8"])
    assert result.exit_code == 0, result.output
    for head in HEADS.names():
        line = next(row for row in result.output.splitlines() if row.startswith(head + " "))
        assert head_recipe(head).short() in line


def test_temporal_center_is_a_recipe_field_of_the_config():
    recipe = head_recipe("lstm")
    assert from_dict(TrainHeadConfig, {"store": "s", "head": "lstm"}).temporal_center == recipe.temporal_center
    assert from_dict(TrainHeadConfig, {"store": "s", "head": "lstm", "temporal_center": 0}).temporal_center == 0
    assert from_dict(TrainHeadConfig, {"store": "s", "head": "lstm", "recipe": "paper"}).temporal_center == 0
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
