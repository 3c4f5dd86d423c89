"""Large vocabularies: the parameters drawn in blocks, the class layer's
column-sparse gradients, and its eval held to reference figures
(fixtures/class-reference: computed by a one-class-at-a-time class layer
with a dense dJ/dU)."""
import numpy as np
import pytest

from elman.core import params as params_module
from elman.model import scoring
from elman.model import Params


def whole_draws(V, d, Dh, seed, dtype, classes=0):
    """Params.init drawing every tensor whole in float64, then cast: the block-wise draws' reference."""
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
    monkeypatch.setattr(params_module, "DRAW_BLOCK", block)
    V, d, Dh = 23, 5, 6
    p = Params.init(V, d, Dh, seed=11, dtype=dtype, classes=4, counts=np.arange(V, 0, -1))
    for name, want in whole_draws(V, d, Dh, 11, dtype, classes=4).items():
        got = getattr(p, name)
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    assert not p.b1.any() and not p.b2.any() and not p.bc.any()
    # U and b2 are born in the stacked layout: no copy was made of them
    assert params_module.stacked_bias(p.U, p.b2) is not None


# -------------------------------------------- the class layer against its reference figures

import hashlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from helpers import on_fixture_kernels  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "class-reference"


def expected():
    return json.loads((FIXTURE / "expected.json").read_text())


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@on_fixture_kernels
def test_eval_of_a_class_model_is_unchanged_to_the_last_digit():
    """The values ``elman eval`` printed with the reference class layer
    (one class at a time) for the fixture's class model."""
    want = expected()
    run = lambda *a: subprocess.run([sys.executable, "-m", "elman", "eval", "--model", "model",  # noqa: E731
                                     "--data", "valid.txt", *a], cwd=FIXTURE, capture_output=True, text=True)
    assert run().stdout.strip() == want["eval_line"]
    assert json.loads(run("--json").stdout) == want["eval_json"]


@on_fixture_kernels
def test_class_losses_scores_and_gradients_are_the_reference_ones():
    from elman.model import bptt
    from elman.core.sparse import SparseGrad
    from elman.inference import evaluate

    want = expected()
    p, vocab, cfg = evaluate.load(FIXTURE / "model")
    ids = evaluate.read_ids(FIXTURE / "valid.txt", vocab, cfg)
    assert sha(evaluate.stream_losses(p, ids, vocab.eos_id).astype("<f8")) == want["stream_losses_sha256"]
    # ``elman score`` streams lines in batches of other shapes than the
    # reference's, so its float32 sums may round differently; its total
    # agrees to the precision of those sums.
    out = subprocess.run([sys.executable, "-m", "elman", "score", "--model", "model", "--data", "valid.txt"],
                         cwd=FIXTURE, capture_output=True, text=True).stdout
    total = float(out.strip().splitlines()[-1].split()[1])
    assert total == pytest.approx(want["score_total_log10"], rel=1e-8)
    x = ids[:8 * 21].reshape(8, 21)
    h0 = np.full((8, p.Dh), 0.5, p.dtype)
    from safetensors.numpy import load_file
    old = load_file(FIXTURE / "bptt_grads.safetensors")
    dense = None
    for sparse in (False, True):
        loss, grads, _ = bptt(p, x[:, :-1], x[:, 1:], h0, scale=1 / 160, sparse=sparse)
        assert loss == want["bptt"]["loss"]
        assert sparse == isinstance(grads["U"], SparseGrad) == isinstance(grads["b2"], SparseGrad)
        grads = {k: g.dense() if isinstance(g, SparseGrad) else g for k, g in grads.items()}
        for k, g in grads.items():
            if k in ("U", "b2", "L"):
                # U's gradient is formed word by word, in U's memory layout
                # (dJ/dU[:, a:b]ᵀ = δwᵀ h_R where the reference formed h_Rᵀ δw),
                # and L's rows of one word are added one after another
                # (fast.rowsums; add.reduceat pairs them): the same sums of the
                # same products, rounded in another order.
                np.testing.assert_allclose(g, old[k], rtol=1e-5, atol=1e-9)
                assert np.array_equal(g == 0, old[k] == 0), k
            else:
                assert sha(g) == want["bptt"]["grads_sha256"][k], k
        if dense is None:
            dense = grads
        else:                                   # the column SparseGrads are the dense ones, bit for bit
            assert all(np.array_equal(grads[k], dense[k]) for k in grads)


# ------------------------------------------------------ updates on column runs

from elman.core.sparse import SparseGrad, densify  # noqa: E402
from elman.training.rules import make_optimizer  # noqa: E402


def class_columns(rng, V, pieces):
    """Sorted ids made of a few contiguous ranges, as a class softmax's classes present."""
    cuts = np.sort(rng.choice(np.arange(1, V), 2 * pieces, replace=False))
    return np.concatenate([np.arange(a, b) for a, b in zip(cuts[::2], cuts[1::2])])


