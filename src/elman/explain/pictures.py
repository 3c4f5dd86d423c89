"""Pictures for the places where people would rather look than read.

``shape_picture``: every product on the way to a gradient, each operand a
grid of its entries at the instance's sizes, its dims on its sides: hᵀδ2 is
a Dh×1 column times a 1×|V| row, which makes the Dh×|V| matrix.

``unrolled_picture``: the model's computation graph over three steps,
t−1, t, t+1, forward edges in grey, and the gradient paths into each state
at step t drawn in colour, numbered, and listed with their formulas: the
terms that the recurrence for dJ/dh(t) (and dJ/dc(t)) adds.
"""
from __future__ import annotations

from elman.explain import expr as E
from elman.explain import notation as nt
from elman.explain.svg import FONT, Svg, text_width

UNIT = 14                     # pixels per entry of a matrix
MAX_NAME = 30                 # an operand's label longer than this is shortened


def _size(d, dims):
    return 1 if d == "1" else int(d) if d.isdigit() else dims[d]


def _short(s):
    return s if len(s) <= MAX_NAME else s[:MAX_NAME - 1] + "…"


def _operands(e):
    """(prefix, [items]) of a formula's top operation; an item is an
    operand (an expression) or an operator's symbol."""
    prefix = ""
    while isinstance(e, (E.Neg, E.Scale)):
        prefix += "−" if isinstance(e, E.Neg) else E.number(e.c).text + " "
        e = e.a
    if isinstance(e, E.MatMul):
        return prefix, [e.a, "·", e.b]
    if isinstance(e, E.Had):
        return prefix, [e.a, "⊙", e.b]
    if isinstance(e, E.Add):
        return prefix, [e.a, "−", e.b.a] if isinstance(e.b, E.Neg) else [e.a, "+", e.b]
    return prefix, [e]


def _what(e, items, model):
    res = nt.shape(E.shape_of(e, model)).text
    if len(items) == 1:
        return f"no product: {res} passes through"
    a, op, b = items
    sa, sb = E.shape_of(a, model), E.shape_of(b, model)
    shapes = f"({nt.shape(sa).text}){' ⊙ ' if op == '⊙' else ''}({nt.shape(sb).text}) = {res}"
    if op == "·" and sa[1] == "1" and sb[0] == "1":
        return f"a column times a row, {shapes}: the outer product, every pair of entries multiplied"
    if op == "·" and sa[0] == "1":
        return f"a row times a matrix, {shapes}: each entry of the result sums down one column"
    if op == "⊙":
        return f"entry by entry, {shapes}: no sum, no transpose, the shape stays"
    return f"a sum of two terms of one shape, {res}" if op in "+−" else f"a matrix product, {shapes}"


class _Row:
    """One formula's boxes, measured before they are drawn."""

    def __init__(self, model, dims, label, e):
        self.model, self.dims = model, dims
        prefix, items = _operands(e)
        self.title = f"{label} = {prefix}{E.render(e, model).text if len(items) > 1 else ''}".rstrip(" =")
        self.what = _what(e, items, model)
        self.items = [i if isinstance(i, str) else (_short(E.render(i, model).text), E.shape_of(i, model))
                      for i in items]
        self.items += ["=", (_short(label), E.shape_of(e, model))]
        self.slots = [self._slot(i) for i in self.items]
        self.box_h = max(_size(i[1][0], dims) * UNIT for i in self.items if not isinstance(i, str))

    def _slot(self, item):
        if isinstance(item, str):
            return 28
        name, (r, c) = item
        w = _size(c, self.dims) * UNIT
        return max(w, text_width(name), text_width(nt.dim(c).text)) + text_width(nt.dim(r).text) + 12

    @property
    def width(self):
        return 20 + max(sum(self.slots), text_width(self.title, FONT + 1), text_width(self.what, FONT - 1))

    @property
    def height(self):
        return 44 + 18 + self.box_h + 26

    def draw(self, svg, y):
        svg.text(10, y + 16, self.title, size=FONT + 1, anchor="start", weight="bold")
        svg.text(10, y + 34, self.what, size=FONT - 1, anchor="start", fill="#555")
        top, x = y + 44 + 18, 10.0
        for item, slot in zip(self.items, self.slots):
            if isinstance(item, str):
                svg.text(x + slot / 2, top + self.box_h / 2 + 5, item, size=FONT + 4)
            else:
                self._box(svg, item, x, top, slot)
            x += slot

    def _box(self, svg, item, x, top, slot):
        name, (r, c) = item
        rows, cols = _size(r, self.dims), _size(c, self.dims)
        left = x + text_width(nt.dim(r).text) + 6
        w, h = cols * UNIT, rows * UNIT
        bx = left + (slot - (left - x) - 6 - w) / 2
        by = top + (self.box_h - h) / 2
        svg.rect(bx, by, w, h)
        for i in range(1, cols):
            svg.line(bx + i * UNIT, by, bx + i * UNIT, by + h, stroke="#b9c6dc", width=0.6)
        for j in range(1, rows):
            svg.line(bx, by + j * UNIT, bx + w, by + j * UNIT, stroke="#b9c6dc", width=0.6)
        svg.text(bx + w / 2, by - 5, nt.dim(c).text, size=FONT - 2, fill="#4a5d7e")
        svg.text(bx - 4, by + h / 2 + 4, nt.dim(r).text, size=FONT - 2, anchor="end", fill="#4a5d7e")
        svg.text(bx + w / 2, top + self.box_h + 18, name, size=FONT - 1)


