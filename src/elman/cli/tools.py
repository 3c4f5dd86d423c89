"""``elman gradcheck``, ``elman bench``, ``elman plot``, ``elman demo``."""
from __future__ import annotations

from elman.cli.args import add_cache_dir, add_quiet, add_sizes, ngram_order, nonnegative_float, positive_float, positive_int, rate
from elman.errors import ElmanError

def add_gradcheck(sub):
    p = sub.add_parser("gradcheck", help="check every analytic gradient against finite differences (float64)")
    add_sizes(p, V=11, d=5, Dh=7, B=3, T=4)
    p.add_argument("--step", action="store_true", help="check the seed's eight per-step quantities instead of BPTT")
    p.add_argument("--tol", type=positive_float, default=1e-6, help="pass when max relative error < tol")
    p.set_defaults(func=run_gradcheck)


def run_gradcheck(args) -> int:
    from elman.model.gradcheck import format_table, gradcheck

    if args.V < 2:
        raise ElmanError("--V must be at least 2 (a softmax over one word predicts nothing)")
    rows = gradcheck(V=args.V, d=args.d, Dh=args.Dh, B=args.B, T=args.T,
                               seed=args.seed, step=args.step)
    print(format_table(rows, args.tol))
    return 0 if all(r.max_rel_error < args.tol for r in rows) else 1


BENCH_T = 20       # elman bench's T without --recipe (the speed tables of docs/benchmarks)


def add_bench(sub):
    p = sub.add_parser("bench", help="time training and evaluation steps against this machine's matmul peak "
                                     "(and PyTorch), then one-stream scoring of each output layer")
    add_sizes(p, V=10000, d=200, Dh=200, B=32, T=None,
              T_help=f"time steps (default {BENCH_T}; with --recipe, elman train's --bptt)")
    p.add_argument("--steps", type=positive_int, default=20, help="timed steps per implementation (default 20)")
    p.add_argument("--rounds", type=positive_int, default=5,
                   help="the steps are split into this many alternating rounds (default 5)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--classes", type=positive_int, default=0, metavar="K",
                   help="also bench a class-factorised softmax with K word classes")
    p.add_argument("--sampled", type=positive_int, default=0, metavar="S",
                   help="also bench sampled-softmax training with S ids a window")
    p.add_argument("--direct", type=nonnegative_float, default=0.0, metavar="SIZE",
                   help="also bench the recipe: every option given here together, with direct connections "
                        "of SIZE million weights")
    p.add_argument("--direct-order", type=ngram_order, metavar="N", help="their order (default 3)")
    p.add_argument("--dropout", type=rate, default=0.0, metavar="P", help="the recipe's dropout rate")
    p.add_argument("--recipe", action="store_true",
                   help="also bench the recipe of elman train's defaults (a class softmax of round(sqrt(V)/2) "
                        "classes, or with --sampled S the full softmax trained sampled; direct connections, "
                        "dropout), each value unless given here")
    p.add_argument("--vs-torch", action="store_true", help="also run PyTorch eager autograd on the same model")
    p.add_argument("--vs-peers", nargs="?", const="", metavar="PATH",
                   help="also time faster-rnnlm's training (hierarchical softmax, one thread) on text of the "
                        "same Zipf-drawn words, V words, Dh hidden units (PATH: its executable; default "
                        "faster-rnnlm on PATH)")
    p.add_argument("--one-core", action="store_true",
                   help="every process on one core with one thread, steps timed by their CPU time against "
                        "one thread's matmul peak (a figure that holds on a busy machine)")
    p.add_argument("--no-full", action="store_true",
                   help="leave out the full softmax's rows, and sampled softmax's evaluation, which is the "
                        "full softmax's (at large V their steps take seconds)")
    p.add_argument("--no-scoring", action="store_true",
                   help="leave out the scoring rows: one stream scored as elman eval scores it, for each output "
                        "layer with and without direct connections (the class softmax's K: --classes, else the "
                        "defaults'; the direct connections: --direct, else the defaults')")
    p.add_argument("--processes", type=positive_int, metavar="N",
                   help="instead: N MPI processes x 1 thread against 1 process x N threads, training on the "
                        "same B streams, and the predicted words/s of N machines (needs elman[mpi])")
    p.add_argument("--floor", action="store_true",
                   help="also time each training row's window in the parts no implementation can leave out "
                        "(its products at their shapes, the optimizer's pass, exps): the least time a window "
                        "can take on this machine, and the %% of peak that allows")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--corpus", metavar="SIZES",
                   help="instead: corpora of these token counts (e.g. 10M,100M), synthetic; cache build speed, "
                        "time to the first training batch cold and warm, peak memory")
    p.add_argument("--corpus-dir", metavar="DIR", help="where --corpus makes its corpora and caches "
                                                      "(default: elman-corpus-bench in the temporary directory)")
    p.add_argument("--compare-src", metavar="DIR", help="with --corpus: also run the elman whose source tree "
                                                        "(the directory holding elman/) is DIR")
    add_quiet(p)
    p.set_defaults(func=run_bench)


