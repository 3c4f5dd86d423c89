"""Interpolation with an n-gram model (KenLM, an ARPA file the tests write)
or a per-token file, λ fitted by EM, and the input they refuse."""
import json
import math

import numpy as np
import pytest

import helpers
from elman import cli
from elman.inference.evaluate import load
from elman.inference.interpolate import fit_lambda, mix
from elman.inference.ngram import NgramModel
from elman.inference.readers import Line

WORDS = "a b c d e".split()


def _sentences(n, seed):
    rng = np.random.default_rng(seed)
    return [list(rng.choice(WORDS[:3] if k % 2 else WORDS, rng.integers(1, 8))) for k in range(n)]


@pytest.fixture
def setup(tmp_path):
    """A model (helpers.save: words a..e), an ARPA trigram model of 200
    sentences, and a text with a word neither model knows."""
    helpers.save(tmp_path / "m")
    arpa = helpers.ngram_model(_sentences(200, 0), order=3)
    helpers.write_arpa(tmp_path / "lm.arpa", arpa)
    text = [" ".join(s) for s in _sentences(12, 1)] + ["a zebra b"]
    (tmp_path / "t.txt").write_text("\n".join(text) + "\n")
    (tmp_path / "held.txt").write_text("\n".join(" ".join(s) for s in _sentences(40, 2)) + "\n")
    return tmp_path, arpa, text


def _ngram_ln(arpa, words):
    """ln P_ngram of each word then </s>, from <s>, by the helpers' own backoff."""
    context, out = ["<s>"], []
    for w in words + ["</s>"]:
        out.append(helpers.ngram_prob(arpa, context, w) * math.log(10))
        context.append(w)
    return np.array(out)


def _rnn_ln(model_dir, lines):
    """ln P_rnn of each token, the lines as one stream (eval's convention)."""
    p, vocab, _ = load(model_dir)
    ids = vocab.encode([t for line in lines for t in line.split() + ["<eos>"]])
    return -helpers.direct_losses(p, ids, prev=vocab.eos_id)[0]


def _run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# -- the arithmetic --------------------------------------------------------------------

def test_mix_is_the_linear_interpolation_of_probabilities():
    a, b = np.log([0.2, 0.01, 1e-30]), np.log([0.1, 0.5, 0.3])
    np.testing.assert_allclose(mix(a, b, 0.3), np.log(0.3 * np.exp(a) + 0.7 * np.exp(b)), rtol=1e-12)
    assert np.array_equal(mix(a, b, 1.0), a) and np.array_equal(mix(a, b, 0.0), b)


def test_em_finds_the_lambda_of_the_largest_likelihood():
    rng = np.random.default_rng(0)
    a, b = np.log(rng.uniform(0.01, 1, 500)), np.log(rng.uniform(0.01, 1, 500))
    b[:200] -= 3                                      # the other model is worse on 200 tokens
    lam, steps = fit_lambda(a, b)
    grid = np.linspace(0.001, 0.999, 9981)
    best = grid[np.argmax([mix(a, b, g).sum() for g in grid])]
    assert lam == pytest.approx(best, abs=2e-4) and 0 < steps < 1000
    assert mix(a, b, lam).sum() >= max(mix(a, b, lam + 0.01).sum(), mix(a, b, lam - 0.01).sum())


# -- the n-gram model through KenLM ----------------------------------------------------

def test_the_arpa_writer_and_kenlm_agree_and_normalise(setup):
    tmp, arpa, text = setup
    lm = NgramModel(tmp / "lm.arpa")
    assert lm.order == 3
    for line in text:                      # KenLM's numbers are float32: 1e-6 relative
        got = lm.line(Line(1, line.split(), None))
        np.testing.assert_allclose(got, _ngram_ln(arpa, line.split()), rtol=1e-6, atol=1e-6)
    import kenlm
    for context in ([], ["a"], ["b", "c"], ["zebra", "a"]):
        state = kenlm.State()
        lm.model.BeginSentenceWrite(state)
        for w in context:
            nxt = kenlm.State()
            lm.model.BaseScore(state, w, nxt)
            state = nxt
        total = sum(10 ** lm.model.BaseScore(state, w, kenlm.State()) for w in WORDS + ["</s>", "<unk>"])
        assert total == pytest.approx(1.0, abs=1e-5)


