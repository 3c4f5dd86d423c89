"""N-best hypotheses through a prefix trie (``inference.prefix``): the same
losses as each hypothesis scored alone (``engine.batched``, one row) for
every output layer, with and without direct connections, in float32 and
float64; each distinct prefix run once; ``--carry``'s starts kept."""
import numpy as np
import pytest

from helpers import EOS_ID, direct_losses, random_model
from elman.inference import engine, prefix
from elman.inference.readers import Line

KINDS = {"full": {}, "classes": {"classes": 4}, "direct": {"direct": 40}, "classes+direct": {"classes": 4, "direct": 40}}


def _nbest(seed=0, utterances=3, per=12, V=13):
    """Rows (ids then <eos>) and their utterance: near-copies of one
    sentence each, words changed late, a few repeated, one a prefix of
    another but for its <eos>."""
    rng = np.random.default_rng(seed)
    rows, utt = [], []
    for u in range(utterances):
        base = rng.integers(1, V, int(rng.integers(6, 14)))
        for k in range(per):
            hyp = base.copy()
            for _ in range(int(rng.integers(0, 3)) if k else 0):
                hyp[int(rng.integers(len(hyp) // 2, len(hyp)))] = rng.integers(1, V)
            if k == per - 1:
                hyp = hyp[:-2]
            rows.append(np.r_[hyp, EOS_ID].astype(np.int64)), utt.append(u)
        rows.append(rows[-3].copy()), utt.append(u)
    return rows, utt


def _alone(p, rows, h0=None, history=None):
    return [engine.batched(p, [r], EOS_ID, None if h0 is None else h0[i:i + 1],
                           history=None if history is None else history[i:i + 1])[0] for i, r in enumerate(rows)]


@pytest.mark.parametrize("tail", [0, 16, 10**6])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-11), ("float32", 2e-5)])
@pytest.mark.parametrize("kind", [*KINDS, "rnnlm-direct"])
def test_the_trie_gives_each_hypothesis_its_own_losses(kind, dtype, rtol, tail, monkeypatch):
    """``tail``: rows still running under which the rest runs in windows (0: the trie to the end;
    10**6: the trie for the first target only)."""
    p = random_model(dtype=dtype, **KINDS["classes+direct" if kind == "rnnlm-direct" else kind])
    if kind == "rnnlm-direct":
        p.direct_hash = "rnnlm"
    monkeypatch.setattr(prefix, "TAIL", tail)
    rows, _ = _nbest()
    rng = np.random.default_rng(4)
    rows += [np.r_[rows[0][:5], rng.integers(1, 13, n), EOS_ID] for n in (300, 600, 40)]    # long tails
    got = prefix.trie_losses(p, rows, EOS_ID)
    for g, want in zip(got, _alone(p, rows)):
        assert g.dtype == np.float64 and g.shape == want.shape
        np.testing.assert_allclose(g, want, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("tail", [0, 10**6])
@pytest.mark.parametrize("kind", KINDS)
def test_starts_of_their_own_are_each_roots_state_and_words(kind, tail, monkeypatch):
    """Per-utterance roots (score --nbest --carry): root r from h0[r] after history[r]."""
    p = random_model(**KINDS[kind])
    monkeypatch.setattr(prefix, "TAIL", tail)
    rows, utt = _nbest(seed=1)
    rng = np.random.default_rng(5)
    R = max(utt) + 1
    h0 = rng.uniform(0, 1, (R, p.Dh))
    history = rng.integers(-1, 13, (R, 1)) if p.D is not None else None
    got = prefix.trie_losses(p, rows, EOS_ID, utt, h0, history)
    rows_h0 = h0[utt]
    for i, (g, want) in enumerate(zip(got, _alone(p, rows, rows_h0, None if history is None else history[utt]))):
        np.testing.assert_allclose(g, want, rtol=1e-11)
        if i % 7 == 0:                  # and the token-by-token computation
            before = [] if history is None else list(history[utt[i]])
            np.testing.assert_allclose(g, direct_losses(p, rows[i], h=rows_h0[i], before=before)[0], rtol=1e-10)


def test_each_distinct_prefix_is_run_once_and_each_edge_scored_once(monkeypatch):
    p = random_model(classes=4, direct=40)
    rows, utt = _nbest(seed=2, per=40)
    stepped, scored = [], []
    step, target = prefix._step, prefix.target_log_probs
    monkeypatch.setattr(prefix, "TAIL", 0)        # the trie to the end (no rows run in windows)
    monkeypatch.setattr(prefix, "_step", lambda p, h, ids, table=None: stepped.append(len(ids)) or step(p, h, ids, table))
    monkeypatch.setattr(prefix, "target_log_probs", lambda p, h, y, c: scored.append(len(y)) or target(p, h, y, c))
    for roots in (None, utt):
        stepped.clear(), scored.clear()
        prefix.trie_losses(p, rows, EOS_ID, roots, None if roots is None else np.zeros((max(utt) + 1, p.Dh)))
        keys = [0] * len(rows) if roots is None else roots
        edges = {(r, tuple(row[:k])) for r, row in zip(keys, rows) for k in range(1, len(row) + 1)}
        inner = {(r, tuple(row[:k])) for r, row in zip(keys, rows) for k in range(0, len(row))}
        assert sum(stepped) == len(inner)       # the roots' <eos> and every prefix that goes on
        assert sum(scored) == len(edges) < sum(len(r) for r in rows) / 2
        tries = prefix.Trie(rows, keys, len(set(keys)), EOS_ID)
        assert len(tries) == len(set(keys)) + len(edges)


def test_engine_nbest_equals_scoring_each_hypothesis_alone_with_and_without_carry():
    p = random_model(dtype="float32", classes=4, direct=40)
    rows, utt = _nbest(seed=3)
    lines = [Line(i + 1, [], r, f"u{u}") for i, (r, u) in enumerate(zip(rows, utt))]
    indep = list(engine.line_losses(p, iter(lines), EOS_ID, carry=False, alternatives=True))
    for (line, g), want in zip(indep, _alone(p, rows)):
        np.testing.assert_allclose(g, want, rtol=2e-5, atol=2e-5)
    carried = list(engine.line_losses(p, iter(lines), EOS_ID, carry=True, alternatives=True))
    S, read, starts = np.zeros((1, p.Dh)), [], {}
    for line in lines:                  # RNNLM's -nbest: S(u+1) after u's first hypothesis
        if line.uid not in starts:
            starts[line.uid] = (S, list(read))
            S = direct_losses(p, line.ids, h=S, before=read)[1]
            read += [EOS_ID] + list(line.ids[:-1])
    for line, g in carried:
        S, read = starts[line.uid]
        np.testing.assert_allclose(g, direct_losses(p, line.ids, h=S, before=read)[0], rtol=2e-4, atol=2e-5)
    assert not np.allclose(carried[len(rows) - 1][1], indep[len(rows) - 1][1])


def test_a_long_hypothesis_runs_in_windows_once_few_rows_run_on(monkeypatch):
    """A trie steps a depth at a time; with at most TAIL rows left, the rest runs in windows."""
    p = random_model(classes=4, direct=40)
    rng = np.random.default_rng(6)
    rows = [np.r_[rng.integers(1, 13, 700), EOS_ID]] + [np.r_[rng.integers(1, 13, 3), EOS_ID] for _ in range(40)]
    stepped = []
    step = prefix._step
    monkeypatch.setattr(prefix, "_step", lambda p, h, ids, table=None: stepped.append(len(ids)) or step(p, h, ids, table))
    got = prefix.trie_losses(p, rows, EOS_ID)
    assert len(stepped) <= 4 < len(rows[0])              # the depths while the short ones run, then windows
    for g, want in zip(got, _alone(p, rows)):
        np.testing.assert_allclose(g, want, rtol=1e-11)


def test_score_nbest_gives_each_hypothesis_the_score_of_the_line_alone(tmp_path, capsys):
    import helpers
    from elman import cli
    helpers.save(tmp_path / "m")
    hyps = [("u1", "a b a c d"), ("u1", "a b a c e"), ("u1", "a b e"), ("u1", "a b a c d"), ("u2", "b a"),
            ("u2", "b a c d a b"), ("u2", "e")]
    (tmp_path / "n.txt").write_text("".join(f"{u} {h}\n" for u, h in hyps))
    (tmp_path / "l.txt").write_text("".join(f"{h}\n" for _, h in hyps))
    outs = []
    for data, extra in (("n.txt", ["--nbest"]), ("l.txt", [])):
        assert cli.main(["score", "--model", str(tmp_path / "m"), "--data", str(tmp_path / data), *extra]) == 0
        outs.append([float(x) for x in capsys.readouterr().out.splitlines()[:-1]])
    np.testing.assert_allclose(outs[0], outs[1], atol=2e-6)
    assert outs[0][0] == outs[0][3] and len(outs[0]) == len(hyps)


def test_memory_follows_the_ids_however_unequal_the_rows():
    """Many one-word hypotheses beside a few long ones: nothing the size of rows × the longest."""
    import tracemalloc
    p = random_model(classes=4, direct=40)
    rng = np.random.default_rng(7)
    rows = [np.r_[rng.integers(1, 13, 1), EOS_ID] for _ in range(20_000)]
    rows += [np.r_[rng.integers(1, 13, 1000), EOS_ID] for _ in range(prefix.TAIL + 1)]
    tracemalloc.start()
    try:
        got = prefix.trie_losses(p, rows, EOS_ID)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 80 * 2**20 < 8 * len(rows) * 1001          # a padded (rows, longest) int64 array: 160 MB
    np.testing.assert_allclose(got[-1], _alone(p, rows[-1:])[0], rtol=1e-11)


@pytest.mark.parametrize("order", [2, 4])
def test_direct_connections_of_other_orders_with_and_without_carry(order):
    from elman.model import Params
    p = Params.init(13, 5, 7, seed=3, dtype="float64", classes=4, counts=np.arange(39, 26, -1), direct=60,
                    direct_order=order)
    rng = np.random.default_rng(8)
    for a in p.as_dict().values():
        if a.dtype.kind == "f":
            a += rng.normal(scale=0.5, size=a.shape)
    rows, utt = _nbest(seed=9)
    R = max(utt) + 1
    h0, history = rng.uniform(0, 1, (R, p.Dh)), rng.integers(-1, 13, (R, max(order - 2, 0)))
    for args in ((None, None, None), (utt, h0, history)):
        got = prefix.trie_losses(p, rows, EOS_ID, *args)
        for i, g in enumerate(got):
            h, before = (None, []) if args[0] is None else (h0[utt[i]], list(history[utt[i]]))
            np.testing.assert_allclose(g, direct_losses(p, rows[i], h=h, before=before)[0], rtol=1e-10)
