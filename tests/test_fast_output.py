"""The fast paths give the formulas' answers: the output layer split into
column chunks on several threads, unshifted exps with the max-shifted redo
of the rows that need it, and the serial fallbacks (one thread,
no threadpoolctl), against plain NumPy written from the seed's equations and
against HIPS autograd, at sizes large enough to take every path."""
import multiprocessing
import warnings

import autograd
import numpy as np
import pytest

from elman import Params, bptt, forward_losses
from elman.core import layers
from elman.fast import output
from elman.fast import threads as parallel
from elman.model.gradcheck import max_rel_error
from helpers import ag_loss

N, Dh, V = 300, 7, 700          # N*V over the threshold: 2 column chunks


def plain_output(h, U, b2, y):
    """The reference layer (``core.layers``): yhat = softmax(hU + b2), dz = yhat - onehot(y)."""
    losses, cache = layers.softmax_loss_forward(h, U, b2, y)
    return (losses, *layers.softmax_loss_backward(1.0, cache))


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    return (rng.uniform(0, 1, (N, Dh)), rng.normal(0, 2, (Dh, V)), rng.normal(0, 1, V),
            rng.integers(0, V, N))


def run_layer(h, U, b2, y, dloss=1.0):
    losses, cache, nothing = output.output_losses(h, U, b2, y)
    dh, dU, db2, nothing_either = output.output_backward(dloss, cache)
    assert nothing is None and nothing_either is None      # a fixed shape of result
    return losses, dh, dU, db2


def test_the_problem_takes_the_chunked_path():
    assert N * V >= 1 << 16
    if parallel.THREADS > 1:
        assert len(parallel.chunks(V, 256)) > 1


@pytest.mark.parametrize("threads,pinned", [(None, True), (1, True), (None, False)])
def test_chunked_and_serial_paths_equal_the_formulas(problem, monkeypatch, threads, pinned):
    if threads:
        monkeypatch.setattr(parallel, "THREADS", threads)
    if not pinned:
        monkeypatch.setattr(parallel, "_BLAS", [False])     # as without threadpoolctl
    got = run_layer(*problem, dloss=0.5)
    want = plain_output(*problem)
    for g, w, scale in zip(got, want, (1, 0.5, 0.5, 0.5)):
        assert g.shape == w.shape
        assert np.allclose(g, scale * w, rtol=1e-11, atol=1e-13)


def test_float32_chunks_agree_with_float64(problem):
    h, U, b2, y = problem
    g64 = run_layer(h, U, b2, y)
    g32 = run_layer(h.astype(np.float32), U.astype(np.float32), b2.astype(np.float32), y)
    for a, b in zip(g32, g64):
        assert a.dtype == np.float32 and max_rel_error(a, b) < 1e-4


def test_extreme_logits_in_chunks_stay_finite(problem):
    h, U, b2, y = problem
    U = U * 1e4
    b2 = b2.copy()
    b2[::97] = 1e4                              # row maxima far apart, in different chunks
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        for dt in (np.float64, np.float32):
            got = run_layer(h.astype(dt), U.astype(dt), b2.astype(dt), y)
            assert all(np.isfinite(g).all() for g in got)


@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_rows_out_of_exp_range_are_redone_and_equal_the_formulas(problem, dt):
    """Rows whose logits are all near +1000 (exp overflows) or all near
    -1000 (every exp underflows) beside ordinary rows, in a chunked layer:
    each row equals the max-shifted formulas, computed in float64."""
    h, U, b2, y = (a.copy() for a in problem)
    over, under = [3, 150, 299], [0, 77, 200]
    h[:, 5:] = 0
    h[over, :5], h[under, :5] = 0, 0
    h[over, 5], h[under, 6] = 1, 1
    U[5] += 1000
    U[6] -= 1000
    want = plain_output(h, U, b2, y)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        got = run_layer(h.astype(dt), U.astype(dt), b2.astype(dt), y)
    tol = 1e-9 if dt == np.float64 else 2e-3
    for g, w in zip(got, want):
        assert g.dtype == dt and max_rel_error(g, w) < tol
    # the extreme rows' losses are ordinary-sized: nothing cancelled away
    assert np.allclose(got[0][over + under], want[0][over + under], rtol=tol, atol=1e-4)


