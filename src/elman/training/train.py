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

``train`` reads as its phases: start or restore the run, read the data,
then epochs of windows (``_train_epoch``) each closed by validation and the
schedule (``_end_epoch``), then the test.
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elman import data, modelfile, progress
from elman.model import Params, bptt
from elman.model.perplexity import perplexity
from elman.errors import ElmanError
from elman.core.sampled import Sampler, unigram_proposal
from elman.fast import threads
from elman.training import distributed, rundir
from elman.training.budget import Clock, dropout_rate, rate_ramp
from elman.training.metrics import MetricsLog
from elman.training.cores import Overlap, overlaps, window_threads
from elman.training.schedule import Schedule
from elman.training.state import Interrupted, Progress, Run, Settings, make_run_optimizer  # noqa: F401  (Interrupted: the CLI's)


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
    progress.write(message)


@dataclass
class Corpus:
    """The run's text as ids (``data.TokenIds``, memory-mapped from the
    token-id cache): this process's training streams, validation and test."""
    streams: data.Streams
    tokens: int
    valid: data.TokenIds
    test: data.TokenIds | None

    def windows(self, T: int) -> int:
        return self.streams.num_windows(T)


def train(out, options: dict, resume: bool = False, force: bool = False, quiet: bool = False,
          time_budget: float | None = None, comm=None, cache_dir=None) -> dict:
    """Train a model into directory ``out``; returns a summary dict.

    ``options``: values for :class:`Settings` fields (None or absent: the
    default, or on ``resume`` the saved value). ``time_budget``: seconds
    after which the current epoch is cut short, validated, and training ends.
    ``comm``: the processes training together (``training.distributed``;
    default ``connect()``: all of an MPI job under mpiexec, else this one).
    ``cache_dir``: the token-id cache (default ``data.cache.default_dir()``).
    """
    out = Path(out)
    comm = comm or distributed.connect()
    options = {k: v for k, v in options.items() if v is not None}
    with comm.guard():
        comm.check_same({**options, "out": str(out), "resume": resume, "force": force, "minutes": time_budget})
        options["processes"] = comm.size
        if not resume:
            comm.part(Settings(**options).streams)      # N must divide B: said before any work
        held = comm.agree(lambda: rundir.lock(out, create=not resume) if comm.writer else None)
        saver = rundir.Saver()
        try:
            ids = _Reader(cache_dir, _say if comm.writer and not quiet else (lambda m: None))
            return _train(_open(out, options, resume, force, comm, ids, saver), quiet, time_budget)
        finally:
            try:
                saver.close()       # the last checkpoint on disk before DIR is let go
            finally:
                if held:
                    held.release()


def _train(opened, quiet: bool, time_budget: float | None) -> dict:
    """The epochs, then the test, on every process; rank 0 alone speaks."""
    run, corpus = opened
    say = _say if run.comm.writer and not quiet else (lambda m: None)
    prog, s, out = run.prog, run.settings, run.out
    if prog.stopped == "schedule" or (prog.stopped and prog.epoch > s.epochs):
        say(f"elman: training in {out} already finished ({prog.stopped}); nothing to do")
        return run.summary()
    _announce(run, corpus, say)
    clock = Clock(prog.elapsed, time_budget)
    prog.stopped = None
    # Non-finite values are caught and reported as divergence, so NumPy's
    # overflow warnings would only add noise.
    with _CtrlC(say) as ctrl_c, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        while prog.epoch <= s.epochs and prog.stopped is None:
            overlap_on = overlaps(run)      # before the windows' threads hide the machine's
            with threads.using(window_threads(run)):
                wps = _train_epoch(run, corpus, clock, ctrl_c, quiet or not run.comm.writer, overlap_on)
            _end_epoch(run, corpus, clock, wps, say)
            if run.comm.anyone(ctrl_c.requested):
                raise run.interrupted()
    return _finish(run, corpus, say)


# -- starting ---------------------------------------------------------------------

