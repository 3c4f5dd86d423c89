"""The driver of ``elman score`` and the per-token, interpolating ``elman
eval`` (``options.ScoreOptions`` says which): lines read as they come by
the input reader (``readers``), scored (``engine.line_losses``), combined
with another model (``interpolate``), written as they are done.

Nothing is written half-way: a file input is read through once first
(the reader's ``check``), so a bad line, an empty file or a ``--lm-prob``
file of the wrong length is refused before the first score; the
``--per-token`` file appears whole or not at all. Standard input is read
as it comes (scores follow it), and an error there stops at that line,
after the scores of the lines before it; with ``--lm-prob`` it is kept in
a temporary file first, so that the count can be checked.
"""
from __future__ import annotations

import itertools
import json
import math
import sys
from contextlib import ExitStack, nullcontext
from typing import NamedTuple

import numpy as np

from elman import progress
from elman.atomic import atomic_text_stream
from elman.data import EOS
from elman.data.stream import STDIN, spool
from elman.errors import ElmanError
from elman.inference import engine, interpolate
from elman.inference.options import ScoreOptions
from elman.inference.readers import READERS

LN10 = math.log(10.0)


BLOCK = 8192          # tokens of lines combined, summed and written together: numpy's calls a block, not a line


class Block(NamedTuple):
    lines: list
    ln_rnn: np.ndarray
    ln_other: np.ndarray | None
    ln_p: np.ndarray


def _blocks(rows, size: int = BLOCK):
    """Consecutive lists of (line, losses) of about ``size`` tokens each.
    An error in the rows still lets the lines scored before it out first."""
    block, n = [], 0
    try:
        for row in rows:
            block.append(row)
            n += len(row[1])
            if n >= size:
                yield block
                block, n = [], 0
    except (Exception, KeyboardInterrupt):      # not GeneratorExit: a closed generator yields nothing more
        if block:
            yield block
        raise
    if block:
        yield block


def check_options(opts: ScoreOptions, level: str) -> None:
    """The combinations of the interpolation options, one line each."""
    other = opts.ngram or opts.lm_prob
    if opts.lam is not None and not other:
        raise ElmanError("--lambda weighs elman against another model: give --ngram LM or --lm-prob FILE")
    if other and opts.lam is None:
        raise ElmanError(f"{'--ngram' if opts.ngram else '--lm-prob'} needs --lambda L, the weight of elman "
                         "in [0, 1] (or auto with --heldout FILE)")
    if opts.lam == "auto" and not opts.heldout:
        raise ElmanError("--lambda auto fits the weight on held-out text: give --heldout FILE")
    if opts.heldout and opts.lam != "auto":
        raise ElmanError("--heldout is the text --lambda auto fits on; give --lambda auto or drop --heldout")
    if opts.lam == "auto" and opts.lm_prob and not opts.heldout_lm_prob:
        raise ElmanError("--lambda auto with --lm-prob needs --heldout-lm-prob FILE, the other model's "
                         "probabilities of the --heldout text")
    if opts.heldout_lm_prob and not (opts.lm_prob and opts.lam == "auto"):
        raise ElmanError("--heldout-lm-prob goes with --lm-prob and --lambda auto")
    if opts.ngram and level != "word":
        raise ElmanError(f"--ngram scores words, and this model reads {level}s; give the other model's "
                         "per-token probabilities with --lm-prob instead")
    if STDIN in (opts.heldout, opts.heldout_lm_prob, opts.lm_prob):
        raise ElmanError("--heldout, --heldout-lm-prob and --lm-prob want files (only --data may be '-')")
    if opts.per_token == STDIN:
        raise ElmanError("--per-token wants a file name (standard output has the scores)")


class Scorer:
    """What one run scores: the model, how lines are read and run, and the other model."""

    def __init__(self, p, vocab, cfg, opts: ScoreOptions):
        self.p, self.vocab, self.opts = p, vocab, opts
        self.level = cfg.get("level", "word")
        self.encoding = opts.encoding or cfg.get("encoding", "utf-8")
        if opts.format not in READERS:
            raise ElmanError(f"--format {opts.format}: not an input format elman reads ({', '.join(READERS)})")
        self.reader = READERS[opts.format]
        if opts.dynamic is not None and (self.reader.alternatives or opts.carry):
            raise ElmanError("score --dynamic learns from each line in turn, each from h0 = 0: it does not "
                             "take --nbest or --carry (hypotheses would teach the model each other)")
        check_options(opts, self.level)

    def lines(self, path, check: bool = False):
        read = self.reader.check if check else self.reader.read
        return read(path, self.vocab, self.level, self.encoding, self.opts.keep_blank)

    def losses(self, path, tokens=None):
        """(line, -ln P_rnn of each target) for each line of ``path``, in
        order; ``tokens``: how many it holds, when known."""
        dyn = self.opts.dynamic
        if dyn is None:
            return engine.line_losses(self.p, self.lines(path), self.vocab.eos_id, self.opts.carry,
                                      self.reader.alternatives, tokens)
        from elman.inference.dynamic import iter_line_losses
        lines, ids = itertools.tee(self.lines(path))
        how = dyn.how
        return zip(lines, iter_line_losses(self.p, (line.ids for line in ids), how["lr"], how.get("direct_lr"),
                                           how["decay"], dyn.scale))

    def scored(self, path, other=None, lam=None, tokens=None):
        """Blocks of consecutive lines of ``path``: (lines, ln P_rnn,
        ln P_other or None, ln P), each array every token of the block's
        lines in order (``Block``)."""
        for block in _blocks(self.losses(path, tokens)):
            lines = [line for line, _ in block]
            ln_rnn = -np.concatenate([losses for _, losses in block])
            if other is None:
                yield Block(lines, ln_rnn, None, ln_rnn)
            else:
                ln_other = other.lines(lines)
                yield Block(lines, ln_rnn, ln_other, interpolate.mix(ln_rnn, ln_other, lam))

    def fit_lambda(self, other) -> float:
        """λ by EM on the --heldout text, read and run as the data is; said on stderr."""
        a = self.opts
        held = other if a.ngram else interpolate.LmProbFile(a.heldout_lm_prob)
        tokens = self.lines(a.heldout, check=True)
        held.check(self.lines(a.heldout), tokens)
        blocks = list(progress.track(self.scored(a.heldout, held, 1.0, tokens), "--lambda auto",
                                     "tokens", tokens, count=lambda block: len(block.ln_p)))
        lam, steps = interpolate.fit_lambda(np.concatenate([b.ln_rnn for b in blocks]),
                                            np.concatenate([b.ln_other for b in blocks]))
        n = sum(len(b.ln_p) for b in blocks)
        print(f"elman: lambda {lam:.4f}, fitted by EM on {a.heldout} ({n} tokens, {steps} steps)", file=sys.stderr)
        return lam


