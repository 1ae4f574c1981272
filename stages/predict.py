"""Classify videos with a trained run: `run(cfg) -> PredictResult`.

The videos go through stage one's own work unit (`Extractor`) with the extract config recorded in
the run's store, into a temporary store, so their features are made exactly as the training
features were (same backbone and weights, frame selection, views, flow); then the run's head
scores them, averaging all views' logits, and the top-k classes come back with softmax
probabilities. A video that cannot be decoded gets its one-line error instead of a prediction.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import DEVICE, STORAGE_OPTIONS, arg, from_dict
from pipeline.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from pipeline.extraction import ExtractConfig
    from pipeline.store import FeatureStore


@dataclass(frozen=True)
class PredictConfig:
    run: str = arg("", "Run directory from `stpipe train-head`.", required=True)
    videos: tuple[str, ...] = arg((), positional=True)
    checkpoint: str = arg("checkpoint.pt", "checkpoint.pt (best) or last.pt.")
    store: str = arg("", "Store whose extract config makes the features (default: the run's).", short="-s")
    storage_options: dict[str, Any] = arg(help=STORAGE_OPTIONS, factory=dict)
    device: str = arg("auto", DEVICE)
    top_k: int = arg(5, "Classes to show per video.")

    def __post_init__(self) -> None:
        if not self.run:
            raise ConfigError("predict needs a run dir (--run)")
        if not self.videos:
            raise ConfigError("predict needs at least one video")
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        for video in self.videos:
            if not Path(video).exists():
                raise ConfigError(f"{video}: no such video file or frame folder")


@dataclass
class Prediction:
    video: str
    top: list[dict[str, Any]]  # [{"class": name, "probability": p}], best first
    error: str = ""


@dataclass
class PredictResult:
    predictions: list[Prediction]
    seconds: float

    @property
    def failed(self) -> int:
        return sum(1 for p in self.predictions if p.error)


def extract_config_of(store: FeatureStore, *, output: str, device: str) -> ExtractConfig:
    """The ExtractConfig that made `store` (its recorded content fields), writing to `output`."""
    from pipeline.extraction.config import ExtractConfig

    content = store.meta.get("content") or store.meta.get("config") or {}
    if "backbone" not in content:
        raise StoreError(f"{store.url}: records no extract config (imported features?); predict cannot remake them")
    known = {k: v for k, v in content.items() if k in ExtractConfig.content_fields}
    return from_dict(ExtractConfig, {**known, "manifest": "<predict>", "output": output, "executor": "local",
                                     "device": device}, source=f"{store.url} extract config")


def run(cfg: PredictConfig) -> PredictResult:
    # here, not at the top: the CLI reads PredictConfig's fields without importing torch
    from pipeline.cpus import apply_threads
    from pipeline.extraction import Extractor, VideoJob
    from pipeline.extraction.models import load_models
    from pipeline.store import FeatureStore
    from pipeline.training.data import load_split
    from pipeline.training.loop import make_source, num_views, predict
    from pipeline.training.trained import TrainedRun

    started = time.perf_counter()
    apply_threads()
    trained = TrainedRun.open(cfg.run, cfg.checkpoint)
    source_store = trained.open_store(cfg.store, cfg.storage_options)
    with tempfile.TemporaryDirectory(prefix="stpipe-predict-") as tmp:
        extract_cfg = extract_config_of(source_store, output=str(Path(tmp) / "features.zarr"), device=cfg.device)
        models = load_models(extract_cfg)
        device = models.device
        store = FeatureStore.create(extract_cfg.output, provenance={**source_store.meta, "manifest_sha256": ""})
        ids = [f"{i:06d}" for i in range(len(cfg.videos))]
        jobs = [VideoJob(video_id=vid, path=str(Path(path).absolute()), label=None, label_index=-1, split="predict")
                for vid, path in zip(ids, cfg.videos)]
        with Extractor(extract_cfg, store, device=device, backbone=models.backbone, flow_method=models.flow_method,
                       flow_backbone=models.flow_backbone) as extractor:
            stats = extractor.process(jobs)
        store.write_index()
        errors = {f.video_id: f.error for f in stats.failures}
        scores = {}
        if len(errors) < len(ids):
            trained.check(store, split="predict", url=str(source_store.url), own_classes=True)
            split = load_split(store, "predict", streams=trained.config.streams, pooled=trained.pooled, labelled=False)
            src = make_source(split, device=device, num_segments=trained.segments, stats=trained.stats(), max_batch=64)
            logits, _ = predict(trained.model(device), src, views=num_views(split), batch_size=64)
            scores = dict(zip(split.video_ids.tolist(), logits.softmax(dim=1).cpu()))
    classes = trained.classes
    predictions = []
    for vid, path in zip(ids, cfg.videos):
        if vid not in scores:
            predictions.append(Prediction(video=path, top=[], error=errors.get(vid, "no features extracted")))
            continue
        probs, idx = scores[vid].topk(min(cfg.top_k, len(classes)))
        predictions.append(Prediction(video=path, top=[{"class": classes[i], "probability": float(p)}
                                                       for p, i in zip(probs.tolist(), idx.tolist())]))
    return PredictResult(predictions=predictions, seconds=time.perf_counter() - started)