def column_grads(rng, Dh, V, index):
    G = rng.normal(size=(Dh + 1, len(index))).astype(np.float32)
    return {"U": SparseGrad(index, G[:Dh], (Dh, V), -1), "b2": SparseGrad(index, G[Dh], (V,), -1)}


def test_runs_of_consecutive_ids():
    g = SparseGrad(np.r_[np.arange(3, 200), np.arange(300, 400)], np.zeros((2, 297)), (2, 500), -1)
    assert g.runs() == [(slice(3, 200), slice(0, 197)), (slice(300, 400), slice(197, 297))]
    assert SparseGrad(np.arange(0, 400, 2), np.zeros((2, 200)), (2, 500), -1).runs() is None


@pytest.mark.parametrize("name", ["sgd", "adagrad"])
@pytest.mark.parametrize("clip", [0.0, 1e-3])
def test_updates_on_column_runs_equal_dense_updates_bit_for_bit(name, clip):
    rng = np.random.default_rng(1)
    Dh, V = 6, 3000
    params = {"U": rng.normal(size=(Dh, V)).astype(np.float32), "b2": rng.normal(size=V).astype(np.float32)}
    twin = {k: v.copy() for k, v in params.items()}
    opt, opt2 = make_optimizer(name, params, clip=clip), make_optimizer(name, twin, clip=clip)
    for step in range(3):
        grads = column_grads(rng, Dh, V, class_columns(rng, V, 4))
        assert grads["U"].runs() is not None           # the in-place path is the one taken
        dense = densify(grads)
        if clip:                                        # the same scale for both: the norm of the same values
            assert opt.step(params, grads) == pytest.approx(opt2.step(twin, dense), rel=1e-6)
        else:
            opt.step(params, grads), opt2.step(twin, dense)
    for k in params:
        if not clip:
            assert np.array_equal(params[k], twin[k]), k
        else:
            np.testing.assert_allclose(params[k], twin[k], rtol=1e-6, atol=1e-7)


def test_lazy_adam_moves_only_the_touched_columns():
    rng = np.random.default_rng(2)
    Dh, V = 4, 500
    start = {"U": rng.normal(size=(Dh, V)), "b2": rng.normal(size=V)}
    params = {k: v.copy() for k, v in start.items()}
    opt = make_optimizer("lazyadam", params, lr=0.01)
    steps = [np.r_[np.arange(10, 80), np.arange(200, 300)], np.r_[np.arange(50, 120), np.arange(400, 480)]]
    grads = [column_grads(rng, Dh, V, idx) for idx in steps]
    for g in grads:
        opt.step(params, {k: SparseGrad(v.index, v.values.astype(np.float64), v.shape, -1) for k, v in g.items()})
    # the reference: Adam's formulas, entry by entry, moments kept only where touched
    want = {k: v.copy() for k, v in start.items()}
    m = {k: np.zeros_like(v) for k, v in start.items()}
    s = {k: np.zeros_like(v) for k, v in start.items()}
    for t, g in enumerate(grads, start=1):
        for k, sg in g.items():
            i, gv = sg.index, sg.values.astype(np.float64)
            m[k][..., i] = 0.9 * m[k][..., i] + 0.1 * gv
            s[k][..., i] = 0.999 * s[k][..., i] + 0.001 * gv ** 2
            step = 0.01 * (m[k][..., i] / (1 - 0.9 ** t)) / (np.sqrt(s[k][..., i] / (1 - 0.999 ** t)) + 1e-8)
            want[k][..., i] -= step
    untouched = np.setdiff1d(np.arange(V), np.concatenate(steps))
    for k in params:
        np.testing.assert_allclose(params[k], want[k], rtol=1e-12, atol=1e-15)
        assert np.array_equal(params[k][..., untouched], start[k][..., untouched])
        assert not opt.state["m"][k][..., untouched].any()


def test_lazy_adam_on_dense_gradients_is_adam_bit_for_bit():
    rng = np.random.default_rng(3)
    params = {"A": rng.normal(size=(7, 5)).astype(np.float32)}
    twin = {k: v.copy() for k, v in params.items()}
    lazy, adam = make_optimizer("lazyadam", params, clip=1.0), make_optimizer("adam", twin, clip=1.0)
    for _ in range(4):
        g = rng.normal(size=(7, 5)).astype(np.float32)
        lazy.step(params, {"A": g.copy()}), adam.step(twin, {"A": g.copy()})
    assert np.array_equal(params["A"], twin["A"])


# ------------------------------------------------ evaluation in bounded memory

