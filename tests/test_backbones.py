"""Backbones: every registered one builds and gives its documented shapes; the split reproduces the
torchvision model; weights resolve (DEFAULT/enum/none/file) and fail offline with one line; the
preprocessing equals the weights' transforms; the flow stream starts from averaged RGB filters."""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models import get_model, get_model_weights

from pipeline.backbones import (
    BACKBONES,
    allocator,
    build_backbone,
    build_backbone_from_meta,
    build_flow_backbone,
    cache_path,
    clip_index,
    resolve_weights,
    stack_flow,
)
from pipeline.backbones.build import first_conv
from pipeline.errors import BackboneError, ConfigError, FlowError, RegistryError

REQUIRED = ["squeezenet1_1", "googlenet", "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large",
            "efficientnet_b0", "convnext_tiny", "r3d_18", "r2plus1d_18", "s3d", "tiny", "tiny_video", "tiny_resnet"]  # fmt: skip
# the channels of the documented features (spatial C == pooled D)
DIMS = {"squeezenet1_1": 512, "googlenet": 1024, "resnet18": 512, "resnet50": 2048, "mobilenet_v2": 1280,
        "mobilenet_v3_large": 960, "efficientnet_b0": 1280, "convnext_tiny": 768, "r3d_18": 512,
        "r2plus1d_18": 512, "s3d": 1024, "tiny": 64, "tiny_video": 32, "tiny_resnet": 128}  # fmt: skip
# spatial size at each backbone's own input size (224, or 112 for r3d/r2plus1d, 64/32 for tiny)
SPATIAL = {"squeezenet1_1": [13, 13], "tiny": [8, 8], "tiny_video": [8, 8], "tiny_resnet": [2, 2]}
MV2_FILE = "mobilenet_v2-b0353104.pth"


def assert_within_one_uint8_level(x: torch.Tensor, expected: torch.Tensor, std: list[float]) -> None:
    """Our uint8 resize rounds like torchvision's v2 kernel, the weights' transforms like v1."""
    level = 1.0 / (255.0 * min(std))
    assert x.shape == expected.shape
    assert (x - expected).abs().max().item() <= level * 1.001
    assert (x - expected).abs().mean().item() < level / 4


def small_input(name: str) -> torch.Tensor:
    """The smallest input each architecture takes, to keep the suite fast."""
    if BACKBONES.meta(name).kind == "video":
        return torch.randn(1, 3, 8, 48, 48)
    return torch.randn(2, 3, 64, 64)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


@pytest.fixture
def mv2_home(torch_home, assets_dir) -> Path:
    """A TORCH_HOME whose hub cache holds torchvision's MobileNetV2 file, as a download would."""
    source = assets_dir / "weights" / MV2_FILE
    if not source.is_file():
        pytest.skip(f"{source} missing")
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(source, checkpoints / MV2_FILE)
    return torch_home


def test_registry_has_the_issue_backbones():
    assert set(REQUIRED) <= set(BACKBONES.names())
    with pytest.raises(RegistryError, match="known: .*mobilenet_v2"):
        build_backbone("vgg99", weights="none")


@pytest.mark.parametrize("name", REQUIRED)
def test_every_backbone_builds_and_gives_documented_shapes(name):
    backbone = build_backbone(name, weights="none", features="spatial", device="cpu")
    meta = backbone.meta
    assert meta["dim"] == meta["pooled_dim"] == DIMS[name]
    assert meta["spatial_size"] == SPATIAL.get(name, [7, 7])
    assert meta["feature_shape"] == [DIMS[name], *meta["spatial_size"]]
    assert meta["kind"] == BACKBONES.meta(name).kind and meta["weights"] == "none"
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())
    x = small_input(name)
    maps = backbone.forward_features(x)
    assert maps.shape[:2] == (x.shape[0], DIMS[name]) and maps.ndim == 4
    if name != "convnext_tiny":  # ConvNeXt's pre-logits pooling also layer-norms the mean
        torch.testing.assert_close(backbone.pool(maps), maps.mean((2, 3)))


