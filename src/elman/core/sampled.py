"""Sampled softmax: a training loss for the output layer without V-wide work.

The full loss of a row is J_n = log Z_n - z_n[y_n], z_n = h_n U + b2 (V,),
Z_n = Σ_j exp(z_nj). Sampled softmax (Jean et al. 2015; Bengio & Senécal)
keeps the target's logit exact and estimates the rest of Z_n from S ids
s_1..s_S drawn with replacement from a proposal q (V,), shared by the N rows:

    o_n0 = z_n[y_n]                                     the true logit
    o_nk = z_n[s_k] - log(S q[s_k]),  k = 1..S          -inf where s_k == y_n
    J_n  = logsumexp(o_n0, o_n1..o_nS) - o_n0

Why -log(S q): Σ_k exp(z_n[s_k]) / (S q[s_k]) is an importance-sampling
estimate of Σ_j exp(z_nj), unbiased because E[1{s=j}/q_j] = 1. Dropping the
"accidental hits" (s_k == y_n) makes it an unbiased estimate of Σ_{j≠y_n},
the part the exact true logit does not already hold, so the sum inside the
logsumexp estimates Z_n and J_n tends to the full softmax loss as S grows
(the bias of log of an estimate is O(1/S)), and so does its gradient.

TensorFlow's ``sampled_softmax_loss`` also subtracts log(S q[y_n]) from the
true logit; its loss then grows like log(S q[y_n]) instead of converging,
which is why that correction is not made here.

For training only: the parameters are the ordinary L, I, H, U, b1, b2, and
evaluation stays the exact full softmax (``elman.fast.output.output_losses``).
Shapes: h (N,Dh), U (Dh,V), b2 (V,), y (N,), samples (S,), log_q (V,).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from elman.core.layers import embedding_row_sums
from elman.core.outputs import Backward, ColumnDeltas, Forward, FullSoftmax, run_overlap
from elman.core.params import with_ones
from elman.core.sparse import SparseGrad

# ----------------------------------------------------------------- proposals


def unigram_proposal(counts, power=0.75):
    """q ∝ counts^power (V,) float64, Mikolov's 3/4 by default.

    A word never seen gets half the weight of the rarest seen word: every
    word can be a target, so every word needs q > 0 (its correction log q
    must be finite). All-zero counts give the uniform distribution.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or not np.all(np.isfinite(counts)) or counts.min() < 0:
        raise ValueError("unigram_proposal: counts must be a non-empty 1-D array of finite counts >= 0")
    if not (np.isfinite(power) and power >= 0):
        raise ValueError(f"unigram_proposal: power must be finite and >= 0, got {power}")
    w = counts ** power
    seen = counts > 0
    floor = 0.5 * w[seen].min() if seen.any() else 1.0
    w = np.where(seen, w, floor)
    return w / w.sum()


def log_uniform_proposal(V):
    """TensorFlow's log-uniform (Zipf) proposal over ids 0..V-1 (V,) float64:

        q[k] = (log(k+2) - log(k+1)) / log(V+1)      sums to 1 (telescopes)

    Meant for ids numbered in descending frequency order.
    """
    if int(V) != V or V < 1:
        raise ValueError(f"log_uniform_proposal: V must be a positive integer, got {V}")
    k = np.arange(int(V), dtype=np.float64)
    return np.log1p(1.0 / (k + 1.0)) / np.log(V + 1.0)


class Sampler:
    """Draws S ids from q, the same ids for the same (seed, step).

    A draw depends only on (seed, step), so a resumed training run draws the
    same samples without saved generator state. Each draw is S uniforms
    looked up in the cumulative distribution: O(S log V), nothing V-wide.
    ``q`` and ``log_q`` (V,) are float64; callers cast ``log_q`` as needed.
    """

    def __init__(self, q, S, seed=0):
        q = np.asarray(q, dtype=np.float64)
        if q.ndim != 1 or q.size == 0 or not np.all(np.isfinite(q)) or q.min() <= 0:
            raise ValueError("Sampler: q must be a non-empty 1-D array of finite probabilities > 0")
        if int(S) != S or S < 1:
            raise ValueError(f"Sampler: the number of samples S must be a positive integer, got {S}")
        self.q = q / q.sum()
        self.log_q = np.log(self.q)
        self.S, self.seed = int(S), int(seed)
        self._cdf = np.cumsum(self.q)
        self._cdf /= self._cdf[-1]              # last entry exactly 1.0 > every uniform: ids < V

    @property
    def V(self):
        return self.q.size

    def draw(self, step):
        """ids (S,) int64 in [0, V), i.i.d. from q (duplicates allowed), in
        ascending order: the loss does not depend on the samples' order, and
        sorted columns are read and written in memory order (fast.windows)."""
        u = np.random.default_rng((self.seed, int(step))).random(self.S)
        u.sort()
        return np.searchsorted(self._cdf, u, side="right").astype(np.int64)


# -------------------------------------------------------- forward / backward


class SampledCache(NamedTuple):
    """What the sampled softmax's forward pass hands its backward pass:
    h (N,Dh) (``fast.sampled``: [h, 1]), the targets' and the samples'
    columns of U (fast: of [U; b2], as rows), y, samples, E = exp(O - m)
    (N,S), its row sums ``rest`` and s = exp(o_true - m) + rest (N,)."""
    h: np.ndarray
    Uy: np.ndarray
    Us: np.ndarray
    y: np.ndarray
    samples: np.ndarray
    E: np.ndarray
    rest: np.ndarray
    s: np.ndarray


