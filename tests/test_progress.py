"""Progress bars: drawn on stderr when it is a terminal (a pseudo-terminal
here), never on a pipe, never with --quiet, never on stdout, whose bytes are
the same either way; Ctrl-C ends a job with one line saying how far it got,
exit 130, and no file half-written."""
import fcntl
import io
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import helpers
from elman import cli, progress
from elman.inference.driver import BLOCK

SRC = str(Path(__file__).resolve().parents[1] / "src")
WORDS = np.array("a b c d e".split())


def _text(path: Path, lines: int, seed: int = 0, nbest: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    rows = [" ".join(rng.choice(WORDS, rng.integers(1, 12))) for _ in range(lines)]
    if nbest:
        rows = [f"u{i // 3} {row}" for i, row in enumerate(rows)]
    path.write_text("\n".join(rows) + "\n")
    return path


class _Terminal:
    """A pseudo-terminal of 100 columns; its output is read as it comes (a
    reader that lagged would block the writer once the kernel's buffer is full)."""

    def __init__(self):
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        self.data = bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            try:
                chunk = os.read(self.master, 1 << 16)
            except OSError:         # EIO: every writer has closed the slave side
                return
            if not chunk:
                return
            self.data.extend(chunk)

    def started(self):
        os.close(self.slave)        # the child holds its own copy

    def output(self) -> bytes:
        self.reader.join(timeout=30)
        os.close(self.master)
        return bytes(self.data)


def _start(argv, tty: bool):
    """``elman argv`` in a process group of its own (Ctrl-C on a terminal signals a whole group)."""
    term = _Terminal() if tty else None
    # Ctrl-C as on a terminal: SIGINT at its default in the job, even where this test runs with it ignored
    # (a shell's background job ignores SIGINT, and a child inherits that).
    proc = subprocess.Popen([sys.executable, "-m", "elman", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=term.slave if tty else subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            env={**os.environ, "PYTHONPATH": SRC, "ELMAN_THREADS": "1"})
    if tty:
        term.started()
    return proc, term


def _run(argv, tty: bool):
    """(exit status, stdout bytes, stderr bytes) of ``elman argv``, stderr a terminal or a pipe."""
    proc, term = _start(argv, tty)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, term.output() if tty else err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("progress")
    helpers.save(tmp / "m")
    helpers.write_arpa(tmp / "lm.arpa", helpers.ngram_model([list(WORDS[:k]) for k in range(1, 6)], order=2))
    return {"tmp": tmp, "m": tmp / "m", "text": _text(tmp / "t.txt", 300), "held": _text(tmp / "h.txt", 50, 1),
            "nbest": _text(tmp / "n.txt", 90, 2, nbest=True), "arpa": tmp / "lm.arpa"}


# (name, argv with {placeholders}, the bar's label; stdout compared byte for byte); --quiet is
# checked on a few of them (the option is one shared helper, its effect one setting)
QUIET = ("eval", "nbest", "cache")
COMMANDS = [
    ("eval", ["eval", "--model", "{m}", "--data", "{text}"], "eval"),
    ("dynamic", ["eval", "--model", "{m}", "--data", "{text}", "--dynamic"], "eval --dynamic"),
    ("score", ["score", "--model", "{m}", "--data", "{text}"], "score"),
    ("nbest", ["score", "--model", "{m}", "--data", "{nbest}", "--nbest", "--json"], "score"),
    ("per-token", ["eval", "--model", "{m}", "--data", "{text}", "--per-token", "{tmp}/pt-{run}.txt"], "eval"),
    ("lambda", ["score", "--model", "{m}", "--data", "{text}", "--ngram", "{arpa}", "--lambda", "auto",
                "--heldout", "{held}"], "--lambda auto"),
    ("cache", ["eval", "--model", "{m}", "--data", "{text}", "--cache-dir", "{tmp}/cache-{run}"], "tokenising {text}"),
    ("export", ["export", "--model", "{m}", "--onnx", "{tmp}/m-{run}.onnx"], "export"),
]


def _argv(argv, files, run):
    return [a.format(**files, run=run) for a in argv]


@pytest.mark.parametrize("name,argv,label", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_the_bar_is_on_a_terminal_only_and_stdout_is_the_same(files, name, argv, label):
    if name == "export":
        pytest.importorskip("onnx")
    if name == "lambda":
        pytest.importorskip("kenlm")
    rc, out_tty, err_tty = _run(_argv(argv, files, "tty"), tty=True)
    assert rc == 0, err_tty
    assert f"\r{label.format(**files)}:".encode() in err_tty     # the bar, redrawn in place
    assert re.search(rb"\d+%\|", err_tty), err_tty[-500:]    # with its share done, as a bar
    rc, out_pipe, err_pipe = _run(_argv(argv, files, "pipe"), tty=False)
    assert rc == 0, err_pipe
    assert b"\r" not in err_pipe and b"%|" not in err_pipe
    if name == "export":        # it names the file it wrote
        out_tty = out_tty.replace(b"m-tty.onnx", b"m-pipe.onnx")
    assert out_tty == out_pipe and out_pipe
    if name not in QUIET:
        return
    rc, out_quiet, err_quiet = _run(_argv(argv, files, "quiet") + ["--quiet"], tty=True)
    assert rc == 0 and b"\r" not in err_quiet.replace(b"\r\n", b"\n") and b"%|" not in err_quiet
    assert out_quiet == out_pipe


def test_bench_and_train_draw_their_bars_on_a_terminal_only(files):
    bench = ["bench", "--V", "30", "--d", "2", "--Dh", "3", "--B", "2", "--T", "2", "--steps", "2",
             "--rounds", "1", "--json"]
    rc, out, err = _run(bench, tty=True)
    assert rc == 0 and b"\rbench:" in err and b"steps/s" in err and out.startswith(b"{")
    train = ["train", "--train", files["text"], "--valid", files["held"], "--out", files["tmp"] / "run",
             "--epochs", "1", "--hidden", "4", "--embed", "3", "--batch", "2", "--bptt", "5", "--direct", "0",
             "--sampled", "0", "--cache-dir", files["tmp"] / "train-cache"]
    rc, _, err = _run(train, tty=True)
    assert rc == 0 and b"\repoch 1/1:" in err and b"windows/s" in err and b"\rvalidation:" in err
    rc, _, err = _run(train + ["--force"], tty=False)
    assert rc == 0 and b"\r" not in err and b"valid ppl" in err


# -- Ctrl-C -----------------------------------------------------------------------------

def _interrupt(argv, label: str):
    """Start ``elman argv`` with stderr on a terminal, SIGINT it once its bar
    shows 1% or more done; (exit status, stdout, the last stderr line)."""
    proc, term = _start(argv, tty=True)
    # Drain stdout as it comes: a full pipe would stop the job before its bar shows progress.
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stdout.read1(1 << 16), b"")))
    reader.start()
    deadline = time.monotonic() + 120
    while not re.search(rf"\r{re.escape(label)}: +[1-9]\d*%".encode(), term.data):
        assert proc.poll() is None, "the job ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)
    reader.join(timeout=60)
    out = b"".join(chunks)
    err = term.output().decode()
    return proc.returncode, out, err.replace("\r\n", "\n").rstrip("\n").split("\n")[-1].split("\r")[-1]