@pytest.mark.parametrize("classes", [0, 5])
def test_evaluation_in_blocks_of_rows_gives_the_same_losses(classes, monkeypatch):
    from elman.model import forward_losses, window_losses

    rng = np.random.default_rng(4)
    V = 300
    p = Params.init(V, 6, 8, seed=4, classes=classes, counts=np.arange(V, 0, -1))
    p.U[...] = rng.normal(size=p.U.shape)
    x, y = rng.integers(0, V, (3, 40)), rng.integers(0, V, (3, 40))
    h0 = rng.random((3, 8)).astype(np.float32)
    whole, h_whole = forward_losses(p, x, y, h0)
    monkeypatch.setattr(scoring, "EVAL_LOGITS", 7 * V)          # blocks of 7 rows (or fewer with classes)
    blocks, h_blocks = forward_losses(p, x, y, h0)
    assert np.array_equal(h_blocks, h_whole)
    np.testing.assert_allclose(blocks, whole, rtol=2e-6)
    streamed = [losses for losses, _ in window_losses(p, [(x[:, :20], y[:, :20]), (x[:, 20:], y[:, 20:])], h0)]
    np.testing.assert_allclose(np.concatenate(streamed, axis=1), whole, rtol=2e-6)


@pytest.mark.parametrize("seed", range(4))
def test_class_gradients_are_the_columns_of_the_classes_present(seed):
    from elman.core.classes import word_classes
    from elman.model.gradcheck import central_difference, max_rel_error
    from elman.model import bptt

    rng = np.random.default_rng(seed)
    V, K = 40, 7
    p = Params.init(V, 3, 4, seed=seed, dtype="float64", classes=K, counts=np.sort(rng.integers(1, 99, V))[::-1])
    for name in ("U", "b2", "Uc", "bc"):
        getattr(p, name)[...] = rng.normal(0, 0.5, getattr(p, name).shape)
    x, y, h0 = rng.integers(0, V, (2, 3)), rng.integers(0, V, (2, 3)), rng.random((2, 4))
    loss, dense, _ = bptt(p, x, y, h0)
    loss_s, sparse, _ = bptt(p, x, y, h0, sparse=True)
    b = p.class_bounds
    present = np.unique(word_classes(b, y))
    assert loss_s == loss
    assert np.array_equal(sparse["U"].index, np.concatenate([np.arange(b[c], b[c + 1]) for c in present]))
    for k in dense:
        assert np.array_equal(sparse[k].dense() if isinstance(sparse[k], SparseGrad) else sparse[k], dense[k]), k
    numeric = central_difference(lambda: bptt(p, x, y, h0)[0], p.U)
    assert max_rel_error(dense["U"], numeric) < 1e-7


# ------------------------------------------------ sampled softmax, fast form

def test_accidental_hits_are_every_pair_of_a_target_and_an_equal_sample():
    from elman.fast.sampled import accidental_hits
    rng = np.random.default_rng(3)
    for _ in range(20):
        y, samples = rng.integers(0, 12, 40), rng.integers(0, 12, rng.integers(1, 30))    # duplicates, any order
        rows, cols = accidental_hits(y, samples)
        want = np.nonzero(y[:, None] == samples[None, :])
        assert sorted(zip(rows.tolist(), cols.tolist())) == sorted(zip(*(a.tolist() for a in want)))
        assert np.all(np.diff(rows) >= 0)


@pytest.mark.parametrize("layout", ["word-major", "row-major"])
@pytest.mark.parametrize("dloss", [1.0, "rows"])
@pytest.mark.parametrize("block", [None, 16])
def test_fast_sampled_layer_is_the_reference(layout, dloss, block, monkeypatch):
    from elman.core.layers import embedding_row_sums
    from elman.core.sampled import Sampler, sampled_output_backward, sampled_output_losses, unigram_proposal
    from elman.fast import threads
    from elman.fast.sampled import sampled_backward, sampled_losses
    if block:                                             # row blocks shared by two threads
        monkeypatch.setattr(threads, "BLAS_ROWS", block)
        monkeypatch.setattr(threads, "THREADS", 2)

    rng = np.random.default_rng(5)
    V, Dh, N, S = 300, 7, 90, 70
    p = Params.init(V, 3, Dh, seed=5, dtype="float64")
    U, b2 = (p.U, p.b2) if layout == "word-major" else (np.ascontiguousarray(p.U), rng.normal(size=V))
    if layout == "word-major":
        b2[...] = rng.normal(size=V)
    h, y = rng.random((N, Dh)), rng.integers(0, V, N)
    sampler = Sampler(unigram_proposal(rng.integers(1, 50, V)), S, seed=5)
    samples = sampler.draw(0)
    samples[:5] = y[:5]                                   # accidental hits, for sure
    w = rng.random(N) if dloss == "rows" else dloss
    want, cache = sampled_output_losses(h, U, b2, y, samples, sampler.log_q)
    dh_want, cols_want, dU_want, db2_want = sampled_output_backward(w, cache)
    got, cache = sampled_losses(h, U, b2, y, samples, sampler.log_q)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    dh, rows, ids, _ = sampled_backward(w, cache)
    cols, sums = embedding_row_sums(rows, ids)
    np.testing.assert_allclose(dh, dh_want, rtol=1e-12, atol=1e-15)
    assert np.array_equal(cols, cols_want)
    np.testing.assert_allclose(sums[:, :-1].T, dU_want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sums[:, -1], db2_want, rtol=1e-12, atol=1e-15)
