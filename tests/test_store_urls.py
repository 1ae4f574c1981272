"""Store URLs: `file://`, `memory://`, and `s3://` against a real S3-API server (moto) on 127.0.0.1.

The s3 tests start `python -m moto.server` on a free loopback port for this module, create a
bucket, run `stpipe extract` into it with the endpoint and credentials passed the standard ways
(`--storage-options` JSON in-process; the AWS_* environment in a separate `stpipe` process), read it
back with `stpipe inspect`, and compare every array with a local-path extraction. They skip when
s3fs/moto are missing or the server does not come up; the server is stopped whatever happens.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from extract_fixtures import assert_same_features, extract_args, extract_config, small_demo
from moto_server import KEY, SECRET, free_port, make_bucket, moto_server

from cli import main
from pipeline.errors import MissingDependencyError, StoreError
from pipeline.store import FeatureStore
from stages import extract

REPO = Path(__file__).resolve().parents[1]
_AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                  "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@pytest.fixture(autouse=True)
def hermetic_aws(monkeypatch, tmp_path):
    """No test sees the developer's AWS setup, asks an instance-metadata service, or goes via a proxy."""
    for name in _AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return small_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def local_store(demo, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("local") / "s.zarr")
    result = extract.run(extract_config(demo, path))
    assert (result.done, result.failed) == (4, 0)
    return FeatureStore.open(path)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """`http://127.0.0.1:PORT` of a moto S3 server running for this module."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    with contextlib.ExitStack() as stack:
        try:
            endpoint = stack.enter_context(moto_server(tmp_path_factory.mktemp("moto") / "server.log", seconds=30))
        except (OSError, RuntimeError) as exc:
            pytest.skip(f"moto server did not come up: {exc}")
        yield endpoint


def _inspect_json(capsys, url: str, *extra: str) -> dict:
    capsys.readouterr()
    main(["inspect", url, "--json", *extra])
    return json.loads(capsys.readouterr().out)


def _one_error_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stpipe: error: "), lines
    return lines[0]


# ---- file:// and memory:// --------------------------------------------------------------------


def test_file_url_is_the_local_path(demo, local_store, tmp_path, capsys):
    """zarr's fsspec store cannot create local folders, so file:// URLs open as plain paths."""
    url = f"file://{tmp_path}/s.zarr"
    main(extract_args(demo, url))
    assert (tmp_path / "s.zarr" / "zarr.json").is_file()
    assert_same_features(FeatureStore.open(url), local_store)
    assert _inspect_json(capsys, url)["complete"] == 4


def test_memory_url_within_one_process(demo, local_store, capsys):
    import fsspec

    url = "memory://stpipe-test-urls/s.zarr"
    try:
        main(extract_args(demo, url))
        assert_same_features(FeatureStore.open(url), local_store)
        assert _inspect_json(capsys, url)["complete"] == 4
        main(extract_args(demo, url))  # resumes from the same in-memory store
        assert "0 extracted, 4 already complete" in capsys.readouterr().out
    finally:
        fsspec.filesystem("memory").rm("/stpipe-test-urls", recursive=True)
    line = _one_error_line(capsys, ["inspect", url])
    assert line.endswith("memory://stpipe-test-urls/s.zarr: no feature store here")


def test_missing_s3fs_names_the_extra(monkeypatch):
    registry = importlib.import_module("fsspec.registry")  # the module; `fsspec.registry` is a mapping
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs -> ImportError
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    with pytest.raises(MissingDependencyError, match=r"s3fs \(pip install 'stpipe-video\[s3\]'\)"):
        FeatureStore.open("s3://bucket/s.zarr")


# ---- s3:// against moto -------------------------------------------------------------------------


def test_s3_with_storage_options_json(demo, local_store, s3_endpoint, capsys):
    bucket = make_bucket(s3_endpoint, "options")
    url = f"s3://{bucket}/features/s.zarr"
    options = json.dumps({"endpoint_url": s3_endpoint, "key": KEY, "secret": SECRET})
    main([*extract_args(demo, url), "--storage-options", options])
    summary = _inspect_json(capsys, url, "--storage-options", options)
    assert (summary["complete"], summary["failed"], summary["url"]) == (4, 0, url)
    assert summary["meta"]["config_hash"] == local_store.meta["config_hash"]
    remote = FeatureStore.open(url, storage_options=json.loads(options))
    assert_same_features(remote, local_store)
    main([*extract_args(demo, url), "--storage-options", options])  # resume: nothing redone
    assert "0 extracted, 4 already complete" in capsys.readouterr().out
    data = pytest.importorskip("pipeline.training.data")  # stage two reads it like a local store
    ours, theirs = data.load_split(remote, "train"), data.load_split(local_store, "train")
    assert list(ours.video_ids) == list(theirs.video_ids)
    np.testing.assert_array_equal(ours.streams["rgb"].frames, theirs.streams["rgb"].frames)


