"""A ``--minutes`` budget: the run's clock and the decisions that read it,
the rate's ramp to 0 at the deadline and whether the budget is long enough
for dropout. A budget is wall time, so these are the training's only
time-dependent decisions, besides where it cuts the last epoch; under MPI
rank 0's hold on every process (``comm.lead``: the ramp's each window, in
``training.train``, the dropout's once, here)."""
from __future__ import annotations

import time

from elman.training.state import DROPOUT_EPOCHS


class Clock:
    """Wall time over every process that ran it (resumes included) (``elapsed``) and this process's budget."""

    def __init__(self, elapsed: float, budget: float | None):
        self.started = time.monotonic() - elapsed
        self.deadline = None if budget is None else time.monotonic() + budget
        self.window_s = None    # seconds a training window takes (``rate_ramp``)
        self.dropout = None     # the rate the budget decided (``dropout_rate``), once its pace is known
        self.seen, self.mark = 0, None      # windows until then, and when the pace's were begun

    def notes(self) -> dict:
        """What the budget decided, for the metrics lines."""
        return {} if self.dropout is None else {"dropout": self.dropout}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float | None:
        """Seconds of the budget left (None: no budget)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def over(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


def rate_ramp(run, clock: Clock, nb: int) -> float:
    """The factor on the schedule's rate under a ``--minutes`` budget: 1, then,
    once the budget has at most ``--anneal`` epochs left at this epoch's pace,
    the fraction of them left, down to 0 at the deadline. Halving a whole
    epoch at a time wasted a short budget: with 3.7 epochs in it, the rate was
    halved from the second epoch on (docs/benchmarks/recipes.md, "Annealing
    under a time budget")."""
    left, n, prog = clock.left(), run.settings.anneal, run.prog
    if left is None or not n:
        return 1.0
    if prog.windows_done:       # else the last epoch's pace, if this process saw one
        clock.window_s = (clock.elapsed() - prog.epoch_started) / prog.windows_done
    return 1.0 if clock.window_s is None else min(1.0, max(left, 0.0) / (n * nb * clock.window_s))


def dropout_rate(run, clock: Clock, nb: int) -> float:
    """Dropout's rate for this window: ``--dropout``, or 0 under a ``--minutes``
    budget by whose deadline the run will have trained fewer than
    ``DROPOUT_EPOCHS`` epochs. A short run underfits, and learns faster
    without dropout (docs/benchmarks/recipes.md, "Dropout under a budget").
    Decided once, at this process's window 2a (a = 100, or an eighth of an
    epoch), from the pace of windows a to 2a: the first ones run at half
    speed (caches, first use of memory), and the pace without dropout is
    faster, so deciding again would go back and forth."""
    s, prog = run.settings, run.prog
    if clock.deadline is None or not s.dropout:
        return s.dropout
    if clock.dropout is None:
        clock.seen += 1
        a = min(100, max(nb // 8, 1))
        if clock.seen == a:
            clock.mark = time.monotonic()
        elif clock.seen == 2 * a:
            pace = (time.monotonic() - clock.mark) / a
            epochs = prog.epoch - 1 + prog.windows_done / nb + max(clock.left(), 0.0) / (nb * pace)
            # every process reaches this window together; rank 0's pace decides for all
            clock.dropout = run.comm.lead(s.dropout if epochs >= DROPOUT_EPOCHS else 0.0)
    return s.dropout if clock.dropout is None else clock.dropout
