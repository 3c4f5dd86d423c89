"""A full-softmax model as a class-factorised one: its word weights kept,
a class head fitted.

With frequency-binned classes c(w) (``core.classes.class_bounds``) the
class model's word factor

    P(w | c, h) = softmax_(w' in c)(h U + b2 + d)[w]      d: the direct word terms

is the full model's P(w | h) renormalised within c, exactly, with the very
same L, I, H, U, b2 and D. What the class model must learn is the class
marginal, which the full model gives as

    P_full(c | h) = Σ_(w in c) P_full(w | h) = softmax_c(lse_(w in c) z_w)

and the class model as softmax(h Uc + bc + dc)[c] (dc: the direct class
terms). Scoring then costs Dh·(K + |c(y)|) a word instead of Dh·V.

Start: lse_c(h U + b2) linearised at the mean state h̄ of the text: with
z̄ = h̄ U + b2 and π the softmax of z̄ within each class,

    Uc[:, c] = U[:, c] π_c        bc[c] = lse_c(z̄) - h̄ Uc[:, c]

Fit: the class factor's loss -log softmax(h Uc + bc + dc)[c(y)] over the
training text read in B streams of T steps, the states h those of the
model as it is (nothing else moves: the word factor stays the full
model's), Adagrad on Uc and bc, and with ``direct`` plain SGD on the cells
of D the class terms read (cells the word terms share: they move too).
"""
from __future__ import annotations

import numpy as np

from elman.core import direct as dc
from elman.core.classes import class_bounds, word_classes
from elman.core.layers import embedding_forward, logits_forward
from elman.core.params import Params
from elman.fast.output import output_backward, output_deltas, output_losses
from elman.fast.recurrence import rnn_input_forward
from elman.fast.scan import scan_forward


def with_classes(p: Params, counts, K: int) -> Params:
    """The class-factorised model of full-softmax ``p`` (copies of its
    tensors), classes binned from ``counts`` (V,), the head not yet fitted
    (``start_head``): Uc zero, bc zero."""
    if p.classes:
        raise ValueError(f"the model already has a {p.classes}-class softmax")
    arrays = {k: v.copy() for k, v in p.as_dict().items()}
    arrays.update(Uc=np.zeros((p.Dh, K), p.dtype), bc=np.zeros(K, p.dtype),
                  class_bounds=class_bounds(counts, K))
    return Params(**arrays)


def states(p: Params, inputs, h0):
    """h(t) of (B,T) ``inputs`` from h0 (B,Dh): (T+1,B,Dh), hs[0] = h0 (no gradient kept)."""
    B, T = inputs.shape
    x = np.ascontiguousarray(inputs.T).reshape(-1)
    e, _ = embedding_forward(x, p.L)
    hs = np.empty((T + 1, B, p.Dh), p.dtype)
    hs[0] = h0
    return scan_forward(p.H, rnn_input_forward(e, p.I, p.b1).reshape(T, B, -1), hs)


def start_head(p: Params, h_mean) -> None:
    """Uc and bc from the linearisation at h̄ = ``h_mean`` (the module's formula), in place."""
    z = logits_forward(np.asarray(h_mean, np.float64)[None], p.U.astype(np.float64), p.b2.astype(np.float64))[0]
    starts, sizes = p.class_bounds[:-1], np.diff(p.class_bounds)
    m = np.repeat(np.maximum.reduceat(z, starts), sizes)
    ez = np.exp(z - m)
    within = np.add.reduceat(ez, starts)
    pi = ez / np.repeat(within, sizes)
    Uc = np.add.reduceat(p.U.astype(np.float64) * pi, starts, axis=1)
    p.Uc[...] = Uc
    p.bc[...] = np.log(within) + m[starts] - np.asarray(h_mean, np.float64) @ Uc


