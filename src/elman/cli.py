"""Command line: argument parsing and dispatch only.

Each subcommand is a pair ``_add_<name>(sub)`` / ``_run_<name>(args)``; the
run function imports its module lazily so ``elman --help`` stays instant and
nothing heavy loads for a command that does not need it. Every expected
failure is an :class:`ElmanError` and becomes one line on stderr.
"""
from __future__ import annotations

import argparse
import sys

from elman.errors import ElmanError


# -- argument types shared by the subcommands ---------------------------------

def _number(cast, noun, ok, want):
    """An argparse type: ``cast`` the text, then require ``ok(value)``."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
        return value
    return parse


positive_int = _number(int, "an integer", lambda v: v > 0, "positive")
positive_float = _number(float, "a number", lambda v: 0 < v < float("inf"), "a positive finite number")
nonnegative_float = _number(float, "a number", lambda v: 0 <= v < float("inf"), "a non-negative finite number")
rate = _number(float, "a number", lambda v: 0 <= v < 1, "a rate in [0, 1)")


# -- gradcheck -----------------------------------------------------------------

def _add_gradcheck(sub):
    p = sub.add_parser("gradcheck", help="check every analytic gradient against finite differences (float64)")
    p.add_argument("--V", type=positive_int, default=11, help="vocabulary size (default 11)")
    p.add_argument("--d", type=positive_int, default=5, help="embedding size (default 5)")
    p.add_argument("--Dh", type=positive_int, default=7, help="hidden size (default 7)")
    p.add_argument("--B", type=positive_int, default=3, help="batch streams (default 3)")
    p.add_argument("--T", type=positive_int, default=4, help="time steps (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", action="store_true", help="check the seed's eight per-step quantities instead of BPTT")
    p.add_argument("--tol", type=positive_float, default=1e-6, help="pass when max relative error < tol")
    p.set_defaults(func=_run_gradcheck)


def _run_gradcheck(args) -> int:
    from elman.gradcheck import format_table, gradcheck

    if args.V < 2:
        raise ElmanError("--V must be at least 2 (a softmax over one word predicts nothing)")
    rows = gradcheck(V=args.V, d=args.d, Dh=args.Dh, B=args.B, T=args.T,
                               seed=args.seed, step=args.step)
    print(format_table(rows, args.tol))
    return 0 if all(r.max_rel_error < args.tol for r in rows) else 1


# -- train, eval, score, generate, plot, demo ----------------------------------------

def _add_train(sub):
    p = sub.add_parser(
        "train", help="train a language model on a text corpus",
        description="Train on B parallel streams of T steps (truncated BPTT), validate each epoch, "
                    "halve the learning rate when validation stalls (Mikolov's schedule), keep the best "
                    "model in DIR and the latest state in DIR/last.")
    p.add_argument("--train", metavar="FILE|DIR",
                   help="training text, one sentence a line; or a directory holding train.txt, valid.txt "
                        "and optionally test.txt")
    p.add_argument("--valid", metavar="FILE", help="validation text (perplexity each epoch)")
    p.add_argument("--test", metavar="FILE", help="test text, evaluated with the best model at the end")
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--level", choices=("word", "char"), help="tokens: words (default) or characters")
    p.add_argument("--encoding", help="text encoding of the files (default utf-8)")
    p.add_argument("--max-vocab", type=positive_int, metavar="N", help="keep the N most frequent tokens")
    p.add_argument("--min-count", type=positive_int, metavar="K", help="keep tokens seen at least K times (default 1)")
    p.add_argument("--hidden", type=positive_int, metavar="Dh", help="hidden units (default 200)")
    p.add_argument("--embed", type=positive_int, metavar="d", help="embedding size (default 200)")
    p.add_argument("--batch", type=positive_int, metavar="B", help="parallel streams (default 32)")
    p.add_argument("--bptt", type=positive_int, metavar="T", help="steps per window (default 20)")
    p.add_argument("--epochs", type=positive_int, help="at most this many epochs (default 20)")
    p.add_argument("--optimizer", choices=("sgd", "adagrad", "adam"), help="default adagrad")
    p.add_argument("--lr", type=positive_float,
                   help="learning rate (default: adagrad 0.1, sgd 8, adam 0.002)")
    p.add_argument("--clip", type=nonnegative_float, help="clip the gradient's global norm (default 5.0; 0: off)")
    p.add_argument("--min-improvement", type=nonnegative_float, metavar="F",
                   help="halve the rate once validation log-likelihood improves by less than this "
                        "fraction in an epoch; stop at the next such epoch (default 0.003)")
    p.add_argument("--seed", type=int, help="initialisation seed (default 0)")
    p.add_argument("--classes", type=positive_int, metavar="K",
                   help="class-factorised softmax over K frequency-binned word classes: a position costs "
                        "K + |class| output units instead of V; perplexity stays exact (default: full softmax)")
    p.add_argument("--dropout", type=rate, metavar="P",
                   help="inverted dropout with rate P on e(t) into the recurrence and on h(t) into the "
                        "output layer, in training only (default 0: none)")
    p.add_argument("--sampled", type=positive_int, metavar="S",
                   help="train with sampled softmax: each window's loss over its targets and S ids drawn "
                        "from the unigram^0.75 distribution instead of all V words; the model and its "
                        "validation and test perplexities stay the exact full softmax's (default: off)")
    p.add_argument("--minutes", type=positive_float, metavar="M",
                   help="stop after M minutes of this session: the epoch in progress is cut short, "
                        "validated and kept if better (default: no limit)")
    p.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                   help="also checkpoint every N batches (default: each epoch only)")
    p.add_argument("--log-every", type=positive_int, metavar="N",
                   help="a metrics.jsonl line every N batches (default 100)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run saved in DIR/last")
    again.add_argument("--force", action="store_true", help="replace a model already in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=_run_train)


_TRAIN_OPTIONS = ("level", "encoding", "max_vocab", "min_count", "hidden", "embed", "batch", "bptt",
                  "epochs", "optimizer", "lr", "clip", "min_improvement", "seed", "checkpoint_every",
                  "log_every", "classes", "sampled", "dropout")


def _run_train(args) -> int:
    from pathlib import Path

    from elman.data import resolve_corpus
    from elman.train import Interrupted, train

    options = {k: getattr(args, k) for k in _TRAIN_OPTIONS}
    if args.resume:  # the saved run knows its files; any named here must match them
        options.update({k: str(Path(v).resolve()) for k in ("train", "valid", "test")
                        if (v := getattr(args, k)) is not None})
    elif args.train is None:
        raise ElmanError("--train FILE (or a corpus directory) is required to start training")
    else:
        files = resolve_corpus(args.train, args.valid, args.test)
        options.update(zip(("train", "valid", "test"), (str(Path(f).resolve()) if f else None for f in files)))
    try:
        train(args.out, options, resume=args.resume, force=args.force, quiet=args.quiet,
              time_budget=None if args.minutes is None else 60 * args.minutes)
    except Interrupted as exc:
        print(exc, file=sys.stderr)
        return 130
    return 0


def _add_model_and_data(p, data=True):
    p.add_argument("--model", required=True, metavar="DIR", help="model directory written by elman train")
    if data:
        p.add_argument("--data", required=True, metavar="FILE", help="text, one sentence a line")
        p.add_argument("--encoding", help="text encoding (default: the model's training encoding)")


def _add_eval(sub):
    p = sub.add_parser("eval", help="perplexity and bits per token of a text",
                       description="The text is one stream: h0 = 0, <eos> before the first token, every "
                                   "token including each line's <eos> predicted, unknown words as <unk>.")
    _add_model_and_data(p)
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
    import json

    from elman import evaluate

    p, vocab, cfg = evaluate.load(args.model)
    result = evaluate.perplexity(p, evaluate.read_ids(args.data, vocab, cfg, args.encoding), vocab.eos_id)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"perplexity {result['perplexity']:.3f}  bits/token {result['bits_per_token']:.4f}  "
              f"tokens {result['tokens']}  ({args.data})")
    return 0


def _add_score(sub):
    p = sub.add_parser("score", help="log10 probability of each line (n-best rescoring)",
                       description="One log10 probability per line of the file (its tokens and its <eos>, "
                                   "each line from h0 = 0 after <eos>, as RNNLM's -test; a blank line "
                                   "scores an empty sentence), then 'total <sum>'.")
    _add_model_and_data(p)
    p.set_defaults(func=_run_score)


def _run_score(args) -> int:
    from elman import evaluate

    p, vocab, cfg = evaluate.load(args.model)
    lines = evaluate.read_line_ids(args.data, vocab, cfg, args.encoding)
    scores = evaluate.line_log10_probs(p, lines, vocab.eos_id)
    print("\n".join(f"{v:.6f}" for v in scores))
    print(f"total {scores.sum():.6f}")
    return 0


def _add_generate(sub):
    p = sub.add_parser("generate", help="sample text from a model")
    _add_model_and_data(p, data=False)
    p.add_argument("--words", type=positive_int, default=50, help="tokens to sample (default 50)")
    p.add_argument("--temperature", type=positive_float, default=1.0,
                   help="below 1: safer, above 1: wilder (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same text (default 0)")
    p.add_argument("--prime", metavar="TEXT", default="", help="text to start from")
    p.set_defaults(func=_run_generate)


def _run_generate(args) -> int:
    from elman import evaluate
    from elman.data import line_tokens

    p, vocab, cfg = evaluate.load(args.model)
    level = cfg.get("level", "word")
    prime = line_tokens(args.prime, level)
    ids = evaluate.sample(p, vocab.encode(prime), vocab.eos_id, args.words, args.temperature, args.seed)
    print(evaluate.detokenize(prime + vocab.decode(ids), level))
    return 0


def _add_plot(sub):
    p = sub.add_parser("plot", help="learning-curve PNG from DIR/metrics.jsonl (needs elman[plot])")
    p.add_argument("dir", metavar="DIR", help="model directory written by elman train")
    p.add_argument("--out", metavar="PNG", help="where to write (default DIR/learning-curve.png)")
    p.set_defaults(func=_run_plot)


def _run_plot(args) -> int:
    from elman.metrics import plot_learning_curve

    print(plot_learning_curve(args.dir, args.out))
    return 0


def _add_demo(sub):
    p = sub.add_parser("demo", help="train on the King James Bible, sample, answer the transpose question")
    p.add_argument("--minutes", type=positive_float, default=3.0, help="time budget (default 3)")
    p.add_argument("--out", metavar="DIR", default="runs/demo", help="model directory (default runs/demo)")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from elman.demo import demo

    return demo(args.out, minutes=args.minutes)


# -- explain, check ---------------------------------------------------------------

def _add_explain(sub):
    p = sub.add_parser("explain", help="derive and explain gradients: index notation, the transpose, shapes, a witness")
    p.add_argument("targets", nargs="*", default=["U"], metavar="TARGET",
                   help="U b2 h b1 L_x I H h_prev (the seed's quantities), all, or bptt (default U)")
    p.add_argument("--format", choices=("text", "markdown", "latex", "html", "json"), default="text")
    p.add_argument("--convention", choices=("row", "column"), default="row",
                   help="write the summary formulas for row vectors (the seed's) or column vectors")
    p.add_argument("--verify", action="store_true",
                   help="derive again on 5 random instances of other sizes; exit 1 if any formula fails")
    p.add_argument("--model-file", metavar="F", default=None,
                   help="a model in the equation language (default: the seed's model; also mlp, tanh_rnn)")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    p.set_defaults(func=_run_explain)


def _run_explain(args) -> int:
    from elman.explain import explain

    result = explain(args.targets, model=args.model_file, convention=args.convention, verify=args.verify)
    _emit(result.render(args.format), args.out)
    return 0 if result.ok else 1


def _add_check(sub):
    p = sub.add_parser("check", help="what is wrong with my gradient formula? a verdict and why")
    p.add_argument("formula", help='NumPy-like, over the model\'s names, e.g. "h.T @ (yhat - y)"')
    p.add_argument("--wrt", required=True, metavar="TARGET", help="the quantity differentiated, e.g. U")
    p.add_argument("--model-file", metavar="F", default=None, help="a model in the equation language")
    p.add_argument("--convention", choices=("row", "column"), default="row")
    p.add_argument("--json", action="store_true", help='print {"verdict": ..., "explanation": ...}')
    p.set_defaults(func=_run_check)


def _run_check(args) -> int:
    import json

    from elman.explain import check

    v = check(args.formula, args.wrt, model=args.model_file, convention=args.convention)
    print(json.dumps(v.as_dict(), indent=1, ensure_ascii=False) if args.json else str(v))
    return 0 if v.verdict == "correct" else 1


def _emit(text: str, out) -> None:
    if out:
        from elman.atomic import atomic_write_text
        atomic_write_text(out, text)
    else:
        sys.stdout.write(text)


# -- bench -----------------------------------------------------------------------

def _add_bench(sub):
    p = sub.add_parser("bench", help="time training and evaluation steps against this machine's matmul peak "
                                     "(and PyTorch)")
    p.add_argument("--V", type=positive_int, default=10000, help="vocabulary size (default 10000)")
    p.add_argument("--d", type=positive_int, default=200, help="embedding size (default 200)")
    p.add_argument("--Dh", type=positive_int, default=200, help="hidden size (default 200)")
    p.add_argument("--B", type=positive_int, default=32, help="batch streams (default 32)")
    p.add_argument("--T", type=positive_int, default=20, help="time steps (default 20)")
    p.add_argument("--steps", type=positive_int, default=20, help="timed steps per implementation (default 20)")
    p.add_argument("--rounds", type=positive_int, default=5,
                   help="the steps are split into this many alternating rounds (default 5)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--classes", type=positive_int, default=0, metavar="K",
                   help="also bench a class-factorised softmax with K word classes")
    p.add_argument("--sampled", type=positive_int, default=0, metavar="S",
                   help="also bench sampled-softmax training with S ids a window")
    p.add_argument("--vs-torch", action="store_true", help="also run PyTorch eager autograd on the same model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_run_bench)


def _run_bench(args) -> int:
    import importlib.util
    import json

    from elman.bench import Config, bench, format_report

    if args.V < 2:
        raise ElmanError("--V must be at least 2")
    if args.classes > args.V:
        raise ElmanError(f"--classes {args.classes} is more than the {args.V} words of --V")
    if args.vs_torch and importlib.util.find_spec("torch") is None:
        raise ElmanError("--vs-torch needs PyTorch: pip install 'elman[bench]' (torch==2.13.0)")
    cfg = Config(V=args.V, d=args.d, Dh=args.Dh, B=args.B, T=args.T, dtype=args.dtype,
                 classes=args.classes, sampled=args.sampled, seed=args.seed)
    res = bench(cfg, steps=args.steps, rounds=min(args.rounds, args.steps), vs_torch=args.vs_torch)
    print(json.dumps(res, indent=1) if args.json else format_report(res))
    return 0


# -- the parser -----------------------------------------------------------------

# Each entry adds one subcommand; keep one line per command.
COMMANDS = [
    _add_gradcheck,
    _add_train,
    _add_eval,
    _add_score,
    _add_generate,
    _add_plot,
    _add_demo,
    _add_explain,
    _add_check,
    _add_bench,
]


class _Parser(argparse.ArgumentParser):
    """A usage error is one line too (argparse's default prints the usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="elman",
        description="The Elman RNN language model: exact gradients, explained and verified; a fast, safe trainer.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ElmanError as exc:
        print(f"elman: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("elman: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (OSError, MemoryError) as exc:
        print(f"elman: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
