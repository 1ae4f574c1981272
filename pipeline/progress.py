"""Progress events: how every stage reports what it is doing, for one renderer (cli.py) or any other.

A stage's `run(cfg, progress=...)` calls `progress(event)` with the small frozen dataclasses below and
never prints. A counted piece of work (a task: "extract", "epoch 3/20", "ablate", "loading train") is
`Started`, then `Advanced` as units finish, then `Finished`; `Note` is a line of status between them.
The counts (units done, their total, what was done before a resume) and the named amounts per unit
(frames, samples) are what a renderer needs for a bar with rate and ETA; the text fields are already
written for a person. A renderer should ignore event types it does not know, so stages can add some.

These are the only progress shapes: every stage, loop and runner takes a `progress` callback and
hands it on to the parts it calls (a Ray worker sends its events back as they are). Domain records
(a video's job, a trial's update, an epoch's metrics) are not events: they ride as `item`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Started:
    """A task of `total` units (None: not known; a renderer may wait for the first unit to show it)."""

    task: str
    total: int | None = None
    unit: str = "it"
    done: int = 0  # units finished before this run (a resumed run)
    detail: str = ""  # a short status shown beside the count, e.g. "flow compiled"
    transient: bool = False  # its display may go once it finishes (an epoch's batches, loading a split)


@dataclass(frozen=True)
class Advanced:
    """`n` more units of `task` finished (or `done` of them in all, when the emitter counts that way)."""

    task: str
    n: int = 1
    done: int | None = None
    amounts: Mapping[str, float] = field(default_factory=dict)  # e.g. {"frames": 48}: rates per second
    detail: str = ""  # replaces Started.detail, e.g. "3 running, 0 failed"
    message: str = ""  # a line about this unit, e.g. "done    mlp 8 seg. rgb seed 0: top-1 71.2%"
    item: Any = None  # the stage's own record of the unit (an ablation trial's progress, a video id)


@dataclass(frozen=True)
class Finished:
    task: str
    summary: str = ""  # a line that stays, e.g. an epoch's losses and accuracy
    item: Any = None  # the stage's own record of the task, e.g. an epoch's metrics (TensorBoard curves)


@dataclass(frozen=True)
class Note:
    """A status line; `source` prefixes it ("note: ...", "demo: ..."), "" prints it as it is."""

    message: str
    source: str = "note"

    def line(self) -> str:
        return f"{self.source}: {self.message}" if self.source else self.message


Event = Union[Started, Advanced, Finished, Note]
Progress = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The progress callback of a caller that does not listen."""


def emitter(progress: Progress | None) -> Progress:
    return progress if progress is not None else ignore


def count_units(progress: Progress | None, task: str, unit: str) -> Callable[[Any], None]:
    """Start `task` (its total unknown) and return a function that advances it by one unit per call."""
    emit = emitter(progress)
    emit(Started(task, unit=unit))
    return lambda item=None: emit(Advanced(task, item=item))
