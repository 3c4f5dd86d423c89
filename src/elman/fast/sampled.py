"""Sampled softmax at speed: the function of ``core.sampled``'s
``sampled_output_losses``/``sampled_output_backward`` (the reference, which
the tests hold this to), computed for row blocks shared by the cores.

What differs from the reference, and why:
- [U; b2] is read as one array (the bias trick of ``fast.output``): the
  S sampled columns and the N targets' columns are gathered once as rows
  (S,Dh+1) and (N,Dh+1), contiguous in ``Params``' word-by-word layout,
  and -log(S q) is folded into the gathered bias, so the logits are one
  product [h, 1]·Wsᵀ;
- the (N,S) work (product, accidental hits, max, exp, row sums by BLAS)
  runs a block of rows at a time on each core while the block is in cache,
  BLAS on one thread (``fast.threads``);
- dJ/dh goes first, then the recurrence's backward pass (``overlap``) runs
  on one core while the others form the sampled columns' gradient.

Shapes: h (N,Dh), U (Dh,V), b2 (V,), y (N,), samples (S,), log_q (V,).
"""
from __future__ import annotations

import numpy as np

from elman.core.outputs import Backward, ColumnDeltas, Forward
from elman.core.params import stacked_bias, with_ones
from elman.core.sampled import SampledCache, SampledSoftmax
from elman.core.sparse import SparseGrad
from elman.fast.threads import one_blas_thread, parallel_for, row_blocks


def _rows(U, b2, ids):
    """[U; b2][:, ids]ᵀ as a new (len(ids), Dh+1) array."""
    Ub = stacked_bias(U, b2)
    if Ub is not None:
        return np.ascontiguousarray(Ub[:, ids].T)
    out = np.empty((len(ids), U.shape[0] + 1), np.result_type(U, b2))
    out[:, :-1], out[:, -1] = U[:, ids].T, b2[ids]
    return out


def accidental_hits(y, samples):
    """The pairs (n, k) with samples[k] == y[n], rows ascending: each
    target's equal samples found by two binary searches in the samples
    sorted, not by an (N,S) comparison (0.5 ms a window at N = 640, S = 1000)."""
    order = np.argsort(samples, kind="stable")
    ordered = samples[order]
    lo, hi = np.searchsorted(ordered, y, "left"), np.searchsorted(ordered, y, "right")
    n = hi - lo
    rows = np.repeat(np.arange(len(y)), n)
    return rows, order[np.repeat(lo - np.cumsum(n) + n, n) + np.arange(rows.size)]


def sampled_losses(h, U, b2, y, samples, log_q, extra=None):
    """J_n (N,) as ``core.sampled.sampled_output_losses``, and a cache;
    ``extra`` = (zy (N,), zs (N,S)): terms added to the true and sampled
    logits (``core.direct``'s n-gram weights of those columns)."""
    y, samples = np.asarray(y), np.asarray(samples)
    (N, Dh), S = h.shape, samples.size
    dt = np.result_type(h, U, b2)
    h1 = with_ones(h, dt)
    Wy, Ws = _rows(U, b2, y), _rows(U, b2, samples)
    Ws[:, Dh] -= (np.log(S) + log_q[samples]).astype(dt)
    o_true = np.einsum("nd,nd->n", h1, Wy)
    if extra is not None:
        o_true += extra[0]
    E, m, rest = np.empty((N, S), dt), np.empty(N, dt), np.empty(N, dt)
    ones = np.ones(S, dt)
    hit_rows, hit_cols = accidental_hits(y, samples)
    blocks = row_blocks(N)

    def block(i):
        r = blocks[i]
        O = E[r]
        np.matmul(h1[r], Ws.T, out=O)
        if extra is not None:
            O += extra[1][r]
        a, b = np.searchsorted(hit_rows, (r.start, r.stop))
        O[hit_rows[a:b] - r.start, hit_cols[a:b]] = -np.inf   # accidental hits
        np.maximum(o_true[r], O.max(axis=1), out=m[r])
        O -= m[r, None]
        np.exp(O, out=O)
        np.matmul(O, ones, out=rest[r])

    with one_blas_thread():
        parallel_for(block, len(blocks))
    s = np.exp(o_true - m) + rest
    losses = np.log(s) - (o_true - m)
    return losses, SampledCache(h1, Wy, Ws, y, samples, E, rest, s)