def test_eval_interpolates_token_by_token(setup, capsys):
    tmp, arpa, text = setup
    rc, out, _ = _run(capsys, "eval", "--model", tmp / "m", "--data", tmp / "t.txt", "--ngram", tmp / "lm.arpa",
                      "--lambda", "0.6", "--json")
    assert rc == 0
    r = json.loads(out)
    ln_rnn = _rnn_ln(tmp / "m", text)
    ln_other = np.concatenate([_ngram_ln(arpa, line.split()) for line in text])   # each line from <s>
    both = np.log(0.6 * np.exp(ln_rnn) + 0.4 * np.exp(ln_other))
    assert r["tokens"] == len(ln_rnn) == len(ln_other)
    assert r["rnn_perplexity"] == pytest.approx(math.exp(-ln_rnn.mean()), rel=1e-5)
    assert r["other_perplexity"] == pytest.approx(math.exp(-ln_other.mean()), rel=1e-5)
    assert r["perplexity"] == pytest.approx(math.exp(-both.mean()), rel=1e-5)
    assert r["lambda"] == 0.6


def test_lm_prob_file_equals_the_ngram_model_and_per_token_files_feed_back(setup, capsys):
    tmp, arpa, text = setup
    probs = np.exp(np.concatenate([_ngram_ln(arpa, line.split()) for line in text]))
    (tmp / "ngram.prob").write_text("".join(f"{v:.12g}\n" for v in probs))          # RNNLM's -lm-prob format
    base = ["score", "--model", tmp / "m", "--data", tmp / "t.txt", "--json", "--lambda", "0.3"]
    _, by_ngram, _ = _run(capsys, *base, "--ngram", tmp / "lm.arpa")
    _, by_file, _ = _run(capsys, *base, "--lm-prob", tmp / "ngram.prob")
    for x, y in zip(by_ngram.splitlines(), by_file.splitlines()):
        x, y = json.loads(x), json.loads(y)
        assert x.get("log10_prob") == pytest.approx(y.get("log10_prob"), abs=1e-5)
    # elman's own --per-token file as the other model: the mixture is elman itself, at any lambda
    assert _run(capsys, "score", "--model", tmp / "m", "--data", tmp / "t.txt", "--per-token", tmp / "rnn.tsv")[0] == 0
    plain = json.loads(_run(capsys, *base[:-2])[1].splitlines()[-1])["perplexity"]
    _, out, _ = _run(capsys, *base, "--lm-prob", tmp / "rnn.tsv")
    r = json.loads(out.splitlines()[-1])
    assert r["perplexity"] == pytest.approx(plain, rel=1e-6) == pytest.approx(r["other_perplexity"], rel=1e-6)


def test_lambda_auto_is_fitted_on_the_heldout_text_and_said(setup, capsys):
    tmp, arpa, _ = setup
    rc, out, err = _run(capsys, "eval", "--model", tmp / "m", "--data", tmp / "t.txt", "--ngram", tmp / "lm.arpa",
                        "--lambda", "auto", "--heldout", tmp / "held.txt", "--json")
    assert rc == 0 and len(err.strip().splitlines()) == 1 and "held.txt" in err
    lam = json.loads(out)["lambda"]
    held = [" ".join(s) for s in _sentences(40, 2)]
    a = _rnn_ln(tmp / "m", held)
    b = np.concatenate([_ngram_ln(arpa, line.split()) for line in held])
    assert lam == pytest.approx(fit_lambda(a, b)[0], abs=1e-4)
    assert f"{lam:.4f}" in err


# -- bad input: one line, non-zero, nothing written ------------------------------------

