"""``elman explain``, ``elman check``."""
from __future__ import annotations

from elman.cli.args import emit

def add_explain(sub):
    p = sub.add_parser("explain", help="derive and explain gradients: index notation, the transpose, shapes, a witness")
    p.add_argument("targets", nargs="*", default=["U"], metavar="TARGET",
                   help="U b2 h b1 L_x I H h_prev (the seed's quantities), all, or bptt; D for the direct "
                        "connections (default U)")
    p.add_argument("--format", choices=("text", "markdown", "latex", "html", "json", "svg"), default="text",
                   help="svg: the pictures, one file each, into the directory --out")
    p.add_argument("--convention", choices=("row", "column"), default="row",
                   help="write the summary formulas for row vectors (the seed's) or column vectors")
    p.add_argument("--verify", action="store_true",
                   help="derive again on 5 random instances of other sizes; exit 1 if any formula fails")
    p.add_argument("--model-file", metavar="F", default=None,
                   help="a model in the equation language (default: the seed's model; also gru, lstm, tied, "
                        "elman2, mlp, tanh_rnn)")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output (svg: a directory)")
    p.set_defaults(func=run_explain)


def run_explain(args) -> int:
    from elman.explain import explain
    from elman.explain import direct

    rest = [t for t in args.targets if t not in direct.TARGETS]
    result = explain(rest, model=args.model_file, convention=args.convention, verify=args.verify) \
        if rest or not args.targets else None
    if len(rest) < len(args.targets):       # the direct connections' section, built apart from the engine
        result = direct.merged(result, *direct.explain_direct())
    if args.format == "svg":
        for path, svg in result.svg_files(args.out):
            emit(svg, path)
    else:
        emit(result.render(args.format), args.out)
    return 0 if result.ok else 1


def add_check(sub):
    p = sub.add_parser("check", help="what is wrong with my gradient formula? a verdict and why")
    p.add_argument("formula", help='NumPy-like, over the model\'s names, e.g. "h.T @ (yhat - y)"')
    p.add_argument("--wrt", required=True, metavar="TARGET", help="the quantity differentiated, e.g. U")
    p.add_argument("--model-file", metavar="F", default=None, help="a model in the equation language")
    p.add_argument("--convention", choices=("row", "column"), default="row")
    p.add_argument("--json", action="store_true", help='print {"verdict": ..., "explanation": ...}')
    p.set_defaults(func=run_check)


def run_check(args) -> int:
    import json

    from elman.explain import check

    v = check(args.formula, args.wrt, model=args.model_file, convention=args.convention)
    print(json.dumps(v.as_dict(), indent=1, ensure_ascii=False) if args.json else str(v))
    return 0 if v.verdict == "correct" else 1
