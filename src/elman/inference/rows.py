"""Rows of ids, each from a start state of its own, many a batch: lines
scored each from h0 = 0 (``engine``), and the long tails of the prefix
trie's hypotheses (``prefix``), each from the state of its prefix.

Row i is read from the state h0[i] after the word ``first[i]`` (a line's:
``<eos>``), with direct connections after the words history[i] before
that one; each id of the row is a target, then read. Memory: a step holds
at most ``positions_of(p)`` positions (rows × window columns); a row of any
length is cut into windows with its state carried, the same numbers as
one pass.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from elman.model import window_losses
from elman.model.perplexity import CLASS_WINDOW, window_of    # eval's stream windows

POSITIONS = 2048      # rows × columns of one batched step


def batched(p, rows: list, eos_id: int, h0=None, positions: int | None = None, window: int | None = None,
            history=None, first=None, table=None) -> list:
    """-ln P of each target (float64 arrays) of each id array in ``rows``
    (each ending in ``<eos>``), row i from the state h0[i] (default 0)
    after first[i] (default ``<eos>``; and with direct connections after
    the words history[i], default none). The longest rows go first; each
    batch holds as many rows as fit ``positions`` (default ``positions_of(p)``)
    at its width (at most ``window`` columns, default ``window_of(p)``, then the next window with the
    state carried, rows that have ended dropped), so a long line never
    widens the batch of short ones. All the batches' windows run as one
    pipeline (``model.window_losses``: the next window's recurrence beside
    this one's output layer), each batch from its own start; ``table``: as
    ``window_losses``'."""
    positions = positions_of(p) if positions is None else positions
    window = window_of(p, window)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    first = np.full(len(rows), eos_id, np.int64) if first is None else np.asarray(first, np.int64)
    batches, start = [], 0
    while start < len(order):
        width = min(window, len(rows[order[start]]))
        chunk = order[start:start + max(1, positions // width)]
        start += len(chunk)
        batches.append(chunk)
    out = [np.empty(len(r)) for r in rows]

    def windows():
        for chunk in batches:
            h = np.zeros((len(chunk), p.Dh), p.dtype) if h0 is None else np.asarray(h0, p.dtype)[chunk]
            before = None if history is None else np.asarray(history)[chunk]
            for k, (x, y, t0) in enumerate(_windows([rows[i] for i in chunk], first[chunk], eos_id, window)):
                placed.append((chunk, t0))
                yield (x, y, (h, before)) if k == 0 else (x, y)

    placed = deque()            # (rows, first column) of each window handed to the pipeline
    none = np.zeros((0, p.Dh), p.dtype)
    for losses, _ in window_losses(p, windows(), none, table=table):
        chunk, t0 = placed.popleft()
        for r in range(losses.shape[0]):
            row = out[chunk[r]]
            end = min(t0 + losses.shape[1], len(row))
            row[t0:end] = losses[r, :end - t0]
    return out


def positions_of(p) -> int:
    """Positions of one batched step: a compiled class softmax holds K + |c|
    logits a row, so it takes eval's longer windows (``CLASS_WINDOW``)."""
    return CLASS_WINDOW if window_of(p, None) == CLASS_WINDOW else POSITIONS


def _windows(rows: list, first, pad: int, window: int):
    """(x, y, t0) of the rows (longest first) in windows of ``window``
    columns, each window holding only the rows still running; ``pad``
    fills a window after a row's end."""
    lengths = np.array([len(r) for r in rows])
    for t0 in range(0, lengths[0], window):
        active = int(np.count_nonzero(lengths > t0))
        width = min(window, int(lengths[0]) - t0)
        x = np.full((active, width), pad, np.int64)
        y = np.full((active, width), pad, np.int64)
        for r in range(active):
            row = rows[r]
            end = min(t0 + width, len(row))
            y[r, :end - t0] = row[t0:end]
            if t0:
                x[r, :end - t0] = row[t0 - 1:end - 1]
            else:
                x[r, 0], x[r, 1:end] = first[r], row[:end - 1]
        yield x, y, t0
