"""``elman rescore`` (lattices, HTK or Kaldi) and ``elman import`` (Mikolov's RNNLM model files)."""
from __future__ import annotations

import math

from elman.cli.args import _number, add_quiet, parse_lambda, positive_float, positive_int, say
from elman.errors import ElmanError


# A word penalty may be of either sign.
_real = _number(float, "a number", math.isfinite, "a finite number")


def add_rescore(sub):
    p = sub.add_parser(
        "rescore", help="rescore lattices (HTK SLF or Kaldi text) with the model",
        description="Expand each lattice so that every state has one word history, score its words with the "
                    "model (and an n-gram model), write the rescored lattices in their own format and the best "
                    "word sequence of each utterance ('utterance word word ...'). A path scores "
                    "sum(ac) + LM_SCALE*sum(lm) + WORD_PENALTY per word (Kaldi: LM_SCALE is the inverse of "
                    "the acoustic scale, the LMWT of its scoring scripts).")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory (elman train, elman import)")
    p.add_argument("--lattice", required=True, metavar="PATH",
                   help="an HTK SLF file (gzipped or not), a file listing them one a line, or with --words a "
                        "Kaldi text archive ('lattice-copy ark:1.lats ark,t:-'; '-': standard input)")
    p.add_argument("--words", metavar="words.txt", help="Kaldi's symbol table: read --lattice as a Kaldi archive")
    p.add_argument("--out", metavar="PATH",
                   help="write the rescored lattices: a directory for HTK files (same names), a file for a "
                        "Kaldi archive")
    p.add_argument("--best", metavar="FILE", help="write the 1-best word sequences here (default: standard output)")
    p.add_argument("--lm-scale", type=positive_float, default=1.0, metavar="S",
                   help="weight of the LM score against the acoustic one (default 1; HTK's lmscale, "
                        "Kaldi's 1/acwt)")
    p.add_argument("--word-penalty", type=_real, default=0.0, metavar="P",
                   help="added to the log score for each word (default 0; HTK's wdpenalty)")
    p.add_argument("--lambda", dest="lam", type=parse_lambda, metavar="L",
                   help="weight of elman against the old LM score: ln(L*P_elman + (1-L)*exp(old)); with "
                        "--ngram against that model (default 0.5 there); without either the old LM score is "
                        "replaced by elman's")
    p.add_argument("--ngram", metavar="LM", help="the n-gram model (ARPA or KenLM binary) the lattices were made "
                                                 "with: its score is taken out of the old one and interpolated "
                                                 "with elman's")
    p.add_argument("--max-history", type=positive_int, metavar="N",
                   help="merge states whose histories agree on their last N words (Kaldi's --max-ngram-order "
                        "N+1); default: exact expansion, every distinct history")
    p.add_argument("--max-arcs", type=positive_int, default=200_000, metavar="M",
                   help="an utterance whose expansion passes M arcs keeps its old scores (default 200000; each "
                        "state holds Dh floats)")
    p.add_argument("--jobs", type=positive_int, metavar="J",
                   help="processes (default: the machine's cores)")
    add_quiet(p)
    p.set_defaults(func=run_rescore)


def run_rescore(args) -> int:
    import os
    from pathlib import Path

    from elman.atomic import atomic_write_bytes, atomic_write_text
    from elman.lattice import kaldi, run
    from elman.lattice.rescore import Settings

    if args.lam == "auto":
        raise ElmanError("--lambda auto is not available for lattices; give a weight in [0, 1]")
    settings = Settings(args.lm_scale, args.word_penalty, args.lam, args.max_history, args.max_arcs)
    if args.words:
        words, ids = kaldi.read_words(args.words)
        items = list(kaldi.read(args.lattice, words))
        out_dir = None
    else:
        ids = None
        items = run.slf_inputs(args.lattice)
        out_dir = Path(args.out) if args.out else None
        if out_dir is not None:
            if out_dir.exists() and not out_dir.is_dir():
                raise ElmanError(f"{out_dir}: not a directory (--out for HTK lattices is a directory)")
            out_dir.mkdir(parents=True, exist_ok=True)
    job = run.Job(args.model, settings, args.ngram, ids)
    best, archive = [], []

    def on_result(res):
        name, words_, _, out, _, _, _, source = res
        best.append(f"{name} {' '.join(words_)}".rstrip())
        if args.out and args.words:
            archive.append(out)
        elif out_dir is not None:
            atomic_write_bytes(out_dir / Path(source).name, out)

    stats = run.run(job, items, args.jobs or os.cpu_count() or 1, on_result)
    if args.out and args.words:
        atomic_write_text(args.out, "".join(archive))
    text = "".join(line + "\n" for line in best)
    if args.best:
        atomic_write_text(args.best, text)
    else:
        print(text, end="")
    done = stats["lattices"] - stats["failed"]
    secs = max(stats["seconds"], 1e-9)
    say(f"rescored {done} of {stats['lattices']} lattices ({stats['kept']} kept with their old scores), "
        f"{stats['arcs']} arcs in {secs:.2f} s: {stats['arcs'] / secs:,.0f} arcs/s, {done / secs:.1f} lattices/s "
        f"(and {stats['load_seconds']:.1f} s loading the models)")
    if stats["failed"]:
        raise ElmanError(f"{stats['failed']} of {stats['lattices']} lattices could not be read (above); "
                         f"the other {done} are rescored")
    return 0


def add_import(sub):
    p = sub.add_parser("import", help="a model from another toolkit (Mikolov's RNNLM) as an elman model",
                       description="Read an RNNLM model file (rnnlm 0.3e, 0.4b, the Cantab fork; text or -binary) "
                                   "and write it as an elman model directory, so that eval, score, rescore and "
                                   "export run on it. A stream starts from the state the file saved, as rnnlm -test "
                                   "does (a file in independent sentences mode: from 1.0, elman's 0); its </s> "
                                   "is elman's <eos>.")
    p.add_argument("--rnnlm", required=True, metavar="FILE", help="the RNNLM model file (-rnnlm FILE)")
    p.add_argument("out", metavar="OUT", help="the elman model directory to write")
    p.set_defaults(func=run_import)


def run_import(args) -> int:
    from elman.interop import rnnlm, rnnlm_file
    from elman.modelfile import has_model, save_checkpoint

    m = rnnlm_file.read(args.rnnlm)
    p, vocab, config = rnnlm.to_elman(m, args.rnnlm)
    if has_model(args.out):
        raise ElmanError(f"{args.out}: already holds a model; give a new directory")
    save_checkpoint(args.out, p.as_dict(), vocab, config)
    say(f"wrote {args.out}: V={p.V}, Dh={p.Dh}, " + (f"{p.classes} classes" if p.classes else "full softmax")
        + (f", direct connections ({p.D.size:,} weights, order {p.order}, RNNLM's hashing)" if p.order else "")
        + f" (from {args.rnnlm}, version {config['rnnlm']['version']})")
    return 0


def run_export_rnnlm(args) -> int:
    """``elman export --rnnlm FILE``."""
    from elman.atomic import atomic_write_bytes
    from elman.interop import rnnlm, rnnlm_file
    from elman.modelfile import load_params

    p, vocab, _ = load_params(args.model)
    m = rnnlm.from_elman(p, vocab)
    atomic_write_bytes(args.rnnlm, rnnlm_file.write_text(m))
    say(f"wrote {args.rnnlm}: RNNLM text model, V={len(m.words)}, {m.syn0.shape[0]} hidden units "
        f"({p.Dh} and one that stays at 1), {m.K} class{'es' if m.K > 1 else ''}")
    return 0
