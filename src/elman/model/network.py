"""The Elman RNN language model the toolkit runs: one time step, truncated
BPTT and the forward-only losses (the parameters are ``core.params``).

Everything here is composed of the forward/backward pairs of
``core.layers`` (the position-parallel products in their fast form from
``elman.fast``, which the tests check against ``core.layers``) and of an
output layer from the registry (``model.outputs``), whichever it is:
``step_gradients`` runs them on one position, ``bptt`` on B streams of T
steps, so each formula has exactly one implementation.
"""
from __future__ import annotations

import numpy as np

from elman.core import direct as dc
from elman.core.layers import (
    dropout_backward, dropout_forward, dropout_mask, embedding_forward, rnn_step_backward, rnn_step_forward, sigmoid,
)
from elman.core.params import CLASS_NAMES, DIRECT_NAMES, PARAM_NAMES, Params
from elman.core.sparse import SparseGrad, densify
from elman.fast.direct import Features
from elman.fast.rnnlm_direct import RnnlmFeatures
from elman.fast.output import output_backward, output_forward
from elman.fast.recurrence import threaded_input_forward, threaded_params_backward
from elman.fast.threads import one_blas_thread
from elman.model.outputs import layer_for


# --------------------------------------------------------------- one step


def step_gradients(p: Params, x: int, y: int, h_prev) -> dict:
    """The seed's eight quantities at one time step t, as gradients of
    J(t) = -log yhat(t)[y]:

    ===========  ========  ==================================================
    key          shape     formula (δ2 = yhat - y, δ1 = dJ/dz1 = dJ/db1|t)
    ===========  ========  ==================================================
    ``U``        (Dh,V)    h(t)ᵀ δ2
    ``h``        (Dh,)     δ2 Uᵀ
    ``b2``       (V,)      δ2
    ``b1``       (Dh,)     δ1 = (δ2 Uᵀ) ⊙ h(t) ⊙ (1 - h(t))
    ``L_x``      (d,)      δ1 Iᵀ          (= dJ/de(t), the row of L for x)
    ``I``        (d,Dh)    e(t)ᵀ δ1       at (t)
    ``H``        (Dh,Dh)   h(t-1)ᵀ δ1     at (t)
    ``h_prev``   (Dh,)     δ1 Hᵀ
    ===========  ========  ==================================================

    Where the seed differs: it writes (y - yhat) for δ2, which is the
    gradient of log yhat[y], i.e. -dJ/dz2, so its U, h, b2, b1, L_x, I, H
    and h(t-1) are all the negatives of these; and it writes
    dJ/dh(t-1) = Hᵀ δ1, which does not conform for a row vector δ1 (1×Dh);
    the right order is δ1 Hᵀ. "at (t)" means the contribution of this step
    only: the full gradient of a sequence's loss sums such terms over t
    (see ``bptt``).
    """
    if p.classes or p.D is not None:
        raise ValueError("step_gradients is the seed's full-softmax model; use bptt for a class softmax "
                         "or direct connections")
    x_ids = np.array([x])
    e, e_cache = embedding_forward(x_ids, p.L)
    h, h_cache = rnn_step_forward(np.asarray(h_prev, dtype=p.dtype)[None, :],
                                  threaded_input_forward(e, p.I, p.b1), p.H)
    _, out_cache = output_forward(h, p.U, p.b2, np.array([y]))
    dh, dU, db2, _ = output_backward(1.0, out_cache)
    dz, dh_prev = rnn_step_backward(dh, h_cache)
    dH, dI, db1, de = threaded_params_backward(dz, h_cache[0], e, p.H, p.I)
    return {"U": dU, "h": dh[0], "b2": db2, "b1": db1, "L_x": de[0],
            "I": dI, "H": dH, "h_prev": dh_prev[0]}


# ---------------------------------------------------------- truncated BPTT