def test_s3_with_environment_in_a_separate_process(demo, local_store, s3_endpoint, monkeypatch, capsys):
    bucket = make_bucket(s3_endpoint, "environment")
    url = f"s3://{bucket}/s.zarr"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    done = subprocess.run([sys.executable, "-m", "cli", *extract_args(demo, url)], cwd=REPO, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4 extracted" in done.stdout
    assert _inspect_json(capsys, url)["complete"] == 4
    assert_same_features(FeatureStore.open(url), local_store)


def test_s3_failures_are_one_line_and_fast(demo, s3_endpoint, tmp_path, capsys):
    bucket = make_bucket(s3_endpoint, "failures")
    cases = {  # storage options -> what the line must say
        json.dumps({"endpoint_url": s3_endpoint}): "no credentials found",
        json.dumps({"endpoint_url": f"http://127.0.0.1:{free_port()}", "key": KEY, "secret": SECRET}):
            "cannot connect",
        json.dumps({"endpoint_url": s3_endpoint, "key": KEY, "secret": SECRET, "endpoint": "typo"}):
            "bad --storage-options for s3://",
    }
    for options, expected in cases.items():
        for argv in (["inspect", f"s3://{bucket}/s.zarr"], extract_args(demo, f"s3://{bucket}/s.zarr")):
            start = time.monotonic()
            line = _one_error_line(capsys, [*argv, "--storage-options", options])
            assert expected in line and f"s3://{bucket}/s.zarr" in line
            assert time.monotonic() - start < 20
    good = json.dumps({"endpoint_url": s3_endpoint, "key": KEY, "secret": SECRET})
    line = _one_error_line(capsys, [*extract_args(demo, "s3://no-such-bucket/s.zarr"), "--storage-options", good])
    assert "bucket 'no-such-bucket' does not exist" in line
    line = _one_error_line(capsys, ["inspect", f"s3://{bucket}/missing.zarr", "--storage-options", good])
    assert line.endswith("no feature store here")
    import zarr

    zarr.open_group(store=f"s3://{bucket}/plain.zarr", mode="w", storage_options=json.loads(good))
    with pytest.raises(StoreError, match="plain.zarr: not an stpipe feature store"):
        FeatureStore.open(f"s3://{bucket}/plain.zarr", storage_options=json.loads(good))


def test_s3_videos_written_in_flight_then_read_from_the_pack(s3_endpoint, tmp_path):
    """Many videos in flight (the store's `Writer`), the resume scan, the index and the pack on an object store;
    stage two reads the pack and gets what the per-video groups hold."""
    from pipeline.store.pack import open_pack, write_pack
    from pipeline.store.writer import Writer, write_threads
    from pipeline.training.data import load_split

    options = {"key": KEY, "secret": SECRET, "endpoint_url": s3_endpoint}
    url = f"s3://{make_bucket(s3_endpoint, 'pack')}/s.zarr"
    store = FeatureStore.create(url, provenance={"config_hash": "h", "classes": ["a", "b"]}, storage_options=options)
    assert store.complete_ids() == set()
    rng = np.random.default_rng(0)
    videos = {f"v{i:02d}": rng.standard_normal((1, int(rng.integers(2, 9)), 8)).astype(np.float16) for i in range(24)}

    def write(video_id):
        writer = store.begin_video(video_id, {"label_index": int(video_id[1:]) % 2, "split": "train"})
        writer.write("rgb", videos[video_id], dims=("view", "time", "channel"), time_axis=1)
        writer.finish(num_frames=videos[video_id].shape[1])

    with Writer(write_threads(store)) as pool:
        for video_id in videos:
            pool.submit(write, video_id)
    reopened = FeatureStore.open(url, mode="r+", storage_options=options)
    assert reopened.complete_ids() == set(videos)
    reopened.write_index()
    assert write_pack(reopened)["rgb"] == "written"
    reader = FeatureStore.open(url, storage_options=options)
    assert open_pack(reader, "rgb") is not None
    split = load_split(reader, "train", storage_options=options)
    assert np.array_equal(split.streams["rgb"].frames, np.concatenate([videos[k] for k in sorted(videos)], axis=1))