def sampled_backward(dloss, cache, overlap=None):
    """Gradients of dloss·Σ_n J_n (dloss a scalar or (N,) weights), as
    ``core.sampled.sampled_output_backward``: (dh, rows, ids, overlap(dh) or
    None), where row k of ``rows`` (N+S, Dh+1) is a part of the gradient of
    column ids[k] of [U; b2] (ids: the targets, then the samples); rows of one
    id add up (``core.layers.embedding_row_sums``). Turns the cached E into dJ/dO."""
    h1, Wy, Ws, y, samples, E, rest, s = cache
    N, Dh = h1.shape[0], h1.shape[1] - 1
    dt = E.dtype
    w = np.asarray(dloss, dtype=dt) / s
    dtrue = -rest * w
    dh = np.empty((N, Dh), dt)
    blocks = row_blocks(N)

    def dh_block(i):
        r = blocks[i]
        E[r] *= w[r, None]                                    # dJ/dO
        np.matmul(E[r], Ws[:, :Dh], out=dh[r])
        dh[r] += dtrue[r, None] * Wy[r, :Dh]

    with one_blas_thread():
        parallel_for(dh_block, len(blocks))
    # Rows of the gradient of [U; b2]ᵀ: the targets' (h1 · dJ/do_true) and the samples' (dJ/dOᵀ h1).
    rows = np.empty((N + len(samples), Dh + 1), dt)
    np.multiply(h1, dtrue[:, None], out=rows[:N])
    cuts = row_blocks(len(samples))

    def dW_block(i):
        c = cuts[i]
        np.matmul(E[:, c].T, h1, out=rows[N + c.start:N + c.stop])

    with one_blas_thread():
        done = parallel_for(dW_block, len(cuts), first=overlap and (lambda: overlap(dh)))
    return dh, rows, np.concatenate([y, samples]), done


def sampled_deltas(dloss, cache) -> ColumnDeltas:
    """After ``sampled_backward(dloss, cache)``: dJ/do_true (N,) and dJ/dO
    (N,S), the gradients of the true and sampled logits (the cached E holds dJ/dO)."""
    w = np.asarray(dloss, dtype=cache.E.dtype) / cache.s
    return ColumnDeltas(cache.y, cache.samples, -cache.rest * w, cache.E)


class FastSampledSoftmax(SampledSoftmax):
    """``SampledSoftmax`` by ``sampled_losses``/``sampled_backward``; the
    direct connections' terms of the sampled columns (which need no h) are
    gathered on another core from ``begin`` on, beside the recurrence."""

    begin_reads = True      # the direct weights' sampled columns

    def begin(self, direct, y) -> None:
        from elman.fast.threads import beside
        if direct is not None:
            self._extra = beside(lambda: direct.sampled_terms(y, self.samples))

    def losses(self, p, h, y, direct=None, overlap=None) -> Forward:
        extra = None
        if direct is not None:
            extra = self.__dict__.pop("_extra", None)
            extra = extra() if extra is not None else direct.sampled_terms(np.asarray(y), self.samples)
        losses, cache = sampled_losses(h, p.U, p.b2, y, self.samples, self.log_q, extra=extra)
        return Forward(losses, cache, overlap() if overlap is not None else None)

    def backward(self, dloss, cache, overlap=None) -> Backward:
        """Sums the rows of one column (compiled) and returns dJ/dU, dJ/db2 as
        column ``SparseGrad``s."""
        from elman.fast.rowsums import row_sums     # Numba takes 0.3 s to import: only gradients pay it
        dh, rows, ids, done = sampled_backward(dloss, cache, overlap=overlap)
        cols, sums = row_sums(rows, ids)
        V, Dh = len(self.log_q), dh.shape[1]
        return Backward(dh, {"U": SparseGrad(cols, sums[:, :-1].T, (Dh, V), -1),
                             "b2": SparseGrad(cols, sums[:, -1], (V,), -1)}, done)

    def deltas(self, dloss, cache) -> ColumnDeltas:
        return sampled_deltas(dloss, cache)