def sampled_output_losses(h, U, b2, y, samples, log_q, extra=None):
    """J_n (N,) of the module docstring, in the dtype of h and U, and a cache.
    ``extra`` = (zy (N,), zs (N,S)): terms added to the true and sampled
    logits (``core.direct``'s n-gram weights of those columns).

        o_true = Σ_d h ⊙ U[:, y]ᵀ + b2[y]                   (N,)  row-wise dots
        O      = h · U[:, samples] + b2[samples] - log(S q[samples])   (N,S)
        m      = max(o_true, max_k O),  E = exp(O - m),  e0 = exp(o_true - m)
        s      = e0 + Σ_k E,            J = log s - (o_true - m)

    Every exp is of a number ≤ 0 and s ≥ 1, so logits of 1e4 neither
    overflow nor take log(0); the -inf of an accidental hit gives exp = 0.
    """
    y, samples = np.asarray(y), np.asarray(samples)
    dt = np.result_type(h, U, b2)
    S = samples.size
    Uy, Us = U[:, y], U[:, samples]
    o_true = np.einsum("nd,dn->n", h, Uy) + b2[y]
    O = h @ Us
    O += b2[samples] - (np.log(S) + log_q[samples]).astype(dt)
    if extra is not None:
        o_true += extra[0]
        O += extra[1]
    O[samples[None, :] == y[:, None]] = -np.inf
    m = np.maximum(o_true, O.max(axis=1))
    O -= m[:, None]
    E = np.exp(O, out=O)
    rest = E.sum(axis=1)
    e0 = np.exp(o_true - m)
    s = e0 + rest
    losses = np.log(s) - (o_true - m)
    return losses, SampledCache(h, Uy, Us, y, samples, E, rest, s)


def sampled_output_forward(h, U, b2, y, samples, log_q, extra=None):
    """loss = Σ_n J_n as a Python float (summed in float64), and the cache."""
    losses, cache = sampled_output_losses(h, U, b2, y, samples, log_q, extra)
    return float(losses.sum(dtype=np.float64)), cache


def sampled_deltas(dloss, cache):
    """(dJ/do_true (N,), dJ/dO (N,S)) of dloss · Σ_n J_n: the gradients of
    the true and sampled logits (see ``sampled_output_backward``)."""
    E, rest, s = cache.E, cache.rest, cache.s
    w = np.asarray(dloss, dtype=E.dtype) / s
    return -rest * w, E * w[:, None]


def sampled_output_backward(dloss, cache):
    """Gradients of dloss · Σ_n J_n; dloss a scalar or per-row weights (N,).

    With P = softmax over the 1+S logits of a row:

        dJ/do_true = P_0 - 1 = -Σ_k E_k / s      (N,)   no cancellation near P_0 = 1
        dJ/dO      = P_k     =  E_k / s          (N,S)  0 at accidental hits
        dJ/dh      = dJ/do_true ⊙ U[:, y]ᵀ + dJ/dO · U[:, samples]ᵀ      (N,Dh)

    log(S q) is a constant, so dJ/dz = dJ/do. Column y_n of [dJ/dU; dJ/db2]
    gets [h_n, 1] · dJ/do_true[n] and column s_k gets ([h, 1]ᵀ dJ/dO)[:, k]:
    the N + S rows are stacked and rows sharing an id summed by one sorted
    segmented sum (``embedding_row_sums``), b2 riding as the last column.

    Returns (dh, cols, dU_cols, db2_cols): cols (C,) the sorted unique ids of
    y ∪ samples, dJ/dU[:, cols] = dU_cols (Dh,C), dJ/db2[cols] = db2_cols
    (C,), every other column zero (``elman.core.sparse.SparseGrad`` holds them so).
    """
    h, Uy, Us, y, samples, E, rest, s = cache
    N, Dh = h.shape
    dt = E.dtype
    dtrue, dO = sampled_deltas(dloss, cache)
    dh = dtrue[:, None] * Uy.T + dO @ Us.T
    h1 = with_ones(h, dt)
    rows = np.concatenate([h1 * dtrue[:, None], dO.T @ h1])
    cols, sums = embedding_row_sums(rows, np.concatenate([y, samples]))
    return dh, cols, sums[:, :Dh].T, sums[:, Dh]


class SampledSoftmax(FullSoftmax):
    """The sampled-softmax loss of a full-softmax model, for the S ids
    ``samples`` drawn from q (``log_q`` (V,)): a layer for training only;
    the model it trains scores with the full softmax."""

    name = "sampled"
    training_only = True

    def __init__(self, samples, log_q):
        self.samples, self.log_q = np.asarray(samples), log_q

    @classmethod
    def example(cls, p, rng) -> "SampledSoftmax":
        q = unigram_proposal(rng.integers(0, 20, p.V))
        return cls(np.sort(rng.choice(p.V, size=max(2, p.V // 2), p=q)), np.log(q).astype(p.dtype))

    def losses(self, p, h, y, direct=None, overlap=None) -> Forward:
        extra = direct.sampled_terms(np.asarray(y), self.samples) if direct is not None else None
        losses, cache = sampled_output_losses(h, p.U, p.b2, y, self.samples, self.log_q, extra)
        return Forward(losses, cache, run_overlap(overlap))

    def backward(self, dloss, cache, overlap=None) -> Backward:
        dh, cols, dU, db2 = sampled_output_backward(dloss, cache)
        V = len(self.log_q)
        grads = {"U": SparseGrad(cols, dU, (dU.shape[0], V), -1), "b2": SparseGrad(cols, db2, (V,), -1)}
        return Backward(dh, grads, run_overlap(overlap, dh))

    def deltas(self, dloss, cache) -> ColumnDeltas:
        return ColumnDeltas(cache.y, cache.samples, *sampled_deltas(dloss, cache))

    def width(self, p) -> int:
        return len(self.samples) + 1

    def units(self, p, y) -> float:
        return float(len(self.samples) + 1)
