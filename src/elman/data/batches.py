"""Batches: B contiguous streams read side by side in windows of T steps.

``batchify`` cuts the id stream into B contiguous streams (the tail that
does not fill a row is dropped); ``iter_batches`` walks them in windows of T
steps whose targets are the inputs shifted by one. The last window is kept
even when shorter than T, so no training text is lost; window k always
starts at column k*T, which is what lets a trainer resume at window k.

The streams are a view of the id array, never a copy: of a memory-mapped
cache entry they read only the pages under the current window, and
``Streams`` hands back the pages behind it as it goes, so a corpus of any
size trains in the same memory.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from elman.errors import ElmanError


def check_enough(ids, B: int, T: int, path=None) -> None:
    """Refuse a stream too short to fill one (B, T) batch with its targets."""
    need = B * (T + 1)
    if len(ids) < need:
        where = f"{path}: " if path is not None else ""
        raise ElmanError(f"{where}too little text for one batch: need at least B*(T+1) = "
                         f"{B}*({T}+1) = {need} tokens, file has {len(ids)}")


def batchify(ids, B: int) -> np.ndarray:
    """``(B, n)``: B contiguous streams, stream b = ids[b*n:(b+1)*n]; the tail
    is dropped. A view of ``ids`` when it is an integer array (a memory map
    stays one)."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        ids = ids.astype(np.int64)
    if B < 1:
        raise ElmanError(f"the batch size must be positive, got {B}")
    n = len(ids) // B
    if n < 2:
        raise ElmanError(f"too little text for {B} streams: need at least {2 * B} tokens, got {len(ids)}")
    return ids[:n * B].reshape(B, n)


def num_batches(streams: np.ndarray, T: int) -> int:
    """Windows per pass: ceil((n-1)/T), the last possibly shorter than T."""
    return -(-(streams.shape[1] - 1) // T)


def iter_batches(streams: np.ndarray, T: int, start: int = 0) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(k, inputs, targets)`` for windows k = start, start+1, ...;
    inputs = streams[:, kT : kT+t], targets = streams[:, kT+1 : kT+1+t], t <= T,
    both int64 copies (whatever the streams' dtype)."""
    if T < 1:
        raise ElmanError(f"the BPTT length must be positive, got {T}")
    n = streams.shape[1]
    for k in range(start, num_batches(streams, T)):
        i = k * T
        t = min(T, n - 1 - i)
        yield k, streams[:, i:i + t].astype(np.int64), streams[:, i + 1:i + 1 + t].astype(np.int64)


class Streams:
    """The training text as B streams of a flat id array, read in windows;
    ``part`` (a slice of the B) keeps one process's share of them.

    ``release(start, stop)``, when given (``TokenIds.release``), is told
    which ids will not be read again: each stream's columns before the
    current window, every ``RELEASE_BYTES`` of each stream."""

    RELEASE_BYTES = 256 << 10

    def __init__(self, ids, B: int, release=None, part: slice = slice(None)):
        self.rows = batchify(ids, B)[part]
        self.first, self.n = range(B)[part].start, len(ids) // B  # stream b starts at id b*n
        self.release = release
        self.every = max(1, self.RELEASE_BYTES // self.rows.itemsize)

    def num_windows(self, T: int) -> int:
        return num_batches(self.rows, T)

    def windows(self, T: int, start: int = 0):
        """``iter_batches`` of the streams, handing back the pages behind."""
        done = -1
        for k, x, y in iter_batches(self.rows, T, start):
            if self.release is not None and (k * T) // self.every != done:
                done = (k * T) // self.every
                self._release(done * self.every)
            yield k, x, y

    def _release(self, columns: int) -> None:
        for b in range(self.first, self.first + len(self.rows)):
            self.release(b * self.n, b * self.n + columns)


def preceding(streams: np.ndarray, i: int, n: int) -> np.ndarray:
    """(B, n): the n ids of each stream before column i, -1 where the stream
    has none (before its start): what direct connections read before a window."""
    out = np.full((streams.shape[0], n), -1, dtype=np.int64)
    if n:
        got = streams[:, max(i - n, 0):i]
        out[:, n - got.shape[1]:] = got
    return out
