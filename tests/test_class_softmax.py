"""The class-factorised softmax: its frequency bins, its exact gradients
(central finite differences in float64 and HIPS autograd on an independent
forward pass), and its relations to the full softmax."""
import warnings

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from elman import Params, bptt, forward_losses, output_probs, step_gradients
from elman.core.classes import class_bounds, word_classes
from elman.model.gradcheck import central_difference, max_rel_error
from elman.model import CLASS_NAMES, PARAM_NAMES

FLOAT_NAMES = PARAM_NAMES + ("Uc", "bc")


def descending_counts(rng, V):
    return np.sort(rng.integers(1, 1000, V))[::-1]


def class_instance(V=13, d=3, Dh=4, B=3, T=4, K=4, seed=0):
    """A float64 class model with every float tensor random, random ids and state."""
    rng = np.random.default_rng(seed)
    p = Params.init(V, d, Dh, seed=seed, dtype="float64", classes=K, counts=descending_counts(rng, V))
    for name in FLOAT_NAMES:
        arr = getattr(p, name)
        arr[...] = rng.normal(0.0, 0.5, arr.shape)
    return p, rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T)), rng.uniform(0, 1, (B, Dh))


def ag_class_loss(arrays, bounds, inputs, targets, h0):
    """Independent forward: a loop over t and over positions, each word's
    probability as P(class) times P(word | class) written out directly."""
    L, I, H, U, b1, b2, Uc, bc = (arrays[n] for n in FLOAT_NAMES)
    h, total = h0, 0.0
    for t in range(inputs.shape[1]):
        h = 1.0 / (1.0 + anp.exp(-(anp.dot(h, H) + anp.dot(L[inputs[:, t]], I) + b1)))
        for n in range(inputs.shape[0]):
            w = targets[n, t]
            c = int(np.searchsorted(bounds, w, side="right") - 1)
            a, b = bounds[c], bounds[c + 1]
            zc = anp.dot(h[n], Uc) + bc
            zw = anp.dot(h[n], U[:, a:b]) + b2[a:b]
            total = total - (zc[c] - anp.log(anp.sum(anp.exp(zc))))
            total = total - (zw[w - a] - anp.log(anp.sum(anp.exp(zw))))
    return total


sizes = st.fixed_dictionaries(dict(
    V=st.integers(2, 12), d=st.integers(1, 4), Dh=st.integers(1, 4), B=st.integers(1, 3),
    T=st.integers(1, 3), K=st.integers(1, 12), seed=st.integers(0, 2**16)))


# ---------------------------------------------------------------- the bins

@settings(max_examples=100, deadline=None)
@given(st.integers(1, 60), st.data())
def test_bounds_are_k_nonempty_contiguous_classes(V, data):
    counts = np.sort(np.array(data.draw(st.lists(st.integers(0, 10**6), min_size=V, max_size=V))))[::-1]
    K = data.draw(st.integers(1, V))
    power = data.draw(st.sampled_from([0.5, 1.0]))
    b = class_bounds(counts, K, power)
    assert b.dtype == np.int64 and b.shape == (K + 1,)
    assert b[0] == 0 and b[-1] == V and (np.diff(b) >= 1).all()
    assert np.array_equal(word_classes(b, np.arange(V)), np.repeat(np.arange(K), np.diff(b)))


def test_bins_hold_equal_mass_up_to_one_word():
    counts = np.round(1e6 / np.arange(1, 5001)).astype(np.int64)          # Zipf
    for power in (1.0, 0.5):
        K = 40
        b = class_bounds(counts, K, power)
        mass = counts ** power / (counts ** power).sum()
        per_class = np.add.reduceat(mass, b[:-1])
        # each class overshoots 1/K by at most its last word (one heavy word may stand alone)
        assert (per_class <= 1 / K + mass[b[:-1]] + 1e-12).all()
        assert abs(per_class.sum() - 1) < 1e-12
    # power 0.5 puts fewer words in the rare words' classes than power 1
    assert np.diff(class_bounds(counts, 40, 0.5))[-1] < np.diff(class_bounds(counts, 40, 1.0))[-1]


def test_bins_edge_cases():
    assert class_bounds([5, 3, 1], 1).tolist() == [0, 3]
    assert class_bounds([5, 3, 1], 3).tolist() == [0, 1, 2, 3]
    assert class_bounds([0, 0, 0, 0], 2).tolist() == [0, 2, 4]                 # no counts: equal sizes
    assert class_bounds([10**9, 1, 1, 1, 1], 3).tolist()[:2] == [0, 1]        # a heavy word stands alone
    for bad in (0, 4):
        with pytest.raises(ValueError):
            class_bounds([3, 2, 1], bad)
    with pytest.raises(ValueError):
        class_bounds([3, -1, 1], 2)


# --------------------------------------------------------------- gradients