def test_threads_give_the_same_bits_every_time():
    """Chunks go to whichever thread is free, so the partial sums of D Uᵀ are
    added in chunk order, not thread order: a rerun is bit-identical (a
    resumed training run depends on it)."""
    p = Params.init(V=3000, d=8, Dh=16, seed=3)
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 3000, (32, 20)), rng.integers(0, 3000, (32, 20))
    h0 = np.zeros((32, 16), np.float32)
    first = bptt(p, x, y, h0)
    for _ in range(5):
        again = bptt(p, x, y, h0)
        assert again[0] == first[0]
        for k in first[1]:
            assert np.array_equal(again[1][k], first[1][k]), k


def test_bptt_at_a_chunked_size_equals_autograd():
    rng = np.random.default_rng(1)
    p = Params.init(V=400, d=5, Dh=6, seed=1, dtype="float64")
    for arr in p.as_dict().values():
        arr[...] = rng.normal(0, 0.5, arr.shape)
    inputs, targets = rng.integers(0, 400, (16, 12)), rng.integers(0, 400, (16, 12))
    h0 = rng.uniform(0, 1, (16, 6))
    loss, grads, _ = bptt(p, inputs, targets, h0)
    arrays = {k: v.copy() for k, v in p.as_dict().items()}
    assert loss == pytest.approx(ag_loss(arrays, inputs, targets, h0), rel=1e-12)
    auto = autograd.grad(ag_loss)(arrays, inputs, targets, h0)
    for name, g in grads.items():
        assert max_rel_error(g, auto[name]) < 1e-10, name
    assert forward_losses(p, inputs, targets, h0)[0].sum() == pytest.approx(loss, rel=1e-12)


def _child(q):
    p = Params.init(V=700, d=4, Dh=5, seed=2)
    x = np.arange(600).reshape(30, 20) % 700
    q.put(bptt(p, x, x, np.zeros((30, 5), np.float32))[0])


def test_a_forked_child_gets_its_own_threads():
    """The thread pool made in the parent does not exist in a forked child;
    the child must make its own rather than wait on it forever."""
    p = Params.init(V=700, d=4, Dh=5, seed=2)
    x = np.arange(600).reshape(30, 20) % 700
    want = bptt(p, x, x, np.zeros((30, 5), np.float32))[0]        # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_child, args=(q,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert q.get(timeout=5) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("classes", [0, 7])
def test_pipelined_windows_equal_window_by_window(classes):
    """window_losses runs the next window's recurrence beside this window's
    output layer: the same numbers, bit for bit, as forward_losses called
    window by window with the state carried."""
    from elman.model import window_losses
    V = 2000
    counts = np.arange(V, 0, -1)
    p = Params.init(V=V, d=6, Dh=9, seed=4, classes=classes, counts=counts)
    rng = np.random.default_rng(4)
    windows = [(rng.integers(0, V, (8, 10)), rng.integers(0, V, (8, 10))) for _ in range(4)]
    h = np.zeros((8, 9), np.float32)
    want = []
    for x, y in windows:
        losses, h = forward_losses(p, x, y, h)
        want.append((losses, h))
    got = list(window_losses(p, iter(windows), np.zeros((8, 9), np.float32)))
    assert len(got) == 4
    for (gl, gh), (wl, wh) in zip(got, want):
        assert np.array_equal(gl, wl) and np.array_equal(gh, wh)
    assert list(window_losses(p, [], h)) == []


def test_params_keep_b2_as_a_row_of_U_and_the_bias_trick_matches(problem):
    """Params stores [U; b2] as one array, so the logits are one product
    [h, 1]·[U; b2]; it gives the same losses and gradients as U and b2 apart."""
    h, U, b2, y = problem
    p = Params.from_dict(dict(L=np.zeros((V, 2)), I=np.zeros((2, Dh)), H=np.zeros((Dh, Dh)), U=U, b1=np.zeros(Dh),
                              b2=b2))
    assert output.stacked_bias(p.U, p.b2) is not None and output.stacked_bias(U, b2) is None
    assert not np.shares_memory(p.U, U)                 # a copy, not the caller's array
    for a, b in zip(run_layer(h, p.U, p.b2, y), run_layer(h, U, b2, y)):
        assert max_rel_error(a, b) < 1e-12
    p.U += 1.0                                           # updates in place keep the layout
    assert output.stacked_bias(p.U, p.b2) is not None
