"""Items of an iterator produced on a thread of their own, ahead of the
caller: ``elman score`` computes the next lines' losses while it formats,
queries the n-gram model for and writes the lines done.

The scoring loops are compiled and release the GIL, so a worker thread
computing losses and the main thread's Python (records, n-gram queries,
writes) run on two cores at once. The items come back in order; at most
``bound`` of their weight waits between the two threads (plus the batch
the caller holds and the item in the making), so memory stays bounded
whatever the input's length. An error of the iterator reaches the caller
after the items before it; the caller stopping (an error, Ctrl-C, closing
the generator) stops the worker at its next item, and the iterator is
closed on the thread that runs it.
"""
from __future__ import annotations

import threading
from collections import deque

from elman.fast import threads


def ahead(items, weigh, bound: int, step: int = 1):
    """Yield the items of the iterator ``items`` in order, produced on a
    worker thread while the caller works; ``weigh(item)``: its size (a
    line's tokens), at most ``bound`` of which wait, handed over ``step``
    or more at a time (one wake-up of the caller for many items). On one thread
    (``ELMAN_THREADS=1``, one core) the items are produced in turn."""
    if threads.THREADS < 2:
        yield from items
        return
    box = _Box(bound, step)
    worker = threading.Thread(target=box.produce, args=(items, weigh), name="elman-ahead", daemon=True)
    worker.start()
    try:
        while True:
            batch, done, error = box.take()
            yield from batch
            if done:
                if error is not None:
                    raise error
                return
    finally:
        box.stop()
        if not box.running():
            worker.join()


class _Box:
    """The items between the worker and the caller, under one condition."""

    def __init__(self, bound: int, step: int):
        self.bound, self.step, self.cv = bound, step, threading.Condition()
        self.held, self.weight = deque(), 0
        self.done = self.stopped = False
        self.error = None

    def produce(self, items, weigh) -> None:
        chunk, w = [], 0
        try:
            for item in items:
                chunk.append(item)
                w += weigh(item)
                if w >= self.step:
                    if not self.hand(chunk, w):
                        return
                    chunk, w = [], 0
        except BaseException as exc:        # handed to the caller, after the items before it
            self.error = exc
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
            with self.cv:
                self.held.extend(chunk)
                self.done = True
                self.cv.notify()

    def hand(self, chunk: list, w: int) -> bool:
        """Hand ``chunk`` over once there is room; False: the caller has stopped."""
        with self.cv:
            while self.weight >= self.bound and not self.stopped:
                self.cv.wait()
            if self.stopped:
                return False
            self.held.extend(chunk)
            self.weight += w
            self.cv.notify()
            return True

    def take(self) -> tuple:
        """(items waiting, all produced?, the iterator's error), waiting for one."""
        with self.cv:
            while not self.held and not self.done:
                self.cv.wait()
            batch = list(self.held)
            self.held.clear()
            self.weight = 0
            self.cv.notify()
            return batch, self.done, self.error

    def stop(self) -> None:
        with self.cv:
            self.stopped = True
            self.cv.notify()

    def running(self) -> bool:
        with self.cv:
            return not self.done