def head_loss(p: Params, h, c, feats=None, scale: float = 1.0, direct_grad: bool = False):
    """The class factor's loss Σ_n -log softmax(h Uc + bc + dc)[n, c_n] and
    its gradients: (loss, dUc (Dh,K), dbc (K,), dD or None) of scale·loss;
    ``feats``: the direct features (``core.direct.Features``), dD with ``direct_grad``.
    dJ/dzc = softmax(zc) - onehot(c); dUc = hᵀ dJ/dzc (Dh,N)(N,K); dbc = Σ_rows dJ/dzc;
    dD: dJ/dzc into the class windows the rows read (``direct.Features.class_grad``)."""
    losses, cache, _ = output_losses(h, p.Uc, p.bc, c, add=feats and feats.add_classes)
    _, dUc, dbc, _ = output_backward(scale, cache)
    dD = None
    if feats is not None and direct_grad:
        parts, w = output_deltas(cache, scale)
        dD = feats.class_grad([("classes", None, cols, Dc * w[:, None]) for cols, Dc in parts], sparse=True)
    return float(losses.sum(dtype=np.float64)), dUc, dbc, dD


def fit_head(p: Params, ids, B: int = 32, T: int = 10, lr: float = 0.1, direct_lr: float | None = None,
             passes: int = 1, say=None) -> list:
    """Fit Uc, bc (and with ``direct_lr`` the class cells of D) of class
    model ``p`` in place on the id array ``ids`` read as B streams of T
    steps, ``passes`` times; starts the head first (``start_head``) from the
    mean state of the first windows. Returns the mean loss of each pass."""
    from elman.data.batches import batchify, iter_batches
    from elman.training.optim import make_optimizer
    rows = batchify(np.asarray(ids), B)
    start_head(p, _mean_state(p, rows, T))
    opt = make_optimizer("adagrad", {"Uc": p.Uc, "bc": p.bc}, lr)
    out = []
    for k in range(passes):
        h0, history, total, n = np.zeros((B, p.Dh), p.dtype), None, 0.0, 0
        for _, x, y in iter_batches(rows, T):
            hs = states(p, x, h0)
            feats = None
            if p.D is not None:
                ctx = dc.contexts(x, history, p.order)
                history = dc.next_history(ctx, p.order)
                feats = dc.Features(p.D, p.order, p.V, p.classes, ctx)
            c = word_classes(p.class_bounds, np.ascontiguousarray(y.T).reshape(-1))
            loss, dUc, dbc, dD = head_loss(p, hs[1:].reshape(-1, p.Dh), c, feats, 1.0 / c.size, bool(direct_lr))
            opt.step({"Uc": p.Uc, "bc": p.bc}, {"Uc": dUc, "bc": dbc})
            if dD is not None:                  # a rate per token, as training's --direct-lr
                _sgd(p.D, dD, direct_lr * c.size)
            total, n, h0 = total + loss, n + c.size, hs[-1].copy()
        out.append(total / n)
        if say:
            say(f"class head pass {k + 1}: {total / n:.4f} nats a token")
    return out


def _mean_state(p: Params, rows, T: int, windows: int = 50):
    """The mean h over the first ``windows`` windows of the streams."""
    from elman.data.batches import iter_batches
    h0, acc, n = np.zeros((rows.shape[0], p.Dh), p.dtype), np.zeros(p.Dh), 0
    for k, x, _ in iter_batches(rows, T):
        if k >= windows:
            break
        hs = states(p, x, h0)
        acc += hs[1:].sum(axis=(0, 1))
        n += hs.shape[0] - 1
        h0 = hs[-1].copy()
    return acc / max(n * rows.shape[0], 1)


def _sgd(D, g, rate: float) -> None:
    """D <- D - rate·g for a dense or ``SparseGrad`` g."""
    if isinstance(g, np.ndarray):
        D -= D.dtype.type(rate) * g
    else:
        g.put(D, g.take(D) - D.dtype.type(rate) * g.values)
