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

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative finite number, got {text}")
    return value


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


# -- the parser -----------------------------------------------------------------

# Each entry adds one subcommand; keep one line per command.
COMMANDS = [
    _add_gradcheck,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
