"""Plain UTF-8 text for the terminal: paragraphs wrapped at 78 columns,
display math indented, tables aligned."""
from __future__ import annotations

import textwrap

from elman.explain.document import Display, Figure, Heading, Para, Table
from elman.explain.notation import M

WIDTH = 78


def flat(parts) -> str:
    return "".join(p.text if isinstance(p, M) else str(p) for p in parts)


def block(b) -> str:
    if isinstance(b, Heading):
        title = flat(b.parts)
        return f"{title}\n{('=' if b.level <= 2 else '-') * min(len(title), WIDTH)}"
    if isinstance(b, Para):
        return textwrap.fill(flat(b.parts), WIDTH, break_on_hyphens=False)
    if isinstance(b, Display):
        return "\n".join("    " + m.text for m in b.lines)
    if isinstance(b, Table):
        cells = [b.header] + [[flat([c]) for c in row] for row in b.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(b.header))]
        lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join("    " + ln.rstrip() for ln in lines)
    if isinstance(b, Figure):
        return textwrap.fill(f"[Picture {b.name}.svg: {b.caption} Written by --format svg --out DIR; "
                             "drawn in the --format html page.]", WIDTH, break_on_hyphens=False)
    raise TypeError(b)


def render(doc) -> str:
    return "\n\n".join(block(b) for b in doc.blocks) + "\n"
