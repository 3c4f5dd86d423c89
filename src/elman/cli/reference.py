"""The command-line reference page, generated from the argument parser.

    python -m elman.cli.reference > docs/reference/cli.md

The page is the parser written out: every command, its description and each
argument with its help text, in the parser's order. tests/test_docs.py holds
the page in docs/ equal to this output, so a new option without its page
fails the tests.
"""
from __future__ import annotations

import argparse
import os
import sys

from elman.cli import build_parser

HEADER = """# Command-line reference

Every `elman` command and option, written out from the argument parser
(`python -m elman.cli.reference > docs/reference/cli.md`; a test holds this
page equal to it). `elman COMMAND --help` prints the same.
"""


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name), sub


def _prose(text: str) -> str:
    """Help text as Markdown prose: one line, angle brackets shown (not taken for HTML), pipes escaped."""
    return " ".join(text.split()).replace("<", "&lt;").replace(">", "&gt;")


def _expand(action: argparse.Action, text: str | None) -> str:
    if not text:
        return ""
    params = {k: getattr(v, "__name__", v) for k, v in vars(action).items()}
    params["prog"] = "elman"
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    try:
        return _prose(text % params)
    except (KeyError, TypeError, ValueError):
        return _prose(text)


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        name = action.metavar or action.dest
        if action.choices is not None and action.metavar is None:
            name = "{" + ",".join(map(str, action.choices)) + "}"
        return f"`{name}`"
    if action.nargs == 0:
        return ", ".join(f"`{o}`" for o in action.option_strings)
    metavar = action.metavar or (
        "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper())
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if action.nargs == "?":
        metavar = f"[{metavar}]"
    elif action.nargs in ("*", "+"):
        metavar = f"{metavar} ..."
    return ", ".join(f"`{o} {metavar}`" for o in action.option_strings)


def _usage(sub: argparse.ArgumentParser) -> str:
    """The usage lines without "usage: ", their continuation indent shortened to match."""
    usage = sub.format_usage().strip()
    if usage.startswith("usage: "):
        usage = "\n".join(line[7:] if line.startswith(" " * 7) else line
                          for line in usage[7:].split("\n"))
    return usage


def command_page(name: str, summary: str | None, sub: argparse.ArgumentParser) -> str:
    lines = [f"## elman {name}", ""]
    if summary:
        lines += [_prose(summary[0].upper() + summary[1:]) + ".", ""]
    lines += ["```text", _usage(sub), "```", ""]
    if sub.description:
        lines += [_prose(sub.description), ""]
    rows = [a for a in sub._actions if not isinstance(a, argparse._HelpAction) and a.help != argparse.SUPPRESS]
    if rows:
        lines += ["| argument | meaning |", "|---|---|"]
        for action in rows:
            required = " (required)" if action.required and action.option_strings else ""
            text = _expand(action, action.help).replace("|", "\\|")
            lines.append(f"| {_invocation(action)} | {text}{required} |")
        lines.append("")
    if sub.epilog:
        lines += [_prose(sub.epilog), ""]
    return "\n".join(lines)


def reference() -> str:
    """The page; the usage lines wrap at 80 columns whatever the terminal."""
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"
    try:
        parser = build_parser()
        return _page(parser)
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns


def _page(parser: argparse.ArgumentParser) -> str:
    parts = [HEADER]
    names = list(_subparsers(parser))
    parts.append("Commands: " + ", ".join(f"[`{n}`](#elman-{n})" for n, _, _ in names) + ".\n")
    parts += [command_page(name, summary, sub) for name, summary, sub in names]
    return "\n".join(parts).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(reference())


if __name__ == "__main__":
    main()
