"""Sampled softmax (elman.core.sampled): gradients against central differences and
against HIPS autograd on an independent forward pass, accidental hits, the
convergence of the loss to the full softmax's as S grows, the sampler and
the proposals."""
import warnings

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from elman.model.gradcheck import central_difference, max_rel_error
from elman.core.sampled import (Sampler, log_uniform_proposal, sampled_output_backward,
                           sampled_output_forward, sampled_output_losses, unigram_proposal)
from elman.core.sparse import SparseGrad

V, Dh, N = 9, 4, 6
# Duplicates (3 twice, 7 twice), and y[0] = y[3] = 5 is drawn: accidental hits.
SAMPLES = np.array([3, 5, 0, 7, 3, 8, 7], dtype=np.int64)
Y = np.array([5, 1, 3, 5, 2, 6], dtype=np.int64)


def dense(cols, vals, V):
    """The full (.., V) array of a gradient given by its columns ``cols``."""
    return SparseGrad(cols, vals, vals.shape[:-1] + (V,), -1).dense()


def instance(seed=0, dtype=np.float64, scale=1.0):
    r = np.random.default_rng(seed)
    h = r.uniform(0, 1, (N, Dh)).astype(dtype)
    U = (scale * r.normal(size=(Dh, V))).astype(dtype)
    b2 = (0.5 * r.normal(size=V)).astype(dtype)
    log_q = np.log(r.dirichlet(np.ones(V)))
    return h, U, b2, log_q


def full_grads(h, U, b2, y, samples, log_q, dloss=1.0):
    loss, cache = sampled_output_forward(h, U, b2, y, samples, log_q)
    dh, cols, dU_cols, db2_cols = sampled_output_backward(dloss, cache)
    return loss, dh, dense(cols, dU_cols, U.shape[1]), dense(cols, db2_cols, U.shape[1]), cols


def test_gradients_match_central_differences():
    h, U, b2, log_q = instance()
    loss, dh, dU, db2, cols = full_grads(h, U, b2, Y, SAMPLES, log_q)
    assert np.array_equal(cols, np.union1d(Y, SAMPLES))
    f = lambda: sampled_output_forward(h, U, b2, Y, SAMPLES, log_q)[0]
    for analytic, arr in [(dh, h), (dU, U), (db2, b2)]:
        numeric = central_difference(f, arr)
        assert max_rel_error(analytic, numeric) < 1e-6
    # columns never drawn nor targets get exactly nothing
    untouched = np.setdiff1d(np.arange(V), cols)
    assert untouched.size > 0 and not dU[:, untouched].any() and not db2[untouched].any()


def ag_loss(h, U, b2, y, samples, log_q, w):
    """Written from the formula with the full (N,V) logits and a mask."""
    S = len(samples)
    Z = anp.dot(h, U) + b2
    o0 = Z[np.arange(len(y)), y]
    O = Z[:, samples] - anp.log(S * anp.exp(log_q[samples]))
    m = anp.maximum(o0, anp.max(O, axis=1))
    hit = samples[None, :] == y[:, None]
    ex = anp.where(hit, 0.0, anp.exp(O - m[:, None]))
    J = anp.log(anp.exp(o0 - m) + anp.sum(ex, axis=1)) + m - o0
    return anp.sum(w * J)


def test_matches_autograd_with_row_weights():
    h, U, b2, log_q = instance(seed=1)
    w = np.random.default_rng(2).uniform(0.5, 2.0, N)
    losses, cache = sampled_output_losses(h, U, b2, Y, SAMPLES, log_q)
    dh, cols, dU_cols, db2_cols = sampled_output_backward(w, cache)
    args = (h, U, b2, Y, SAMPLES, log_q, w)
    assert np.sum(w * losses) == pytest.approx(ag_loss(*args), rel=1e-12)
    for i, mine in [(0, dh), (1, dense(cols, dU_cols, V)), (2, dense(cols, db2_cols, V))]:
        np.testing.assert_allclose(mine, autograd.grad(ag_loss, i)(*args), rtol=1e-10, atol=1e-13)


def test_accidental_hits_contribute_nothing_for_that_row_only():
    h, U, b2, log_q = instance(seed=3)
    losses, _ = sampled_output_losses(h, U, b2, Y, SAMPLES, log_q)
    hit = 1                                     # SAMPLES[1] == Y[0] == Y[3]
    kept = np.delete(SAMPLES, hit)
    # same correction log(S q) with one candidate fewer
    log_q_kept = log_q + np.log(len(SAMPLES) / len(kept))
    for n in (0, 3):
        r = slice(n, n + 1)
        with_hit = full_grads(h[r], U, b2, Y[r], SAMPLES, log_q)
        without = full_grads(h[r], U, b2, Y[r], kept, log_q_kept)
        assert with_hit[0] == pytest.approx(losses[n], rel=1e-14)
        assert with_hit[0] == pytest.approx(without[0], rel=1e-14)
        for a, b in zip(with_hit[1:4], without[1:4]):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-16)
    # for a row whose target is something else, the same candidate does count
    r = slice(1, 2)
    assert full_grads(h[r], U, b2, Y[r], SAMPLES, log_q)[0] != pytest.approx(
        full_grads(h[r], U, b2, Y[r], kept, log_q_kept)[0], rel=1e-6)


def full_softmax_loss(h, U, b2, y):
    Z = h @ U + b2
    m = Z.max(axis=1)
    return float(np.sum(np.log(np.exp(Z - m[:, None]).sum(axis=1)) + m - Z[np.arange(len(y)), y]))


