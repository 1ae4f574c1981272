"""Every command block of README.md and docs/*.md runs, as typed, on small real data (issue 21).

The blocks are read from the documents themselves (indented code blocks), so a doc edit that
breaks a command fails here. They run in document order in one fresh folder, through bash, in a
fresh environment: PATH with this venv's `stpipe` and `ray`, a HOME and TMPDIR of their own, and
nothing of the test suite's (no RAY_AUTH_MODE, no PYTHONPATH). The cluster block runs against a
real `ray start --head` on 127.0.0.1 with Ray's defaults (token authentication on, since the
earlier blocks' embedded Ray left a token in that HOME, as on a user's machine).

What cannot exist here is replaced by a local stand-in, never skipped silently:
- dataset folders (/data/...): Jester-layout frame folders made from demo-data videos, named as
  in a subset of the real Jester annotation files ($STPIPE_ANNOTATIONS, else written here);
- s3://bucket: a moto S3 server on loopback (endpoint and credentials through the documented
  AWS_ENDPOINT_URL_S3 / AWS_* variables, or the documented --storage-options with its endpoint);
- other features to import (i3d_rgb/, ucf101.csv): small .npy files and a manifest;
- mobilenet_v2's ImageNet weights: in that HOME's torch cache, where `stpipe demo` copies them.
Every other change to a command is in `CHANGES` or `NOT_HERE` below, with its reason.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent

# Commands that cannot run here at all: (pattern, reason).
NOT_HERE = [
    (r"python3 -m venv", "creates a venv and installs stpipe (CI did exactly that to run this test), then "
                         "runs the 8-minute demo (timed in benchmarks/README.md) or this test suite itself"),
    (r"ssh HEAD_IP|RAY_AUTH_TOKEN=", "run on another machine, to give it the head node's token"),
    (r"^export RAY_AUTH_MODE", "run on another machine, to give it the head node's token"),
    (r'"anon": true', "reads a public bucket; the stand-in's bucket is private (moto answers 403 to anonymous reads)"),
    (r"^ray start --address", "a worker node: another machine (a second node on this one would share "
                              "its ports with the head)"),
]
# Changes to a command that runs: (pattern, replacement, reason).
CHANGES = [
    (r"\s*\[--[^\]]*\]", "", "[...] marks optional flags"),
    (r"--gpus-per-worker 1", "", "no GPU here"),
    (r" \.\.\.$", "", "`...` stands for the rest of the flags"),
    (r"--port 6379", "--port {ray_port}", "6379 may be taken by another Ray on this machine"),
    (r"HEAD_IP:6379", "127.0.0.1:{ray_port}", "the head runs here"),
    (r"(ray start --head.*)", r"\1 --block --node-ip-address 127.0.0.1 --ray-client-server-port {client_port} "
     "--include-dashboard=false",
     "held by the test so it stops exactly this cluster (`ray stop` would stop other users' Ray here); "
     "Ray's fixed client and dashboard ports may be taken by another Ray on this machine"),
    (r"/data/20bn-jester-v1|/data/jester", "{work}/20bn-jester-v1", "the dataset: a stand-in folder"),
    (r"https://minio\.example\.org:9000", "{s3}", "the S3 server: moto on loopback"),
    (r'"key": "\.\.\.", "secret": "\.\.\."', '"key": "testing", "secret": "testing"', "moto's credentials"),
    (r"AWS_ACCESS_KEY_ID=\.\.\.  AWS_SECRET_ACCESS_KEY=\.\.\.", "AWS_ACCESS_KEY_ID=testing  AWS_SECRET_ACCESS_KEY=testing",
     "moto's credentials"),
    (r"^(stpipe extract (?!.*--weights).*)$", r"\1 --weights IMAGENET1K_V1",
     "mobilenet_v2's default weights are IMAGENET1K_V2, whose file is not on this machine; V1's is ($STPIPE_ASSETS)"),
    (r"--heads all", "--heads mlp,trn_multiscale", "the grid of all 14 heads x 2 x 3 x 3 takes too long for CI"),
    (r"--seeds 0,1,2", "--seeds 0", "the same: one seed"),
    (r"(stpipe finetune .*)", r"\1 --epochs 1", "30 epochs of mobilenet_v2 on CPU take too long for CI"),
]


def doc_blocks(path: Path) -> list[tuple[int, list[str]]]:
    """Indented code blocks: (first line number, the block's lines without the indentation)."""
    blocks: list[tuple[int, list[str]]] = []
    lines = path.read_text().splitlines()
    current: list[str] = []
    start, indent, previous_blank = 0, 0, True
    for number, line in enumerate(lines, 1):
        stripped = line.lstrip(" ")
        depth = len(line) - len(stripped)
        if current and (not line.strip() or depth >= indent):
            current.append(line[indent:] if line.strip() else "")
            previous_blank = not line.strip()
            continue
        if current:
            blocks.append((start, current))
            current = []
        if line.strip() and previous_blank and depth >= 4 and not stripped.startswith(("-", "*", "|")):
            current, start, indent = [stripped], number, depth
        previous_blank = not line.strip()
    if current:
        blocks.append((start, current))
    return blocks


def commands(block: list[str]) -> list[str]:
    """The block's shell commands (continuations joined); output samples and plain text left out."""
    joined, out = "", []
    for line in block + [""]:
        if joined.endswith("\\"):
            joined = joined[:-1].rstrip() + " " + line.strip()
            continue
        if joined:
            out.append(joined)
        joined = line.strip()
    words = ("stpipe ", "ray ", "export ", "python3 ")
    return [re.sub(r"\s+#.*$", "", c) for c in out if c.startswith(words) and not c.startswith("stpipe:")]


def documented() -> list[tuple[str, str]]:
    return [(f"{path.name}:{start}", cmd) for path in DOCS for start, block in doc_blocks(path)
            for cmd in commands(block)]


def test_the_documents_have_commands():
    found = documented()
    assert len(found) >= 15, found
    assert any(c.startswith("ray start --head") for _, c in found) and any("finetune" in c for _, c in found)


# ---- stand-ins ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jester_standin(work: Path, demo: Path) -> None:
    """Jester's annotation files (a subset of the real ones when $STPIPE_ANNOTATIONS has them) and
    its frame-folder layout, filled with demo-data clips (one demo class per Jester class)."""
    import cv2

    real = Path(os.environ.get("STPIPE_ANNOTATIONS", "/nonexistent")) / "jester"
    labels = ["Swiping Left", "Swiping Right", "Thumb Up"]
    if (real / "jester-v1-labels.csv").is_file():
        shutil.copy(real / "jester-v1-labels.csv", work)
    else:
        (work / "jester-v1-labels.csv").write_text("\n".join(labels) + "\n")
    clips = {c: sorted((demo / "videos").glob(f"{c}_*.mp4")) for c in ("moving_left", "moving_right", "zoom_in")}
    number = 1000
    for split, per_class in (("train", 1), ("validation", 1)):  # small: four extractions run TV-L1 on it
        rows = []
        for label, (_, files) in zip(labels, clips.items()):
            for clip in files[:per_class] if split == "train" else files[-per_class:]:
                number += 1
                folder = work / "20bn-jester-v1" / str(number)
                folder.mkdir(parents=True)
                capture = cv2.VideoCapture(str(clip))
                frame_no = 0
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    frame_no += 1
                    cv2.imwrite(str(folder / f"{frame_no:05d}.jpg"), frame)
                rows.append(f"{number};{label}")
        (work / f"jester-v1-{split}.csv").write_text("\n".join(rows) + "\n")
        for folder in (work / "20bn-jester-v1").iterdir():  # also beside the manifest: commands without --root
            if not (work / folder.name).exists():
                (work / folder.name).symlink_to(folder)
    (work / "manifests").mkdir()


def import_standin(work: Path) -> None:
    """Per-video features of another extractor for `stpipe import` (ucf101.csv, i3d_rgb/, i3d_flow/)."""
    rows = ["video_id,path,label,split"]
    rng = np.random.default_rng(0)
    for folder in ("i3d_rgb", "i3d_flow"):
        (work / folder).mkdir()
    for i in range(6):
        vid = f"v_Class{i % 2}_g0{i}_c01"
        rows.append(f"{vid},{vid}.avi,Class{i % 2},{'train' if i < 4 else 'val'}")
        for folder in ("i3d_rgb", "i3d_flow"):
            np.save(work / folder / f"{vid}.npy", rng.standard_normal((5, 16)).astype(np.float32))
    (work / "ucf101.csv").write_text("\n".join(rows) + "\n")


# ---- the run ----------------------------------------------------------------------------------------


def test_every_documented_command_runs(tmp_path):
    pytest.importorskip("cv2")
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    weights = Path(os.environ.get("STPIPE_ASSETS", "/nonexistent")) / "weights" / "mobilenet_v2-b0353104.pth"
    if not weights.is_file():
        pytest.skip("the documents' backbone is mobilenet_v2 and its weights are not here (set STPIPE_ASSETS)")
    base = Path(tempfile.mkdtemp(prefix="stdoc", dir="/tmp"))  # short: Ray's socket paths live under TMPDIR
    home, tmp, work = base / "home", base / "tmp", base / "work"
    for folder in (home, tmp, work):
        folder.mkdir()
    (home / ".cache" / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (home / ".aws").mkdir()  # the documented `--storage-options '{"profile": "research"}'` reads this profile
    (home / ".aws" / "credentials").write_text("[research]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    shutil.copy(weights, home / ".cache" / "torch" / "hub" / "checkpoints")
    env = {"PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(tmp), "LANG": "C.UTF-8",
           "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run(["stpipe", "demo-data", "-o", str(base / "demo"), "--videos-per-class", "2", "--frames", "8"],
                   env=env, check=True, capture_output=True, timeout=300)
    jester_standin(work, base / "demo")
    import_standin(work)
    values = {"ray_port": str(free_port()), "client_port": str(free_port()), "work": str(work)}
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(free_port())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    values["s3"] = f"http://127.0.0.1:{moto.args[-1]}"
    s3_env = {"AWS_ENDPOINT_URL_S3": values["s3"], "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    background: list[subprocess.Popen] = [moto]
    ran, not_here = [], []
    try:
        _wait_for(lambda: _s3_bucket(values["s3"]), 60, "moto server")
        head = None
        block = None
        for where, documented_cmd in documented():
            if where != block:  # documents' blocks are separate examples: one that writes a store gets a clean bucket
                block = where
                if any(re.search(r"stpipe extract .*-o s3://", c) for w, c in documented() if w == where):
                    _empty_bucket(values["s3"])
            reason = next((why for pattern, why in NOT_HERE if re.search(pattern, documented_cmd)), None)
            if reason:
                not_here.append((where, documented_cmd, reason))
                continue
            cmd = documented_cmd
            for pattern, replacement, _ in CHANGES:
                cmd = re.sub(pattern, replacement.format(**values) if "{" in replacement else replacement, cmd)
            if "manifests/jester.csv" in cmd and not (work / "manifests" / "jester.csv").exists():
                shutil.copy(work / "jester.csv", work / "manifests")  # the user's manifests folder
            # s3:// commands find the stand-in server as a user's shell would (AWS_* variables)
            run_env = {**env, **(s3_env if "s3://" in cmd or cmd.startswith("export AWS") else {})}
            if cmd.startswith("ray start --head"):
                if head is not None:
                    _stop(head)
                head = subprocess.Popen(["bash", "-c", cmd], cwd=work, env=run_env, start_new_session=True,
                                        stdout=open(base / "ray-head.log", "ab"), stderr=subprocess.STDOUT)
                background.append(head)
                _wait_for(lambda: _listening(int(values["ray_port"])), 180, "ray start --head")
                ran.append((where, cmd))
                continue
            if cmd.startswith("export "):  # a variable for the commands after it (as in the user's shell)
                for name, value in re.findall(r"(\w+)=(\S+)", cmd):
                    env[name] = value
                ran.append((where, cmd))
                continue
            started = time.time()
            done = subprocess.run(["bash", "-c", cmd], cwd=work, env=run_env, capture_output=True, text=True,
                                  timeout=900)
            assert done.returncode == 0, (f"{where}: `{documented_cmd}`\nran as `{cmd}`\n"
                                          f"exit {done.returncode}: {done.stderr[-3000:]}")
            assert "Token authentication is enabled" not in done.stderr, f"{where}: Ray's warning in `{cmd}`"
            ran.append((where, f"{cmd}  [{time.time() - started:.0f} s]"))
    finally:
        for proc in background:
            _stop(proc)
        shutil.rmtree(base, ignore_errors=True)
    assert any(c.startswith("stpipe extract") and "--ray-address auto" in c for _, c in ran)
    assert any("finetune" in c for _, c in ran)
    print("\n".join([f"ran {w}: {c}" for w, c in ran] + [f"not here {w}: {c} ({r})" for w, c, r in not_here]))


def _empty_bucket(endpoint: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint, skip_instance_cache=True)
    for path in fs.ls("bucket"):
        fs.rm(path, recursive=True)


def _s3_bucket(endpoint: str) -> bool:
    import s3fs

    try:
        s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint, skip_instance_cache=True).mkdir("bucket")
        return True
    except Exception:  # noqa: BLE001 - not up yet (connection refused, botocore's own errors)
        return False


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _wait_for(check, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} did not come up in {seconds} s")


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process this test started, with its whole process group (a Ray head's daemons too)."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            if sig == signal.SIGTERM:
                continue  # the group may outlive its leader: kill what is left
        except subprocess.TimeoutExpired:
            continue