def test_ctrl_c_in_score_says_how_far_and_leaves_no_per_token_file(files):
    n = 400_000         # lines: enough that the job outlasts the signal's way by far, however fast scoring is
    big = _text(files["tmp"] / "big.txt", n, 3)
    pt = files["tmp"] / "interrupted.txt"
    rc, out, last = _interrupt(["score", "--model", files["m"], "--data", big, "--per-token", pt], "score")
    assert rc == 130
    m = re.fullmatch(r"elman: interrupted: score after ([\d,]+) of ([\d,]+) tokens \(\d+%\), ([\d,]+) lines; "
                     r"standard output has the scores of the lines done; no --per-token file", last)
    assert m, last
    done, total, lines = (int(g.replace(",", "")) for g in m.groups())
    assert 0 < done < total
    scores = out.decode().splitlines()
    # whole lines; Ctrl-C may fall between a block's write and its count (a block: BLOCK tokens and a line)
    assert lines <= len(scores) <= lines + BLOCK // 4 + 1 < n
    assert all(float(s) < 0 for s in scores)
    assert not pt.exists() and not list(files["tmp"].glob(".interrupted.txt.*"))


def test_ctrl_c_in_eval_says_how_far_and_prints_nothing(files):
    big = _text(files["tmp"] / "big-eval.txt", 600_000, 4)     # many compiled calls, so Ctrl-C falls inside
    rc, out, last = _interrupt(["eval", "--model", files["m"], "--data", big, "--dynamic"], "eval --dynamic")
    assert rc == 130 and out == b""
    m = re.fullmatch(r"elman: interrupted: eval --dynamic after ([\d,]+) of ([\d,]+) tokens \(\d+%\); "
                     r"nothing written", last)
    assert m, last
    done, total = (int(g.replace(",", "")) for g in m.groups())
    assert 0 < done < total