def fd_rows(p, inputs, targets, h0):
    _, grads, _ = bptt(p, inputs, targets, h0)
    assert set(grads) == set(FLOAT_NAMES)
    J = lambda: bptt(p, inputs, targets, h0)[0]  # noqa: E731
    return {n: max_rel_error(grads[n], central_difference(J, getattr(p, n))) for n in FLOAT_NAMES}


@settings(max_examples=50, deadline=None)
@given(sizes)
def test_class_bptt_equals_finite_differences(s):
    s["K"] = min(s["K"], s["V"])
    errors = fd_rows(*class_instance(**s))
    # Central differences round to ~|J|·2^-52/EPS ≈ 1e-10 absolute at these
    # losses (~10 nats), which is 1e-7 relative to the floor scale 1e-3 of a
    # small gradient (seen: dJ/dH = -5e-4 at V=8, Dh=1, seed 2138).
    assert max(errors.values()) < 1e-6, errors


@settings(max_examples=40, deadline=None)
@given(sizes)
def test_class_bptt_equals_autograd(s):
    s["K"] = min(s["K"], s["V"])
    p, inputs, targets, h0 = class_instance(**s)
    loss, grads, _ = bptt(p, inputs, targets, h0)
    arrays = {n: getattr(p, n).copy() for n in FLOAT_NAMES}
    assert loss == pytest.approx(ag_class_loss(arrays, p.class_bounds, inputs, targets, h0), rel=1e-12)
    auto = autograd.grad(ag_class_loss)(arrays, p.class_bounds, inputs, targets, h0)
    for n in FLOAT_NAMES:
        assert grads[n].shape == arrays[n].shape
        assert max_rel_error(grads[n], auto[n]) < 1e-10, n


def test_words_of_classes_no_target_is_in_get_zero_gradient():
    p, inputs, targets, h0 = class_instance(V=30, K=6, B=1, T=2, seed=4)
    _, grads, _ = bptt(p, inputs, targets, h0)
    hit = np.zeros(p.V, bool)
    for c in np.unique(word_classes(p.class_bounds, targets)):
        hit[p.class_bounds[c]:p.class_bounds[c + 1]] = True
    assert not grads["U"][:, ~hit].any() and not grads["b2"][~hit].any()
    assert np.abs(grads["U"][:, hit]).max() > 0


# ------------------------------------------------- relations to the full softmax

def test_one_class_is_the_full_softmax():
    p, inputs, targets, h0 = class_instance(V=9, K=1, seed=5)
    full = Params.from_dict({n: getattr(p, n) for n in PARAM_NAMES})
    loss_c, g_c, h_c = bptt(p, inputs, targets, h0)
    loss_f, g_f, h_f = bptt(full, inputs, targets, h0)
    assert loss_c == pytest.approx(loss_f, rel=1e-12) and np.array_equal(h_c, h_f)
    for n in PARAM_NAMES:
        assert np.allclose(g_c[n], g_f[n], rtol=1e-10, atol=1e-13), n
    assert np.allclose(g_c["Uc"], 0) and np.allclose(g_c["bc"], 0)         # P(class) = 1 always
    assert np.allclose(output_probs(p, h0), output_probs(full, h0), rtol=1e-12)


def test_one_word_per_class_is_the_full_softmax_over_Uc():
    p, inputs, targets, h0 = class_instance(V=7, K=7, seed=6)
    as_full = Params.from_dict({**{n: getattr(p, n) for n in PARAM_NAMES}, "U": p.Uc, "b2": p.bc})
    loss_c, g_c, _ = bptt(p, inputs, targets, h0)
    loss_f, g_f, _ = bptt(as_full, inputs, targets, h0)
    assert loss_c == pytest.approx(loss_f, rel=1e-12)
    assert np.allclose(g_c["Uc"], g_f["U"], rtol=1e-10) and np.allclose(g_c["H"], g_f["H"], rtol=1e-10)
    assert np.abs(g_c["U"]).max() < 1e-12 and np.abs(g_c["b2"]).max() < 1e-12   # P(w | its class) = 1


def test_probabilities_are_exact_and_match_the_losses():
    p, inputs, targets, h0 = class_instance(V=40, K=5, B=3, T=5, seed=7)
    loss, _, h_last = bptt(p, inputs, targets, h0)
    losses, h2 = forward_losses(p, inputs, targets, h0)
    assert losses.shape == inputs.shape and np.allclose(h_last, h2, rtol=1e-13, atol=1e-15)   # the compiled scan: equal to rounding
    assert losses.sum() == pytest.approx(loss, rel=1e-12)
    probs = output_probs(p, h0)
    assert probs.shape == (3, 40) and np.allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    # P(w|h) = P(c|h) P(w|c,h), written out for one row
    h, b = h0[1], p.class_bounds
    zc = h @ p.Uc + p.bc
    pc = np.exp(zc - zc.max()) / np.exp(zc - zc.max()).sum()
    for c in range(p.classes):
        zw = h @ p.U[:, b[c]:b[c + 1]] + p.b2[b[c]:b[c + 1]]
        pw = np.exp(zw - zw.max()) / np.exp(zw - zw.max()).sum()
        assert np.allclose(probs[1, b[c]:b[c + 1]], pc[c] * pw, rtol=1e-12)