def _open(out: Path, options: dict, resume: bool, force: bool, comm, ids: "_Reader",
          saver: rundir.Saver) -> tuple[Run, Corpus]:
    """Start or restore the run on every process (rank 0 first: it alone may
    repair or replace what DIR holds, and it builds the token-id cache that
    the others then read) and read its data; its checkpoints go to ``saver``."""
    if resume:
        run = comm.writer_first(lambda: rundir.restore(out, options, write=comm.writer))
        train_ids = comm.writer_first(lambda: ids(run.settings.train, run.settings, run.vocab)[1])
    else:
        comm.agree(lambda: rundir.claim(out, force) if comm.writer else None)
        run, train_ids = comm.writer_first(lambda: _start(out, Settings(**options), ids))
    run.comm, run.saver = comm, saver
    corpus = comm.agree(lambda: _read_corpus(run, train_ids, ids, comm.part(run.settings.streams)))
    if force and not resume:  # only now that the new run's input is known to be good
        comm.agree(lambda: modelfile.remove_checkpoints(out) if comm.writer else None)
    comm.calibrate(run.comm_state)
    comm.share(run.params, run.opt)
    run.metrics = MetricsLog(out, keep=run.prog.metrics_lines if resume else None, write=comm.writer)
    if not resume:
        rundir.save(run)  # claims DIR at once, and gives a diverging run a checkpoint to keep
    return run, corpus


class _Reader:
    """Token ids of the run's files, through the token-id cache."""

    def __init__(self, cache_dir, say):
        self.cache_dir, self.say = cache_dir, say

    def __call__(self, path, s: Settings, vocab=None) -> tuple[data.Vocab, data.TokenIds]:
        return data.corpus_ids(path, s.level, s.encoding, vocab=vocab, max_vocab=s.max_vocab,
                               min_count=s.min_count, cache_dir=self.cache_dir, say=self.say)


def _start(out: Path, s: Settings, ids: _Reader) -> tuple[Run, data.TokenIds]:
    """A new run: the vocabulary from the training text, a fresh model."""
    if s.classes and s.sampled:
        raise ElmanError("--sampled trains the full-softmax model; it does not go with --classes")
    vocab, train_ids = ids(s.train, s)
    s.fit_vocabulary(len(vocab))
    if s.classes > len(vocab):
        raise ElmanError(f"--classes {s.classes} is more than the {len(vocab)} words of the vocabulary")
    if s.direct and s.direct_size < max(len(vocab), s.classes):
        raise ElmanError(f"--direct {s.direct:g} is {s.direct_size} weights, fewer than the {len(vocab)} words "
                         f"of the vocabulary: each n-gram feature needs a window of that many")
    rnnlm = bool(s.direct) and s.direct_hash == "rnnlm"
    if rnnlm:
        vocab, train_ids = _rnnlm_ids(vocab, ids, s)
    p = Params.init(len(vocab), s.embed, s.hidden, seed=s.seed, classes=s.classes, counts=vocab.counts,
                    direct=s.direct_size, direct_order=s.direct_order)
    if rnnlm:
        p.direct_hash = "rnnlm"
    run = Run(out, s, p, vocab, make_run_optimizer(s, p.as_dict()),
              Schedule(lr=s.lr, min_improvement=s.min_improvement),
              Progress(rng=np.random.default_rng(s.seed).bit_generator.state),
              h=np.zeros((s.streams, s.hidden), dtype=p.dtype), best=p.copy().as_dict())
    return run, train_ids


def _rnnlm_ids(vocab, ids: _Reader, s: Settings) -> tuple[data.Vocab, data.TokenIds]:
    """RNNLM's hashing hashes its word indices, </s> first: the vocabulary
    with <eos> moved to id 0 (``export --rnnlm`` then keeps every id), and
    the text read under it."""
    if s.sampled and not s.classes and s.sampled < len(vocab):
        raise ElmanError("--direct-hash rnnlm goes with a class softmax (--classes K) or the full one "
                         "(--sampled 0), not a sampled one")
    if s.direct_size - s.direct_size // 2 < s.classes:
        raise ElmanError(f"--direct-hash rnnlm keeps half the table for the classes' windows: --direct "
                         f"{s.direct:g} is too small for {s.classes} classes")
    order = [vocab.eos_id] + [i for i in range(len(vocab)) if i != vocab.eos_id]
    counts = None if vocab.counts is None else np.asarray(vocab.counts)[order]
    return ids(s.train, s, data.Vocab([vocab.itos[i] for i in order], counts))


def _read_corpus(run: Run, train_ids: data.TokenIds, ids: _Reader, part: slice) -> Corpus:
    """The corpus with this process's streams (``part`` of the B) only."""
    s = run.settings
    data.check_enough(train_ids.ids, s.streams, s.steps, s.train)
    return Corpus(data.Streams(train_ids.ids, s.streams, train_ids.release, part), len(train_ids),
                  ids(s.valid, s, run.vocab)[1], ids(s.test, s, run.vocab)[1] if s.test else None)


