"""How many threads the compute process's torch ops get while decoder processes share its cores.

The compute thread's backbone forward (or, on a GPU, its staging) and the decoder processes run on
the same cores. More torch threads speed the forward where it is the bottleneck and take cores from
the decoders where they are: on 2 cores a pooling-only backbone ran ~3,400 frames/s end to end on
one thread and ~2,600 on two, while mobilenet_v2's forward runs nearly twice as fast on two
(benchmarks/README.md, "compute threads by measured throughput"). Which wins depends on the backbone, the videos and what else the
machine runs, so it is measured rather than guessed: `ThreadGovernor` times the pipeline's
throughput (real rows through the backbone per wall second, waits for the decoders included) at the
current thread count and at the neighbouring count on the side the compute thread's busy share points
to, keeps the fastest, and looks again after a while, less often while the choice keeps winning.

Features do not depend on the thread count (stored as float16; tested), so a resumed run is
identical whatever counts either run went through.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WINDOW_S = 2.0  # a measurement: at least this long (and MIN_BATCHES batches), so video boundaries average out
MIN_BATCHES = 3
HOLD_S = 30.0  # seconds on a choice before its neighbours are tried again; doubles while it keeps winning
MAX_HOLD_S = 240.0
MARGIN = 0.05  # a neighbour must beat the current count by this much to be taken (noise is a few %)
BUSY = 0.9  # the compute thread's share of the time above which the forward, not decoding, is the bottleneck


def levels(most: int) -> list[int]:
    """The counts tried: 1, 2, 4, ... and `most` (halving steps: the gain is in big moves)."""
    out, n = [], 1
    while n < most:
        out.append(n)
        n *= 2
    return out + [most]


class ThreadGovernor:
    """Call `forwarded(rows, seconds)` after every backbone batch (its real rows, the seconds the compute
    thread spent on it); the governor sets the thread count through `set_threads`.

    Starts at `most` (what the process was given). A round first measures the current count. If the
    compute thread was busy (`BUSY` of the time or more) the forward is the bottleneck and only more
    threads can help, so the round tries the next higher count; if it waited for frames, the decoders
    are, and fewer threads give them cores, so it tries the next lower one. It keeps moving that way
    while each step is faster by `MARGIN`, then holds the fastest count. `on_choice(threads, rates)`
    hears each choice that differs from the last.
    """

    def __init__(self, most: int, set_threads: Callable[[int], None], *, clock: Callable[[], float] = time.perf_counter,
                 on_choice: Callable[[int, dict[int, float]], None] | None = None,
                 window: float | None = None, hold: float | None = None, margin: float = MARGIN):
        self.levels = levels(max(1, most))
        self.set_threads, self.clock, self.on_choice = set_threads, clock, on_choice or (lambda n, rates: None)
        self.window = WINDOW_S if window is None else window
        self.base_hold = self.hold = HOLD_S if hold is None else hold
        self.max_hold, self.margin = max(MAX_HOLD_S, self.base_hold), margin
        self.chosen = len(self.levels) - 1  # index into levels
        self.announced = self.levels[self.chosen]
        self.rates: dict[int, float] = {}  # this round's measurements (rows/s), by index
        self.direction = 0  # this round's: +1 try more threads, -1 fewer, 0 not yet known
        self.moved = False
        self.measuring: int | None = None
        self.hold_until = 0.0
        self._start_round()

    def forwarded(self, rows: int, seconds: float) -> None:
        if self.measuring is None:
            if self.clock() >= self.hold_until:
                self._start_round()
            return
        if self.skip:  # the first batch after a switch pays for it (and for whatever waited before)
            self.skip = False
            self.started, self.rows, self.busy, self.batches = self.clock(), 0, 0.0, 0
            return
        self.rows += rows
        self.busy += seconds
        self.batches += 1
        elapsed = self.clock() - self.started
        if elapsed < self.window or self.batches < MIN_BATCHES:
            return
        self.rates[self.measuring] = self.rows / elapsed
        if not self.direction:
            self.direction = 1 if self.busy >= BUSY * elapsed else -1
        self._next()

    # ---- rounds ---------------------------------------------------------------------------

    def _start_round(self) -> None:
        self.rates, self.direction, self.moved = {}, 0, False
        if len(self.levels) == 1:
            self.measuring, self.hold_until = None, float("inf")
            return
        self._measure(self.chosen)

    def _measure(self, index: int) -> None:
        self.measuring, self.skip = index, True
        self.set_threads(self.levels[index])

    def _next(self) -> None:
        if self.measuring != self.chosen:
            if self.rates[self.measuring] <= self.rates[self.chosen] * (1 + self.margin):
                return self._end_round()
            self.chosen, self.moved = self.measuring, True
        neighbour = self.chosen + self.direction
        if 0 <= neighbour < len(self.levels):
            return self._measure(neighbour)
        self._end_round()

    def _end_round(self) -> None:
        self.hold = self.base_hold if self.moved else min(self.max_hold, self.hold * 2)
        self.measuring = None
        self.set_threads(self.levels[self.chosen])
        self.hold_until = self.clock() + self.hold
        if self.levels[self.chosen] != self.announced:
            self.announced = self.levels[self.chosen]
            self.on_choice(self.announced, {self.levels[i]: rate for i, rate in self.rates.items()})
