"""Dynamic evaluation: the model keeps learning from the text it has scored.

Mikolov's RNNLM ``-dynamic LR`` (and Krause et al. 2018): the text is read
in order; each segment is first scored with the weights as they are, then
the weights take one SGD step on that segment's loss, so every token is
predicted from weights that have seen only the text before it (no look
ahead: a token's probability does not depend on anything after its
segment's end, nor on the rest of its own segment after it).

    θ <- θ - lr · ∇θ Σ_(t in segment) J(t)

The step is on the *sum* of the segment's losses, so LR is a rate per
token, as RNNLM's; the gradient is the model's exact one (the full or the
class softmax: a model trained with sampled softmax is a full-softmax
model), computed by ``bptt`` from the state the scoring pass started from,
sparse where the model's gradients are. Only a copy of the weights
changes: the model file, and the caller's Params, stay as they were.

``stream_losses``: the text as one stream (``elman eval``), segments of T
tokens, the state and the direct connections' history carried as in
``perplexity``. ``line_losses``: each line on its own from h0 = 0 after
``<eos>`` (``elman score``), one step per line once it is scored.
"""
from __future__ import annotations

import numpy as np

from elman.core.direct import contexts, next_history
from elman.core.model import bptt, forward_losses
from elman.core.sparse import SparseGrad

# ``elman eval/score --dynamic`` without rates: measured on the KJV
# validation text (README, "Dynamic evaluation"). The direct weights take a
# rate of their own, as in training (``--direct-lr``): an n-gram weight is
# one context's, and the text just read is the best evidence of it.
DEFAULT_LR = 0.01
DEFAULT_DIRECT_LR = 0.2


def sgd_step(params: dict, grads: dict, lr: float, direct_lr: float | None = None) -> None:
    """p <- p - lr g for every gradient, dense or ``SparseGrad``, in place;
    the direct weights D at ``direct_lr`` (None: ``lr``)."""
    for name, g in grads.items():
        p = params[name]
        rate = p.dtype.type(direct_lr if name == "D" and direct_lr is not None else lr)
        if isinstance(g, SparseGrad):
            g.put(p, g.take(p) - rate * g.values)
        else:
            p -= rate * g


def stream_losses(p, ids, eos_id: int, lr: float, T: int, direct_lr: float | None = None) -> np.ndarray:
    """-ln P(token) (N,) float64 of ``ids`` read as one stream, adapting
    after each segment of T tokens."""
    p = p.copy()
    params = p.as_dict()
    ids = np.asarray(ids, dtype=np.int64)
    x = np.concatenate([[eos_id], ids[:-1]])
    h = np.zeros((1, p.Dh), dtype=p.dtype)
    history = None
    out = np.empty(len(ids))
    for s in range(0, len(ids), T):
        xs, ys = x[None, s:s + T], ids[None, s:s + T]
        losses, h_next = forward_losses(p, xs, ys, h, history)
        out[s:s + T] = losses[0]
        _, grads, _ = bptt(p, xs, ys, h, sparse=True, history=history)
        sgd_step(params, grads, lr, direct_lr)
        if p.order:
            history = next_history(contexts(xs, history, p.order), p.order)
        h = h_next
    return out


def line_losses(p, lines, lr: float, direct_lr: float | None = None) -> list:
    """-ln P of each token of each line (a list of arrays, each line an id
    array ending in ``<eos>``), the lines in order, each from h0 = 0 with
    ``<eos>`` before it, one step on each line after it is scored."""
    return list(iter_line_losses(p, lines, lr, direct_lr))


def iter_line_losses(p, lines, lr: float, direct_lr: float | None = None):
    """``line_losses`` one line at a time, for lines read as they come (``elman score``)."""
    p = p.copy()
    params = p.as_dict()
    eos = None
    for line in lines:
        line = np.asarray(line, dtype=np.int64)
        eos = line[-1] if eos is None else eos       # every line ends in <eos>
        x = np.concatenate([[eos], line[:-1]])[None, :]
        h0 = np.zeros((1, p.Dh), dtype=p.dtype)
        losses, _ = forward_losses(p, x, line[None, :], h0)
        yield losses[0].astype(np.float64)
        _, grads, _ = bptt(p, x, line[None, :], h0, sparse=True)
        sgd_step(params, grads, lr, direct_lr)
