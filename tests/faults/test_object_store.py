"""A flaky object store: s3:// runs through `FaultProxy` (object_store.py) in front of a moto server.

Transient faults (503 SlowDown, 500, connections reset after moto applied the request, stalls past
the read timeout) at a seeded rate on every request: `stpipe import` ends with a store identical to
a fault-free run's, and stage two reads it back through the same faults. Permanent faults (403
AccessDenied, InvalidAccessKeyId, 404 NoSuchBucket), from the first request or mid-run: the run
stops in seconds with one line, after a handful of refused requests (no retry loop). Skips when
s3fs or moto is missing.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from fault_tools import assert_identical_store
from object_store import KEY, SECRET, FaultProxy, make_bucket, moto_server

from cli import main
from pipeline.store import FeatureStore
from pipeline.store.urls import resolve_url

VIDEOS = 60
# the rate and more (slow: every fault costs a backoff of ~0.5 s, and the index and pack
# writes go one request at a time); the default run, a lower rate of the same faults on 6 videos
TRANSIENT = {"slowdown": 0.10, "reset": 0.02, "error500": 0.02, "stall": 0.01}
QUICK = {"slowdown": 0.04, "reset": 0.02, "error500": 0.01, "stall": 0.005}


@pytest.fixture(autouse=True)
def hermetic_aws(monkeypatch, tmp_path):
    """No developer AWS setup, instance-metadata lookup or HTTP proxy in the way."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    try:
        with moto_server(tmp_path_factory.mktemp("moto") / "server.log") as endpoint:
            yield endpoint
    except RuntimeError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """Manifests of 6 (m6.csv) and VIDEOS videos (3 classes, train/val) and one (T, 16) .npy each."""
    folder = tmp_path_factory.mktemp("npy")
    rng = np.random.default_rng(0)
    lines = ["video_id,path,label,split"]
    for i in range(VIDEOS):
        np.save(folder / f"v{i:03d}.npy", rng.standard_normal((int(rng.integers(2, 12)), 16)).astype(np.float32))
        lines.append(f"v{i:03d},v{i:03d}.mp4,c{i % 3},{'val' if i % 5 == 0 else 'train'}")
    for count in (6, VIDEOS):
        (folder / f"m{count}.csv").write_text("\n".join(lines[:count + 1]) + "\n")
        (folder / f"m{count}.classes.txt").write_text("c0\nc1\nc2\n")
    return folder


def _options(endpoint: str, **config) -> dict:
    return {"endpoint_url": endpoint, "key": KEY, "secret": SECRET, **({"config_kwargs": config} if config else {})}


def _import(features, url: str, options: dict | None, videos: int = 6) -> list[str]:
    argv = ["import", str(features), "-m", str(features / f"m{videos}.csv"), "-o", url]
    return argv + (["--storage-options", json.dumps(options)] if options else [])


def _error_line(err: str) -> str:
    """The one error line a failed command wrote last on stderr (above it: progress bars only)."""
    assert err.count("stpipe: error") == 1 and "Traceback" not in err and "Exception" not in err, err
    return err.strip().splitlines()[-1]


def _download(endpoint: str, url: str, to) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **_options(endpoint))
    fs.get(url.removeprefix("s3://"), str(to), recursive=True)


@pytest.mark.parametrize(("videos", "rates"), [(6, QUICK), pytest.param(VIDEOS, TRANSIENT, marks=pytest.mark.slow)],
                         ids=["quick", "issue-rate"])
