"""Command line: argument parsing and dispatch only; nothing imports it.

Each subcommand is a pair ``add_<name>(sub)`` / ``run_<name>(args)`` in the
module of its role (``train``, ``inference``, ``explain``, ``tools``); the
run function imports what it needs lazily, so nothing heavy loads for a
command that does not need it. Every expected failure is an
:class:`ElmanError` and becomes one line on stderr; anything else is a bug,
reported in one line too (its traceback with ``ELMAN_DEBUG=1``).
"""
from __future__ import annotations

import argparse
import os
import sys

from elman import progress
from elman.cli import explain, inference, lattice, tools, train
from elman.errors import ElmanError

# Each entry adds one subcommand; keep one line per command.
COMMANDS = [
    tools.add_gradcheck,
    train.add_train,
    inference.add_eval,
    inference.add_score,
    inference.add_generate,
    inference.add_export,
    lattice.add_rescore,
    lattice.add_import,
    tools.add_plot,
    tools.add_demo,
    explain.add_explain,
    explain.add_check,
    tools.add_bench,
    tools.add_cache,
]

# Exit statuses: 2 a usage or input error (one line), 130 interrupted, 70 a bug.
EXIT_ERROR, EXIT_INTERRUPTED, EXIT_BUG = 2, 130, 70


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
    progress.reset()
    progress.configure(quiet=getattr(args, "quiet", False))
    try:
        return int(args.func(args) or 0)
    except ElmanError as exc:
        if not getattr(exc, "silent", False):  # one MPI process (rank 0) speaks for all that failed alike
            print(f"elman: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:      # the line says how far the job got (files are written whole or not at all)
        print(progress.interrupted(), file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except (OSError, MemoryError) as exc:
        print(f"elman: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001  (the last line of defence: one line, not a traceback)
        if os.environ.get("ELMAN_DEBUG"):
            raise
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        print(f"elman: internal error (a bug in elman, please report it): {type(exc).__name__}: {first} "
              f"(ELMAN_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