def run(p, vocab, cfg, opts: ScoreOptions, out=None, other=None) -> dict:
    """Score ``opts.data`` (with ``per_line``: a line a score, then the
    total; else the summary only). Returns the summary. ``other``: the
    ``--ngram`` model already read (else it is read here)."""
    out = out or sys.stdout
    s = Scorer(p, vocab, cfg, opts)
    with ExitStack() as stack:
        data = opts.data
        if data == STDIN and opts.lm_prob:
            data, cleanup = spool(data)
            stack.callback(cleanup)
        tokens = s.lines(data, check=True) if data != STDIN else None
        if other is None:
            other = interpolate.other_source(opts.ngram, opts.lm_prob)
        if other is not None and tokens is not None:
            other.check(s.lines(data), tokens)
        lam = s.fit_lambda(other) if opts.lam == "auto" else opts.lam
        totals = interpolate.Totals(lam if other is not None else None)
        per_token = stack.enter_context(atomic_text_stream(opts.per_token) if opts.per_token else nullcontext())
        job = stack.enter_context(progress.job("score" if opts.per_line else "eval", "tokens", tokens,
                                               note=_left_behind(opts)))
        write = job.guard(out).write
        for block in s.scored(data, other, lam, tokens):
            sums = _line_sums(block)
            totals.add(len(block.ln_p), *sums)
            if opts.per_line:
                write(_line_records(block, sums, opts.json))
            if per_token is not None:
                per_token.write(_token_records(block))
            job.update(len(block.ln_p))
            job.count(**{"hypotheses" if s.reader.alternatives else "lines": len(block.lines)})
        if not totals.tokens:
            raise ElmanError(f"{opts.data}: empty or whitespace-only input, no text to score")
        summary = totals.summary()
    _report(summary, opts, out)
    return summary


def _left_behind(opts: ScoreOptions) -> str:
    """What an interrupted run leaves: score's lines scored so far, never a part of a file."""
    if not opts.per_line:
        return "nothing written"
    return "standard output has the scores of the lines done" + ("; no --per-token file" if opts.per_token else "")


def _token_records(block) -> str:
    """'token<TAB>log10 P' a line, each line's ``<eos>`` after its tokens,
    formatted by one compiled loop (``fast.records``)."""
    from elman.fast.records import token_records      # Numba's import: only --per-token pays it
    tokens = list(itertools.chain.from_iterable((*line.tokens, EOS) for line in block.lines))
    return token_records(tokens, block.ln_p / LN10)


def _line_sums(block) -> list:
    """ln P summed over each line of ``block`` (an array, a float a line), and
    with another model each model's own (else None): each line's array summed
    alone, as numpy sums it (``fast.linesums``), so a line's score is the same
    whatever block it is in."""
    from elman.fast.linesums import line_sums          # Numba's import: scoring pays it anyway
    lengths = np.fromiter((len(line.ids) for line in block.lines), np.int64, len(block.lines))
    return [None if x is None else line_sums(x, lengths) for x in (block.ln_p, block.ln_rnn, block.ln_other)]


def _line_records(block, sums, as_json: bool) -> str:
    """A line's record for each line of ``block``: its log10 probability, or a JSON object."""
    if not as_json:
        return "".join(map("%.6f\n".__mod__, (np.array(sums[0]) / LN10).tolist()))
    out = []
    other = sums[2] is not None
    for i, line in enumerate(block.lines):
        record = {"line": line.number, "log10_prob": float(sums[0][i]) / LN10, "tokens": len(line.ids)}
        if line.uid is not None:
            record["id"] = line.uid
        if other:
            record.update(rnn_log10_prob=float(sums[1][i]) / LN10, other_log10_prob=float(sums[2][i]) / LN10)
        out.append(json.dumps(record) + "\n")
    return "".join(out)


def _report(summary: dict, opts: ScoreOptions, out) -> None:
    if opts.json:
        out.write(json.dumps(summary if opts.per_line else
                             {k: v for k, v in summary.items() if k != "log10_prob"}) + "\n")
        return
    extra = ""
    if "lambda" in summary:
        extra = (f"  rnn {summary['rnn_perplexity']:.3f}  other {summary['other_perplexity']:.3f}"
                 f"  lambda {summary['lambda']:.4f}")
    if opts.per_line:
        out.write(f"total {summary['log10_prob']:.6f}  tokens {summary['tokens']}  "
                  f"perplexity {summary['perplexity']:.3f}{extra}\n")
    else:
        out.write(f"perplexity {summary['perplexity']:.3f}  bits/token {summary['bits_per_token']:.4f}  "
                  f"tokens {summary['tokens']}{extra}  ({opts.data})\n")
