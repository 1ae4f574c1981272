"""A plug-in package (entry points `stpipe.backbones` and `stpipe.heads`) installed into the test
venv: its backbone and head appear in the listings and work through `stpipe extract` and
`stpipe train-head` (fresh processes, as a user would run them)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.store import FeatureStore

ROOT = Path(__file__).resolve().parents[1]
DIST = "stpipe-test-plugin"

PYPROJECT = f"""
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{DIST}"
version = "0.0.1"

[project.entry-points."stpipe.backbones"]
plugnet = "stpipe_test_plugin.backbones"

[project.entry-points."stpipe.heads"]
maxpool = "stpipe_test_plugin.heads:register"

[tool.setuptools]
packages = ["stpipe_test_plugin"]
"""

BACKBONES = '''
"""A plug-in backbone: two convolutions, registered on import."""
import torch
from torch import nn

from pipeline.backbones import BACKBONES, Parts
from pipeline.backbones.backbone import GlobalAvgPool


class PlugNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 24, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(24, 5)


def make_model(weights=None):
    return PlugNet()


def preset():
    return {"resize_size": [40], "crop_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3,
            "interpolation": __import__("torchvision").transforms.InterpolationMode.BILINEAR,
            "antialias": True}


@BACKBONES.register("plugnet", kind="image", source="stpipe-test-plugin", make_model=make_model, preset=preset,
                    preprocess_source="the plug-in's own")
def plugnet(m):
    return Parts(trunk=m.features, pool=GlobalAvgPool(), head=m.fc)
'''

HEADS = '''
"""A plug-in head, registered when stpipe calls `register()`."""
from torch import nn


class MaxOverTime(nn.Module):
    def __init__(self, dim, num_classes):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x):
        return self.fc(x.max(dim=1).values)


def register():
    from pipeline.heads import register_head

    @register_head("maxpool", input_kind="pooled", summary="max over time -> linear (a plug-in)")
    def maxpool(*, num_classes, dim):
        return MaxOverTime(dim, num_classes)
'''


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is needed to build the plug-in without network")
    src = tmp_path_factory.mktemp("plugin")
    (src / "pyproject.toml").write_text(PYPROJECT)
    package = src / "stpipe_test_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "backbones.py").write_text(textwrap.dedent(BACKBONES))
    (package / "heads.py").write_text(textwrap.dedent(HEADS))
    installed = _pip("install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(src))
    assert installed.returncode == 0, installed.stderr
    yield src
    _pip("uninstall", "-y", "-q", DIST)


def stpipe(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True)  # fmt: skip


def test_plugin_backbone_and_head_through_every_command(plugin, demo, tmp_path):
    listed = stpipe("backbones")
    assert listed.returncode == 0 and "plugnet" in listed.stdout and f"(plugin {DIST})" in listed.stdout
    card = stpipe("backbones", "plugnet")
    assert "pooled (24,), spatial (24, 8, 8)" in card.stdout and "from the plug-in's own" in card.stdout
    heads = stpipe("heads", "--feature-shape", "24")
    assert heads.returncode == 0 and "maxpool" in heads.stdout, heads.stderr

    store = tmp_path / "s.zarr"
    run = stpipe("extract", "-m", demo / "manifest.csv", "-o", store, "--backbone", "plugnet", "--weights", "none",
                 "--executor", "local", "--batch-size", "16")  # fmt: skip
    assert run.returncode == 0, run.stderr
    meta = FeatureStore.open(str(store)).meta["backbone"]
    assert meta["name"] == "plugnet" and meta["source"] == "stpipe-test-plugin" and meta["feature_shape"] == [24]
    assert meta["mean"] == [0.5, 0.5, 0.5] and meta["input_size"] == [32, 32]
    run = stpipe("train-head", "-s", store, "--head", "maxpool", "--segments", "3", "--epochs", "2",
                 "--batch-size", "8", "-o", tmp_path / "run")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run").is_dir()


def test_the_documented_plugin_head_brings_its_recipe():
    """docs/plugins.md's head example, run as written: train-head resolves the plug-in's recipe."""
    doc = (ROOT / "docs" / "plugins.md").read_text()
    example = doc.split("## A head", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    check = example + textwrap.dedent("""
        register()
        from pipeline.heads.recipes import head_recipe
        from pipeline.training.config import TrainHeadConfig
        cfg = TrainHeadConfig(store="s", head="maxpool", epochs=3).resolved()
        print(cfg.lr, cfg.epochs, cfg.proj_dim, head_recipe("maxpool").short())
    """)
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0.006", "3", "32", "lr", "6e-03", "wd", "0.01", "20", "ep", "proj", "32", "drop",
                                   "0.5"]
