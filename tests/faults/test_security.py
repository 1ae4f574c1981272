"""Security: nothing unpickles untrusted data, nothing is written outside the store or run dir,
and Ray starts without its dashboard and with token authentication unless asked otherwise.

Every malicious file here is a pickle whose unpickling would create a marker file (`open(marker,
"w")` via `__reduce__`); each test checks the marker never appears.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_tools import REPO
from store_fixtures import make_store

from cli import main
from pipeline.errors import RunError, StpipeError
from pipeline.store import FeatureStore
from pipeline.training.config import TrainHeadConfig
from pipeline.training.model import load_checkpoint
from stages import train_head

SOURCES = sorted([REPO / "cli.py", *(REPO / "pipeline").rglob("*.py"), *(REPO / "stages").rglob("*.py"),
                  *(REPO / "manifests").rglob("*.py")])
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}


class Evil:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))  # runs on unpickling


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword_is(call: ast.Call, key: str, value) -> bool:
    return any(k.arg == key and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def test_source_never_unpickles():
    """AST scan of the package: no pickle-family import, torch.load only with weights_only=True,
    np.load only with allow_pickle=False, no yaml.load/unsafe_load, no eval/exec, no read_pickle."""
    problems, torch_loads = [], 0
    for file in SOURCES:
        tree = ast.parse(file.read_text(), filename=str(file))
        for node in ast.walk(tree):
            where = f"{file.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                problems += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
            elif isinstance(node, ast.ImportFrom):
                module = (node.module or "").split(".")[0]
                if module in PICKLE_MODULES or (module == "torch" and any(a.name == "load" for a in node.names)):
                    problems.append(f"{where}: from {node.module} import ...")
            elif isinstance(node, ast.Call):
                name = _dotted(node.func)
                if name == "torch.load":
                    torch_loads += 1
                    if not _keyword_is(node, "weights_only", True):
                        problems.append(f"{where}: torch.load without weights_only=True")
                elif name in ("np.load", "numpy.load") and not _keyword_is(node, "allow_pickle", False):
                    problems.append(f"{where}: np.load without allow_pickle=False")
                elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all") or \
                        name in ("eval", "exec") or name.endswith("read_pickle"):
                    problems.append(f"{where}: {name}(...)")
    assert not problems, "\n".join(problems)
    assert torch_loads >= 2  # the checkpoint and weights loaders are seen by the scan


TRAIN = ["--head", "mlp", "--segments", "4", "--epochs", "2", "--batch-size", "8", "--proj-dim", "16", "--device", "cpu"]


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("sec") / "s.zarr")
    make_store(url, per_class={"train": 4, "val": 2})
    return url


@pytest.fixture(scope="module")
def run_dir(store_url):
    out = Path(store_url).parent / "run"
    # the CLI resumes it below: the same arguments make the same config
    train_head.run(TrainHeadConfig(store=store_url, out=str(out), head="mlp", segments=4, epochs=2, batch_size=8,
                                   proj_dim=16, device="cpu"))
    return out


def evil_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"format": 1, "kind": "best", "model": {"w": Evil(marker)}}, path)


def test_malicious_checkpoints_are_refused(run_dir, store_url, tmp_path, capfd):
    from corpus import write_video

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil_checkpoint(evil, marker)
    write_video(tmp_path / "any.mp4", np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(RunError, match="cannot load checkpoint"):
        load_checkpoint(evil)
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises, it must not run the payload
        torch.load(evil, weights_only=True)
    # through the CLI: evaluate, predict and train-head --resume read checkpoint.pt / last.pt
    attacked = tmp_path / "run"
    import shutil

    shutil.copytree(run_dir, attacked)
    evil_checkpoint(attacked / "checkpoint.pt", marker)
    evil_checkpoint(attacked / "last.pt", marker)
    for argv in (["evaluate", "--run", str(attacked)],
                 ["evaluate", "--run", str(attacked), "--checkpoint", "last.pt"],
                 ["predict", "--run", str(attacked), str(tmp_path / "any.mp4")],
                 ["train-head", "-s", store_url, "-o", str(attacked), *TRAIN, "--resume"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capfd.readouterr().err
        assert exc.value.code == 2 and "Traceback" not in err and "cannot load checkpoint" in err, (argv, err)
    assert not marker.exists()


def test_malicious_weights_file_is_refused(tmp_path, capfd):
    marker = tmp_path / "pwned"
    weights = tmp_path / "evil.pth"
    torch.save({"conv.weight": Evil(marker)}, weights)
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path,label,split\na,a.mp4,x,train\n")
    for flag in ("--weights", "--backbone-checkpoint"):
        with pytest.raises(SystemExit) as exc:
            main(["extract", "-m", str(manifest), "-o", str(tmp_path / "s.zarr"), "--backbone", "tiny",
                  "--executor", "local", flag, str(weights)] + (["--weights", "none"] if flag != "--weights" else []))
        err = capfd.readouterr().err
        assert exc.value.code == 2 and "Traceback" not in err, err
    assert not marker.exists() and not (tmp_path / "s.zarr").exists()


def test_pickled_npy_features_are_refused(tmp_path, capfd):
    marker = tmp_path / "pwned"
    features = tmp_path / "npy"
    features.mkdir()
    np.save(features / "a.npy", np.array([Evil(marker)], dtype=object), allow_pickle=True)
    (tmp_path / "m.csv").write_text("video_id,path,label,split\na,npy/a.npy,x,train\n")
    (tmp_path / "m.classes.txt").write_text("x\n")
    with pytest.raises(SystemExit):
        main(["import", str(features), "-m", str(tmp_path / "m.csv"), "-o", str(tmp_path / "s.zarr")])
    err = capfd.readouterr().err
    assert "Traceback" not in err and "a.npy" in err, err
    assert not marker.exists()


def test_a_store_asking_for_a_pickle_codec_is_not_unpickled(tmp_path):
    """Zarr v3 has no pickle codec registered; a crafted store that names one fails to read."""
    import pickle

    marker = tmp_path / "pwned"
    url = str(tmp_path / "s.zarr")
    store = make_store(url, per_class={"train": 2, "val": 1})
    video_id = next(iter(sorted(store.complete_ids())))
    array_dir = Path(url) / "videos" / store.video_group(video_id).basename / "rgb"
    meta = json.loads((array_dir / "zarr.json").read_text())
    meta["codecs"] = [{"name": "numcodecs.pickle", "configuration": {}}]
    (array_dir / "zarr.json").write_text(json.dumps(meta))
    for chunk in array_dir.glob("c.*"):
        if chunk.is_file():
            chunk.write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(Exception):  # noqa: B017 - an unknown codec, whichever type zarr picks
        FeatureStore.open(url).read(video_id, "rgb")
    assert not marker.exists()


def test_no_split_name_writes_outside_the_run_dir(run_dir, tmp_path, capfd):
    """A crafted store whose split is a path: evaluate refuses it in one line and writes nothing."""
    url = str(tmp_path / "crafted.zarr")
    make_store(url, per_class={"train": 2, "val": 2})
    s = FeatureStore.open(url, mode="r+")
    for video_id in s.complete_ids():
        if s.video_attrs(video_id)["split"] == "val":
            s.video_group(video_id).attrs["split"] = "../../escape"
    s.write_index()
    before = sorted(str(p) for p in tmp_path.parent.rglob("*"))
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--run", str(run_dir), "-s", url, "--split", "../../escape"])
    err = capfd.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert sorted(str(p) for p in tmp_path.parent.rglob("*")) == before


# ---- Ray ------------------------------------------------------------------------------------------


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def listening_sockets(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by these processes (Linux /proc)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A = LISTEN
                continue
            hex_addr, hex_port = fields[1].split(":")
            raw = b"".join(struct.pack("<I", int(hex_addr[i : i + 8], 16)) for i in range(0, len(hex_addr), 8))
            found.append((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return found


def test_ray_session_starts_without_dashboard_and_with_token_auth():
    """The embedded Ray: no dashboard web UI and token authentication on. Its gRPC servers do
    listen beyond loopback: Ray 2.60 rewrites a 127.0.0.1 node address to the machine's IP and
    has no loopback-only switch, so the session token is what keeps other hosts out (recorded
    here so a future Ray that binds differently shows up)."""
    ray = pytest.importorskip("ray")
    from ray._private.worker import global_worker
    from ray._raylet import AuthenticationMode, get_authentication_mode

    from pipeline.distributed import ray_session

    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    with ray_session(num_cpus=1) as session:
        assert not global_worker.node.address_info.get("webui_url")
        assert get_authentication_mode() == AuthenticationMode.TOKEN
        sockets = listening_sockets(_descendants(os.getpid()))
        assert sockets  # the scan sees Ray's servers at all
        assert 8265 not in {port for _, port in sockets}  # no dashboard
        wide = sorted({addr for addr, _ in sockets} - {"127.0.0.1", "::1"})
        print(f"embedded Ray: {len(sockets)} listening sockets, addresses beyond loopback: {wide}")
    assert not session.is_initialized()


@pytest.mark.slow
def test_ray_dashboard_when_asked_listens_on_loopback_only():
    ray = pytest.importorskip("ray")
    from pipeline.distributed import ray_session

    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    with ray_session(num_cpus=1, dashboard=True):
        from ray._private.worker import global_worker

        url = global_worker.node.address_info.get("webui_url") or ""
        assert url.startswith("127.0.0.1:"), url
        port = int(url.rsplit(":", 1)[1])
        addresses = {addr for addr, p in listening_sockets(_descendants(os.getpid())) if p == port}
        assert addresses == {"127.0.0.1"}, addresses


def test_store_errors_never_leak_credentials(tmp_path):
    """Saved configs redact storage_options secrets; a store error line does not echo them."""
    from pipeline.config import redact_secrets

    assert redact_secrets({"key": "AKIA...", "secret": "s3cr3t", "endpoint_url": "http://x"}) == {
        "key": "***", "secret": "***", "endpoint_url": "http://x"}
    with pytest.raises(StpipeError) as exc:
        FeatureStore.open(str(tmp_path / "nope.zarr"), storage_options={"secret": "s3cr3t"})
    assert "s3cr3t" not in str(exc.value)
