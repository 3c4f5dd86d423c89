"""Direct connections (elman.core.direct): the hash against a scalar
implementation of its definition, the reference layer, and the model's
gradients with them through the full, class and sampled softmax, each
checked three ways: the formula, central finite differences in float64,
and HIPS autograd on an independent forward pass; sparse against dense;
the history carried from window to window."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from elman import Params, bptt, forward_losses, output_probs, rnn_step
from elman.core import direct as dc
from elman.fast import direct as fd
from elman.model.gradcheck import central_difference, max_rel_error
from elman.model import features, window_losses
from elman.core.sampled import unigram_proposal
from elman.core.sparse import SparseGrad, densify
from helpers import ag_direct_loss, logsumexp, sigmoid_ref

MASK = (1 << 64) - 1
FLOATS = ("L", "I", "H", "U", "b1", "b2", "Uc", "bc", "D")


def mix_scalar(z):
    """splitmix64's finaliser on a Python int, as its authors write it."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def offset_scalar(words, salt, span):
    """The offsets of one position: words[0] = x(t), words[1] = x(t-1), ...;
    the documented hash, one Python int at a time."""
    golden = 0x9E3779B97F4A7C15
    h, out = (salt * golden) & MASK, []
    for k in range(1, len(words) + 1):
        h = mix_scalar(h ^ ((words[k - 1] + 1 + k * golden) & MASK))
        out.append(h % span)
    return out


def test_offsets_follow_the_definition():
    rng = np.random.default_rng(0)
    B, T, N, span = 3, 5, 4, 9973
    inputs = rng.integers(0, 50, (B, T))
    history = rng.integers(-1, 50, (B, N - 2))
    ctx = dc.contexts(inputs, history, N)
    for salt in (dc.WORDS, dc.CLASSES):
        O = dc.offsets(ctx, N, span, salt).reshape(T, B, N - 1)
        for b in range(B):
            for t in range(T):
                words = [int(ctx[b, N - 2 + t - j]) for j in range(N - 1)]
                assert list(O[t, b]) == offset_scalar(words, salt, span)
    # salts, orders and words all change the offsets
    a = dc.offsets(ctx, N, span, dc.WORDS)
    assert not np.array_equal(a, dc.offsets(ctx, N, span, dc.CLASSES))
    assert not np.array_equal(a[:, 0], a[:, 1])


def test_offsets_spread_like_uniform_draws():
    """Bigram contexts 0..9999 into 10^6 places: as many distinct offsets as
    independent uniform draws give (collisions ~ n^2/2m = 50), not families."""
    ctx = np.arange(10000)[:, None]
    O = dc.offsets(ctx, 2, 10**6)
    assert O.min() >= 0 and O.max() < 10**6
    assert 10000 - len(np.unique(O)) < 90


def test_contexts_and_history():
    x = np.array([[5, 6, 7]])
    assert np.array_equal(dc.contexts(x, None, 4), [[-1, -1, 5, 6, 7]])
    assert np.array_equal(dc.contexts(x, np.array([[1, 2, 3]]), 4), [[2, 3, 5, 6, 7]])
    assert np.array_equal(dc.contexts(x, None, 2), x)
    assert np.array_equal(dc.next_history(dc.contexts(x, None, 4), 4), [[6, 7]])
    with pytest.raises(ValueError, match="2 words before"):
        dc.contexts(x, np.array([[1]]), 4)


# ------------------------------------------------------------ the reference layer

def test_reference_layer_against_autograd_and_differences():
    rng = np.random.default_rng(1)
    V, M, N = 6, 11, 5
    O = rng.integers(0, M - V + 1, (N, 3))
    D = rng.normal(size=M)
    W = rng.normal(size=(N, V))
    Zd, cache = dc.direct_forward(O, D, V)
    for n in range(N):
        assert np.allclose(Zd[n], sum(D[o:o + V] for o in O[n]))
    dD = dc.direct_backward(W, cache)
    assert max_rel_error(dD, central_difference(lambda: float((dc.direct_forward(O, D, V)[0] * W).sum()), D)) < 1e-9
    ag = autograd.grad(lambda D: anp.sum(sum(D[O[:, f, None] + np.arange(V)] for f in range(3)) * W))(D)
    assert max_rel_error(dD, ag) < 1e-12


# ------------------------------------------------------------ through the model

