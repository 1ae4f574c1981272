"""The TV-L1 compile-or-eager decision (pipeline/flow/compile_policy.py, extraction/flow_plan.py).

No real compile here: the decision, its message, the job estimate and what extract does with it.
"""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.extraction.flow_plan import choose_flow_compile, estimate_flow_work, flow_streams
from pipeline.flow import build_flow
from pipeline.flow.compile_policy import CompileCosts, break_even_pairs, cache_marker, choose
from pipeline.progress import Note

COSTS = CompileCosts(cold_seconds=100.0, warm_seconds=10.0, saved_ns_per_pixel=4000.0)
PIXELS = 64 * 64  # saves 16.4 ms a pair: cold break-even 6,104 pairs on one stream
AUTO = {}


def test_break_even_is_compile_cost_over_saving_per_stream():
    assert break_even_pairs(PIXELS, costs=COSTS) == int(100.0 / (4000e-9 * PIXELS)) + 1 == 6104
    assert break_even_pairs(PIXELS, streams=2, costs=COSTS) == int(200.0 / (4000e-9 * PIXELS)) + 1
    assert break_even_pairs(PIXELS, warm=True, costs=COSTS) == int(10.0 / (4000e-9 * PIXELS)) + 1
    assert break_even_pairs(4 * PIXELS, costs=COSTS) < break_even_pairs(PIXELS, costs=COSTS)  # bigger frames pay sooner


def test_small_job_runs_eager_and_large_one_compiles_with_reason():
    small = choose(6_000, PIXELS, env=AUTO, costs=COSTS)
    large = choose(6_200, PIXELS, env=AUTO, costs=COSTS)
    assert (small.compile, small.mode) == (False, "eager")
    assert (large.compile, large.mode) == (True, "compiled")
    assert "6,000 pairs of 4,096 px < 6,104" in small.reason and "STPIPE_FLOW_COMPILE=1" in small.reason
    assert "6,200 pairs of 4,096 px >= 6,104" in large.reason and "STPIPE_FLOW_COMPILE=0" in large.reason
    assert small.describe().startswith("TV-L1 eager: ") and "cold inductor cache" in small.reason


def test_a_warm_cache_and_more_streams_move_the_threshold():
    assert choose(1_000, PIXELS, warm=True, env=AUTO, costs=COSTS).compile  # 611 pairs pay a 10 s load
    assert "warm inductor cache" in choose(1_000, PIXELS, warm=True, env=AUTO, costs=COSTS).reason
    assert not choose(1_000, PIXELS, warm=True, streams=2, env=AUTO, costs=COSTS).compile  # 1,221 with 2 streams


@pytest.mark.parametrize("value, compiles", [("1", True), ("0", False)])
def test_env_overrides_the_size_rule(value, compiles):
    choice = choose(0 if compiles else 10**9, PIXELS, env={"STPIPE_FLOW_COMPILE": value}, costs=COSTS)
    assert choice.compile is compiles and choice.reason == f"STPIPE_FLOW_COMPILE={value}"


def test_bad_env_value_is_a_one_line_error():
    with pytest.raises(ConfigError, match="STPIPE_FLOW_COMPILE='yes'.*0 .*1 .*auto"):
        choose(10, PIXELS, env={"STPIPE_FLOW_COMPILE": "yes"})


def test_other_devices_always_compile():
    choice = choose(1, PIXELS, device_type="cuda", env=AUTO, costs=COSTS)
    assert choice.compile and "cuda" in choice.reason


