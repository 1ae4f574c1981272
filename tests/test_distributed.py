"""Stage one on Ray: simulated multi-node clusters and a real `ray start` cluster on 127.0.0.1."""

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import StpipeError
from pipeline.extraction import ExtractConfig
from pipeline.progress import Advanced
from pipeline.store import FeatureStore
from stages import extract

ray = pytest.importorskip("ray")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def config(demo, store, **kw):
    base = dict(manifest=str(demo / "manifest.csv"), output=str(store), backbone="tiny", weights="none",
                batch_size=8, chunk_frames=4)
    return ExtractConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def local_store(demo, tmp_path_factory):
    path = tmp_path_factory.mktemp("local") / "s.zarr"
    extract.run(config(demo, path, executor="local"))
    return FeatureStore.open(str(path))


def assert_same_store(a: FeatureStore, b: FeatureStore):
    ia, ib = a.index(), b.index()
    assert sorted(ia["video_id"]) == sorted(ib["video_id"])
    assert set(ib["status"]) == {"complete"}
    for video_id in ia["video_id"]:
        assert np.array_equal(a.read(video_id, "rgb"), b.read(video_id, "rgb")), video_id
        assert a.video_attrs(video_id)["frame_index"] == b.video_attrs(video_id)["frame_index"]


def test_simulated_three_node_cluster_equals_in_process(demo, tmp_path, local_store, monkeypatch):
    from ray.cluster_utils import Cluster

    from pipeline.distributed import warm_flow_compile_on_nodes
    from pipeline.flow import build_flow
    from pipeline.flow.compile_policy import cache_is_warm, cache_marker

    # an inductor cache the nodes see as warm (the marker only: the warm-up must then skip compiling)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    method = build_flow("tvl1-fastest", device="cpu")
    cache_marker("cpu", method.check_every, method.config.border).parent.mkdir(parents=True)
    cache_marker("cpu", method.check_every, method.config.border).write_text("test\n")
    assert cache_is_warm(method)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    notes = []
    try:
        cluster.add_node(num_cpus=1)
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, logging_level="WARNING")
        result = extract.run(config(demo, tmp_path / "s.zarr", executor="ray", workers=3))
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        warmed = warm_flow_compile_on_nodes(ray, config(demo, tmp_path / "s.zarr", flow=True, flow_method="tvl1-fastest",
                                               flow_compile="on"), lambda note: notes.append(note.message))
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(nodes) == 3
    assert (result.done, result.failed) == (20, 0)
    assert_same_store(local_store, FeatureStore.open(str(tmp_path / "s.zarr")))
    assert warmed == {node: 0.0 for node in nodes}  # one warm-up task on every node, each found it warm
    assert notes[0].startswith("TV-L1: compiling the kernels once on each of 3 node(s)") and "ready in 0 s" in notes[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray_head(tmp_path: Path, env: dict, *, attempts: int = 2, timeout: float = 180.0):
    """`ray start --head --block` on a free port in its own process group, run in `tmp_path` (so its
    workers' working directory is that folder); (process, port) once its GCS accepts connections.
    Skips (with the head's own log) when it cannot start here."""
    ray_bin = Path(sys.executable).with_name("ray")
    log_tail = ""
    for attempt in range(attempts):
        port = free_port()
        log = tmp_path / f"ray-head-{attempt}.log"
        with open(log, "wb") as out:
            head = subprocess.Popen(
                [str(ray_bin), "start", "--head", "--port", str(port), "--num-cpus", "2",
                 "--node-ip-address", "127.0.0.1", "--ray-client-server-port", str(free_port()),
                 "--include-dashboard=false", "--disable-usage-stats", "--block"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=tmp_path,
            )
        deadline = time.time() + timeout
        while head.poll() is None and time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return head, port
            except OSError:
                time.sleep(0.5)
        stop_ray_head(head)
        log_tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-6:])
    pytest.skip(f"ray start --head did not come up in {attempts} attempts; its log: {log_tail}")


