"""The compiled time loop of scoring against the reference step."""
import numpy as np
import pytest

from elman.core.layers import rnn_step_forward
from elman.model import bptt, forward_losses
from elman.core.params import Params
from elman.fast.scan import scan_forward


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("B", [1, 3, 4, 11])    # rows go four at a time, then one by one
def test_scan_is_the_reference_step(dtype, tol, B):
    rng = np.random.default_rng(1)
    T, Dh = 7, 13                   # Dh not a multiple of the four columns of a block
    H = rng.normal(0, 0.8, (Dh, Dh)).astype(dtype)
    a = rng.normal(0, 2.0, (T, B, Dh)).astype(dtype)
    hs = np.empty((T + 1, B, Dh), dtype)
    hs[0] = rng.uniform(0, 1, (B, Dh))
    ref = hs.copy()
    for t in range(T):
        rnn_step_forward(ref[t], a[t], H, out=ref[t + 1])
    scan_forward(H, a, hs)
    assert np.abs(hs - ref).max() <= tol
    assert np.abs(hs[1:] - hs[:-1]).max() > 0.1          # the states did move


def test_scan_refuses_mixed_dtypes():
    with pytest.raises(ValueError):
        scan_forward(np.zeros((2, 2)), np.zeros((1, 1, 2), np.float32), np.zeros((2, 1, 2), np.float32))


def test_scoring_losses_are_the_gradient_pass_losses():
    """forward_losses (the compiled loop) = bptt's per-position losses (the reference step)."""
    p = Params.init(V=50, d=6, Dh=9, seed=3, dtype="float64", direct=400)
    p.D[...] = np.random.default_rng(0).normal(0, 0.3, p.D.shape)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 50, (2, 11)), rng.integers(0, 50, (2, 11))
    h0 = rng.uniform(0, 1, (2, 9))
    fast, h_last = forward_losses(p, x, y, h0)
    ref, _, h_ref = bptt(p, x, y, h0, per_position=True)
    np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_last, h_ref, rtol=1e-12, atol=1e-12)


def test_a_stream_read_through_the_input_table_is_the_products():
    """eval's stream reads e I + b1 from a table of every word once it has
    as many tokens as words: the same losses to rounding as each window's
    product, and the table only then."""
    from elman.model.scoring import window_losses
    from elman.model.perplexity import input_table
    from elman.model.perplexity import stream_windows
    p = Params.init(V=40, d=6, Dh=9, seed=3, dtype="float32", classes=5, counts=np.arange(80, 40, -1), direct=400)
    ids = np.random.default_rng(4).integers(0, 40, 300)
    table = input_table(p, len(ids))
    assert table.shape == (40, 9) and input_table(p, 39) is None
    np.testing.assert_allclose(table[7], p.L[7] @ p.I + p.b1, rtol=1e-6)
    h0 = np.zeros((1, 9), np.float32)
    run = lambda t: np.concatenate([l[0] for l, _ in window_losses(p, stream_windows(ids, 0, 64), h0, table=t)])  # noqa: E731
    np.testing.assert_allclose(run(table), run(None), rtol=2e-6)
