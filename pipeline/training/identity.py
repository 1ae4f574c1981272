"""What a run is, decided once for train-head runs, ablation trials and settings, --select searches
and finetune runs.

A config holds what the user gave (TrainHeadConfig: a recipe field is None unless set); a run's files
(config.yaml, last.pt, selection.json, ablation.yaml) hold what it resolved. Re-running a command
into a run continues it when the two agree: `continued` gives the recipe fields the user left to the
recipe the run's own values (a run made before a recipe changed goes on as it was made), and
`differences` compares identities as the files hold them (JSON: tuples read back as lists).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pipeline.config import config_to_dict
from pipeline.errors import RunError
from pipeline.heads.recipes import RECIPE_FIELDS


def plain(value: Any) -> Any:
    """`value` as a JSON or YAML file gives it back."""
    return json.loads(json.dumps(config_to_dict(value), default=str))


def identity(cfg) -> dict[str, Any]:
    """What `cfg`'s run is (its `identity_fields`, resolved), as saved files hold it."""
    return plain(cfg.identity())


def differences(saved: Mapping[str, Any], now: Mapping[str, Any], *, follow: Collection[str] = ()) -> list[str]:
    """The keys whose values differ. A key in `follow` that `now` lacks was left to a recipe: it takes
    the saved value."""
    saved, now = plain(saved), plain(now)
    return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and (k in now or k not in follow))


def continued(args, saved):
    """The config `args` (a TrainHeadConfig) trains with in the run `saved` made: the recipe fields
    `args` leaves to the recipe take the run's values, resolved."""
    return dataclasses.replace(args, **{k: getattr(saved, k) for k in RECIPE_FIELDS if k not in args.given}).resolved()


def same_run(args, saved) -> bool:
    """Whether re-running `args` continues the run `saved` made (an ablation's finished trial)."""
    return not differences(identity(saved), identity(continued(args, saved)))


def check_same_run(run_dir: str | Path, cfg, old, *, what: str = "run") -> None:
    """Refuse a run dir whose run (made with `old`) is not `cfg`'s."""
    theirs, mine = identity(old), identity(cfg)
    diff = differences(theirs, mine)
    if diff:
        values = "; ".join(f"{k} {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in diff[:4])
        raise RunError(f"{run_dir}: holds a {what} with a different config (differs in: {', '.join(diff)}; "
                       f"{values}); use another -o or --overwrite")


def check_checkpoint(path: Path, saved: Mapping[str, Any], cfg) -> None:
    """Refuse a last.pt written by another config. A field added to the config since the file was
    written did not exist then: the run had what its absence means, read as config.yaml is
    (`cfg.saved_values`: train-head's SGD_RECIPE value of a recipe field), else the field's default."""
    saved = getattr(cfg, "saved_values", dict)(saved)
    defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
    saved = {**{k: defaults[k] for k in cfg.identity_fields if k not in saved and k in defaults}, **saved}
    now = identity(cfg)
    diff = differences({k: saved.get(k) for k in now}, now)
    if diff:
        raise RunError(f"{path}: was written by a different config (differs in: {', '.join(diff)}); cannot resume")
