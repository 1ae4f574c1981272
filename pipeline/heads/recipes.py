"""Per-head training recipes: the defaults train-head, ablate and the demo use when not overridden.
A head is registered with its recipe (`register_head(..., recipe=Recipe(...))`; a plug-in head brings
its own, docs/plugins.md); RECIPES below are the built-in heads'.

Köpüklü et al. (the paper of pipeline/heads/classic.py) train every head with one SGD recipe
(lr 1e-3, plateau drops, up to 60 epochs); on small caches (the demo's 7 batches an epoch) that
recipe never converges, and the heads differ in what they need (an RNN wants a larger lr than a 3D FCN). Each head here has a recipe chosen from a
recorded sweep on cached features (an `stpipe ablate --grid` run; the table and the command are in
benchmarks/README.md, "Per-head training recipes"). A TrainHeadConfig resolves every recipe field
the user leaves unset (API keyword, CLI flag, YAML key, ablate `train`) when it is resolved,
from the head's registered recipe (`recipe: head`) or from SGD_RECIPE (`recipe: paper`, the paper's SGD).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import ConfigError

RECIPE_CHOICES = ("head", "paper")
# TrainHeadConfig fields a recipe owns: unset (None) until the config resolves them
RECIPE_FIELDS = ("lr", "weight_decay", "epochs", "proj_dim", "dropout", "temporal_center", "optimizer", "schedule",
                 "standardize")


@dataclass(frozen=True)
class Recipe:
    """AdamW with a half-cosine lr over `epochs`; `proj_dim`/`dropout`/`temporal_center` are the input
    projection's (temporal_center: pipeline.heads.projection)."""

    lr: float = 2e-3
    weight_decay: float = 0.01
    epochs: int = 10
    proj_dim: int = 64
    dropout: float = 0.5
    temporal_center: float = 0.0
    optimizer: str = "adamw"
    schedule: str = "cosine"
    # per-channel standardisation of the features with training-split stats. The recipes were chosen
    # on standardised features (the demo's), and AdamW needs them: its first, sign-like steps move
    # every projected channel by ~lr x the sum of the raw (non-negative, uncentred) CNN features, the
    # same way for every clip, so heads whose body starts with a ReLU (TRN, MLP) lost every channel
    # for good (trn_multiscale: 100% of them dead after epoch 1 and training loss stuck at ln K on
    # raw mobilenet_v2 features; benchmarks/README.md, "Why trn_multiscale did not train")
    standardize: bool = True

    def fields(self) -> dict[str, Any]:
        return asdict(self)

    def short(self) -> str:
        """One line for `stpipe heads`: 'lr 2e-03 wd 0.01 10 ep proj 64 drop 0.5[ center 0.75]'."""
        return (f"lr {self.lr:.0e} wd {self.weight_decay:g} {self.epochs} ep proj {self.proj_dim} "
                f"drop {self.dropout:g}" + (f" center {self.temporal_center:g}" if self.temporal_center else ""))


