"""One self-contained HTML page: KaTeX (MIT, bundled in ``katex/``) inlined
as a script and a style sheet, its fonts inlined as data: URIs, so the page
renders the math offline; the pictures are inline SVG.

Each formula is written as its plain-text form inside an element that
carries the TeX in ``data-tex``; the script replaces the text by KaTeX's
rendering. Without JavaScript the page still reads, in Unicode, and no raw
TeX is ever shown.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from elman.explain.document import Display, Figure, Heading, Para, Table
from elman.explain.notation import M

KATEX = Path(__file__).parent / "katex"

STYLE = """
body { max-width: 62rem; margin: 2rem auto; padding: 0 1.5rem; font: 16px/1.55 Georgia, serif; color: #222; }
h1, h2, h3 { font-family: system-ui, sans-serif; line-height: 1.25; }
h2 { border-top: 1px solid #ccc; padding-top: 1.2rem; margin-top: 2.5rem; }
.display { margin: 0.8rem 0 0.8rem 1.5rem; overflow-x: auto; overflow-y: hidden; }
.display > div { margin: 0.25rem 0; }
table { border-collapse: collapse; margin: 0.8rem 0 0.8rem 1.5rem; font-variant-numeric: tabular-nums; }
th, td { padding: 0.15rem 0.8rem; text-align: right; border-bottom: 1px solid #ddd; }
th:first-child, td:first-child { text-align: left; }
code { font-size: 0.92em; }
figure.picture { margin: 1rem 0 1rem 1.5rem; }
figure.picture .svg { overflow-x: auto; }
figure.picture figcaption { font-size: 0.9em; color: #555; max-width: 48rem; }
"""

SCRIPT = """
document.querySelectorAll("[data-tex]").forEach(function (el) {
  katex.render(el.getAttribute("data-tex"), el, {displayMode: false, throwOnError: false});
});
"""


def _fonts_inlined(css: str) -> str:
    """Point each @font-face at an inlined woff2 we ship, or drop the rule
    (the browser then uses a local font for that KaTeX face)."""
    def face(m):
        rule = m[0]
        files = re.findall(r"url\((fonts/[^)]+\.woff2)\)", rule)
        path = KATEX / files[0] if files else None
        if path is None or not path.exists():
            return ""
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return re.sub(r"src:[^;}]+", f'src:url(data:font/woff2;base64,{data}) format("woff2")', rule)
    return re.sub(r"@font-face\{[^}]*\}", face, css)


def _math(m: M, tag="span") -> str:
    return f'<{tag} class="math" data-tex="{html.escape(m.tex)}">{html.escape(m.text)}</{tag}>'


def inline(parts) -> str:
    out = []
    for p in parts:
        if isinstance(p, M):
            out.append(_math(p) if p.tex.strip() else "")
        else:
            text = html.escape(str(p))
            out.append(re.sub(r"`([^`]+)`", r"<code>\1</code>", text))
    return "".join(out)


def block(b) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}>{inline(b.parts)}</h{b.level}>"
    if isinstance(b, Para):
        return f"<p>{inline(b.parts)}</p>"
    if isinstance(b, Display):
        return '<div class="display">' + "".join(f"<div>{_math(m)}</div>" for m in b.lines) + "</div>"
    if isinstance(b, Table):
        head = "".join(f"<th>{inline([c])}</th>" for c in b.header)
        rows = "".join("<tr>" + "".join(f"<td>{inline([c])}</td>" for c in r) + "</tr>" for r in b.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(b, Figure):
        return (f'<figure class="picture" id="{b.name}"><div class="svg">{b.svg}</div>'
                f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
    raise TypeError(b)


def render(doc) -> str:
    css = _fonts_inlined((KATEX / "katex.min.css").read_text(encoding="utf-8"))
    js = (KATEX / "katex.min.js").read_text(encoding="utf-8")
    body = "\n".join(block(b) for b in doc.blocks)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(doc.title)}</title>\n<style>{css}</style>\n<style>{STYLE}</style>\n"
            f"</head>\n<body>\n{body}\n<script>{js}</script>\n<script>{SCRIPT}</script>\n</body>\n</html>\n")
