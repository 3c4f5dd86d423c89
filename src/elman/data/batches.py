"""Batches: B contiguous streams read side by side in windows of T steps.

``batchify`` cuts the id stream into B contiguous streams (the tail that
does not fill a row is dropped); ``iter_batches`` walks them in windows of T
steps whose targets are the inputs shifted by one. The last window is kept
even when shorter than T, so no training text is lost; window k always
starts at column k*T, which is what lets a trainer resume at window k.
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
    """``(B, n)``: B contiguous streams, stream b = ids[b*n:(b+1)*n]; the tail is dropped."""
    ids = np.asarray(ids, dtype=np.int64)
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
    inputs = streams[:, kT : kT+t], targets = streams[:, kT+1 : kT+1+t], t <= T."""
    if T < 1:
        raise ElmanError(f"the BPTT length must be positive, got {T}")
    n = streams.shape[1]
    for k in range(start, num_batches(streams, T)):
        i = k * T
        t = min(T, n - 1 - i)
        yield k, streams[:, i:i + t], streams[:, i + 1:i + 1 + t]


def preceding(streams: np.ndarray, i: int, n: int) -> np.ndarray:
    """(B, n): the n ids of each stream before column i, -1 where the stream
    has none (before its start): what direct connections read before a window."""
    out = np.full((streams.shape[0], n), -1, dtype=np.int64)
    if n:
        got = streams[:, max(i - n, 0):i]
        out[:, n - got.shape[1]:] = got
    return out
