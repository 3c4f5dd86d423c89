"""The full softmax at speed: the function of ``core.outputs.FullSoftmax``
(the reference, which the tests hold this to), computed by vocabulary
column chunks shared between the cores, into reused scratch buffers,
without ever forming yhat.

The shift. The loss of a row is J_n = log s_n + m_n - z2[n, y_n] with
E = exp(z2 - m) and s its row sum; any shift m gives the same yhat = E/s.
m = 0 is tried first: no pass to find the row max, none to subtract it,
and a row sum is a sum of partial sums, so the vocabulary can be cut into
column chunks c, shared between the cores (``parallel_for``): each a
product h U[:, c] that packs only its own part of U, into a contiguous
block E_c (N,|c|), its exp and sums done while it is in cache. A row for
which m = 0 fails shows it in its sum: s = inf (an exp overflowed, or the
sum did) or s below ``TINY_SUM`` (every exp underflowed); only such rows
are done again with m = the row max, where every exp <= 1 and s >= 1, so
logits of 1e4 neither overflow nor take log(0). The price of m = 0: J is a
difference of numbers of the size of the logits, exact to |z2|·eps (4e-6
nats at logits of 70 in float32) where the max shift gives J·eps. So
float64, the precision for checking gradients by finite differences,
always takes the max shift (one more pass over the chunks once every
chunk's max is known); float32, the one for speed, m = 0.

Every function returns the same shape of result whatever its options.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from elman.core.outputs import Backward, ChunkDeltas, Forward, FullSoftmax
from elman.core.params import stacked_bias, with_ones
from elman.fast import scratch
from elman.fast.threads import chunks, parallel_for

# A row sum of exp(z2) at least this large has a normal largest term, so
# m = 0 lost no precision; below it the row is redone with the max shift.
TINY_SUM = 1e-20


class OutputCache(NamedTuple):
    """What ``output_losses`` hands ``output_backward``: E by column chunks
    ``cols`` (each (N,|c|)), the rows whose target lies in each (``hits``),
    E's row sums s (N,)."""
    h: np.ndarray
    U: np.ndarray
    y: np.ndarray
    cols: list
    hits: list
    E: list
    s: np.ndarray


def output_losses(h, U, b2, y, overlap=None, add=None):
    """J_n = -log yhat[n, y_n] for each row (N,), yhat = softmax(h U + b2).

    h (N,Dh), y (N,) target ids. The cache holds E = exp(z2 - m) (N,V) by
    column chunks, z2 = h U + b2, m (N,) a shift per row (module docstring),
    and E's row sums s (N,): yhat = E/s, the division left to the (N,Dh)
    factors of ``output_backward``.

    ``overlap``: a function of no arguments run on one core while the
    others do the chunks (``model.window_losses`` passes the next window's
    recurrence). ``add(z, c, rows)``: adds a term of the logits into the
    block z, columns ``c`` (a slice) of rows ``rows`` (None: all), before
    any exp (``core.direct``'s n-gram weights). Returns (losses, cache,
    overlap() or None).
    """
    N, V = len(y), U.shape[1]
    dtype = np.result_type(h, U)
    cols, E, hits = _chunks(y, V, dtype)
    parts = np.empty((len(cols), N), dtype)                             # each chunk's row sums
    zy = np.zeros(N, dtype)
    ones = np.ones(V, dtype)
    Ub = stacked_bias(U, b2)
    h1 = None if Ub is None else with_ones(h, dtype)
    m = np.zeros(N, dtype)
    shift = dtype == np.float64
    maxes = np.empty((len(cols), N), dtype) if shift else None

    def logits(i):
        c, z = cols[i], E[i]
        if Ub is not None:
            np.matmul(h1, Ub[:, c], out=z)
        else:
            np.matmul(h, U[:, c], out=z)
            z += b2[c]
        if add is not None:
            add(z, c, None)
        mine = hits[i]
        zy[mine] = z[mine, y[mine] - c.start]
        if shift:
            np.max(z, axis=1, out=maxes[i])
        else:
            exps(i)

    def exps(i):
        z = E[i]
        if shift:
            z -= m[:, None]
        with np.errstate(over="ignore"):        # errstate is per thread; overflow is caught below
            np.exp(z, out=z)
        np.matmul(z, ones[cols[i]], out=parts[i])   # row sums: BLAS reads a row 3x faster than np.sum

    done = parallel_for(logits, len(cols), first=overlap)
    if shift:
        np.max(maxes, axis=0, out=m)
        parallel_for(exps, len(cols))
    s = parts.sum(axis=0)
    _redo_rows(np.flatnonzero(~((s > TINY_SUM) & (s < np.inf))), h, U, b2, add, cols, E, m, s)
    losses = np.subtract(m, zy, out=zy)
    losses += np.log(s)
    return losses, OutputCache(h, U, y, cols, hits, E, s), done


def _chunks(y, V: int, dtype):
    """The column chunks c of the vocabulary, E's blocks E_c = E[:, c]
    (contiguous, in one scratch buffer), and the rows whose target lies in
    each chunk (the backward pass needs them too)."""
    N = len(y)
    cols = chunks(V, 256) if N * V >= 1 << 16 else [slice(0, V)]
    flat = scratch.empty("output E", (N * V,), dtype)
    E = [flat[N * c.start:N * c.stop].reshape(N, -1) for c in cols]
    return cols, E, [np.flatnonzero((y >= c.start) & (y < c.stop)) for c in cols]


