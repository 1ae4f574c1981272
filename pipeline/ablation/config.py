"""The ablate stage's config: the grid (heads x segments x modality x [hyper-parameters] x seeds), the
training settings every trial shares, and how the trials run (in-process or as Ray tasks with per-trial resources)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.config import RAY_ADDRESS, SKIP_DAMAGED, STORAGE_OPTIONS, arg
from pipeline.errors import ConfigError
from pipeline.training.config import MODALITY_STREAMS, TrainHeadConfig

# TrainHeadConfig fields an ablation sets per trial or for the whole run; `train` may not set them.
TRIAL_FIELDS = ("store", "storage_options", "out", "head", "segments", "modality", "seed", "device",
                "memory_budget_gb", "skip_damaged", "resume", "overwrite")


@dataclass(frozen=True)
class AblateConfig:
    store: str = arg("", "Feature store path or URL (from `stpipe extract`).", short="-s")
    storage_options: dict[str, Any] = arg(help=STORAGE_OPTIONS, factory=dict)
    out: str = arg("", "Ablation folder (trial run dirs, results.csv, summary.md, plot).", short="-o")
    # the grid
    heads: tuple[str, ...] = arg(("all",), "all (every head the store's features allow) or a comma-separated list.")
    segments: tuple[int, ...] = arg((8,), "Comma-separated segment counts, e.g. 8,16.")
    modalities: tuple[str, ...] = arg(("rgb",), "Comma-separated: rgb, flow, rgb+flow.", flag="--modality")
    seeds: tuple[int, ...] = arg((0, 1, 2), "Comma-separated seeds.")
    # what every trial shares: TrainHeadConfig fields (epochs, lr, batch_size, optimizer, fusion, ...);
    # fields left out come from each head's recipe (pipeline.heads.recipes)
    train: dict[str, Any] = arg(help='JSON object of further train-head settings, e.g. \'{"patience": 2}\'.', factory=dict,
                                flag="--train-options")
    # hyper-parameter axes swept for every head and setting: {TrainHeadConfig field: values}, e.g.
    # {"lr": [1e-3, 3e-3], "weight_decay": [0.01, 0.1]}; they override `train` and the recipes
    grid: dict[str, tuple] = field(default_factory=dict)
    # how it runs (free to change between resumed runs)
    executor: Literal["ray", "local"] = arg("ray", "ray (embedded or cluster) or local.")
    ray_address: str = arg("", RAY_ADDRESS)
    cpus_per_trial: float = arg(1.0, "CPUs per trial (also its torch threads).")
    gpus_per_trial: float | None = arg(None, "GPUs per trial, fractions share a GPU (default 0.25 with GPUs, else 0).")
    max_concurrent: int = arg(0, "Trials at once (0 = as many as resources fit).")
    max_retries: int = arg(1, "Retries of a crashed trial before it is reported failed.")
    device: str = arg("auto", "local executor: auto, cpu, cuda or cuda:N (Ray trials use the GPU they were given).")
    memory_budget_gb: float = arg(4.0, "Shared features above this stream from Zarr.")
    skip_damaged: bool = arg(False, SKIP_DAMAGED, negatable=False)
    # each trial's curves.png / confusion.png: ~0.9 s of a 2 s light-head trial on one CPU core
    # (metrics.json/jsonl hold the same numbers; summary.md and the ablation plot are always written)
    trial_plots: bool = arg(True, "Each trial's curves.png and confusion.png (~0.9 s of CPU per trial).")
    overwrite: bool = arg(False, "Re-run every trial (replaces their train-head run files).", negatable=False)

    def __post_init__(self) -> None:
        if not self.store:
            raise ConfigError("ablate needs a feature store (-s/--store)")
        if not self.out:
            raise ConfigError("ablate needs an output folder (-o/--out)")
        for name in ("heads", "segments", "modalities", "seeds"):
            values = getattr(self, name)
            if not values:
                raise ConfigError(f"--{name}: give at least one value")
            if len(set(values)) != len(values):
                raise ConfigError(f"--{name}: {list(values)} repeats a value")
        if "all" in self.heads and len(self.heads) > 1:
            raise ConfigError(f"--heads: 'all' cannot be combined with names, got {','.join(self.heads)}")
        bad = [m for m in self.modalities if m not in MODALITY_STREAMS]
        if bad:
            raise ConfigError(f"--modality: unknown {bad[0]!r}; choose from {', '.join(MODALITY_STREAMS)}")
        if min(self.segments) < 1:
            raise ConfigError(f"--segments must be >= 1, got {min(self.segments)}")
        if self.cpus_per_trial <= 0:
            raise ConfigError(f"--cpus-per-trial must be > 0, got {self.cpus_per_trial}")
        if self.gpus_per_trial is not None and self.gpus_per_trial < 0:
            raise ConfigError(f"--gpus-per-trial must be >= 0, got {self.gpus_per_trial}")
        if self.max_retries < 0 or self.max_concurrent < 0:
            raise ConfigError("max_retries and max_concurrent must be >= 0")
        if self.memory_budget_gb <= 0:
            raise ConfigError(f"--memory-budget-gb must be > 0, got {self.memory_budget_gb}")
        known = {f.name for f in dataclasses.fields(TrainHeadConfig)} - set(TRIAL_FIELDS)
        unknown = sorted(set(self.train) - known)
        if unknown:
            hint = "set by the grid or the ablation itself" if unknown[0] in TRIAL_FIELDS else "not a train-head setting"
            raise ConfigError(f"train: {unknown[0]!r} is {hint}; known: {', '.join(sorted(known))}")
        for key, values in self.grid.items():
            if key not in known:
                hint = "set by the grid or the ablation itself" if key in TRIAL_FIELDS else "not a train-head setting"
                raise ConfigError(f"--grid: {key!r} is {hint}; known: {', '.join(sorted(known))}")
            if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not values:
                raise ConfigError(f"--grid {key}: give a list of values, got {values!r}")
            if len(set(map(repr, values))) != len(values):
                raise ConfigError(f"--grid {key}: {list(values)} repeats a value")
            for value in values:  # each value must make a valid train-head config
                self.trial_config(head="mlp", segments=self.segments[0], modality=self.modalities[0],
                                  seed=self.seeds[0], out="check", params=((key, value),))
        self.trial_config(head="mlp", segments=self.segments[0], modality=self.modalities[0], seed=self.seeds[0],
                          out="check")  # bad training values fail now, in one line, not in every trial

    def trial_config(self, *, head: str, segments: int, modality: str, seed: int, out: str,
                     device: str | None = None, params: tuple[tuple[str, Any], ...] = ()) -> TrainHeadConfig:
        """The train-head config of one trial (`params`: its point of the hyper-parameter grid).
        `fusion` applies to rgb+flow trials only; what neither sets comes from the head's recipe."""
        from pipeline.config import from_dict

        train = dict(self.train, **dict(params))
        if modality != "rgb+flow":
            train.pop("fusion", None)
        values = dict(train, store=self.store, storage_options=dict(self.storage_options), out=out, head=head,
                      segments=segments, modality=modality, seed=seed, device=device or self.device,
                      memory_budget_gb=self.memory_budget_gb, skip_damaged=self.skip_damaged, overwrite=self.overwrite)
        return from_dict(TrainHeadConfig, values, source="ablate train settings")

    def settings(self) -> dict[str, Any]:
        """What the trials share, as the user gave it (resuming with different values would mix
        incomparable runs): train-head settings but the recipe fields left to each head's recipe."""
        args = self.trial_config(head="mlp", segments=1, modality="rgb", seed=0, out="-")
        shared = {k: getattr(args, k) for k in args.identity_fields
                  if k not in ("head", "segments", "modality", "seed") and getattr(args, k) is not None}
        shared["fusion"] = self.train.get("fusion", args.fusion)
        if self.grid:
            shared["grid"] = {k: list(v) for k, v in sorted(self.grid.items())}
        return shared


def ablate_config(file: str | None, options: dict[str, Any]) -> AblateConfig:
    """An AblateConfig from a YAML `file` and `options` (CLI flags; None = not given) that may also hold
    train-head settings beside AblateConfig's own fields (--epochs, --lr, ...) and a `train` mapping
    (--train-options): both are merged key by key over the file's `train`, the mapping last."""
    from pipeline.config import build_config

    own = {f.name for f in dataclasses.fields(AblateConfig)} - {"train"}
    flags = {k: v for k, v in options.items() if k not in own and k != "train" and v is not None}
    train = {**flags, **(options.get("train") or {})}
    cfg = build_config(AblateConfig, file, {k: v for k, v in options.items() if k in own})
    return dataclasses.replace(cfg, train={**cfg.train, **train}) if train else cfg