def run_bench(args) -> int:
    import importlib.util
    import json

    from elman.bench.speed import Config, bench, format_report

    if args.floor and (args.corpus or args.processes):
        raise ElmanError("--floor times the training rows' windows: not with --corpus or --processes")
    if args.corpus:
        return _bench_corpus(args)
    if args.V < 2:
        raise ElmanError("--V must be at least 2")
    _take_recipe(args)
    if args.classes > args.V:
        raise ElmanError(f"--classes {args.classes} is more than the {args.V} words of --V")
    if args.vs_torch and importlib.util.find_spec("torch") is None:
        raise ElmanError("--vs-torch needs PyTorch: pip install 'elman[bench]' (torch==2.13.0)")
    M = int(round(args.direct * 1e6))
    if args.direct and M < max(args.V, args.classes):
        raise ElmanError(f"--direct {args.direct:g} is {M} weights, fewer than the {args.V} words of --V")
    if args.classes and args.sampled and (M or args.dropout):
        raise ElmanError("the recipe (--direct, --dropout) takes --classes or --sampled, not both")
    cfg = Config(V=args.V, d=args.d, Dh=args.Dh, B=args.B, T=args.T, dtype=args.dtype,
                 classes=args.classes, sampled=args.sampled, direct=M, direct_order=args.direct_order,
                 dropout=args.dropout, seed=args.seed, one_core=args.one_core)
    if args.processes:
        return _bench_processes(args, cfg)
    peer = None
    if args.vs_peers is not None:
        from elman.bench.peers import find_binary
        peer = find_binary(args.vs_peers or None)
    res = bench(cfg, steps=args.steps, rounds=min(args.rounds, args.steps), vs_torch=args.vs_torch,
                full=not args.no_full, peer=peer, score=not args.no_scoring, with_floor=args.floor)
    print(json.dumps(res, indent=1) if args.json else format_report(res))
    return 0


def _take_recipe(args) -> None:
    """Fill what ``--recipe`` sets and the options left unset: the train defaults."""
    from elman.training.state import DIRECT, default, default_classes

    if args.T is None:          # the speed tables are at T = 20; a recipe is train's, its T included
        args.T = default("steps") if args.recipe else BENCH_T
    if args.recipe:
        if not args.sampled:    # train's output layer: a class softmax (with --sampled S, the full one)
            args.classes = args.classes or default_classes(args.V)
        args.direct = args.direct or DIRECT
        args.dropout = args.dropout or default("dropout")
    if args.direct_order is None:
        args.direct_order = default("direct_order")


