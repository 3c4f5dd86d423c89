"""``elman eval``, ``elman score``, ``elman generate``."""
from __future__ import annotations

from elman.cli.args import (add_cache_dir, add_model_and_data, add_quiet, parse_lambda, positive_float, positive_int,
                            rate, say)
from elman.errors import ElmanError

from elman.inference.options import DYNAMIC_DEFAULTS, Dynamic, ScoreOptions

_PLAIN, _SCALED = DYNAMIC_DEFAULTS["plain"], DYNAMIC_DEFAULTS["scaled"]
_DEFAULT = object()        # --dynamic without LR (argparse would parse a string const)


def add_dynamic(p, unit: str) -> None:
    p.add_argument("--dynamic", type=positive_float, nargs="?", const=_DEFAULT, metavar="LR",
                   help=f"dynamic evaluation: after each {unit} is scored, one step on it with rate LR per "
                        "token, each weight's step divided by its RMS gradient in training (Adagrad's "
                        f"statistics in DIR/last; default rate {_SCALED['lr']:g}/(B·T), B·T the positions of "
                        "a training update), or plain SGD without "
                        f"them (default rate {_PLAIN['lr']:g}); the model file is not changed")
    p.add_argument("--dynamic-decay", type=rate, metavar="F",
                   help="with --dynamic: after each step the weights move this fraction of the way back to "
                        f"the trained ones (default {_SCALED['decay']:g}, plain {_PLAIN['decay']:g}; 0: none)")
    p.add_argument("--dynamic-plain", action="store_true",
                   help="with --dynamic: plain SGD steps, even where training statistics exist")
    p.add_argument("--dynamic-direct", type=positive_float, metavar="R",
                   help="with --dynamic: the plain SGD rate of the direct connections' weights "
                        f"(default {_SCALED['direct_lr']:g}, plain {_PLAIN['direct_lr']:g})")


def _dynamic(args, p) -> Dynamic | None:
    """The --dynamic-* options need --dynamic (and --dynamic-direct direct
    connections); the rule they give, or None without --dynamic."""
    given = [o for o, v in (("--dynamic-direct", args.dynamic_direct), ("--dynamic-decay", args.dynamic_decay),
                            ("--dynamic-plain", args.dynamic_plain or None)) if v is not None]
    if given and args.dynamic is None:
        raise ElmanError(f"{given[0]} sets how --dynamic learns; give --dynamic too")
    if args.dynamic_direct is not None and not p.order:
        raise ElmanError("--dynamic-direct: this model has no direct connections")
    if args.dynamic is None:
        return None
    from elman.inference import dynamic
    lr = None if args.dynamic is _DEFAULT else args.dynamic
    return Dynamic(*dynamic.settings(args.model, p, lr, args.dynamic_decay, args.dynamic_direct, args.dynamic_plain))


def _score_options(args, command: str, dyn: Dynamic | None = None) -> ScoreOptions:
    """``elman score``'s or per-token ``elman eval``'s options."""
    score = command == "score"
    return ScoreOptions(
        data=args.data, format=args.format if score else "lines", encoding=args.encoding,
        carry=not score or args.carry, per_line=score, keep_blank=score, per_token=args.per_token,
        ngram=args.ngram, lm_prob=args.lm_prob, lam=args.lam, heldout=args.heldout,
        heldout_lm_prob=args.heldout_lm_prob, json=args.json, dynamic=dyn)