def instance(V=9, d=3, Dh=4, B=2, T=3, N=3, M=14, K=0, seed=0):
    """A float64 model with direct connections, every float tensor random
    (D too), random ids, state and history (some words none: -1). M close to
    V makes every feature's window overlap the others: sums of repeats."""
    rng = np.random.default_rng(seed)
    counts = np.sort(rng.integers(1, 1000, V))[::-1]
    p = Params.init(V, d, Dh, seed=seed, dtype="float64", classes=K, counts=counts, direct=M, direct_order=N)
    for name in FLOATS:
        arr = getattr(p, name)
        if arr is not None:
            arr[...] = rng.normal(0.0, 0.5, arr.shape)
    hist = rng.integers(-1, V, (B, max(N - 2, 0)))
    return p, rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T)), rng.uniform(0, 1, (B, Dh)), hist


def arrays_of(p):
    return {k: v.copy() for k, v in p.as_dict().items() if v.dtype.kind == "f"}


def check_three_ways(p, x, y, h0, hist, sampled=None):
    loss, grads, _ = bptt(p, x, y, h0, history=hist, sampled=sampled)
    assert set(grads) == {k for k, v in p.as_dict().items() if v.dtype.kind == "f"}
    for name, arr in p.as_dict().items():
        if arr.dtype.kind == "f":
            numeric = central_difference(lambda: bptt(p, x, y, h0, history=hist, sampled=sampled)[0], arr)
            assert max_rel_error(grads[name], numeric) < 1e-7, name
    if sampled is not None:
        return
    f = features(p, x, hist)
    T, B = x.shape[1], x.shape[0]
    O = f.O.reshape(T, B, -1)
    Oc = None if f.Oc is None else f.Oc.reshape(T, B, -1)
    args = (O, Oc, p.class_bounds, x, y, h0)
    a = arrays_of(p)
    assert loss == pytest.approx(ag_direct_loss(a, *args), rel=1e-12)
    auto = autograd.grad(ag_direct_loss)(a, *args)
    for name in a:
        assert max_rel_error(grads[name], auto[name]) < 1e-10, name


sizes = st.fixed_dictionaries(dict(
    V=st.integers(2, 8), B=st.integers(1, 3), T=st.integers(1, 3), N=st.integers(2, 4),
    extra=st.integers(0, 6), seed=st.integers(0, 2**16)))


@settings(max_examples=12, deadline=None)
@given(sizes)
def test_full_softmax_gradients_three_ways(s):
    check_three_ways(*instance(V=s["V"], B=s["B"], T=s["T"], N=s["N"], M=s["V"] + s["extra"], seed=s["seed"]))


@settings(max_examples=8, deadline=None)
@given(sizes, st.integers(1, 4))
def test_class_softmax_gradients_three_ways(s, K):
    K = min(K, s["V"])
    check_three_ways(*instance(V=s["V"], B=s["B"], T=s["T"], N=s["N"], M=s["V"] + s["extra"], K=K,
                               seed=s["seed"]))


