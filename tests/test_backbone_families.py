"""timm:, open_clip: and torchvision: backbones (random init, small models): pooled and spatial
features equal to the library's own outputs, through `stpipe extract` and `train-head`; weights
from a filled offline cache only; a changed preprocessing refuses a resume; the missing extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.backbones import BACKBONES, build_backbone
from pipeline.errors import BackboneError, StoreError
from pipeline.extraction import ExtractConfig
from pipeline.store import FeatureStore, video_key
from stages import extract

timm = pytest.importorskip("timm")
open_clip = pytest.importorskip("open_clip")

ROOT = Path(__file__).resolve().parents[1]


def _x(backbone, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, 3, *backbone.meta["input_size"]), generator=g)


# -- features equal the libraries' own --------------------------------------------------------------


def test_timm_vit_pooled_is_the_models_pre_logits_and_spatial_the_patch_grid():
    pooled = build_backbone("timm:test_vit", weights="none")
    spatial = build_backbone("timm:test_vit", weights="none", features="spatial")
    model = pooled.trunk.model
    x = _x(pooled)
    with torch.no_grad():
        tokens = model.forward_features(x)
        want = model.forward_head(tokens, pre_logits=True)
        logits = model(x)
    assert model.global_pool == "token"  # test_vit pools its class token: pooled is that token, normed
    torch.testing.assert_close(pooled.forward_features(x), want)
    torch.testing.assert_close(pooled(x), logits, rtol=1e-4, atol=1e-4)  # the classifier on top
    # spatial: the patch tokens (class token dropped) on their 10x10 grid, same weights (seeded init)
    spatial.load_state_dict(pooled.state_dict())
    grid = spatial.forward_features(x)
    assert grid.shape == (2, 64, 10, 10) and spatial.meta["feature_shape"] == [64, 10, 10]
    torch.testing.assert_close(grid.flatten(2).transpose(1, 2), tokens[:, 1:])
    assert pooled.meta["pooled_dim"] == 64 and pooled.meta["source"] == "timm"


def test_timm_register_tokens_are_dropped_from_the_map():
    from pipeline.backbones.backbone import Backbone
    from pipeline.backbones.timm_family import split

    model = timm.create_model("test_vit", reg_tokens=3, pretrained=False).eval()
    assert model.num_prefix_tokens == 4
    backbone = Backbone(split(model), features="spatial", kind="image")
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        tokens = model.forward_features(x)
    torch.testing.assert_close(backbone.forward_features(x).flatten(2).transpose(1, 2), tokens[:, 4:])


def test_timm_cnn_and_its_preprocessing():
    backbone = build_backbone("timm:resnet10t", weights="none", features="spatial")
    meta = backbone.meta
    # resnet10t's pretrained cfg: 176 px, crop_pct 0.875 -> resize floor(176 / 0.875) = 201, bicubic
    assert meta["input_size"] == [176, 176] and meta["resize_size"] == [201]
    assert meta["interpolation"] == "bicubic" and meta["mean"] == [0.485, 0.456, 0.406]
    model = backbone.trunk.model
    x = _x(backbone)
    torch.testing.assert_close(backbone.forward_features(x), model.forward_features(x))


def test_open_clip_pooled_is_the_image_embedding_and_spatial_the_normed_patch_tokens():
    pooled = build_backbone("open_clip:ViT-S-32", weights="none")
    spatial = build_backbone("open_clip:ViT-S-32", weights="none", features="spatial")
    spatial.load_state_dict(pooled.state_dict())
    visual = pooled.trunk.model
    x = _x(pooled, n=1)
    with torch.no_grad():
        embedding = visual(x)
        tokens = visual.transformer(visual._embeds(x))
    torch.testing.assert_close(pooled.forward_features(x), embedding, rtol=1e-4, atol=1e-4)
    assert pooled.meta["feature_shape"] == [384]  # ViT-S-32's embed_dim
    grid = spatial.forward_features(x)
    assert grid.shape == (1, 384, 7, 7)
    torch.testing.assert_close(grid.flatten(2).transpose(1, 2), visual.ln_post(tokens[:, 1:]), rtol=1e-4, atol=1e-4)
    # CLIP preprocessing: bicubic, shorter side to 224 then the 224 centre crop, OpenAI mean/std
    meta = pooled.meta
    assert meta["interpolation"] == "bicubic" and meta["resize_size"] == [224] and meta["input_size"] == [224, 224]
    assert meta["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert pooled.head is None


def test_open_clip_tag_preprocessing_comes_from_the_pretrained_config():
    from pipeline.backbones.open_clip_family import preset

    tag = open_clip.get_pretrained_cfg("ViT-B-16-SigLIP", "webli")
    got = preset("x", open_clip.get_model_config("ViT-B-16-SigLIP"), tag)
    assert got["mean"] == [0.5, 0.5, 0.5] and got["resize_size"] == [224, 224]  # SigLIP squashes
    with pytest.raises(BackboneError, match="names no pretrained weights"):
        build_backbone("open_clip:ViT-S-32")  # DEFAULT, but no tag: not a silent random init
    with pytest.raises(BackboneError, match="has no pretrained tag 'nope'; tags: openai"):
        build_backbone("open_clip:ViT-B-16/nope", weights="none")


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "regnet_x_400mf", "vit_b_16", "mc3_18"])
def test_torchvision_any_model_splits_back_to_the_same_logits(name):
    from torchvision.models import get_model

    backbone = build_backbone(f"torchvision:{name}", weights="none")
    torch.manual_seed(0)  # random init is seeded with 0 (the same network in every run)
    model = get_model(name).eval()
    video = backbone.kind == "video"
    x = torch.randn(1, 3, *([4] if video else []), *backbone.meta["input_size"])
    with torch.no_grad():
        want = model(x)
    if video:  # the trunk averages time before the pool: the same global mean as the model's
        torch.testing.assert_close(backbone(x), want, rtol=1e-4, atol=1e-4)
        return
    torch.testing.assert_close(backbone(x), want, rtol=1e-4, atol=1e-4)
    spatial = build_backbone(f"torchvision:{name}", weights="none", features="spatial")
    assert spatial.forward_features(x).shape[1:] == tuple(spatial.meta["feature_shape"])


def test_unknown_names_and_unsupported_architectures_are_one_line():
    with pytest.raises(BackboneError, match="timm has no model 'vit_nope'"):
        build_backbone("timm:vit_nope")
    with pytest.raises(BackboneError, match="no tag 'nope'; tags: "):
        build_backbone("timm:resnet10t.nope")
    with pytest.raises(BackboneError, match="torchvision:mvit_v2_s: no feature split"):
        build_backbone("torchvision:mvit_v2_s", weights="none")
    assert BACKBONES.meta("torchvision:mobilenet_v2").kind == "image"
    assert BACKBONES.meta("torchvision:r3d_18").clip_window == 16


def test_a_missing_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    monkeypatch.setattr(BACKBONES, "_resolved", {})
    with pytest.raises(BackboneError, match=r"needs the timm package: pip install 'stpipe-video\[timm\]'"):
        BACKBONES.meta("timm:resnet18")


# -- through the CLI: extract and train-head ------------------------------------------------------------


def decoded_as_stage_one(path, backbone) -> torch.Tensor:
    """A video's frames as stage one decodes them: straight to the backbone's resize size in FFmpeg's
    scaler with the weights' interpolation (CLIP's bicubic); the crop is the backbone's own."""
    from pipeline.decoding.core import SCALER, resized_size
    from pipeline.video import iter_frames, probe

    info = probe(path)
    size = resized_size(info.width, info.height, tuple(backbone.meta["resize_size"]))
    interpolation = SCALER[getattr(backbone.preprocessor.interpolation, "value", "bilinear")]
    frames = [arrays[0] for _, arrays in iter_frames(path, info, np.arange(info.num_frames), [size],
                                                     interpolation=interpolation)]
    return torch.from_numpy(np.stack(frames))


