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
    got, none = class_losses(h, p.U, p.b2, p.Uc, p.bc, p.class_bounds, y, args)
    assert none is None
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    assert got.std() > 0.3                                   # the rows differ: nothing constant was checked


def test_the_rows_do_not_depend_on_the_tasks_and_what_runs_beside_comes_back():
    """600 rows (three tasks of ROWS, shared by the threads) give each row the
    loss it gets alone, to rounding; the function run beside returns."""
    from elman.fast.classscore import ROWS
    p = _model("float32", 300)
    rng = np.random.default_rng(6)
    N = 2 * ROWS + 88
    h = rng.uniform(0, 1, (N, p.Dh)).astype(np.float32)
    y = rng.integers(0, p.V, N)
    f = features(p, rng.integers(0, p.V, (N, 1)), rng.integers(-1, p.V, (N, 1)))
    got, done = class_losses(h, p.U, p.b2, p.Uc, p.bc, p.class_bounds, y, (p.D, f.O, f.Oc), beside=lambda: "ran")
    assert done == "ran"
    for n in (0, ROWS - 1, ROWS, N - 1):
        alone, _ = class_losses(h[n:n + 1], p.U, p.b2, p.Uc, p.bc, p.class_bounds, y[n:n + 1],
                                (p.D, f.O[n:n + 1], f.Oc[n:n + 1]))
        np.testing.assert_allclose(alone[0], got[n], rtol=1e-6)


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


def test_a_file_says_how_it_scores_and_older_files_score_as_before(tmp_path):
    """config.json's "scoring": new files "compiled"; a file without the key
    scores by the NumPy path, the gradient pass's numbers digit for digit;
    the two paths agree to rounding."""
    import json

    from elman import modelfile
    from elman.data import Vocab
    from elman.inference import evaluate
    from helpers import random_model
    V = 30
    p = random_model(V=V, d=5, Dh=7, dtype="float32", classes=4, direct=200)
    vocab = Vocab(["<eos>", "<unk>"] + [f"w{i}" for i in range(V - 2)], counts=np.arange(3 * V, 2 * V, -1))
    modelfile.save_checkpoint(tmp_path, p.as_dict(), vocab, {"level": "word"})
    cfg_path = tmp_path / modelfile.CONFIG_FILE
    assert json.loads(cfg_path.read_text())["scoring"] == "compiled"
    new, _, _ = evaluate.load(tmp_path)
    cfg = json.loads(cfg_path.read_text())
    del cfg["scoring"]
    cfg_path.write_text(json.dumps(cfg))               # as a file written before the key
    old, _, _ = evaluate.load(tmp_path)
    assert (new.scoring, old.scoring, old.copy().scoring) == ("compiled", "numpy", "numpy")
    ids = np.random.default_rng(5).integers(0, V, 200)             # one window of eval
    fast, slow = evaluate.stream_losses(new, ids, 0), evaluate.stream_losses(old, ids, 0)
    x = np.r_[0, ids[:-1]][None]
    ref, _, _ = bptt(old, x, ids[None], np.zeros((1, old.Dh), old.dtype), per_position=True)
    np.testing.assert_array_equal(slow, ref[0].astype(np.float64))   # the NumPy path: the very same numbers
    np.testing.assert_allclose(fast, slow, rtol=3e-5, atol=3e-5)
    assert not np.array_equal(fast, slow)                             # two paths, truly


def test_eval_gives_the_same_numbers_on_one_thread_and_on_two():
    """The rows' tasks are the same however many threads share them, and the
    recurrence runs as one of them or before them: the same losses, bit for bit."""
    from elman.fast import threads
    from elman.model.perplexity import stream_losses
    p = _model("float32", 300)
    ids = np.random.default_rng(7).integers(0, p.V, 3000)
    with threads.using(1):
        one = stream_losses(p, ids, 0, window=700)
    with threads.using(2):
        two = stream_losses(p, ids, 0, window=700)
    np.testing.assert_array_equal(one, two)
    assert one.std() > 0.3
