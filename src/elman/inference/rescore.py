"""``elman score`` and the per-token, interpolating ``elman eval``: lines
read as they come, scored (``score.line_losses``), combined with another
model (``interpolate``), written as they are done.

Nothing is written half-way: a file input is read through once first
(``nbest.check_lines``), so a bad line, an empty file or a ``--lm-prob``
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

import numpy as np

from elman import progress
from elman.atomic import atomic_text_stream
from elman.data import EOS
from elman.data.stream import STDIN, spool
from elman.errors import ElmanError
from elman.inference import interpolate, nbest, score

LN10 = math.log(10.0)


def check_options(args, level: str) -> None:
    """The combinations of the interpolation options, one line each."""
    other = args.ngram or args.lm_prob
    if args.lam is not None and not other:
        raise ElmanError("--lambda weighs elman against another model: give --ngram LM or --lm-prob FILE")
    if other and args.lam is None:
        raise ElmanError(f"{'--ngram' if args.ngram else '--lm-prob'} needs --lambda L, the weight of elman "
                         "in [0, 1] (or auto with --heldout FILE)")
    if args.lam == "auto" and not args.heldout:
        raise ElmanError("--lambda auto fits the weight on held-out text: give --heldout FILE")
    if args.heldout and args.lam != "auto":
        raise ElmanError("--heldout is the text --lambda auto fits on; give --lambda auto or drop --heldout")
    if args.lam == "auto" and args.lm_prob and not args.heldout_lm_prob:
        raise ElmanError("--lambda auto with --lm-prob needs --heldout-lm-prob FILE, the other model's "
                         "probabilities of the --heldout text")
    if args.heldout_lm_prob and not (args.lm_prob and args.lam == "auto"):
        raise ElmanError("--heldout-lm-prob goes with --lm-prob and --lambda auto")
    if args.ngram and level != "word":
        raise ElmanError(f"--ngram scores words, and this model reads {level}s; give the other model's "
                         "per-token probabilities with --lm-prob instead")
    if STDIN in (args.heldout, args.heldout_lm_prob, args.lm_prob):
        raise ElmanError("--heldout, --heldout-lm-prob and --lm-prob want files (only --data may be '-')")
    if getattr(args, "per_token", None) == STDIN:
        raise ElmanError("--per-token wants a file name (standard output has the scores)")


class Scorer:
    """What one command scores: the model, how lines are read and run, and the other model."""

    def __init__(self, p, vocab, cfg, args, command: str):
        self.p, self.vocab, self.args, self.command = p, vocab, args, command
        self.level = cfg.get("level", "word")
        self.encoding = args.encoding or cfg.get("encoding", "utf-8")
        self.nbest = command == "score" and args.nbest
        self.carry = command == "eval" or args.carry
        self.dynamic = getattr(args, "dynamic", None) if command == "score" else None
        if self.dynamic is not None and (self.nbest or self.carry):
            raise ElmanError("score --dynamic learns from each line in turn, each from h0 = 0: it does not "
                             "take --nbest or --carry (hypotheses would teach the model each other)")
        check_options(args, self.level)

    def lines(self, path, check: bool = False):
        keep_blank = self.command == "score"
        if check:
            return nbest.check_lines(path, self.vocab, self.level, self.encoding, self.nbest, keep_blank)
        return nbest.read_lines(path, self.vocab, self.level, self.encoding, self.nbest, keep_blank)

    def losses(self, path):
        """(line, -ln P_rnn of each target) for each line of ``path``, in order."""
        if self.dynamic is None:
            return score.line_losses(self.p, self.lines(path), self.vocab.eos_id, self.carry, self.nbest)
        from elman.inference.dynamic import iter_line_losses
        lines, ids = itertools.tee(self.lines(path))
        how = self.args.dynamic_how
        return zip(lines, iter_line_losses(self.p, (line.ids for line in ids), how["lr"], how.get("direct_lr"),
                                           how["decay"], self.args.dynamic_scale))

    def scored(self, path, other=None, lam=None):
        """(line, ln P_rnn, ln P_other or None, ln P) for each line of ``path``."""
        for line, losses in self.losses(path):
            ln_rnn = -losses
            if other is None:
                yield line, ln_rnn, None, ln_rnn
            else:
                ln_other = other.line(line)
                yield line, ln_rnn, ln_other, interpolate.mix(ln_rnn, ln_other, lam)

    def fit_lambda(self, other) -> float:
        """λ by EM on the --heldout text, read and run as the data is; said on stderr."""
        a = self.args
        held = other if a.ngram else interpolate.LmProbFile(a.heldout_lm_prob)
        tokens = self.lines(a.heldout, check=True)
        held.check(self.lines(a.heldout), tokens)
        pairs = [(r, o) for _, r, o, _ in progress.track(self.scored(a.heldout, held, 1.0), "--lambda auto",
                                                          "tokens", tokens, count=lambda row: len(row[3]))]
        lam, steps = interpolate.fit_lambda(np.concatenate([r for r, _ in pairs]),
                                            np.concatenate([o for _, o in pairs]))
        n = sum(len(r) for r, _ in pairs)
        print(f"elman: lambda {lam:.4f}, fitted by EM on {a.heldout} ({n} tokens, {steps} steps)", file=sys.stderr)
        return lam


def run(p, vocab, cfg, args, command: str, out=None) -> dict:
    """Score ``args.data`` for ``command`` ("score": a line a score, then the
    total; "eval": the summary only). Returns the summary."""
    out = out or sys.stdout
    s = Scorer(p, vocab, cfg, args, command)
    with ExitStack() as stack:
        data = args.data
        if data == STDIN and args.lm_prob:
            data, cleanup = spool(data)
            stack.callback(cleanup)
        tokens = s.lines(data, check=True) if data != STDIN else None
        other = interpolate.other_source(args.ngram, args.lm_prob)
        if other is not None and tokens is not None:
            other.check(s.lines(data), tokens)
        lam = s.fit_lambda(other) if args.lam == "auto" else args.lam
        totals = interpolate.Totals(lam if other is not None else None)
        per_token = stack.enter_context(atomic_text_stream(args.per_token) if args.per_token else nullcontext())
        job = stack.enter_context(progress.job(command, "tokens", tokens, note=_left_behind(args, command)))
        write = job.guard(out).write
        for line, ln_rnn, ln_other, ln_p in s.scored(data, other, lam):
            totals.add(ln_p, ln_rnn, ln_other)
            if command == "score":
                write(_line_record(line, ln_rnn, ln_other, ln_p, args.json))
            if per_token is not None:
                per_token.write("".join(f"{t}\t{v / LN10:.7f}\n" for t, v in zip(line.tokens + [EOS], ln_p)))
            job.update(len(ln_p))
            job.count(**{"hypotheses" if s.nbest else "lines": 1})
        if not totals.tokens:
            raise ElmanError(f"{args.data}: empty or whitespace-only input, no text to score")
        summary = totals.summary()
    _report(summary, args, command, out)
    return summary


def _left_behind(args, command: str) -> str:
    """What an interrupted run leaves: score's lines scored so far, never a part of a file."""
    if command != "score":
        return "nothing written"
    return "standard output has the scores of the lines done" + ("; no --per-token file" if args.per_token else "")


