"""TV-L1 flow: known motions, agreement with OpenCV, batching, quantisation, pictures, bad input.

Runs eager (STPIPE_FLOW_COMPILE unset does not matter: methods are built with compile=False) on
small images; one test checks the compiled kernel against eager on a tiny batch.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import warnings

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError, FlowError, MissingDependencyError, RegistryError
from pipeline.flow import (
    FLOWS,
    PRESETS,
    TVL1Params,
    build_flow,
    dequantize_flow,
    flow_to_color,
    quantize_flow,
)
from pipeline.flow.kernels import Compiled, median_filter, primal_dual_compiled, primal_dual_steps, warp_data
from pipeline.flow.tvl1 import pyramid_sizes

HAVE_CV2 = importlib.util.find_spec("cv2") is not None


def texture(h: int, w: int, shift=(0.0, 0.0), seed: int = 0) -> np.ndarray:
    """Smooth analytic texture sampled at (x - dx, y - dy): exact sub-pixel translations."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    xs, ys = xs - shift[0], ys - shift[1]
    img = np.full((h, w), 128.0)
    for _ in range(12):
        period = rng.uniform(6, 20)
        angle = rng.uniform(0, np.pi)
        k = 2 * np.pi / period
        img += rng.uniform(6, 14) * np.sin(k * (np.cos(angle) * xs + np.sin(angle) * ys) + rng.uniform(0, 2 * np.pi))
    return np.clip(img, 0, 255).astype(np.float32) / 255.0


def tvl1(**overrides):
    return build_flow("tvl1", device="cpu", compile=False, **overrides)


@pytest.fixture(scope="module")
def method():
    return tvl1()


def test_identical_frames_give_zero_flow(method):
    img = texture(40, 56)
    flow = method.pairs(img[None], img[None])
    assert flow.shape == (1, 2, 40, 56) and flow.dtype == torch.float32
    assert flow.abs().max() < 1e-4


def test_subpixel_translation_sign_and_magnitude(method):
    # I1(x) = I0(x - d): every pixel moves by +d from t to t+1
    shifts = [(0.6, -0.3), (-1.4, 0.8)]
    i0 = np.stack([texture(48, 64, seed=1)] * 2)
    i1 = np.stack([texture(48, 64, shift=d, seed=1) for d in shifts])
    flow = method.pairs(i0, i1)
    for f, shift in zip(flow, shifts):
        inner = f[:, 8:-8, 8:-8].reshape(2, -1).median(dim=1).values
        assert inner.tolist() == pytest.approx(list(shift), abs=0.05)


def test_batch_equals_one_by_one():
    # different motions converge after different numbers of iterations: exercises batch shrinking
    options = dict(scales=2, warps=2, outer_iterations=3)
    method = tvl1(**options)
    prev = np.stack([texture(40, 48, seed=s) for s in range(3)])
    nxt = np.stack([texture(40, 48, shift=d, seed=s) for s, d in enumerate([(0.5, 0), (2.0, -1.0), (0, 0)])])
    batched = method.pairs(prev, nxt)
    single = torch.cat([method.pairs(prev[i : i + 1], nxt[i : i + 1]) for i in range(3)])
    assert torch.equal(batched, single)
    small_batches = tvl1(**options, max_batch=2).pairs(prev, nxt)
    assert torch.equal(batched, small_batches)


def test_clip_api_matches_pairs_and_accepts_rgb_uint8():
    method = tvl1(scales=2, warps=2)
    grey = np.stack([texture(32, 40, shift=(0.4 * t, 0), seed=2) for t in range(3)])
    rgb = np.repeat((grey * 255).round().astype(np.uint8)[..., None], 3, axis=-1)
    clip = method(rgb[None])
    assert clip.shape == (1, 2, 2, 32, 40)
    pairs = method.pairs(rgb[:-1], rgb[1:])
    assert torch.allclose(clip[0], pairs, atol=1e-5)
    assert torch.allclose(method.pairs(torch.from_numpy(rgb[:1]), torch.from_numpy(rgb[1:2])), pairs[:1], atol=1e-5)


