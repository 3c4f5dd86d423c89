"""Mikolov's RNNLM model files (rnnlm 0.3e, 0.4b and the Cantab fork, file
versions 4 to 10), text (``file format: 0``) and binary (``1``), as its
``saveNet`` writes them and ``restoreNet`` reads them.

Both forms start with the same text: ``name: value`` header lines, then
``Vocabulary:`` and one line per word (index, count, word, class). The text
form follows with sections of one number a line: ``Hidden layer
activation:`` (the saved state, Dh), ``Weights 0->1:`` (syn0, Dh rows of
V+Dh: the word's column, then the previous state's), ``Weights 1->2:``
(syn1, V+K rows of Dh: each word's, then each class's), ``Direct
connections:`` (M). The binary form has the same numbers as 4-byte
little-endian floats right after the vocabulary's last line. (A model with
a compression layer has ``Weights 1->c:`` and ``Weights c->2:`` instead;
elman does not read those.)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from elman.errors import ElmanError

VERSIONS = range(4, 11)          # what restoreNet reads; 10 is 0.3e's and 0.4b's
TEXT, BINARY = 0, 1


@dataclass
class RnnlmModel:
    """The numbers of an RNNLM file; shapes as in its own arrays."""
    words: list                    # index -> word ("</s>" is 0)
    counts: np.ndarray             # (V,)
    classes: np.ndarray            # (V,) class of each word
    K: int                         # class layer size
    hidden: np.ndarray             # (Dh,) the saved state
    syn0: np.ndarray               # (Dh, V+Dh)
    syn1: np.ndarray               # (V+K, Dh)
    direct: np.ndarray             # (M,)
    order: int = 3
    old_classes: int = 0
    header: dict = field(default_factory=dict)


def assign_classes(counts, K: int, old: bool) -> np.ndarray:
    """The class of each word as RNNLM's ``initNet`` assigns them, whatever
    the file says: words in file order fill class a until the running share
    of the counts (``old``), or of their square roots, passes (a+1)/K."""
    counts = np.asarray(counts, np.float64)
    b = float(counts.sum())
    share = counts / b if old else np.sqrt(counts / b)
    dd = 1.0 if old else float(sum(float(x) for x in share))
    out, a, df = np.empty(len(counts), np.int64), 0, 0.0
    for i, x in enumerate(share):
        df += x / dd if not old else x
        df = min(df, 1.0)
        out[i] = a
        if df > (a + 1) / K and a < K - 1:
            a += 1
    return out


def _int(header: dict, key: str, path, lines: dict) -> int:
    if key not in header:
        raise ElmanError(f"{path}: no '{key}:' line in the header (not an RNNLM model file, or an older one)")
    try:
        return int(header[key])
    except ValueError:
        raise ElmanError(f"{path}:{lines[key]}: '{key}: {header[key]}' is not an integer") from None


def _header(text_lines: list, path) -> tuple:
    """(header dict, line numbers, index of the 'Vocabulary:' line)."""
    header, lines = {}, {}
    for i, line in enumerate(text_lines):
        if line.strip() == "Vocabulary:":
            return header, lines, i
        key, colon, value = line.partition(":")
        if colon:
            header[key.strip()] = value.strip()
            lines[key.strip()] = i + 1
    raise ElmanError(f"{path}: no 'Vocabulary:' line (not an RNNLM model file, or truncated)")


def _sizes(header: dict, lines: dict, path) -> dict:
    n = {k: _int(header, name, path, lines) for k, name in (
        ("version", "version"), ("format", "file format"), ("in", "input layer size"),
        ("Dh", "hidden layer size"), ("c", "compression layer size"), ("out", "output layer size"),
        ("V", "vocabulary size"), ("K", "class size"))}
    if n["version"] not in VERSIONS:
        raise ElmanError(f"{path}:{lines['version']}: version {n['version']}: elman reads RNNLM model files of "
                         f"versions {VERSIONS.start} to {VERSIONS.stop - 1} (rnnlm 0.3e, 0.4b, the Cantab fork)")
    n["M"] = _int(header, "direct connections", path, lines) if n["version"] > 5 else 0
    n["order"] = _int(header, "direct order", path, lines) if n["version"] > 6 else 3
    if n["format"] not in (TEXT, BINARY):
        raise ElmanError(f"{path}:{lines['file format']}: file format {n['format']} (0 is text, 1 binary)")
    if n["c"]:
        raise ElmanError(f"{path}:{lines['compression layer size']}: a compression layer ({n['c']} units); elman "
                         "reads RNNLM models without one")
    if n["in"] != n["V"] + n["Dh"] or n["out"] != n["V"] + n["K"]:
        raise ElmanError(f"{path}:{lines['input layer size']}: layer sizes {n['in']}, {n['out']} do not fit "
                         f"V={n['V']}, Dh={n['Dh']}, {n['K']} classes")
    return n


def read(path) -> RnnlmModel:
    """An RNNLM model file; ElmanError naming the file and line of any fault."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ElmanError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    head = data[:data.find(b"\nVocabulary:") + 13 if b"\nVocabulary:" in data else len(data)]
    text_lines = head.decode("latin-1").split("\n")
    header, lines, at = _header(text_lines, path)
    n = _sizes(header, lines, path)
    # the vocabulary: line by line from the bytes, so the binary part starts where it ends
    pos = len("\n".join(text_lines[:at + 1])) + 1
    words, counts, classes = [], [], []
    for k in range(n["V"]):
        end = data.find(b"\n", pos)
        line_no = at + 2 + k
        if end < 0:
            raise ElmanError(f"{path}:{line_no}: the file ends in the vocabulary ({k} of {n['V']} words)")
        parts = data[pos:end].decode("utf-8", "replace").split()
        pos = end + 1
        if len(parts) != 4 or not (parts[0].isdigit() and parts[1].isdigit() and parts[3].isdigit()):
            raise ElmanError(f"{path}:{line_no}: not a vocabulary line 'index count word class'")
        words.append(parts[2]), counts.append(int(parts[1])), classes.append(int(parts[3]))
    if not n["V"] or words[0] != "</s>" or n["K"] < 1:
        raise ElmanError(f"{path}:{at + 2}: the vocabulary must start with </s>, and the model have a class")
    old = _int(header, "old classes", path, lines)
    classes = assign_classes(counts, n["K"], bool(old))    # the file's column is not what RNNLM uses
    sizes = [("Hidden layer activation", n["Dh"]), ("Weights 0->1", n["Dh"] * n["in"]),
             ("Weights 1->2", n["out"] * n["Dh"]), ("Direct connections", n["M"])]
    if n["format"] == BINARY:
        arrays = _binary(data, pos, sizes, path)
    else:
        arrays = _text(data[pos:].decode("latin-1"), at + 2 + n["V"], sizes, path)
    hidden, syn0, syn1, direct = arrays
    return RnnlmModel(words, np.array(counts, np.int64), classes, n["K"], hidden,
                      syn0.reshape(n["Dh"], n["in"]), syn1.reshape(n["out"], n["Dh"]), direct, n["order"], old,
                      header)