def _forward_hidden(p: Params, inputs, h0, e_mask=None, grad: bool = True, table=None):
    """Run the recurrence over (B,T) inputs. Returns (x, e, hs, caches) with
    positions in time-major order (row t*B + b), hs (T+1,B,Dh), hs[0] = h0,
    and each step's ``rnn_step_forward`` cache; with ``e_mask`` (B*T,d), e
    is the embedding after dropout. ``grad`` False (scoring): no caches
    (None), the time loop compiled (``fast.scan``); ``table`` (V,Dh), when
    given (scoring only): e I + b1 of every word, read for each input in
    place of its product (e is then None)."""
    B, T = inputs.shape
    x = _time_major(inputs)
    if table is not None and not grad:
        from elman.fast.scan import scan_forward
        hs = np.empty((T + 1, B, p.Dh), dtype=p.dtype)
        hs[0] = h0
        return x, None, scan_forward(p.H, table[x].reshape(T, B, -1), hs), None
    e, _ = embedding_forward(x, p.L)
    if e_mask is not None:
        e, _ = dropout_forward(e, e_mask)
    hs = np.empty((T + 1, B, p.Dh), dtype=p.dtype)
    hs[0] = h0
    caches = []
    with one_blas_thread():
        a = threaded_input_forward(e, p.I, p.b1).reshape(T, B, -1)
        if not grad:
            from elman.fast.scan import scan_forward     # Numba's import: only scoring pays it
            return x, e, scan_forward(p.H, a, hs), None
        for t in range(T):
            caches.append(rnn_step_forward(hs[t], a[t], p.H, out=hs[t + 1])[1])
    return x, e, hs, caches


def _forward_positions(p: Params, inputs, targets, h0, e_mask=None, grad: bool = True, table=None):
    """The forward recurrence plus the time-major targets and the stacked h(t):
    (x, e, hs, caches, y (B*T,), h_all (B*T,Dh)), row t*B + b for stream b at step t."""
    x, e, hs, caches = _forward_hidden(p, np.asarray(inputs), h0, e_mask, grad, table)
    y = _time_major(targets)
    return x, e, hs, caches, y, hs[1:].reshape(len(y), -1)


def _time_major(ids):
    """(B,T) ids as the (B*T,) rows of a window, row t*B + b."""
    return np.ascontiguousarray(np.asarray(ids).T).reshape(-1)


def dropout_masks(p: Params, B: int, T: int, rate: float, seed, streams=None):
    """The masks ``bptt`` applies for ``dropout=(rate, seed)``: for e(t)
    (B*T,d) and for h(t) as the output layer sees it (B*T,Dh), rows
    time-major (t*B + b), drawn from ``numpy.random.default_rng(seed)``.

    ``streams`` = (first, total): these B streams are streams first..first+B-1
    of a batch of ``total`` (one process's share of a data-parallel batch):
    the masks are drawn for all ``total`` and these streams' rows kept, so
    the processes together apply the one-process masks."""
    first, total = (0, B) if streams is None else streams
    if not 0 <= first <= total - B:
        raise ValueError(f"streams {first}..{first + B - 1} are not among the {total} of the batch")
    rng = np.random.default_rng(seed)
    masks = (dropout_mask(rng, (total * T, p.d), rate, p.dtype), dropout_mask(rng, (total * T, p.Dh), rate, p.dtype))
    if total == B:
        return masks
    return tuple(np.ascontiguousarray(m.reshape(T, total, -1)[:, first:first + B]).reshape(B * T, -1) for m in masks)


def features(p: Params, inputs, history=None):
    """The direct features of a window (``fast.direct.Features``), None without
    direct connections; ``history`` (B, >= N-2): the words before it, -1 none."""
    if p.D is None:
        return None
    return direct_features(p, dc.contexts(inputs, history, p.order))


def direct_features(p: Params, ctx):
    """``fast.direct.Features`` or, for a model hashed RNNLM's way,
    ``fast.rnnlm_direct.RnnlmFeatures`` of contexts ``ctx``."""
    if p.direct_hash == "rnnlm":
        return RnnlmFeatures(p.D, p.order, p.V, p.class_bounds, ctx, p.direct_oov)
    return Features(p.D, p.order, p.V, p.classes, ctx)


