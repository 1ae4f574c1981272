"""The train-head config. `identity_fields` decide what a run *is*; the rest is how it runs.

One construction for every entry point (Python API, CLI flags, YAML, ablate trials, the demo): the
fields a training recipe owns (pipeline.heads.recipes.RECIPE_FIELDS: lr, weight decay, epochs,
projection width, dropout, temporal centring, optimizer, schedule, standardisation) default to None = "not given",
and `__post_init__` resolves them once from `recipe` ("head": the head's registered recipe,
`stpipe heads`; "paper": seed 000's SGD). The resolved values are what the run saves, compares on
resume and trains with; `given` says which of them the user set. Saved files are read back as they
are (`from_saved`): nothing is refilled from today's recipes. `dataclasses.replace` keeps the resolved
values (build a new config from the arguments to change the head and get its recipe).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.errors import ConfigError
from pipeline.heads.recipes import PAPER, RECIPE_FIELDS, resolve_recipe

MODALITY_STREAMS = {"rgb": ("rgb",), "flow": ("flow",), "rgb+flow": ("rgb", "flow")}
# stream name (what heads and checkpoints call it) -> array name in a store's video group
STREAM_ARRAYS = {"rgb": "rgb", "flow": "flow_feat"}


@dataclass(frozen=True)
class TrainHeadConfig:
    store: str = ""  # not identity: a run checks the store's classes, feature shapes and config hash instead
    storage_options: dict[str, Any] = field(default_factory=dict)
    out: str = ""
    # what is trained (identity: a run dir holding a different value is refused)
    head: str = "mlp"
    head_options: dict[str, Any] = field(default_factory=dict)  # extra keyword options of the head builder
    segments: int = 8
    modality: Literal["rgb", "flow", "rgb+flow"] = "rgb"
    # rgb+flow: "late" = one head per stream, logits averaged with weights chosen on the training
    # videos (two-stream late fusion, pipeline.training.fusion);
    # "joint" = one two-stream head (e.g. st_resnet with motion->appearance residuals)
    fusion: Literal["late", "joint"] = "late"
    # None = from the recipe (resolved in __post_init__, so never None on a built config)
    proj_dim: int | None = None
    dropout: float | None = None
    # fraction of the projected channels centred on each clip's temporal mean (pooled heads; see
    # pipeline.heads.projection); not in seed 000 (0 in the paper recipe)
    temporal_center: float | None = None
    epochs: int | None = None  # with the plateau schedule an upper bound: it usually stops earlier
    batch_size: int = 64
    optimizer: Literal["sgd", "adamw"] | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: Literal["plateau", "cosine"] | None = None
    plateau_patience: int = 3  # epochs without a val-loss improvement that count as a plateau
    plateau_threshold: float = 1e-3  # relative improvement that counts
    lr_drops: int = 2  # seed 000: reduced twice by 10x, then the next plateau stops training
    standardize: bool | None = None  # per-channel standardisation with training-split stats (pipeline.training.stats); recipe
    val_split: str = "val"
    seed: int = 0
    # where the recipe fields not given come from: "head" = the head's recipe (pipeline.heads.recipes,
    # `stpipe heads`); "paper" = seed 000's SGD (recipes.PAPER). Not identity: the resolved values are
    recipe: Literal["head", "paper"] = "head"
    # choose lr, epochs, temporal_center, dropout and proj_dim on an inner split of the training split,
    # starting from the resolved values (pipeline.training.select); the run keeps what it searched
    select: bool = False
    # how it runs (free to change when resuming)
    device: str = "auto"
    # mixed precision: bf16 autocast on CUDA, and on CPUs with native bf16 (AVX512-BF16/AMX; ignored
    # with a note elsewhere). Off by default: on an H200 the light heads ran slower under autocast
    # than in fp32 (mlp 78k vs 119k samples/s, trn_multiscale 24k vs 30k, lstm 61k vs 71k at batch
    # 256; benchmarks/README.md, GPU section); on a Zen 4 CPU spatial heads train 1.2-1.6x faster, but
    # mtconv's loss went NaN in its first bf16 epoch there (a diverged run stops with an error)
    amp: bool = False
    memory_budget_gb: float = 0.0  # features above this stream from Zarr; 0 = half the free RAM (GPU memory on CUDA)
    # leave out videos with a damaged chunk (checked before training), with a note; by default a
    # damaged chunk stops the run in one line naming the video and array (`stpipe verify`)
    skip_damaged: bool = False
    eval_batch_size: int = 256
    resume: bool = False
    overwrite: bool = False

    identity_fields = (
        "head", "head_options", "segments", "modality", "fusion", "proj_dim", "dropout", "temporal_center",
        "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "plateau_patience",
        "plateau_threshold", "lr_drops", "standardize", "val_split", "seed", "select",
    )

    def __post_init__(self) -> None:
        recipe = resolve_recipe(self.recipe, self.head)
        given = tuple(name for name in RECIPE_FIELDS if getattr(self, name) is not None)
        for name in RECIPE_FIELDS:
            if name not in given:
                object.__setattr__(self, name, getattr(recipe, name))
        object.__setattr__(self, "_given", given)  # not a field: equality and saving see resolved values
        if self.optimizer not in ("sgd", "adamw") or self.schedule not in ("plateau", "cosine"):
            raise ConfigError(f"optimizer must be sgd or adamw and schedule plateau or cosine, got "
                              f"{self.optimizer!r} and {self.schedule!r}")
        if not self.store:
            raise ConfigError("train-head needs a feature store (-s/--store)")
        for name in ("segments", "epochs", "batch_size", "proj_dim", "plateau_patience", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or not 0.0 <= self.momentum < 1.0:
            raise ConfigError("weight_decay must be >= 0 and momentum in [0, 1)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.temporal_center <= 1.0:
            raise ConfigError(f"temporal_center must be a fraction in [0, 1], got {self.temporal_center}")
        if self.lr_drops < 0:
            raise ConfigError(f"lr_drops must be >= 0, got {self.lr_drops}")
        if self.memory_budget_gb < 0:
            raise ConfigError(f"memory_budget_gb must be >= 0 (0 = automatic), got {self.memory_budget_gb}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pick one")
        if self.fusion == "joint" and self.modality != "rgb+flow":
            raise ConfigError(f"fusion 'joint' needs modality rgb+flow, got {self.modality!r}")

    @property
    def given(self) -> tuple[str, ...]:
        """The recipe fields the user set (the others came from the recipe)."""
        return self._given

    @classmethod
    def from_saved(cls, data: Mapping[str, Any], *, source: str = "saved config") -> TrainHeadConfig:
        """A config as a run saved it (config.yaml): every value as written. A recipe field the file
        lacks was added after it was written, when runs trained as seed 000 did (recipes.PAPER)."""
        from pipeline.config import from_dict

        return from_dict(cls, cls.saved_values(data), source=source)

    @staticmethod
    def saved_values(data: Mapping[str, Any]) -> dict[str, Any]:
        """Saved values (config.yaml, a last.pt identity) with the recipe fields they predate (PAPER)."""
        return {**{name: getattr(PAPER, name) for name in RECIPE_FIELDS if name not in data}, **data}

    @property
    def streams(self) -> tuple[str, ...]:
        return MODALITY_STREAMS[self.modality]

    def identity(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.identity_fields}

