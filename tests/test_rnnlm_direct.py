"""Direct connections hashed RNNLM's way: the offsets against a line-by-line
transcription of ``computeNet``'s two direct loops (rnnlmlib.cpp, the
Cantab fork), on tables small enough that its two stopping rules (a zero
class offset; a word offset that steps to M) happen often; the gradients
three ways (bptt's formula, float64 central differences, HIPS autograd on
an independent forward built from the transcription's cells)."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from elman import Params, bptt
from elman.core import direct as dc, rnnlm_direct as rd
from elman.core.sparse import densify
from elman.model import features
from elman.model.gradcheck import central_difference, max_rel_error
from helpers import logsumexp, sigmoid_ref

PRIMES = rd.PRIMES          # the table itself is checked against the C source's first and last entries


def c_cells(hist, k, size, K, M, order):
    """The C's loops for one position: ([(class c, cell)], [(word j of class k, cell)]).
    ``hist``: history[0], history[1], ... (x(t), x(t-1), ...; RNNLM's start is word 0, -1 out of vocabulary)."""
    U32, U64 = 2 ** 32 - 1, 2 ** 64 - 1
    classes, words = [], []
    for part in ("classes", "words"):
        hash_ = [0] * order
        for a in range(order):
            if a > 0 and hist[a - 1] == -1:
                break
            hash_[a] = (PRIMES[0] * PRIMES[1]) & U32
            if part == "words":
                hash_[a] = (hash_[a] * (k + 1)) & U64
            for b in range(1, a + 1):
                hash_[a] = (hash_[a] + PRIMES[((((a * PRIMES[b]) & U32) + b) & U32) % len(PRIMES)]
                            * (hist[b - 1] + 1)) & U64
            hash_[a] = hash_[a] % (M // 2) + (M // 2 if part == "words" else 0)
        for c in range(K if part == "classes" else size):
            for b in range(order):
                if hash_[b]:
                    (classes if part == "classes" else words).append((c, hash_[b]))
                    hash_[b] += 1
                    if part == "words":
                        hash_[b] = hash_[b] % M
                else:
                    break
    return classes, words


def instance(V=10, d=3, Dh=4, B=2, T=3, N=3, M=23, K=3, seed=0, oov=None):
    rng = np.random.default_rng(seed)
    counts = np.sort(rng.integers(1, 1000, V))[::-1]
    p = Params.init(V, d, Dh, seed=seed, dtype="float64", classes=K, counts=counts, direct=M, direct_order=N)
    for name, arr in p.as_dict().items():
        if arr.dtype.kind == "f":
            arr[...] = rng.normal(0.0, 0.5, arr.shape)
    p.direct_hash, p.direct_oov = "rnnlm", oov
    hist = rng.integers(-1, V, (B, max(N - 2, 0)))
    return p, rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T)), rng.uniform(0, 1, (B, Dh)), hist


def transcribed(p, x, hist):
    """(A (T,B,V,M), Ac (T,B,K,M) or None): how many times each logit adds each weight."""
    B, T = x.shape
    bounds = p.class_bounds if p.classes else np.array([0, p.V])
    K, M, N = len(bounds) - 1, p.D.size, p.order
    ctx = np.maximum(dc.contexts(x, hist, N), 0)                 # none is RNNLM's start, word 0
    if p.direct_oov is not None:                                 # and the word it lacks, -1
        ctx[dc.contexts(x, hist, N) == p.direct_oov] = -1
    A, Ac = np.zeros((T, B, p.V, M)), np.zeros((T, B, K, M))
    for t in range(T):
        for b in range(B):
            h = [int(w) for w in ctx[b, :N - 2 + t + 1][::-1]]
            for k in range(K):
                cls, words = c_cells(h, k, int(bounds[k + 1] - bounds[k]), K, M, N)
                for j, m in words:
                    A[t, b, bounds[k] + j, m] += 1
            for c, m in cls:
                Ac[t, b, c, m] += 1
    return A, (Ac if p.classes else None)


def test_the_primes_are_the_sources():
    assert len(PRIMES) == 36 and PRIMES[0] == 108641969 and PRIMES[-1] == 990122807


@pytest.mark.parametrize("N,M,K,seed,oov", [(3, 23, 3, 0, None), (4, 31, 4, 1, None), (2, 20, 2, 2, None),
                                            (5, 1001, 3, 3, None), (3, 24, 0, 4, None), (4, 1001, 3, 5, 2),
                                            (3, 23, 3, 6, 4), (5, 31, 0, 7, 0)])
