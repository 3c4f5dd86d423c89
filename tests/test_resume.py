"""--resume after a real SIGKILL ends with the same weights, bit for bit, as an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from elman import modelfile
from elman.training.train import train

SRC = str(Path(__file__).resolve().parents[1] / "src")
WORDS = "in the beginning god created heaven and earth was without form void darkness upon face of deep".split()


def _corpus(directory: Path) -> tuple[str, str]:
    rng = np.random.default_rng(1)
    lines = [" ".join(rng.choice(WORDS, rng.integers(4, 12))) for _ in range(900)]
    (directory / "train.txt").write_text("\n".join(lines[:800]) + "\n")
    (directory / "valid.txt").write_text("\n".join(lines[800:]) + "\n")
    return str(directory / "train.txt"), str(directory / "valid.txt")


def _args(tr, va, out, optimizer):
    return ["train", "--train", tr, "--valid", va, "--out", str(out), "--hidden", "16", "--embed", "8",
            "--batch", "4", "--bptt", "7", "--epochs", "3", "--optimizer", optimizer,
            "--checkpoint-every", "3", "--log-every", "5", "--quiet"]


def _run(args, **kw):
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.Popen([sys.executable, "-m", "elman", *args], env=env,
                            stderr=subprocess.PIPE, text=True, **kw)


def _progress(out: Path):
    try:
        return json.loads((out / "last" / "config.json").read_text())["train_state"]["progress"]
    except (OSError, ValueError, KeyError):
        return None  # not written yet, or being replaced right now


def _kill_when(proc, out: Path, ready) -> dict:
    """SIGKILL ``proc`` as soon as its last checkpoint satisfies ``ready``
    (the process is mid-training by then, at a moment we do not choose)."""
    deadline = time.monotonic() + 120
    while True:
        prog = _progress(out)
        if prog is not None and ready(prog):
            break
        assert proc.poll() is None, f"training ended before the kill: {proc.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return prog


def _tensors(out: Path, slot: str) -> dict:
    params, _, _, optimizer = modelfile.load_checkpoint(out, slot)
    return {**params, **{f"opt.{k}": v for k, v in (optimizer or {}).items()}}


def _deterministic_metrics(out: Path) -> list:
    records = [json.loads(x) for x in open(out / "metrics.jsonl")]
    return [{k: v for k, v in r.items() if k not in ("words_per_s", "elapsed")} for r in records]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_after_sigkill_is_bit_for_bit(tmp_path, optimizer):
    tr, va = _corpus(tmp_path)
    ref, out = tmp_path / "ref", tmp_path / "killed"
    proc = _run(_args(tr, va, ref, optimizer))
    assert proc.wait(timeout=300) == 0, proc.stderr.read()

    # Kill inside epoch 1, after a mid-epoch checkpoint; resume; kill again
    # inside epoch 2; resume to the end.
    killed_at = [_kill_when(_run(_args(tr, va, out, optimizer)), out,
                            lambda p: p["epoch"] == 1 and p["windows_done"] >= 6)]
    resumed = _run(["train", "--out", str(out), "--resume", "--quiet"])
    killed_at.append(_kill_when(resumed, out, lambda p: p["epoch"] == 2 and p["windows_done"] >= 3))
    resumed = _run(["train", "--out", str(out), "--resume", "--quiet"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert killed_at[0]["windows_done"] > 0 and killed_at[1]["epoch"] == 2

    for slot in ("best", "last"):
        want, got = _tensors(ref, slot), _tensors(out, slot)
        assert sorted(got) == sorted(want)
        for name in want:
            assert np.array_equal(got[name], want[name]), f"{slot}/{name} differs"
    assert _deterministic_metrics(out) == _deterministic_metrics(ref)


@pytest.mark.parametrize("extra", [{}, {"classes": 5}, {"classes": 5, "optimizer": "lazyadam"}, {"sampled": 7},
                                   {"dropout": 0.25}, {"direct": 0.0005},
                                   {"direct": 0.0005, "direct_order": 4, "sampled": 7, "dropout": 0.25},
                                   {"direct": 0.0005, "classes": 5}, {"anneal": 0, "sampled": 7}])
def test_resume_in_process_from_every_kind_of_checkpoint(tmp_path, monkeypatch, extra):
    """A crash right after each checkpoint in turn (simulated in-process):
    every resume reaches the uninterrupted run's weights exactly."""
    tr, va = _corpus(tmp_path)
    opts = dict(train=tr, valid=va, hidden=8, embed=6, streams=4, steps=10, epochs=2, checkpoint_every=40,
                **extra)
    train(tmp_path / "ref", opts, quiet=True)
    want = _tensors(tmp_path / "ref", "last")

    from elman.training import rundir
    real_save, saves = rundir.save, []

    class Crash(Exception):
        pass

    def crashing_save(run):
        real_save(run)
        saves.append((run.prog.epoch, run.prog.windows_done))
        if len(saves) == crash_after:
            raise Crash

    monkeypatch.setattr(rundir, "save", crashing_save)
    out = tmp_path / "m"
    crash_after = 2
    with pytest.raises(Crash):
        train(out, opts, quiet=True)
    while True:
        crash_after = len(saves) + 2
        try:
            train(out, {}, resume=True, quiet=True)
            break
        except Crash:
            pass
    assert any(b > 0 for _, b in saves) and any(b == 0 and e > 1 for e, b in saves)
    got = _tensors(out, "last")
    assert all(np.array_equal(got[k], want[k]) for k in want)
