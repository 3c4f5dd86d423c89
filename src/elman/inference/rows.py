"""Rows of ids, each from a start state of its own, many a batch: lines
scored each from h0 = 0 (``engine``), and the long tails of the prefix
trie's hypotheses (``prefix``), each from the state of its prefix.

Row i is read from the state h0[i] after the word ``first[i]`` (a line's:
``<eos>``), with direct connections after the words history[i] before
that one; each id of the row is a target, then read. Memory: a step holds
at most ``POSITIONS`` positions (rows × window columns); a row of any
length is cut into windows with its state carried, the same numbers as
one pass.
"""
from __future__ import annotations

import numpy as np

from elman.model import window_losses
from elman.model.perplexity import WINDOW    # eval's stream window (validation's too)

POSITIONS = 2048      # rows × columns of one batched step


def batched(p, rows: list, eos_id: int, h0=None, positions: int = POSITIONS, window: int = WINDOW,
            history=None, first=None) -> list:
    """-ln P of each target (float64 arrays) of each id array in ``rows``
    (each ending in ``<eos>``), row i from the state h0[i] (default 0)
    after first[i] (default ``<eos>``; and with direct connections after
    the words history[i], default none). The longest rows go first; each
    batch holds as many rows as fit ``positions`` at its width (at most
    ``window`` columns, then the next window with the state carried, rows
    that have ended dropped), so a long line never widens the batch of
    short ones."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    first = np.full(len(rows), eos_id, np.int64) if first is None else np.asarray(first, np.int64)
    out = [None] * len(rows)
    start = 0
    while start < len(order):
        width = min(window, len(rows[order[start]]))
        chunk = order[start:start + max(1, positions // width)]
        start += len(chunk)
        h = np.zeros((len(chunk), p.Dh), p.dtype) if h0 is None else np.asarray(h0, p.dtype)[chunk]
        before = None if history is None else np.asarray(history)[chunk]
        for i, losses in zip(chunk, _run(p, [rows[i] for i in chunk], first[chunk], eos_id, h, window, before)):
            out[i] = losses
    return out


def _run(p, rows: list, first, pad: int, h, window: int, history=None) -> list:
    """The rows (longest first) in windows of ``window`` columns, the state
    carried, each window holding only the rows still running; ``pad``
    fills a window after a row's end."""
    lengths = np.array([len(r) for r in rows])
    out = [np.empty(n) for n in lengths]

    def windows():
        for t0 in range(0, lengths[0], window):
            active = int(np.count_nonzero(lengths > t0))
            width = min(window, int(lengths[0]) - t0)
            x = np.full((active, width), pad, np.int64)
            y = np.full((active, width), pad, np.int64)
            for r in range(active):
                row = rows[r]
                end = min(t0 + width, len(row))
                y[r, :end - t0] = row[t0:end]
                x[r, :end - t0] = row[t0 - 1:end - 1] if t0 else np.r_[first[r], row[:end - 1]]
            yield x, y

    for t0, (losses, _) in zip(range(0, lengths[0], window), window_losses(p, windows(), h, history)):
        for r in range(losses.shape[0]):
            end = min(t0 + losses.shape[1], lengths[r])
            out[r][t0:end] = losses[r, :end - t0]
    return out
