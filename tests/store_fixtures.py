"""Synthetic feature stores for stage-two tests: tiny, fast, and learnable only from temporal order.

Classes come in time-reversed pairs: class 2k runs from pattern A_k to pattern B_k over the video,
class 2k+1 from B_k to A_k. Both see the same frames on average, so an order-blind head (TSN's
average of per-frame scores) is at chance within a pair, while order-aware heads separate them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from pipeline.store import Failure, FeatureStore, config_hash


def make_store(
    url: str,
    *,
    num_classes: int = 4,
    per_class: dict[str, int] | None = None,
    dim: int = 16,
    views: int = 2,
    spatial: tuple[int, int] | None = None,
    flow_features: bool = False,
    flow_dim: int | None = None,
    lengths: tuple[int, int] = (5, 20),
    noise: float = 0.3,
    failed: Sequence[str] = (),
    incomplete: Sequence[str] = (),
    unlabelled_split: str = "",
    seed: int = 0,
    cnn_like: bool = False,
    group_of: Callable[[str, int, int], str] | None = None,
) -> FeatureStore:
    """A store with `per_class[split]` videos per class and split (default train 12, val 6, test 4).

    `failed` ids are recorded as failures, `incomplete` ids get arrays but no `complete` mark (both
    in the train split); `unlabelled_split` videos carry label -1. `cnn_like`: non-negative,
    uncentred features like a CNN's pooled ReLU outputs (a per-channel level in [0, 0.6] that every clip
    shares, plus |x| / 10 for the clip), not centred Gaussians. `group_of(split, class, k)`: each video's group.
    """
    per_class = per_class or {"train": 12, "val": 6, "test": 4}
    rng = np.random.default_rng(seed)
    classes = [f"class_{c}" for c in range(num_classes)]
    flow_dim = flow_dim or dim
    backbone = {"name": "synthetic", "features": "spatial" if spatial else "pooled", "dim": dim,
                "spatial_size": list(spatial) if spatial else None}
    config = {"backbone": "synthetic", "features": backbone["features"], "dim": dim, "seed": seed,
              "flow_features": flow_features, "spatial": list(spatial) if spatial else None}
    provenance = {"classes": classes, "backbone": backbone, "config": config, "config_hash": config_hash(config),
                  "flow": {"features": True, "dim": flow_dim} if flow_features else None,
                  "views": {"scheme": "synthetic", "count": views}}
    store = FeatureStore.create(url, provenance=provenance)
    patterns = rng.normal(size=(num_classes // 2 + 1, 2, dim)).astype(np.float32)
    flow_patterns = rng.normal(size=(num_classes // 2 + 1, 2, flow_dim)).astype(np.float32)
    level = np.random.default_rng(seed + 1).uniform(0.0, 0.6, size=(dim, 1, 1) if spatial else dim)
    for split, count in per_class.items():
        for c in range(num_classes):
            for k in range(count):
                video_id = f"{split}/{classes[c]}/{k:03d}"
                length = int(rng.integers(lengths[0], lengths[1] + 1))
                if video_id in failed:  # a failed video has no group, only a failure record
                    store.record_failure(Failure(video_id, f"{video_id}.mp4", "decode", "synthetic failure", 1))
                    continue
                label = -1 if split == unlabelled_split else c
                group = {"group": group_of(split, c, k)} if group_of else {}
                writer = store.begin_video(video_id, {"label": classes[c] if label >= 0 else "",
                                                      "label_index": label, "split": split, **group})
                rgb = _features(rng, patterns, c, length, views, spatial, noise)
                if cnn_like:
                    rgb = (np.abs(rgb.astype(np.float32)) / 10 + level).astype(np.float16)
                writer.write("rgb", rgb,
                             dims=_dims(spatial), time_axis=1)
                if flow_features:
                    writer.write("flow_feat", _features(rng, flow_patterns, c, length - 1, views, spatial, noise),
                                 dims=_dims(spatial), time_axis=1)
                if video_id not in incomplete:
                    writer.finish(num_frames=length)
    store.write_index()
    return store


def _features(rng, patterns, label, length, views, spatial, noise) -> np.ndarray:
    """(views, time, dim[, y, x]): a ramp from one pattern to the other, direction set by the label."""
    a, b = patterns[label // 2]
    if label % 2:
        a, b = b, a
    p = np.linspace(0.0, 1.0, max(length, 1), dtype=np.float32)[:, None]
    base = (1 - p) * a + p * b  # (time, dim)
    out = base[None] + noise * rng.normal(size=(views, *base.shape)).astype(np.float32)
    if spatial:
        h, w = spatial
        out = out[..., None, None] + 0.1 * rng.normal(size=(*out.shape, h, w)).astype(np.float32)
    return out.astype(np.float16)


def _dims(spatial) -> tuple[str, ...]:
    return ("view", "time", "channel", "y", "x") if spatial else ("view", "time", "channel")