def test_constant_images_give_zero_flow_not_nan(method):
    a = np.full((1, 24, 30), 0.3, np.float32)
    b = np.full((1, 24, 30), 0.7, np.float32)
    for x, y in ((a, a), (a, b)):
        flow = method.pairs(x, y)
        assert torch.isfinite(flow).all() and flow.abs().max() < 1e-5  # float noise of the pyramid only


@pytest.mark.parametrize(
    "prev, nxt, message",
    [
        (np.zeros((2, 20, 24), np.float32), np.zeros((2, 20, 26), np.float32), "differ in shape"),
        (np.zeros((0, 20, 24), np.float32), np.zeros((0, 20, 24), np.float32), "empty batch"),
        (np.full((1, 20, 24), np.nan, np.float32), np.zeros((1, 20, 24), np.float32), "NaN"),
        (np.zeros((20, 24), np.float32), np.zeros((20, 24), np.float32), "expected shape"),
        (np.zeros((1, 20, 24), np.int32), np.zeros((1, 20, 24), np.int32), "uint8 or float"),
        (np.zeros((1, 2, 24), np.float32), np.zeros((1, 2, 24), np.float32), "at least 3x3"),
    ],
)
def test_bad_pairs_raise_flow_error(method, prev, nxt, message):
    with pytest.raises(FlowError, match=message):
        method.pairs(prev, nxt)


def test_bad_clips_raise_flow_error(method):
    with pytest.raises(FlowError, match="at least 2 frames"):
        method(np.zeros((1, 1, 20, 24, 3), np.uint8))
    with pytest.raises(FlowError, match="empty batch"):
        method(np.zeros((0, 3, 20, 24), np.uint8))


def test_registry_presets_and_params():
    assert {"tvl1", "tvl1-opencv", *PRESETS} <= set(FLOWS.names())
    assert build_flow("tvl1", device="cpu").params == {**TVL1Params().__dict__}
    fast = build_flow("tvl1-fast", device="cpu", compile=False, theta=0.25)
    assert fast.name == "tvl1-fast" and fast.params["theta"] == 0.25
    assert all(fast.params[k] == v for k, v in PRESETS["tvl1-fast"].items())
    with pytest.raises(RegistryError, match="known: "):
        build_flow("farneback")
    with pytest.raises(ConfigError, match="unknown key 'lambda'"):
        build_flow("tvl1", **{"lambda": 0.1})
    with pytest.raises(ConfigError, match="scale_step"):
        build_flow("tvl1", scale_step=1.5)
    with pytest.raises(ConfigError, match="border"):
        build_flow("tvl1", border="reflect")


@pytest.mark.parametrize("border", ["replicate", "zeros"])
def test_both_borders_keep_translations(border):
    method = tvl1(border=border, scales=3, warps=3)
    i0, i1 = texture(40, 48, seed=4), texture(40, 48, shift=(1.0, 0.5), seed=4)
    flow = method.pairs(i0[None], i1[None])[0]
    assert flow[:, 6:-6, 6:-6].reshape(2, -1).median(dim=1).values.tolist() == pytest.approx([1.0, 0.5], abs=0.05)


@pytest.mark.skipif(not HAVE_CV2, reason="opencv not installed")
def test_defaults_equal_opencv_defaults_but_the_pyramid_depth():
    import cv2

    cv = cv2.optflow.DualTVL1OpticalFlow_create()
    ours = TVL1Params()
    pairs = {
        "tau": cv.getTau(), "lambda_": cv.getLambda(), "theta": cv.getTheta(),
        "warps": cv.getWarpingsNumber(), "epsilon": cv.getEpsilon(), "inner_iterations": cv.getInnerIterations(),
        "outer_iterations": cv.getOuterIterations(), "scale_step": cv.getScaleStep(),
        "median_filtering": cv.getMedianFiltering(),
    }
    assert {k: getattr(ours, k) for k in pairs} == pytest.approx(pairs)
    # on purpose: every level down to 16 px (IPOL) instead of OpenCV's 5 (large motions, see tvl1.py)
    assert ours.scales == 0 and cv.getScalesNumber() == 5


