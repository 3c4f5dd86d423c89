"""Math with two faces: every formula the explainer shows is an ``M``, which
carries a plain-text rendering (UTF-8, for the terminal and JSON) and a TeX
one (for LaTeX, Markdown, HTML and Jupyter), built side by side so the two
can never say different things.

Operators are written once in their Unicode form (``Σ ⊙ × ᵀ −``) and
translated to TeX by ``op``; names go through ``name`` so that ``yhat``
reads ŷ / ``\\hat{y}`` and ``b2`` reads b2 / ``b_{2}`` everywhere.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Unicode operator -> TeX. Longest keys first so "Σ_k" is not split oddly.
_TEX = {
    "Σ": r"\sum", "⊙": r"\odot ", "×": r"\times ", "ᵀ": r"^{\top}", "−": "-",
    "·": r"\cdot ", "≠": r"\neq ", "δ": r"\delta", "σ": r"\sigma", "′": "'",
    "→": r"\to ", "≈": r"\approx ", "∂": r"\partial ", "✓": r"\;\checkmark ",
    "[": "[", "]": "]", "|": "|", "{": r"\{", "}": r"\}", "…": r"\ldots ", "²": "^2", "∋": r"\ni ",
}


@dataclass(frozen=True)
class M:
    """One piece of math: ``text`` for terminals, ``tex`` for TeX renderers."""
    text: str
    tex: str

    def __add__(self, other):
        other = other if isinstance(other, M) else op(other)
        return M(self.text + other.text, self.tex + other.tex)

    def __radd__(self, other):
        return op(other) + self


def op(s: str) -> M:
    """Operators, digits and spacing: same text, TeX by the table above.
    A string with a word in it (", the shape of U") is prose: \\text{...}."""
    if re.search(r"(?<![_A-Za-z\\])[A-Za-z]{2,}", s):     # a word, not a subscript such as _ij
        return words(s)
    tex = "".join(_TEX.get(ch, ch) for ch in s)
    return M(s, re.sub(r"_([A-Za-z0-9]{2,})", r"_{\1}", tex))


def seq(*parts) -> M:
    """Concatenate M objects and operator strings."""
    out = M("", "")
    for p in parts:
        out = out + p
    return out


def join(parts, sep: str) -> M:
    out = M("", "")
    for i, p in enumerate(parts):
        out = out + (op(sep) if i else M("", "")) + p
    return out


_SPECIAL = {"yhat": ("ŷ", r"\hat{y}"), "delta": ("δ", r"\delta")}


def name(n: str, prev: str | None = None) -> M:
    """A quantity's name. ``yhat`` -> ŷ; ``b2`` -> b2 / b_{2}; ``L_x`` -> L_x /
    L_{x}; ``prev`` renders a recurrent input as its state one step back,
    e.g. h_prev -> h(t-1) / h^{(t-1)}."""
    if prev:
        base = name(prev)
        return M(base.text + "(t−1)", "{" + base.tex + "^{(t-1)}}")   # braced: a ᵀ may follow
    if n in _SPECIAL:
        return M(*_SPECIAL[n])
    m = re.fullmatch(r"([A-Za-z]+?)(\d+)", n)
    if m:
        head = _SPECIAL.get(m[1], (m[1], m[1]))
        return M(head[0] + m[2], head[1] + "_{" + m[2] + "}")
    m = re.fullmatch(r"([A-Z])([a-z]+)", n)          # Wy, Wh: W_{y}, W_{h}
    if m:
        return M(n, m[1] + "_{" + m[2] + "}")
    if "_" in n:
        head, sub = n.split("_", 1)
        sub_tex = sub if len(sub) == 1 else r"\mathrm{" + sub.replace("_", r"\_") + "}"
        return M(n, name(head).tex + "_{" + sub_tex + "}")
    return M(n, n if len(n) == 1 else r"\mathrm{" + n + "}")


def idx(base: M, i: str) -> M:
    """An entry: h_i, z2_j / z_{2,j}, (dJ/dh)_j / (\frac{..}{..})_{j}."""
    if base.text.endswith("ᵀ"):
        return M(f"({base.text})_{i}", "(" + base.tex + ")_{" + i + "}")
    text = f"({base.text})" if "/" in base.text else base.text
    m = re.fullmatch(r"([A-Za-z\\]+)_\{([^{}]+)\}", base.tex)
    if m:
        return M(f"{text}_{i}", f"{m[1]}_{{{m[2]},{i}}}")
    tex = base.tex
    if "_" in tex or r"\frac" in tex:
        tex = "(" + tex + ")"
    return M(f"{text}_{i}", tex + "_{" + i + "}")


_OPERATORS = {"log": r"\log ", "exp": r"\exp ", "tanh": r"\tanh "}


def fn(f: str) -> M:
    """A function's name: upright in TeX (\\log, \\operatorname{sigmoid})."""
    return M(f, _OPERATORS.get(f, r"\operatorname{" + f + "}"))


def frac(num: M, den: M) -> M:
    """dJ/dU_ij  /  \\frac{\\partial J}{\\partial U_{ij}}"""
    return M(f"d{num.text}/d{den.text}", r"\frac{\partial " + num.tex + r"}{\partial " + den.tex + "}")


def dim(d: str) -> M:
    """A size: V reads |V| as in the seed; Dh reads Dh / D_h."""
    if d == "V":
        return M("|V|", "|V|")
    if d == "Dh":
        return M("Dh", "D_h")
    return M(d, d if len(d) == 1 or d.isdigit() else r"\mathrm{" + d + "}")


def shape(s) -> M:
    """(rows, cols) -> Dh×|V|."""
    return join([dim(str(d)) for d in s], "×")


def paren_shape(s) -> M:
    return seq("(", shape(s), ")")


_PROSE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "|": r"$|$",
          "<": r"$<$", ">": r"$>$", "−": "-", "—": "---", "′": "'", "…": r"\ldots{}", "“": "``", "”": "''"}


def text_escape_tex(s: str) -> str:
    """Plain prose (possibly with Unicode math letters) for a LaTeX document
    or a \\text{...}: specials escaped, δ ᵀ ⊙ ŷ ... as inline math."""
    s = re.sub("(.)\u0303", lambda m: "\x00" + m[1], s)     # W̃: a letter with a combining tilde
    out = []
    for ch in s:
        if ch in _PROSE:
            out.append(_PROSE[ch])
        elif ch in _TEX and ord(ch) > 127:
            out.append("$" + _TEX[ch].strip() + "$")
        elif ch == "ŷ":
            out.append(r"$\hat{y}$")
        elif unicodedata.name(ch, "").startswith("GREEK SMALL LETTER "):
            out.append("$\\" + unicodedata.name(ch).split()[-1].lower() + "$")
        else:
            out.append(ch)
    return re.sub("\x00(.)", lambda m: r"$\tilde{" + m[1] + "}$", "".join(out))


def words(s: str) -> M:
    """Prose inside a formula: plain in text, \\text{...} in TeX (outer
    spaces kept, which math mode would drop)."""
    lead = r"\ " if s[:1] == " " else ""
    trail = r"\ " if s[-1:] == " " and s.strip() else ""
    return M(s, lead + r"\text{" + text_escape_tex(s.strip()) + "}" + trail)
