"""Adding an output layer: this module is the whole of it. A scaled softmax,
yhat = softmax(s · (h U + b2)), defined here, one ``register`` line, and
the shared checks every layer passes (``layer_checks``)."""
import numpy as np
import pytest

from elman.core.layers import log_softmax_rows, logits_forward
from elman.core.outputs import Backward, BlockDeltas, Forward, OutputLayer, run_overlap
from elman.model import outputs

import layer_checks as checks

S = 0.7


class ScaledSoftmax(OutputLayer):
    """J_n = -log softmax(s z)[y_n], z = h U + b2 (+ the direct terms);
    dJ/dz = s (yhat - onehot(y))."""

    name = "scaled"

    def losses(self, p, h, y, direct=None, overlap=None):
        z = logits_forward(h, p.U, p.b2)
        if direct is not None:
            direct.add_words(z, slice(0, p.V))
        logp = log_softmax_rows(S * z)
        return Forward(-logp[np.arange(len(y)), y], (h, p.U, np.exp(logp), np.asarray(y)), run_overlap(overlap))

    def _dz(self, dloss, cache):
        h, U, yhat, y = cache
        dz = yhat.copy()
        dz[np.arange(len(y)), y] -= 1.0
        return dz * (S * np.reshape(dloss, (-1, 1)))

    def backward(self, dloss, cache, overlap=None):
        h, U = cache[:2]
        dz = self._dz(dloss, cache)
        dh = dz @ U.T
        return Backward(dh, {"U": h.T @ dz, "b2": dz.sum(axis=0)}, run_overlap(overlap, dh))

    def deltas(self, dloss, cache):
        dz = self._dz(dloss, cache)
        return BlockDeltas([("words", None, slice(0, dz.shape[1]), dz)])

    def log_probs(self, p, h, extra=None):
        z = logits_forward(np.atleast_2d(h), p.U, p.b2)
        if extra is not None:
            z += extra[0]
        return log_softmax_rows(S * z)

    def onnx_nodes(self, p, inits, helper):
        inits["scale"] = np.array(S, np.float32)
        return [helper.make_node("Mul", ["z", "scale"], ["sz"]),
                helper.make_node("LogSoftmax", ["sz"], ["log_probs"], axis=-1)]


@pytest.fixture
def registered():
    outputs.register(ScaledSoftmax)            # the registry line
    yield "scaled"
    del outputs.LAYERS["scaled"]


def test_scaled_softmax_passes_the_shared_checks(registered):
    checks.check_layer(registered)


def test_the_full_softmax_still_runs_a_model_without_tensors_of_its_own(registered):
    from elman.model import Params, layer_for
    assert layer_for(Params.init(7, 3, 4)).name == "full"


def test_a_wrong_layer_fails_the_shared_checks(registered):
    """The checks can fail: a gradient off by the scale is caught."""
    class Wrong(ScaledSoftmax):
        def _dz(self, dloss, cache):
            return super()._dz(dloss, cache) / S
    outputs.LAYERS["scaled"] = outputs.Entry(Wrong, Wrong)
    with pytest.raises(AssertionError):
        checks.check_reference_gradients("scaled", False)
