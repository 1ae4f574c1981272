"""Temporal heads: the registry contract, Table 3 of Köpüklü et al. exactly, and the papers' special parts."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from cli import cli
from pipeline.errors import HeadError, RegistryError
from pipeline.heads import HEADS, LateFusion, build_head, complexity_table, count_params, head_complexity
from pipeline.heads.classic import sample_relations
from pipeline.heads.mtconv import soft_pool2d, triplet_cosine_select
from pipeline.heads.st_resnet import TemporalResidualUnit
from pipeline.training.config import TrainHeadConfig
from pipeline.training.model import model_spec

ALL = HEADS.names()
SMALL = dict(num_classes=5, in_dim=12, proj_dim=8)  # small dims keep every test fast
HW = (3, 3)
# At 8 channels MTConv's default r=0.875 leaves a single prolonged channel, which a negative GRU
# excitation can silence for a whole batch (9 of 20 seeds); r=0.5 keeps 4 channels per branch.
# Two blocks keep T >= 2 in every MTConv block at 4 segments (a block at T = 1, as the default's
# fourth at 8 segments, runs its GRU one step, so the recurrent weights get no gradient there).
SMALL_OPTIONS = {"mtconv": {"ratio": 0.5, "num_blocks": 2}}


def small_head(name: str, segments: int = 4, **kw) -> torch.nn.Module:
    kw = {**SMALL, **SMALL_OPTIONS.get(name, {}), **kw}
    return build_head(name, num_segments=segments, spatial=HW, **kw)


def features(name: str, batch: int = 2, steps: int = 4, dim: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, steps, dim, *HW) if HEADS.meta(name)["input_kind"] == "spatial" else (batch, steps, dim)
    return torch.randn(shape, generator=g)


def test_registry_has_every_head_of_the_issue():
    expected = {"mlp", "tsn", "trn_multiscale", "rnn_tanh", "rnn_relu", "lstm", "gru", "blstm", "convlstm",
                "fcn2d", "fcn3d", "st_resnet", "mtconv", "s3dg"}
    assert expected <= set(ALL)
    for name in ALL:
        assert HEADS.meta(name)["input_kind"] in ("pooled", "spatial")


@pytest.mark.parametrize("name", ALL)
def test_shapes_and_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    head = small_head(name).train()
    out = head(features(name))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.square().sum().backward()
    for pname, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"no gradient reaches {pname}"


@pytest.mark.parametrize("name", ALL)
def test_eval_is_deterministic(name):
    torch.manual_seed(0)
    head = small_head(name).eval()
    x = features(name)
    with torch.no_grad():
        first, second = head(x), head(x)
    torch.manual_seed(123)  # eval must not depend on the global RNG (TRN relations are fixed)
    with torch.no_grad():
        third = head(x)
    assert torch.equal(first, second) and torch.equal(first, third)


@pytest.mark.parametrize("steps", [1, 3, 8, 16])
@pytest.mark.parametrize("name", ALL)
def test_segment_counts(name, steps):
    if steps < HEADS.meta(name)["min_segments"]:
        with pytest.raises(HeadError, match="at least"):
            small_head(name, segments=steps)
        return
    head = small_head(name, segments=steps).train()
    assert head(features(name, steps=steps)).shape == (2, 5)


@pytest.mark.parametrize("name", ALL)
def test_length_agnostic_unless_weights_depend_on_t(name):
    head = small_head(name, segments=4).eval()
    other = features(name, steps=6)
    if HEADS.meta(name)["fixed_length"]:
        with pytest.raises(HeadError, match="built for 4 segments"):
            head(other)
    else:
        assert head(other).shape == (2, 5)


@pytest.mark.parametrize("name", ALL)
def test_input_kinds(name):
    head = small_head(name).eval()
    pooled = torch.randn(2, 4, 12)
    spatial = torch.randn(2, 4, 12, *HW)
    if head.input_kind == "spatial":
        with pytest.raises(HeadError, match="needs spatial features"):
            head(pooled)
    else:  # a pooled head pools spatial maps itself
        with torch.no_grad():
            assert torch.allclose(head(spatial), head(spatial.mean(dim=(-2, -1))), atol=1e-6)
    x = spatial if head.input_kind == "spatial" else pooled
    with pytest.raises(HeadError, match="built for 12-d"):
        head(x[:, :, :7])
    with pytest.raises(HeadError, match="float tensor"):
        head(x.long())
    with torch.no_grad():  # cached features are float16: accepted and cast
        assert head(x.half()).dtype == torch.float32


# Köpüklü et al., Table 3 (27 classes, 8 segments, 256-d after the projection, projection excluded).
TABLE3 = {
    "mlp": 1_062_939, "tsn": 0, "trn_multiscale": 2_344_125, "rnn_tanh": 138_523, "rnn_relu": 138_523,
    "lstm": 533_275, "gru": 401_691, "blstm": 402_203, "convlstm": 4_726_555, "fcn2d": 562_395,
    "fcn3d": 1_556_571,
}


@pytest.mark.parametrize("name", sorted(TABLE3))
def test_table3_parameter_counts_exactly(name):
    head = build_head(name, num_classes=27, num_segments=8, in_dim=1024, spatial=(7, 7))
    assert count_params(head.body) == TABLE3[name]


@pytest.mark.parametrize("name, classes, segments, millions", [
    ("mlp", 174, 8, 1.14), ("trn_multiscale", 174, 8, 2.61), ("convlstm", 174, 8, 4.76), ("fcn3d", 174, 8, 1.59),
    ("mlp", 27, 16, 2.11), ("trn_multiscale", 27, 16, 8.96),
])
def test_table3_counts_at_other_settings(name, classes, segments, millions):
    head = build_head(name, num_classes=classes, num_segments=segments, in_dim=64, spatial=(7, 7))
    assert round(count_params(head.body) / 1e6, 2) == millions


@pytest.mark.parametrize("name, millions, tol", [
    ("mlp", 1.06, 0.005), ("lstm", 4.20, 0.005), ("convlstm", 1850, 1), ("fcn3d", 152, 0.5),
])
def test_issue_macs_at_8_segments_on_7x7(name, millions, tol):
    head = build_head(name, num_classes=27, num_segments=8, in_dim=32, spatial=(7, 7))
    macs = head_complexity(head)["head_macs"]
    assert abs(macs / 1e6 - millions) <= tol
    assert macs == {"mlp": 1_062_400, "lstm": 4_201_216, "convlstm": 1_849_694_976, "fcn3d": 152_070_912}[name]


@pytest.mark.parametrize("name", ALL)
def test_complexity_reports_projection_and_body_apart(name):
    head = small_head(name)
    report = head_complexity(head)
    assert report["projection_params"] == count_params(head.projection)
    assert report["head_params"] == count_params(head.body)
    assert report["projection_params"] + report["head_params"] == count_params(head)
    out = 5 if name == "tsn" else 8  # TSN projects straight to the classes
    sites = 4 * (HW[0] * HW[1] if head.input_kind == "spatial" else 1)
    assert report["projection_macs"] == sites * 12 * out
    assert report["head_macs"] >= 0 and head.training  # training mode is restored


def test_rnn_macs_are_counted_even_where_the_flop_counter_is_blind():
    # torch's counter sees no LSTM work on CPU; GRU is seen; both must come out analytically.
    for name, gates in [("lstm", 4), ("gru", 3), ("rnn_tanh", 1)]:
        head = build_head(name, num_classes=5, num_segments=6, in_dim=8, proj_dim=16)
        assert head_complexity(head)["head_macs"] == 6 * gates * 16 * (16 + 16) + 16 * 5
    blstm = build_head("blstm", num_classes=5, num_segments=6, in_dim=8, proj_dim=16)
    assert head_complexity(blstm)["head_macs"] == 2 * 6 * 4 * 8 * (16 + 8) + 16 * 5


@pytest.mark.parametrize("width", [10, 100, 256, 300])
@pytest.mark.parametrize("steps", [1, 5, 16])
def test_fcn2d_any_width_and_segment_count(width, steps):
    head = build_head("fcn2d", num_classes=27, num_segments=steps, in_dim=6, proj_dim=width).train()
    assert head(torch.randn(2, steps, 6)).shape == (2, 27)
    assert count_params(head.body) == TABLE3["fcn2d"]  # conv weights are shared over time and width


def test_trn_relations_random_in_training_fixed_in_eval():
    assert sample_relations(8, 8, 3).tolist() == [list(range(8))]  # one relation at scale T
    rel = sample_relations(8, 3, 3, torch.Generator().manual_seed(0))
    assert rel.shape == (3, 3) and len({tuple(r) for r in rel.tolist()}) == 3
    assert all(r == sorted(r) and len(set(r)) == 3 for r in rel.tolist())  # ordered, distinct frames
    assert sample_relations(3, 2, 5).tolist() == [[0, 1], [0, 2], [1, 2]]  # all when fewer than asked

    head = build_head("trn_multiscale", num_classes=5, num_segments=6, in_dim=8, relation_seed=7)
    twin = build_head("trn_multiscale", num_classes=5, num_segments=6, in_dim=8, relation_seed=7)
    body = head.body
    assert all(torch.equal(getattr(body, f"eval_relations_{s}"), getattr(twin.body, f"eval_relations_{s}"))
               for s in body.scales)
    assert [body.relations(s).shape[0] for s in body.scales] == [1, 3, 3, 3, 3]
    body.train()
    torch.manual_seed(0)
    drawn = {tuple(body.relations(3).flatten().tolist()) for _ in range(10)}
    assert len(drawn) > 1  # resampled every training forward


def test_soft_pool_hand_checked():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    e = math.e
    expected = (0 + 1 * e + 2 * e**2 + 3 * e**3) / (1 + e + e**2 + e**3)  # sum(a e^a) / sum(e^a)
    assert soft_pool2d(x).item() == pytest.approx(expected, rel=1e-6)
    assert soft_pool2d(torch.full((1, 4, 4), 2.5)).eq(2.5).all()  # constant in, constant out
    # 3x3 -> replicate-padded to 4x4 -> 2x2; the right column window holds {2, 2, 5, 5}.
    odd = soft_pool2d(torch.arange(9.0).reshape(3, 3))
    assert odd.shape == (2, 2)
    assert odd[0, 1].item() == pytest.approx((2 * e**2 + 5 * e**5) / (e**2 + e**5), rel=1e-6)
    assert odd[1, 1].item() == pytest.approx(8.0)
    big = soft_pool2d(torch.tensor([[1000.0, 0.0], [0.0, 0.0]]))  # numerically stable
    assert big.item() == pytest.approx(1000.0)


def test_soft_pool_matches_a_softmax_over_each_window():
    # a (B, C, T, H, W) volume as mtconv pools it, values and gradients against the definition
    x = (torch.randn(2, 3, 4, 7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 30).requires_grad_()
    padded = torch.nn.functional.pad(x.reshape(-1, 7, 5), (0, 1, 0, 1), mode="replicate")
    windows = padded.unflatten(-1, (3, 2)).unflatten(-3, (4, 2)).transpose(-3, -2).flatten(-2)
    expected = (torch.softmax(windows, dim=-1) * windows).sum(-1).reshape(2, 3, 4, 4, 3)
    got = soft_pool2d(x)
    torch.testing.assert_close(got, expected)
    grad_weights = torch.randn_like(got)
    torch.testing.assert_close(torch.autograd.grad((got * grad_weights).sum(), x)[0],
                               torch.autograd.grad((expected * grad_weights).sum(), x)[0])


def test_triplet_cosine_selection_hand_checked():
    # Unit vectors at angles whose consecutive differences are 5, 40, 20, 80, 30 degrees:
    # triplet sums for inner frames 1..4 are cos5+cos40=1.762, cos40+cos20=1.706,
    # cos20+cos80=1.114, cos80+cos30=1.040 -> the floor(6/2)=3 lowest are frames 2, 3, 4.
    angles = torch.tensor([0.0, 5, 45, 65, 145, 175]).deg2rad()
    vectors = torch.stack([angles.cos(), angles.sin()])  # (C=2, T=6)
    # Spread each frame's vector over a 2x2 map with uneven weights: selection uses the spatial sum.
    weights = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    x = (vectors[:, :, None, None] * weights).unsqueeze(0)  # (1, 2, 6, 2, 2)
    x = torch.cat([x, x.flip(2)])  # second sample: time reversed -> frames 1, 2, 3
    selected, index = triplet_cosine_select(x)
    assert index.tolist() == [[2, 3, 4], [1, 2, 3]]
    assert torch.equal(selected[0], x[0, :, [2, 3, 4]]) and torch.equal(selected[1], x[1, :, [1, 2, 3]])
    with pytest.raises(HeadError, match="at least 3 frames"):
        triplet_cosine_select(x[:, :, :2])


def test_st_resnet_temporal_filters_start_as_temporal_average():
    torch.manual_seed(0)
    unit = TemporalResidualUnit(channels=16, width=4, temporal_kernel=3)
    for conv in (unit.conv_a, unit.conv_c):
        w = conv.weight  # (out, in, 3): the 1x1 weights replicated over time, divided by T'
        assert torch.allclose(w, w[:, :, :1].expand_as(w))
        spatial = w.sum(dim=-1, keepdim=True)  # = the original 1x1 weights
        x = torch.randn(2, conv.in_channels, 7)
        averaged = torch.nn.functional.avg_pool1d(x, 3, stride=1, padding=1, count_include_pad=True)
        assert torch.allclose(conv(x), torch.nn.functional.conv1d(averaged, spatial), atol=1e-6)


def test_st_resnet_two_streams():
    torch.manual_seed(0)
    head = build_head("st_resnet", num_classes=5, num_segments=4, in_dim={"rgb": 12, "flow": 6}, proj_dim=8,
                      streams=("rgb", "flow")).eval()
    assert head.streams == ("rgb", "flow")
    rgb, flow = torch.randn(2, 4, 12), torch.randn(2, 4, 6)
    with torch.no_grad():
        scores = head.stream_logits({"rgb": rgb, "flow": flow})
        fused = head({"rgb": rgb, "flow": flow})
        assert torch.allclose(fused, (scores["rgb"] + scores["flow"]) / 2)  # averaged raw scores
        # Residuals run motion -> appearance only.
        new_flow = head.stream_logits({"rgb": rgb, "flow": flow + 1})
        new_rgb = head.stream_logits({"rgb": rgb + 1, "flow": flow})
    assert not torch.allclose(new_flow["rgb"], scores["rgb"])
    assert torch.equal(new_rgb["flow"], scores["flow"])
    with pytest.raises(HeadError, match="expects a dict with streams"):
        head(rgb)
    with pytest.raises(HeadError, match="is single-stream"):
        build_head("mlp", num_classes=5, num_segments=4, in_dim=12, streams=("rgb", "flow"))


def test_late_fusion_and_rebuild_from_spec():
    heads = {s: build_head("gru", num_classes=5, num_segments=4, in_dim=12, proj_dim=8) for s in ("rgb", "flow")}
    fusion = LateFusion(heads).eval()
    x = {"rgb": torch.randn(2, 4, 12), "flow": torch.randn(2, 4, 12)}
    with torch.no_grad():
        assert torch.allclose(fusion(x), (heads["rgb"](x["rgb"]) + heads["flow"](x["flow"])) / 2)
        weighted = LateFusion(heads, {"rgb": 1.0, "flow": 1.5}).eval()  # TSN's weights, normalised to sum 1
        assert torch.allclose(weighted(x), (heads["rgb"](x["rgb"]) + 1.5 * heads["flow"](x["flow"])) / 2.5)
    for bad in ({"rgb": 1.0}, {"rgb": -1.0, "flow": 2.0}, {"rgb": 0.0, "flow": 0.0}):
        with pytest.raises(HeadError, match="weights"):
            LateFusion(heads, bad)
    original = small_head("mtconv", ratio=0.75)
    rebuilt = build_head(**original.spec)
    rebuilt.load_state_dict(original.state_dict())
    x = features("mtconv")
    with torch.no_grad():
        assert torch.equal(original.eval()(x), rebuilt.eval()(x))


def test_build_errors_are_one_line_head_errors():
    with pytest.raises(RegistryError, match="unknown head 'nope'"):
        build_head("nope", num_classes=5, num_segments=4, in_dim=12)
    with pytest.raises(HeadError, match="has no option 'hiden'; its options: hidden"):
        build_head("lstm", num_classes=5, num_segments=4, in_dim=12, hiden=3)
    with pytest.raises(HeadError, match="num_classes must be a positive integer"):
        build_head("mlp", num_classes=0, num_segments=4, in_dim=12)
    with pytest.raises(HeadError, match="channel ratio"):
        build_head("mtconv", num_classes=5, num_segments=4, in_dim=12, ratio=1.0)


def test_complexity_table_marks_inapplicable_heads():
    rows = {r["name"]: r for r in complexity_table(num_classes=5, num_segments=1, feature_shape=(12,), proj_dim=8)}
    assert set(rows) == set(ALL)
    assert not rows["convlstm"]["applicable"] and "needs spatial features" in rows["convlstm"]["note"]
    assert not rows["trn_multiscale"]["applicable"] and "at least 2 segments" in rows["trn_multiscale"]["note"]
    assert rows["mlp"]["applicable"] and rows["mlp"]["head_params"] == 8 * 512 + 512 + 512 * 5 + 5


def test_cli_heads_lists_every_head():
    result = CliRunner().invoke(cli, ["heads", "--classes", "5", "--segments", "3", "--feature-shape", "16x2x2",
                                      "--proj-dim", "8"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in ALL:
        assert any(line.startswith(name + " ") for line in lines), name
    assert "pools the 2x2 maps first" in result.output
    pooled = CliRunner().invoke(cli, ["heads", "--feature-shape", "16", "--proj-dim", "8"])
    assert "n/a: needs spatial features" in pooled.output
    bad = CliRunner().invoke(cli, ["heads", "--feature-shape", "16x2"])
    assert bad.exit_code != 0 and "--feature-shape" in str(bad.exception)  # main() prints it as one line


def test_spatial_projection_drops_whole_channel_maps_per_frame():
    head = build_head("fcn3d", num_classes=3, num_segments=4, in_dim=16, spatial=(5, 5), proj_dim=8, dropout=0.5)
    dropped = head.projection.train().dropout(torch.ones(6, 16, 5, 5))
    per_map = dropped.flatten(2)
    # each frame's channel is either zeroed or kept (scaled by 1 / (1 - p)) over its whole map
    assert set(per_map.unique().tolist()) == {0.0, 2.0}
    assert (per_map.amin(-1) == per_map.amax(-1)).all()
    assert 0 < (per_map[..., 0] == 0).float().mean() < 1
    x = torch.randn(2, 4, 16, 5, 5)
    assert torch.equal(head.projection.eval()(x), head.projection(x))  # no dropout in eval
    cached, fed = torch.ones(2, 4, 16, 5, 5), torch.ones(2, 4, 16, 5, 5, requires_grad=True)
    head.projection.train()(cached)  # cached features are dropped in place (a fresh copy per batch)...
    assert set(cached.unique().tolist()) == {0.0, 2.0}
    head.projection(fed).sum().backward()  # ...a backbone's output (fine-tuning) is left as it is
    assert fed.eq(1).all() and fed.grad is not None


def test_s3dg_blocks_halve_time_and_mtconv_stacks_blocks():
    head = build_head("s3dg", num_classes=5, num_segments=8, in_dim=12, spatial=HW, proj_dim=8)
    assert len(head.body.blocks) == 3  # top-heavy default: 8 -> 4 -> 2 -> 1 steps
    z = torch.randn(2, 8, 8, *HW).transpose(1, 2)
    assert head.body.blocks(z).shape == (2, 8, 1, *HW)
    one = build_head("s3dg", num_classes=5, num_segments=8, in_dim=12, spatial=HW, proj_dim=8, num_blocks=1,
                     temporal_stride=1)
    assert one.body.blocks(z).shape == (2, 8, 8, *HW)
    with pytest.raises(HeadError, match="temporal_stride must be >= 1"):
        build_head("s3dg", num_classes=5, num_segments=8, in_dim=12, spatial=HW, temporal_stride=0)
    single = small_head("mtconv", num_blocks=1)
    assert not any(k.startswith("body.more_blocks") for k in single.state_dict())  # one-block checkpoints load
    stacked = build_head("mtconv", num_segments=4, spatial=HW, **SMALL)
    assert len(stacked.body.more_blocks) == 3  # default: 4 blocks, time 4 -> 2 -> 1 -> 1 here
    assert stacked(features("mtconv")).shape == (2, 5)
    with pytest.raises(HeadError, match="num_blocks must be >= 1"):
        small_head("mtconv", num_blocks=0)


def test_saved_specs_record_every_option_and_old_ones_rebuild_as_trained():
    from pipeline.training.model import build_model

    # a run's spec records the options' defaults, so later default changes cannot alter it
    cfg = TrainHeadConfig(store="x", head="s3dg", proj_dim=8, recipe="paper")
    spec = model_spec(cfg, num_classes=5, frame_shapes={"rgb": (12, *HW)})
    assert spec["heads"]["rgb"]["num_blocks"] == 3 and spec["heads"]["rgb"]["temporal_stride"] == 2
    # a spec saved before s3dg/mtconv's defaults changed (no such keys) rebuilds the one-block head
    for name in ("s3dg", "mtconv"):
        old = {k: v for k, v in model_spec(TrainHeadConfig(store="x", head=name, proj_dim=8, recipe="paper"),
                                           num_classes=5, frame_shapes={"rgb": (12, *HW)})["heads"]["rgb"].items()
               if k not in ("num_blocks", "temporal_stride")}
        model = build_model({"fusion": "single", "heads": {"rgb": old}})
        blocks = model.body.blocks if name == "s3dg" else [model.body.block, *model.body.more_blocks]
        assert len(blocks) == 1, name


POOLED_TO_DIM = [n for n in ALL if HEADS.meta(n)["input_kind"] == "pooled" and HEADS.meta(n)["projects_to"] == "dim"]


def test_temporal_center_centres_that_fraction_of_the_projected_channels():
    torch.manual_seed(0)
    plain = build_head("lstm", num_classes=5, num_segments=4, in_dim=12, proj_dim=8).eval()
    centred = build_head("lstm", num_classes=5, num_segments=4, in_dim=12, proj_dim=8, temporal_center=0.75).eval()
    centred.load_state_dict(plain.state_dict())  # no parameters of its own: same weights load
    x = torch.randn(3, 4, 12)
    with torch.no_grad():
        y, z = plain.projection(x), centred.projection(x)
    assert torch.allclose(z[..., :6], y[..., :6] - y[..., :6].mean(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(z[..., :6].mean(dim=1), torch.zeros(3, 6), atol=1e-6)
    assert torch.equal(z[..., 6:], y[..., 6:])  # the rest keep the clip's static content
    assert "temporal_center" not in plain.spec and centred.spec["temporal_center"] == 0.75
    rebuilt = build_head(**centred.spec)
    rebuilt.load_state_dict(centred.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), centred(x))


@pytest.mark.parametrize("name", POOLED_TO_DIM)
def test_fully_centred_heads_ignore_a_clip_constant(name):
    """temporal_center=1: a per-clip offset (static content, the same in every frame) changes nothing."""
    head = small_head(name, temporal_center=1.0).eval()
    x = features(name)
    offset = torch.randn(2, 1, 12) * 3
    with torch.no_grad():
        assert torch.allclose(head(x + offset), head(x), atol=1e-4)
        assert not torch.allclose(small_head(name).eval()(x + offset), small_head(name).eval()(x), atol=1e-4)


def test_temporal_center_errors():
    with pytest.raises(HeadError, match="temporal_center must be a fraction in"):
        build_head("gru", num_classes=5, num_segments=4, in_dim=12, temporal_center=1.5)
    with pytest.raises(HeadError, match="would cancel them"):
        build_head("tsn", num_classes=5, num_segments=4, in_dim=12, temporal_center=0.5)
    with pytest.raises(HeadError, match="pooled heads only"):
        build_head("fcn3d", num_classes=5, num_segments=4, in_dim=12, spatial=HW, temporal_center=0.5)
