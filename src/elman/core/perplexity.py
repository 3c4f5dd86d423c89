"""Perplexity of a token stream: what validation, ``elman eval`` and the
trainer's test report all compute, in one place.

The text is one stream: h0 = 0, the word before the first token is
``<eos>``, every token (each line's ``<eos>`` included) is predicted. It is
run in windows of ``window`` steps with the state carried across them, the
same computation as one token at a time; it is *not* split into B parallel
streams, since each would restart from h0 = 0 and see less context.
"""
from __future__ import annotations

import math

import numpy as np

from elman.core.model import window_losses


def stream_losses(p, ids, eos_id: int, window: int = 256) -> np.ndarray:
    """-ln P(token) for every token of ``ids`` read as one stream, float64 (N,)."""
    ids = np.asarray(ids, dtype=np.int64)
    x = np.concatenate([[eos_id], ids[:-1]])
    losses = np.empty(len(ids))
    starts = range(0, len(ids), window)
    windows = ((x[None, s:s + window], ids[None, s:s + window]) for s in starts)
    for s, (out, _) in zip(starts, window_losses(p, windows, np.zeros((1, p.Dh), dtype=p.dtype))):
        losses[s:s + window] = out[0]
    return losses


def perplexity(p, ids, eos_id: int) -> dict:
    """``{"perplexity", "tokens", "bits_per_token"}`` of ``ids`` as one stream."""
    return summary(stream_losses(p, ids, eos_id))


def summary(losses) -> dict:
    """``{"perplexity", "tokens", "bits_per_token"}`` of per-token losses in nats."""
    n = len(losses)
    mean = float(np.sum(losses)) / n
    return {"perplexity": math.exp(mean) if mean < 709 else math.inf, "tokens": n, "bits_per_token": mean / math.log(2.0)}
