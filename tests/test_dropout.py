"""Dropout on the non-recurrent connections (e into the recurrence, h into the
output layer): bptt's gradients with fixed masks against HIPS autograd of an
independent forward pass and against finite differences; the masks; and
``elman train --dropout``."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from elman import cli
from elman.model.gradcheck import central_difference, max_rel_error, random_instance
from elman.model import PARAM_NAMES, bptt, dropout_masks
from helpers import SMALL, ag_loss, logsumexp, sigmoid_ref, write_corpus


def ag_dropout_loss(arrays, inputs, targets, h0, e_mask, h_mask):
    """h(t) = sigmoid(h(t-1) H + (e(t) ⊙ m_e) I + b1), yhat = softmax((h ⊙ m_h) U + b2)."""
    L, I, H, U, b1, b2 = (arrays[n] for n in PARAM_NAMES)
    B, T = inputs.shape
    h, total = h0, 0.0
    for t in range(T):
        rows = slice(t * B, (t + 1) * B)               # the masks' rows are time-major
        h = sigmoid_ref(anp.dot(h, H) + anp.dot(L[inputs[:, t]] * e_mask[rows], I) + b1)
        z = anp.dot(h * h_mask[rows], U) + b2
        total = total - anp.sum((z - logsumexp(z, axis=1, keepdims=True))[np.arange(B), targets[:, t]])
    return total


@pytest.mark.parametrize("seed", [0, 1])
def test_dropout_bptt_equals_autograd_and_finite_differences(seed):
    p, inputs, targets, h0 = random_instance(V=9, d=4, Dh=5, B=3, T=4, seed=seed)
    masks = dropout_masks(p, 3, 4, 0.4, seed)
    assert all(0 < (m == 0).sum() < m.size for m in masks)    # something dropped, something kept
    loss, grads, _ = bptt(p, inputs, targets, h0, dropout=(0.4, seed))
    arrays = {k: v.copy() for k, v in p.as_dict().items()}
    assert loss == pytest.approx(ag_dropout_loss(arrays, inputs, targets, h0, *masks), rel=1e-12)
    assert loss != pytest.approx(ag_loss(arrays, inputs, targets, h0), rel=1e-6)
    auto = autograd.grad(ag_dropout_loss)(arrays, inputs, targets, h0, *masks)
    for name in PARAM_NAMES:
        assert max_rel_error(grads[name], auto[name]) < 1e-10, name
        numeric = central_difference(lambda: bptt(p, inputs, targets, h0, dropout=(0.4, seed))[0],
                                     getattr(p, name))
        assert max_rel_error(grads[name], numeric) < 1e-7, name


def test_masks_are_inverted_dropout_and_seeded():
    p, *_ = random_instance(V=9, d=50, Dh=60, B=40, T=25, seed=0)
    e_mask, h_mask = dropout_masks(p, 40, 25, 0.3, (7, 3))
    assert e_mask.shape == (1000, 50) and h_mask.shape == (1000, 60) and e_mask.dtype == p.dtype
    for m in (e_mask, h_mask):
        assert set(np.unique(m)) == {0.0, 1 / 0.7}
        assert abs((m == 0).mean() - 0.3) < 0.01 and abs(m.mean() - 1.0) < 0.02
    again = dropout_masks(p, 40, 25, 0.3, (7, 3))
    assert np.array_equal(again[0], e_mask) and not np.array_equal(dropout_masks(p, 40, 25, 0.3, (7, 4))[0], e_mask)
    assert (dropout_masks(p, 40, 25, 0.0, 1)[1] == 1).all()


@pytest.mark.parametrize("shape", [(640, 200), (40, 6), (7, 5), (3, 1)])
@pytest.mark.parametrize("held", [False, True])
def test_masks_are_the_generators_raw_bits_cut_in_halves(shape, held):
    """The 16-bit draws are the generator's bytes, as earlier releases read
    them (``rng.bytes``): a run's masks, and the draws after them, unchanged,
    whole 64-bit draws or not, and after a draw that left half of one held."""
    from elman.core.layers import dropout_mask
    a, b = np.random.default_rng((3, 9)), np.random.default_rng((3, 9))
    if held:
        assert a.bytes(4) == b.bytes(4) and a.bit_generator.state["has_uint32"]
    got = dropout_mask(a, shape, 0.3, np.float32)
    u = np.frombuffer(b.bytes(2 * int(np.prod(shape))), np.uint16).reshape(shape)
    assert np.array_equal(got, np.where(u < round(0.7 * 65536), np.float32(1 / 0.7), np.float32(0)))
    assert a.bytes(8) == b.bytes(8)             # and the generator is where bytes() left it


def test_rate_zero_is_no_dropout():
    p, inputs, targets, h0 = random_instance(seed=3)
    plain, g0, _ = bptt(p, inputs, targets, h0)
    zero, g1, _ = bptt(p, inputs, targets, h0, dropout=(0.0, 5))
    assert zero == plain and all(np.array_equal(g0[k], g1[k]) for k in g0)


def test_train_with_dropout_learns(tmp_path):
    from elman.training.train import train
    tr, va = write_corpus(tmp_path)
    s = train(tmp_path / "m", dict(train=tr, valid=va, epochs=3, dropout=0.2, **SMALL), quiet=True)
    assert s["best_valid_ppl"] < 8


@pytest.mark.parametrize("rate", ["1", "-0.1", "1.5", "x"])
def test_a_bad_rate_is_refused_in_one_line(tmp_path, capsys, rate):
    tr, va = write_corpus(tmp_path)
    try:
        code = cli.main(["train", "--train", tr, "--valid", va, "--out", str(tmp_path / "m"), "--dropout", rate])
    except SystemExit as exc:                       # argparse's usage error
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--dropout" in err and len(err.splitlines()) == 1
