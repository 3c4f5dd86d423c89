"""One gradient's explanation as a document, in the order the issue asks:

    1 the forward equations it depends on, with shapes
    2 the chain rule in index notation, link by link from J
    3 from indices to matrices: what makes each transpose
    4 the shape check
    5 row vectors and column vectors, and why the answers are transposes
    6 a numerical witness: finite differences beside the formula's value
    7 where the seed's solution differs (the seed's model only)

A document is a list of blocks (headings, paragraphs, display math, tables)
whose math is ``notation.M``; ``render_*`` turn it into text, Markdown,
LaTeX, HTML; ``data`` holds the same content for JSON.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from elman.explain import expr as E
from elman.explain import notation as nt
from elman.explain import numeric, seed_notes
from elman.explain.checker import check, namespace
from elman.explain.contrib import J, Ctx
from elman.explain.eqmath import equation_math
from elman.explain.rules import fan_out


@dataclass
class Heading:
    level: int
    parts: list


@dataclass
class Para:
    parts: list


@dataclass
class Display:
    lines: list


@dataclass
class Table:
    header: list
    rows: list


@dataclass
class Figure:
    """A picture: ``svg`` is the whole SVG document, ``name`` its file name
    without .svg (``--format svg --out DIR`` writes DIR/name.svg)."""
    name: str
    svg: str
    caption: str


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)
    data: dict = field(default_factory=dict)


def mdict(m):
    return {"text": m.text, "tex": m.tex}


def shape_line(e, model) -> nt.M:
    """(r×c)(r×c) = r×c for the top operation of a formula."""
    s = lambda x: nt.paren_shape(E.shape_of(x, model))  # noqa: E731
    res = nt.shape(E.shape_of(e, model))
    if isinstance(e, E.MatMul):
        return nt.seq(E.render(e, model), ": ", s(e.a), s(e.b), " = ", res)
    if isinstance(e, E.Had):
        return nt.seq(E.render(e, model), ": ", s(e.a), " ⊙ ", s(e.b), " = ", res)
    return nt.seq(E.render(e, model), ": ", res)


def _steps_equations(d, chain):
    model, eqs = d.model, set()
    for n in chain:
        for c in d.steps[n].contribs:
            eqs.add(id(c.eq))
            if c.eq.kind == "loss":
                eqs.add(id(model.definition(c.eq.args[0])))
    return [eq for eq in model.equations if id(eq) in eqs]


def forward_section(d, chain):
    model, c = d.model, Ctx(d.model)
    eqs = _steps_equations(d, chain)
    names = []
    for eq in eqs:
        for n in [*eq.uses(), eq.lhs]:
            if n not in names and n != model.loss:
                names.append(n)
    shapes = nt.join([nt.seq(c.q(n), ": ", c.shape(n)) for n in names], ",   ")
    onehot = [c.q(n) for n in names if model.is_onehot(n)]
    extra = ["; ", nt.join(onehot, ", "), " one-hot"] if onehot else []
    return [Display([equation_math(model, eq) for eq in eqs]),
            Para(["Shapes, every vector a row: ", shapes, *extra, "; J is a scalar."])]


def _entries(name, value, fd, limit=6):
    rows, flat = [], np.ndindex(value.shape)
    for k, ix in enumerate(flat):
        if k == limit:
            break
        label = f"{name}[{ix[1]}]" if value.shape[0] == 1 else f"{name}[{ix[0]},{ix[1]}]"
        rows.append([label, f"{fd[ix]: .9f}", f"{value[ix]: .9f}", f"{abs(fd[ix] - value[ix]):.1e}"])
    return rows


def witness_section(d, name, seed_values=None):
    step, model = d.steps[name], d.model
    value = seed_values[name] if seed_values is not None and name in seed_values else step.value
    source = "elman.model.step_gradients (elman.core.layers backward)" if value is not step.value else "the formula"
    diff = float(np.abs(value - step.fd).max())
    dims = ", ".join(f"{nt.dim(k).text}={v}" for k, v in model.dims.items())
    formula = E.render(step.expr, model)
    blocks = [Para([f"A random float64 instance ({dims}, seed 0): central finite differences of J (eps 1e-5) "
                    "beside the value of ", nt.seq(nt.frac(J, Ctx(model).q(name)), " = ", formula),
                    f" computed by {source}."]),
              Table(["entry", "finite difference", "formula", "|difference|"], _entries(name, value, step.fd)),
              Para([f"Largest |difference| over all {value.size} entries: {diff:.1e} "
                    f"(relative {numeric.agree(value, step.fd):.1e})."])]
    if value is not step.value:
        blocks.append(Para(["The engine's own formula ", formula, ", evaluated on the same instance, agrees with "
                            f"elman's backward pass to {float(np.abs(step.value - value).max()):.1e}."]))
    data = {"instance": dict(model.dims), "source": source, "finite_difference": step.fd.tolist(),
            "formula": value.tolist(), "max_abs_difference": diff, "max_rel_error": numeric.agree(value, step.fd)}
    return blocks, data


def column_section(d, name):
    model, c, step = d.model, Ctx(d.model), d.steps[name]
    flipped = name not in model.shapes or model.shapes[name][0] == "1"
    keep = E.to_column(step.expr, model, flipped, wform=False)
    wform = E.to_column(step.expr, model, True, wform=True)
    blocks, weights = [], [k for k in step.contribs if k.column]
    for k in weights:
        blocks.append(Display(k.column))
    if not weights:
        lines = [nt.seq(nt.words("column vectors: "), nt.frac(J, c.q(name)), " = ", E.render(keep, model))]
        if E.to_numpy(wform) != E.to_numpy(keep):
            lines.append(nt.seq(nt.words("and with every matrix W written W̃ = Wᵀ: "), nt.frac(J, c.q(name)),
                                " = ", E.render(wform, model)))
        blocks.append(Display(lines + [shape_line(wform, model)]))
    env_w = E.column_env(d.env, model, wform=True)
    err = numeric.agree(E.evaluate(wform, env_w), step.value.T)
    why = ["Why transposes: a gradient has the shape of what it differentiates. A column vector is its row "
           "transposed, so its gradient is the row gradient transposed; a matrix written W̃ = Wᵀ, as in z = W̃ a, "
           "has gradient (dJ/dW)ᵀ — the outer product taken the other way round, a column times a row either way. "
           "A matrix kept as it is (z = Wᵀ a) keeps its gradient, only written with columns. "
           f"Checked on the witness instance: the column formula equals the row one transposed to {err:.1e}."]
    blocks.append(Para(why))
    return blocks, {"keep_matrices": mdict(E.render(keep, model)), "transposed_matrices": mdict(E.render(wform, model)),
                    "numpy": E.to_numpy(wform), "agreement": err}


def seed_section(d, name):
    from elman.explain import formula
    seed_text, seed_numpy, notes = seed_notes.SEED[name]
    v = check(seed_numpy, name, d.model)
    c = Ctx(d.model)
    blocks = [Display([nt.seq(nt.words("the seed: "), nt.frac(J, c.q(name)), " = ", seed_text),
                       nt.seq(nt.words("elman:    "), nt.frac(J, c.q(name)), " = ", E.render(d.expanded(name), d.model))]),
              Para([f"elman check \"{seed_numpy}\" --wrt {name}: ", nt.words(v.verdict), "."])]
    step = d.steps[name]
    try:
        value = formula.evaluate(seed_numpy, namespace(d, "row"))
        ix = np.unravel_index(np.argmax(np.abs(step.fd)), step.fd.shape)
        label = _entries(name, step.fd, step.fd, limit=step.fd.size)[int(np.ravel_multi_index(ix, step.fd.shape))][0]
        blocks.append(Para([f"On the witness instance the seed's formula gives {label} = {value[ix]:+.9f} where "
                            f"finite differences give {step.fd[ix]:+.9f}."]))
    except formula.NonConforming as nc:
        blocks.append(Para([f"On the witness instance NumPy cannot evaluate it: `{nc.product}` multiplies "
                            f"({'×'.join(map(str, nc.shapes[0]))}) by ({'×'.join(map(str, nc.shapes[1]))})."]))
    blocks += [Para(seed_notes.SIGN)] + [Para([n]) for n in notes]
    return blocks, {"seed_formula": mdict(seed_text), "seed_numpy": seed_numpy, "verdict": v.verdict}


def shape_figure(d, name, chain) -> Figure:
    from elman.explain.pictures import shape_picture
    c = Ctx(d.model)
    rows = [(nt.frac(J, c.q(ct.target)).text, ct.expr) for k in chain for ct in d.steps[k].contribs]
    key = f"shapes-{name}"
    return Figure(key, shape_picture(d.model, key, rows),
                  f"The products on the way to dJ/d{name}, drawn at the instance's sizes, one square per entry.")


def figure_data(fig) -> dict:
    return {"name": fig.name, "file": f"{fig.name}.svg", "caption": fig.caption, "svg": fig.svg}


def chain_link(d, k):
    """One link of the chain in index notation: each contribution to dJ/dk,
    and their sum where k is used in several places."""
    model, c, s = d.model, Ctx(d.model), d.steps[k]
    blocks = []
    for ct in s.contribs:
        blocks += [Para([nt.seq(nt.frac(J, c.q(k)), " = ", E.render(ct.expr, model)),
                         f"   ({ct.rule}, line {ct.eq.line}: ", equation_math(model, ct.eq), ")"]),
                   Display(ct.index)]
    if len(s.contribs) > 1:
        blocks.append(Para(fan_out(model, k, s.contribs)))
    return blocks, {"quantity": k, "formula": mdict(E.render(s.expr, model)),
                    "rules": [ct.rule for ct in s.contribs], "lines": [ct.eq.line for ct in s.contribs],
                    "index": [mdict(m) for ct in s.contribs for m in ct.index],
                    "shape_check": [mdict(m) for ct in s.contribs for m in ct.shapes],
                    "max_rel_error_at_derivation": s.error}


def target_section(d, name, convention="row", seed_values=None):
    """Blocks and data for dJ/d(name)."""
    model, c, step = d.model, Ctx(d.model), d.steps[name]
    chain = d.chain(name)
    formula, expanded = E.render(step.expr, model), E.render(d.expanded(name), model)
    col = E.render(E.to_column(d.expanded(name), model, True, wform=True), model)
    dJ = nt.frac(J, c.q(name))
    main = nt.seq(dJ, " = ", formula) + (nt.seq(" = ", expanded) if expanded != formula else nt.M("", ""))
    if convention == "column":
        dJc = nt.frac(J, E.sym_math(E.Sym(name, col=True), model)) if name in model.shapes else dJ
        main = nt.seq(dJc, " = ", col, nt.words("   (column vectors; a matrix W written W̃ = Wᵀ)"))
    rshape = model.row_shape(name)
    shown = rshape[::-1] if convention == "column" else rshape
    blocks = [Heading(2, [dJ, f" — the gradient of J with respect to {name}"]),
              Para([main, ", ", nt.shape(shown), "."]),
              Heading(3, ["1. The forward equations it depends on"]), *forward_section(d, chain),
              Heading(3, ["2. The chain rule in index notation"])]
    data = {"target": name, "formula": mdict(formula), "expanded": mdict(expanded), "column": mdict(col),
            "numpy": E.to_numpy(d.expanded(name)), "shape": nt.shape(rshape).text, "chain": []}
    for k in chain:
        cb, cd = chain_link(d, k)
        blocks += cb
        data["chain"].append(cd)
    blocks.append(Heading(3, ["3. From indices to matrices"]))
    for k in chain:
        for ct in d.steps[k].contribs:
            label = [nt.seq(nt.frac(J, c.q(k)), " = ", E.render(ct.expr, model)), ". "]
            blocks += [Para((label if i == 0 else []) + p) for i, p in enumerate(ct.notes)]
    blocks.append(Heading(3, ["4. The shape check"]))
    blocks.append(Display([m for k in chain for ct in d.steps[k].contribs for m in ct.shapes]))
    fig = shape_figure(d, name, chain)
    blocks.append(fig)
    data["figures"] = [figure_data(fig)]
    blocks.append(Heading(3, ["5. Row vectors and column vectors"]))
    cb, data["column_convention"] = column_section(d, name)
    blocks += cb
    blocks.append(Heading(3, ["6. A numerical witness"]))
    wb, data["witness"] = witness_section(d, name, seed_values)
    blocks += wb
    if seed_values is not None and name in seed_notes.SEED:
        blocks.append(Heading(3, ["7. Where the seed's solution differs"]))
        sb, data["seed"] = seed_section(d, name)
        blocks += sb
    return blocks, data