def shape_picture(model, key, rows) -> str:
    """``rows``: (label, formula) pairs, e.g. ("dJ/dU", hᵀ δ2), drawn one
    under the other at the sizes of the model's dims."""
    measured = [_Row(model, model.dims, label, e) for label, e in rows]
    svg, y = Svg(key), 4.0
    for row in measured:
        row.draw(svg, y)
        y += row.height
    width = max(r.width for r in measured)
    sizes = ", ".join(f"{nt.dim(k).text}={v}" for k, v in model.dims.items())
    svg.text(10, y + 8, f"one square per entry ({sizes})", size=FONT - 2, anchor="start", fill="#555")
    return svg.render(width, y + 18, f"The shapes of the products on the way to {rows[-1][0]}")


# ----------------------------------------------------- the unrolled graph

STEPS = ("t−1", "t", "t+1")
COLORS = ("#9a9a9a", "#c0392b", "#1f6fb2", "#2e8b57", "#8e44ad")   # forward, then one per state
BADGES = "①②③④⑤⑥⑦⑧⑨⑩⑪⑫⑬⑭⑮⑯⑰⑱⑲⑳"


def _levels(model):
    """Each drawn quantity's height in a step: inputs 0, then one more than
    the highest quantity an equation reads (parameters are not drawn)."""
    lvl = {n: 0 for n, dc in model.decls.items() if dc.role == "input" and n not in model.recur}
    for eq in model.equations:
        lvl[eq.lhs] = 1 + max([lvl[u] for u in eq.uses() if u in lvl] or [0])
    return lvl


class _Layout:
    """Node positions: a column per step, a row per level, inputs at the bottom."""

    ROW, GAP, TOP, LEFT = 58, 70, 46, 30

    def __init__(self, model):
        self.model, self.lvl = model, _levels(model)
        self.label = {n: nt.name(n).text for n in self.lvl}
        self.node_w = max(34.0, max(text_width(s) for s in self.label.values()) + 14)
        by_level = {}
        for n, k in self.lvl.items():
            by_level.setdefault(k, []).append(n)
        self.by_level, self.top = by_level, max(by_level)
        self.col_w = max(150, max(len(v) for v in by_level.values()) * (self.node_w + 18) + 20)
        self.pos = {}
        for c in range(3):
            x0 = self.LEFT + c * (self.col_w + self.GAP)
            for k, names in by_level.items():
                span = len(names) * (self.node_w + 18) - 18
                for i, n in enumerate(names):
                    x = x0 + (self.col_w - span) / 2 + i * (self.node_w + 18) + self.node_w / 2
                    self.pos[(n, c)] = (x, self.TOP + (self.top - k) * self.ROW + 14)
        self.width = self.LEFT * 2 + 3 * self.col_w + 2 * self.GAP
        self.height = self.TOP + self.top * self.ROW + 40

    def edge(self, a, b, pad=16):
        """Endpoints of the straight line between two nodes, off their boxes."""
        (x1, y1), (x2, y2) = self.pos[a], self.pos[b]
        dx, dy = x2 - x1, y2 - y1
        n = max((dx * dx + dy * dy) ** 0.5, 1e-9)
        return x1 + dx / n * pad, y1 + dy / n * pad, x2 - dx / n * pad, y2 - dy / n * pad


def _paths(d):
    """(state, user node, its step, formula) of every gradient path into a
    state at step t: its users at t, and the users of its carried inputs at t+1."""
    model, out = d.model, []
    for s in model.states:
        for k in d.steps[s].contribs:
            out.append((s, k.eq.lhs, 1, E.render(k.expr, model, timed=True)))
        for inp in model.carried(s):
            for k in d.steps[inp].contribs:
                out.append((s, k.eq.lhs, 2, E.render(k.expr, model, timed=True, shift=1)))
    return out


