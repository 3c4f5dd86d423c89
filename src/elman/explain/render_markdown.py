"""Markdown with TeX math ($...$ inline, $$...$$ display), as GitHub,
Jupyter and most Markdown viewers render it; pictures as SVG images in
data: URIs, so the file stands alone."""
from __future__ import annotations

import base64

from elman.explain.document import Display, Figure, Heading, Para, Table
from elman.explain.notation import M


def inline(parts) -> str:
    out = []
    for p in parts:
        if isinstance(p, M):
            out.append(f"${p.tex}$" if p.tex.strip() else "")
        else:
            out.append(str(p).replace("*", r"\*").replace("_", r"\_"))
    return "".join(out)


def display(lines) -> str:
    body = r" \\ ".join(m.tex for m in lines)
    return "$$\n\\begin{array}{l}\n" + body + "\n\\end{array}\n$$"


def block(b) -> str:
    if isinstance(b, Heading):
        return "#" * b.level + " " + inline(b.parts)
    if isinstance(b, Para):
        return inline(b.parts)
    if isinstance(b, Display):
        return display(b.lines)
    if isinstance(b, Table):
        rows = [b.header] + b.rows
        lines = ["| " + " | ".join(inline([c]) for c in r) + " |" for r in rows]
        lines.insert(1, "|" + "|".join(" --- " for _ in b.header) + "|")
        return "\n".join(lines)
    if isinstance(b, Figure):
        data = base64.b64encode(b.svg.encode("utf-8")).decode("ascii")
        return f"![{b.name}](data:image/svg+xml;base64,{data})\n\n*{inline([b.caption])}*"
    raise TypeError(b)


def render(doc) -> str:
    return "\n\n".join(block(b) for b in doc.blocks) + "\n"