def _redo_rows(redo, h, U, b2, add, cols, E, m, s):
    """The rows ``redo`` again with m = the row max (their m = 0 sum over- or
    underflowed): their m, s and blocks of E rewritten."""
    if not len(redo):
        return
    z = h[redo] @ U + b2
    if add is not None:
        add(z, slice(0, U.shape[1]), redo)
    m[redo] = z.max(axis=1)
    z -= m[redo, None]
    np.exp(z, out=z)
    s[redo] = z.sum(axis=1)
    for c, block in zip(cols, E):
        block[redo] = z[:, c]


def output_forward(h, U, b2, y, add=None):
    """yhat = softmax(h U + b2); loss = Σ_n -log yhat[n, y_n]  (natural log).

    Returns (loss, cache) with the cache of ``output_losses``; the sum is
    taken in float64.
    """
    losses, cache, _ = output_losses(h, U, b2, y, add=add)
    return float(losses.sum(dtype=np.float64)), cache


def output_backward(dloss, cache, overlap=None):
    """Gradients of loss = Σ_n J_n through the output layer: dJ/dh, dJ/dU and
    dJ/db2 of ``core.layers.softmax_loss_backward`` (δ2 = dJ/dz2 = yhat - y).

    Computed without forming yhat: with E = s ⊙ yhat (the cache),
    dJ/dz2 = (E - s ⊙ y) / s, and 1/s is a factor of each row, so it moves
    onto the small side of each product:

        D      = E - s ⊙ y                (N,V)   one element per row changes
        dJ/dh  = (D · Uᵀ) / s             (N,V)(V,Dh) = (N,Dh), row n over s_n
        [dJ/dU; dJ/db2] = [h/s, 1/s]ᵀ · D (Dh+1,N)(N,V) = (Dh+1,V)

    dJ/db2 = Σ_n D_n / s_n rides along as one more row of the dJ/dU
    product instead of a separate pass over (N,V). Both products go by the
    forward pass's column chunks c: dJ/dU[:, c] from D_c, and D · Uᵀ as
    the sum over chunks of D_c U[:, c]ᵀ, shared between the cores.

    ``overlap``: a function of dJ/dh, run on one core while the others
    compute dJ/dU (``bptt`` passes the recurrence's backward pass, which
    needs dJ/dh and nothing of dJ/dU). Returns (dh, dU, db2, overlap(dh) or
    None). Overwrites the cached E with D.
    """
    h, U, y, cols, hits, D, s = cache          # D: the cached E, turned into D here
    (N, Dh), V = h.shape, U.shape[1]
    w = dloss / s
    hw = np.empty((Dh + 1, N), dtype=s.dtype)
    np.multiply(h.T, w, out=hw[:Dh])
    hw[Dh] = w
    # The gradient in U's own layout, so the update runs over both in memory
    # order: word by word (``Params``: each word's column contiguous) or row-major.
    word_major = U.strides[0] < U.strides[1]
    GT = scratch.empty("output G", (V, Dh + 1), s.dtype) if word_major else None
    G = GT.T if word_major else scratch.empty("output G", (Dh + 1, V), s.dtype)
    # Each chunk's part of D Uᵀ, summed in chunk order after: the same
    # result bit for bit whichever thread did which chunk.
    parts = scratch.empty("output dh parts", (len(cols), N, Dh), s.dtype)

    def dh_chunk(i):
        c, Dc = cols[i], D[i]
        mine = hits[i]
        Dc[mine, y[mine] - c.start] -= s[mine]
        np.matmul(Dc, U[:, c].T, out=parts[i])

    def dU_chunk(i):
        if word_major:
            np.matmul(D[i].T, hw.T, out=GT[cols[i]])
        else:
            np.matmul(hw, D[i], out=G[:, cols[i]])

    parallel_for(dh_chunk, len(cols))
    dh = parts.sum(axis=0)
    dh *= w[:, None]
    done = parallel_for(dU_chunk, len(cols), first=overlap and (lambda: overlap(dh)))
    return dh, G[:Dh], G[Dh], done


def output_deltas(dloss, cache) -> ChunkDeltas:
    """After ``output_backward(dloss, cache)``: dJ/dz2 by column chunks, as
    [(c, D_c)] and w (N,) with dJ/dz2[:, c] = D_c ⊙ w (row n times w_n).
    (The cached E holds D = E - s ⊙ y by then; the division stays deferred.)"""
    return ChunkDeltas(list(zip(cache.cols, cache.E)), dloss / cache.s)


class FastFullSoftmax(FullSoftmax):
    """``FullSoftmax`` by ``output_losses``/``output_backward``/``output_deltas``."""

    def losses(self, p, h, y, direct=None, overlap=None) -> Forward:
        return Forward(*output_losses(h, p.U, p.b2, y, overlap=overlap, add=direct and direct.add_words))

    def backward(self, dloss, cache, overlap=None) -> Backward:
        dh, dU, db2, done = output_backward(dloss, cache, overlap)
        return Backward(dh, {"U": dU, "b2": db2}, done)

    def deltas(self, dloss, cache) -> ChunkDeltas:
        return output_deltas(dloss, cache)
