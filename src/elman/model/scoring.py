"""The forward-only losses: evaluation's and scoring's passes over windows.

The numbers are those of the forward half of ``network.bptt`` (the same
layers, no caches); what is here is how the work of consecutive windows
is laid out on the cores: the recurrence of one window is sequential and
needs one core, the output layer's rows can be shared by any number.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from functools import partial
from typing import NamedTuple

import numpy as np

from elman.core import direct as dc
from elman.core.params import Params
from elman.fast import threads
from elman.fast.threads import Shared, beside, one_blas_thread
from elman.model.network import _forward_positions, direct_features, features
from elman.model.outputs import layer_for

# Output units times rows that evaluation computes at once: 2^26 logits, 256 MB
# in float32. At V = 800k a window of 256 positions would be 820 MB of logits,
# and ``elman score``'s batches of lines more; in blocks of rows the memory is
# this bound whatever the window, the lines or V (above 2^26 words, one row).
EVAL_LOGITS = 1 << 26


def forward_losses(p: Params, inputs, targets, h0, history=None):
    """Per-position losses -ln yhat[target], shape (B,T), and h_last; the
    forward pass only (evaluation and scoring). ``history``: as ``bptt``'s."""
    return next(window_losses(p, [(inputs, targets)], h0, history))


def window_losses(p: Params, windows, h0, history=None, states: bool = False, table=None):
    """``forward_losses`` of consecutive windows, the state carried from one
    to the next: yields (losses (B,T), h_last) for each (inputs, targets)
    of the iterable ``windows``. With direct connections the words before
    each window are carried too (``history``: those before the first).

    A window may have fewer streams than the one before: its B' rows
    continue the first B' streams (scoring drops lines that have ended).
    A window given as (inputs, targets, (h0, history)) starts afresh from
    that state and those words before it (scoring's batches of lines, one
    after the other in one pipeline).
    ``states``: yield every step's state, (T,B,Dh), instead of h_last.
    ``table``: e I + b1 of every word (``perplexity.input_table``), read in place of the products.

    Pipelined: the next window's recurrence runs on another thread
    (``threads.beside``) while this thread computes this window's output
    layer, hands its losses to the caller and reads the window after the
    next. Where the output layer gives its rows as tasks (``score_tasks``:
    the class softmax), they are ``threads.Shared``: the other thread,
    its recurrence done, takes this window's tasks that are left and then
    the next window's, so it keeps working while this one runs the caller's
    Python (records, another model's queries, reading); otherwise that
    thread joins the output layer's rows once the recurrence is done
    (``threads.parallel_for``). Either way the numbers are those of
    ``forward_losses`` window by window: a row's loss does not depend on
    the thread that computes it.
    """
    carried = [history]
    layer = layer_for(p)
    grad = p.scoring != "compiled"  # "numpy": the step-by-step path of the gradient pass, digit for digit
    tasks = None if grad else getattr(layer, "score_tasks", None)

    def fetch():
        """(inputs, targets), its direct features, and its fresh start state or None."""
        window = next(windows, None)
        if window is None:
            return None, None, None
        start = window[2] if len(window) > 2 else None
        if start is not None:
            carried[0] = start[1]
        if p.D is None:
            return window[:2], None, start
        before = carried[0]
        if before is not None:                   # a window of fewer streams continues the first ones
            before = before[:np.shape(window[0])[0]]
        ctx = dc.contexts(window[0], before, p.order)
        carried[0] = dc.next_history(ctx, p.order)
        return window[:2], direct_features(p, ctx), start

    def forward(window, h, feats):
        """The window's recurrence, and its output layer's tasks (``_Job``) or None."""
        with one_blas_thread():     # every product of scoring is small: BLAS's threads would only spin
            fp = _forward_positions(p, *window, h, grad=grad, table=table)
        if tasks is None:
            return fp, None
        out, n, task = tasks(p, fp[5], fp[4], direct=feats)
        return fp, _Job(out, Shared(task, n))

    windows = iter(windows)
    window, feats, start = fetch()
    ready = None if window is None else forward(window, h0 if start is None else start[0], feats)
    upcoming = fetch()
    moved_on = threading.Event()
    while ready is not None:
        (_, _, hs, _, y, h_all), job = ready
        window, next_feats, start = upcoming
        handoff = Future()
        moved_on.set()          # the helper leaves this window's tasks to this thread, for the next recurrence
        moved_on = threading.Event()
        if window is not None:
            h = hs[-1][:np.shape(window[0])[0]] if start is None else start[0]
            beside(partial(_ahead, forward, window, h, next_feats, job, handoff, moved_on))
        if job is None:
            with one_blas_thread():
                losses = _bounded_losses(p, h_all, y, feats)
        else:
            job.rows.join(helpers=threads.THREADS - 2)     # the helper with the recurrence is the other
            losses = job.out.astype(p.dtype)
        feats = next_feats
        T, B = hs.shape[0] - 1, hs.shape[1]
        yield losses.reshape(T, B).T, (hs[1:] if states else hs[-1].copy())
        upcoming = fetch() if window is not None else (None, None, None)
        ready = handoff.result() if window is not None else None


