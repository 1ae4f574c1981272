"""The train-head config: what the user gave. `identity_fields` decide what a run *is*; the rest is how it runs.

One construction for every entry point (Python API, CLI flags, YAML, ablate trials, the demo): the
fields a training recipe owns (pipeline.heads.recipes.RECIPE_FIELDS: lr, weight decay, epochs,
projection width, dropout, temporal centring, optimizer, schedule, standardisation) default to None =
"not given" and stay so: `resolved()` is the config a run trains with, every recipe field filled from
`recipe` ("head": the head's registered recipe, `stpipe heads`; "paper": the SGD recipe of Köpüklü et al.). So
`dataclasses.replace(cfg, head="mlp")` means what a fresh config with those arguments means, and
`given` says which recipe fields the user set. Saved files hold resolved values and are read back as
they are (`from_saved`): nothing is refilled from today's recipes (pipeline.training.identity).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from pipeline.config import DEVICE, SKIP_DAMAGED, STORAGE_OPTIONS, arg
from pipeline.errors import ConfigError

MODALITY_STREAMS = {"rgb": ("rgb",), "flow": ("flow",), "rgb+flow": ("rgb", "flow")}
# stream name (what heads and checkpoints call it) -> array name in a store's video group
STREAM_ARRAYS = {"rgb": "rgb", "flow": "flow_feat"}


@dataclass(frozen=True)
class TrainHeadConfig:
    # not identity: a run checks the store's classes, feature shapes and config hash instead
    store: str = arg("", "Feature store path or URL (from `stpipe extract`).", short="-s")
    storage_options: dict[str, Any] = arg(help=STORAGE_OPTIONS, factory=dict)
    out: str = arg("", "Run directory, e.g. runs/NAME.", short="-o")
    # what is trained (identity: a run dir holding a different value is refused)
    head: str = arg("mlp", "Head name (see `stpipe heads`).")
    head_options: dict[str, Any] = arg(help='JSON object of head options, e.g. \'{"hidden": 512}\'.', factory=dict)
    segments: int = arg(8, "Segments N sampled per video.")
    modality: Literal["rgb", "flow", "rgb+flow"] = arg("rgb", "Feature streams.")
    # rgb+flow: "late" = one head per stream, logits averaged with weights chosen on the training
    # videos (two-stream late fusion, pipeline.training.fusion);
    # "joint" = one two-stream head (e.g. st_resnet with motion->appearance residuals)
    fusion: Literal["late", "joint"] = arg(
        "late", "rgb+flow: late = one head per stream, logits averaged; joint = one two-stream head (st_resnet).")
    # None = from the recipe (`resolved()`)
    proj_dim: int | None = arg(None, "Width of the input projection (default: the head's recipe, `stpipe heads`).")
    dropout: float | None = arg(None, "Dropout on the backbone features (default: the head's recipe, `stpipe heads`).")
    # fraction of the projected channels centred on each clip's temporal mean (pooled heads; see
    # pipeline.heads.projection); not in the paper (0 in its recipe)
    temporal_center: float | None = arg(None, "Fraction of projected channels centred on each clip's temporal "
                                        "mean, pooled heads (default: the head's recipe, `stpipe heads`).")
    epochs: int | None = arg(None, "Maximum epochs (default: the head's recipe, `stpipe heads`).")  # plateau: an upper bound
    batch_size: int = arg(64, "Training batch size.")
    optimizer: Literal["sgd", "adamw"] | None = arg(None, "Optimizer (default: the head's recipe, `stpipe heads`).")
    lr: float | None = arg(None, "Initial learning rate (default: the head's recipe, `stpipe heads`).")
    momentum: float = arg(0.9, "SGD momentum.")
    weight_decay: float | None = arg(None, "Weight decay on all parameters (default: the head's recipe, `stpipe heads`).")
    schedule: Literal["plateau", "cosine"] | None = arg(None, "lr schedule (default: the head's recipe, `stpipe heads`).")
    plateau_patience: int = arg(3, "Epochs without val-loss improvement = plateau.", flag="--patience")
    plateau_threshold: float = 1e-3  # relative improvement that counts
    lr_drops: int = arg(2, "10x lr reductions before a plateau stops training.")
    standardize: bool | None = arg(None, "Per-channel standardisation with training-split stats (default: the "
                                         "head's recipe, `stpipe heads`).")  # pipeline.training.stats
    val_split: str = arg("val", "Split used for validation.")
    seed: int = arg(0, "Random seed.")
    # where the recipe fields not given come from: "head" = the head's recipe (pipeline.heads.recipes,
    # `stpipe heads`); "paper" = its SGD (recipes.SGD_RECIPE). Not identity: the resolved values are
    recipe: Literal["head", "paper"] = arg("head", "Defaults for unset lr/wd/epochs/proj-dim/dropout/temporal-center/"
                                           "optimizer/schedule: head = its recipe, paper = the SGD of Köpüklü et al..")
    # choose lr, epochs, temporal_center, dropout and proj_dim on an inner split of the training split,
    # starting from the resolved values (pipeline.training.select); the run keeps what it searched
    select: bool = arg(False, "Choose lr/epochs/temporal-center/dropout/proj-dim on an inner split of the training "
                       "split (around the recipe), then train the choice on all of it (README.md, 'Recipes chosen "
                       "on your own data').", negatable=False)
    # how it runs (free to change when resuming)
    device: str = arg("auto", DEVICE)
    # mixed precision: bf16 autocast on CUDA, and on CPUs with native bf16 (AVX512-BF16/AMX; ignored
    # with a note elsewhere). Off by default: on a GPU the light heads run slower under autocast than
    # in fp32 (a few small matmuls a step: the casts cost more than bf16 saves); on a CPU spatial heads
    # train faster, but mtconv's loss went NaN in its first bf16 epoch (a diverged run stops with an
    # error). benchmarks/README.md, "GPU (H200)" and "bf16 on the CPU"
    amp: bool = arg(False, "bf16 autocast on CUDA or a CPU with native bf16 (off: slower for light heads on GPU).")
    memory_budget_gb: float = arg(0.0, "Features above this stream from Zarr (0 = half the free RAM, or GPU memory "
                                      "on CUDA).")
    # leave out videos with a damaged chunk (checked before training), with a note; by default a
    # damaged chunk stops the run in one line naming the video and array (`stpipe verify`)
    skip_damaged: bool = arg(False, SKIP_DAMAGED, negatable=False)
    eval_batch_size: int = 256
    resume: bool = arg(False, "Continue the run in -o (re-running the same command does too).", negatable=False)
    overwrite: bool = arg(False, "Replace a run with a different config in -o.", negatable=False)

    identity_fields = (
        "head", "head_options", "segments", "modality", "fusion", "proj_dim", "dropout", "temporal_center",
        "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "plateau_patience",
        "plateau_threshold", "lr_drops", "standardize", "val_split", "seed", "select",
    )

    def __post_init__(self) -> None:
        values = self.recipe_values()  # what it trains with: checked now, in one line
        if values["optimizer"] not in ("sgd", "adamw") or values["schedule"] not in ("plateau", "cosine"):
            raise ConfigError(f"optimizer must be sgd or adamw and schedule plateau or cosine, got "
                              f"{values['optimizer']!r} and {values['schedule']!r}")
        if not self.store:
            raise ConfigError("train-head needs a feature store (-s/--store)")
        for name in ("segments", "epochs", "batch_size", "proj_dim", "plateau_patience", "eval_batch_size"):
            value = values[name] if name in values else getattr(self, name)
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if values["lr"] <= 0:
            raise ConfigError(f"lr must be > 0, got {values['lr']}")
        if values["weight_decay"] < 0 or not 0.0 <= self.momentum < 1.0:
            raise ConfigError("weight_decay must be >= 0 and momentum in [0, 1)")
        if not 0.0 <= values["dropout"] < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {values['dropout']}")
        if not 0.0 <= values["temporal_center"] <= 1.0:
            raise ConfigError(f"temporal_center must be a fraction in [0, 1], got {values['temporal_center']}")
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
        """The recipe fields the user set (the others come from the recipe)."""
        from pipeline.heads.recipes import RECIPE_FIELDS  # here: importing the heads imports torch

        return tuple(name for name in RECIPE_FIELDS if getattr(self, name) is not None)

    def recipe_values(self) -> dict[str, Any]:
        """Every recipe field: the given value, else the recipe's."""
        from pipeline.heads.recipes import RECIPE_FIELDS, resolve_recipe

        recipe = resolve_recipe(self.recipe, self.head)
        return {name: getattr(recipe, name) if getattr(self, name) is None else getattr(self, name)
                for name in RECIPE_FIELDS}

    def resolved(self) -> TrainHeadConfig:
        """The config a run trains with, saves and compares: every recipe field filled."""
        values = self.recipe_values()
        return self if all(getattr(self, name) == value for name, value in values.items()) else replace(self, **values)

    @classmethod
    def from_saved(cls, data: Mapping[str, Any], *, source: str = "saved config") -> TrainHeadConfig:
        """A config as a run saved it (config.yaml): every value as written. A recipe field the file
        lacks was added after it was written, when runs trained with the paper's SGD (recipes.SGD_RECIPE)."""
        from pipeline.config import from_dict

        return from_dict(cls, cls.saved_values(data), source=source)

    @staticmethod
    def saved_values(data: Mapping[str, Any]) -> dict[str, Any]:
        """Saved values (config.yaml, a last.pt identity) with the recipe fields they predate (SGD_RECIPE)."""
        from pipeline.heads.recipes import RECIPE_FIELDS, SGD_RECIPE

        return {**{name: getattr(SGD_RECIPE, name) for name in RECIPE_FIELDS if name not in data}, **data}

    @property
    def streams(self) -> tuple[str, ...]:
        return MODALITY_STREAMS[self.modality]

    def identity(self) -> dict[str, Any]:
        """What the run is, resolved (pipeline.training.identity compares identities)."""
        resolved = self.resolved()
        return {name: getattr(resolved, name) for name in self.identity_fields}