def test_float32_agrees_and_extremes_stay_finite():
    p64, inputs, targets, h0 = class_instance(V=60, d=5, Dh=8, B=4, T=5, K=6, seed=8)
    p32 = p64.astype("float32")
    assert p32.class_bounds.dtype == np.int64 and np.array_equal(p32.class_bounds, p64.class_bounds)
    loss64, g64, _ = bptt(p64, inputs, targets, h0)
    loss32, g32, _ = bptt(p32, inputs, targets, h0.astype(np.float32))
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    for n in FLOAT_NAMES:
        assert g32[n].dtype == np.float32 and max_rel_error(g32[n], g64[n]) < 1e-4, n
    big = p64.copy()
    big.U *= 1e4; big.Uc *= 1e4; big.bc[0] = 1e4; big.b2[:] = 1e4                 # noqa: E702
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        for q in (big, big.astype("float32")):
            loss, grads, h = bptt(q, inputs, targets, h0.astype(q.dtype))
            assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
            assert np.isfinite(output_probs(q, h)).all()


# ------------------------------------------------------------ the parameters

def test_params_carry_the_class_tensors():
    counts = np.arange(30, 0, -1)
    p = Params.init(30, 4, 5, seed=3, classes=4, counts=counts)
    full = Params.init(30, 4, 5, seed=3)
    assert p.classes == 4 and full.classes == 0
    assert list(p.as_dict()) == list(PARAM_NAMES + CLASS_NAMES) and list(full.as_dict()) == list(PARAM_NAMES)
    for n in PARAM_NAMES:                                   # the shared tensors equal the full model's
        assert np.array_equal(getattr(p, n), getattr(full, n))
    assert p.Uc.shape == (5, 4) and p.bc.shape == (4,) and np.array_equal(p.class_bounds, class_bounds(counts, 4))
    q = Params.from_dict({k: v.copy() for k, v in p.as_dict().items()})
    assert all(np.array_equal(a, b) for a, b in zip(q.as_dict().values(), p.as_dict().values()))
    assert q.copy().classes == 4
    with pytest.raises(ValueError, match="class_bounds"):
        Params.from_dict({k: v for k, v in p.as_dict().items() if k != "class_bounds"})
    for bad in ([0, 10, 10, 20, 30], [0, 10, 20, 25, 31], [1, 10, 20, 25, 30]):
        with pytest.raises(ValueError, match="class_bounds"):
            Params.from_dict({**p.as_dict(), "class_bounds": np.array(bad)})
    with pytest.raises(ValueError, match="Uc"):
        Params.from_dict({**p.as_dict(), "Uc": np.zeros((5, 3), np.float32)})
    with pytest.raises(ValueError, match="counts"):
        Params.init(30, 4, 5, classes=4)
    with pytest.raises(ValueError, match="full-softmax"):
        step_gradients(p, 1, 2, np.zeros(5, np.float32))


# ------------------------------------------------------------- in the trainer

def test_train_with_classes_saves_them_and_evaluates_exactly(tmp_path):
    from elman import cli
    from elman.inference.evaluate import load, perplexity, read_ids
    from elman.model import rnn_step

    rng = np.random.default_rng(9)
    words = [f"w{i}" for i in range(25)]
    zipf = 1 / np.arange(1, 26)
    for name, n in (("train.txt", 300), ("valid.txt", 40)):
        lines = [" ".join(rng.choice(words, rng.integers(2, 8), p=zipf / zipf.sum())) for _ in range(n)]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    out = tmp_path / "model"
    assert cli.main(["train", "--train", str(tmp_path / "train.txt"), "--valid", str(tmp_path / "valid.txt"),
                     "--out", str(out), "--classes", "4", "--hidden", "8", "--embed", "6", "--batch", "4",
                     "--bptt", "5", "--epochs", "1", "--direct", "0", "--quiet"]) == 0
    p, vocab, cfg = load(out)
    assert p.classes == 4 and np.array_equal(p.class_bounds, class_bounds(vocab.counts, 4))
    ids = read_ids(tmp_path / "valid.txt", vocab, cfg)
    eos = vocab.stoi["<eos>"]
    # the same perplexity from the full distribution P(c|h)P(w|c,h), one step at a time
    h, nats = np.zeros((1, p.Dh), p.dtype), 0.0
    for x, y in zip(np.r_[eos, ids[:-1]], ids):
        h = rnn_step(p, [x], h)
        nats -= np.log(output_probs(p, h)[0, y])
    assert perplexity(p, ids, eos)["perplexity"] == pytest.approx(np.exp(nats / len(ids)), rel=1e-4)
    assert cli.main(["train", "--train", str(tmp_path / "train.txt"), "--valid", str(tmp_path / "valid.txt"),
                     "--out", str(tmp_path / "m2"), "--classes", "999", "--quiet"]) == 2