def stop_ray_head(head: subprocess.Popen) -> None:
    """Stop this cluster only (its own process group), whether or not `ray start` still runs."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
        try:
            os.killpg(head.pid, sig)
        except ProcessLookupError:
            return  # the whole group is gone
        try:
            head.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """One real `ray start --head` cluster on 127.0.0.1 for this module's tests: (env, port, its folder).

    Token auth on, as a cluster should run, with a token of its own: Ray keeps it in
    ~/.ray/auth_token, so a HOME of its own keeps other Ray sessions from swapping it. (An earlier
    ray.init() in this process leaves RAY_AUTH_MODE=token in os.environ; without a token in this
    HOME `ray start` then refuses to start, which is what CI hit.) The head runs in a folder of its
    own, so its workers' working directory is neither the repository nor a test's folder."""
    base = tmp_path_factory.mktemp("ray-head")
    (base / "home").mkdir()
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "HOME": str(base / "home"), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "PYTHONPATH": pythonpath}
    subprocess.run([str(Path(sys.executable).with_name("ray")), "get-auth-token", "--generate"],
                   env=env, check=True, capture_output=True, timeout=120)
    head, port = start_ray_head(base, env)
    try:
        yield env, port, base
    finally:
        stop_ray_head(head)


REPO = Path(__file__).parents[1]


def cli_run(args, *, cwd, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_real_cluster_started_with_ray_start(demo, tmp_path, local_store, ray_head):
    env, port, _ = ray_head
    store = tmp_path / "s.zarr"
    run = cli_run(["extract", "-m", demo / "manifest.csv", "-o", store, "--backbone", "tiny", "--weights", "none",
                   "--batch-size", "8", "--ray-address", f"127.0.0.1:{port}"], cwd=REPO, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "20 extracted" in run.stdout
    # the worker's own lines reach the terminal (how it decodes: one CPU per worker, so threads)
    assert "worker 1: decoding in 2 thread(s) of the compute process (one core" in run.stdout + run.stderr
    assert_same_store(local_store, FeatureStore.open(str(store)))


def test_readme_cluster_commands_in_a_folder_with_relative_paths(demo, tmp_path, ray_head):
    """Issue 15: the README's `Running on a cluster` commands, typed in a folder that holds the clips
    and a manifest, with relative paths (`-m m.csv --root . -o ray.zarr`, then `ablate -s ray.zarr
    -o runs/ablation`). The cluster's workers run in the head's folder, not this one."""
    env, port, head_dir = ray_head
    work = tmp_path / "clips"
    work.mkdir()
    lines = ["video_id,path,label,split"]
    for name, split in (("moving_left_001", "train"), ("moving_right_001", "train"), ("moving_left_000", "val")):
        shutil.copy(demo / "videos" / f"{name}.mp4", work)
        lines.append(f"{name},{name}.mp4,{name[:-4].replace('_', ' ')},{split}")
    (work / "m.csv").write_text("\n".join(lines) + "\n")
    address = ["--ray-address", f"127.0.0.1:{port}"]
    run = cli_run(["extract", "-m", "m.csv", "--root", ".", "-o", "ray.zarr", "--backbone", "tiny", "--weights", "none",
                   *address], cwd=work, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ray.zarr: 3 extracted, 0 already complete, 0 failed of 3 videos" in run.stdout
    assert FeatureStore.open(str(work / "ray.zarr")).complete_ids() == {"moving_left_001", "moving_right_001",
                                                                        "moving_left_000"}
    run = cli_run(["ablate", "-s", "ray.zarr", "--heads", "mlp", "--segments", "2", "--seeds", "0", "--epochs", "1",
                   "-o", "runs/ablation", *address], cwd=work, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    with open(work / "runs" / "ablation" / "results.csv") as f:
        results = list(csv.DictReader(f))
    assert [(r["head"], r["status"]) for r in results] == [("mlp", "ok")]
    run_dir = Path(results[0]["run_dir"])
    assert run_dir.parent == work / "runs" / "ablation" / "trials" and (run_dir / "metrics.json").is_file()
    assert not {"ray.zarr", "runs", "m.csv"} & {p.name for p in head_dir.iterdir()}  # nothing resolved there


def test_joining_finds_the_token_as_rays_cli_does(demo, tmp_path, ray_head):
    """Issue 21: on the head node of a default `ray start --head` (token authentication on, the
    token in ~/.ray/auth_token) a driver whose environment has no RAY_AUTH_MODE joins by HOST:PORT;
    on a machine without the token, the one line names authentication and the fix."""
    env, port, _ = ray_head
    plain = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
    args = ["extract", "-m", demo / "manifest.csv", "-o", tmp_path / "s.zarr", "--backbone", "tiny", "--weights", "none",
            "--batch-size", "8", "--ray-address", f"127.0.0.1:{port}"]
    run = cli_run(args, cwd=REPO, env=plain)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "20 extracted" in run.stdout and "Token authentication" not in run.stderr
    (tmp_path / "elsewhere").mkdir()
    other = [str(tmp_path / "t.zarr") if a == tmp_path / "s.zarr" else a for a in args]  # work to do: it must join
    run = cli_run(other, cwd=REPO, env={**plain, "HOME": str(tmp_path / "elsewhere")})
    assert run.returncode == 2
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith(f"stpipe: error: cannot join the Ray cluster at 127.0.0.1:{port}: the cluster uses token "
                           "authentication and this machine has no Ray token; copy ~/.ray/auth_token"), line
    assert "RAY_AUTH_MODE=token" in line


def test_unreachable_address_is_one_clear_line(demo, tmp_path):
    started = time.time()
    with pytest.raises(StpipeError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:\d+"):
        extract.run(config(demo, tmp_path / "s.zarr", executor="ray", ray_address=f"127.0.0.1:{free_port()}"))
    assert time.time() - started < 60


def test_memory_store_needs_the_local_executor(demo):
    with pytest.raises(StpipeError, match="memory:// store lives in one process"):
        extract.run(config(demo, "memory://x.zarr", executor="ray"))


def test_node_removed_mid_run_its_videos_are_redone_elsewhere(demo, tmp_path, local_store):
    from ray.cluster_utils import Cluster

    # one CPU per node: the two workers must sit on different nodes, and no replacement fits anywhere
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    events = []
    try:
        doomed = cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, logging_level="WARNING")

        def progress(event):
            if not isinstance(event, Advanced):  # videos only
                return
            events.append(event)
            if len(events) == 4:  # first results are in: take a node away with its worker
                cluster.remove_node(doomed, allow_graceful=False)

        result = extract.run(config(demo, tmp_path / "s.zarr", executor="ray", workers=2), progress=progress)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert (result.done, result.failed) == (20, 0)
    assert sorted(e.item.video_id for e in events) == sorted(set(e.item.video_id for e in events))  # each once
    assert_same_store(local_store, FeatureStore.open(str(tmp_path / "s.zarr")))


def test_calls_carry_a_few_batches_of_frames():
    from pipeline.distributed import CALL_BATCHES, CALL_FRAMES, VIDEOS_PER_CALL, videos_per_call

    cfg = ExtractConfig(manifest="m.csv", output="s.zarr", batch_size=64, videos_in_flight=32)
    assert videos_per_call(cfg, 0, 0) == VIDEOS_PER_CALL  # nothing known yet
    assert videos_per_call(cfg, 16 * 10, 10) == CALL_BATCHES * 64 // 16  # short videos: many a call
    assert videos_per_call(cfg, 3000 * 4, 4) == 1  # long videos: one a call
    assert videos_per_call(replace(cfg, videos_in_flight=5), 160, 10) == 5  # the cap holds
    assert videos_per_call(replace(cfg, batch_size=0), 160, 10, "cuda") == CALL_BATCHES * 64 // 16  # GPU default
    assert videos_per_call(replace(cfg, batch_size=0), 160, 10, "cpu") == CALL_FRAMES // 16  # CPU: 8-frame batches