def sampled_args(p, seed=0, S=5):
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, p.V, S)
    return samples, np.log(unigram_proposal(rng.integers(1, 50, p.V)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_softmax_gradients_and_the_columns_it_touches(seed):
    p, x, y, h0, hist = instance(V=9, M=400, seed=seed)
    samples, log_q = sampled_args(p, seed)
    check_three_ways(p, x, y, h0, hist, sampled=(samples, log_q))
    _, grads, _ = bptt(p, x, y, h0, history=hist, sampled=(samples, log_q), sparse=True)
    O = features(p, x, hist).O
    yt = y.T.reshape(-1)
    allowed = np.union1d((O + yt[:, None]).ravel(), (O[:, :, None] + samples).ravel())
    g = grads["D"]
    assert isinstance(g, SparseGrad) and set(g.index) <= set(allowed)
    dense = bptt(p, x, y, h0, history=hist, sampled=(samples, log_q))[1]["D"]
    assert not np.delete(dense, allowed).any()           # only the targets' and samples' columns
    assert np.array_equal(g.dense(), dense)


def test_sampled_autograd_on_an_independent_forward():
    """The sampled loss written with the full (N,V) logits, direct windows
    included, against the model's gradient of D and U."""
    p, x, y, h0, hist = instance(V=9, M=30, seed=4)
    samples, log_q = sampled_args(p, 4, S=6)
    _, grads, _ = bptt(p, x, y, h0, history=hist, sampled=(samples, log_q))
    O = features(p, x, hist).O.reshape(x.shape[1], x.shape[0], -1)

    def loss(a):
        h, total = h0, 0.0
        for t in range(x.shape[1]):
            h = sigmoid_ref(anp.dot(h, a["H"]) + anp.dot(a["L"][x[:, t]], a["I"]) + a["b1"])
            for b in range(x.shape[0]):
                z = anp.dot(h[b], a["U"]) + a["b2"] + sum(a["D"][o + np.arange(p.V)] for o in O[t, b])
                o0 = z[y[b, t]]
                hit = samples == y[b, t]
                o = z[samples] - np.log(len(samples)) - log_q[samples]
                o = anp.where(hit, -np.inf, o)
                total = total + logsumexp(anp.concatenate([anp.reshape(o0, (1,)), o]), 0, False) - o0
        return total

    auto = autograd.grad(loss)(arrays_of(p))
    for name in ("D", "U", "b2", "H", "L"):
        assert max_rel_error(grads[name], auto[name]) < 1e-10, name


@pytest.mark.parametrize("K", [0, 3])
@pytest.mark.parametrize("M", [12, 4000])      # the dense fallback, and real sparsity
def test_sparse_equals_dense(K, M):
    p, x, y, h0, hist = instance(V=10, B=3, T=4, N=4, M=M, K=K, seed=5)
    _, dense, _ = bptt(p, x, y, h0, history=hist)
    _, sparse, _ = bptt(p, x, y, h0, history=hist, sparse=True)
    for name, g in densify(sparse).items():
        assert np.array_equal(g, dense[name]), name
    assert isinstance(sparse["D"], SparseGrad) == (M == 4000)
    if M == 4000:
        assert len(sparse["D"].index) < 4 * 3 * 3 * 10 and np.all(np.diff(sparse["D"].index) > 0)


def test_windows_carry_the_history_and_the_state():
    """Two windows with the words before each carried equal one long window;
    a first window with no history equals one whose history is all none."""
    p, x, y, h0, _ = instance(V=9, B=2, T=6, N=4, M=30, seed=6)
    whole, h_whole = forward_losses(p, x, y, h0)
    parts = list(window_losses(p, [(x[:, :2], y[:, :2]), (x[:, 2:], y[:, 2:])], h0))
    assert np.allclose(np.concatenate([parts[0][0], parts[1][0]], axis=1), whole, rtol=1e-13)
    assert np.array_equal(parts[1][1], h_whole)
    none = np.full((2, 2), -1)
    assert np.array_equal(forward_losses(p, x, y, h0, history=none)[0], whole)
    other = forward_losses(p, x, y, h0, history=np.array([[3, 4], [5, 6]]))[0]
    assert not np.allclose(other[:, :2], whole[:, :2]) and np.allclose(other[:, 3:], whole[:, 3:])
    # and bptt's loss is the sum of the same losses
    assert bptt(p, x, y, h0)[0] == pytest.approx(whole.sum(), rel=1e-12)


@pytest.mark.parametrize("K", [0, 3])
def test_output_probs_with_the_words_read(K):
    p, x, y, h0, hist = instance(V=9, B=2, T=4, N=4, M=25, K=K, seed=7)
    losses, _ = forward_losses(p, x, y, h0, history=hist)
    ctx = dc.contexts(x, hist, 4)
    h = h0
    for t in range(x.shape[1]):
        h = rnn_step(p, x[:, t], h)
        probs = output_probs(p, h, ctx[:, t:t + 3])
        assert np.allclose(probs.sum(axis=1), 1.0)
        assert np.allclose(-np.log(probs[np.arange(2), y[:, t]]), losses[:, t], rtol=1e-12)


def test_float32_fast_path_equals_the_reference():
    p, x, y, h0, hist = instance(V=700, d=4, Dh=5, B=4, T=30, N=3, M=5000, seed=8)
    q = p.astype("float32")
    losses, _ = forward_losses(q, x, y, h0.astype(np.float32), history=hist)
    f = features(p, x, hist)
    Zd, _ = dc.direct_forward(f.O, p.D, p.V)
    h = h0
    ref = []
    for t in range(x.shape[1]):
        h = rnn_step(p, x[:, t], h)
        z = h @ p.U + p.b2 + Zd[t * 4:(t + 1) * 4]
        ref.append(-(z[np.arange(4), y[:, t]] - np.log(np.exp(z).sum(axis=1))))
    assert np.allclose(losses, np.array(ref).T, rtol=2e-5)


def test_params_refuse_bad_direct_tensors():
    p = Params.init(V=10, d=2, Dh=3, direct=12, direct_order=3)
    assert p.order == 3 and p.D.shape == (12,) and not p.D.any()
    a = p.as_dict()
    with pytest.raises(ValueError, match="alone"):
        Params.from_dict({k: v for k, v in a.items() if k != "direct_order"})
    with pytest.raises(ValueError, match="fewer than"):
        Params.from_dict(a | {"D": np.zeros(9, np.float32)})
    with pytest.raises(ValueError, match="from 2 to"):
        Params.from_dict(a | {"direct_order": np.array([1])})
    same = Params.init(V=10, d=2, Dh=3)
    assert all(np.array_equal(getattr(p, n), getattr(same, n)) for n in ("L", "I", "H", "U"))


def test_the_formula_written_out_and_explain_D():
    """dJ/dD_m = Σ_n Σ_f δ2[n, m - o_nf]: the sum written out from δ2 = yhat - y
    equals bptt's gradient; `elman explain D` shows it with a witness."""
    p, x, y, h0, hist = instance(V=7, B=2, T=3, N=3, M=12, seed=9)
    _, grads, _ = bptt(p, x, y, h0, history=hist)
    O = features(p, x, hist).O
    ctx = dc.contexts(x, hist, 3)
    h, want = h0, np.zeros(p.D.size)
    for t in range(x.shape[1]):
        h = rnn_step(p, x[:, t], h)
        delta = output_probs(p, h, ctx[:, t:t + 2])
        delta[np.arange(2), y[:, t]] -= 1
        for b in range(2):
            for o in O[t * 2 + b]:
                want[o:o + p.V] += delta[b]
    assert max_rel_error(grads["D"], want) < 1e-12

    from elman import cli
    from elman.explain.direct import explain_direct
    blocks, data, ok = explain_direct()
    assert ok and data["witness"]["max_abs_difference"] < 1e-8 and len(data["witness"]["rows"]) == 9
    assert cli.main(["explain", "D", "--format", "json"]) == 0


def test_explain_D_beside_the_seeds_targets(capsys):
    import json
    from elman import cli
    assert cli.main(["explain", "U", "D", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [t["target"] for t in doc["targets"]] == ["U", "D"]
    assert "φᵀ δ2" in doc["targets"][1]["matrix_formula"]["text"]


def test_model_files_say_what_the_tensors_are(tmp_path, capsys):
    """elman-2's config.json names the output layer and the direct connections;
    a config that disagrees with the tensors is one line."""
    import json
    from safetensors.numpy import load_file, save_file
    from elman import cli, modelfile
    from helpers import vocab
    p = Params.init(V=7, d=3, Dh=4, direct=20, direct_order=4)
    modelfile.save_checkpoint(tmp_path / "m", p.as_dict(), vocab(), {"level": "word"})
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (cfg["format"], cfg["output"], cfg["direct"]) == ("elman-2", "full", {"size": 20, "order": 4})
    q, _, _ = modelfile.load_params(tmp_path / "m")
    assert q.order == 4 and np.array_equal(q.D, p.D)

    def tampered(change_cfg=None, drop=None):
        d = tmp_path / "t"
        if d.exists():
            import shutil
            shutil.rmtree(d)
        modelfile.save_checkpoint(d, p.as_dict(), vocab(), {"level": "word"})
        if drop:
            arrays = load_file(d / "model.safetensors")
            save_file({k: v for k, v in arrays.items() if k != drop}, d / "model.safetensors")
        c = json.loads((d / "config.json").read_text())
        c.pop("files")
        if change_cfg:
            change_cfg(c)
        (d / "config.json").write_text(json.dumps(c))
        assert cli.main(["generate", "--model", str(d), "--words", "3"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        return err

    assert "20, 'order': 4} in the tensors" in tampered(lambda c: c["direct"].update(size=21))
    assert "tensors D and direct_order" in tampered(drop="direct_order")
    assert "no \"direct\" in the config" in tampered(lambda c: c.pop("direct"))
    assert "output layer 'hs' is not one this elman knows" in tampered(lambda c: c.update(output="hs"))
    assert "says a classes output layer" in tampered(lambda c: c.update(output="classes"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_windows_equal_numpy(dtype):
    """fast.windows against the NumPy sums of core.direct, repeats included
    (samples drawn with replacement hit one cell many times)."""
    from elman.fast import windows
    rng = np.random.default_rng(11)
    V, M, N, F, S = 50, 3000, 40, 3, 64
    D = rng.normal(size=M).astype(dtype)
    O = rng.integers(0, M - V + 1, (N, F))
    cols = np.sort(rng.integers(0, V, S))
    assert np.allclose(windows.gather_shared(D, O, cols), fd.gather_shared(D, O, cols), rtol=1e-6)
    dO = rng.normal(size=(N, S)).astype(dtype)
    for sparse in (False, True):
        g = fd.DirectGrad(M, dtype, N * F * S, sparse=sparse)
        g.shared(O, cols, dO)
        h = fd.DirectGrad(M, dtype, N * F * S, sparse=sparse)
        h.points(O[:, :, None] + cols, np.broadcast_to(dO[:, None, :], (N, F, S)))
        a, b = densify({"D": g.result()})["D"], densify({"D": h.result()})["D"]
        assert np.allclose(a, b, rtol=1e-5, atol=1e-5) and np.count_nonzero(a) > S
