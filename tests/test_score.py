"""elman score: streamed lines, n-best lists, carried states, long lines in
windows, per-token output, standard input: each against a token-by-token
computation (``helpers.direct_losses``)."""
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import helpers
from helpers import EOS_ID, direct_losses, random_model
from elman import cli
from elman.model.perplexity import stream_losses
from elman.data import text_lines
from elman.data.stream import iter_lines
from elman.inference import engine
from elman.inference.evaluate import load
from elman.inference.readers import Line

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _lines(spec):
    """Lines from (uid, ids) pairs (uid None: plain lines), ids without <eos>."""
    return [Line(i + 1, [], np.r_[np.asarray(ids, np.int64), EOS_ID], uid) for i, (uid, ids) in enumerate(spec)]


# -- reading text as it comes ----------------------------------------------------------

@pytest.mark.parametrize("data", [b"", b"\n", b"a", b"a b\n", b"a\r\nb\rc\n\n d ", b"\xef\xbb\xbfx y\r",
                                  "é ü\r\nß\n".encode(), b"a\r", b"a\r\r\n", b"\n\n\n"])
def test_streamed_lines_are_the_lines_of_the_whole_text(tmp_path, data):
    f = tmp_path / "t.txt"
    f.write_bytes(data)
    text = data.decode("utf-8").removeprefix("\ufeff")
    want = text_lines(text)
    if want and want[-1] == "":
        want.pop()                      # the newline ending the last line starts none
    for chunk in (1, 2, 3, 1 << 20):    # a \r\n or a character cut between chunks
        assert list(iter_lines(f, chunk=chunk)) == want