def _announce(run: Run, corpus: Corpus, say) -> None:
    s = run.settings
    say(f"elman: training a {len(run.vocab)}-word model (d={s.embed}, Dh={s.hidden}) on {corpus.tokens} "
        f"tokens of {s.train}: {s.streams} streams x {s.steps} steps, {corpus.windows(s.steps)} windows an "
        f"epoch, {s.optimizer} lr {run.opt.lr:g}"
        + (f"; sampled softmax, {s.sampled} ids a window (train ppl* is the sampled loss's)" if run.samples
           else f"; full softmax (--sampled {s.sampled} >= the vocabulary)" if s.sampled
           else f"; class softmax, {s.classes} classes" if s.classes else "")
        + (f"; dropout {s.dropout:g}" if s.dropout else "")
        + (f"; direct connections: {s.direct_size} weights, order {s.direct_order}" if s.direct else "")
        + (f"; windows on {window_threads(run)} thread of {threads.THREADS} cores"
           + (", the output layer's updates beside them on another" if overlaps(run) else "")
           + " (ELMAN_THREADS to choose)" if window_threads(run) < threads.THREADS else ""))
    if run.comm.size > 1:
        say(f"elman: {run.comm.size} processes, {s.streams // run.comm.size} streams and {window_threads(run)} "
            f"thread(s) each: " + ", ".join(f"{r}: {w}" for r, w in enumerate(run.comm.where)))


# -- one epoch ------------------------------------------------------------------------

def _train_epoch(run: Run, corpus: Corpus, clock: Clock, ctrl_c: _CtrlC, quiet: bool, overlap_on: bool) -> float:
    """The epoch's remaining windows, each one step of truncated BPTT and an
    update; returns the words/s of this process's part of the epoch.
    ``overlap_on``: the output layer's updates on a second thread (``training.cores``)."""
    s, p, opt, prog = run.settings, run.params, run.opt, run.prog
    nb = corpus.windows(s.steps)
    # Draws depend on (seed, update number) only: a resumed run draws the same ids.
    sampler = Sampler(unigram_proposal(run.vocab.counts), s.sampled, seed=s.seed) if run.samples else None
    params, part = p.as_dict(), run.comm.part(s.streams)
    bar = progress.job(f"epoch {prog.epoch}/{s.epochs}", "windows", nb, initial=prog.windows_done,
                       quiet=quiet or not run.comm.writer, note=f"nothing saved since the last checkpoint in {run.out}")
    t0, tokens0 = time.monotonic(), prog.tokens
    overlap = Overlap(overlap_on)
    with bar, contextlib.closing(overlap), threads.spare(overlap.pool):
        for k, x, y in corpus.streams.windows(s.steps, start=prog.windows_done):
            ramp, rate = rate_ramp(run, clock, nb), dropout_rate(run, clock, nb)
            ready = overlap.ready(opt, run.sched.lr * (run.comm.lead(ramp) if clock.deadline is not None else ramp))
            sampled = (sampler.draw(opt.t), sampler.log_q) if sampler else None
            # Masks, like samples, depend on (seed, update number) only; each
            # process applies its streams' rows of the one-process masks.
            dropout = (rate, (s.seed, opt.t), (part.start, s.streams)) if rate else None
            # The words before the window in this process's streams (direct connections).
            history = data.preceding(corpus.streams.rows, k * s.steps, max(p.order - 2, 0)) if p.order else None
            # Gradients of the mean loss over the B*T positions of all processes, summed over them.
            positions = s.streams * x.shape[1]
            loss, grads, h = bptt(p, x, y, run.h[part], sampled=sampled, sparse=True, dropout=dropout,
                                  scale=1.0 / positions, history=history, deferred=run.comm.deferred, ready=ready)
            if "D" in grads:
                # The direct weights' plain SGD rate is per token, as RNNLM's: an
                # Adagrad step, normalised per weight, moves every weight the
                # window touches by about the full rate however small its
                # gradient, and D then learnt the training n-grams by heart
                # (README, "Direct connections").
                grads["D"] *= p.dtype.type(positions)
            grads, loss, (stop, over) = run.comm.allreduce_grads(grads, loss, (ctrl_c.requested, clock.over()))
            try:
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the loss is {loss}")
                run.comm.step(opt, params, grads, later=overlap.later)
            except FloatingPointError as exc:
                raise run.diverged(k + 1, exc) from None
            overlap.start(opt)
            run.h[part] = h
            prog.windows_done, prog.nats, prog.tokens = k + 1, prog.nats + loss, prog.tokens + positions
            prog.elapsed = clock.elapsed()
            wps = (prog.tokens - tokens0) / max(time.monotonic() - t0, 1e-9)
            bar.update(1)
            bar.set_postfix(ppl=f"{prog.train_ppl:.1f}", wps=f"{wps:.0f}")
            _after_window(run, nb, wps, stop, overlap, clock)
            if over:
                prog.stopped = "budget"
                break
    return (prog.tokens - tokens0) / max(time.monotonic() - t0, 1e-9)


