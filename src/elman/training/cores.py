"""How a training run uses the machine's cores: the threads that step its
windows, and the output layer's updates of one window made on a second
core while the next window's recurrence runs.

The recurrence of a window reads L, I, H and b1 only; the output layer and
the direct weights are first read after it (``model.bptt``'s ``ready``). So
once a window's gradient is clipped, the step updates the recurrence's
tensors at once and leaves those of the output layer (a class softmax's U
over the columns of every class present, the direct table's scatter: most
of a step's memory traffic) to a second thread, which the next window waits
for before its output layer. Every tensor gets the same update from the
same gradient as in a step made whole, so the numbers are the same to the
bit (tests/test_cores.py); only the order in time changes.

It pays where the windows run on one thread and a second core is free: a
class softmax's windows on two cores (``window_threads``). The same thread
is the windows' spare (``threads.spare``, which ``threads.beside`` uses): a class softmax's backward pass
starts the clipping's norm of dJ/dU on it while the recurrence's backward
runs on the training thread.
"""
from __future__ import annotations

import os

from elman.fast import threads

LATER = ("U", "b2", "Uc", "bc", "D")     # what the recurrence does not read


def window_threads(run) -> int:
    """The threads that step the training windows: the process's, except a
    class softmax's on two cores or fewer, unless ELMAN_THREADS says: its
    window's pieces are small, and a second thread costs about what it
    saves (KJV defaults, 2 cores: 49.3k words/s on one thread, 39.8k on
    two; docs/guides/training.md, "Threads"). Validation keeps every core."""
    if os.environ.get("ELMAN_THREADS") or not run.params.classes or threads.THREADS > 2:
        return threads.THREADS
    return 1


def overlaps(run) -> bool:
    """Whether a second core makes the output layer's updates of a window
    while the next one's recurrence runs (``Overlap``): where one process
    steps its windows on one thread and has more threads than that."""
    return run.comm.size == 1 and window_threads(run) == 1 < threads.THREADS


class Overlap:
    """One window's deferred updates at a time, on a ``threads.Helper`` of
    their own (``on`` False: none, every step whole). ``later`` for
    ``Optimizer.step``; ``start(opt)`` after the step; ``ready(opt, lr)`` as
    ``bptt``'s ``ready``: waits for them, then sets the rate of the next
    step (the deferred updates read the rate of their own step as they run,
    so it may only change once they are made); ``wait()`` before anything
    else reads the weights (a checkpoint, the validation) or when the loop
    ends. The training thread makes the updates the helper has not begun
    (it comes free first when its share of the window is the smaller)."""

    def __init__(self, on: bool):
        self.helper = threads.Helper("elman-overlap") if on else None

    @property
    def pool(self):
        """The helper's executor, the windows' spare (``threads.spare``); None when off."""
        return self.helper and self.helper.pool

    @property
    def later(self) -> tuple:
        return LATER if self.helper is not None else ()

    def start(self, opt) -> None:
        """The second thread starts on the updates ``opt.step`` left."""
        if opt.deferred:
            updates, opt.deferred = opt.deferred, None
            self.helper.start(lambda i: updates[i](), len(updates))

    def wait(self) -> None:
        """Wait for the updates (an update's error is raised here)."""
        if self.helper is not None:
            self.helper.wait()

    def ready(self, opt, lr: float):
        def ready():
            self.wait()
            opt.lr = lr
        return ready

    def close(self) -> None:
        if self.helper is not None:
            self.helper.close()
