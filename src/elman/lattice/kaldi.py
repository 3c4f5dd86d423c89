"""Kaldi lattices in text form (``lattice-copy ark:1.lats ark,t:-``) and
the ``words.txt`` symbol table.

An archive is a sequence of utterances: a line with the key, then one line
per arc and per final state, then an empty line. Compact lattices (what
``lattice-copy`` writes by default) have arcs ``src dst word
graph,acoustic,tid_tid_...`` and finals ``state graph,acoustic,tids``;
plain lattices (``--write-compact=false``) have arcs ``src dst ilabel
olabel graph,acoustic`` (the word is the output label) and finals
``state graph,acoustic``. A final with no weight has cost 0. The start
state is the source of the first arc. Costs are negated natural-log
probabilities: graph cost = -lm, acoustic cost = -ac (unscaled; the
decoder's acoustic scale is 1/lm_scale). Word 0 is epsilon.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Iterator

from elman.errors import ElmanError
from elman.lattice.graph import Arc, Final, Lattice


def read_words(path) -> tuple[dict, dict]:
    """(id -> word, word -> id) of a Kaldi ``words.txt`` ("word id" a line)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ElmanError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    words, ids = {}, {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise ElmanError(f"{path}:{n}: not 'word id' (a Kaldi symbol table line)")
        words[int(parts[1])] = parts[0]
        ids.setdefault(parts[0], int(parts[1]))
    if not words:
        raise ElmanError(f"{path}: an empty symbol table")
    return words, ids


def _weight(text: str, where: str, compact: bool) -> tuple:
    """(graph cost, acoustic cost, the rest) of 'g,a[,tids]'."""
    parts = text.split(",")
    if len(parts) < 2 or (not compact and len(parts) != 2):
        raise ElmanError(f"{where}: {text!r} is not a weight 'graph,acoustic{',tids' if compact else ''}'")
    try:
        g, a = float(parts[0]), float(parts[1])
    except ValueError:
        raise ElmanError(f"{where}: {text!r}: the costs are not numbers") from None
    if math.isnan(g) or math.isnan(a):
        raise ElmanError(f"{where}: {text!r}: the costs are not numbers")
    return g, a, ",".join(parts[2:]) if compact else None


def _int(text: str, where: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ElmanError(f"{where}: {what} {text!r} is not an integer") from None
    if value < 0:
        raise ElmanError(f"{where}: {what} {text} is negative")
    return value


def _lattice(key: str, rows: list, words: dict, path, first: int) -> Lattice:
    if not rows:
        raise ElmanError(f"{path}:{first}: utterance {key} is empty (no arcs and no final state)")
    arcs, finals, states = [], {}, set()
    compact = None
    for n, parts in rows:
        where = f"{path}:{n}"
        if len(parts) in (1, 2):
            s = _int(parts[0], where, "state")
            g, a, rest = _weight(parts[1], where, compact is not False) if len(parts) == 2 else (0.0, 0.0, "")
            finals[s] = Final(-a, -g, n, rest)
            states.add(s)
            continue
        if len(parts) not in (4, 5):
            raise ElmanError(f"{where}: {len(parts)} fields; an arc is 'src dst word weight' (compact) or "
                             "'src dst ilabel olabel weight'")
        kind = len(parts) == 4
        if compact is None:
            compact = kind
        elif compact != kind:
            raise ElmanError(f"{where}: a {'compact' if kind else 'plain'} arc in a "
                             f"{'compact' if compact else 'plain'} lattice")
        src, dst = _int(parts[0], where, "state"), _int(parts[1], where, "state")
        label = _int(parts[-2], where, "word id")
        if label != 0 and label not in words:
            raise ElmanError(f"{where}: word id {label} is not in the symbol table")
        g, a, rest = _weight(parts[-1], where, kind)
        extra = rest if kind else _int(parts[2], where, "input label")
        arcs.append(Arc(src, dst, words[label] if label else None, -a, -g, n, extra))
        states.update((src, dst))
    N = max(states) + 1
    start = arcs[0].src if arcs else next(iter(finals))
    return Lattice(key, str(path), N, start, arcs, finals, {"format": "kaldi", "compact": compact is not False})


def read(path, words: dict) -> Iterator:
    """Yield each utterance of a text archive: a Lattice, or the ElmanError
    that its lines raised (the next utterance is read all the same)."""
    try:
        text = Path(path).read_text(encoding="utf-8") if str(path) != "-" else sys.stdin.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ElmanError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    key, rows, first = None, [], 0
    for n, line in enumerate(text.splitlines() + [""], 1):
        parts = line.split()
        if key is None:
            if parts:
                key, rows, first = parts[0], [], n
                if len(parts) > 1:      # "key  0 1 ..." on one line: the first arc follows the key
                    rows.append((n, parts[1:]))
            continue
        if not parts:
            try:
                yield _lattice(key, rows, words, path, first)
            except ElmanError as exc:
                yield exc
            key = None
            continue
        rows.append((n, parts))


def _num(x: float) -> str:
    return f"{x:.8g}"


def write(lat: Lattice, ids: dict) -> str:
    """The text of one utterance (its key, arcs, finals, an empty line);
    states renumbered so that the start is 0."""
    order = [lat.start] + [s for s in range(lat.nodes) if s != lat.start]
    new = {s: k for k, s in enumerate(order)}
    lines = [lat.name]
    compact = lat.meta.get("compact", True)
    for a in sorted(lat.arcs, key=lambda a: new[a.src]):
        label = ids[a.word] if a.word is not None else 0
        w = f"{_num(-a.lm)},{_num(-a.ac)}"
        if compact:
            lines.append(f"{new[a.src]}\t{new[a.dst]}\t{label}\t{w},{a.extra or ''}")
        else:
            lines.append(f"{new[a.src]}\t{new[a.dst]}\t{a.extra}\t{label}\t{w}")
    for s in sorted(lat.finals, key=new.get):
        f = lat.finals[s]
        w = f"{_num(-f.lm)},{_num(-f.ac)}"
        lines.append(f"{new[s]}\t{w},{f.extra or ''}" if compact else f"{new[s]}\t{w}")
    return "\n".join(lines) + "\n\n"
