"""Listings (`stpipe heads`, `backbones`, `flows`) ship at the CLI's defaults and are otherwise computed
once per setting and code version, then answered from the cache without importing torch
(pipeline/listings.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
from pipeline import listings
from stages.listings import HeadsConfig

SMALL = dict(num_classes=5, num_segments=3, feature_shape=(16, 2, 2), proj_dim=8)
ROOT = Path(__file__).resolve().parents[1]


def _no_builds(monkeypatch):
    from pipeline.heads import complexity

    def refuse(*args, **kwargs):
        raise AssertionError("a cached listing built a head")

    monkeypatch.setattr(complexity, "build_head", refuse)


def test_a_second_heads_listing_builds_no_head(monkeypatch):
    first = listings.heads_listing(**SMALL)
    assert {r["name"] for r in first["rows"]} >= {"mlp", "tsn", "convlstm"}
    assert all(r["head_macs"] > 0 for r in first["rows"] if r["applicable"] and r["name"] != "tsn")
    _no_builds(monkeypatch)
    assert listings.heads_listing(**SMALL) == first
    with pytest.raises(AssertionError, match="built a head"):  # other options are another listing
        listings.heads_listing(**{**SMALL, "num_segments": 4})


def test_the_fingerprint_decides_what_is_computed_again(monkeypatch):
    calls = []

    def compute():
        calls.append(1)
        return {"rows": [1, (2, 3)]}

    def listing(plugins=None, **options):
        return listings.cached(listings.Listing("t", {"a": 1, **options}, compute, package="flow", plugins=plugins))

    assert listing() == {"rows": [1, [2, 3]]} and listing() == {"rows": [1, [2, 3]]}  # JSON both times
    assert len(calls) == 1
    monkeypatch.setattr(pipeline, "__version__", "0.0.0-other")
    listing()
    listing(a=2)
    assert len(calls) == 3
    monkeypatch.setattr(listings, "_plugins", lambda group: ["a plug-in"])  # plug-ins: never cached
    listing(plugins="stpipe.heads")
    assert len(calls) == 4


def test_an_unwritable_cache_only_costs_time(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("STPIPE_CACHE_DIR", str(tmp_path / "file" / "cache"))
    assert listings.cached(listings.Listing("t", {}, lambda: [1], package="flow")) == [1]


@pytest.fixture(scope="module")
def computed():
    """The shipped listings as the code computes them now (heads at the CLI's defaults: ~2 s)."""
    return listings.shipped(HeadsConfig().listing_options())


def test_the_shipped_listings_are_current(computed):
    assert json.loads(listings.SHIPPED.read_text()) == computed, (
        "pipeline/listings_shipped.json is stale: run `python -m stages.listings` and commit it")


def test_a_first_listing_at_the_defaults_imports_no_torch(computed, tmp_path):
    cache = tmp_path / "empty-cache"
    script = ("import sys\nfrom cli import main\n"
              "for command in ('heads', 'backbones', 'flows'):\n    main([command])\n"
              "assert 'torch' not in sys.modules, 'torch imported'\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "STPIPE_CACHE_DIR": str(cache)})
    assert run.returncode == 0, run.stderr
    assert "mobilenet_v2 " in run.stdout and "tvl1-fast " in run.stdout
    answered = {path.name.split("-")[0]: json.loads(path.read_text()) for path in (cache / "listings").iterdir()}
    assert answered == {name: entry["value"] for name, entry in computed.items()}


def test_torch_checkpoints_follow_torchs_rule(monkeypatch, tmp_path):
    import torch

    for env in ({"TORCH_HOME": "~/t"}, {"XDG_CACHE_HOME": str(tmp_path)}, {}):
        for variable in ("TORCH_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(variable, raising=False)
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        assert listings.torch_checkpoints() == Path(torch.hub.get_dir()) / "checkpoints"


def test_cached_listings_answer_without_torch(stpipe, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    commands = [["heads", "--classes", "5", "--segments", "3", "--feature-shape", "16x2x2", "--proj-dim", "8"],
                ["backbones"], ["flows"]]
    filled = [stpipe(args) for args in commands]
    assert all(code == 0 for code, _, _ in filled)
    assert "mobilenet_v2 " in filled[1][1] and "tvl1-fast " in filled[2][1]
    checkpoints = Path(listings.backbones_listing()["checkpoints"])
    checkpoints.mkdir(parents=True)
    (checkpoints / "mobilenet_v2-b0353104.pth").write_bytes(b"")  # the cached column is looked up live
    script = ("import sys\nfrom cli import main\n"
              f"for args in {commands!r}:\n    main(args)\n"
              "assert 'torch' not in sys.modules, 'torch imported'\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(filled[0][1]) and run.stdout.endswith(filled[2][1])
    before = filled[1][1].splitlines()
    after = run.stdout[len(filled[0][1]):len(run.stdout) - len(filled[2][1])].splitlines()
    changed = [(b, a) for b, a in zip(before, after) if b != a]
    assert len(before) == len(after) and len(changed) == 1
    assert changed[0][0].startswith("mobilenet_v2 ") and changed[0][1] == changed[0][0] + "*"  # V1's file


def test_heads_listing_keeps_head_errors_as_notes():
    rows = {r["name"]: r for r in listings.heads_listing(**{**SMALL, "num_segments": 1})["rows"]}
    assert not rows["trn_multiscale"]["applicable"] and "at least 2 segments" in rows["trn_multiscale"]["note"]
