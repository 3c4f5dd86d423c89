"""The run directory: locking and claiming it, checkpointing a run into it,
and restoring a run from it (``elman train --resume``).

DIR holds the best model (what ``elman eval --model DIR`` reads) and
``DIR/last`` the latest training state; ``elman.modelfile`` writes both
crash-safely. One run writes a DIR at a time: ``lock`` holds an exclusive
``flock`` on ``DIR/.lock`` from before the first look at DIR to the end.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from elman import modelfile
from elman.errors import ElmanError
from elman.fast import threads
from elman.training.schedule import Schedule
from elman.training.state import RESUMABLE, Progress, Run, Settings, make_run_optimizer


LOCK_FILE = ".lock"


class DirLock:
    """The run's hold on its directory: the kernel drops it when the process
    ends, however it ends (SIGKILL included), so a dead run never leaves a
    stale lock. The lock is on a file, not on the directory itself, because
    NFS honours ``flock`` (as a POSIX lock, across hosts) only on a file open
    for writing; the file stays after the run, since removing it would let
    two later runs lock two different files of one name."""

    def __init__(self, fd: int):
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _nothing_to_resume(out: Path) -> ElmanError:
    return ElmanError(f"{out}: no training state to resume ({out / modelfile.LAST} is missing); "
                      f"start a new run without --resume")


def lock(out: Path, create: bool) -> DirLock:
    """Hold DIR for this run, or refuse in one line naming the holder's host and pid."""
    if out.exists() and not out.is_dir():
        raise ElmanError(f"{out}: exists and is not a directory (--out names the model directory)")
    if not create and not out.is_dir():
        raise _nothing_to_resume(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ElmanError(f"{out}: cannot create the output directory or its lock "
                         f"({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _holder(fd)
        os.close(fd)
        raise ElmanError(f"{out}: another elman train is writing to it ({holder}); wait for it to end, "
                         f"or train into another --out") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode() + b"\n", 0)
    return DirLock(fd)


def _holder(fd: int) -> str:
    """'host H, pid P' from the lock file (the holder writes it right after locking)."""
    for _ in range(20):
        try:
            who = json.loads(os.pread(fd, 4096, 0))
            return f"host {who['host']}, pid {who['pid']}"
        except (ValueError, KeyError, TypeError, OSError):
            time.sleep(0.05)        # locked a moment ago, not written yet
    return "host and pid not recorded"


def claim(out: Path, force: bool) -> None:
    """Make ``out`` ready for a new run; never replace a model by accident
    (with ``force``, the old model is removed only once the data has loaded)."""
    if out.exists() and not out.is_dir():
        raise ElmanError(f"{out}: exists and is not a directory (--out names the model directory)")
    if modelfile.has_model(out) and not force:
        raise ElmanError(f"{out}: already holds a model; pass --resume to continue it "
                         f"or --force to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ElmanError(f"{out}: cannot create the output directory ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ElmanError(f"{out}: the output directory is not writable")


def _config(s: Settings) -> dict:
    rnnlm = {"direct_hash": "rnnlm"} if s.direct and s.direct_hash == "rnnlm" else {}
    return {"level": s.level, "encoding": s.encoding, "settings": asdict(s), **rnnlm}


def save(run: Run) -> None:
    """Checkpoint the run: always ``DIR/last`` (the full training state); at
    an epoch boundary, after it, the best model in DIR itself.

    This order keeps one fact true whatever instant a SIGKILL strikes: when
    ``last`` is inside an epoch, DIR holds the best model as of that epoch's
    start; when ``last`` is at a boundary, its own weights are the best.

    The arrays are copied into the files' bytes here; ``run.saver`` (a
    ``Saver``), when the run has one, writes them while training goes on.

    Under MPI every process calls this (the hidden state is gathered from
    all of them); rank 0 writes.
    """
    prog, sched, comm = run.prog, run.sched, run.comm
    bad = [k for k, v in run.params.as_dict().items() if not np.isfinite(v).all()]
    if bad:
        raise run.diverged(prog.windows_done, f"tensor {bad[0]} holds NaN or infinite values")
    run.h = comm.gather_streams(run.h)
    comm.check_params(run.params.as_dict(), f"at epoch {prog.epoch}, batch {prog.windows_done}")
    if comm.writer:
        prog.metrics_lines = run.metrics.lines
        train_state = {"progress": asdict(prog), "schedule": sched.state(), "optimizer": run.opt.state_scalars(),
                       **({"comm": comm.cost_state()} if comm.cost_state() else {})}
        last = modelfile.prepare_checkpoint(run.out, run.params.as_dict(), run.vocab, _config(run.settings),
                                            train_state=train_state, slot="last",
                                            optimizer_arrays={"h": run.h, **run.opt.state_arrays()})
        todo = [last]
        if prog.windows_done == 0 and sched.best is not None:
            # at an epoch's end the best weights are the last (``_end_epoch``): linked, not written again
            todo.append(_best(run, "last", last.files[modelfile.MODEL_FILE]))
        (run.saver or _write)(todo)
    run.last_saved = f"epoch {prog.epoch}, batch {prog.windows_done}"


def save_best(run: Run) -> None:
    """The best model in DIR, written now."""
    _write([_best(run)])


def _best(run: Run, model_from: str | None = None, model_bytes: bytes | None = None) -> modelfile.Prepared:
    """The best model's checkpoint; ``model_from``: a slot whose model file holds it (linked, not written again)."""
    return modelfile.prepare_checkpoint(run.out, run.best, run.vocab, _config(run.settings), slot="best",
                                        train_state={"best_epoch": run.sched.best_epoch,
                                                     "valid_ppl": math.exp(run.sched.best)},
                                        model_from=model_from, model_bytes=model_bytes)


def _write(prepared: list) -> None:
    for p in prepared:
        p.write()


class Saver(threads.Helper):
    """Writes a run's checkpoints on a thread of its own while the next
    windows train: hashing, writing and syncing some 100 MB took 0.3 s of
    the 0.4 s a checkpoint of the KJV defaults cost the training thread.
    One save at a time, in the order given (so the SIGKILL facts of
    ``save`` hold on disk as they did); ``wait`` raises what a write
    raised. ``close`` waits: the run's end, and its errors, wait for it."""

    def __init__(self):
        super().__init__("elman-save", blas_one=False)

    def __call__(self, prepared: list) -> None:
        self.start(lambda i: _write(prepared), 1)


def _saved_state(out: Path, cfg: dict, opt_arrays: dict):
    """(Settings, Progress, Schedule, h) of a checkpoint's config; one line if malformed."""
    try:
        ts = cfg["train_state"]
        return (Settings.from_saved(cfg["settings"]), Progress.from_saved(ts["progress"]),
                Schedule.from_state(ts["schedule"]), np.array(opt_arrays["h"]), ts["optimizer"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ElmanError(f"{out / modelfile.LAST}: the training state is incomplete or malformed "
                         f"({type(exc).__name__}: {exc})") from None


def _check_unchanged(out: Path, saved: Settings, options: dict) -> None:
    for key, value in options.items():
        old = getattr(saved, key)
        same = value == old if key not in ("train", "valid") else Path(value).resolve() == Path(old).resolve()
        if key not in RESUMABLE and not same:
            raise ElmanError(f"--{key.replace('_', '-')} {value} differs from the {old} the run in {out} "
                             f"was started with; drop it to resume, or use --force to start over")


def restore(out: Path, options: dict, write: bool = True) -> Run:
    """Everything a resumed run needs from ``out``, checked against ``options``
    (``write``: this process may repair DIR, i.e. it is the run's writer)."""
    if not (out / modelfile.LAST).is_dir():
        raise _nothing_to_resume(out)
    _, _, cfg, opt_arrays = modelfile.load_checkpoint(out, "last")
    p, vocab, _ = modelfile.load_params(out, "last")
    saved, prog, sched, h, opt_state = _saved_state(out, cfg, opt_arrays)
    _check_unchanged(out, saved, options)
    s = Settings(**{**asdict(saved), **{k: v for k, v in options.items() if k in RESUMABLE}})
    opt = make_run_optimizer(s, p.as_dict())
    try:
        opt.load_state(opt_arrays, opt_state)
    except (KeyError, TypeError, ValueError) as exc:
        raise ElmanError(f"{out / modelfile.LAST}: the optimizer state does not fit the model ({exc})") from None
    run = Run(out, s, p, vocab, opt, sched, prog, h=h, comm_state=cfg["train_state"].get("comm"),
              last_saved=f"epoch {prog.epoch}, batch {prog.windows_done}")
    if prog.windows_done == 0 or sched.best is None:
        run.best = p.copy().as_dict()
        if write and sched.best is not None and _best_epoch_on_disk(out) != sched.best_epoch:
            save_best(run)  # killed between saving last and best
    else:
        best_arrays, _, best_cfg = modelfile.load_model(out, "best")
        if best_cfg.get("train_state", {}).get("best_epoch") != sched.best_epoch:
            raise ElmanError(f"{out}: the best model and the training state disagree "
                             f"(best epoch {sched.best_epoch} expected); start over with --force")
        run.best = {k: np.array(v) for k, v in best_arrays.items()}
    return run


def _best_epoch_on_disk(out: Path):
    try:
        return modelfile.load_model(out, "best")[2].get("train_state", {}).get("best_epoch")
    except ElmanError:
        return None
