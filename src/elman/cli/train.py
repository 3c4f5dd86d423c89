"""``elman train``."""
from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

from elman.cli.args import add_cache_dir, add_quiet, ngram_order, nonnegative_float, nonnegative_int, positive_float, positive_int, rate
from elman.errors import ElmanError
from elman.training.rules import DEFAULT_LR
from elman.training.state import DIRECT, DIRECT_PER_WORD, DROPOUT_EPOCHS, SAMPLED, Settings, default

def add_train(sub):
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
    p.add_argument("--min-count", type=positive_int, metavar="K", help=f"keep tokens seen at least K times (default {default('min_count')})")
    p.add_argument("--hidden", type=positive_int, metavar="Dh", help=f"hidden units (default {default('hidden')})")
    p.add_argument("--embed", type=positive_int, metavar="d", help=f"embedding size (default {default('embed')})")
    p.add_argument("--batch", dest="streams", type=positive_int, metavar="B",
                   help=f"parallel streams (default {default('streams')})")
    p.add_argument("--bptt", dest="steps", type=positive_int, metavar="T",
                   help=f"steps per window, the truncation of BPTT (default {default('steps')})")
    p.add_argument("--epochs", type=positive_int, help=f"at most this many epochs (default {default('epochs')})")
    p.add_argument("--optimizer", choices=("sgd", "adagrad", "adam", "lazyadam"),
                   help=f"default {default('optimizer')}; lazyadam: Adam's moments move only on the rows and "
                        "columns a window's gradient touches (PyTorch's SparseAdam)")
    p.add_argument("--lr", type=positive_float,
                   help="learning rate (default: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    p.add_argument("--clip", type=nonnegative_float, help=f"clip the gradient's global norm (default {default('clip')}; 0: off)")
    p.add_argument("--min-improvement", type=nonnegative_float, metavar="F",
                   help="halve the rate once validation log-likelihood improves by less than this "
                        "fraction in an epoch; stop at the next such epoch "
                        f"(default {default('min_improvement')})")
    p.add_argument("--anneal", type=nonnegative_int, metavar="N",
                   help="start halving the rate at the latest when N epochs of --epochs remain; under "
                        "--minutes, the rate falls window by window to 0 at the deadline over the last N "
                        f"epochs' time at the current pace (default {default('anneal')}; 0: off, "
                        "halving only when validation stalls)")
    p.add_argument("--seed", type=int, help=f"initialisation seed (default {default('seed')})")
    p.add_argument("--classes", type=nonnegative_int, metavar="K",
                   help="class-factorised softmax over K frequency-binned word classes: a position costs "
                        "K + |class| output units instead of V, to train and to score; perplexity stays exact "
                        "(default: half the square root of the vocabulary size, 50 for 10k words; 0: the full "
                        "softmax over all V words, trained with --sampled)")
    p.add_argument("--dropout", type=rate, metavar="P",
                   help="inverted dropout with rate P on e(t) into the recurrence and on h(t) into the "
                        f"output layer, in training only (default {default('dropout'):g}; 0: none; under a --minutes "
                        f"budget of fewer than {DROPOUT_EPOCHS} epochs at the run's pace: none)")
    p.add_argument("--sampled", type=nonnegative_int, metavar="S",
                   help="train with sampled softmax: each window's loss over its targets and S ids drawn "
                        "from the unigram^0.75 distribution instead of all V words; the model and its "
                        "validation and test perplexities stay the exact full softmax's; S > 0 alone "
                        f"means --classes 0 (default {SAMPLED} with --classes 0, else 0; 0, or S >= V: the "
                        "full softmax)")
    p.add_argument("--direct", type=nonnegative_float, metavar="SIZE",
                   help="direct connections (RNNME): SIZE million hashed n-gram weights added to the output "
                        f"logits (4 bytes each) (default {DIRECT:g}; {DIRECT_PER_WORD} a word for fewer than "
                        "10k words, 2 V for more than 8M; 0: none)")
    p.add_argument("--direct-order", type=ngram_order, metavar="N",
                   help="n-gram order of the direct connections: features of the 1..N-1 preceding words "
                        f"(default {default('direct_order')})")
    p.add_argument("--direct-hash", choices=("elman", "rnnlm"),
                   help="how the direct connections' n-grams are hashed: elman's mixing hash, or RNNLM's own "
                        "(what `elman export --rnnlm` needs; <eos> becomes id 0) (default elman)")
    p.add_argument("--direct-lr", type=positive_float, metavar="R",
                   help="plain SGD rate of the direct weights, per token, halved with the run's rate "
                        f"(default {default('direct_lr'):g}; RNNLM's is 0.1)")
    p.add_argument("--minutes", type=positive_float, metavar="M",
                   help="stop after M minutes of this run: the epoch in progress is cut short, "
                        "validated and kept if better; the rate falls to 0 at the deadline (--anneal) and a "
                        f"budget of fewer than {DROPOUT_EPOCHS} epochs trains without dropout (default: no limit)")
    p.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                   help="also checkpoint every N batches (default: each epoch only)")
    p.add_argument("--log-every", type=positive_int, metavar="N",
                   help=f"a metrics.jsonl line every N batches (default {default('log_every')})")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run saved in DIR/last")
    again.add_argument("--force", action="store_true", help="replace a model already in DIR")
    add_quiet(p, "no progress bar or per-epoch lines")
    add_cache_dir(p)
    p.set_defaults(func=run_train)


# The Settings fields an option may set (train, valid, test are resolved apart).
# (``processes`` is not an option: it is the number of MPI processes running.)
_FROM_OPTIONS = [f.name for f in fields(Settings) if f.name not in ("train", "valid", "test", "processes")]


def run_train(args) -> int:
    from elman.data import resolve_corpus
    from elman.training.train import Interrupted, train

    options = {k: getattr(args, k) for k in _FROM_OPTIONS}
    no_direct = args.direct == 0
    for flag, value in (("--direct-order", args.direct_order), ("--direct-lr", args.direct_lr),
                        ("--direct-hash", args.direct_hash)):
        if value is not None and no_direct and not args.resume:
            raise ElmanError(f"{flag} is a setting of direct connections; give --direct SIZE too")
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
              time_budget=None if args.minutes is None else 60 * args.minutes, cache_dir=args.cache_dir)
    except Interrupted as exc:
        if not getattr(exc, "silent", False):    # under MPI, rank 0 says it for all
            print(exc, file=sys.stderr)
        return 130
    return 0
