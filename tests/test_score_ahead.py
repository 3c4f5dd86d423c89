"""``elman score`` computing losses on a worker thread ahead of the main
thread (``inference.ahead``): the same bytes as one thread, the items in
order, an error after the items before it, bounded, and stopped by the caller."""
import threading
import time

import numpy as np
import pytest

import helpers
from elman import cli
from elman.fast import threads
from elman.inference import engine
from elman.inference.ahead import ahead

WORDS = "a b c d e".split()


def _text(n, seed):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS + ["zebra"], rng.integers(1, 12))) for _ in range(n)]


@pytest.fixture
def files(tmp_path):
    helpers.save(tmp_path / "m")
    arpa = helpers.ngram_model([s.split() for s in _text(200, 0)], order=3)
    helpers.write_arpa(tmp_path / "lm.arpa", arpa)
    (tmp_path / "t.txt").write_text("\n".join(_text(300, 1)) + "\n")
    return tmp_path


@pytest.mark.parametrize("extra", [[], ["--carry"], ["--ngram", "lm.arpa", "--lambda", "0.4"],
                                   ["--carry", "--ngram", "lm.arpa", "--lambda", "0.4", "--json"],
                                   ["--ngram", "lm.arpa", "--lambda", "auto", "--heldout", "t.txt"]])
def test_score_ahead_writes_the_bytes_of_one_thread(files, capsys, monkeypatch, extra):
    """Scores and --per-token file byte for byte as the serial path, with
    groups of 40 tokens so that many groups pass between the threads."""
    if "--ngram" in extra:
        pytest.importorskip("kenlm")
    monkeypatch.setattr(engine, "GROUP", 40)
    outs = []
    for n in (1, 2):
        monkeypatch.setattr(threads, "THREADS", n)
        pt = files / f"tokens{n}.tsv"
        argv = ["score", "--model", files / "m", "--data", files / "t.txt", "--per-token", pt]
        argv += [files / a if a.endswith((".arpa", ".txt")) else a for a in extra]
        assert cli.main([str(a) for a in argv]) == 0
        captured = capsys.readouterr()
        outs.append((captured.out, pt.read_bytes()))
    assert outs[0] == outs[1]
    assert len(outs[0][0].splitlines()) == 301 and outs[0][1].count(b"\n") > 300


def _items(n, fail_at=None, log=None):
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"bad line {i}")
            if log is not None:
                log.append(i)
            yield i, np.zeros(3)
    finally:
        if log is not None:
            log.append(("closed", threading.current_thread().name))


def test_ahead_keeps_the_order_and_hands_an_error_after_the_items_before_it(monkeypatch):
    monkeypatch.setattr(threads, "THREADS", 2)
    assert [i for i, _ in ahead(_items(1000), lambda r: len(r[1]), 30)] == list(range(1000))
    got = []
    with pytest.raises(ValueError, match="bad line 57"):
        for i, _ in ahead(_items(100, fail_at=57), lambda r: len(r[1]), 30):
            got.append(i)
    assert got == list(range(57))


def test_ahead_is_bounded_and_the_caller_stops_it(monkeypatch):
    monkeypatch.setattr(threads, "THREADS", 2)
    log = []
    rows = ahead(_items(10_000, log=log), lambda r: len(r[1]), 30)
    assert next(rows)[0] == 0
    time.sleep(0.2)                        # the worker fills the box and waits
    made = [x for x in log if isinstance(x, int)]
    assert 10 <= len(made) <= 2 * 10 + 1   # the caller's first batch, then 30 tokens of 3 a line waiting, one made
    rows.close()
    for _ in range(100):
        if log and isinstance(log[-1], tuple):
            break
        time.sleep(0.02)
    assert log[-1] == ("closed", "elman-ahead")   # closed on the worker's thread
    assert len([x for x in log if isinstance(x, int)]) <= len(made) + 1


def test_one_thread_produces_in_turn(monkeypatch):
    monkeypatch.setattr(threads, "THREADS", 1)
    log = []
    rows = ahead(_items(5, log=log), lambda r: len(r[1]), 3)
    assert next(rows)[0] == 0 and log == [0]
    rows.close()
    assert log[-1] == ("closed", threading.current_thread().name)