@pytest.mark.parametrize(
    ("name", "features", "head"),
    [("timm:test_vit", "spatial", "convlstm"), ("timm:resnet10t", "pooled", "mlp"),
     ("open_clip:ViT-S-32", "pooled", "gru"), ("open_clip:ViT-S-32", "spatial", "fcn3d")],
)  # fmt: skip
def test_extract_and_train_head(demo, tmp_path, stpipe, name, features, head):
    store = tmp_path / "s.zarr"
    code, out, err = stpipe(["extract", "-m", demo / "manifest.csv", "-o", store, "--backbone", name,
                             "--weights", "none", "--features", features, "--executor", "local",
                             "--batch-size", "16"])  # fmt: skip
    assert code == 0, err
    opened = FeatureStore.open(str(store))
    meta = opened.meta["backbone"]
    assert meta["name"] == name and meta["features"] == features and meta["library"].split()[0] in name
    rgb = opened.read("moving_left_000", "rgb")
    assert rgb.shape[2:] == tuple(meta["feature_shape"])
    # the stored features are the backbone's on the decoded frames
    backbone = build_backbone(name, weights="none", features=features)
    frames = decoded_as_stage_one(demo / "videos" / "moving_left_000.mp4", backbone)
    want = backbone.forward_features(backbone.preprocess(frames)).numpy()
    np.testing.assert_allclose(rgb[0].astype(np.float32), want, rtol=1e-2, atol=1e-2)
    code, out, err = stpipe(["train-head", "-s", store, "--head", head, "--segments", "3", "--epochs", "1",
                             "--batch-size", "8", "-o", tmp_path / "run"])  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "run").is_dir()


