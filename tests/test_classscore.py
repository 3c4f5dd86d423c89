"""Scoring's compiled class softmax against the reference (core.classes)."""
import numpy as np
import pytest

from elman.core.classes import class_log_probs
from elman.model import bptt, features, forward_losses
from elman.core.params import Params
from elman.fast.classscore import class_losses


def _model(dtype, direct):
    V, K = 37, 6
    counts = np.sort(np.random.default_rng(0).integers(1, 500, V))[::-1]
    p = Params.init(V, 5, 8, seed=1, dtype=dtype, classes=K, counts=counts, direct=direct, direct_order=3)
    rng = np.random.default_rng(2)
    for a in p.as_dict().values():
        if a.dtype.kind == "f":
            a += rng.normal(scale=0.7, size=a.shape).astype(a.dtype)
    return p


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 3e-6)])
@pytest.mark.parametrize("direct", [0, 300])
def test_class_losses_are_the_reference(dtype, tol, direct):
    p = _model(dtype, direct)
    rng = np.random.default_rng(3)
    N = 40
    h = rng.uniform(0, 1, (N, p.Dh)).astype(dtype)
    y = rng.integers(0, p.V, N)
    extra, args = None, None
    if direct:
        f = features(p, rng.integers(0, p.V, (N, 1)), rng.integers(-1, p.V, (N, 1)))
        extra, args = f.dense_terms(), (p.D, f.O, f.Oc)
    ref = -class_log_probs(h.astype(np.float64), p.U.astype(np.float64), p.b2.astype(np.float64),
                           p.Uc.astype(np.float64), p.bc.astype(np.float64), p.class_bounds,
                           None if extra is None else tuple(e.astype(np.float64) for e in extra))[np.arange(N), y]
    got = class_losses(h, p.U, p.b2, p.Uc, p.bc, p.class_bounds, y, args)
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    assert got.std() > 0.3                                   # the rows differ: nothing constant was checked


def test_scoring_a_class_model_is_the_gradient_pass():
    """forward_losses (the compiled loops) = bptt's per-position losses (the training path)."""
    p = _model("float64", 300)
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, p.V, (3, 9)), rng.integers(0, p.V, (3, 9))
    h0 = rng.uniform(0, 1, (3, p.Dh))
    hist = rng.integers(-1, p.V, (3, 1))
    fast, h_last = forward_losses(p, x, y, h0, hist)
    ref, _, h_ref = bptt(p, x, y, h0, per_position=True, history=hist)
    np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_last, h_ref, rtol=1e-12, atol=1e-12)


def test_class_losses_want_the_word_major_layout():
    p = _model("float64", 0)
    with pytest.raises(ValueError):
        class_losses(np.zeros((1, p.Dh)), np.ascontiguousarray(p.U), p.b2.copy(), p.Uc, p.bc, p.class_bounds, [0])