@pytest.mark.parametrize("name", ["tiny", "tiny_video", "squeezenet1_1", "mobilenet_v2"])
def test_pooled_is_the_pooled_spatial_map(name, tmp_path):
    spatial = build_backbone(name, weights="none", features="spatial", device="cpu")
    path = tmp_path / "backbone.pt"
    torch.save(spatial.state_dict(), path)  # the same weights through a saved Backbone state dict
    pooled = build_backbone(name, weights=path, features="pooled", device="cpu")
    assert pooled.meta["feature_shape"] == [DIMS[name]] and len(pooled.meta["weights_sha256"]) == 16
    x = small_input(name)
    vectors = pooled.forward_features(x)
    assert vectors.shape == (x.shape[0], DIMS[name])
    torch.testing.assert_close(vectors, spatial.forward_features(x).mean((2, 3)))


@pytest.mark.parametrize(
    "name", ["squeezenet1_1", "googlenet", "resnet18", "mobilenet_v3_large", "convnext_tiny", "r3d_18"]
)
def test_split_reproduces_the_torchvision_model(name, tmp_path):
    kwargs = (
        {"aux_logits": False, "init_weights": False, "transform_input": True} if name == "googlenet" else {}
    )
    model = get_model(name, weights=None, **kwargs).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)  # torchvision's key names this time
    backbone = build_backbone(name, weights=path, features="spatial", device="cpu")
    x = small_input(name)
    with torch.no_grad():
        expected = model(x)
    assert backbone.meta["head_loaded"]
    torch.testing.assert_close(backbone.forward_head(backbone.forward_features(x)), expected)


def test_tiny_is_seeded_and_bit_reproducible():
    state = torch.random.get_rng_state()
    a, b = build_backbone("tiny", device="cpu"), build_backbone("tiny", weights="none", device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state)  # building leaves the global RNG alone
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    frames = torch.randint(0, 256, (3, 50, 70, 3), dtype=torch.uint8)
    assert torch.equal(a.forward_features(a.preprocess(frames)), b.forward_features(b.preprocess(frames)))
    assert a.meta["weights"] == "none" and a.meta["input_size"] == [64, 64]


def test_weights_resolution(tmp_path):
    enum_cls = get_model_weights("mobilenet_v2")
    assert resolve_weights("mobilenet_v2", "DEFAULT", enum_cls).label == "IMAGENET1K_V2"
    assert resolve_weights("mobilenet_v2", "IMAGENET1K_V1", enum_cls).enum is enum_cls.IMAGENET1K_V1
    assert resolve_weights("mobilenet_v2", "none", enum_cls).label == "none"
    assert resolve_weights("mobilenet_v2", None, enum_cls).label == "none"
    assert resolve_weights("tiny", "DEFAULT", None).label == "none"
    file = tmp_path / "w.pt"
    torch.save({"x": torch.zeros(1)}, file)
    resolved = resolve_weights("mobilenet_v2", str(file), enum_cls)
    assert resolved.file == file.resolve() and len(resolved.sha256) == 16 and resolved.enum is None
    with pytest.raises(
        BackboneError,
        match=r"unknown weights 'IMAGENET9K' for mobilenet_v2; use DEFAULT, none, IMAGENET1K_V1",
    ):
        resolve_weights("mobilenet_v2", "IMAGENET9K", enum_cls)
    with pytest.raises(BackboneError, match="does not exist"):
        resolve_weights("mobilenet_v2", str(tmp_path / "missing.pth"), enum_cls)
    with pytest.raises(BackboneError, match="unknown weights 'IMAGENET1K_V1' for tiny"):
        resolve_weights("tiny", "IMAGENET1K_V1", None)