def bptt(p: Params, inputs, targets, h0, sampled=None, sparse: bool = False, dropout=None,
         scale: float = 1.0, history=None, per_position: bool = False, output=None,
         deferred: bool = False, ready=None):
    """Loss and exact gradients over B streams of T steps (truncated BPTT).

    inputs, targets: int arrays (B,T), targets[b,t] = inputs[b,t+1] in a
    stream; h0 (B,Dh), the state carried from the previous window (treated
    as a constant: truncation).  Returns ``(loss, grads, h_last)`` with
    loss = Σ over all B·T positions of -log yhat[target] (natural log),
    grads a dict of parameter-shaped arrays, h_last (B,Dh).

    ``sampled`` = (samples (S,), log_q (V,)): train the full-softmax model
    with the sampled-softmax loss of ``elman.core.sampled`` instead (the loss
    and gradients are then that loss's, exactly). ``output``: an output
    layer (``core.outputs.OutputLayer``) in place of the one ``p`` names.
    ``sparse``: dJ/dL, and the output layer's sparse gradients (a sampled or
    class softmax's columns of U and b2), as ``SparseGrad`` (only the rows
    or columns the window touched; what the trainer's optimizers take).
    ``dropout`` = (rate, seed) or (rate, seed, streams): inverted dropout
    (Zaremba et al. 2014) on the connections that are not recurrent, e(t)
    into the recurrence and h(t) into the output layer, with the masks of
    ``dropout_masks``; the same seed, the same masks (and a deterministic
    loss to check).
    ``scale``: the gradients are those of scale·loss (the trainer's mean
    over positions, 1/(B·T)); the factor enters where dJ/dz2 is formed, on
    the (N,·) side of the output layer's products, not as one more pass over
    every gradient. The returned loss is the sum all the same.
    ``history`` (B, >= N-2): with direct connections of order N, the words
    of each stream before the window (-1: none; None: all none).
    ``per_position``: the losses of every position, (B,T), in place of their
    sum (dynamic evaluation scores and learns from one forward pass).
    ``deferred`` (with ``sparse``): under sampled or class softmax, dJ/dD as
    ``fast.kernels_direct.ScatterGrad``, the scatter that would build it,
    which an optimizer's plain step adds straight into D, and under a class
    softmax dJ/dU as ``fast.colgrad.ColumnProduct``, the product that would
    build it, which Adagrad's and SGD's steps form column by column (one
    process: a sum over processes needs the arrays).
    ``ready``: called (once or more) before the output layer or the direct
    weights are first read, after the recurrence where the layer allows: the
    trainer's wait for the updates of those weights that the step before
    left to another thread (``Optimizer.step``'s ``later``), while this
    window's recurrence runs.
    """
    if sampled is not None and p.classes:
        raise ValueError("sampled softmax trains the full-softmax model, not a class softmax")
    from elman.fast.kernels_direct import ScatterGrad   # Numba takes 0.3 s to import: only gradients pay it
    layer = output or layer_for(p, sampled)
    B, T = np.shape(inputs)
    feats = features(p, inputs, history)
    e_mask, h_mask = dropout_masks(p, B, T, *dropout) if dropout else (None, None)
    if ready is not None and layer.begin_reads:
        ready()
    layer.begin(feats, _time_major(targets))
    x, e, hs, caches, y, h_all = _forward_positions(p, inputs, targets, h0, e_mask)
    if dropout:
        h_all, _ = dropout_forward(h_all, h_mask)
    if ready is not None:
        ready()
    fwd = layer.losses(p, h_all, y, direct=feats)

    def overlap(dh_out):      # on one core while the others compute the output layer's weight gradients
        g = _recurrence_backward(p, dh_out, x, e, hs, caches, (e_mask, h_mask) if dropout else None, sparse)
        if feats:
            deltas = layer.deltas(scale, fwd.cache)
            scatter = deferred and sparse and p.direct_hash == "elman"    # ScatterGrad reads elman's windows
            g["D"] = (scatter and ScatterGrad.of(feats, deltas)) or feats.grad(deltas, sparse)
        return g
    _, out_grads, grads = layer.backward(scale, fwd.cache, overlap=overlap)
    grads.update({k: g if deferred and sparse else _built(g) for k, g in out_grads.items()})
    if not sparse:
        grads = densify(grads)
    grads = {k: grads[k] for k in p.as_dict() if k in grads}     # the order of the parameters
    loss = fwd.losses.reshape(T, B).T if per_position else float(fwd.losses.sum(dtype=np.float64))
    return loss, grads, hs[T].copy()