def test_transient_faults_end_in_the_same_store(moto, features, tmp_path, capsys, videos, rates):
    """503 SlowDown, 500, resets after moto applied the request and stalls past the read timeout,
    at a seeded rate on every request: the same store as a fault-free import to a local disk, read
    back the same (slow variant: also resumed with nothing redone)."""
    clean, flaky_bucket = tmp_path / "clean.zarr", make_bucket(moto, f"flaky{videos}")
    main(_import(features, str(clean), None, videos))
    with FaultProxy(moto, seed=videos, stall_seconds=3, **rates) as proxy:
        flaky = _options(proxy.endpoint, read_timeout=1)  # a stall is a read timeout (merged with the retries)
        start = time.monotonic()
        main(_import(features, f"s3://{flaky_bucket}/s.zarr", flaky, videos))
        seconds = [time.monotonic() - start]
        written = dict(proxy.counts)
        assert f"{videos} imported, 0 already complete, 0 failed" in capsys.readouterr().out
        # stage two reads through the same faults: the store as written, every array whole
        from pipeline.training.data import load_split

        reads = FeatureStore.open(f"s3://{flaky_bucket}/s.zarr", storage_options=flaky)
        reference = FeatureStore.open(str(clean))
        for split in ("train", "val"):
            ours, theirs = load_split(reads, split, storage_options=flaky), load_split(reference, split)
            assert list(ours.video_ids) == list(theirs.video_ids)
            np.testing.assert_array_equal(ours.streams["rgb"].frames, theirs.streams["rgb"].frames)
        seconds.append(time.monotonic() - start)
        if videos == VIDEOS:  # (~10 s more under faults: in the slow variant only)
            for video_id in sorted(reference.complete_ids())[:3]:  # per-video groups, through zarr
                np.testing.assert_array_equal(reads.read(video_id, "rgb"), reference.read(video_id, "rgb"))
            main(_import(features, f"s3://{flaky_bucket}/s.zarr", flaky, videos))  # the resume scan: nothing redone
            assert f"0 imported, {videos} already complete" in capsys.readouterr().out
            seconds.append(time.monotonic() - start)
        total = dict(proxy.counts)
    assert written["slowdown"] > 0 and written["reset"] > 0, written  # (counts: the same for a seed, near enough)
    if videos == VIDEOS:
        assert all(written.get(kind, 0) > 0 for kind in TRANSIENT), written
    _download(moto, f"s3://{flaky_bucket}/s.zarr", tmp_path / "flaky")
    assert assert_identical_store(clean, tmp_path / "flaky") == {"complete": videos, "failed": 0}
    print(f"import of {videos} videos, reads (, resume) done at {seconds} s; import {written}; in all {total}")


@pytest.mark.parametrize(("status", "code", "after", "path", "expected"), [
    (403, "InvalidAccessKeyId", 0, "", "cannot reach store: access denied ("),
    (403, "AccessDenied", 12, "/videos/", "access denied (Access Denied); check the credentials and the bucket's permissions"),
    (404, "NoSuchBucket", 12, "/videos/", "The specified bucket does not exist"),
    (403, "AccessDenied", 4, "/index/", "access denied ("),
], ids=["bad-key-at-start", "denied-mid-run", "bucket-gone-mid-run", "denied-at-the-index"])
def test_permanent_faults_stop_at_once_in_one_line(moto, features, capsys, request, status, code, after, path,
                                                   expected):
    """From the first request (bad credentials), mid-run (after `after` writes under videos/: the
    import's write pool, 16 videos in flight) or once the index is being written (zarr), the run
    stops with one line (under the progress bar), not after retries."""
    bucket = make_bucket(moto, request.node.callspec.id)
    with FaultProxy(moto) as proxy:
        proxy.deny(status, code, after=after, path=path)
        start = time.monotonic()
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(_import(features, f"s3://{bucket}/s.zarr", _options(proxy.endpoint)))
        seconds = time.monotonic() - start
        line = _error_line(capsys.readouterr().err)
        assert exit_.value.code == 2
        assert line.startswith(f"stpipe: error: s3://{bucket}/s.zarr: ") and expected in line, line
        assert proxy.counts["deny"] <= 40, proxy.counts  # the writes in flight, each refused once
    assert seconds < 15, seconds


def test_permanent_fault_mid_extract_is_one_line(moto, demo, capsys):
    """extract's writer lanes and its store lease: a 403 mid-run ends the run with the write's line
    (the lease's own release, refused too, does not mask it); above it only the progress bars."""
    bucket = make_bucket(moto, "deny-extract")
    with FaultProxy(moto) as proxy:
        proxy.deny(403, "AccessDenied", after=8, path="/videos/")
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(["extract", "-m", str(demo / "manifest.csv"), "-o", f"s3://{bucket}/s.zarr", "--backbone", "tiny",
                  "--weights", "none", "--executor", "local", "--storage-options", json.dumps(_options(proxy.endpoint))])
        line = _error_line(capsys.readouterr().err)
    assert exit_.value.code == 2
    assert line == (f"stpipe: error: s3://{bucket}/s.zarr: access denied (Access Denied); "
                    "check the credentials and the bucket's permissions")


def test_retry_settings_sit_under_the_users_options(moto):
    url = f"s3://{make_bucket(moto, 'options')}/s.zarr"
    _, ours = resolve_url(url, _options(moto, read_timeout=5), creating=True)
    assert ours["config_kwargs"] == {"retries": {"mode": "standard", "total_max_attempts": 10}, "read_timeout": 5}
    _, again = resolve_url(url, _options(moto), creating=True)
    assert again["config_kwargs"] == {"retries": {"mode": "standard", "total_max_attempts": 10}}  # not edited by a client
    _, theirs = resolve_url(url, _options(moto, retries={"mode": "adaptive", "total_max_attempts": 3}), creating=True)
    assert theirs["config_kwargs"] == {"retries": {"mode": "adaptive", "total_max_attempts": 3}}
