"""Scheduling trials: keep every slot busy, retry a crashed trial, report progress.

The loop is the same for every executor. An executor has `slots` (trials it runs at once),
`submit(trial)` and `next_done() -> (trial, Outcome)` (blocks until some trial ends). The local
executor runs one trial at a time in this process; the Ray one (`pipeline.distributed.trials.TrialExecutor`)
runs them as tasks with per-trial CPUs and (fractional) GPUs.
"""

from __future__ import annotations

import errno
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.ablation.grid import Trial
from pipeline.errors import no_space
from pipeline.progress import Advanced, Progress, emitter

TrialFn = Callable[..., dict[str, Any]]  # fn(trial, shared features, device=...) -> metrics; raises on failure


@dataclass
class Outcome:
    ok: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0  # wall time where the trial ran (worker side)
    no_space: bool = False  # it met a full disk: the whole run stops (a retry would meet it again)


@dataclass(frozen=True)
class TrialUpdate:
    """A trial's change (`kind`: "start", "retry", "done", "failed") and the grid's counts after it;
    the `item` of the task's Advanced progress events."""

    kind: str
    trial: Trial
    total: int
    done: int
    running: int
    failed: int
    outcome: Outcome | None = None
    attempt: int = 1


class Executor(Protocol):
    slots: int

    def submit(self, trial: Trial) -> None: ...

    def next_done(self) -> tuple[Trial, Outcome]: ...


def run_attempt(fn: TrialFn, trial: Trial, shared: Any, *, device: str = "auto") -> Outcome:
    """One attempt of a trial; an exception becomes a failed Outcome with its last line."""
    started = time.perf_counter()
    try:
        metrics = fn(trial, shared, device=device)
    except Exception as exc:  # noqa: BLE001 - any trial error is recorded, the grid goes on
        return Outcome(False, error=describe_error(exc), seconds=time.perf_counter() - started,
                       no_space=no_space(exc))
    return Outcome(True, metrics=metrics, seconds=time.perf_counter() - started)


def describe_error(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)
    last = f" ({where[-1].filename.rsplit('/', 1)[-1]}:{where[-1].lineno})" if where else ""
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {text}{last}"


class LocalExecutor:
    """Trials one after another in this process (tests, debugging, a single GPU)."""

    slots = 1

    def __init__(self, fn: TrialFn, shared: Any, *, device: str = "auto", cpus_per_trial: float | None = None):
        self.fn, self.shared, self.device = fn, shared, device
        self.cpus_per_trial = cpus_per_trial
        self.queue: deque[Trial] = deque()

    def submit(self, trial: Trial) -> None:
        self.queue.append(trial)

    def next_done(self) -> tuple[Trial, Outcome]:
        from pipeline.cpus import apply_threads

        trial = self.queue.popleft()
        apply_threads(self.cpus_per_trial)  # --cpus-per-trial holds here as on Ray
        return trial, run_attempt(self.fn, trial, self.shared, device=self.device)


def run_trials(trials: list[Trial], executor: Executor, *, max_retries: int = 1, total: int | None = None,
               already_done: int = 0, progress: Progress | None = None, task: str = "ablate",
               ) -> Iterator[tuple[Trial, Outcome, int]]:
    """Yield (trial, final outcome, attempts) as trials finish; a failed attempt is retried up to
    `max_retries` times (ahead of untried trials) before its failure is final. `progress` gets an
    Advanced event of `task` per change (its TrialUpdate the `item`), a unit per finished trial."""
    emit = emitter(progress)

    def update(*args, **kw) -> None:
        u = TrialUpdate(*args, **kw)
        emit(Advanced(task, n=int(u.kind in ("done", "failed")), detail=f"{u.running} running, {u.failed} failed",
                      item=u))

    total = total if total is not None else len(trials)
    queue: deque[Trial] = deque(trials)
    attempts: dict[Trial, int] = {}
    running = done = failed = 0
    while queue or running:
        while queue and running < max(1, executor.slots):
            trial = queue.popleft()
            attempts[trial] = attempts.get(trial, 0) + 1
            executor.submit(trial)
            running += 1
            update("start", trial, total, already_done + done, running, failed, attempt=attempts[trial])
        trial, outcome = executor.next_done()
        running -= 1
        if outcome.no_space:  # the stage names its output folder (pipeline.errors.full_disk_as_error)
            raise OSError(errno.ENOSPC, f"{trial.name}: {outcome.error}")
        if not outcome.ok and attempts[trial] <= max_retries:
            queue.appendleft(trial)
            update("retry", trial, total, already_done + done, running, failed, outcome, attempts[trial])
            continue
        if outcome.ok:
            done += 1
        else:
            failed += 1
        update("done" if outcome.ok else "failed", trial, total, already_done + done, running, failed, outcome,
               attempts[trial])
        yield trial, outcome, attempts[trial]
