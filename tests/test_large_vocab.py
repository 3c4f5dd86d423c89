"""Large vocabularies (issue 16): the parameters drawn in blocks, the class
layer's column-sparse gradients and its eval unchanged from commit 5325e3d."""
import numpy as np
import pytest

from elman.core import model
from elman.core.model import Params


def whole_draws(V, d, Dh, seed, dtype, classes=0):
    """Params.init as it was before issue 16: every tensor drawn whole in float64, then cast."""
    rng = np.random.default_rng(seed)

    def glorot(n_in, n_out):
        bound = np.sqrt(6.0 / (n_in + n_out))
        return rng.uniform(-bound, bound, (n_in, n_out)).astype(dtype)

    out = dict(L=rng.uniform(-0.1, 0.1, (V, d)).astype(dtype), I=glorot(d, Dh), H=glorot(Dh, Dh), U=glorot(Dh, V))
    if classes:
        out["Uc"] = glorot(Dh, classes)
    return out


@pytest.mark.parametrize("block", [1, 7, 50, 1 << 20])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_init_in_blocks_draws_the_same_values(block, dtype, monkeypatch):
    monkeypatch.setattr(model, "DRAW_BLOCK", block)
    V, d, Dh = 23, 5, 6
    p = Params.init(V, d, Dh, seed=11, dtype=dtype, classes=4, counts=np.arange(V, 0, -1))
    for name, want in whole_draws(V, d, Dh, 11, dtype, classes=4).items():
        got = getattr(p, name)
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    assert not p.b1.any() and not p.b2.any() and not p.bc.any()
    # U and b2 are born in the stacked layout: no copy was made of them
    assert model.stacked_bias(p.U, p.b2) is not None
