"""What a fine-tune starts from: the head run, the store it was trained on, and the videos.

`prepare(cfg)` checks everything once, on the driver, and returns a plain, picklable `Setup` that
every training worker builds its model and data from:

- the head run (config.yaml, checkpoint.pt) gives the head spec and weights, segments, streams,
  standardisation stats and the signature of its store;
- the store must still be there and be the one the head saw (classes, feature shapes and extract
  config hash, checked with stage two's `check_signature`); its root attrs say exactly how the
  backbone was built (`build_backbone_from_meta`) and how frames were decoded, its per-video
  attrs which frames were cached (`frame_index`), and its `flow` arrays feed the motion stream;
- the manifest gives the video files; it must contain every video of the store's train and val
  splits (a manifest missing some is refused, naming the first).
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import BackboneError, ConfigError, ManifestError, StoreError
from pipeline.finetune.config import FinetuneConfig
from pipeline.heads import HEADS
from pipeline.splits import index_leak, leak_note
from pipeline.store import FeatureStore
from pipeline.store.urls import absolute
from pipeline.training.config import MODALITY_STREAMS
from pipeline.training.data import select_videos
from pipeline.training.trained import TrainedRun

READ_THREADS = 8


@dataclass(frozen=True)
class VideoRef:
    """One video as a training worker needs it: where to decode, which frames, where its flow is."""

    video_id: str
    path: str
    start: float | None
    end: float | None
    label: int
    key: str  # store key (flow arrays)
    frame_index: np.ndarray  # (n,) source ordinals of the cached frames, non-decreasing


@dataclass
class Setup:
    cfg: FinetuneConfig
    classes: list[str]
    streams: tuple[str, ...]
    segments: int
    head_state: dict[str, Any]  # the run's head weights (state dict of its model)
    head_spec: dict[str, Any]  # build_model spec of the fine-tuned head(s)
    head_sources: dict[str, str | None]  # head key -> key in the run's model (None: new head)
    run_spec: dict[str, Any]
    stats: dict[str, tuple[np.ndarray, np.ndarray]]  # {stream: (mean, std)} of the head run
    backbones: dict[str, dict[str, Any]]  # {stream: backbone meta for build_backbone_from_meta}
    store_url: str
    storage_options: dict[str, Any]
    signature: dict[str, Any]  # the store signature the head run recorded
    decode_short: int  # decode at this shorter side, as stage one did
    folder_fps: float
    flow_bound: float
    train: list[VideoRef]
    val: list[VideoRef]
    val_split: str
    notes: list[str] = field(default_factory=list)


def prepare(cfg: FinetuneConfig) -> Setup:
    run_dir = Path(cfg.run)
    trained = TrainedRun.open(run_dir)
    run_cfg, checkpoint, pooled = trained.config, trained.checkpoint, trained.pooled
    streams = MODALITY_STREAMS[cfg.modality] if cfg.modality else tuple(run_cfg.streams)
    store = trained.open_store()  # for the backbone record, the cached frame indices and the flow
    trained.check(store, url=run_cfg.store)
    meta = store.meta
    backbones = _backbone_metas(meta, streams, cfg, store.url)
    if cfg.fusion == "st-resnet" and streams != ("rgb", "flow"):
        raise ConfigError(f"--fusion st-resnet joins an appearance and a motion stream; this fine-tune has {list(streams)} "
                          "(use --modality rgb+flow)")
    head_spec, sources = _head_spec(checkpoint["spec"], streams, backbones, pooled=pooled, run=run_dir)
    _check_segments(cfg.segments, run_cfg.head, int(checkpoint["segments"]))
    stats = {s: v for s, v in trained.stats().items() if s in streams}
    extract = meta.get("config", {})
    resize = backbones[streams[0]]["resize_size"]
    decode_short = max(int(min(resize)), int(extract.get("flow_short_side", 0)) if extract.get("flow") else 0)
    val_split = cfg.val_split or run_cfg.val_split
    notes: list[str] = []
    train, val = _videos(cfg, store, val_split, notes)
    shared = index_leak(store.index(), "train", val_split)  # val picks the checkpoint: say when it leaks
    if shared:
        notes.append(leak_note(shared, "train", val_split))
    return Setup(
        cfg=cfg, classes=store.classes, streams=streams, segments=cfg.segments or int(checkpoint["segments"]),
        head_state=checkpoint["model"], head_spec=head_spec, head_sources=sources,
        run_spec=checkpoint["spec"], stats=stats, backbones=backbones, store_url=absolute(run_cfg.store),
        storage_options=dict(cfg.storage_options or run_cfg.storage_options), signature=checkpoint["store"],
        decode_short=decode_short, folder_fps=float(extract.get("folder_fps", 12.0)),
        flow_bound=float((meta.get("flow") or {}).get("bound", 20.0)), train=train, val=val, val_split=val_split,
        notes=notes,
    )  # fmt: skip


def _check_segments(asked: int, head: str, trained: int) -> None:
    meta = HEADS.meta(head)
    if asked and meta["fixed_length"] and asked != trained:
        raise ConfigError(f"--segments {asked}: head {head!r} was trained on {trained} segments and its weights "
                          "depend on the number; drop --segments")
    if asked and asked < meta["min_segments"]:
        raise ConfigError(f"--segments {asked}: head {head!r} needs at least {meta['min_segments']}")


def _backbone_metas(meta: dict[str, Any], streams: tuple[str, ...], cfg: FinetuneConfig, url: str) -> dict[str, dict]:
    rgb = dict(meta.get("backbone") or {})
    if "weights" not in rgb or "resize_size" not in rgb:
        raise StoreError(f"{url}: the store records no buildable backbone (made by `stpipe import` or another tool?); "
                         "finetune rebuilds the backbone stage one ran")
    if rgb.get("kind") != "image":
        raise BackboneError(f"finetune trains image backbones on sampled frames; {rgb.get('name')} is a "
                            f"{rgb.get('kind')} backbone")
    out = {}
    if "rgb" in streams:
        out["rgb"] = rgb
    if "flow" in streams:
        flow = meta.get("flow")
        if not flow:
            raise StoreError(f"{url}: the motion stream trains on the store's cached flow, but the store was extracted "
                             "without --flow")
        recorded = flow.get("backbone")
        out["flow"] = dict(recorded) if recorded else {  # the RGB backbone, cross-modality initialised (TSN)
            **{k: rgb[k] for k in ("name", "kind", "weights", "weights_sha256", "features", "resize_size",
                                   "input_size", "amp", "dim", "feature_shape", "spatial_size") if k in rgb},
            "modality": "flow", "in_channels": 2 * cfg.flow_stack, "flow_stack": cfg.flow_stack,
            "flow_bound": float(flow.get("bound", 20.0)),
        }  # fmt: skip
    return out


def _head_spec(run_spec: dict[str, Any], streams: tuple[str, ...], backbones: dict[str, dict], *, pooled: bool,
               run: Path) -> tuple[dict[str, Any], dict[str, str | None]]:
    """The head(s) to fine-tune: the run's own, or per-stream heads taken from / added to a late fusion."""
    heads = run_spec["heads"]
    if run_spec["fusion"] == "joint":
        have = tuple(next(iter(heads.values()))["streams"])
        if have != streams:
            raise ConfigError(f"run {run} has one joint head over {list(have)}; it cannot be fine-tuned as {list(streams)}")
        return copy.deepcopy(run_spec), {"joint": "joint"}
    template = next(iter(heads.values()))
    spec: dict[str, Any] = {"fusion": "late" if len(streams) > 1 else "single", "heads": {}}
    sources: dict[str, str | None] = {}
    for stream in streams:
        if stream in heads:
            spec["heads"][stream], sources[stream] = copy.deepcopy(heads[stream]), stream
            continue
        meta = backbones[stream]  # a stream the head run did not have: a new head of the same kind
        spatial = None if pooled else list(meta["spatial_size"])
        spec["heads"][stream] = dict(copy.deepcopy(template), in_dim=int(meta["feature_shape"][0]), spatial=spatial,
                                     streams=[stream])
        sources[stream] = None
    if "weights" in run_spec and set(streams) == set(heads):  # the run's own two heads: its chosen weights
        spec["weights"] = dict(run_spec["weights"])
    return spec, sources