def test_marker_key_follows_what_specialises_the_graphs(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    marker = cache_marker("cpu", 5, "replicate")
    assert marker.parent.parent == tmp_path and marker == cache_marker("cpu", 5, "replicate")
    assert len({marker, cache_marker("cuda", 5, "replicate"), cache_marker("cpu", 3, "replicate"),
                cache_marker("cpu", 5, "zeros"), cache_marker("cpu", 5, "replicate", threads=2)}) == 5


# ---- the run's estimate and extract's use of it ------------------------------------------------


def _config(demo, **kw):
    from pipeline.extraction import ExtractConfig

    base = dict(manifest=str(demo / "manifest.csv"), output="memory://x", backbone="tiny", weights="none",
                executor="local", flow=True, flow_method="tvl1-fastest", flow_short_side=16)
    return ExtractConfig(**{**base, **kw})


def _jobs(demo):
    from manifests.table import read_manifest
    from pipeline.extraction import VideoJob

    manifest = read_manifest(str(demo / "manifest.csv"))
    return [VideoJob(e.video_id, str(manifest.resolve(e)), e.label, 0, e.split) for e in manifest.entries]


def test_estimate_probes_a_few_videos_and_scales_to_the_run(demo):
    jobs = _jobs(demo)  # 20 videos of 6 frames, 32x32
    work = estimate_flow_work(_config(demo), jobs, sample=4)
    assert (work.pairs, work.pixels, work.probed) == (20 * 5, 16 * 16, 4)
    assert estimate_flow_work(_config(demo, max_frames=3), jobs).pairs == 20 * 2
    assert estimate_flow_work(_config(demo), []).pairs == 0


def test_estimate_skips_unreadable_videos(demo, tmp_path):
    from pipeline.extraction import VideoJob

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    jobs = [VideoJob("bad", str(bad), "x", 0, "train"), *_jobs(demo)[:1]]
    work = estimate_flow_work(_config(demo), jobs)
    assert (work.pairs, work.probed) == (2 * 5, 1)


def test_config_setting_and_env_precedence(demo, monkeypatch):
    method = build_flow("tvl1-fastest", device="cpu", compile=False)
    jobs = _jobs(demo)
    monkeypatch.delenv("STPIPE_FLOW_COMPILE", raising=False)
    assert not choose_flow_compile(_config(demo), jobs, method).compile  # 100 tiny pairs: eager
    on = choose_flow_compile(_config(demo, flow_compile="on"), jobs, method)
    assert on.compile and on.reason == "flow_compile=on"
    monkeypatch.setenv("STPIPE_FLOW_COMPILE", "0")
    assert choose_flow_compile(_config(demo, flow_compile="on"), jobs, method).reason == "STPIPE_FLOW_COMPILE=0"
    with pytest.raises(ConfigError, match="flow_compile must be auto, on or off"):
        _config(demo, flow_compile="yes")


def test_streams_are_decode_threads_of_all_workers_at_most_one_per_core(demo, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert flow_streams(_config(demo, executor="ray", workers=2, decode_threads=2)) == 4
    assert flow_streams(_config(demo, executor="local", workers=2, decode_threads=2)) == 8  # a decoder process a core
    assert flow_streams(_config(demo, executor="ray", workers=2, cpus_per_task=3)) == 6
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert flow_streams(_config(demo, executor="ray", workers=2, decode_threads=2)) == 2


def test_small_extract_runs_eager_and_says_so(demo, tmp_path, monkeypatch):
    """A run too small to pay for the compile never compiles: the plan says eager and why, and the
    decode threads' flow methods are built eager (torch.compile would raise here)."""
    import torch

    from stages import extract

    monkeypatch.delenv("STPIPE_FLOW_COMPILE", raising=False)
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("torch.compile called for a small run"))
    plans, notes = [], []
    cfg = _config(demo, output=str(tmp_path / "s.zarr"), batch_size=8, flow_batch=3)
    result = extract.run(cfg, on_plan=plans.append,
                         progress=lambda e: isinstance(e, Note) and notes.append(e.message))
    assert result.done == 20 and not result.failed
    assert plans[0].flow_compile.mode == "eager" and "100 pairs of 256 px <" in plans[0].flow_compile.reason
    decisions = [n for n in notes if n.startswith("TV-L1")]
    assert decisions == [plans[0].flow_compile.describe()]  # the decision, and no warm-up when eager


def test_cli_prints_the_decision_and_honours_the_flag(stpipe, tmp_path, monkeypatch):
    from tests.extract_fixtures import extract_args, small_demo

    monkeypatch.delenv("STPIPE_FLOW_COMPILE", raising=False)
    manifest = small_demo(tmp_path / "demo")
    flow = ["--flow", "--flow-method", "tvl1-fastest", "--flow-short-side", "16"]
    code, _, err = stpipe([*extract_args(manifest, str(tmp_path / "a.zarr")), *flow])
    assert code == 0 and "TV-L1 eager: ~20 pairs of 256 px <" in err and "flow eager" in err
    code, _, err = stpipe([*extract_args(manifest, str(tmp_path / "b.zarr")), *flow, "--flow-compile", "off"])
    assert code == 0 and "TV-L1 eager: flow_compile=off" in err


@pytest.mark.slow
def test_warm_up_compiles_every_graph_a_run_needs(tmp_path):
    """A real cold compile (minutes): after `warm_up`, runs of other frame and batch sizes compile
    no further graph, and the cache is marked warm. In a subprocess, with empty cache folders."""
    import json
    import os
    import subprocess
    import sys

    script = """
import json, torch
from torch._dynamo.utils import counters
from pipeline.flow import build_flow
from pipeline.flow.compile_policy import cache_is_warm, warm_up
method = build_flow("tvl1-fast", device="cpu")
warm_up(method)
graphs = counters["stats"]["unique_graphs"]
torch.set_num_threads(1)  # as extract's decode threads run TV-L1 (a thread count is part of the graphs' guards)
frames = torch.randint(0, 256, (20, 48, 64), dtype=torch.uint8)
method.pairs(frames[:17], frames[1:18])
method.pairs(frames[:1], frames[1:2])
big = torch.randint(0, 256, (3, 160, 120), dtype=torch.uint8)
method.pairs(big[:2], big[1:])
print(json.dumps([graphs, counters["stats"]["unique_graphs"], cache_is_warm(method)]))
"""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "TRITON_CACHE_DIR": str(tmp_path / "t"),
           "STPIPE_FLOW_COMPILE": "auto"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    graphs, after, warm = json.loads(out.stdout.strip().splitlines()[-1])
    assert graphs == after and warm


def test_gpu_workers_compile_whatever_the_cpu_rule_says(demo, monkeypatch):
    from pipeline.extraction import flow_plan

    method = build_flow("tvl1-fastest", device="cpu", compile=False)
    monkeypatch.delenv("STPIPE_FLOW_COMPILE", raising=False)
    monkeypatch.setattr(flow_plan, "torch_has_cuda", lambda: True)
    assert flow_plan.worker_device_type(_config(demo, executor="ray"), method) == "cuda"  # embedded Ray, CUDA here
    assert flow_plan.worker_device_type(_config(demo, executor="ray", ray_address="auto"), method) == "cpu"
    assert flow_plan.worker_device_type(_config(demo, executor="ray", ray_address="auto", gpus_per_worker=1),
                                        method) == "cuda"
    choice = choose_flow_compile(_config(demo, executor="ray"), _jobs(demo), method)
    assert choice.compile and "cuda" in choice.reason


def test_warm_up_compiles_for_one_thread_like_the_flow_streams_and_marks_the_cache(tmp_path, monkeypatch):
    """Inductor bakes torch's thread count into CPU kernels (and its cache key): the warm-up must
    compile what a decode thread (1 thread) runs, whatever the calling thread's count."""
    import types

    import torch

    from pipeline.flow.compile_policy import cache_is_warm, warm_up

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    seen = []
    method = types.SimpleNamespace(compile=True, device=torch.device("cpu"), check_every=5,
                                   config=types.SimpleNamespace(border="replicate"),
                                   pairs=lambda a, b: seen.append((torch.get_num_threads(), tuple(a.shape))))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert not cache_is_warm(method)
        warm_up(method)
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
    assert seen == [(1, (3, 64, 80)), (1, (1, 64, 80))] and cache_is_warm(method)
    with pytest.raises(ValueError, match="compile=True"):
        warm_up(types.SimpleNamespace(compile=False))