def _line_record(line, ln_rnn, ln_other, ln_p, as_json: bool) -> str:
    if not as_json:
        return f"{ln_p.sum() / LN10:.6f}\n"
    record = {"line": line.number, "log10_prob": float(ln_p.sum()) / LN10, "tokens": len(ln_p)}
    if line.uid is not None:
        record["id"] = line.uid
    if ln_other is not None:
        record.update(rnn_log10_prob=float(ln_rnn.sum()) / LN10, other_log10_prob=float(ln_other.sum()) / LN10)
    return json.dumps(record) + "\n"


def _report(summary: dict, args, command: str, out) -> None:
    if args.json:
        out.write(json.dumps(summary if command == "score" else
                             {k: v for k, v in summary.items() if k != "log10_prob"}) + "\n")
        return
    extra = ""
    if "lambda" in summary:
        extra = (f"  rnn {summary['rnn_perplexity']:.3f}  other {summary['other_perplexity']:.3f}"
                 f"  lambda {summary['lambda']:.4f}")
    if command == "score":
        out.write(f"total {summary['log10_prob']:.6f}  tokens {summary['tokens']}  "
                  f"perplexity {summary['perplexity']:.3f}{extra}\n")
    else:
        out.write(f"perplexity {summary['perplexity']:.3f}  bits/token {summary['bits_per_token']:.4f}  "
                  f"tokens {summary['tokens']}{extra}  ({args.data})\n")
