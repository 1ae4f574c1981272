"""Per-head training recipes: the defaults train-head, ablate and the demo use when not overridden.

Seed 000 trains every head with one SGD recipe (lr 1e-3, plateau drops, up to 60 epochs); on small
caches (the demo's 7 batches an epoch) that recipe never converges, and the heads differ in what
they need (an RNN wants a larger lr than a 3D FCN). Each head here has a recipe chosen from a
recorded sweep on cached features (an `stpipe ablate --grid` run; the table and the command are in
benchmarks/README.md, "Per-head training recipes"). A TrainHeadConfig resolves every recipe field
the user leaves unset (API keyword, CLI flag, YAML key, ablate `train`) once, when it is built,
from the head's registered recipe (`recipe: head`) or from PAPER (`recipe: paper`, seed 000's SGD).
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
    # raw mobilenet_v2 features; benchmarks/README.md, issue 20)
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
    "mlp": Recipe(proj_dim=32),
    "tsn": Recipe(),
    "trn_multiscale": Recipe(proj_dim=32),
    "rnn_tanh": Recipe(epochs=20, temporal_center=CENTER),
    "rnn_relu": Recipe(lr=6e-3, epochs=20, dropout=0.8, temporal_center=CENTER),
    "lstm": Recipe(lr=6e-3, epochs=20, temporal_center=CENTER),
    "gru": Recipe(lr=6e-3, temporal_center=CENTER),
    # issue 20: `--select` chose centring and 20 epochs for blstm on the footage dev set in every seed;
    # checked on both dev sets (benchmarks/README.md, issue 20): footage 45.6 -> 69.2, demo 42.9 -> 59.6
    "blstm": Recipe(weight_decay=0.5, epochs=20, temporal_center=CENTER),
    "convlstm": Recipe(),
    # issue 20 (second session): `--select` (inner splits of the training split only) chose dropout
    # 0.5, proj 64 and 20 epochs for fcn2d on the footage dev set in every seed, and dropout 0.5 and
    # 20 epochs in most seeds on the demo (its width there varied: 16-64); the recipe was proj 32,
    # dropout 0.8, 10 epochs (benchmarks/README.md, "Issue 20 (second session)")
    "fcn2d": Recipe(epochs=20, temporal_center=CENTER),
    # issue 34: 6 epochs (was 10) on the demo store, seeds 0-2: rgb 88.3 vs 89.2, flow within a seed spread
    # (benchmarks/README.md, "The demo's spatial heads"); 6 epochs cost mtconv, convlstm and s3dg 7-16 points
    "fcn3d": Recipe(epochs=6),
    # issue 20 (second session): `--select` chose lr 6.7e-3 (the recipe's 2e-2 / 3) on both dev sets
    # (every footage seed, 2 of 3 demo seeds) and 40 epochs on the footage (20 on the demo); the
    # longer one kept for the real footage, checked on both (benchmarks/README.md, same section)
    "st_resnet": Recipe(lr=6.7e-3, epochs=40, temporal_center=CENTER),
    "mtconv": Recipe(),
    "s3dg": Recipe(lr=6e-3),
}
DEFAULT_RECIPE = Recipe()  # a head registered without a recipe (e.g. a plugin that did not register one)

# Seed 000 where it is specific (SGD, lr reduced twice by 10x when the validation loss converges,
# dropout after the backbone features) and the TSN/TRN code bases where its numbers were lost
# (seeds/README.md): momentum 0.9, weight decay 5e-4, dropout 0.5, lr 0.001 (TRN's `opts.py`);
# 60 epochs is an upper bound the plateau schedule usually stops before; no temporal centring.
# Also what a saved run file that lacks a recipe field means: such a file was written before the
# field existed, when every run trained this way (pipeline.training.config.TrainHeadConfig.from_saved).
PAPER = Recipe(lr=1e-3, weight_decay=5e-4, epochs=60, proj_dim=256, dropout=0.5, temporal_center=0.0,
               optimizer="sgd", schedule="plateau", standardize=False)


def register_recipe(head: str, recipe: Recipe) -> None:
    """The recipe `recipe: head` gives `head` (a head added outside this module registers its own)."""
    RECIPES[head] = recipe


def head_recipe(head: str) -> Recipe:
    return RECIPES.get(head, DEFAULT_RECIPE)


def resolve_recipe(choice: str, head: str) -> Recipe:
    """The recipe a config with `recipe: choice` trains `head` with."""
    if choice not in RECIPE_CHOICES:
        raise ConfigError(f"recipe must be one of {', '.join(RECIPE_CHOICES)}, got {choice!r}")
    return PAPER if choice == "paper" else head_recipe(head)
