"""HTK Standard Lattice Format (SLF): reading and writing.

A file holds one lattice: header fields (``VERSION=``, ``UTTERANCE=``,
``lmscale=``, ``base=``, ``start=``, ``end=``...), then ``N= L=``, then a
line for each node (``I=``) and link (``J=``). Words sit on links (``W=``
on ``J=`` lines) or on nodes (a link then carries the word of the node it
enters); ``a=`` is the acoustic and ``l=`` the LM log-likelihood, natural
logs unless ``base=`` says otherwise. Fields this module does not use
(``t=``, ``v=``, ``d=``, ``r=``...) are written back as read. Gzipped
files (by their first bytes) are read as such and written gzipped.
"""
from __future__ import annotations

import gzip
import math
import shlex
from pathlib import Path

from elman.errors import ElmanError
from elman.lattice.graph import Arc, Final, Lattice

ALIASES = {"NODES": "N", "LINKS": "L", "WORD": "W", "START": "S", "END": "E", "acoustic": "a",
           "language": "l", "time": "t"}


def read_bytes(path) -> bytes:
    try:
        data = Path(path).read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ElmanError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None


def is_slf(path) -> bool:
    """Whether a file looks like an SLF lattice (rather than a list of them)."""
    head = read_bytes(path)[:4096].decode("utf-8", "replace")
    return any(line.strip().startswith(("VERSION=", "UTTERANCE=", "N=", "NODES=", "lmscale=", "base="))
               for line in head.splitlines()[:20])


def _fields(text: str, where: str) -> dict:
    try:
        tokens = shlex.split(text, posix=True) if "'" in text or '"' in text else text.split()
    except ValueError as exc:
        raise ElmanError(f"{where}: cannot read the fields ({exc})") from None
    out = {}
    for tok in tokens:
        key, eq, value = tok.partition("=")
        if not eq:
            raise ElmanError(f"{where}: {tok!r} is not a field (name=value)")
        out[ALIASES.get(key, key)] = value
    return out


def _number(fields: dict, key: str, where: str, cast=float, default=None):
    if key not in fields:
        if default is not None:
            return default
        raise ElmanError(f"{where}: no {key}= field")
    try:
        value = cast(fields[key])
    except ValueError:
        raise ElmanError(f"{where}: {key}={fields[key]} is not a number") from None
    if cast is float and not math.isfinite(value):
        raise ElmanError(f"{where}: {key}={fields[key]} is not a finite number")
    return value


def read(path) -> Lattice:
    """The lattice of one SLF file; ElmanError naming its line on any fault."""
    try:
        text = read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ElmanError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    header, nodes, links, size = {}, {}, [], None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{n}"
        f = _fields(line, where)
        if "I" in f:
            nodes[_number(f, "I", where, int)] = (f, n)
        elif "J" in f:
            links.append((f, n))
        elif "N" in f:
            size = (_number(f, "N", where, int), _number(f, "L", where, int), n)
        else:
            header.update(f)
    if size is None:
        raise ElmanError(f"{path}: no N= L= line (not an HTK lattice, or an empty one)")
    N, L, at = size
    if N == 0:
        raise ElmanError(f"{path}:{at}: an empty lattice (N=0)")
    if len(links) != L or len(nodes) != N:
        raise ElmanError(f"{path}:{at}: N={N} L={L}, but the file has {len(nodes)} nodes and {len(links)} links "
                         "(truncated?)")
    for i, (_, n) in nodes.items():
        if not 0 <= i < N:
            raise ElmanError(f"{path}:{n}: node I={i} is not in 0..{N - 1}")
    base = _number(header, "base", f"{path}", float, math.e)
    if base <= 1.0:
        raise ElmanError(f"{path}: base={header['base']}: only logarithms (base > 1) are read")
    scale = math.log(base)
    node_words = [nodes[i][0].get("W") for i in range(N)]
    node_extra = [[(k, v) for k, v in nodes[i][0].items() if k not in ("I", "W")] for i in range(N)]
    on_links = any("W" in f for f, _ in links)
    arcs = []
    for f, n in links:
        where = f"{path}:{n}"
        src, dst = _number(f, "S", where, int), _number(f, "E", where, int)
        if not 0 <= dst < N:
            raise ElmanError(f"{where}: a link to node {dst}, which is not one of the {N} nodes")
        word = f.get("W") if on_links else node_words[dst]
        extra = [(k, v) for k, v in f.items() if k not in ("J", "S", "E", "W", "a", "l")]
        arcs.append(Arc(src, dst, None if word in (None, "!NULL") else word,
                        _number(f, "a", where, float, 0.0) * scale, _number(f, "l", where, float, 0.0) * scale,
                        n, extra))
    start, end = _ends(header, arcs, N, path)
    name = header.get("UTTERANCE") or _stem(path)
    meta = {"format": "slf", "header": {k: v for k, v in header.items() if k not in ("start", "end")},
            "on_links": on_links, "node_words": node_words, "node_extra": node_extra, "scale": scale,
            "gzip": read_bytes_is_gzip(path)}
    return Lattice(name, str(path), N, start, arcs, {end: Final(0.0, 0.0, at)}, meta)