def test_a_decoding_error_names_the_byte_offset_and_line(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes("ab\ncd\u00e9\xe9f\n".encode("utf-8")[:-4] + b"\xe9f\n")
    for chunk in (1, 3, 100):
        with pytest.raises(Exception, match=r"byte 0xe9 at offset 7 \(line 2\)"):
            list(iter_lines(f, chunk=chunk))


# -- the engines against the token-by-token computation ----------------------------------

KINDS = {"full": {}, "classes": {"classes": 4}, "direct": {"direct": 40}, "classes+direct": {"classes": 4, "direct": 40}}


@pytest.mark.parametrize("kind", KINDS)
def test_the_stream_equals_eval_and_hands_back_each_line(kind):
    p = random_model(**KINDS[kind])
    rng = np.random.default_rng(0)
    lines = _lines([(None, rng.integers(1, 13, n)) for n in (3, 0, 40, 1, 7, 300, 2)])
    want = stream_losses(p, np.concatenate([x.ids for x in lines]), EOS_ID)
    for window in (1, 7, 256):
        got = list(engine.stream(p, iter(lines), EOS_ID, window=window))
        assert [x for x, _ in got] == lines
        np.testing.assert_allclose(np.concatenate([g for _, g in got]), want, rtol=1e-12)


@pytest.mark.parametrize("kind", ["full", "direct"])
def test_a_long_line_in_windows_equals_one_pass(kind):
    p = random_model(**KINDS[kind])
    ids = np.r_[np.random.default_rng(1).integers(1, 13, 3000), EOS_ID]
    one_pass = stream_losses(p, ids, EOS_ID, window=len(ids))
    for window in (256, 999):
        got = engine.batched(p, [np.r_[3, EOS_ID], ids, np.r_[4, 5, EOS_ID]], EOS_ID, window=window)[1]
        np.testing.assert_allclose(got, one_pass, rtol=1e-10)
    np.testing.assert_allclose(one_pass[:50], direct_losses(p, ids[:50])[0], rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_nbest_hypotheses_start_from_their_utterance_state(kind):
    p = random_model(**KINDS[kind])
    spec = [("u1", [1, 2]), ("u1", [3]), ("u1", [1, 2]), ("u2", [4, 5, 6]), ("u2", [7]), ("u3", [8]),
            ("u4", [9, 10]), ("u4", [9, 10])]
    lines = _lines(spec)
    # RNNLM's -nbest: S(u+1) is the state after u's first hypothesis; S(1) = 0.
    S, starts, prev, read = np.zeros((1, p.Dh)), {}, None, []
    for line in lines:                                  # read: the words before (direct connections)
        if line.uid != prev:
            starts[line.uid], prev = (S, list(read)), line.uid
            S = direct_losses(p, line.ids, h=S, before=read)[1]
            read += [EOS_ID] + list(line.ids[:-1])
    saved = engine.GROUP
    for group_tokens in (1, 1 << 16):           # utterances scored in one group or one by one
        engine.GROUP = group_tokens
        try:
            got = list(engine.line_losses(p, iter(lines), EOS_ID, carry=True, alternatives=True))
            indep = list(engine.line_losses(p, iter(lines), EOS_ID, carry=False, alternatives=True))
        finally:
            engine.GROUP = saved
        for (line, g), (_, i) in zip(got, indep):
            S, read = starts[line.uid]
            np.testing.assert_allclose(g, direct_losses(p, line.ids, h=S, before=read)[0], rtol=1e-10)
            np.testing.assert_allclose(i, direct_losses(p, line.ids)[0], rtol=1e-12)
        assert np.array_equal(got[0][1], got[2][1]) and np.array_equal(got[6][1], got[7][1])
        assert not np.allclose(got[3][1], indep[3][1])         # u2 did start from another state


def test_carried_nbest_first_hypotheses_are_the_stream_of_the_one_best():
    p = random_model()
    rng = np.random.default_rng(2)
    spec = [(f"u{u}", rng.integers(1, 13, rng.integers(1, 9))) for u in range(30) for _ in range(3)]
    lines = _lines(spec)
    got = list(engine.line_losses(p, iter(lines), EOS_ID, carry=True, alternatives=True))
    firsts = np.concatenate([g for k, (_, g) in enumerate(got) if k % 3 == 0])
    one_best = np.concatenate([x.ids for k, x in enumerate(lines) if k % 3 == 0])
    np.testing.assert_allclose(firsts, stream_losses(p, one_best, EOS_ID), rtol=1e-9)


# -- the command ----------------------------------------------------------------------

@pytest.fixture
def model(tmp_path):
    helpers.save(tmp_path / "m")
    return tmp_path / "m"


def _score(capsys, *argv):
    assert cli.main(["score", *map(str, argv)]) == 0
    return capsys.readouterr().out.splitlines()


def _want(model, text, h=None):
    p, vocab, _ = load(model)
    return -direct_losses(p, vocab.encode(text.split() + ["<eos>"]), h=h, prev=vocab.eos_id)[0].sum() / math.log(10)


def test_score_nbest_json_and_per_token(model, tmp_path, capsys):
    f, pt = tmp_path / "nbest.txt", tmp_path / "tokens.tsv"
    f.write_text("utt1 a b c\nutt1 a b\nutt1 a b c\nutt2 e zebra\n")
    out = _score(capsys, "--model", model, "--data", f, "--nbest", "--json", "--per-token", pt)
    records = [json.loads(x) for x in out]
    assert [r.get("id") for r in records[:4]] == ["utt1"] * 3 + ["utt2"]
    assert records[0]["log10_prob"] == records[2]["log10_prob"]           # identical hypotheses
    for r, text in zip(records, ["a b c", "a b", "a b c", "e zebra"]):     # the id is not scored
        assert r["log10_prob"] == pytest.approx(_want(model, text), abs=1e-5)
        assert r["tokens"] == len(text.split()) + 1
    tokens = [x.split("\t") for x in pt.read_text().splitlines()]
    assert [t for t, _ in tokens] == "a b c <eos> a b <eos> a b c <eos> e zebra <eos>".split()
    assert sum(float(v) for _, v in tokens) == pytest.approx(records[-1]["log10_prob"], abs=1e-5)
    assert records[-1]["tokens"] == 14


def test_score_carry_is_the_stream_that_eval_reads(model, tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_text("a b c\nd e\nb\n")
    scores = [float(x) for x in _score(capsys, "--model", model, "--data", f, "--carry")[:3]]
    assert cli.main(["eval", "--model", str(model), "--data", str(f), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert -sum(scores) * math.log(10) / ev["tokens"] == pytest.approx(math.log(ev["perplexity"]), abs=1e-5)
    independent = [float(x) for x in _score(capsys, "--model", model, "--data", f, "--independent")[:3]]
    assert independent[0] == scores[0] and independent[1] != pytest.approx(scores[1], abs=1e-3)
    assert independent[1] == pytest.approx(_want(model, "d e"), abs=1e-5)


def test_score_reads_standard_input(model, tmp_path, capsys, monkeypatch):
    text = "a b\n\nc d e\n"
    (tmp_path / "t.txt").write_text(text)
    from_file = _score(capsys, "--model", model, "--data", tmp_path / "t.txt")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert _score(capsys, "--model", model, "--data", "-") == from_file
    assert len(from_file) == 4                       # the blank line keeps its place


def test_eval_per_token_implies_the_perplexity_eval_prints(model, tmp_path, capsys):
    f, pt = tmp_path / "t.txt", tmp_path / "tokens.tsv"
    f.write_text("a b c\n\nd e a\nzebra\n")
    assert cli.main(["eval", "--model", str(model), "--data", str(f), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert cli.main(["eval", "--model", str(model), "--data", str(f), "--json", "--per-token", str(pt)]) == 0
    streamed = json.loads(capsys.readouterr().out)
    assert streamed["perplexity"] == pytest.approx(plain["perplexity"], rel=1e-12)
    values = [float(x.split("\t")[1]) for x in pt.read_text().splitlines()]
    assert len(values) == plain["tokens"] == 10                         # blank lines skipped, as eval does
    assert 10 ** (-sum(values) / len(values)) == pytest.approx(plain["perplexity"], rel=1e-5)


def test_identical_lines_get_identical_scores_in_any_batch(model, tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(3)
    words = np.array("a b c d e".split())
    lines = [" ".join(rng.choice(words, rng.integers(1, 30))) for _ in range(300)]
    lines[17] = lines[250] = lines[299] = "a b c d e a b"
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(engine, "GROUP", 500)          # the three copies land in different groups and batches
    out = _score(capsys, "--model", model, "--data", tmp_path / "t.txt")
    assert out[17] == out[250] == out[299]
    assert float(out[17]) == pytest.approx(_want(model, lines[17]), abs=1e-5)


def test_a_line_of_200000_tokens_in_bounded_memory(tmp_path):
    """100 short lines and one of 200,000 tokens: padded into one
    (101 x 200,000) batch they would ask for hundreds of GiB."""
    rng = np.random.default_rng(4)
    words = np.array("a b c d e".split())
    long = " ".join(rng.choice(words, 200_000))
    short = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(100)]
    f = tmp_path / "t.txt"
    f.write_text("\n".join(short[:50] + [long] + short[50:]) + "\n")
    helpers.save(tmp_path / "m")
    # VmHWM, the peak RSS of this process's own memory: ru_maxrss would also count the
    # pytest process it was forked from (Linux carries the high-water mark across exec).
    code = ("import re, sys; from elman import cli; rc = cli.main(sys.argv[1:]); "
            "print('VmHWM', re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read()).group(1)); "
            "sys.exit(rc)")
    def peak_kib(data):
        run = subprocess.run([sys.executable, "-c", code, "score", "--model", str(tmp_path / "m"), "--data", str(data)],
                             capture_output=True, text=True, env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, run.stderr
        return run.stdout.splitlines()

    # The same command on the short lines alone is the baseline: what the interpreter, NumPy and
    # the compiler bring weighs more than what a bounded score needs, and varies between machines.
    (tmp_path / "short.txt").write_text("\n".join(short) + "\n")
    base = int(peak_kib(tmp_path / "short.txt")[-1].split()[1])
    out = peak_kib(f)
    assert len(out) == 103 and out[-2].startswith("total ")
    assert int(out[-1].split()[1]) - base < 48 * 1024      # KiB: the logits of one step, not of the line
    p, vocab, _ = load(tmp_path / "m")
    ids = vocab.encode(long.split() + ["<eos>"])
    assert float(out[50]) == pytest.approx(-stream_losses(p, ids, vocab.eos_id).sum() / math.log(10), rel=1e-6)


def test_score_dynamic_learns_line_by_line_and_refuses_nbest_and_carry(model, tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_text("a b c\nd e\na b c\n")
    static = [float(x) for x in _score(capsys, "--model", model, "--data", f)[:3]]
    learnt = [float(x) for x in _score(capsys, "--model", model, "--data", f, "--dynamic", "0.5")[:3]]
    assert learnt[0] == pytest.approx(static[0], abs=1e-6)      # nothing learnt before the first line
    assert learnt[2] > static[2]                                 # the repeated line, after a step on it
    for extra in (["--nbest"], ["--carry"]):
        rc = cli.main(["score", "--model", str(model), "--data", str(f), "--dynamic", *extra])
        err = capsys.readouterr()
        assert rc == 2 and err.out == "" and len(err.err.strip().splitlines()) == 1 and extra[0] in err.err


def test_format_nbest_is_nbest_and_an_unknown_format_is_one_line(model, tmp_path, capsys):
    f = tmp_path / "nb.txt"
    f.write_text("u1 a b\nu1 b a c\nu2 c\n")
    by_flag = _score(capsys, "--model", model, "--data", f, "--nbest", "--carry")
    assert _score(capsys, "--model", model, "--data", f, "--format", "nbest", "--carry") == by_flag
    assert _score(capsys, "--model", model, "--data", f, "--format", "lines") != by_flag
    assert cli.main(["score", "--model", str(model), "--data", str(f), "--format", "slf"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["elman: error: --format slf: not an input format elman reads (lines, nbest)"]