@pytest.mark.parametrize("case, needle", [
    (["--lambda", "1.5", "--ngram", "LM"], "--lambda"),
    (["--lambda", "-0.1", "--ngram", "LM"], "--lambda"),
    (["--lambda", "half", "--ngram", "LM"], "--lambda"),
    (["--lambda", "0.5"], "--ngram"),
    (["--ngram", "LM"], "--lambda"),
    (["--ngram", "LM", "--lambda", "auto"], "--heldout"),
    (["--ngram", "BAD", "--lambda", "0.5"], "bad.arpa"),
    (["--lm-prob", "SHORT", "--lambda", "0.5"], "short.prob"),
    (["--lm-prob", "NAN", "--lambda", "0.5"], "nan.prob"),
    (["--lm-prob", "ABOVE", "--lambda", "0.5"], "outside [0, 1]"),
    (["--lm-prob", "OTHER", "--lambda", "0.5"], "for the token"),
    (["--nbest"], "only an utterance id"),
])
def test_bad_input_is_one_line_and_nothing_is_written(setup, capsys, case, needle):
    tmp, _, text = setup
    (tmp / "bad.arpa").write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\t<unk>\nnot-a-number a\n\\end\\\n")
    n = sum(len(x.split()) + 1 for x in text)
    (tmp / "short.prob").write_text("0.1\n" * (n - 1))
    (tmp / "nan.prob").write_text("0.1\n" * (n - 1) + "x\n")
    (tmp / "above.prob").write_text("0.1\n" * (n - 1) + "1.5\n")
    other = [line.split() + ["<eos>"] for line in text]
    other[5][0] = "zebra"                              # a file written for another text, found at its line 6
    (tmp / "other.prob").write_text("".join(f"{w}\t-1\n" for line in other for w in line))
    files = {"LM": tmp / "lm.arpa", "BAD": tmp / "bad.arpa", "SHORT": tmp / "short.prob", "NAN": tmp / "nan.prob",
             "ABOVE": tmp / "above.prob", "OTHER": tmp / "other.prob"}
    data = tmp / "t.txt"
    if "--nbest" in case:
        data = tmp / "nbest.txt"
        data.write_text("u1 a b\nu1 c\nu2\nu3 a\n")
    argv = ["score", "--model", tmp / "m", "--data", data, "--per-token", tmp / "pt.tsv"]
    try:
        rc = cli.main([str(a) for a in argv + [files.get(x, x) for x in case]])
    except SystemExit as exc:                      # argparse's own checks
        rc = exc.code
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert rc != 0 and len(lines) == 1 and needle in lines[0] and "Traceback" not in out.err, out.err
    assert out.out == "" and not (tmp / "pt.tsv").exists()


def test_nbest_ids_out_of_order(setup, capsys):
    tmp, _, _ = setup
    (tmp / "n.txt").write_text("u1 a b\nu2 c\nu1 d\n")
    rc, out, err = _run(capsys, "score", "--model", tmp / "m", "--data", tmp / "n.txt", "--nbest")
    assert rc == 2 and out == "" and len(err.splitlines()) == 1
    assert "line 3" in err and "'u1'" in err and "consecutive" in err


def test_ngram_refuses_a_char_level_model(setup, capsys):
    tmp, _, _ = setup
    cfg = json.loads((tmp / "m" / "config.json").read_text())
    cfg["level"] = "char"
    (tmp / "m" / "config.json").write_text(json.dumps(cfg))
    rc, out, err = _run(capsys, "eval", "--model", tmp / "m", "--data", tmp / "t.txt", "--ngram", tmp / "lm.arpa",
                        "--lambda", "0.5")
    assert rc == 2 and out == "" and "--lm-prob" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("command", ["eval", "score"])
def test_a_bad_model_is_told_before_a_bad_ngram_file_and_each_alone(setup, capsys, command):
    """The model is read on another thread while the n-gram file is parsed:
    the errors are still one line each, the model's first."""
    tmp, _, _ = setup
    (tmp / "bad.arpa").write_text("not an ARPA file\n")
    (tmp / "m2").mkdir()
    run = lambda model, lm: _run(capsys, command, "--model", model, "--data", tmp / "t.txt",  # noqa: E731
                                 "--ngram", lm, "--lambda", "0.5")
    for model, lm, said in ((tmp / "m2", tmp / "bad.arpa", "config.json"), (tmp / "m", tmp / "bad.arpa", "bad.arpa"),
                            (tmp / "m2", tmp / "lm.arpa", "config.json"), (tmp / "m", tmp / "none.arpa", "no such file")):
        rc, out, err = run(model, lm)
        assert rc == 2 and out == "" and said in err and len(err.splitlines()) == 1, err
    rc, out, _ = run(tmp / "m", tmp / "lm.arpa")
    assert rc == 0 and "perplexity" in out
