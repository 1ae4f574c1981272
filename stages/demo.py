"""`stpipe demo`: the whole pipeline on generated videos, offline, in minutes on a 2-core laptop.

demo data (10 classes in 5 time-reversed pairs) -> `extract` (MobileNetV2 7x7 spatial maps,
TV-L1 flow and flow-stream features, on an embedded local Ray) -> `ablate` over every head, rgb
and flow, 3 seeds -> summary table and plot.

Sizes (chosen so the whole demo takes minutes on two CPU cores, and so the result is clear):
30 videos per class (22 train, 8 val) of 10 frames at 112x112 (the backbone sees 224 crops either
way; 9 per class were too few: every rgb head stayed near chance), TV-L1 at 64 px with the
`tvl1-fast` preset, one extraction worker per core (a Ray worker runs torch on one thread), one
8-segment setting, and short training on standardised features, batch 32, with each head's recipe
(pipeline/heads/recipes.py, `stpipe heads`: AdamW, half-cosine lr, per-head lr, weight decay,
epochs, projection width, dropout and temporal centring chosen from recorded sweeps on this
demo's cache). The SGD recipe of Köpüklü et al. (lr 1e-3, plateau drops) needs far more steps than 7
batches an epoch give; it stays available as `recipe: paper`.

Weights: `auto` uses torchvision's ImageNet weights when their file is in the torch cache, first
copying it there from `$STPIPE_ASSETS/weights/` when present; otherwise the backbone is randomly
initialised. Nothing is downloaded. Re-running with the same -o resumes every step.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.ablation import AblateConfig
from pipeline.config import arg, config_to_dict, read_yaml, save_config
from pipeline.demo_data import DemoDataConfig, generate
from pipeline.errors import ConfigError
from pipeline.extraction import ExtractConfig
from pipeline.progress import Note, Progress, emitter

DATA_FIELDS = ("videos_per_class", "frames", "size", "seed")


@dataclass(frozen=True)
class DemoConfig:
    out: str = arg("demo", "Folder for data, store and ablation.", short="-o")
    # demo data
    videos_per_class: int = 30
    frames: int = 10
    size: int = 112
    seed: int = 0
    # extract
    backbone: str = "mobilenet_v2"
    weights: str = arg("auto", "auto (ImageNet weights when in the torch cache or $STPIPE_ASSETS/weights, else random "
                               "init), none, or a file.")
    flow_method: str = "tvl1-fast"
    flow_short_side: int = 64
    extract_workers: int = 0  # 0 = one per CPU core, at most 4
    # ablate
    heads: tuple[str, ...] = ("all",)
    segments: tuple[int, ...] = (8,)
    modalities: tuple[str, ...] = ("rgb", "flow")
    seeds: tuple[int, ...] = arg((0, 1, 2), "Comma-separated seeds of the ablation.")
    # lr, weight decay, epochs, proj_dim, dropout, temporal_center (AdamW, cosine): each head's recipe
    train: dict[str, Any] = field(default_factory=lambda: {"standardize": True, "batch_size": 32})
    executor: Literal["ray", "local"] = arg("ray", "ray (embedded local Ray) or local.")
    cpus_per_trial: float = 1.0
    # bf16 autocast for the backbone where the hardware runs bf16 natively (CUDA with bf16, CPUs with
    # AVX512-BF16/AMX), float32 elsewhere: on such a CPU it halves the backbone's time
    # (features are stored float16 either way). The heads train in float32: under CPU bf16 autocast
    # mtconv's loss went NaN in its first epoch (benchmarks/README.md, "bf16 on the CPU")
    amp: bool = True
    # per-trial curves/confusion PNGs: ~0.9 CPU-s each, ~40 s of the demo's 84 trials on 2 cores; the
    # table, summary.md and the accuracy-vs-MACs plot are what the demo shows
    trial_plots: bool = False

    def __post_init__(self) -> None:
        DemoDataConfig(out=self.out, videos_per_class=self.videos_per_class, frames=self.frames, size=self.size)


@dataclass
class DemoResult:
    out: Path
    weights: str  # what the backbone was built with
    weights_note: str  # one line saying where they came from
    videos: int
    extract_seconds: float
    ablate: Any  # stages.ablate.AblateResult
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)
    finding: str = ""  # the order-blind TSN next to order-aware heads, per modality


ORDER_AWARE = ("mlp", "trn_multiscale", "fcn3d")  # Köpüklü et al.'s comparison (sec. 4.3)


def order_finding(rows: list[dict[str, Any]]) -> str:
    """'rgb 8 seg.: tsn 48.9% vs mlp 96.7%, ...' for every setting where tsn and some of them ran."""
    from pipeline.ablation.report import aggregate

    cells = aggregate(rows)
    parts = []
    for (head, setting), cell in cells.items():
        if head != "tsn" or not (cell.runs or cell.collapsed):
            continue
        aware = [(h, cells[(h, setting)]) for h in ORDER_AWARE
                 if (h, setting) in cells and (cells[(h, setting)].runs or cells[(h, setting)].collapsed)]
        if aware:
            versus = ", ".join(f"{h} {_top1(c)}" for h, c in aware)
            parts.append(f"{setting[1]} {setting[0]} seg.: order-blind tsn {_top1(cell)} vs {versus}")
    return "; ".join(parts)


def _top1(cell) -> str:
    return f"{cell.mean:.1f}%" if cell.runs else "collapsed (did not train)"


def resolve_weights(backbone: str, weights: str) -> tuple[str, str]:
    """(weights for build_backbone, a note saying which). `auto` never touches the network."""
    if weights != "auto":
        return weights, f"weights {weights} (as given)"
    from pipeline.backbones import BACKBONES
    from pipeline.backbones.weights import cache_path, url_filename

    enum_cls = BACKBONES.meta(backbone).weights_enum
    members = list(enum_cls) if enum_cls is not None else []
    for member in members:
        if cache_path(member).is_file():
            return member.name, f"ImageNet weights {member.name} from the torch cache ({cache_path(member)})"
    assets = os.environ.get("STPIPE_ASSETS")
    for member in members:
        source = Path(assets or "", "weights", url_filename(member))
        if assets and source.is_file():
            target = cache_path(member)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target.with_suffix(".part"))
            target.with_suffix(".part").replace(target)
            return member.name, f"ImageNet weights {member.name}, copied from {source} into the torch cache"
    where = cache_path(members[0]).parent if members else "the torch cache"
    return "none", f"randomly initialised backbone (no {backbone} ImageNet weights in {where})"


def extract_config(cfg: DemoConfig, manifest: Path, weights: str) -> ExtractConfig:
    return ExtractConfig(manifest=str(manifest), output=str(Path(cfg.out) / "features.zarr"), backbone=cfg.backbone,
                         weights=weights, features="spatial", flow=True, flow_features=True,
                         flow_method=cfg.flow_method, flow_short_side=min(cfg.flow_short_side, cfg.size),
                         amp="bf16" if cfg.amp and native_bf16() else "",
                         executor=cfg.executor, workers=cfg.extract_workers or min(4, os.cpu_count() or 1))


def ablate_config(cfg: DemoConfig) -> AblateConfig:
    return AblateConfig(store=str(Path(cfg.out) / "features.zarr"), out=str(Path(cfg.out) / "ablation"),
                        heads=cfg.heads, segments=cfg.segments, modalities=cfg.modalities, seeds=cfg.seeds,
                        train=dict(cfg.train), executor=cfg.executor, cpus_per_trial=cfg.cpus_per_trial,
                        trial_plots=cfg.trial_plots)


def native_bf16() -> bool:
    """Whether the device the demo will run on (CUDA when present, else the CPU) has native bf16."""
    import torch

    from pipeline.device import cpu_has_native_bf16

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def run(cfg: DemoConfig, *, progress: Progress | None = None) -> DemoResult:
    """The demo's own lines are Notes from "demo"; extract's and ablate's events pass through."""
    from stages import ablate, extract

    emit = emitter(progress)
    started = time.perf_counter()
    out = Path(cfg.out)
    _check_saved(cfg, out)
    weights, weights_note = _store_weights(out) or resolve_weights(cfg.backbone, cfg.weights)
    emit(Note(f"backbone {cfg.backbone}: {weights_note}", source="demo"))
    steps = {}
    manifest = out / "data" / "manifest.csv"
    if not manifest.is_file():
        data = generate(DemoDataConfig(out=str(out / "data"), videos_per_class=cfg.videos_per_class,
                                       frames=cfg.frames, size=cfg.size, seed=cfg.seed))
        emit(Note(f"demo data: {data.num_videos} videos ({data.glyphs}) -> {data.manifest}", source="demo"))
    steps["data"] = time.perf_counter() - started
    with _session(cfg):  # one embedded Ray for both stages
        mark = time.perf_counter()
        extracted = extract.run(extract_config(cfg, manifest, weights), progress=progress)
        steps["extract"] = time.perf_counter() - mark
        if extracted.failed:
            emit(Note(f"extract: {extracted.failed} video(s) failed; the ablation uses the others", source="demo"))
        mark = time.perf_counter()
        result = ablate.run(ablate_config(cfg), progress=progress)
        steps["ablate"] = time.perf_counter() - mark
    from pipeline.ablation.results import read_results

    return DemoResult(out=out, weights=weights, weights_note=weights_note, videos=extracted.total,
                      extract_seconds=extracted.seconds, ablate=result, seconds=time.perf_counter() - started,
                      steps=steps, finding=order_finding(read_results(result.results)))


def _store_weights(out: Path) -> tuple[str, str] | None:
    """The weights an earlier run of this demo extracted with (resuming must not switch them)."""
    from pipeline.errors import StoreError
    from pipeline.store import FeatureStore

    try:
        recorded = FeatureStore.open(str(out / "features.zarr")).meta.get("config", {}).get("weights")
    except StoreError:
        return None
    return (recorded, f"weights {recorded}, as the features extracted earlier in {out}") if recorded else None


def _session(cfg: DemoConfig):
    import contextlib

    if cfg.executor != "ray":
        return contextlib.nullcontext()
    from pipeline.distributed import ray_session

    return ray_session("")


def _check_saved(cfg: DemoConfig, out: Path) -> None:
    """A demo folder holds one demo: other data sizes or backbone would mix two runs."""
    path = out / "demo.yaml"
    mine = config_to_dict(cfg)
    if path.is_file():
        saved = read_yaml(path)
        fixed = DATA_FIELDS + ("backbone", "weights", "flow_method", "flow_short_side", "amp")
        diff = [k for k in fixed if saved.get(k) != mine.get(k)]
        if diff:
            raise ConfigError(f"{out}: holds a demo made with other settings (differs in: {', '.join(diff)}); "
                              "use another -o")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, path)


