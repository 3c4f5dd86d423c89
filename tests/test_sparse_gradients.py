"""Sparse gradients and sampled-softmax training through the whole model:
``bptt(..., sampled=...)`` against finite differences and HIPS autograd of
an independent forward pass, ``sparse=True`` against the dense gradients
bit for bit, the sparse optimizer updates against the dense ones, and
``elman train --sampled`` end to end."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from elman import cli
from elman.inference.evaluate import perplexity
from elman.model.gradcheck import central_difference, max_rel_error, random_instance
from elman.model import PARAM_NAMES, Params, bptt
from elman.training.optim import global_norm
from elman.training.rules import make_optimizer
from elman.core.sampled import Sampler, log_uniform_proposal
from elman.core.sparse import SparseGrad, densify
from helpers import SMALL, sigmoid_ref, write_corpus


def instance(seed=0, V=13, S=9):
    p, inputs, targets, h0 = random_instance(V=V, d=4, Dh=5, B=3, T=4, seed=seed)
    samples = Sampler(log_uniform_proposal(V), S, seed=seed).draw(0)
    samples[0] = targets[0, 0]                  # an accidental hit, for sure
    return p, inputs, targets, h0, (samples, np.log(log_uniform_proposal(V)))


def ag_sampled_loss(arrays, inputs, targets, h0, samples, log_q):
    """Sampled softmax through the RNN, from the formulas: o_true = z[y],
    o_k = z[s_k] - log(S q[s_k]) (-inf where s_k = y), J = logsumexp - o_true."""
    L, I, H, U, b1, b2 = (arrays[n] for n in PARAM_NAMES)
    h, total, S = h0, 0.0, len(samples)
    rows = np.arange(inputs.shape[0])
    for t in range(inputs.shape[1]):
        h = sigmoid_ref(anp.dot(h, H) + anp.dot(L[inputs[:, t]], I) + b1)
        z = anp.dot(h, U) + b2
        y = targets[:, t]
        o_true = z[rows, y]
        o = anp.where(samples[None, :] == y[:, None], -np.inf, z[:, samples] - np.log(S) - log_q[samples])
        allo = anp.concatenate([o_true[:, None], o], axis=1)
        m = anp.max(allo, axis=1, keepdims=True)
        total = total + anp.sum(m[:, 0] + anp.log(anp.sum(anp.exp(allo - m), axis=1)) - o_true)
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_bptt_equals_autograd_and_finite_differences(seed):
    p, inputs, targets, h0, sampled = instance(seed)
    loss, grads, _ = bptt(p, inputs, targets, h0, sampled=sampled)
    arrays = {k: v.copy() for k, v in p.as_dict().items()}
    assert loss == pytest.approx(ag_sampled_loss(arrays, inputs, targets, h0, *sampled), rel=1e-12)
    auto = autograd.grad(ag_sampled_loss)(arrays, inputs, targets, h0, *sampled)
    for name in PARAM_NAMES:
        assert max_rel_error(grads[name], auto[name]) < 1e-10, name
        numeric = central_difference(lambda: bptt(p, inputs, targets, h0, sampled=sampled)[0],
                                     getattr(p, name))
        assert max_rel_error(grads[name], numeric) < 1e-7, name


def test_sampled_loss_is_not_the_full_loss():
    """A witness that the sampled path is really taken: with few samples the
    loss differs from the exact one, and U's gradient is zero outside the
    sampled and target columns."""
    p, inputs, targets, h0, sampled = instance(3, V=40, S=5)
    full, _, _ = bptt(p, inputs, targets, h0)
    loss, grads, _ = bptt(p, inputs, targets, h0, sampled=sampled)
    assert abs(loss - full) > 1e-3 * full
    touched = np.union1d(targets, sampled[0])
    untouched = np.setdiff1d(np.arange(40), touched)
    assert len(untouched) > 0 and not grads["U"][:, untouched].any() and not grads["b2"][untouched].any()
    assert np.abs(grads["U"][:, touched]).sum(axis=0).min() > 0


@pytest.mark.parametrize("use_sampled", [False, True])
def test_sparse_gradients_are_the_dense_ones(use_sampled):
    p, inputs, targets, h0, sampled = instance(4, V=50)
    sampled = sampled if use_sampled else None
    loss_d, dense, h_d = bptt(p, inputs, targets, h0, sampled=sampled)
    loss_s, sparse, h_s = bptt(p, inputs, targets, h0, sampled=sampled, sparse=True)
    assert loss_s == loss_d and np.array_equal(h_s, h_d)
    kinds = {k: isinstance(g, SparseGrad) for k, g in sparse.items()}
    assert kinds == {k: k == "L" or (use_sampled and k in ("U", "b2")) for k in PARAM_NAMES}
    assert len(sparse["L"].index) == len(np.unique(inputs)) < 50
    for k, g in densify(sparse).items():
        assert np.array_equal(g, dense[k]), k
    assert global_norm(sparse) == pytest.approx(global_norm(dense), rel=1e-12)


def _sparse_grads(rng, shapes):
    grads = {}
    for k, (shape, axis) in shapes.items():
        n = shape[axis]
        index = np.sort(rng.choice(n, size=n // 3, replace=False))
        vshape = list(shape)
        vshape[axis] = len(index)
        grads[k] = SparseGrad(index, rng.normal(size=vshape).astype(np.float32), shape, axis)
    return grads


@pytest.mark.parametrize("name", ["sgd", "adagrad", "adam"])
def test_sparse_updates_equal_dense_updates(name):
    """Three steps with sparse gradients land where the dense gradients take
    the same optimizer: bit for bit for SGD and Adagrad (the same arithmetic
    on the same entries), and Adam densifies (its moments decay everywhere)."""
    rng = np.random.default_rng(0)
    shapes = {"L": ((30, 4), 0), "U": ((5, 30), -1), "b2": ((30,), -1)}
    params = {k: rng.normal(size=s).astype(np.float32) for k, (s, _) in shapes.items()}
    twin = {k: v.copy() for k, v in params.items()}
    opt, opt2 = make_optimizer(name, params), make_optimizer(name, twin)
    for _ in range(3):
        grads = _sparse_grads(rng, shapes)
        opt2.step(twin, densify(grads))
        opt.step(params, grads)
    for k in params:
        assert np.array_equal(params[k], twin[k]), k
        for slot in opt.state:
            assert np.array_equal(opt.state[slot][k], opt2.state[slot][k]), (slot, k)


def test_sparse_grad_scales_and_clips_like_an_array():
    g = SparseGrad(np.array([1, 3]), np.array([[3.0, 0.0], [0.0, 4.0]]), (2, 5), -1)
    assert g.sq_sum() == 25.0
    g *= 0.5
    assert np.array_equal(g.dense(), [[0, 1.5, 0, 0, 0], [0, 0, 0, 2.0, 0]])
    rows = SparseGrad(np.array([0, 2]), np.ones((2, 3)), (4, 3), 0)
    assert np.array_equal(rows.dense().sum(axis=1), [3, 0, 3, 0])


def test_train_sampled_learns_and_reports_the_exact_perplexity(tmp_path):
    tr, va = write_corpus(tmp_path)
    opts = dict(train=tr, valid=va, epochs=3, sampled=4, **SMALL)
    from elman.training.train import train
    summary = train(tmp_path / "m", opts, quiet=True)
    assert summary["best_valid_ppl"] < 8                # 12 words: a uniform guess is ~14
    from elman import data, modelfile
    arrays, vocab, _ = modelfile.load_model(tmp_path / "m", "best")
    ids = vocab.encode(data.read_tokens(va))
    exact = perplexity(Params.from_dict(arrays), ids, vocab.eos_id)["perplexity"]
    assert summary["best_valid_ppl"] == pytest.approx(exact, rel=1e-6)
    # the same seed draws the same samples: a second run is identical
    train(tmp_path / "m2", opts, quiet=True)
    again = modelfile.load_model(tmp_path / "m2", "best")[0]
    assert all(np.array_equal(again[k], arrays[k]) for k in arrays)


def test_sampled_with_classes_is_refused_in_one_line(tmp_path, capsys):
    tr, va = write_corpus(tmp_path)
    code = cli.main(["train", "--train", tr, "--valid", va, "--out", str(tmp_path / "m"),
                     "--sampled", "5", "--classes", "3", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "--sampled" in err and "--classes" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("kind", ["full", "sampled", "classes"])
def test_scale_gives_the_gradients_of_the_scaled_loss(kind):
    """bptt(scale=c) folds c into dJ/dz2: the gradients of c·loss, the same
    loss; what the trainer uses for the mean over positions."""
    if kind == "classes":
        p = Params.init(V=30, d=4, Dh=5, seed=5, dtype="float64", classes=4, counts=np.arange(30, 0, -1))
        rng = np.random.default_rng(5)
        inputs, targets, h0 = rng.integers(0, 30, (3, 4)), rng.integers(0, 30, (3, 4)), rng.uniform(0, 1, (3, 5))
        sampled = None
    else:
        p, inputs, targets, h0, sampled = instance(5, V=30)
        sampled = sampled if kind == "sampled" else None
    loss, grads, _ = bptt(p, inputs, targets, h0, sampled=sampled)
    loss_c, grads_c, _ = bptt(p, inputs, targets, h0, sampled=sampled, scale=1 / 12)
    assert loss_c == loss
    for k in grads:
        assert max_rel_error(grads_c[k], grads[k] / 12) < 1e-13, k
