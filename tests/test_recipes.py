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