def unrolled_picture(d, key="unrolled") -> str:
    model = d.model
    lay = _Layout(model)
    svg = Svg(key)
    _draw_forward(svg, model, lay)
    paths = _paths(d)
    color = {s: i + 1 for i, s in enumerate(model.states)}
    for n, (s, user, col, _) in enumerate(paths):
        _draw_path(svg, lay, (user, col), (s, 1), color[s], BADGES[n % len(BADGES)])
    for (n, c), (x, y) in lay.pos.items():
        hot = c == 1 and n in color
        svg.rect(x - lay.node_w / 2, y - 12, lay.node_w, 24, fill="#fff" if not hot else "#fdf2e9",
                 stroke=COLORS[color[n]] if hot else "#4a5d7e", rx=6, width=2.0 if hot else 1.0)
        svg.text(x, y + 5, lay.label[n])
    for c, t in enumerate(STEPS):
        svg.text(lay.LEFT + c * (lay.col_w + lay.GAP) + lay.col_w / 2, 22, f"step {t}", size=FONT + 1,
                 weight="bold")
    height, lines = _legend(svg, d, paths, color, lay.height)
    width = max([lay.width] + [text_width(s) + 2 * lay.LEFT for s in lines])
    return svg.render(width, height, "The computation graph unrolled over three steps, with the gradient "
                      "paths into each state at step t", COLORS)


def _draw_forward(svg, model, lay):
    """Grey arrows along each step's equations and from each state into the
    next step; dashed stubs where the window goes on (from t−2, to t+2)."""
    for eq in model.equations:
        for u in eq.uses():
            if u in model.recur:
                x, y = lay.pos[(eq.lhs, 0)]
                svg.line(4, y - 20, x - lay.node_w / 2 - 2, y - 4, stroke="#666", marker=0, dash="3,3")
    for s in model.states:
        x, y = lay.pos[(s, 2)]
        svg.line(x + lay.node_w / 2 + 2, y + 4, lay.width - 4, y + 24, stroke="#666", dash="3,3")
    for c in range(3):
        for eq in model.equations:
            for u in eq.uses():
                if (u, c) in lay.pos:
                    svg.line(*lay.edge((u, c), (eq.lhs, c)), marker=0)
                elif u in model.recur and c > 0:
                    svg.line(*lay.edge((model.recur[u], c - 1), (eq.lhs, c)), stroke="#666", marker=0)


def _draw_path(svg, lay, start, end, k, badge):
    """A curved dashed path from a user back to the state, numbered."""
    x1, y1, x2, y2 = lay.edge(start, end, pad=16)
    mx, my = (x1 + x2) / 2, (y1 + y2) / 2
    dx, dy = x2 - x1, y2 - y1
    n = max((dx * dx + dy * dy) ** 0.5, 1e-9)
    bend = 26 if n > 80 else 60           # a short path bulges more, so that its number stands clear
    cx, cy = mx - dy / n * bend, my + dx / n * bend
    svg.path(f"M{x1:.1f},{y1:.1f} Q{cx:.1f},{cy:.1f} {x2:.1f},{y2:.1f}", COLORS[k], width=1.8, marker=k, dash="5,3")
    u = 0.3 if n > 80 else 0.5            # the number sits near the user, where the paths are apart
    bx = (1 - u) ** 2 * x1 + 2 * u * (1 - u) * cx + u * u * x2
    by = (1 - u) ** 2 * y1 + 2 * u * (1 - u) * cy + u * u * y2
    svg.circle(bx, by, 9, "#fff", COLORS[k])
    svg.text(bx, by + 4.5, badge, size=FONT - 1, fill=COLORS[k], cls="badge")


def _sum_line(d, s, paths):
    terms = " + ".join(BADGES[i] for i, p in enumerate(paths) if p[0] == s)
    return f"dJ/d{nt.name(s).text}(t) = {terms}"


def _legend(svg, d, paths, color, y):
    """Each numbered path's formula, then each state's sum; returns the
    height and the lines written (for the width)."""
    title = "gradient paths into the states at step t (dashed, against the arrows):"
    svg.text(_Layout.LEFT, y, title, anchor="start", weight="bold")
    lines, y = [title], y + 20
    for i, (s, user, col, m) in enumerate(paths):
        line = f"{BADGES[i]} {m.text}    (through {nt.name(user).text}({STEPS[col]}))"
        svg.text(_Layout.LEFT, y, line, anchor="start", fill=COLORS[color[s]])
        lines.append(line)
        y += 19
    for s in d.model.states:
        line = _sum_line(d, s, paths)
        svg.text(_Layout.LEFT, y + 4, line, anchor="start", weight="bold", fill=COLORS[color[s]])
        lines.append(line)
        y += 21
    return y + 6, lines
