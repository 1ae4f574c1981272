"""The finetune config. `identity_fields` decide what a run *is*; the rest is how it runs.

Defaults follow TSN/TRN fine-tuning practice where Köpüklü et al. leave numbers out:
SGD, momentum 0.9, weight decay 5e-4, lr 0.001 for backbone and head alike (TSN trains every
layer at the base rate; `backbone_lr_mult` changes that), the plateau schedule of stage two
(lr /10 twice, then stop), TSN's multi-scale corner cropping with scales 1, .875, .75, .66 and
aspect distortion of at most one step, horizontal flipping off (the paper flips only for
Something-Something: on Jester a flip changes the label), and the gradient's norm clipped at 20 (TSN's
and TRN's released training scripts, `--gd 20`).

Two choices depart from TSN because stage three starts from a stage-two head, not a fresh one:
batch norm is frozen (TSN's partial BN lets the first BN layer normalise with each batch's statistics;
the head was trained on features computed with the stored ones, and on the demo the switch alone
raised the first batch's loss from ~2 to ~17 and sent every run to chance: benchmarks/README.md,
"fine-tuning went to chance"), and the learning rate is 1e-4 (at 1e-3 the gradient through the head run's
standardisation moved mobilenet_v2 too far per step; the train loss never fell below the start's).
`batch_norm="partial"` and `lr=0.001` give TSN's recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from pipeline.config import RAY_ADDRESS, STORAGE_OPTIONS, arg
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class FinetuneConfig:
    run: str = arg("", "train-head run directory to start from (its store, head and segments).")
    manifest: str = arg("", "Manifest of the videos (must hold every video of the store's train/val splits).", short="-m")
    root: str = arg("", "Folder the manifest's video paths are relative to (default: its folder).")
    out: str = arg("", "Run directory, e.g. runs/NAME-ft.", short="-o")
    storage_options: dict[str, Any] = arg(help=STORAGE_OPTIONS, factory=dict)
    # what is trained (identity: a run dir holding a different value is refused)
    modality: Literal["", "rgb", "flow", "rgb+flow"] = arg(
        "", "Streams to train (default: the head run's; a new stream gets a new head).")
    fusion: Literal["late", "st-resnet"] = arg(
        "late", "late: streams apart, scores averaged; st-resnet: motion->appearance residuals + temporal filters.")
    st_stages: tuple[int, ...] = arg((2, 3, 4, 5), "st-resnet: ResNet stages (conv2_x..conv5_x) that get it.")
    temporal_kernel: int = 3  # st-resnet: T' of the 1x1xT' temporal filters (eq. 5)
    segments: int = arg(0, "Segments per video (0 = the head run's).")
    flow_stack: int = 5  # motion stream input when the store has no flow-stream backbone (else its L)
    epochs: int = arg(30, "Maximum epochs (the plateau schedule stops earlier).")
    batch_size: int = arg(32, "Videos per optimizer step over all workers.")
    optimizer: Literal["sgd", "adamw"] = arg("sgd", "Optimizer (sgd with --momentum).")
    lr: float = arg(1e-4, "Learning rate of the head (TSN used 0.001 with a fresh head).")
    backbone_lr_mult: float = arg(1.0, "Backbone lr = lr x this.")
    momentum: float = 0.9
    weight_decay: float = arg(5e-4, "Weight decay.")
    schedule: Literal["plateau", "cosine"] = arg("plateau", "lr schedule.")
    plateau_patience: int = 3
    plateau_threshold: float = 1e-3
    lr_drops: int = 2
    # frozen: every BN layer of the backbones keeps its statistics and affine; partial: all but the first
    # (TSN); train: all BN layers train
    batch_norm: Literal["frozen", "partial", "train"] = arg(
        "frozen", "Backbone BN layers: frozen (the head was trained on features made with their statistics), "
        "partial (all but the first frozen, as in TSN) or train.")
    clip_grad: float = arg(20.0, "Clip the gradient's total norm at this (TSN's scripts; 0 = off).")
    flip: bool = arg(False, "Random horizontal flips (they change Jester's labels).")
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    max_distort: int = 1
    val_split: str = ""  # "" = the head run's
    seed: int = arg(0, "Random seed.")
    # how it runs (free to change when resuming)
    device: str = arg("auto", "auto, cpu, cuda or cuda:N (in-process runs).")
    amp: bool = arg(True, "Mixed-precision autocast (CUDA only).")
    executor: Literal["auto", "local", "ray"] = arg(
        "auto", "auto: Ray Train when --workers > 1, GPUs or --ray-address are given.")
    workers: int = arg(1, "Data-parallel workers; more than 1 runs on Ray Train.")
    gpus_per_worker: float = arg(0.0, "GPUs per Ray Train worker (0: CPU, gloo).")
    cpus_per_worker: float = arg(1.0, "CPUs per Ray Train worker.")
    ray_address: str = arg("", RAY_ADDRESS)
    max_failures: int = 0  # Ray Train restarts after a lost worker (each resumes from last.pt)
    loader_workers: int = arg(2, "Decoding processes per worker (0 = in-process).")
    micro_batch: int = arg(0, "Videos per forward/backward, gradients accumulating to --batch-size (0 = measured, "
                           "what memory allows).")
    eval_batch_size: int = 16
    checkpoint_every: int = arg(0, "Also write last.pt every this many steps (0 = at epoch ends only).")
    resume: bool = arg(False, "Continue the run in -o (re-running the same command does too).", negatable=False)
    overwrite: bool = arg(False, "Replace a run with a different config in -o.", negatable=False)

    identity_fields = (
        "run", "modality", "fusion", "st_stages", "temporal_kernel", "segments", "flow_stack", "epochs", "batch_size",
        "optimizer", "lr", "backbone_lr_mult", "momentum", "weight_decay", "schedule",
        "plateau_patience", "plateau_threshold", "lr_drops", "batch_norm", "clip_grad", "flip", "scales", "max_distort",
        "val_split", "seed",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if not self.run:
            raise ConfigError("finetune needs a train-head run (--run)")
        if not self.manifest:
            raise ConfigError("finetune needs the manifest of the videos (-m/--manifest)")
        if not self.out:
            raise ConfigError("finetune needs an output run dir (-o/--out)")
        for name in ("epochs", "batch_size", "workers", "eval_batch_size", "flow_stack",
                     "plateau_patience", "temporal_kernel"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("segments", "micro_batch", "loader_workers", "checkpoint_every", "max_failures", "lr_drops", "max_distort"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.temporal_kernel % 2 == 0:
            raise ConfigError(f"temporal_kernel must be odd (centred filters), got {self.temporal_kernel}")
        if self.lr <= 0 or self.backbone_lr_mult < 0:
            raise ConfigError("lr must be > 0 and backbone_lr_mult >= 0")
        if self.clip_grad < 0:
            raise ConfigError(f"clip_grad must be >= 0 (0 = off), got {self.clip_grad}")
        if self.weight_decay < 0 or not 0.0 <= self.momentum < 1.0:
            raise ConfigError("weight_decay must be >= 0 and momentum in [0, 1)")
        if not self.scales or any(not 0.0 < s <= 1.0 for s in self.scales):
            raise ConfigError(f"scales must be crop fractions in (0, 1], got {list(self.scales)}")
        if self.batch_size < self.workers:
            raise ConfigError(f"batch_size {self.batch_size} is smaller than workers ({self.workers}): "
                              "some workers would have no video")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise ConfigError("gpus_per_worker must be >= 0 and cpus_per_worker > 0")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pick one")
        if any(s not in (2, 3, 4, 5) for s in self.st_stages):
            raise ConfigError(f"st_stages are ResNet stages 2..5 (conv2_x..conv5_x), got {list(self.st_stages)}")

    @staticmethod
    def saved_values(saved: dict[str, Any]) -> dict[str, Any]:
        """A config or checkpoint identity saved by an earlier version, in today's fields: runs made
        with `partial_bn` (true: TSN's partial BN, false: every BN training) and without gradient
        clipping continue as they were made."""
        saved = dict(saved)
        saved.pop("accum_steps", None)  # runs made before the micro-batch was sized from memory
        if "partial_bn" in saved:
            saved["batch_norm"] = "partial" if saved.pop("partial_bn") else "train"
            saved.setdefault("clip_grad", 0.0)
        return saved

    @property
    def use_ray(self) -> bool:
        if self.executor == "auto":
            return self.workers > 1 or self.gpus_per_worker > 0 or bool(self.ray_address)
        return self.executor == "ray"

    def identity(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.identity_fields}

    def with_absolute_paths(self) -> FinetuneConfig:
        """Head run, manifest, video root and run dir as absolute paths: Ray Train workers run in a
        trial folder of their own, not in this working directory."""
        from pipeline.store.urls import absolute

        return replace(self, run=absolute(self.run), manifest=absolute(self.manifest), root=absolute(self.root),
                       out=absolute(self.out))
