"""The train-head config. `identity_fields` decide what a run *is*; the rest is how it runs.

Built from user settings (`config.from_dict`: CLI, YAML, ablate, demo), the optimisation fields
not given come from the head's recipe (pipeline.heads.recipes). The dataclass defaults below, used
with `recipe: paper` or when constructing the class directly, follow seed 000 where it is specific
(SGD, cross-entropy, learning rate reduced twice by 10x when the validation loss converges, dropout
after the backbone features) and the TSN/TRN code bases where its numbers were lost (seeds/README.md): momentum 0.9, weight decay 5e-4, dropout 0.5,
lr 0.001, batch 64 (TRN's `opts.py` defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.errors import ConfigError

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
    # rgb+flow: "late" = one head per stream, logits averaged (two-stream late fusion);
    # "joint" = one two-stream head (e.g. st_resnet with motion->appearance residuals)
    fusion: Literal["late", "joint"] = "late"
    proj_dim: int = 256
    dropout: float = 0.5
    # fraction of the projected channels centred on each clip's temporal mean (pooled heads; see
    # pipeline.heads.projection); not in seed 000, so 0 here and set by the head recipes
    temporal_center: float = 0.0
    epochs: int = 60  # upper bound; the plateau schedule usually stops earlier
    batch_size: int = 64
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["plateau", "cosine"] = "plateau"
    plateau_patience: int = 3  # epochs without a val-loss improvement that count as a plateau
    plateau_threshold: float = 1e-3  # relative improvement that counts
    lr_drops: int = 2  # seed 000: reduced twice by 10x, then the next plateau stops training
    standardize: bool = False  # per-channel standardisation with training-split stats (dask)
    val_split: str = "val"
    seed: int = 0
    # "head": lr, weight_decay, epochs, proj_dim, dropout, temporal_center, optimizer and schedule not given come from
    # the head's recipe (pipeline.heads.recipes, `stpipe heads`); "paper": the seed-000 defaults above
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
    eval_batch_size: int = 256
    resume: bool = False
    overwrite: bool = False

    identity_fields = (
        "head", "head_options", "segments", "modality", "fusion", "proj_dim", "dropout", "temporal_center",
        "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "plateau_patience",
        "plateau_threshold", "lr_drops", "standardize", "val_split", "seed", "select",
    )

    def __post_init__(self) -> None:
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

    @staticmethod
    def fill_defaults(values: dict[str, Any]) -> dict[str, Any]:
        """Called by config.from_dict (CLI, YAML, ablate, demo): the head's recipe under `values`."""
        from pipeline.heads.recipes import fill_recipe

        return fill_recipe(values)

    @property
    def streams(self) -> tuple[str, ...]:
        return MODALITY_STREAMS[self.modality]

    def identity(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.identity_fields}
