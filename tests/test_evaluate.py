"""Perplexity, per-line scores and sampling against direct token-by-token computations."""
import json
import math

import numpy as np
import pytest

from elman import cli
from elman.inference.evaluate import detokenize, load, perplexity, sample, stream_losses
from elman.inference.engine import batched
from elman.model import Params, output_probs, rnn_step
from elman.training.train import train
from helpers import PLAIN

V, EOS = 13, 0


def _model(dtype="float64", classes=0):
    counts = np.arange(3 * V, 2 * V, -1)  # descending, as a vocabulary's are
    p = Params.init(V, 5, 7, seed=3, dtype=dtype, classes=classes, counts=counts)
    rng = np.random.default_rng(4)
    for a in p.as_dict().values():  # a less uniform model than the initial one
        if a.dtype.kind == "f":     # (class_bounds are integers)
            a += rng.normal(scale=0.5, size=a.shape).astype(a.dtype)
    return p


def _direct_losses(p, ids, h=None, prev=EOS):
    """-ln P(token) one token at a time, with model.rnn_step and output_probs."""
    h = np.zeros((1, p.Dh)) if h is None else h
    out = []
    for tok in ids:
        h = rnn_step(p, np.array([prev]), h)
        out.append(-math.log(output_probs(p, h)[0, tok]))
        prev = tok
    return np.array(out)


@pytest.mark.parametrize("classes", [0, 4])
def test_stream_losses_equal_the_token_by_token_computation(classes):
    p = _model(classes=classes)
    ids = np.random.default_rng(0).integers(0, V, 50)
    want = _direct_losses(p, ids)
    for window in (1, 7, 50, 256):  # windows carry the state: the same numbers
        np.testing.assert_allclose(stream_losses(p, ids, EOS, window=window), want, rtol=1e-12)


def test_perplexity_and_bits():
    p = _model()
    ids = np.random.default_rng(1).integers(0, V, 40)
    nats = _direct_losses(p, ids).mean()
    r = perplexity(p, ids, EOS)
    assert r["tokens"] == 40
    assert r["perplexity"] == pytest.approx(math.exp(nats), rel=1e-12)
    assert r["bits_per_token"] == pytest.approx(nats / math.log(2), rel=1e-12)


def test_float32_perplexity_is_close_to_float64():
    p = _model()
    ids = np.random.default_rng(2).integers(0, V, 300)
    assert perplexity(p.astype("float32"), ids, EOS)["perplexity"] == pytest.approx(
        perplexity(p, ids, EOS)["perplexity"], rel=1e-5)


@pytest.mark.parametrize("classes", [0, 4])
def test_line_scores_equal_the_per_line_computation(classes):
    p = _model(classes=classes)
    rng = np.random.default_rng(5)
    lines = [np.r_[rng.integers(1, V, n), EOS] for n in (3, 0, 7, 1, 3, 12, 5, 2)]
    want = [_direct_losses(p, line) for line in lines]
    for positions, window in ((1, 1), (3, 2), (20, 5), (2048, 256)):  # batches, padding, windows: the same numbers
        for got, w in zip(batched(p, lines, EOS, positions=positions, window=window), want):
            np.testing.assert_allclose(got, w, rtol=1e-12)


def test_a_line_score_does_not_depend_on_its_neighbours():
    p = _model()
    line = np.array([4, 5, 6, EOS])
    alone = batched(p, [line], EOS)[0]
    with_others = batched(p, [np.array([7] * 20 + [EOS]), line, np.array([EOS])], EOS)[1]
    np.testing.assert_allclose(with_others, alone, rtol=1e-12)


def test_sampling_is_deterministic_for_a_seed():
    p = _model()
    a = sample(p, [3, 4], EOS, 30, seed=7)
    assert a == sample(p, [3, 4], EOS, 30, seed=7)
    assert a != sample(p, [3, 4], EOS, 30, seed=8)
    assert all(0 <= x < V for x in a)


def test_sampling_follows_the_model_distribution():
    p = _model()
    h = rnn_step(p, np.array([EOS]), np.zeros((1, p.Dh)))
    yhat = output_probs(p, h)[0]
    n = 3000
    counts = np.bincount([sample(p, [], EOS, 1, seed=s)[0] for s in range(n)], minlength=V)
    # Each frequency within 4.5 standard deviations of its probability.
    sd = np.sqrt(yhat * (1 - yhat) / n)
    assert np.all(np.abs(counts / n - yhat) < 4.5 * sd + 1e-3)