def test_terms_follow_the_c_loops(N, M, K, seed, oov):
    """Every word's and class's direct term, fast and reference, equals the C's
    sum; the stopping rules did happen (cut windows, zero class offsets, an
    out-of-vocabulary word in the history)."""
    p, x, _, _, hist = instance(V=10 if oov is None else 5, B=3, T=6, N=N, M=M, K=K, seed=seed, oov=oov)
    A, Ac = transcribed(p, x, hist)
    T, B = x.shape[1], x.shape[0]
    zd, zc = features(p, x, hist).dense_terms()
    np.testing.assert_allclose(zd.reshape(T, B, -1), A @ p.D, rtol=1e-12, atol=1e-12)
    ctx = dc.contexts(x, hist, N)
    S, alive = rd.sums(ctx, N), rd.live(ctx, N, oov)
    bounds = p.class_bounds if K else np.array([0, p.V])
    np.testing.assert_allclose(rd.word_forward(S, p.D, bounds, alive)[0], zd, rtol=1e-12, atol=1e-12)
    if K:
        np.testing.assert_allclose(zc.reshape(T, B, -1), Ac @ p.D, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(rd.class_forward(S, p.D, K, alive)[0], zc, rtol=1e-12, atol=1e-12)
    if oov is not None:                                           # features were switched off, not all
        assert not alive[:, 1:].all() and alive[:, 1:].any()
        off = transcribed(p.copy(), x, hist)                      # copy: direct_oov kept
        p.direct_oov = None
        assert not np.array_equal(transcribed(p, x, hist)[0], off[0])
    if M < 100:
        cut = A.sum(axis=3) < N                                   # a word with fewer than N features
        assert cut.any()


def test_zero_class_offsets_end_the_sum():
    """A class offset of 0 turns off its feature and every higher one."""
    S = np.array([[0, 5, 7]], np.uint64)
    M = 2 * ((rd.BASE + 5) % 2 ** 64)                   # feature 1's offset is 0 mod M/2
    O, on = rd.class_offsets(S, M)
    assert O[0, 1] == 0 and on.tolist() == [[True, False, False]]


def ag_loss(a, A, Ac, bounds, inputs, targets, h0):
    """Independent forward: a loop over t; each logit row h U + b2 + A D."""
    B, T = inputs.shape
    h, total = h0, 0.0
    for t in range(T):
        h = sigmoid_ref(anp.dot(h, a["H"]) + anp.dot(a["L"][inputs[:, t]], a["I"]) + a["b1"])
        for b in range(B):
            z = anp.dot(h[b], a["U"]) + a["b2"] + anp.dot(A[t, b], a["D"])
            w = targets[b, t]
            if bounds is None:
                total = total - (z[w] - logsumexp(z, axis=0, keepdims=False))
                continue
            c = int(np.searchsorted(bounds, w, side="right") - 1)
            zc = anp.dot(h[b], a["Uc"]) + a["bc"] + anp.dot(Ac[t, b], a["D"])
            zw = z[bounds[c]:bounds[c + 1]]
            total = total - (zc[c] - logsumexp(zc, axis=0, keepdims=False))
            total = total - (zw[w - bounds[c]] - logsumexp(zw, axis=0, keepdims=False))
    return total


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2 ** 16), st.sampled_from([0, 2, 3]), st.integers(2, 4), st.booleans(),
       st.sampled_from([None, 1]))
def test_gradients_three_ways(seed, K, N, sparse, oov):
    p, x, y, h0, hist = instance(V=7, B=2, T=3, N=N, M=17, K=K, seed=seed, oov=oov)
    loss, grads, _ = bptt(p, x, y, h0, history=hist, sparse=sparse)
    grads = densify(grads)
    g = grads["D"]
    for name, arr in p.as_dict().items():
        if arr.dtype.kind == "f":
            numeric = central_difference(lambda: bptt(p, x, y, h0, history=hist)[0], arr)
            got = g if name == "D" else grads[name]
            assert max_rel_error(got, numeric) < 1e-7, name
    A, Ac = transcribed(p, x, hist)
    a = {k: v.copy() for k, v in p.as_dict().items() if v.dtype.kind == "f"}
    args = (A, Ac, p.class_bounds if K else None, x, y, h0)
    assert loss == pytest.approx(ag_loss(a, *args), rel=1e-12)
    auto = autograd.grad(ag_loss)(a, *args)
    assert max_rel_error(g, auto["D"]) < 1e-10
    assert max_rel_error(grads["U"], auto["U"]) < 1e-10


def test_reference_backward_is_the_forwards_transpose():
    p, x, _, _, hist = instance(B=2, T=3, N=3, M=23, K=3, seed=5)
    S = rd.sums(dc.contexts(x, hist, 3), 3)
    rng = np.random.default_rng(0)
    dw, dcl = rng.normal(size=(len(S), p.V)), rng.normal(size=(len(S), 3))
    A, Ac = transcribed(p, x, hist)
    T, B = x.shape[1], x.shape[0]
    _, cache = rd.word_forward(S, p.D, p.class_bounds)
    np.testing.assert_allclose(rd.word_backward(dw, cache), np.einsum("nv,nvm->m", dw, A.reshape(T * B, p.V, -1)))
    _, cache = rd.class_forward(S, p.D, 3)
    np.testing.assert_allclose(rd.class_backward(dcl, cache), np.einsum("nk,nkm->m", dcl, Ac.reshape(T * B, 3, -1)))


def test_check_refuses_a_table_too_small_for_the_classes():
    with pytest.raises(ValueError, match="half"):
        rd.check(np.zeros(6), np.array([3]), 10, 4)


