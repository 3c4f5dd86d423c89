"""A few SVG primitives, written as text: enough for the explainer's
pictures without a plotting library. Sizes are in pixels; text widths are
estimated generously (the browser test checks that every label fits)."""
from __future__ import annotations

import html

FONT = 13
FAMILY = "DejaVu Sans, Arial, Helvetica, sans-serif"


def text_width(s: str, size: int = FONT) -> float:
    """An upper estimate of a label's width: wide for every character."""
    return 0.64 * size * len(s) + 2


class Svg:
    """``key`` makes the ids unique: several pictures share one HTML page."""

    def __init__(self, key: str):
        self.items, self.key = [], "".join(ch if ch.isalnum() else "-" for ch in key)

    def _marker(self, i):
        return f' marker-end="url(#{self.key}-arrow{i})"' if i is not None else ""

    def rect(self, x, y, w, h, fill="#eef3fb", stroke="#4a5d7e", rx=0, width=1.0):
        self.items.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{rx}" '
                          f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"/>')

    def text(self, x, y, s, size=FONT, anchor="middle", fill="#222", weight="normal", cls=""):
        c = f' class="{cls}"' if cls else ""
        self.items.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                          f'fill="{fill}" font-weight="{weight}"{c}>{html.escape(s)}</text>')

    def line(self, x1, y1, x2, y2, stroke="#999", width=1.0, marker=None, dash=""):
        m = self._marker(marker)
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.items.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" '
                          f'stroke-width="{width}"{m}{d}/>')

    def path(self, d, stroke, width=1.5, marker=None, dash=""):
        m = self._marker(marker)
        dd = f' stroke-dasharray="{dash}"' if dash else ""
        self.items.append(f'<path d="{d}" fill="none" stroke="{stroke}" stroke-width="{width}"{m}{dd}/>')

    def circle(self, x, y, r, fill, stroke):
        self.items.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{fill}" stroke="{stroke}"/>')

    def render(self, width, height, title, colors=("#999",)) -> str:
        """The document; one arrowhead marker per colour, by index into ``colors``."""
        markers = "".join(
            f'<marker id="{self.key}-arrow{i}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>'
            for i, c in enumerate(colors))
        return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
                f'width="{width:.0f}" height="{height:.0f}" role="img" font-family="{FAMILY}">'
                f"<title>{html.escape(title)}</title><defs>{markers}</defs>"
                + "".join(self.items) + "</svg>")
