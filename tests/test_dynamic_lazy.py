"""The lazy decay of dynamic evaluation against the rule written out: after
every segment, every weight but D moves ``decay`` of the way back to θ0."""
import numpy as np
import pytest

from elman import Params
from elman.model import bptt
from elman.inference import dynamic

V, EOS = 13, 0


@pytest.mark.parametrize("classes", [0, 4])
def test_lazy_decay_is_the_eager_rule(classes):
    counts = np.arange(3 * V, 2 * V, -1)
    p = Params.init(V, 4, 5, seed=2, dtype="float64", classes=classes, counts=counts, direct=60)
    rng = np.random.default_rng(0)
    for a in p.as_dict().values():
        if a.dtype.kind == "f":
            a += rng.normal(scale=0.5, size=a.shape)
    lazy, eager = p.copy(), p.copy()
    fast = dynamic.Adapter(lazy.as_dict(), 0.3, 0.2, 0.1, None, lazy.class_bounds)
    slow = {k: v for k, v in eager.as_dict().items()}
    theta0 = {k: v.copy() for k, v in slow.items() if v.dtype.kind == "f" and k != "D"}
    ids = rng.integers(1, 4, 40)                    # few words: most rows and classes sit out segments
    x = np.r_[EOS, ids[:-1]]
    for s in range(0, 40, 5):
        xs, ys = x[None, s:s + 5], ids[None, s:s + 5]
        fast.ready(xs, dynamic._classes(lazy, ys))
        _, g_lazy, _ = bptt(lazy, xs, ys, np.zeros((1, 5)), sparse=True)
        _, g_eager, _ = bptt(eager, xs, ys, np.zeros((1, 5)), sparse=True)
        for k in g_lazy:
            a, b = g_lazy[k], g_eager[k]
            np.testing.assert_allclose(getattr(a, "values", a), getattr(b, "values", b), rtol=1e-12, atol=1e-14)
        fast.step(g_lazy)
        dynamic.sgd_step(slow, g_eager, 0.3, 0.2)
        for k, p0 in theta0.items():
            slow[k] += 0.1 * (p0 - slow[k])
    fast.finish()
    for k, v in slow.items():
        np.testing.assert_allclose(lazy.as_dict()[k], v, rtol=1e-12, atol=1e-14)
    assert np.abs(lazy.L[2] - p.L[2]).max() > 1e-3       # the rows read moved, and decayed
    np.testing.assert_array_equal(lazy.L[5:], p.L[5:])    # the rows never read are θ0 still
