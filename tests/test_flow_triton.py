"""The Triton TV-L1 solver (pipeline/flow/triton_tvl1.py) on the CPU, through Triton's interpreter.

The solver is built for CUDA; TRITON_INTERPRET=1 runs the same kernels on CPU tensors (slowly), so
its math, per-pair stopping and scheduling are checked here against the generic solver on small
images. tests/test_flow_cuda.py repeats the comparison on a GPU at real sizes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.flow import build_flow, median_codegen, triton_tvl1

ROOT = Path(__file__).resolve().parent.parent
HAVE_TRITON = importlib.util.find_spec("triton") is not None

# Runs in a fresh interpreter: TRITON_INTERPRET must be set before the kernels are defined.
COMPARE = r"""
import json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from test_flow import texture
from pipeline.flow import build_flow
h, w = 28, 36
shifted = lambda s, seed: np.stack([texture(h, w, shift=s, seed=seed) for _ in range(1)])[0]
# three pairs: a translation, a different texture moving the other way, and a still pair (stops at once)
i0 = np.stack([texture(h, w, seed=1), texture(h, w, seed=2), texture(h, w, seed=3)])
i1 = np.stack([shifted((1.6, -0.7), 1), shifted((-0.9, 1.2), 2), texture(h, w, seed=3)])
out = {}
for border, median in (("replicate", 5), ("zeros", 3)):
    params = dict(scales=2, warps=2, outer_iterations=2, inner_iterations=4, median_filtering=median, border=border)
    # check_every=1: the generic solver then counts exactly the steps each pair ran (with larger
    # chunks it also counts the steps a stopped pair sits frozen until its chunk ends)
    ref = build_flow("tvl1", device="cpu", compile=False, engine="torch", check_every=1, **params)
    tri = build_flow("tvl1", device="cpu", engine="triton", **params)
    a, b = ref.pairs(i0, i1), tri.pairs(i0, i1)
    steps_triton = tri.pixel_iterations
    again = tri.pairs(i0, i1)
    alone = tri.pairs(i0[:1], i1[:1])
    out[border] = {"mean_diff": float((a - b).abs().mean()), "max_diff": float((a - b).abs().max()),
                   "steps_ref": ref.pixel_iterations, "steps_triton": steps_triton,
                   "repeat_equal": bool(torch.equal(b, again)), "alone_diff": float((alone[0] - b[0]).abs().max()),
                   "mean_flow_pair0": [float(a[0, 0].mean()), float(a[0, 1].mean())],
                   "still_pair_max": float(b[2].abs().max())}
# the warp and median kernels alone, on random data: the same numbers as kernels.py's
from pipeline.flow import kernels, triton_tvl1 as tt
torch.manual_seed(0)
n, h, w = 2, 20, 27
img, u = torch.rand(n, 4, h, w) * 255, torch.randn(n, 2, h, w) * 3
for replicate in (True, False):
    got = torch.zeros(n, 3, h, w)
    tt._warp_kernel[(n, 1)](img, u, got, h, w, h * w, REPLICATE=replicate, BLOCK=1024)
    out[f"warp_{replicate}"] = float((got - kernels.warp_data(img, u, replicate)).abs().max())
for size in (3, 5):
    got = torch.zeros_like(u)
    tt._median_kernel[(n, 1)](u, got, torch.full((n, 1), float("inf")), 1, 0.0, h, w, h * w, SIZE=size,
                              BLOCK=1024, TILES_P2=1)
    out[f"median_{size}"] = float((got - kernels.median_filter(u, size)).abs().max())
