"""Argument types and option groups that several subcommands share."""
from __future__ import annotations

import argparse


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
nonnegative_int = _number(int, "an integer", lambda v: v >= 0, "0 or more")
ngram_order = _number(int, "an integer", lambda v: 2 <= v <= 20, "from 2 to 20")
_weight = _number(float, "a number in [0, 1] or 'auto'", lambda v: 0.0 <= v <= 1.0, "a weight in [0, 1] (or 'auto')")


def parse_lambda(text: str):
    """``--lambda``: a weight in [0, 1], or ``auto`` (fit it by EM)."""
    return "auto" if text == "auto" else _weight(text)


def add_sizes(p, V: int, d: int, Dh: int, B: int, T: int | None, T_help: str | None = None) -> None:
    """--V --d --Dh --B --T --seed: the model and batch sizes of a synthetic problem
    (``T`` None: the command resolves it, as ``T_help`` says)."""
    p.add_argument("--V", type=positive_int, default=V, help=f"vocabulary size (default {V})")
    p.add_argument("--d", type=positive_int, default=d, help=f"embedding size (default {d})")
    p.add_argument("--Dh", type=positive_int, default=Dh, help=f"hidden size (default {Dh})")
    p.add_argument("--B", type=positive_int, default=B, help=f"batch streams (default {B})")
    p.add_argument("--T", type=positive_int, default=T, help=T_help or f"time steps (default {T})")
    p.add_argument("--seed", type=int, default=0)


def add_model_and_data(p, data=True) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="model directory written by elman train")
    if data:
        p.add_argument("--data", required=True, metavar="FILE", help="text, one sentence a line ('-': standard input)")
        p.add_argument("--encoding", help="text encoding (default: the model's training encoding)")


def add_cache_dir(p) -> None:
    p.add_argument("--cache-dir", metavar="DIR",
                   help="the token-id cache (default $XDG_CACHE_HOME/elman/ids or ~/.cache/elman/ids)")


def add_quiet(p, help: str | None = None) -> None:
    """--quiet: no progress bar (one is drawn on stderr only when it is a terminal)."""
    p.add_argument("--quiet", action="store_true",
                   help=help or "no progress bar (drawn on stderr only when it is a terminal; never on stdout)")


def say(message: str) -> None:
    """One line for the user on stderr (stdout stays the command's output), under any progress bar."""
    from elman import progress
    progress.write(message)


def emit(text: str, out) -> None:
    """``text`` to the file ``out`` (atomically), or to standard output."""
    import sys
    if out:
        from elman.atomic import atomic_write_text
        atomic_write_text(out, text)
    else:
        sys.stdout.write(text)
