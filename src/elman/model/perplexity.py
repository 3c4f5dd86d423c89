"""Perplexity of a token stream: what validation, ``elman eval`` and the
trainer's test report all compute, in one place.

The text is one stream: h0 = the model's starting state (``initial_state``:
0 but for an imported RNNLM model), the word before the first token is
``<eos>``, every token (each line's ``<eos>`` included) is predicted. It is
run in windows of ``window`` steps with the state carried across them, the
same computation as one token at a time; it is *not* split into B parallel
streams, since each would restart from h0 and see less context.

Memory does not grow with the text: ``ids`` may be a memory map of any
length, read one window at a time (int64 copies of ``window`` ids), and the
output layer holds the logits of one window, ``window`` × V floats, plus
the next window's recurrence in flight. The per-token losses are summed
exactly (``math.fsum``), so the figure does not depend on the windowing.
"""
from __future__ import annotations

import math
from itertools import chain

import numpy as np

from elman.core.params import initial_state
from elman.fast.recurrence import threaded_input_forward
from elman.fast.threads import one_blas_thread
from elman.model.scoring import window_losses

WINDOW = 256            # positions per window: eval's logits are WINDOW × V floats
# A compiled class softmax (``Params.scoring``) holds K + |c| logits a row
# and computes each row on its own, so its windows are longer: a window's
# fixed costs (the hashing of its direct features, the hand-over to the
# core that runs the next recurrence) then weigh a sixteenth as much; its
# numbers do not depend on the window.
CLASS_WINDOW = 4096


def window_of(p, window: int | None) -> int:
    """``window``, or when None the stream window that suits ``p``."""
    if window is not None:
        return window
    return CLASS_WINDOW if p.classes and p.scoring == "compiled" else WINDOW


# The most entries (V·Dh) of an input table: 64 MB of float32, the table of
# V = 80k words at Dh = 200.
TABLE_ENTRIES = 1 << 24


def input_table(p, tokens: int):
    """e I + b1 (V,Dh) of every word, for scoring ``tokens`` tokens compiled:
    a gather of rows in place of each window's product, where the table's
    own product (V rows) is at most what the tokens' would be and it fits
    TABLE_ENTRIES; else None. Computed by the same product as each window's."""
    if p.scoring != "compiled" or tokens < p.V or p.V * p.Dh > TABLE_ENTRIES:
        return None
    with one_blas_thread():
        return threaded_input_forward(p.L, p.I, p.b1)


RELEASE_EVERY = 1 << 16  # ids between calls of ``release``


def stream_windows(ids, eos_id: int, window: int = WINDOW, release=None):
    """``(inputs, targets)`` (1, <=window) int64 windows of ``ids`` read as
    one stream; ``release(0, s)``, when given, is told every so often that
    ids before s will not be read again."""
    for s in range(0, len(ids), window):
        y = np.asarray(ids[s:s + window], dtype=np.int64)
        x = np.concatenate([[eos_id] if s == 0 else np.asarray(ids[s - 1:s], dtype=np.int64), y[:-1]])
        if release is not None and s and s % RELEASE_EVERY < window:
            release(0, s - 1)
        yield x[None, :], y[None, :]


def stream_window_losses(p, ids, eos_id: int, window: int | None = None, release=None):
    """-ln P(token) of each window of ``ids`` as one stream: float64 (w,) arrays, in order."""
    h0 = initial_state(p, 1)
    table = input_table(p, len(ids))
    for losses, _ in window_losses(p, stream_windows(ids, eos_id, window_of(p, window), release), h0, table=table):
        yield np.asarray(losses[0], dtype=np.float64)


def stream_losses(p, ids, eos_id: int, window: int | None = None) -> np.ndarray:
    """-ln P(token) for every token of ``ids`` read as one stream, float64 (N,)."""
    parts = list(stream_window_losses(p, ids, eos_id, window))
    return np.concatenate(parts) if parts else np.zeros(0)


def perplexity(p, ids, eos_id: int, release=None, step=None) -> dict:
    """``{"perplexity", "tokens", "bits_per_token"}`` of ``ids`` as one stream;
    ``step(n)``, when given, is told of each window's n tokens once they are scored."""
    losses = stream_window_losses(p, ids, eos_id, release=release)
    return _result(math.fsum(chain.from_iterable(_told(part.tolist(), step) for part in losses)), len(ids))


def _told(values: list, step) -> list:
    if step is not None:
        step(len(values))
    return values


def summary(losses) -> dict:
    """``{"perplexity", "tokens", "bits_per_token"}`` of per-token losses in
    nats, summed exactly as ``perplexity`` sums them."""
    return _result(math.fsum(np.asarray(losses, dtype=np.float64).ravel().tolist()), len(losses))


def _result(nats: float, n: int) -> dict:
    mean = nats / n
    return {"perplexity": math.exp(mean) if mean < 709 else math.inf, "tokens": n, "bits_per_token": mean / math.log(2.0)}