print(json.dumps(out))
"""


@pytest.mark.skipif(not HAVE_TRITON, reason="Triton is not installed")
def test_triton_solver_equals_generic_solver_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-c", COMPARE, str(ROOT / "tests")], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for kernel in ("warp_True", "warp_False", "median_3", "median_5"):
        assert results.pop(kernel) < 1e-3, kernel  # values up to ~2600: last-bit differences at most
    for border, r in results.items():
        # same math, same stopping iteration per pair; only float summation order differs
        assert r["mean_diff"] < 1e-3, (border, r)
        assert r["steps_triton"] == r["steps_ref"] > 0, (border, r)  # each pair stopped at the same step
        assert r["repeat_equal"], (border, r)  # deterministic: tile sums are added in a fixed order
        assert r["alone_diff"] < 1e-5, (border, r)  # a pair's result does not depend on its batch
        assert r["still_pair_max"] < 1e-4, (border, r)
        assert r["mean_flow_pair0"][0] > 0.8 and r["mean_flow_pair0"][1] < -0.2, (border, r)


def test_generated_median_network_is_current():
    assert median_codegen.TARGET.read_text() == median_codegen.source(), (
        "pipeline/flow/triton_median.py is stale: run python -m pipeline.flow.median_codegen")


def test_engine_choice(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("STPIPE_FLOW_ENGINE", raising=False)
    assert build_flow("tvl1", device="cpu").engine == "torch"  # auto: the generic solver off CUDA
    if HAVE_TRITON:
        with pytest.raises(ConfigError, match="needs a CUDA device"):
            build_flow("tvl1", device="cpu", engine="triton")
    with pytest.raises(ConfigError, match="auto, torch or triton"):
        build_flow("tvl1", device="cpu", engine="cudnn")
    monkeypatch.setenv("STPIPE_FLOW_ENGINE", "torch")
    assert build_flow("tvl1", device="cpu").engine == "torch"
    # presets pass the engine through, and with_params keeps it
    assert build_flow("tvl1-fast", device="cpu", engine="torch").with_params(warps=1).engine == "torch"


def test_triton_solver_reports_what_it_cannot_do():
    from pipeline.flow import TVL1Params

    if not HAVE_TRITON:
        assert triton_tvl1.available(torch.device("cuda")) == "Triton is not installed"
        return
    assert "median_filtering=7" in triton_tvl1.available(torch.device("cuda"), TVL1Params(median_filtering=7))
    assert triton_tvl1.available(torch.device("cuda"), TVL1Params()) is None


@pytest.mark.skipif(not HAVE_TRITON, reason="Triton is not installed")
def test_kernels_compile_for_hopper_without_a_gpu(tmp_path, monkeypatch):
    """The interpreter does not check what only the compiler checks (constexpr use, types): compile
    every kernel to PTX for sm_90 (the H200 that measured them) with Triton's bundled toolchain."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    f32, i32, const = "*fp32", "i32", "constexpr"
    level = {"tiles": i32, "stop": "fp32"}
    size = {"height": i32, "width": i32, "hw": i32}
    kernels = {
        triton_tvl1._warp_kernel: ({"img_ptr": f32, "u_ptr": f32, "out_ptr": f32, **size, "REPLICATE": const,
                                    "BLOCK": const}, {"REPLICATE": True, "BLOCK": 1024}),
        triton_tvl1._primal_kernel: ({"u_ptr": f32, "p_ptr": f32, "data_ptr": f32, "prev_ptr": f32, "next_ptr": f32,
                                      "steps_ptr": "*i32", **level, "l_t": "fp32", "theta": "fp32", "width": i32,
                                      "hw": i32, "BLOCK": const, "TILES_P2": const}, {"BLOCK": 1024, "TILES_P2": 128}),
        triton_tvl1._dual_kernel: ({"u_ptr": f32, "p_ptr": f32, "prev_ptr": f32, **level, "taut": "fp32", **size,
                                    "BLOCK": const, "TILES_P2": const}, {"BLOCK": 1024, "TILES_P2": 128}),
        triton_tvl1._median_kernel: ({"u_ptr": f32, "out_ptr": f32, "prev_ptr": f32, **level, **size, "SIZE": const,
                                      "BLOCK": const, "TILES_P2": const}, {"SIZE": 5, "BLOCK": 512, "TILES_P2": 128}),
    }
    for fn, (signature, constexprs) in kernels.items():
        compiled = compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                           target=GPUTarget("cuda", 90, 32))
        assert ".entry" in compiled.asm["ptx"], fn.__name__