def _after_window(run: Run, nb: int, wps: float, stop: bool, overlap: Overlap, clock: Clock) -> None:
    """Metrics and checkpoints inside an epoch; Ctrl-C (on any process: ``stop``) saves and stops."""
    s, done = run.settings, run.prog.windows_done
    if s.log_every and done % s.log_every == 0 and done < nb:
        run.log(nb, wps, **clock.notes())
    if (s.checkpoint_every and done % s.checkpoint_every == 0 and done < nb) or stop:
        overlap.wait()
        rundir.save(run)
    if stop:
        raise run.interrupted()


def _end_epoch(run: Run, corpus: Corpus, clock: Clock, wps: float, say) -> None:
    """Validate, let the schedule decide (keep or restore the weights, the
    next rate, stop), log and checkpoint."""
    s, prog, sched, opt = run.settings, run.prog, run.sched, run.opt
    params = run.params.as_dict()
    valid = _perplexity(run, corpus.valid, "validation")
    if not math.isfinite(valid["perplexity"]):
        raise run.diverged(prog.windows_done, f"the validation perplexity is {valid['perplexity']}")
    decision = sched.update(prog.epoch, math.log(valid["perplexity"]), anneal=_few_left(run, clock))
    keep, undo = (run.best, params) if decision.improved else (params, run.best)
    for name, value in undo.items():
        keep[name][...] = value
    prog.elapsed = clock.elapsed()
    run.log(corpus.windows(s.steps), wps, valid_ppl=valid["perplexity"], **clock.notes(),
            **({} if decision.improved else {"restored": True}))
    say(f"epoch {prog.epoch:3d}  train ppl{'*' if run.samples else ' '}{prog.train_ppl:8.2f}  "
        f"valid ppl {valid['perplexity']:8.2f}  lr {opt.lr:<8g} {wps:6.0f} words/s"
        + ("" if decision.improved else "  (worse: restored the best weights)")
        + ("  (no dropout: the budget is too short for it)" if clock.dropout == 0 else ""))
    opt.lr = decision.lr
    if decision.stop:
        prog.stopped = "schedule"
    elif prog.epoch >= s.epochs and prog.stopped is None:
        prog.stopped = "epochs"
    prog.epoch, prog.windows_done, prog.nats, prog.tokens = prog.epoch + 1, 0, 0.0, 0
    prog.epoch_started = prog.elapsed
    run.h = np.zeros_like(run.h)
    rundir.save(run)


def _perplexity(run: Run, text: data.TokenIds, desc: str) -> dict:
    """The whole ``text`` as one stream, on rank 0 (its bar there): exactly `elman eval`'s number."""
    def rank0():
        with progress.job(desc, "tokens", len(text), quiet=not run.comm.writer) as job:
            return perplexity(run.params, text.ids, run.vocab.eos_id, release=text.release, step=job.update)
    return run.comm.on_writer(rank0)


def _few_left(run: Run, clock: Clock) -> bool:
    """Whether at most ``--anneal`` epochs of ``--epochs`` remain after this one
    (a ``--minutes`` budget anneals window by window instead: ``budget.rate_ramp``)."""
    n = run.settings.anneal
    return bool(n) and run.prog.epoch >= run.settings.epochs - n


def _finish(run: Run, corpus: Corpus, say) -> dict:
    test = None
    if corpus.test is not None:
        test = _perplexity(run, corpus.test, "test")
        run.metrics.write(test_ppl=test["perplexity"], test_tokens=test["tokens"])
        say(f"test perplexity {test['perplexity']:.2f} ({test['tokens']} tokens of {run.settings.test})")
    say(f"elman: best validation perplexity {math.exp(run.sched.best):.2f} (epoch {run.sched.best_epoch}); "
        f"model saved in {run.out}")
    return run.summary(test)