def test_ctrl_c_in_a_cache_build_caches_nothing(files, monkeypatch, capsys):
    """Stopped after the first part of the file: no entry, no scratch file, one line."""
    from elman.data import ids as ids_module
    text = _text(files["tmp"] / "parts.txt", 2000, 5)
    real = ids_module.tokenise_file

    def first_part_then_ctrl_c(*args, **kw):
        parts = real(*args[:5], part_bytes=4096, name=args[6])      # (path, codec, level, size, workers, ...)
        yield next(parts)
        raise KeyboardInterrupt

    monkeypatch.setattr(ids_module, "tokenise_file", first_part_then_ctrl_c)
    cache = files["tmp"] / "cache-interrupted"
    assert cli.main(["eval", "--model", str(files["m"]), "--data", str(text), "--cache-dir", str(cache)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    m = re.fullmatch(rf"elman: interrupted: tokenising {re.escape(str(text))} after ([\d.]+) of ([\d.]+) kB "
                     r"\(\d+%\), ([\d,]+) tokens; nothing cached", err[0])
    assert m, err
    assert 0 < float(m[1]) < float(m[2]) and int(m[3].replace(",", "")) > 0
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


# -- the module -------------------------------------------------------------------------

@pytest.fixture
def fresh():
    progress.reset()
    yield
    progress.reset()


def test_a_job_counts_without_a_bar_and_says_how_far(fresh):
    with progress.job("eval", "tokens", 44_500) as job:
        assert job.bar is None                  # pytest's stderr is no terminal
        job.update(12_345)
        job.count(lines=3)
        job.count(lines=4)
        assert job.how_far() == "after 12,345 of 44,500 tokens (28%), 7 lines"
    assert progress.interrupted() == "elman: interrupted"      # finished: nothing to say of it
    with pytest.raises(KeyboardInterrupt):
        with progress.job("score", "hypotheses", note="standard output has the scores of the lines done") as job:
            job.update(7)
            raise KeyboardInterrupt
    assert progress.interrupted() == ("elman: interrupted: score after 7 hypotheses; "
                                      "standard output has the scores of the lines done")


def test_track_counts_what_the_caller_finished_and_the_innermost_job_speaks(fresh):
    outer = progress.track(range(3), "bench --corpus", "tokens", 30, count=lambda n: 10)
    with pytest.raises(KeyboardInterrupt):
        for n in outer:
            if n == 1:
                for item in progress.track("ab", "export", "steps", 2):
                    raise KeyboardInterrupt
    assert progress.interrupted() == "elman: interrupted: export after 0 of 2 steps (0%); nothing written"
    assert list(progress.track("abc", "x", "steps")) == list("abc")
    assert progress.interrupted() == "elman: interrupted"


def test_quiet_and_terminal_settings(fresh):
    progress.configure(terminal=True)
    assert progress.shown() and not progress.shown(quiet=True)
    progress.configure(quiet=True)
    assert not progress.shown()
    progress.reset()
    progress.configure(terminal=True)
    stream = io.StringIO()
    with progress.job("score", "lines", 2) as job:
        assert job.bar is not None
        assert job.guard(stream) is stream          # not a terminal: written as it is
        stream.isatty = lambda: True
        guarded = job.guard(stream)
        assert guarded is not stream
        guarded.write("-1.5\n")
        guarded.write("-2.5\n")
    assert stream.getvalue() == "-1.5\n-2.5\n"       # the same bytes, the bar lifted around them