def test_offline_without_cache_is_one_clear_line_and_never_downloads(torch_home, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    start = time.perf_counter()
    with pytest.raises(BackboneError) as error:
        build_backbone("resnet18", weights="DEFAULT", device="cpu")
    assert time.perf_counter() - start < 5
    message = str(error.value)
    expected = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert "\n" not in message and str(expected) in message and "IMAGENET1K_V1" in message
    assert cache_path(get_model_weights("resnet18").DEFAULT) == expected


def test_allowed_download_failure_is_one_line(torch_home, monkeypatch):
    def unreachable(url, dst, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(
        BackboneError, match=r"download failed \(network is unreachable\); put squeezenet1_1-b8a52dc0.pth"
    ):
        build_backbone("squeezenet1_1", weights="DEFAULT", device="cpu", download=True)


def test_bad_files_and_options(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="cannot be read as a state dict"):
        build_backbone("tiny", weights=junk)
    other = tmp_path / "resnet.pth"
    torch.save(build_backbone("tiny_video", device="cpu").state_dict(), other)
    with pytest.raises(BackboneError, match=r"does not fit tiny: \d+ tensors missing"):
        build_backbone("tiny", weights=other)
    with pytest.raises(ConfigError, match="features must be one of pooled, spatial"):
        build_backbone("tiny", features="vector")
    with pytest.raises(ConfigError, match="amp must be"):
        build_backbone("tiny", amp="fp8")


def test_other_classifier_sizes_load_the_trunk_only(tmp_path):
    model = get_model("resnet18", weights=None, num_classes=7).eval()
    path = tmp_path / "finetuned.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    backbone = build_backbone("resnet18", weights=path, features="pooled", device="cpu")
    assert not backbone.meta["head_loaded"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = torch.flatten(model.avgpool(model.layer4(model.layer3(model.layer2(model.layer1(
            model.maxpool(model.relu(model.bn1(model.conv1(x))))))))), 1)  # fmt: skip
    torch.testing.assert_close(backbone.forward_features(x), expected)


# -- preprocessing ----------------------------------------------------------------------------------


def test_preprocess_layouts_numpy_and_views():
    backbone = build_backbone("tiny", device="cpu")
    frames = torch.randint(0, 256, (3, 48, 80, 3), dtype=torch.uint8)
    x = backbone.preprocess(frames)
    assert x.shape == (3, 3, 64, 64) and x.dtype == torch.float32
    assert torch.equal(backbone.preprocess(frames.permute(0, 3, 1, 2)), x)
    assert torch.equal(backbone.preprocess(frames.numpy()), x)
    views = backbone.preprocess_views(frames, views="multi10")
    assert views.shape == (10, 3, 3, 64, 64)
    torch.testing.assert_close(views[0], x)
    with pytest.raises(BackboneError, match="3 channels"):
        backbone.preprocess(torch.zeros(2, 5, 48, 4, dtype=torch.uint8))


def test_video_preprocess_equals_the_kinetics_transforms():
    backbone = build_backbone("r3d_18", weights="none", device="cpu")
    transforms = get_model_weights("r3d_18").DEFAULT.transforms()
    assert backbone.meta["resize_size"] == [128, 171] and backbone.meta["input_size"] == [112, 112]
    assert backbone.meta["antialias"] is False and backbone.meta["mean"] == transforms.mean
    frames = torch.randint(0, 256, (6, 120, 160, 3), dtype=torch.uint8)
    expected = transforms(frames.permute(0, 3, 1, 2))  # (C, T, H, W)
    assert_within_one_uint8_level(backbone.preprocess(frames).permute(1, 0, 2, 3), expected, transforms.std)


# -- video clips --------------------------------------------------------------------------------------


def test_clip_windows_cover_the_video_and_record_centres():
    index, centres = clip_index(40, window=16, stride=8)
    assert index[:, 0].tolist() == [0, 8, 16, 24] and centres.tolist() == [7, 15, 23, 31]
    index, centres = clip_index(41, window=16, stride=8)
    assert index[:, 0].tolist() == [0, 8, 16, 24, 25] and int(index.max()) == 40
    index, centres = clip_index(5, window=16, stride=8)
    assert index.tolist() == [[0, 1, 2, 3, 4] + [4] * 11] and centres.tolist() == [2]


def test_video_backbone_gives_one_feature_per_window():
    backbone = build_backbone("tiny_video", features="spatial", device="cpu", clip_stride=3)
    frames = torch.randint(0, 256, (11, 40, 50, 3), dtype=torch.uint8)
    index, centres = backbone.clip_index(len(frames))
    clips = backbone.make_clips(backbone.preprocess(frames), index)
    assert clips.shape == (len(index), 3, 4, 32, 32)
    features = backbone.forward_features(clips)
    assert features.shape == (len(index), *backbone.meta["feature_shape"])
    assert backbone.meta["clip_window"] == 4 and backbone.meta["clip_stride"] == 3
    assert centres.tolist() == [1, 4, 7, 8]


# -- flow stream --------------------------------------------------------------------------------------


def test_flow_stream_init_is_the_averaged_rgb_filters(tmp_path):
    rgb = first_conv(build_backbone("tiny", device="cpu")).weight
    flow = build_flow_backbone("tiny", stack=5, device="cpu")
    weight = first_conv(flow).weight
    assert weight.shape == (16, 10, 3, 3) and flow.meta["in_channels"] == 10
    for channel in range(10):
        torch.testing.assert_close(weight[:, channel], rgb.mean(1), rtol=0, atol=0)
    # an RGB file is converted the same way; a flow-stream file loads as it is
    model = get_model("resnet18", weights=None).eval()
    torch.save(model.state_dict(), tmp_path / "rgb.pth")
    converted = build_flow_backbone("resnet18", weights=tmp_path / "rgb.pth", stack=3, device="cpu")
    expected = model.conv1.weight.mean(1, keepdim=True).expand(-1, 6, -1, -1)
    assert torch.equal(first_conv(converted).weight, expected)
    torch.save(converted.state_dict(), tmp_path / "flow.pth")
    again = build_flow_backbone("resnet18", weights=tmp_path / "flow.pth", stack=3, device="cpu")
    assert torch.equal(first_conv(again).weight, expected)
    x = torch.rand(2, 6, 64, 64) * 2 - 1
    torch.testing.assert_close(again.forward_features(x), converted.forward_features(x))
    with pytest.raises(BackboneError, match="needs an image backbone"):
        build_flow_backbone("tiny_video")


def test_flow_preprocessing_convention():
    flow = build_flow_backbone("tiny", stack=2, bound=20.0, device="cpu", resize_size=64, crop_size=64)
    fields = torch.zeros(3, 2, 64, 96)
    fields[:, 0] = 10.0  # 10 px to the right
    fields[:, 1] = -40.0  # 40 px up: clipped at the bound
    stacks = stack_flow(fields, torch.arange(4), stack=2)
    assert stacks.shape == (4, 4, 64, 96)
    x = flow.preprocess(stacks)
    assert x.shape == (4, 4, 64, 64)
    assert torch.allclose(x[:, 0::2], torch.tensor(0.5)) and torch.allclose(x[:, 1::2], torch.tensor(-1.0))
    views = flow.preprocess_views(stacks, views="flip")
    torch.testing.assert_close(views[1][:, 0::2], -views[0][:, 0::2].flip(-1))  # flipped x motion
    torch.testing.assert_close(views[1][:, 1::2], views[0][:, 1::2].flip(-1))
    quantised = torch.full((1, 4, 64, 64), 255, dtype=torch.uint8)  # +bound
    assert torch.allclose(flow.preprocess(quantised), torch.tensor(1.0))
    halved = build_flow_backbone("tiny", stack=2, device="cpu", resize_size=32, crop_size=32)
    assert torch.allclose(halved.preprocess(stacks)[:, 0::2], torch.tensor(0.25))  # displacements scale too
    meta = flow.meta
    assert meta["modality"] == "flow" and meta["flow_stack"] == 2 and meta["flow_bound"] == 20.0


def test_stack_flow_is_centred_and_clamped():
    fields = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 2, 1, 1)
    stacks = stack_flow(fields, torch.tensor([0, 3, 5]), stack=3)
    assert stacks[:, 0::2, 0, 0].tolist() == [[0, 0, 1], [2, 3, 4], [4, 4, 4]]
    assert torch.equal(stacks[:, 0::2], stacks[:, 1::2])  # x1, y1, x2, y2, ...
    with pytest.raises(FlowError):
        stack_flow(torch.zeros(0, 2, 4, 4), torch.tensor([0]), stack=3)


# -- options, meta round trip -------------------------------------------------------------------------


def test_channels_last_amp_and_meta_round_trip(tmp_path):
    base = build_backbone("tiny", features="spatial", device="cpu")
    x = base.preprocess(torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8))
    assert base.channels_last  # the default for image backbones
    nchw = build_backbone("tiny", features="spatial", channels_last=False)
    torch.testing.assert_close(nchw.forward_features(x), base.forward_features(x))
    amp = build_backbone("tiny", features="spatial", amp="bf16", device="cpu")
    out = amp.forward_features(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, base.forward_features(x), rtol=0.05, atol=0.05)
    rebuilt = build_backbone_from_meta(base.meta)
    assert rebuilt.meta == base.meta and torch.equal(rebuilt.forward_features(x), base.forward_features(x))
    flow_file = tmp_path / "flow.pt"
    torch.save(build_flow_backbone("tiny", stack=3, device="cpu").state_dict(), flow_file)
    flow = build_flow_backbone("tiny", stack=3, weights=flow_file, features="spatial", device="cpu")
    assert build_backbone_from_meta(json.loads(json.dumps(flow.meta))).meta == flow.meta  # JSON-able
    torch.save({"other": torch.zeros(1)}, flow_file)
    with pytest.raises(BackboneError, match="missing or changed since the store was made"):
        build_backbone_from_meta(flow.meta)
    grey = build_backbone("tiny", in_channels=1, device="cpu")
    assert grey.preprocess(torch.zeros(2, 64, 64, 1, dtype=torch.uint8)).shape == (2, 1, 64, 64)
    assert np.isclose(grey.meta["mean"][0], np.mean(base.meta["mean"]))


def test_cpu_builds_keep_freed_memory_on_glibc(monkeypatch):
    """The build itself applies the allocator settings (the once-per-process flag is reset first: a
    build earlier in this process, or this test calling the function, would hide a build that stopped)."""
    monkeypatch.delenv("STPIPE_MALLOC_TUNING", raising=False)
    monkeypatch.setattr(allocator, "_done", None)
    build_backbone("tiny", device="cpu")
    assert allocator._done is (platform.libc_ver()[0] == "glibc" and sys.platform.startswith("linux"))


def test_trainable_on_request():
    backbone = build_backbone("tiny", device="cpu").requires_grad_(True)
    out = backbone.forward_features(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert first_conv(backbone).weight.grad is not None


# -- real weights (assets) ------------------------------------------------------------------------------


@pytest.mark.assets
def test_mobilenet_v2_real_weights_match_torchvision(mv2_home, assets_dir):
    weights = get_model_weights("mobilenet_v2").IMAGENET1K_V1
    backbone = build_backbone("mobilenet_v2", weights="IMAGENET1K_V1", features="spatial", device="cpu")
    transforms = weights.transforms()
    meta = backbone.meta
    assert meta["weights"] == "IMAGENET1K_V1" and meta["weights_file"] == MV2_FILE
    assert meta["input_size"] == transforms.crop_size * 2 and meta["resize_size"] == transforms.resize_size
    assert meta["mean"] == transforms.mean and meta["std"] == transforms.std
    assert (
        meta["interpolation"] == transforms.interpolation.value and meta["antialias"] == transforms.antialias
    )
    assert meta["feature_shape"] == [1280, 7, 7]

    frames = torch.randint(0, 256, (2, 180, 240, 3), dtype=torch.uint8)
    x = backbone.preprocess(frames)
    expected_x = transforms(frames.permute(0, 3, 1, 2))
    assert_within_one_uint8_level(x, expected_x, transforms.std)
    model = torchvision.models.mobilenet_v2(weights=weights).eval()  # torchvision's own loading
    with torch.no_grad():
        logits = model(x)
    features = backbone.forward_features(x)
    assert features.shape == (2, 1280, 7, 7)
    torch.testing.assert_close(backbone.forward_head(features), logits, rtol=1e-4, atol=1e-4)

    # the same file given as a path: same weights, the file's sha256 prefix, the V1 preprocessing
    by_path = build_backbone("mobilenet_v2", weights=assets_dir / "weights" / MV2_FILE, device="cpu")
    assert by_path.meta["weights_sha256"].startswith("b0353104") and by_path.meta["resize_size"] == [256]
    torch.testing.assert_close(by_path.forward_features(x), features.mean((2, 3)))
    flow = build_flow_backbone("mobilenet_v2", weights="IMAGENET1K_V1", device="cpu")
    rgb_stem = first_conv(backbone).weight
    assert torch.equal(first_conv(flow).weight, rgb_stem.mean(1, keepdim=True).expand(-1, 10, -1, -1))
