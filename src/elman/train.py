"""The training loop: truncated BPTT over B streams, Mikolov's schedule, safe checkpoints.

The text is cut into B streams read side by side in windows of T steps; the
hidden state of each stream is carried from one window to the next (and
reset to zero at each epoch), so the model sees context beyond T while the
gradient is truncated at T. The update uses the mean loss per position: the
sum ``bptt`` returns, divided by B*T, so the learning rate does not depend
on the batch shape. Gradients are clipped by their global norm.

A checkpoint holds everything the loop needs to continue exactly where it
was: weights, optimizer state, the carried hidden state, the position
(epoch, window), the schedule, the RNG state and the running loss. Resuming
from it repeats the uninterrupted run's arithmetic, so both end with the
same weights bit for bit (every product is summed in the same order for
the same shapes on the same number of cores).
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from elman import checkpoint, data
from elman.errors import ElmanError
from elman.evaluate import perplexity
from elman.metrics import MetricsLog
from elman.model import Params, bptt
from elman.optim import DEFAULT_LR, make_optimizer
from elman.sampled import Sampler, unigram_proposal
from elman.schedule import Schedule


@dataclass
class Settings:
    """Everything that defines a training run (saved in config.json)."""
    train: str
    valid: str
    test: str | None = None
    level: str = "word"
    encoding: str = "utf-8"
    max_vocab: int | None = None
    min_count: int = 1
    hidden: int = 200
    embed: int = 200
    batch: int = 32
    bptt: int = 20
    epochs: int = 20
    optimizer: str = "adagrad"       # measured best (README, "Training")
    lr: float | None = None          # None: DEFAULT_LR of the optimizer
    clip: float = 5.0
    min_improvement: float = 0.003
    seed: int = 0
    classes: int = 0                  # K > 0: class-factorised softmax, K frequency-binned classes
    sampled: int = 0                  # S > 0: train with sampled softmax, S ids a window (unigram^0.75)
    dropout: float = 0.0              # rate of dropout on e into the recurrence and h into the output
    checkpoint_every: int = 0         # also checkpoint every N windows (0: epochs only)
    log_every: int = 100              # a metrics line every N windows

    def __post_init__(self):
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.optimizer, 1.0)


# Options a resumed run may change: they do not alter the arithmetic of the
# epochs already done, only how long it goes on and what it records.
RESUMABLE = ("epochs", "checkpoint_every", "log_every", "test")


@dataclass
class Progress:
    """Where the loop is: saved in every checkpoint."""
    epoch: int = 1            # the epoch in progress, 1-based
    batch: int = 0            # windows of this epoch already trained
    nats: float = 0.0         # training loss summed over this epoch so far
    tokens: int = 0           # positions in that sum
    elapsed: float = 0.0      # wall seconds over all sessions
    metrics_lines: int = 0    # lines of metrics.jsonl this checkpoint accounts for
    stopped: str | None = None  # "schedule", "epochs" or "budget" once finished
    rng: dict = field(default_factory=dict)

    @property
    def train_ppl(self) -> float:
        """Running training perplexity of this epoch (capped: a diverging run
        may reach losses whose exp overflows)."""
        return math.exp(min(self.nats / max(self.tokens, 1), 700.0))


class Interrupted(Exception):
    """Ctrl-C during training, after the checkpoint was saved."""


class _CtrlC:
    """The first SIGINT asks the loop to stop after the current window (so the
    checkpoint never holds a half-applied update); a second one aborts."""

    def __init__(self, say):
        self.requested, self.say, self.old = False, say, None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.say("elman: interrupt: saving a checkpoint after this step (Ctrl-C again to quit without saving)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


def _say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


@dataclass
class Run:
    """One training run: its directory, model, optimizer, schedule and position."""
    out: Path
    s: Settings
    p: Params
    vocab: data.Vocab
    opt: object
    sched: Schedule
    prog: Progress
    h: np.ndarray = None        # the hidden state carried into the next window
    best: dict = None           # the best weights so far (the schedule restores them)
    metrics: MetricsLog = None
    last_saved: str = "none yet"

    def diverged(self, k: int, why) -> ElmanError:
        return ElmanError(f"training diverged at epoch {self.prog.epoch}, batch {k}: {why} (learning rate "
                          f"{self.opt.lr:g}); stopped and kept the last good checkpoint in {self.out} "
                          f"({self.last_saved}); try a smaller --lr")

    def interrupted(self) -> Interrupted:
        return Interrupted(f"elman: interrupted; saved a checkpoint in {self.out} ({self.last_saved}); "
                           f"continue with: elman train --out {self.out} --resume")

    def log(self, nb: int, wps: float, valid_ppl=None, **extra) -> None:
        prog = self.prog
        self.metrics.write(epoch=prog.epoch, batch=prog.batch, batches=nb,
                           train_ppl=prog.train_ppl, valid_ppl=valid_ppl,
                           lr=self.opt.lr, words_per_s=round(wps, 1), elapsed=round(prog.elapsed, 3), **extra)

    def summary(self, test=None) -> dict:
        best = self.sched.best
        return {"out": str(self.out), "best_valid_ppl": None if best is None else math.exp(best),
                "best_epoch": self.sched.best_epoch, "test_ppl": test["perplexity"] if test else None,
                "epochs_done": self.prog.epoch - 1, "stopped": self.prog.stopped, "elapsed": self.prog.elapsed}


def train(out, options: dict, resume: bool = False, force: bool = False, quiet: bool = False,
          time_budget: float | None = None) -> dict:
    """Train a model into directory ``out``; returns a summary dict.

    ``options``: values for :class:`Settings` fields (None or absent: the
    default, or on ``resume`` the saved value). ``time_budget``: seconds
    after which the current epoch is cut short, validated, and training ends.
    """
    out = Path(out)
    say = (lambda m: None) if quiet else _say
    options = {k: v for k, v in options.items() if v is not None}
    if resume:
        run = _restore(out, options)
        s = run.s
        train_ids = run.vocab.encode(data.read_tokens(s.train, s.level, s.encoding))
    else:
        _claim(out, force)
        s = Settings(**options)
        tokens = data.read_tokens(s.train, s.level, s.encoding)
        vocab = data.Vocab.build(tokens, s.max_vocab, s.min_count)
        train_ids = vocab.encode(tokens)
        del tokens
        if s.classes > len(vocab):
            raise ElmanError(f"--classes {s.classes} is more than the {len(vocab)} words of the vocabulary")
        if s.classes and s.sampled:
            raise ElmanError("--sampled trains the full-softmax model; it does not go with --classes")
        p = Params.init(len(vocab), s.embed, s.hidden, seed=s.seed, classes=s.classes, counts=vocab.counts)
        run = Run(out, s, p, vocab, make_optimizer(s.optimizer, p.as_dict(), s.lr, s.clip),
                  Schedule(lr=s.lr, min_improvement=s.min_improvement),
                  Progress(rng=np.random.default_rng(s.seed).bit_generator.state),
                  h=np.zeros((s.batch, s.hidden), dtype=p.dtype), best=p.copy().as_dict())
    p, vocab, opt, sched, prog = run.p, run.vocab, run.opt, run.sched, run.prog
    # Draws depend on (seed, update number) only: a resumed run draws the same ids.
    sampler = Sampler(unigram_proposal(vocab.counts), s.sampled, seed=s.seed) if s.sampled else None
    data.check_enough(train_ids, s.batch, s.bptt, s.train)
    valid_ids = vocab.encode(data.read_tokens(s.valid, s.level, s.encoding))
    test_ids = vocab.encode(data.read_tokens(s.test, s.level, s.encoding)) if s.test else None
    streams = data.batchify(train_ids, s.batch)
    nb = data.num_batches(streams, s.bptt)
    params = p.as_dict()
    if force and not resume:
        checkpoint.remove_checkpoints(out)  # only now that the new run's input is known to be good
    run.metrics = MetricsLog(out, keep=prog.metrics_lines if resume else None)
    if not resume:
        _save(run)  # claims DIR at once, and gives a diverging run a checkpoint to keep
    if prog.stopped == "schedule" or (prog.stopped and prog.epoch > s.epochs):
        say(f"elman: training in {out} already finished ({prog.stopped}); nothing to do")
        return run.summary()

    started = time.monotonic() - prog.elapsed
    deadline = None if time_budget is None else time.monotonic() + time_budget
    prog.stopped = None
    say(f"elman: training a {len(vocab)}-word model (d={s.embed}, Dh={s.hidden}) on {len(train_ids)} "
        f"tokens of {s.train}: {s.batch} streams x {s.bptt} steps, {nb} windows an epoch, "
        f"{s.optimizer} lr {opt.lr:g}"
        + (f"; sampled softmax, {s.sampled} ids a window (train ppl* is the sampled loss's)" if s.sampled else "")
        + (f"; dropout {s.dropout:g}" if s.dropout else ""))

    # Non-finite values are caught and reported as divergence below, so
    # NumPy's overflow warnings would only add noise.
    with _CtrlC(say) as ctrl_c, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        while prog.epoch <= s.epochs and prog.stopped is None:
            bar = tqdm(total=nb, initial=prog.batch, desc=f"epoch {prog.epoch}/{s.epochs}", unit="win",
                       file=sys.stderr, leave=False, dynamic_ncols=True,
                       disable=quiet or not sys.stderr.isatty())
            t0, tokens0 = time.monotonic(), prog.tokens
            for k, x, y in data.iter_batches(streams, s.bptt, start=prog.batch):
                # One step of truncated BPTT: forward and backward over the
                # window from the carried state, then the update.
                sampled = (sampler.draw(opt.t), sampler.log_q) if sampler else None
                # Masks, like samples, depend on (seed, update number) only.
                dropout = (s.dropout, (s.seed, opt.t)) if s.dropout else None
                # Gradients of the mean loss over the B*T positions.
                loss, grads, h = bptt(p, x, y, run.h, sampled=sampled, sparse=True, dropout=dropout,
                                      scale=1.0 / x.size)
                try:
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"the loss is {loss}")
                    opt.step(params, grads)
                except FloatingPointError as exc:
                    bar.close()
                    raise run.diverged(k + 1, exc) from None
                run.h = h
                prog.batch, prog.nats, prog.tokens = k + 1, prog.nats + loss, prog.tokens + x.size
                prog.elapsed = time.monotonic() - started
                wps = (prog.tokens - tokens0) / max(time.monotonic() - t0, 1e-9)
                bar.update(1)
                bar.set_postfix(ppl=f"{prog.train_ppl:.1f}", wps=f"{wps:.0f}", refresh=False)
                if s.log_every and prog.batch % s.log_every == 0 and prog.batch < nb:
                    run.log(nb, wps)
                every = s.checkpoint_every and prog.batch % s.checkpoint_every == 0 and prog.batch < nb
                if every or ctrl_c.requested:
                    _save(run)
                if ctrl_c.requested:
                    bar.close()
                    raise run.interrupted()
                if deadline is not None and time.monotonic() > deadline:
                    prog.stopped = "budget"
                    break
            bar.close()
            wps = (prog.tokens - tokens0) / max(time.monotonic() - t0, 1e-9)

            # End of the epoch: validate, let the schedule decide, checkpoint.
            valid = perplexity(p, valid_ids, vocab.eos_id)
            if not math.isfinite(valid["perplexity"]):
                raise run.diverged(prog.batch, f"the validation perplexity is {valid['perplexity']}")
            decision = sched.update(prog.epoch, math.log(valid["perplexity"]))
            keep, undo = (run.best, params) if decision.improved else (params, run.best)
            for name, value in undo.items():
                keep[name][...] = value
            prog.elapsed = time.monotonic() - started
            run.log(nb, wps, valid_ppl=valid["perplexity"], **({} if decision.improved else {"restored": True}))
            say(f"epoch {prog.epoch:3d}  train ppl{'*' if s.sampled else ' '}{prog.train_ppl:8.2f}  "
                f"valid ppl {valid['perplexity']:8.2f}  lr {opt.lr:<8g} {wps:6.0f} words/s"
                + ("" if decision.improved else "  (worse: restored the best weights)"))
            opt.lr = decision.lr
            if decision.stop:
                prog.stopped = "schedule"
            elif prog.epoch >= s.epochs and prog.stopped is None:
                prog.stopped = "epochs"
            prog.epoch, prog.batch, prog.nats, prog.tokens = prog.epoch + 1, 0, 0.0, 0
            run.h = np.zeros_like(run.h)
            _save(run)
            if ctrl_c.requested:
                raise run.interrupted()

    test = None
    if test_ids is not None:
        test = perplexity(p, test_ids, vocab.eos_id)
        run.metrics.write(test_ppl=test["perplexity"], test_tokens=test["tokens"])
        say(f"test perplexity {test['perplexity']:.2f} ({test['tokens']} tokens of {s.test})")
    say(f"elman: best validation perplexity {math.exp(sched.best):.2f} (epoch {sched.best_epoch}); "
        f"model saved in {out}")
    return run.summary(test)


# -- the run directory -----------------------------------------------------------

def _claim(out: Path, force: bool) -> None:
    """Make ``out`` ready for a new run; never replace a model by accident
    (with ``force``, the old model is removed only once the data has loaded)."""
    if out.exists() and not out.is_dir():
        raise ElmanError(f"{out}: exists and is not a directory (--out names the model directory)")
    if checkpoint.has_model(out) and not force:
        raise ElmanError(f"{out}: already holds a model; pass --resume to continue it "
                         f"or --force to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ElmanError(f"{out}: cannot create the output directory ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ElmanError(f"{out}: the output directory is not writable")


def _config(s: Settings) -> dict:
    return {"level": s.level, "encoding": s.encoding, "settings": asdict(s)}


def _save(run: Run) -> None:
    """Checkpoint the run: always ``DIR/last`` (the full training state); at
    an epoch boundary, after it, the best model in DIR itself.

    This order keeps one fact true whatever instant a SIGKILL strikes: when
    ``last`` is inside an epoch, DIR holds the best model as of that epoch's
    start; when ``last`` is at a boundary, its own weights are the best.
    """
    prog, sched = run.prog, run.sched
    bad = [k for k, v in run.p.as_dict().items() if not np.isfinite(v).all()]
    if bad:
        raise run.diverged(prog.batch, f"tensor {bad[0]} holds NaN or infinite values")
    prog.metrics_lines = run.metrics.lines
    train_state = {"progress": asdict(prog), "schedule": sched.state(), "optimizer": run.opt.state_scalars()}
    checkpoint.save_checkpoint(run.out, run.p.as_dict(), run.vocab, _config(run.s), train_state=train_state,
                               optimizer_arrays={"h": run.h, **run.opt.state_arrays()}, slot="last")
    if prog.batch == 0 and sched.best is not None:
        _save_best(run)
    run.last_saved = f"epoch {prog.epoch}, batch {prog.batch}"


def _save_best(run: Run) -> None:
    checkpoint.save_checkpoint(run.out, run.best, run.vocab, _config(run.s), slot="best",
                               train_state={"best_epoch": run.sched.best_epoch,
                                            "valid_ppl": math.exp(run.sched.best)})


def _restore(out: Path, options: dict):
    """Everything a resumed run needs from ``out``, checked against ``options``."""
    if not (out / checkpoint.LAST).is_dir():
        raise ElmanError(f"{out}: no training state to resume ({out / checkpoint.LAST} is missing); "
                         f"start a new run without --resume")
    arrays, vocab, cfg, opt_arrays = checkpoint.load_checkpoint(out, "last")
    try:
        ts = cfg["train_state"]
        saved = Settings(**cfg["settings"])
        prog = Progress(**ts["progress"])
        sched = Schedule.from_state(ts["schedule"])
        h = np.array(opt_arrays["h"])
    except (KeyError, TypeError) as exc:
        raise ElmanError(f"{out / checkpoint.LAST}: the training state is incomplete ({exc})") from None
    for key, value in options.items():
        old = getattr(saved, key)
        same = value == old if key not in ("train", "valid") else Path(value).resolve() == Path(old).resolve()
        if key not in RESUMABLE and not same:
            raise ElmanError(f"--{key.replace('_', '-')} {value} differs from the {old} the run in {out} "
                             f"was started with; drop it to resume, or use --force to start over")
    s = Settings(**{**asdict(saved), **{k: v for k, v in options.items() if k in RESUMABLE}})
    p = Params.from_dict({k: np.array(v) for k, v in arrays.items()})
    opt = make_optimizer(s.optimizer, p.as_dict(), s.lr, s.clip)
    opt.load_state(opt_arrays, ts["optimizer"])
    run = Run(out, s, p, vocab, opt, sched, prog, h=h, last_saved=f"epoch {prog.epoch}, batch {prog.batch}")
    if prog.batch == 0 or sched.best is None:
        run.best = p.copy().as_dict()
        if sched.best is not None and _best_epoch_on_disk(out) != sched.best_epoch:
            _save_best(run)  # killed between saving last and best
    else:
        best_arrays, _, best_cfg = checkpoint.load_model(out, "best")
        if best_cfg.get("train_state", {}).get("best_epoch") != sched.best_epoch:
            raise ElmanError(f"{out}: the best model and the training state disagree "
                             f"(best epoch {sched.best_epoch} expected); start over with --force")
        run.best = {k: np.array(v) for k, v in best_arrays.items()}
    return run


def _best_epoch_on_disk(out: Path):
    try:
        return checkpoint.load_model(out, "best")[2].get("train_state", {}).get("best_epoch")
    except ElmanError:
        return None
