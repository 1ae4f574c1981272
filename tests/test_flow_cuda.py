"""TV-L1 on CUDA (`pytest -m cuda`; skipped without a GPU, so CI never runs it).

The default CUDA engine is the Triton solver with CUDA graphs (pipeline/flow/triton_tvl1.py). Its
results must equal the CPU solver's within float summation order: known translations of smooth
textures and the shared clips' real frames, across batch sizes, odd sizes and graph replay.
Tolerance: mean |CUDA - CPU| below 0.02 px (TV-L1 amplifies 1e-7 rounding differences near motion
boundaries, so the maximum is not bounded tightly; see tests/test_flow_triton.py for the exact
same-iteration check on small images).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_flow import texture

from pipeline.flow import build_flow

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

SHIFTS = [(1.5, -0.5), (-2.25, 1.0), (3.0, 2.5), (0.0, 0.0), (-4.5, -3.0), (0.75, 0.25)]


def pairs(h: int, w: int):
    i0 = np.stack([texture(h, w, seed=s) for s in range(len(SHIFTS))])
    i1 = np.stack([texture(h, w, shift=sh, seed=s) for s, sh in enumerate(SHIFTS)])
    return i0, i1


def mean_flow(flow: torch.Tensor, margin: int = 8) -> np.ndarray:
    return flow[:, :, margin:-margin, margin:-margin].mean((2, 3)).cpu().numpy()


def test_cuda_engine_is_triton_and_matches_cpu():
    i0, i1 = pairs(96, 128)
    cuda = build_flow("tvl1", device="cuda")
    assert cuda.engine == "triton"
    cpu = build_flow("tvl1", device="cpu", compile=False, check_every=1)  # counts steps exactly
    a, b = cpu.pairs(i0, i1), cuda.pairs(i0, i1).cpu()
    assert (a - b).abs().mean() < 0.02
    truth = np.array(SHIFTS, dtype=np.float32)
    err_cpu = np.abs(mean_flow(a) - truth).max()
    err_cuda = np.abs(mean_flow(b) - truth).max()
    assert err_cuda < 0.1 and abs(err_cuda - err_cpu) < 0.02
    # about the same pixel-steps (measured 3.3% apart on an H200: stopping steps move with rounding)
    assert abs(cuda.pixel_iterations - cpu.pixel_iterations) <= 0.05 * cpu.pixel_iterations


def test_graph_replay_equals_plain_launches_and_is_deterministic():
    i0, i1 = pairs(64, 80)
    graphs = build_flow("tvl1", device="cuda", cuda_graphs=True)
    plain = build_flow("tvl1", device="cuda", cuda_graphs=False)
    first = graphs.pairs(i0, i1)  # eager launches (compiles), second call captures, third replays
    second, third = graphs.pairs(i0, i1), graphs.pairs(i0, i1)
    assert graphs._triton.graph_error is None
    assert any(level.graph is not None for level in graphs._triton._levels.values())
    reference = plain.pairs(i0, i1)
    assert torch.equal(first, reference) and torch.equal(second, reference) and torch.equal(third, reference)


def test_batches_odd_sizes_and_still_pairs_are_independent():
    i0, i1 = pairs(37, 53)
    method = build_flow("tvl1", device="cuda", max_batch=4)
    batched = method.pairs(i0, i1)  # 6 pairs: batches of 4 and 2
    alone = torch.cat([method.pairs(i0[k:k + 1], i1[k:k + 1]) for k in range(len(i0))])
    assert batched.shape == (6, 2, 37, 53)
    assert (batched - alone).abs().max() < 1e-5
    assert batched[3].abs().max() < 1e-4  # the still pair stops at once and stays zero


def test_generic_engine_still_runs_on_cuda():
    i0, i1 = pairs(48, 64)
    generic = build_flow("tvl1", device="cuda", engine="torch", compile=False, scales=3)
    cpu = build_flow("tvl1", device="cpu", compile=False, scales=3)
    assert (generic.pairs(i0, i1).cpu() - cpu.pairs(i0, i1)).abs().mean() < 0.02


def test_real_frames_cuda_vs_cpu(assets_dir):
    pytest.importorskip("av")
    from pipeline.video import FrameSelection, read_frames

    frames = read_frames(assets_dir / "videos" / "tree.avi", select=FrameSelection(max_frames=9))
    cuda = build_flow("tvl1", device="cuda")(frames[None])
    cpu = build_flow("tvl1", device="cpu", compile=False)(frames[None])
    assert cuda.shape == cpu.shape
    assert (cuda.cpu() - cpu).abs().mean() < 0.02
