"""Relative paths and Ray (issue 15): the driver makes every local path absolute before a run, the
store's config hash still recognises a resumed run, and workers that cannot start stop the run in
one line. The real `ray start` cluster with relative paths is in tests/test_distributed.py."""

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.errors import StoreError
from pipeline.extraction import ExtractConfig
from pipeline.extraction.config import is_weights_file
from pipeline.store import FeatureStore, config_hash
from pipeline.store.urls import absolute
from stages import extract


def test_absolute_turns_local_paths_only(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert absolute("ray.zarr") == str(tmp_path / "ray.zarr")
    assert absolute("a/../b/./c.csv") == str(tmp_path / "b" / "c.csv")
    assert absolute("~/x.zarr") == str(Path.home() / "x.zarr")
    assert absolute("/data/x.zarr") == "/data/x.zarr"
    for url in ("", "s3://bucket/x.zarr", "file:///data/x.zarr", "file://x.zarr", "memory://x.zarr",
                "simplecache::s3://b/x.zarr", "gs://b/x"):
        assert absolute(url) == url


def test_extract_config_absolute_paths_leave_named_weights(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = ExtractConfig(manifest="m.csv", root=".", output="ray.zarr", weights="w.pth", backbone_checkpoint="ft/backbone.pt")
    out = cfg.with_absolute_paths()
    assert (out.manifest, out.root, out.output) == (str(tmp_path / "m.csv"), str(tmp_path), str(tmp_path / "ray.zarr"))
    assert (out.weights, out.backbone_checkpoint) == (str(tmp_path / "w.pth"), str(tmp_path / "ft" / "backbone.pt"))
    for named in ("DEFAULT", "none", "None", "IMAGENET1K_V1", "IMAGENET1K_V2"):
        assert not is_weights_file(named)
        assert replace(cfg, weights=named).with_absolute_paths().weights == named
    unlabelled = replace(cfg, root="", output="s3://b/x.zarr", backbone_checkpoint="").with_absolute_paths()
    assert (unlabelled.root, unlabelled.output, unlabelled.backbone_checkpoint) == ("", "s3://b/x.zarr", "")


@pytest.fixture
def folder(demo, tmp_path):
    """A user's folder: the clips, the manifest and a tiny backbone's weights file, all relative."""
    from pipeline.backbones import build_backbone

    work = tmp_path / "work"
    shutil.copytree(demo, work)
    torch.save(build_backbone("tiny", weights="none").state_dict(), work / "w.pth")
    return work


def run_from(cwd: Path, **kw):
    os.chdir(cwd)
    base = dict(manifest="manifest.csv", root=".", output="s.zarr", backbone="tiny", weights="w.pth",
                executor="local", batch_size=8)
    return extract.run(ExtractConfig(**{**base, **kw}))


def test_resume_from_the_same_folder_and_by_absolute_path_from_another(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # restored after the test (run_from changes directory)
    first = run_from(folder, max_frames=2)
    assert (first.done, first.store) == (20, "s.zarr")  # messages keep the user's spelling
    meta = FeatureStore.open(str(folder / "s.zarr")).meta
    assert meta["config"]["weights"] == str(folder / "w.pth")  # the record names the file anywhere
    again = run_from(folder, max_frames=2)  # the same command from the same folder
    assert (again.skipped, again.done) == (20, 0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = run_from(elsewhere, manifest=str(folder / "manifest.csv"), root=str(folder), output=str(folder / "s.zarr"),
                     weights=str(folder / "w.pth"), max_frames=2)
    assert (moved.skipped, moved.done) == (20, 0)
    with pytest.raises(StoreError, match="differs in: max_frames"):  # the hash still guards the content
        run_from(folder, max_frames=3)


def test_a_store_recorded_with_a_relative_weights_path_still_resumes(folder, tmp_path, monkeypatch):
    """Stores made before paths were made absolute hold the spelling the user typed in their hash."""
    monkeypatch.chdir(tmp_path)
    run_from(folder, max_frames=2)
    store = FeatureStore.open(str(folder / "s.zarr"), mode="r+")
    meta = store.meta
    legacy = dict(meta["content"], weights="w.pth")
    meta.update(content=legacy, config={**meta["config"], "weights": "w.pth"}, config_hash=config_hash(legacy))
    store.root.attrs["stpipe"] = meta
    again = run_from(folder, max_frames=2)
    assert (again.skipped, again.done) == (20, 0)
    # its identity is still that spelling: from another folder, "w.pth" names another file there
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(StoreError, match="differs in: weights"):
        run_from(other, manifest=str(folder / "manifest.csv"), root=str(folder), output=str(folder / "s.zarr"),
                 weights=str(folder / "w.pth"), max_frames=2)


def test_a_start_failure_is_one_line():
    """The reason taken from Ray's text: the constructor's exception, or Ray's words for a crash."""
    from pipeline.distributed.errors import raised as _raised

    class Died(Exception):
        def __init__(self, text, init_failed):
            super().__init__(text)
            self.actor_init_failed = init_failed

    trace = "The actor died because of an error raised in its creation task, ray::W.__init__() (pid=1)\n  File \"x.py\""
    assert _raised(Died(trace + "\npipeline.errors.StoreError: s.zarr: no feature store here", True)) == \
        "s.zarr: no feature store here"
    assert _raised(Died(trace + "\nModuleNotFoundError: No module named 'pipeline'", True)) == \
        "ModuleNotFoundError: No module named 'pipeline'"
    crash = ("The actor died unexpectedly before finishing this task.\n\tclass_name: W\n\tpid: 7\n"
             "The actor is dead because its worker process has died. Some common causes include: (1) ...\n"
             "The actor never ran - it was cancelled before it started running.")
    assert _raised(Died(crash, False)) == "The actor is dead because its worker process has died."


@pytest.mark.ray
def test_workers_that_cannot_start_stop_the_run_in_one_line(demo, tmp_path, stpipe, monkeypatch):
    """A store the workers cannot open (as on a node that does not see the driver's path): the run
    stops at the first worker's error, records no video as failed, and the fixed re-run does all."""
    ray = pytest.importorskip("ray")
    import pipeline.distributed as distributed

    real = distributed.run_extraction

    def unseen_store(cfg, jobs, **kw):  # the workers are handed a path with no store
        return real(replace(cfg, output=str(tmp_path / "unseen.zarr")), jobs, **kw)

    args = ["extract", "-m", demo / "manifest.csv", "-o", tmp_path / "s.zarr", "--backbone", "tiny", "--weights",
            "none", "--batch-size", "8"]
    ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING")
    try:
        monkeypatch.setattr(distributed, "run_extraction", unseen_store)
        code, out, err = stpipe(args)
        assert code == 2, err
        lines = [line for line in err.splitlines() if line.startswith("stpipe:")]
        assert lines == [f"stpipe: error: Ray workers could not start: {tmp_path / 'unseen.zarr'}: no feature store here"]
        assert "no live Ray worker left" not in err + out
        store = FeatureStore.open(str(tmp_path / "s.zarr"))
        assert store.complete_ids() == set() and not list(store.root["failures"].group_keys())
        monkeypatch.setattr(distributed, "run_extraction", real)
        code, out, err = stpipe(args)
    finally:
        ray.shutdown()
    assert code == 0, err
    assert "20 extracted, 0 already complete, 0 failed of 20 videos" in out