@pytest.mark.parametrize("proposal", ["uniform", "log_uniform"])
def test_loss_approaches_the_full_softmax_as_S_grows(proposal):
    V50, rows = 50, 4
    q = np.full(V50, 1 / V50) if proposal == "uniform" else log_uniform_proposal(V50)
    errors = {50: [], 200_000: []}
    for seed in range(3):
        r = np.random.default_rng(seed)
        h, U, b2 = r.uniform(0, 1, (rows, 6)), r.normal(size=(6, V50)), r.normal(size=V50)
        y = r.integers(0, V50, rows)
        exact = full_softmax_loss(h, U, b2, y)
        for S in errors:
            samples = Sampler(q, S, seed=seed).draw(0)
            loss = sampled_output_forward(h, U, b2, y, samples, np.log(q))[0]
            errors[S].append(abs(loss - exact) / exact)
    assert max(errors[200_000]) < 0.01
    assert np.mean(errors[200_000]) < np.mean(errors[50])


def full_softmax_ag(h, U, b2, y):
    Z = anp.dot(h, U) + b2
    m = anp.max(Z, axis=1, keepdims=True)
    return anp.sum(anp.log(anp.sum(anp.exp(Z - m), axis=1)) + m[:, 0] - Z[np.arange(len(y)), y])


def test_gradient_approaches_the_full_softmax_gradient():
    V50, rows = 50, 4
    r = np.random.default_rng(7)
    h, U, b2 = r.uniform(0, 1, (rows, 6)), r.normal(size=(6, V50)), r.normal(size=V50)
    y = r.integers(0, V50, rows)
    q = log_uniform_proposal(V50)
    _, dh, dU, db2, _ = full_grads(h, U, b2, y, Sampler(q, 200_000).draw(0), np.log(q))
    exact = autograd.grad(lambda hh, UU, bb: full_softmax_ag(hh, UU, bb, y), (0, 1, 2))(h, U, b2)
    for mine, ref in zip((dh, dU, db2), exact):
        assert max_rel_error(mine, ref) < 0.02


def test_sampler_is_deterministic_and_follows_q():
    q = np.random.default_rng(0).dirichlet(np.ones(20))
    s = Sampler(q, 1000, seed=5)
    a = s.draw(3)
    assert a.dtype == np.int64 and a.shape == (1000,)
    assert np.array_equal(a, Sampler(q, 1000, seed=5).draw(3))
    assert np.all(np.diff(a) >= 0)                      # ascending: memory order (fast.windows)
    assert not np.array_equal(a, s.draw(4))
    assert not np.array_equal(a, Sampler(q, 1000, seed=6).draw(3))
    ids = np.concatenate([s.draw(step) for step in range(200)])
    assert ids.min() >= 0 and ids.max() < 20
    freq = np.bincount(ids, minlength=20) / ids.size
    assert np.abs(freq - q).max() < 0.01
    assert np.allclose(np.exp(s.log_q), q) and s.log_q.dtype == np.float64


def test_float32_in_float32_out_and_agrees_with_float64():
    h, U, b2, log_q = instance(seed=4, dtype=np.float32)
    losses, cache = sampled_output_losses(h, U, b2, Y, SAMPLES, log_q)
    g32 = sampled_output_backward(1.0, cache)
    ref_losses, cache = sampled_output_losses(*(a.astype(np.float64) for a in (h, U, b2)), Y, SAMPLES, log_q)
    g64 = sampled_output_backward(1.0, cache)
    assert losses.dtype == np.float32
    assert all(g.dtype == np.float32 for g in (g32[0], g32[2], g32[3]))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    assert np.array_equal(g32[1], g64[1])
    for i in (0, 2, 3):
        assert max_rel_error(g32[i], g64[i]) < 1e-4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_of_1e4_are_finite_and_silent(dtype):
    h = np.ones((N, Dh), dtype)
    U = np.zeros((Dh, V), dtype)
    U[:, ::2], U[:, 1::2] = 2500.0, -2500.0     # logits ±1e4
    b2 = np.zeros(V, dtype)
    y = np.array([1, 0, 2, 3, 1, 8])             # odd targets: the true logit is -1e4
    log_q = np.log(np.full(V, 1 / V))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, cache = sampled_output_forward(h, U, b2, y, SAMPLES, log_q)
        grads = sampled_output_backward(1.0, cache)
    assert np.isfinite(loss) and loss > 2e4 * 0.99 * 3   # three rows at about 2e4 each
    assert all(np.isfinite(g).all() for g in grads)


def test_proposals():
    counts = np.array([10, 0, 3, 7, 0, 1])
    for q in (unigram_proposal(counts), unigram_proposal(counts, 1.0), log_uniform_proposal(37)):
        assert q.dtype == np.float64 and q.sum() == pytest.approx(1.0, abs=1e-12) and (q > 0).all()
    np.testing.assert_allclose(unigram_proposal([4, 1, 5], 1.0), [0.4, 0.1, 0.5], rtol=1e-15)
    q = unigram_proposal(counts)
    assert q[1] == q[4] and q[1] < q[5] and q[0] > q[3] > q[2] > q[5]
    np.testing.assert_allclose(unigram_proposal([0, 0]), [0.5, 0.5])
    lu = log_uniform_proposal(37)
    assert (np.diff(lu) < 0).all()
    assert lu[0] == pytest.approx(np.log(2) / np.log(38))
    for bad in (lambda: unigram_proposal([1, -1]), lambda: unigram_proposal([]),
                lambda: log_uniform_proposal(0), lambda: Sampler([0.5, 0.0, 0.5], 3),
                lambda: Sampler([1.0], 0)):
        with pytest.raises(ValueError):
            bad()