def _add_rescoring(p) -> None:
    """--per-token, --ngram/--lm-prob, --lambda, --heldout(-lm-prob), --json: eval's and score's alike."""
    p.add_argument("--per-token", metavar="FILE",
                   help="write each predicted token and its log10 probability (token<TAB>log10 P), in order")
    other = p.add_mutually_exclusive_group()
    other.add_argument("--ngram", metavar="LM", help="interpolate with this n-gram model (ARPA or KenLM "
                                                     "binary; pip install 'elman[kenlm]')")
    other.add_argument("--lm-prob", metavar="FILE", help="interpolate with another model's per-token "
                                                         "probabilities (one a line, RNNLM's -lm-prob format, "
                                                         "or a --per-token file)")
    p.add_argument("--lambda", dest="lam", type=parse_lambda, metavar="L",
                   help="weight of elman: P = L*P_elman + (1-L)*P_other, L in [0, 1], or auto (EM on --heldout)")
    p.add_argument("--heldout", metavar="FILE", help="text to fit --lambda auto on (read as --data is)")
    p.add_argument("--heldout-lm-prob", metavar="FILE", help="with --lm-prob: the other model's "
                                                             "probabilities of the --heldout text")
    p.add_argument("--json", action="store_true", help="JSON lines for machines")


def add_eval(sub):
    p = sub.add_parser("eval", help="perplexity and bits per token of a text",
                       description="The text is one stream from the model's starting state (h0 = 0; an imported "
                                   "RNNLM model's: the state its file saved), <eos> before the first token, every "
                                   "token including each line's <eos> predicted, unknown words as <unk>.")
    add_model_and_data(p)
    _add_rescoring(p)
    add_dynamic(p, "segment of T tokens")
    p.add_argument("--bptt", type=positive_int, metavar="T",
                   help="with --dynamic: the segment length (default: the model's training --bptt)")
    add_cache_dir(p)
    add_quiet(p)
    p.set_defaults(func=run_eval)


def run_eval(args) -> int:
    import json

    from elman.inference import evaluate

    from elman.errors import ElmanError

    if args.bptt is not None and args.dynamic is None:
        raise ElmanError("--bptt sets the segments of --dynamic; give --dynamic too")
    p, vocab, cfg, ngram = _load_beside_ngram(args)
    dyn = _dynamic(args, p)
    if args.per_token or args.ngram or args.lm_prob or args.lam is not None or args.data == "-":
        if dyn is not None:
            raise ElmanError("eval --dynamic reads a file and prints the perplexity only: it does not take "
                             "--per-token, --ngram, --lm-prob or --data - (elman score --dynamic does)")
        from elman.inference import driver
        driver.run(p, vocab, cfg, _score_options(args, "eval"), other=ngram)
        return 0
    ids = evaluate.read_ids(args.data, vocab, cfg, args.encoding, cache_dir=args.cache_dir, say=say)
    if dyn is None:
        result = evaluate.perplexity(p, ids, vocab.eos_id)
        how = ""
    else:
        T = args.bptt or cfg.get("settings", {}).get("steps", 20)
        d = dyn.how
        result = evaluate.dynamic_perplexity(p, ids, vocab.eos_id, d, T, dyn.scale)
        how = (f"  dynamic lr {d['lr']:g} ({dyn.why}), decay {d['decay']:g}"
               + (f", direct {d['direct_lr']:g}" if p.order else "") + f", T {T}")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"perplexity {result['perplexity']:.3f}  bits/token {result['bits_per_token']:.4f}  "
              f"tokens {result['tokens']}{how}  ({args.data})")
    return 0


def add_score(sub):
    p = sub.add_parser("score", help="log10 probability of each line (n-best rescoring)",
                       description="One log10 probability per input line, written as it is done (its tokens "
                                   "and its <eos>; a blank line scores an empty sentence), then 'total <sum>'. "
                                   "Each line starts from h0 = 0 after <eos> (--independent, the default); "
                                   "--carry reads the lines as one stream, as RNNLM's -test does. --data - "
                                   "reads standard input.")
    add_model_and_data(p)
    p.add_argument("--format", default="lines", metavar="FORMAT",
                   help="the input format: lines: a sentence a line (the default); nbest: each line is 'ID hypothesis', the id "
                        "not scored, hypotheses with one id starting from the same state")
    p.add_argument("--nbest", dest="format", action="store_const", const="nbest", help="--format nbest")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--independent", action="store_true",
                      help="every line (hypothesis) from h0 = 0 (the default)")
    mode.add_argument("--carry", action="store_true",
                      help="carry the state: from line to line, or with --nbest from the first hypothesis "
                           "of an utterance to every hypothesis of the next (RNNLM's default)")
    _add_rescoring(p)
    add_dynamic(p, "line")
    add_quiet(p)
    p.set_defaults(func=run_score)


