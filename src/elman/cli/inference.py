"""``elman eval``, ``elman score``, ``elman generate``."""
from __future__ import annotations

from elman.cli.args import add_model_and_data, positive_float, positive_int

DYNAMIC_LR = 0.1   # keep equal to elman.inference.dynamic.DEFAULT_LR (the CLI does not import it: speed)


def add_dynamic(p, unit: str) -> None:
    p.add_argument("--dynamic", type=positive_float, nargs="?", const=DYNAMIC_LR, metavar="LR",
                   help=f"dynamic evaluation: after each {unit} is scored, one SGD step on it with rate LR "
                        f"per token (default rate {DYNAMIC_LR:g}); the model file is not changed")

def add_eval(sub):
    p = sub.add_parser("eval", help="perplexity and bits per token of a text",
                       description="The text is one stream: h0 = 0, <eos> before the first token, every "
                                   "token including each line's <eos> predicted, unknown words as <unk>.")
    add_model_and_data(p)
    p.add_argument("--json", action="store_true", help="print one JSON line")
    add_dynamic(p, "segment of T tokens")
    p.add_argument("--bptt", type=positive_int, metavar="T",
                   help="with --dynamic: the segment length (default: the model's training --bptt)")
    p.set_defaults(func=run_eval)


def run_eval(args) -> int:
    import json

    from elman.inference import evaluate

    from elman.errors import ElmanError

    if args.bptt is not None and args.dynamic is None:
        raise ElmanError("--bptt sets the segments of --dynamic; give --dynamic too")
    p, vocab, cfg = evaluate.load(args.model)
    ids = evaluate.read_ids(args.data, vocab, cfg, args.encoding)
    if args.dynamic is None:
        result = evaluate.perplexity(p, ids, vocab.eos_id)
        how = ""
    else:
        T = args.bptt or cfg.get("settings", {}).get("steps", 20)
        result = evaluate.dynamic_perplexity(p, ids, vocab.eos_id, args.dynamic, T)
        how = f"  dynamic lr {args.dynamic:g}, T {T}"
    if args.json:
        print(json.dumps(result))
    else:
        print(f"perplexity {result['perplexity']:.3f}  bits/token {result['bits_per_token']:.4f}  "
              f"tokens {result['tokens']}{how}  ({args.data})")
    return 0


def add_score(sub):
    p = sub.add_parser("score", help="log10 probability of each line (n-best rescoring)",
                       description="One log10 probability per line of the file (its tokens and its <eos>, "
                                   "each line from h0 = 0 after <eos>, as RNNLM's -test; a blank line "
                                   "scores an empty sentence), then 'total <sum>'.")
    add_model_and_data(p)
    add_dynamic(p, "line")
    p.set_defaults(func=run_score)


def run_score(args) -> int:
    from elman.inference import evaluate

    p, vocab, cfg = evaluate.load(args.model)
    lines = evaluate.read_line_ids(args.data, vocab, cfg, args.encoding)
    if args.dynamic is None:
        scores = evaluate.line_log10_probs(p, lines, vocab.eos_id)
    else:
        scores = evaluate.dynamic_line_log10_probs(p, lines, args.dynamic)
    print("\n".join(f"{v:.6f}" for v in scores))
    print(f"total {scores.sum():.6f}")
    return 0


def add_generate(sub):
    p = sub.add_parser("generate", help="sample text from a model")
    add_model_and_data(p, data=False)
    p.add_argument("--words", type=positive_int, default=50, help="tokens to sample (default 50)")
    p.add_argument("--temperature", type=positive_float, default=1.0,
                   help="below 1: safer, above 1: wilder (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same text (default 0)")
    p.add_argument("--prime", metavar="TEXT", default="", help="text to start from")
    p.set_defaults(func=run_generate)


def run_generate(args) -> int:
    from elman.inference import evaluate
    from elman.data import line_tokens

    p, vocab, cfg = evaluate.load(args.model)
    level = cfg.get("level", "word")
    prime = line_tokens(args.prime, level)
    ids = evaluate.sample(p, vocab.encode(prime), vocab.eos_id, args.words, args.temperature, args.seed)
    print(evaluate.detokenize(prime + vocab.decode(ids), level))
    return 0