def _videos(cfg: FinetuneConfig, store: FeatureStore, val_split: str, notes: list[str]):
    from manifests.table import read_manifest

    manifest = read_manifest(cfg.manifest, root=cfg.root or None)
    if list(manifest.classes) != store.classes:
        raise ManifestError(f"{cfg.manifest}: its {len(manifest.classes)} classes differ from the store's "
                            f"{len(store.classes)} (class order decides label indices); pass the store's manifest")
    entries = {e.video_id: e for e in manifest.entries}
    videos = store.root["videos"]
    out = []
    for split in ("train", val_split):
        ids, keys, labels, split_notes = select_videos(store, split)
        notes.extend(n for n in split_notes if n not in notes)
        missing = [v for v in ids.tolist() if v not in entries]
        if missing:
            raise ManifestError(f"{cfg.manifest}: {len(missing)} of the store's {len(ids)} {split} videos are not in "
                                f"this manifest (first: {missing[0]!r}); pass the manifest the store was made from")
        with ThreadPoolExecutor(READ_THREADS) as pool:
            frame_index = list(pool.map(lambda k: np.asarray(videos[str(k)].attrs["frame_index"], dtype=np.int64),
                                        keys.tolist()))
        refs = []
        for video_id, key, label, frames in zip(ids.tolist(), keys.tolist(), labels.tolist(), frame_index):
            entry = entries[video_id]
            refs.append(VideoRef(video_id=video_id, path=str(manifest.resolve(entry)), start=entry.start,
                                 end=entry.end, label=int(label), key=str(key), frame_index=frames))
        absent = [r for r in refs if not Path(r.path).exists()]
        if len(absent) == len(refs):
            raise ManifestError(f"{cfg.manifest}: none of the {len(refs)} {split} videos exists (first: {absent[0].path}); "
                                "check --root")
        if absent:
            notes.append(f"{len(absent)} {split} video file(s) are missing (first: {absent[0].path}); they are skipped "
                         "and counted")
        out.append(refs)
    return out[0], out[1]