def _train(tmp_path, *args):
    import subprocess
    import sys
    text = [" ".join(f"w{(i * 7 + j) % 30}" for j in range(8)) for i in range(60)]
    (tmp_path / "t.txt").write_text("\n".join(text) + "\n")
    return subprocess.run([sys.executable, "-m", "elman", "train", "--train", tmp_path / "t.txt", "--valid",
                           tmp_path / "t.txt", "--out", tmp_path / "m", "--hidden", "4", "--embed", "3",
                           "--epochs", "1", "--batch", "2", *map(str, args)], capture_output=True, text=True)


def test_train_with_rnnlm_hashing(tmp_path):
    """--direct-hash rnnlm: <eos> becomes id 0 and the model file says the scheme;
    a model that ends up not using it (no table) or a sampled softmax is refused."""
    from elman.modelfile import load_params
    done = _train(tmp_path, "--direct", "0.001", "--direct-hash", "rnnlm", "--classes", "4")
    assert done.returncode == 0, done.stderr
    p, vocab, cfg = load_params(tmp_path / "m")
    assert vocab.eos_id == 0 and cfg["direct_hash"] == "rnnlm" and p.direct_hash == "rnnlm"
    assert np.abs(p.D).max() > 0
    for args, message in ((("--direct", 0, "--direct-hash", "rnnlm"), "give --direct SIZE too"),
                          (("--direct", 0.001, "--direct-hash", "rnnlm", "--sampled", 5), "not a sampled one")):
        done = _train(tmp_path, *args, "--force")
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert sum("error" in line for line in done.stderr.splitlines()) == 1


def test_files_without_the_setting_are_elman_hashed(tmp_path):
    from elman.modelfile import load_params
    done = _train(tmp_path, "--direct", "0.001", "--classes", "4")
    assert done.returncode == 0, done.stderr
    p, _, cfg = load_params(tmp_path / "m")
    assert "direct_hash" not in cfg and p.direct_hash == "elman"


@pytest.mark.parametrize("K", [0, 3])
def test_sparse_equals_dense(K):
    """A large table: the gradient comes back as the touched cells only, the dense one's values."""
    from elman.core.sparse import SparseGrad
    p, x, y, h0, hist = instance(V=7, B=2, T=3, N=3, M=4001, K=K, seed=7)
    sparse = bptt(p, x, y, h0, history=hist, sparse=True)[1]["D"]
    dense = bptt(p, x, y, h0, history=hist, sparse=False)[1]["D"]
    assert isinstance(sparse, SparseGrad) and not isinstance(dense, SparseGrad)
    np.testing.assert_array_equal(densify({"D": sparse})["D"], dense)


@pytest.mark.parametrize("M,K,oov,seed,cut", [(23, 3, None, 0, True), (31, 4, 2, 1, False), (1001, 3, None, 2, False),
                                              (24, 2, 7, 3, True)])
def test_compiled_scoring_is_the_reference(M, K, oov, seed, cut):
    """The compiled class-softmax loop (``fast.classscore``) on RNNLM's terms
    (``RnnlmFeatures.scoring_terms``) gives numpy scoring's losses; the cut
    windows and the switched-off features did happen."""
    from elman.model import forward_losses
    p, x, y, h0, hist = instance(V=10, B=3, T=9, N=3, M=M, K=K, seed=seed, oov=oov)
    if oov is not None:
        x[:, 2::3] = oov
    p.scoring = "numpy"
    want, _ = forward_losses(p, x, y, h0, hist)
    p.scoring = "compiled"
    got, _ = forward_losses(p, x, y, h0, hist)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    D2, O, Oc = features(p, x, hist).scoring_terms(y.T.ravel())
    pad = max(int(np.diff(p.class_bounds).max()), K)
    if oov is not None:                                             # features off: reading the zeros past D
        assert (O + p.class_bounds[np.searchsorted(p.class_bounds, y.T.ravel(), "right") - 1][:, None] == M).any()
    assert (len(D2) > M + pad) == cut                               # windows cut at the table's end, copied


@pytest.mark.parametrize("M,K,oov", [(23, 3, None), (24, 2, 7), (1001, 0, 3)])
def test_targets_only_equal_the_whole_output_layer(M, K, oov):
    """target_log_probs (the lattice's path: compiled, a row's target class
    alone) against every logit of output_log_probs, RNNLM's hashing."""
    from elman.model import output_log_probs, target_log_probs
    p, *_ = instance(V=10, N=3, M=M, K=K, seed=M, oov=oov)
    p.scoring = "compiled"
    rng = np.random.default_rng(M)
    H = rng.uniform(0, 1, (8, p.Dh))
    context = rng.integers(-1, 10, (8, 2))
    if oov is not None:
        context[::2, 0] = oov
    rows, y = np.repeat(np.arange(8), 10), np.tile(np.arange(10), 8)
    want = output_log_probs(p, H, context)[rows, y]
    np.testing.assert_allclose(target_log_probs(p, H[rows], y, context[rows]), want, rtol=1e-12, atol=1e-12)