# Chosen from the sweeps in benchmarks/README.md ("Per-head training recipes") on the demo cache's
# rgb split (mean val top-1 over seeds 0-2): one sweep over lr (2e-3, 6e-3, 2e-2), one over
# dropout x weight decay x proj_dim at lr 2e-3; each recipe below is one measured grid point. Heads
# at Recipe() kept the demo's earlier settings (best or within noise of the best); convlstm and fcn3d
# were not swept (minutes per trial on the 2 cores), s3dg's lr rests on one seed.
# Temporal centring (pipeline.heads.projection) for the heads that read one step or pool local
# temporal filters: one value for all of them, from `--grid temporal_center=0,0.75,1` (README):
# centring every channel gave the most on rgb but cost flow 3-7 points (the static part of flow
# features, the direction of motion, is information); 0.75 keeps flow within a seed spread of
# uncentred while rgb gains 11-30 points. With it, lr and epochs were swept again (`--grid lr=2e-3,
# 6e-3,2e-2 --grid epochs=10,20`); each of these six recipes is its best rgb point of that sweep,
# except fcn2d's 10 epochs (20: +3 points, within a spread, for twice the demo's costliest pooled trial).
CENTER = 0.75
RECIPES: dict[str, Recipe] = {
    # issue 35: centring chosen on a leave-one-source-out split of the footage set's training sources:
    # mean top-1 on the held-out source 19.6 -> 23.3 (mlp), 16.7 -> 30.4 (trn_multiscale); centring
    # every channel (1.0) gained about as much there but cost 5 points of demo flow (benchmarks/README.md, "Issue 35")
    "mlp": Recipe(proj_dim=32, temporal_center=CENTER),
    "tsn": Recipe(),
    "trn_multiscale": Recipe(proj_dim=32, temporal_center=CENTER),
    "rnn_tanh": Recipe(epochs=20, temporal_center=CENTER),
    "rnn_relu": Recipe(lr=6e-3, epochs=20, dropout=0.8, temporal_center=CENTER),
    "lstm": Recipe(lr=6e-3, epochs=20, temporal_center=CENTER),
    "gru": Recipe(lr=6e-3, temporal_center=CENTER),
    # `--select` chose centring and 20 epochs for blstm on the footage dev set in every seed, and both
    # dev sets gain from them (benchmarks/README.md, "a real-footage dev set")
    "blstm": Recipe(weight_decay=0.5, epochs=20, temporal_center=CENTER),
    "convlstm": Recipe(),
    # `--select` (inner splits of the training split only) chose dropout 0.5, proj 64 and 20 epochs
    # for fcn2d on the footage dev set in every seed, and dropout 0.5 and 20 epochs in most seeds on
    # the demo (its width there varied: 16-64) (benchmarks/README.md, "fcn2d and st_resnet re-chosen")
    "fcn2d": Recipe(epochs=20, temporal_center=CENTER),
    "fcn3d": Recipe(),
    # `--select` chose lr 6.7e-3 on both dev sets (every footage seed, 2 of 3 demo seeds) and 40
    # epochs on the footage (20 on the demo); the longer one kept for the real footage, checked on
    # both (benchmarks/README.md, "fcn2d and st_resnet re-chosen")
    "st_resnet": Recipe(lr=6.7e-3, epochs=40, temporal_center=CENTER),
    "mtconv": Recipe(),
    "s3dg": Recipe(lr=6e-3),
}
DEFAULT_RECIPE = Recipe()  # a head registered without a recipe (e.g. a plug-in that brings none)

# The paper where it is specific (SGD, lr reduced twice by 10x when the validation loss converges,
# dropout after the backbone features) and the TSN/TRN code bases where it gives no numbers:
# momentum 0.9, weight decay 5e-4, dropout 0.5, lr 0.001 (TRN's `opts.py`);
# 60 epochs is an upper bound the plateau schedule usually stops before; no temporal centring.
# Also what a saved run file that lacks a recipe field means: such a file was written before the
# field existed, when every run trained this way (pipeline.training.config.TrainHeadConfig.from_saved).
SGD_RECIPE = Recipe(lr=1e-3, weight_decay=5e-4, epochs=60, proj_dim=256, dropout=0.5, temporal_center=0.0,
                    optimizer="sgd", schedule="plateau", standardize=False)


def head_recipe(head: str) -> Recipe:
    """The recipe `head` was registered with (DEFAULT_RECIPE when none, or for a name no head has)."""
    from pipeline.heads.base import HEADS

    return (HEADS.meta(head)["recipe"] if head in HEADS else None) or DEFAULT_RECIPE


def resolve_recipe(choice: str, head: str) -> Recipe:
    """The recipe a config with `recipe: choice` trains `head` with."""
    if choice not in RECIPE_CHOICES:
        raise ConfigError(f"recipe must be one of {', '.join(RECIPE_CHOICES)}, got {choice!r}")
    return SGD_RECIPE if choice == "paper" else head_recipe(head)