def run_score(args) -> int:
    from elman.inference import driver

    p, vocab, cfg, ngram = _load_beside_ngram(args)
    driver.run(p, vocab, cfg, _score_options(args, "score", _dynamic(args, p)), other=ngram)
    return 0


def _load_beside_ngram(args):
    """(p, vocab, cfg, the --ngram model or None): the model read on another
    thread while this one parses the n-gram file (KenLM holds the GIL as it
    parses; the model's read and checksums let go of it). A bad model is
    reported before a bad n-gram file, as when they are read one by one."""
    import threading
    from elman.inference import evaluate, interpolate

    if not args.ngram:
        return (*evaluate.load(args.model), None)
    got = {}

    def load():
        try:
            got["model"] = evaluate.load(args.model)
        except BaseException as exc:        # raised on this thread, below
            got["error"] = exc
    # A thread of its own, not the pool's: the load hands its checksums to the pool and waits for them.
    reader = threading.Thread(target=load, name="elman-load")
    reader.start()
    try:
        ngram = interpolate.other_source(args.ngram)
    finally:
        reader.join()
        if "error" in got:
            raise got["error"]
    return (*got["model"], ngram)


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


def add_export(sub):
    p = sub.add_parser("export", help="the model as an ONNX graph (pip install 'elman[export]')",
                       description="Write an ONNX graph (inputs ids int64 [B,T] and h0 float32 [B,Dh]; outputs "
                                   "log_probs float32 [B,T,V], natural log, and h [B,Dh]) and vocab.txt beside "
                                   "it; the <unk> and <eos> ids are in the graph's metadata, and h_start, the h0 a "
                                   "text starts from, where it is not 0 (an imported RNNLM model). With direct "
                                   "connections of order N, also input history int64 [B,N-2] (the words "
                                   "before ids, -1 for none) and output next_history [B,N-2] (opset 18). With "
                                   "--scores, the scoring graph instead: input targets int64 [B,T] too, output "
                                   "log_prob float32 [B,T] (natural log P of each target) in place of log_probs.")
    add_model_and_data(p, data=False)
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--onnx", metavar="FILE.onnx", help="the graph to write")
    to.add_argument("--rnnlm", metavar="FILE", help="instead: an RNNLM model file (text) for rnnlm -test, -nbest "
                                                    "and Kaldi's RNNLM rescoring")
    p.add_argument("--scores", action="store_true",
                   help="with --onnx: the scoring graph, log P of given targets only (a class softmax computes "
                        "K + |class| logits a position, not V)")
    add_quiet(p)
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    if args.rnnlm:
        if args.scores:
            raise ElmanError("--scores is a kind of ONNX graph: give it with --onnx, not --rnnlm")
        from elman.cli.lattice import run_export_rnnlm
        return run_export_rnnlm(args)
    from elman.inference import onnx_export

    meta = onnx_export.export(args.model, args.onnx, args.scores)
    direct = f", direct connections of order {meta['direct_order']}" if "direct_order" in meta else ""
    direct += ", hashed RNNLM's way" if meta.get("direct_hash") == "rnnlm" else ""
    graph = "scoring graph, " if args.scores else ""
    print(f"wrote {args.onnx} ({graph}{meta['output']} softmax{direct}, V={meta['vocab_size']}, Dh={meta['hidden_size']}) "
          f"and vocab.txt beside it (<eos> id {meta['eos_id']}, <unk> id {meta['unk_id']})")
    return 0