class _Job(NamedTuple):
    """A window's output layer as tasks: ``rows`` fills ``out``, the losses (N,) in float64."""
    out: np.ndarray
    rows: Shared


def _ahead(forward, window, h, feats, job, handoff: Future, moved_on) -> None:
    """On the helper thread: the next window's recurrence, handed to the
    caller's thread as soon as it is done; then the current window's output
    tasks that are left, and the next window's until the caller moves on
    to it (the recurrence after it is then this thread's to run)."""
    try:
        ready = forward(window, h, feats)
    except BaseException as exc:
        handoff.set_exception(exc)
        return
    handoff.set_result(ready)
    if job is not None:
        job.rows.work()
    if ready[1] is not None:
        ready[1].rows.work(stop=moved_on)


def _bounded_losses(p: Params, h_all, y, feats=None):
    """The output layer's losses of every row, in blocks of rows of at most
    EVAL_LOGITS logits (``width``: a row's logits)."""
    layer = layer_for(p)
    step = max(1, EVAL_LOGITS // layer.width(p))
    losses = np.empty(len(y), p.dtype)
    for i in range(0, max(len(y), 1), step):
        rows = slice(i, i + step)
        part = feats and _RowsOf(feats, np.arange(len(y))[rows])
        score = layer.scores if p.scoring == "compiled" else _losses_of(layer)
        losses[rows] = score(p, h_all[rows], y[rows], direct=part)[0]
    return losses


def _losses_of(layer):
    """The layer's ``losses`` as ``scores`` returns them: (losses, done)."""
    return lambda *args, **kw: layer.losses(*args, **kw)[::2]


class _RowsOf:
    """A window's direct features seen from a block of its rows (``idx``)."""

    def __init__(self, feats, idx):
        self.feats, self.idx = feats, idx
        self.D = feats.D

    def scoring_terms(self, y):
        return self.feats.scoring_terms(y, self.idx)

    def add_words(self, z, c, rows=None):
        self.feats.add_words(z, c, self.idx if rows is None else self.idx[rows])

    def add_classes(self, z, c, rows=None):
        self.feats.add_classes(z, c, self.idx if rows is None else self.idx[rows])


def target_log_probs(p: Params, h, y, context=None):
    """ln yhat[y] of each row of h (N,Dh) for its target y (N,), by the path
    scoring takes: only the logits a target needs where the layer can (a
    class softmax: K + |c(y)|). ``context``: as ``output_log_probs``'s."""
    feats = None
    if p.D is not None:
        ctx = None if context is None else np.asarray(context)
        feats = features(p, np.full((len(y), 1), -1) if ctx is None else ctx[:, -1:],
                         None if ctx is None else ctx[:, :-1])
    return -_bounded_losses(p, np.atleast_2d(h), np.asarray(y), feats).astype(np.float64)