def test_pyramid_goes_down_to_min_size_unless_capped():
    full = pyramid_sizes(256, 340, TVL1Params())
    assert full[0] == (256, 340) and len(full) == 13 and full[-1] == (18, 24)
    assert pyramid_sizes(256, 340, TVL1Params(scales=5)) == full[:5] and full[4] == (105, 139)
    assert pyramid_sizes(20, 400, TVL1Params()) == [(20, 400), (16, 320)]
    with pytest.raises(ConfigError, match="scales"):
        TVL1Params(scales=-1)


@pytest.mark.skipif(not HAVE_CV2, reason="opencv not installed")
def test_opencv_method_refuses_what_opencv_cannot_do():
    with pytest.raises(ConfigError, match="border"):
        build_flow("tvl1-opencv", border="replicate")
    with pytest.raises(ConfigError, match="antialias"):
        build_flow("tvl1-opencv", antialias=True)
    assert build_flow("tvl1-opencv", device="cpu").params["border"] == "zeros"


def test_opencv_method_names_the_extra_when_cv2_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(MissingDependencyError, match="opencv"):
        build_flow("tvl1-opencv", device="cpu")


@pytest.mark.skipif(not HAVE_CV2, reason="opencv not installed")
def test_agrees_with_opencv_on_real_frames(assets_dir):
    from pipeline.video import FrameSelection, read_frames

    frames = read_frames(assets_dir / "videos" / "carphone_pristine.mp4", start=1.0,
                         select=FrameSelection(max_frames=2))
    grey = np.stack([np.dot(f.astype(np.float32), [0.299, 0.587, 0.114]) / 255 for f in frames])
    ours = tvl1(antialias=False).pairs(grey[:1], grey[1:])[0]  # OpenCV's pyramid, our warp border
    ref = build_flow("tvl1-opencv", device="cpu").pairs(grey[:1], grey[1:])[0]
    diff = (ours - ref).norm(dim=0)
    magnitude = ref.norm(dim=0)
    assert magnitude.mean() > 0.3  # the pair really moves
    assert diff.mean() < 0.05 and torch.quantile(diff.flatten(), 0.95) < 0.2


@pytest.mark.skipif(not HAVE_CV2, reason="opencv not installed")
def test_with_opencvs_pyramid_sampling_the_solver_is_opencvs(assets_dir, monkeypatch):
    """The per-level solver (warps, median, primal-dual step, stopping rule) is OpenCV's: given OpenCV's
    pyramid sampling (cv::resize at exactly scale_step, flow times 1/scale_step; ours resamples by the
    levels' size ratio) and its zeros border, a 10 px motion at 96x128 through the full pyramid gives
    OpenCV's flow. Large motions are bistable (an object is found or lost), so the sampling alone can
    flip a pair: benchmarks/README.md, TV-L1 accuracy."""
    import cv2

    from pipeline.flow import tvl1 as tvl1_module
    from pipeline.video import FrameSelection, read_frames

    def resize(x: torch.Tensor, size=None) -> np.ndarray:
        dsize = None if size is None else (size[1], size[0])
        return cv2.resize(x.numpy(), dsize, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)

    monkeypatch.setattr(tvl1_module, "_downscale", lambda img, size, _: torch.from_numpy(np.stack([resize(x) for x in img])))
    monkeypatch.setattr(tvl1_module, "_upsample_flow",
                        lambda u, size: torch.from_numpy(np.array([[resize(c, size) for c in x] for x in u])) / 0.8)
    frame = read_frames(assets_dir / "videos" / "vtest.avi", start=1.0, select=FrameSelection(max_frames=1))[0]
    grey = torch.from_numpy(np.dot(frame.astype(np.float32), [0.299, 0.587, 0.114]).astype(np.float32))
    big = torch.nn.functional.interpolate(grey[None, None] / 255, size=(160, 213), mode="area")[0, 0].numpy()
    i1, i0 = big[32:128, 32:160], big[26:122, 42:170]  # I0(x) = I1(x + (10, -6))
    ours = tvl1(border="zeros", antialias=False).pairs(i0[None], i1[None])[0]
    ref = build_flow("tvl1-opencv", device="cpu").pairs(i0[None], i1[None])[0]
    diff = (ours - ref).norm(dim=0)
    assert ref[:, 16:-16, 16:-16].mean((1, 2)).tolist() == pytest.approx([10, -6], abs=0.5)  # it is a large motion
    # everywhere, the 16 columns and 6 rows whose match leaves the image included (there the flow is
    # extrapolated, and our own sampling differs by 0.14 px on average); the rest is OpenCV's
    # remap, which rounds positions to 1/32 px
    assert diff.mean() < 0.04 and torch.quantile(diff[6:, :-10].flatten(), 0.99) < 0.1, diff.mean()