def test_stpipe_backbones_name_prints_the_preprocessing(stpipe):
    code, out, _ = stpipe(["backbones", "timm:test_vit"])
    assert code == 0
    assert "resize [168] bicubic" in out and "centre crop 160" in out and "timm pretrained_cfg test_vit.r160_in1k" in out
    assert "pooled (64,), spatial (64, 10, 10)" in out and "GMACs per frame" in out
    code, out, _ = stpipe(["backbones"])
    assert "timm:NAME" in out and "open_clip:NAME" in out and "torchvision:NAME" in out


def test_a_resume_with_different_preprocessing_is_refused(demo, tmp_path, monkeypatch):
    from pipeline.backbones import timm_family

    cfg = ExtractConfig(manifest=str(demo / "manifest.csv"), output=str(tmp_path / "s.zarr"),
                        backbone="timm:test_vit", weights="none", executor="local", batch_size=16)  # fmt: skip
    extract.run(cfg)
    store = FeatureStore.open(cfg.output, mode="r+")  # a run killed before its last video
    store.invalidate_index()
    del store.root["videos"][video_key("moving_left_000")]
    real = timm_family.preset
    # a newer timm (or another plug-in) changing what the same name means: e.g. the mean/std
    monkeypatch.setattr(timm_family, "preset", lambda name, cfg: {**real(name, cfg), "mean": [0.4, 0.4, 0.4]})
    monkeypatch.setattr(BACKBONES, "_resolved", {})
    with pytest.raises(StoreError, match=r"now preprocesses differently .*mean \[0.5, 0.5, 0.5\] -> \[0.4, 0.4, 0.4\]"):
        extract.run(cfg)
    monkeypatch.setattr(timm_family, "preset", real)
    monkeypatch.setattr(BACKBONES, "_resolved", {})
    assert extract.run(cfg).skipped == 19  # the same preprocessing resumes


# -- weights from a filled offline cache, nothing fetched -----------------------------------------------

# run in a fresh interpreter: huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE when imported
_NO_NETWORK = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("network used during an offline test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from cli import main
main(sys.argv[1:])
"""


def _fake_hf_cache(root: Path, repo: str, filename: str, state: dict) -> Path:
    from safetensors.torch import save_file

    commit = "0" * 40
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / filename))
    return snapshot / filename


def test_weights_load_from_a_filled_offline_cache_without_network(demo, tmp_path):
    torch.manual_seed(123)  # weights nobody else has: the store must show these were loaded
    state = timm.create_model("test_vit", pretrained=False).state_dict()
    cached = _fake_hf_cache(tmp_path / "hub", "timm/test_vit.r160_in1k", "model.safetensors", state)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "TORCH_HOME": str(tmp_path / "torch")}  # fmt: skip
    store = tmp_path / "s.zarr"
    args = ["extract", "-m", str(demo / "manifest.csv"), "-o", str(store), "--backbone", "timm:test_vit.r160_in1k",
            "--executor", "local", "--batch-size", "16"]  # fmt: skip
    run = subprocess.run([sys.executable, "-c", _NO_NETWORK, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    meta = FeatureStore.open(str(store)).meta["backbone"]
    assert meta["weights"] == "DEFAULT" and meta["weights_file"] == str(cached) and meta["head_loaded"]
    direct = build_backbone("timm:test_vit", weights=str(cached))  # the same file, loaded directly
    random = build_backbone("timm:test_vit", weights="none")
    frames = decoded_as_stage_one(demo / "videos" / "moving_left_000.mp4", direct)
    got = FeatureStore.open(str(store)).read("moving_left_000", "rgb")[0].astype(np.float32)
    np.testing.assert_allclose(got, direct.forward_features(direct.preprocess(frames)).numpy(), rtol=1e-2, atol=1e-2)
    assert not np.allclose(got, random.forward_features(random.preprocess(frames)).numpy(), atol=1e-2)

    # an empty cache: one line naming the repository and file, still without network
    run = subprocess.run([sys.executable, "-c", _NO_NETWORK, *args[:4], str(tmp_path / "t.zarr"), *args[5:]],
                         cwd=ROOT, env={**env, "HF_HUB_CACHE": str(tmp_path / "empty")}, capture_output=True, text=True)
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not in the cache: Hugging Face hub timm/test_vit.r160_in1k file model.safetensors" in lines[0]
    assert "network used" not in run.stderr
    json.dumps(meta)  # provenance stays JSON


def test_a_local_open_clip_file_loads_its_image_tower(tmp_path):
    torch.manual_seed(7)
    clip = open_clip.create_model("ViT-S-32", pretrained=None).eval()
    path = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), path)  # the whole CLIP model: visual.* and the text tower's keys
    backbone = build_backbone("open_clip:ViT-S-32", weights=str(path))
    x = _x(backbone, n=1)
    with torch.no_grad():
        want = clip.encode_image(x)
    torch.testing.assert_close(backbone.forward_features(x), want, rtol=1e-4, atol=1e-4)
    assert backbone.meta["weights_sha256"] and backbone.meta["weights"] == str(path.resolve())