def read_bytes_is_gzip(path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _ends(header: dict, arcs: list, N: int, path) -> tuple:
    """start= and end=, or the one node without incoming (outgoing) links."""
    found = []
    for key, side in (("start", "dst"), ("end", "src")):
        if key in header:
            found.append(_number(header, key, str(path), int))
            continue
        touched = {getattr(a, side) for a in arcs}
        free = [v for v in range(N) if v not in touched]
        if len(free) != 1:
            raise ElmanError(f"{path}: no {key}= field and {len(free)} nodes could be the {key} "
                             f"(a lattice needs one {key} node)")
        found.append(free[0])
    return tuple(found)


def _stem(path) -> str:
    name = Path(path).name
    for suffix in (".gz", ".lat", ".slf", ".htk"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _value(v: str) -> str:
    return shlex.quote(v) if any(c.isspace() or c in "\"'" for c in v) else v


def _num(x: float) -> str:
    return f"{x:.6f}"


def write(lat: Lattice) -> bytes:
    """The SLF text of a lattice (rescored or as read), gzipped where its source was."""
    meta = lat.meta
    node_of = meta.get("node_of") or list(range(lat.nodes))
    scale = meta.get("scale", 1.0)
    finals = sorted(lat.finals)
    one_end = len(finals) == 1
    N = lat.nodes + (0 if one_end else 1)
    L = len(lat.arcs) + (0 if one_end else len(finals))
    lines = [f"VERSION={_value(meta.get('header', {}).get('VERSION', '1.0'))}"]
    lines += [f"{k}={_value(v)}" for k, v in meta.get("header", {}).items() if k != "VERSION"]
    lines.append(f"start={lat.start}")
    lines.append(f"end={finals[0] if one_end else lat.nodes}")
    lines.append(f"N={N}\tL={L}")
    for s in range(lat.nodes):
        v = node_of[s]
        fields = [f"I={s}"] + [f"{k}={_value(x)}" for k, x in meta["node_extra"][v]]
        if not meta["on_links"] and meta["node_words"][v] is not None:
            fields.append(f"W={_value(meta['node_words'][v])}")
        lines.append("\t".join(fields))
    if not one_end:
        lines.append(f"I={lat.nodes}" + ("" if meta["on_links"] else "\tW=!NULL"))
    for j, a in enumerate(lat.arcs):
        fields = [f"J={j}", f"S={a.src}", f"E={a.dst}"]
        if meta["on_links"]:
            fields.append(f"W={_value(a.word or '!NULL')}")
        fields += [f"a={_num(a.ac / scale)}", f"l={_num(a.lm / scale)}"]
        fields += [f"{k}={_value(x)}" for k, x in (a.extra or [])]
        lines.append("\t".join(fields))
    for k, f in enumerate(finals if not one_end else []):
        fin = lat.finals[f]
        lines.append(f"J={len(lat.arcs) + k}\tS={f}\tE={lat.nodes}" + ("\tW=!NULL" if meta["on_links"] else "")
                     + f"\ta={_num(fin.ac / scale)}\tl={_num(fin.lm / scale)}")
    data = ("\n".join(lines) + "\n").encode("utf-8")
    return gzip.compress(data, mtime=0) if meta.get("gzip") else data