@pytest.mark.parametrize("shift", [(24, 0), pytest.param((-17, 17), marks=pytest.mark.slow)])
def test_recovers_a_large_translation_of_a_real_frame(assets_dir, shift):
    """24 px at 96x128 (a quarter of the width): OpenCV's 5-level pyramid leaves 10 px on its
    coarsest level and loses it; the full pyramid (default) brings it down to 4 px."""
    from pipeline.video import FrameSelection, read_frames

    frame = read_frames(assets_dir / "videos" / "vtest.avi", start=1.0, select=FrameSelection(max_frames=1))[0]
    grey = torch.from_numpy(np.dot(frame.astype(np.float32), [0.299, 0.587, 0.114]).astype(np.float32))
    big = torch.nn.functional.interpolate(grey[None, None] / 255, size=(160, 213), mode="area")[0, 0].numpy()
    (dx, dy), (h, w), y0, x0 = shift, (96, 128), 32, 32
    i1 = big[y0 : y0 + h, x0 : x0 + w]
    i0 = big[y0 + dy : y0 + dy + h, x0 + dx : x0 + dx + w]  # I0(x) = I1(x + shift), exactly
    flow = tvl1().pairs(i0[None], i1[None])[0]
    ys, xs = np.mgrid[0:h, 0:w]
    inside = torch.from_numpy((xs + dx >= 0) & (xs + dx < w) & (ys + dy >= 0) & (ys + dy < h))
    err = (flow - torch.tensor([dx, dy], dtype=torch.float32)[:, None, None]).norm(dim=0)[inside]
    assert err.median() < 0.05 and err.mean() < 1.0 and (err < 1).float().mean() > 0.9


def test_replicate_warp_has_no_data_term_where_the_match_leaves_the_image():
    images = torch.rand(1, 4, 6, 8)
    u = torch.zeros(1, 2, 6, 8)
    u[:, 0] = 3.0  # columns 5-7 look at x = 8-10, outside
    data = warp_data(images, u, replicate=True)
    assert torch.equal(data[..., 5:], torch.zeros(1, 3, 6, 3))
    assert torch.allclose(data[:, 0, :, :5], images[:, 1, :, 3:], atol=1e-6) and (data[..., :5] != 0).all()
    assert (warp_data(images, u, replicate=False)[:, 2, :, 5:] != 0).all()  # OpenCV's zeros keep rho_c


def test_median_filter_matches_sorting():
    x = torch.randn(2, 2, 9, 11)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    windows = padded.unfold(2, 5, 1).unfold(3, 5, 1).reshape(2, 2, 9, 11, 25)
    assert torch.equal(median_filter(x, 5), windows.median(-1).values)