def _bench_processes(args, cfg) -> int:
    import importlib.util
    import json

    from elman.bench import parallel

    if args.vs_torch:
        raise ElmanError("--processes compares elman's processes with its threads; drop --vs-torch")
    if args.classes and args.sampled:
        raise ElmanError("--processes trains one model, as elman train: --classes or --sampled, not both")
    if args.B % args.processes:
        raise ElmanError(f"--B {args.B}: {args.processes} processes cannot share {args.B} streams equally")
    if importlib.util.find_spec("mpi4py") is None:
        raise ElmanError("--processes needs mpi4py and mpiexec: pip install 'elman[mpi]'")
    res = parallel.bench(cfg, args.processes, steps=args.steps, rounds=min(args.rounds, args.steps))
    print(json.dumps(res, indent=1) if args.json else parallel.format_report(res))
    return 0


def _bench_corpus(args) -> int:
    import json
    import tempfile
    from pathlib import Path

    from elman.bench import corpus

    try:
        sizes = [corpus.parse_size(x) for x in args.corpus.split(",")]
    except ValueError as exc:
        raise ElmanError(f"--corpus: {exc}") from None
    if args.compare_src and not (Path(args.compare_src) / "elman").is_dir():
        raise ElmanError(f"--compare-src {args.compare_src}: no elman package there (give the src directory)")
    root = args.corpus_dir or Path(tempfile.gettempdir()) / "elman-corpus-bench"
    res = corpus.bench_corpus(sizes, root, args.compare_src)
    print(json.dumps(res, indent=1) if args.json else corpus.format_report(res))
    return 0


def add_plot(sub):
    p = sub.add_parser("plot", help="learning-curve PNG from DIR/metrics.jsonl (needs elman[plot])")
    p.add_argument("dir", metavar="DIR", help="model directory written by elman train")
    p.add_argument("--out", metavar="PNG", help="where to write (default DIR/learning-curve.png)")
    p.set_defaults(func=run_plot)


def run_plot(args) -> int:
    from elman.training.metrics import plot_learning_curve

    print(plot_learning_curve(args.dir, args.out))
    return 0


def add_demo(sub):
    p = sub.add_parser("demo", help="train on the King James Bible, sample, answer the transpose question")
    p.add_argument("--minutes", type=positive_float, default=3.0, help="time budget (default 3)")
    p.add_argument("--out", metavar="DIR", default="runs/demo", help="model directory (default runs/demo)")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from elman.demo import demo

    return demo(args.out, minutes=args.minutes)


def add_cache(sub):
    p = sub.add_parser("cache", help="list or clear the token-id cache",
                       description="Corpus files are tokenised once into the token-id cache; list its entries "
                                   "or clear them (only files elman wrote, and none a running build holds).")
    p.add_argument("action", choices=("list", "clear"))
    add_cache_dir(p)
    add_quiet(p)
    p.set_defaults(func=run_cache)


def run_cache(args) -> int:
    from pathlib import Path

    from elman.data import cache

    root = Path(args.cache_dir) if args.cache_dir else cache.default_dir()
    if root.exists() and not root.is_dir():
        raise ElmanError(f"{root}: not a directory (the token-id cache is a directory)")
    try:
        if args.action == "clear":
            removed, freed, busy = cache.clear(root)
            print(f"removed {removed} files ({freed / 1e6:.1f} MB) from {root}"
                  + (f"; kept {len(busy)} sources a running build holds" if busy else ""))
            return 0
        rows = cache.list_entries(root)
    except OSError as exc:
        raise ElmanError(f"{root}: cannot {args.action} the token-id cache ({exc.strerror or exc})") from None
    print(f"{root}: {len(rows)} entries, {sum(r['bytes'] for r in rows) / 1e6:.1f} MB")
    for r in rows:
        src = r.get("source", {})
        what = (f"{r['kind']:6s} {r['items']:>13,} {'tokens' if r['kind'] == 'ids' else 'types':6s}"
                if "problem" not in r else f"unusable: {r['problem']}")
        print(f"  {Path(r['file']).name}  {r['bytes'] / 1e6:9.1f} MB  {what}  {src.get('level', '')} "
              f"{src.get('path', '')}")
    return 0