def _binary(data: bytes, pos: int, sizes: list, path) -> list:
    out = []
    for name, count in sizes:
        need = 4 * count
        if pos + need > len(data):
            raise ElmanError(f"{path}: the file ends in '{name}' (byte {len(data)}; the model needs "
                             f"{pos + need - len(data) + sum(4 * c for _, c in sizes[len(out) + 1:])} more: truncated)")
        out.append(np.frombuffer(data, "<f4", count, pos).astype(np.float32))
        pos += need
    if pos != len(data):
        raise ElmanError(f"{path}: {len(data) - pos} bytes after the model's last number (not this model's file, "
                         "or written by another program)")
    return out


_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf))\s*$", re.I)


def _text(rest: str, first_line: int, sizes: list, path) -> list:
    """The text sections after the vocabulary (``first_line``: the line
    number of ``rest``'s first line)."""
    lines = rest.split("\n")
    out, i = [], 0
    for name, count in sizes:
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines) or lines[i].strip() != f"{name}:":
            if i >= len(lines):
                raise ElmanError(f"{path}:{first_line + i}: the file ends before '{name}:' (truncated)")
            raise ElmanError(f"{path}:{first_line + i}: expected '{name}:', found {lines[i].strip()[:40]!r}")
        i += 1
        values = lines[i:i + count]
        if len(values) < count or (count and not values[-1].strip()):
            got = sum(1 for v in values if v.strip())
            raise ElmanError(f"{path}:{first_line + i + got}: the file ends in '{name}' ({got} of {count} "
                             "numbers: truncated)")
        try:
            out.append(np.array(values, dtype=np.float64).astype(np.float32))
        except ValueError:
            bad = next(k for k, v in enumerate(values) if not _NUMBER.match(v))
            raise ElmanError(f"{path}:{first_line + i + bad}: {values[bad].strip()[:40]!r} is not a number "
                             f"(in '{name}')") from None
        i += count
    return out


def _num(x) -> str:
    return f"{float(x):.9g}"


def write_text(m: RnnlmModel) -> bytes:
    """The text form (``file format: 0``, version 10) that ``rnnlm -test``,
    ``-nbest`` and Kaldi's RNNLM rescoring read; numbers in full float
    precision (the reader takes any)."""
    V, Dh = len(m.words), m.syn0.shape[0]
    out = [f"version: 10", "file format: 0", "", "training data file: elman", "validation data file: -", "",
           "last probability of validation data: 0.000000", "number of finished iterations: 0",
           "current position in training data: 0", "current probability of training data: 0.000000",
           "save after processing # words: 0", f"# of training words: {int(m.counts.sum())}",
           f"input layer size: {V + Dh}", f"hidden layer size: {Dh}", "compression layer size: 0",
           f"output layer size: {V + m.K}", f"direct connections: {m.direct.size}", f"direct order: {m.order}",
           "bptt: 0", "bptt block: 10", f"vocabulary size: {V}", f"class size: {m.K}",
           f"old classes: {m.old_classes}",
           "independent sentences mode: 0", "starting learning rate: 0.100000",
           "current learning rate: 0.100000", "learning rate decrease: 0", "", "", "Vocabulary:"]
    out += [f"{a:6d}\t{int(c):10d}\t{w}\t{int(k)}" for a, (w, c, k) in enumerate(zip(m.words, m.counts, m.classes))]
    for name, values in (("Hidden layer activation", m.hidden), ("Weights 0->1", m.syn0),
                         ("Weights 1->2", m.syn1), ("Direct connections", m.direct)):
        out += ["", f"{name}:"] + [_num(x) for x in np.asarray(values).reshape(-1)]
    return ("\n".join(out) + "\n").encode("utf-8")