def _built(g):
    """A gradient the output layer left as the product that makes it, as its
    array (``SparseGrad``); any other as it is."""
    return g.sparse() if hasattr(g, "sparse") else g


def _recurrence_backward(p: Params, dh_out, x, e, hs, caches, masks, sparse: bool) -> dict:
    """dJ/dh of every position (B*T,Dh) -> the gradients of L, I, H, b1.
    ``masks``: the dropout masks of e and h, or None.

    Backward, in the seed's words: δ2 = yhat - y at every position (the
    output layer's backward pass gives dJ/dh = δ2 Uᵀ of all B·T rows);
    then, from t = T down to 1, dJ/dh(t) = δ2(t) Uᵀ + δ1(t+1) Hᵀ and δ1(t) = dJ/dh(t) ⊙ h(1-h);
    finally dJ/dH = Σ_t h(t-1)ᵀ δ1(t), dJ/dI = Σ_t e(t)ᵀ δ1(t), dJ/db1 =
    Σ_t δ1(t), each one product over all positions, and dJ/dL adds each
    δ1(t) Iᵀ into the row of the word x(t).
    """
    from elman.fast.rowsums import row_sums     # Numba takes 0.3 s to import: only gradients pay it
    T, B = len(caches), hs.shape[1]
    if masks is not None:
        dh_out = dropout_backward(dh_out, masks[1])
    dh_out = dh_out.reshape(T, B, -1)
    dz = np.empty_like(dh_out)
    dh_next = np.zeros((B, p.Dh), dtype=p.dtype)
    # H whose transpose is laid out row by row: BLAS takes dJ/dz·Hᵀ a quarter
    # faster (B = 64, Dh = 200) than with a transposed operand, to the same bits.
    H = np.ascontiguousarray(p.H.T).T
    with one_blas_thread():
        for t in range(T - 1, -1, -1):
            dh_next += dh_out[t]
            _, dh_next = rnn_step_backward(dh_next, caches[t][:2] + (H,), out=dz[t])
        dz = dz.reshape(B * T, -1)
        dH, dI, db1, de = threaded_params_backward(dz, hs[:-1].reshape(B * T, -1), e, p.H, p.I)
    if masks is not None:
        de = dropout_backward(de, masks[0])
    dL = SparseGrad(*row_sums(de, x), p.L.shape, 0)     # embedding_backward, compiled
    return {"L": dL if sparse else dL.dense(), "I": dI, "H": dH, "b1": db1}


# ----------------------------------------------------- no-gradient helpers


def rnn_step(p: Params, x_ids, h_prev):
    """h(t) for word ids x (B,) and h(t-1) (B,Dh)."""
    e, _ = embedding_forward(np.asarray(x_ids), p.L)
    h, _ = rnn_step_forward(np.asarray(h_prev, dtype=p.dtype), threaded_input_forward(e, p.I, p.b1), p.H)
    return h


def output_probs(p: Params, h, context=None):
    """yhat = softmax(h U + b2), (B,V); with classes, P(c(w)|h) P(w|c(w),h):
    exp of ``output_log_probs``."""
    return np.exp(output_log_probs(p, h, context))


def output_log_probs(p: Params, h, context=None):
    """log yhat (B,V), natural log, by the model's output layer (its
    ``log_probs``). With direct connections of order N, ``context`` (B, >=
    N-1): the words up to and including the one just read (-1: none; None:
    only none)."""
    h = np.atleast_2d(h)
    extra = None
    if p.D is not None:
        last = None if context is None else np.asarray(context)[:, -1:]
        extra = features(p, np.full((len(h), 1), -1) if last is None else last,
                         None if context is None else np.asarray(context)[:, :-1]).dense_terms()
    return layer_for(p).log_probs(p, h, extra)


__all__ = ["Params", "PARAM_NAMES", "CLASS_NAMES", "DIRECT_NAMES", "features", "step_gradients", "bptt",
           "dropout_masks", "rnn_step", "output_probs", "output_log_probs", "sigmoid"]