def test_compiled_kernel_matches_eager():
    g = torch.Generator().manual_seed(0)
    u, p = torch.randn(2, 2, 20, 24, generator=g), 0.1 * torch.randn(2, 4, 20, 24, generator=g)
    data = 10 * torch.randn(2, 3, 20, 24, generator=g)
    active = torch.tensor([True, False])
    consts = torch.tensor([0.045, 0.3, 0.25 / 0.3, 0.01])
    eager = primal_dual_steps(u, p, data, active, consts, 3)
    compiled = primal_dual_compiled(u, p, data, active, consts, 3)
    assert primal_dual_compiled.failed is None
    for a, b in zip(eager, compiled):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(eager[0][1], u[1])  # an inactive pair does not move


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no working C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    doubled = Compiled(lambda x: 2 * x)
    with pytest.warns(RuntimeWarning, match="running eager"):
        assert torch.equal(doubled(torch.ones(2)), torch.full((2,), 2.0))
    assert "no working C++ compiler" in doubled.failed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, still correct
        assert torch.equal(doubled(torch.ones(2)), torch.full((2,), 2.0))


@pytest.mark.parametrize("as_torch", [False, True])
def test_quantisation_round_trip(as_torch):
    f = np.linspace(-25, 25, 2000, dtype=np.float32).reshape(1, 2, -1)
    x = torch.from_numpy(f) if as_torch else f
    q = quantize_flow(x, bound=20.0)
    assert isinstance(q, torch.Tensor if as_torch else np.ndarray) and q.dtype in (np.uint8, torch.uint8)
    back = np.asarray(dequantize_flow(q, bound=20.0))
    inside = np.abs(f) <= 20
    assert np.abs(back - f)[inside].max() <= 20 / 255 + 1e-5
    assert np.allclose(back[~inside], np.sign(f[~inside]) * 20, atol=1e-5)
    h = quantize_flow(x, bound=20.0, dtype="float16")
    back16 = np.asarray(dequantize_flow(h, bound=20.0, dtype="float16"))
    assert back16.dtype == np.float32 and np.abs(back16 - np.clip(f, -20, 20)).max() <= 2**-7
    with pytest.raises(FlowError, match="dtype"):
        quantize_flow(f, dtype="int8")


def test_flow_to_color_wheel():
    flow = np.zeros((2, 4, 4), np.float32)
    flow[0, 0, 0] = 3.0  # rightwards, the largest motion: saturated
    img = flow_to_color(flow)
    assert img.shape == (4, 4, 3) and img.dtype == np.uint8
    assert (img[3, 3] == 255).all()  # no motion is white
    assert img[0, 0, 0] == 255 and img[0, 0, 1] < 60  # rightwards is red on the Middlebury wheel
    assert np.array_equal(flow_to_color(torch.from_numpy(flow)), img)
    assert np.array_equal(flow_to_color(flow.transpose(1, 2, 0)), img)


def test_flow_viz_cli(tmp_path, monkeypatch):
    from PIL import Image

    from cli import main
    from pipeline.demo_data import write_mp4

    monkeypatch.setenv("STPIPE_FLOW_COMPILE", "0")
    frames = np.stack([np.repeat((texture(48, 64, shift=(t, 0)) * 255).astype(np.uint8)[..., None], 3, -1)
                       for t in range(3)])
    video = tmp_path / "moving.mp4"
    write_mp4(video, frames, fps=10)
    out = tmp_path / "viz" / "flow.png"
    main(["flow-viz", str(video), "-o", str(out), "--frames", "3", "--short-side", "48"])
    sheet = np.asarray(Image.open(out))
    assert sheet.shape == (2 * 48 + 4, 2 * 64 + 4, 3)


def test_threads_computing_flow_at_once_get_the_sequential_results():
    """Stage one runs several videos' TV-L1 in decode threads at once (the compiled graphs release
    the GIL): each thread's result must equal the one-at-a-time result."""
    import threading

    pairs = [(texture(40, 48, seed=s), texture(40, 48, shift=(1.5, -0.5), seed=s)) for s in range(3)]
    compiled = functools.partial(build_flow, "tvl1", device="cpu", scales=3, warps=3)
    want = [compiled().pairs(a[None], b[None])[0] for a, b in pairs]
    got: dict[int, torch.Tensor] = {}

    def run(i: int) -> None:
        a, b = pairs[i]
        got[i] = compiled().pairs(a[None], b[None])[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for i in range(3):
        assert torch.equal(got[i], want[i]), i
