"""A standalone LaTeX document (pdflatex; amsmath and amssymb only)."""
from __future__ import annotations

from elman.explain.document import Display, Figure, Heading, Para, Table
from elman.explain.notation import M, text_escape_tex

PREAMBLE = r"""\documentclass[11pt]{article}
\usepackage[utf8]{inputenc}
\usepackage[T1]{fontenc}
\usepackage{amsmath,amssymb}
\setlength{\textwidth}{16.5cm}\setlength{\oddsidemargin}{0cm}\setlength{\evensidemargin}{0cm}
\setlength{\parindent}{0pt}\setlength{\parskip}{0.6em}
\allowdisplaybreaks
\begin{document}
"""


def inline(parts) -> str:
    return "".join(f"\\({p.tex}\\)" if isinstance(p, M) else text_escape_tex(str(p)) for p in parts)


def block(b) -> str:
    if isinstance(b, Heading):
        cmd = {1: "section*", 2: "subsection*"}.get(b.level, "subsubsection*")
        return f"\\{cmd}{{{inline(b.parts)}}}"
    if isinstance(b, Para):
        return inline(b.parts)
    if isinstance(b, Display):
        return "\\begin{gather*}\n" + " \\\\\n".join(m.tex for m in b.lines) + "\n\\end{gather*}"
    if isinstance(b, Table):
        cols = "l" + "r" * (len(b.header) - 1)
        rows = [" & ".join(inline([c]) for c in r) + r" \\" for r in [b.header] + b.rows]
        rows.insert(1, r"\hline")
        return "\\begin{center}\n\\begin{tabular}{" + cols + "}\n" + "\n".join(rows) + "\n\\end{tabular}\n\\end{center}"
    if isinstance(b, Figure):
        words = f"Picture {b.name}.svg (written by --format svg --out DIR): {b.caption}"
        return "\\emph{" + text_escape_tex(words) + "}"
    raise TypeError(b)


def render(doc) -> str:
    body = "\n\n".join(block(b) for b in doc.blocks)
    return PREAMBLE + body + "\n\n\\end{document}\n"
