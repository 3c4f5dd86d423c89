"""The seed's reference layers (``core.layers``) against autograd, and the
fast forms of the position-parallel products (``fast.recurrence``) against
the reference."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from elman.core import layers
from elman.model.gradcheck import max_rel_error
from elman.fast import recurrence
from elman.fast import threads
from helpers import logsumexp


def test_softmax_loss_backward_equals_autograd():
    rng = np.random.default_rng(1)
    h, U, b2 = rng.uniform(0, 1, (6, 4)), rng.normal(0, 1, (4, 9)), rng.normal(0, 1, 9)
    y, w = rng.integers(0, 9, 6), rng.uniform(0.5, 2, 6)

    def loss(h, U, b2):
        z = anp.dot(h, U) + b2
        return anp.sum(w * -(z - logsumexp(z, axis=1, keepdims=True))[np.arange(6), y])

    J, cache = layers.softmax_loss_forward(h, U, b2, y)
    assert J.shape == (6,) and np.isclose((w * J).sum(), loss(h, U, b2))
    got = layers.softmax_loss_backward(w, cache)
    want = autograd.grad(loss, (0, 1, 2))(h, U, b2)
    for g, a in zip(got, want):
        assert g.shape == a.shape and max_rel_error(g, a) < 1e-12


@pytest.mark.parametrize("n_threads", [1, 2])
def test_fast_recurrence_products_equal_the_reference(monkeypatch, n_threads):
    monkeypatch.setattr(threads, "THREADS", n_threads)
    rng = np.random.default_rng(2)
    N, d, Dh = 700, 40, 30                      # over the size at which the work is shared
    e, I, b1 = rng.normal(0, 1, (N, d)), rng.normal(0, 1, (d, Dh)), rng.normal(0, 1, Dh)
    a = recurrence.threaded_input_forward(e, I, b1)
    assert a.shape == (N, Dh) and np.allclose(a, layers.rnn_input_forward(e, I, b1), rtol=1e-13, atol=1e-13)
    dz, h_prev, H = rng.normal(0, 1, (N, Dh)), rng.uniform(0, 1, (N, Dh)), rng.normal(0, 1, (Dh, Dh))
    fast = recurrence.threaded_params_backward(dz, h_prev, e, H, I)
    ref = layers.rnn_params_backward(dz, h_prev, e, H, I)
    for f, r in zip(fast, ref):
        assert f.shape == r.shape and np.allclose(f, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_row_sums_equal_the_reference(dtype):
    """fast.rowsums against core.layers.embedding_row_sums: ids repeated
    many times, once, and out of order; one row alone."""
    from elman.fast.rowsums import row_sums
    rng = np.random.default_rng(5)
    ids = np.concatenate([rng.integers(0, 40, 300), [997, 3]])
    rows = rng.normal(0, 1, (len(ids), 17)).astype(dtype)
    for r, i in ((rows, ids), (rows[:1], ids[:1])):
        got, want = row_sums(r, i), layers.embedding_row_sums(r, i)
        assert np.array_equal(got[0], want[0]) and got[1].dtype == want[1].dtype
        assert np.allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
    assert np.allclose(row_sums(rows, ids)[1][list(row_sums(rows, ids)[0]).index(997)], rows[-2])
    # each id's rows added one after another in the order they came: those bits exactly
    for k, i in enumerate(row_sums(rows, ids)[0]):
        want = rows[ids == i][0].copy()
        for r in rows[ids == i][1:]:
            want += r
        assert np.array_equal(row_sums(rows, ids)[1][k], want)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_beside_runs_a_function_on_another_thread_and_hands_back_its_result(monkeypatch, n_threads):
    import threading
    monkeypatch.setattr(threads, "THREADS", n_threads)
    where = []
    wait = threads.beside(lambda: where.append(threading.get_ident()) or 42)
    assert wait() == 42 and len(where) == 1
    assert (where[0] == threading.get_ident()) == (n_threads == 1 or not threads._blas())

    def fails():
        raise ValueError("inside")
    with pytest.raises(ValueError, match="inside"):
        threads.beside(fails)()