def test_low_temperature_is_greedy():
    p = _model()
    greedy, h, x = [], np.zeros((1, p.Dh)), EOS
    for _ in range(15):
        h = rnn_step(p, np.array([x]), h)
        x = int(np.argmax(output_probs(p, h)[0]))
        greedy.append(x)
    assert sample(p, [], EOS, 15, temperature=1e-4, seed=0) == greedy


def test_detokenize():
    assert detokenize(["in", "the", "<eos>", "a", "b"]) == "in the\na b"
    assert detokenize(["a", "b", " ", "c", "<eos>"], level="char") == "ab c\n"


# -- the commands on a small trained model ----------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalmodel")
    words = "the cat sat on the mat . a dog ran to the cat . the mat was red .".split()
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, rng.integers(3, 9))) for _ in range(300)]
    (d / "train.txt").write_text("\n".join(lines[:250]) + "\n")
    (d / "valid.txt").write_text("\n".join(lines[250:]) + "\n")
    train(d / "m", dict(train=str(d / "train.txt"), valid=str(d / "valid.txt"), hidden=8, embed=8,
                        streams=4, steps=5, epochs=2, **PLAIN), quiet=True)
    return d


def test_eval_json(trained, capsys):
    assert cli.main(["eval", "--model", str(trained / "m"), "--data", str(trained / "valid.txt"), "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    r = json.loads(out[0])
    assert set(r) == {"perplexity", "tokens", "bits_per_token"}
    p, vocab, cfg = load(trained / "m")
    ids = vocab.encode(open(trained / "valid.txt").read().replace("\n", " <eos> ").split())
    assert r["tokens"] == len(ids)
    assert r["perplexity"] == pytest.approx(math.exp(stream_losses(p, ids, vocab.eos_id).mean()), rel=1e-9)
    assert r["bits_per_token"] == pytest.approx(math.log2(r["perplexity"]), rel=1e-9)


def test_eval_of_the_best_model_repeats_the_best_validation_perplexity(trained):
    records = [json.loads(x) for x in open(trained / "m" / "metrics.jsonl")]
    best = min(r["valid_ppl"] for r in records if r.get("valid_ppl"))
    p, vocab, cfg = load(trained / "m")
    ids = vocab.encode(open(trained / "valid.txt").read().replace("\n", " <eos> ").split())
    assert perplexity(p, ids, vocab.eos_id)["perplexity"] == pytest.approx(best, rel=1e-12)


def test_score_one_line_per_input_line_then_the_total(trained, capsys, tmp_path):
    f = tmp_path / "nbest.txt"
    f.write_text("the cat sat\n\nzebra the\n")
    assert cli.main(["score", "--model", str(trained / "m"), "--data", str(f)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[-1].startswith("total ")
    scores = [float(x) for x in out[:3]]
    assert all(s < 0 for s in scores)
    assert float(out[-1].split()[1]) == pytest.approx(sum(scores), abs=1e-5)
    p, vocab, cfg = load(trained / "m")
    assert scores[1] == pytest.approx(math.log10(output_probs(p, rnn_step(p, [vocab.eos_id], np.zeros((1, p.Dh))))
                                                 [0, vocab.eos_id]), abs=2e-6)  # a blank line: just <eos>
    want = _direct_losses(p, vocab.encode("zebra the <eos>".split()), prev=vocab.eos_id).sum() / -math.log(10)
    assert scores[2] == pytest.approx(want, abs=2e-6)


def test_generate_is_deterministic_and_starts_with_the_prime(trained, capsys):
    args = ["generate", "--model", str(trained / "m"), "--words", "25", "--prime", "the cat", "--seed", "3"]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert cli.main(args) == 0
    assert capsys.readouterr().out == first
    assert first.startswith("the cat")
    assert cli.main(args[:-1] + ["4"]) == 0
    assert capsys.readouterr().out != first


def test_plot_writes_a_png(trained, capsys, tmp_path):
    png = tmp_path / "curve.png"
    assert cli.main(["plot", str(trained / "m"), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install_it(trained, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert cli.main(["plot", str(trained / "m")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'elman[plot]'" in err and len(err.splitlines()) == 1
