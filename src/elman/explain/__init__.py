"""Explain every gradient: derivations, checked as they are made.

    from elman.explain import explain, check, transpose_answer
    print(explain(["U"]).text())          # the seed's question, answered
    explain(["all"], model="mlp")         # any model in the equation language
    check("h.T @ (y - yhat)", "U")        # -> sign-flipped, and why
    print(transpose_answer())             # the short answer, with a witness

Modules, in the order to read them: ``equations`` (the model language),
``expr`` (formulas as trees), ``rules`` (the chain rule per equation kind),
``engine`` (reverse mode, each result checked numerically), ``document``
and ``timeline`` (the explanation), ``checker`` (verdicts on a user's
formula), ``render_*`` (text, Markdown, LaTeX, HTML, JSON).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from elman.errors import ElmanError
from elman.explain import numeric, seed_notes
from elman.explain.checker import check
from elman.explain.document import Document, Figure, Heading, Para, Table
from elman.explain.engine import EngineError, derive
from elman.explain.equations import load
from elman.explain.notation import name

FORMATS = ("text", "markdown", "latex", "html", "json")


class Explanation:
    """A built explanation; renders to every format, and shows itself in
    Jupyter (Markdown, or LaTeX where a front end prefers it)."""

    def __init__(self, document: Document, ok: bool = True):
        self.document, self.ok = document, ok

    def render(self, fmt: str = "text") -> str:
        if fmt == "svg":
            raise ElmanError("svg is one file per picture: use --out DIR (Explanation.svg_files)")
        if fmt not in FORMATS:
            raise ElmanError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
        from importlib import import_module
        return import_module(f"elman.explain.render_{fmt}").render(self.document)

    def text(self):
        return self.render("text")

    @property
    def figures(self):
        return [b for b in self.document.blocks if isinstance(b, Figure)]

    def svg_files(self, out_dir):
        """(path, svg) for each picture, under ``out_dir`` (created)."""
        if not out_dir:
            raise ElmanError("--format svg writes one file per picture: give --out DIR")
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ElmanError(f"--out {out_dir} is a file; --format svg needs a directory")
        out.mkdir(parents=True, exist_ok=True)
        return [(out / f"{f.name}.svg", f.svg) for f in self.figures]

    def __str__(self):
        return self.text()

    def _repr_markdown_(self):
        return self.render("markdown")

    def _repr_latex_(self):
        lines = [f"\\frac{{\\partial J}}{{\\partial {name(t['target']).tex}}} &= {t['formula']['tex']}"
                 for t in self.document.data["targets"] if "formula" in t]
        return "$$\\begin{aligned}" + r" \\ ".join(lines) + "\\end{aligned}$$" if lines else None


def _targets(d, requested):
    model = d.model
    seed = numeric.is_seed(model)
    every = list(seed_notes.ORDER) if seed else [n for n in d.steps if n in model.decls or n not in model.shapes]
    every += ["bptt"] if model.recur else []
    out = []
    for t in requested:
        names = every if t == "all" else [t]
        for n in names:
            if n == "bptt" and not model.recur:
                raise ElmanError(f"bptt: {model.path} has no `recur` line, so there is no sequence to explain")
            if n != "bptt" and n not in d.steps:
                raise ElmanError(f"unknown target {n!r} for {model.path} (choose from: "
                                 f"{', '.join(list(d.steps) + ['all'] + (['bptt'] if model.recur else []))})")
            if n not in out:
                out.append(n)
    return out


def explain(targets=("U",), model=None, convention: str = "row", verify: bool = False) -> Explanation:
    """The explanation of dJ/d(target) for each target ("all", "bptt", or a
    quantity's name); ``model`` is a path to a .eq file, a bundled model's
    name ("seed", "gru", "lstm", "tied", "elman2", "mlp", "tanh_rnn"), a parsed
    model, or None for the seed."""
    from elman.explain.document import target_section
    from elman.explain.timeline import bptt_section

    if convention not in ("row", "column"):
        raise ElmanError(f"--convention must be row or column, not {convention!r}")
    model = model if model is not None and not isinstance(model, str) else load(model)
    d = derive(model)
    seed = numeric.is_seed(model)
    seed_values = numeric.seed_gradients(d.inputs) if seed else None
    names = _targets(d, [targets] if isinstance(targets, str) else list(targets) or ["U"])
    title = f"Where the gradients of {model.path} come from"
    doc = Document(title, [Heading(1, [title]), Para([_intro(model, convention, seed)])],
                   {"model": model.path, "convention": convention, "targets": []})
    for n in names:
        blocks, data = bptt_section(d, seed_model=seed) if n == "bptt" else target_section(d, n, convention, seed_values)
        doc.blocks += blocks
        doc.data["targets"].append(data)
    ok = True
    if verify:
        blocks, doc.data["verification"], ok = verification(model, names)
        doc.blocks += blocks
    return Explanation(doc, ok)


def _intro(model, convention, seed):
    who = "the seed's Elman RNN language model" if seed else f"the model in {model.path}"
    conv = ("row vectors as in the seed (every vector a 1×n row)" if convention == "row" else
            "the column-vector convention for the summary formulas (vectors n×1, matrices transposed); the "
            "derivation itself is written for row vectors, as in the seed")
    return (f"The gradients of the loss J of {who}, written with {conv}. Every formula was derived by "
            "elman's engine (reverse mode, one rule per equation) and compared with central finite "
            "differences of J the moment it was derived.")


def verification(model, names, seeds=(1, 2, 3, 4, 5)):
    """Derive again on instances of other random sizes: every formula, its
    column-vector form, (for the seed) elman's backward pass, and with
    ``bptt`` every through-time sum and state recurrence."""
    rng = np.random.default_rng(7)
    worst, failures = {}, []
    for s in seeds:
        dims = {k: int(v) for k, v in zip(model.dims, rng.permutation(np.arange(2, 2 + len(model.dims))) + 1)}
        try:
            for n, err in _verify_one(model, names, s, dims):
                worst[n] = max(worst.get(n, 0.0), err)
        except EngineError as exc:
            failures.append(str(exc))
    ok = not failures and all(v < numeric.TOL for v in worst.values())
    rows = [[n, str(len(seeds)), f"{v:.1e}", "pass" if v < numeric.TOL else "FAIL"] for n, v in worst.items()]
    blocks = [Heading(2, ["Verification"]),
              Para([f"Each formula derived again on {len(seeds)} random instances of other sizes and compared "
                    "with finite differences; its column-vector form compared with the row form transposed"
                    + ("; elman.model.step_gradients compared with finite differences"
                       if numeric.is_seed(model) else "") + ("; through time, each parameter's sum and each state's recurrence at every "
                                   "step against finite differences of the unrolled loss" if "bptt" in names
                                   else "") + ". Largest relative error of all these, per quantity:"]),
              Table(["quantity", "instances", "max relative error", "result"], rows)]
    blocks += [Para([f"FAILED: {f}"]) for f in failures]
    return blocks, {"ok": ok, "max_rel_error": worst, "failures": failures}, ok


def _verify_one(model, names, seed, dims):
    """(quantity, relative error) pairs for one instance."""
    from elman.explain import expr as E
    from elman.explain.through_time import through_time

    d = derive(model, seed=seed, dims=dims)
    ref = numeric.seed_gradients(d.inputs) if numeric.is_seed(model) else {}
    out = []
    for n in (x for x in names if x in d.steps):
        step = d.steps[n]
        col = E.to_column(step.expr, model, True, wform=True)
        out += [(n, step.error), (n, numeric.agree(E.evaluate(col, E.column_env(d.env, model, True)), step.value.T))]
        if n in ref:
            out.append((n, numeric.agree(ref[n], step.fd)))
    if "bptt" in names:
        tt = through_time(d, T=3)
        out += [(f"Σ_t {p}", e) for p, e in tt.errors.items()] + [(f"{s}(t)", e) for s, e in tt.state_errors.items()]
    return out


def transpose_answer(convention: str = "row") -> str:
    """The seed's question in 15 lines: where the hᵀ in dJ/dU comes from,
    with a numerical witness from elman's own backward pass."""
    model = load()
    d = derive(model)
    g = numeric.seed_gradients(d.inputs)["U"]
    fd = d.steps["U"].fd
    diff = float(np.abs(g - fd).max())
    if convention == "column":
        lines = [
            "Where does the transpose in dJ/dW = δ hᵀ come from?  (column vectors: z = W h + b2, W = Uᵀ)",
            "  z = W h + b2 (|V|×1), one number at a time:  z_j = Σ_i W_ji h_i + b2_j",
            "  W_ji touches only z_j, and only through h_i: ∂z_k/∂W_ji = h_i if k = j, else 0, so",
            "  dJ/dW_ji = Σ_k (dJ/dz_k)(∂z_k/∂W_ji) = δ_j h_i,   δ = dJ/dz = ŷ − y",
            "  A matrix with (j, i) entry δ_j h_i is the outer product: column δ times row hᵀ.",
            "  h is a column, so it must be transposed to run its index i along the columns: δ hᵀ.",
            "  Shape check: (|V|×1)(1×Dh) = |V|×Dh, the shape of W.",
            "  (Row vectors, as in the seed: z = h U + b2, dJ/dU = hᵀδ = (δ hᵀ)ᵀ, the same numbers.)",
        ]
    else:
        lines = [
            "Where does the h-transpose in dJ/dU = hᵀ(ŷ − y) come from?",
            "  z = h U + b2 (1×|V|), one number at a time:  z_j = Σ_i h_i U_ij + b2_j",
            "  U_ij touches only z_j, and only through h_i: ∂z_k/∂U_ij = h_i if k = j, else 0, so",
            "  dJ/dU_ij = Σ_k (dJ/dz_k)(∂z_k/∂U_ij) = δ_j h_i,   δ = dJ/dz = ŷ − y",
            "  A matrix with (i, j) entry h_i δ_j is the outer product: column hᵀ times row δ.",
            "  h is a row, so it must be transposed to run its index i down the rows: hᵀδ.",
            "  Shape check: (Dh×1)(1×|V|) = Dh×|V|, the shape of U.",
            "  (Column vectors, z = W h with W = Uᵀ, give dJ/dW = δ hᵀ = (hᵀδ)ᵀ: the same numbers.)",
        ]
    name = "W" if convention == "column" else "U"
    lines += [
        "  The seed's hᵀ(y − ŷ) has the opposite sign: y − ŷ is the gradient of log ŷ_y, i.e. −dJ/dz.",
        f"  Witness (|V|={model.dims['V']}, Dh={model.dims['Dh']}, float64): elman.model.step_gradients vs central",
        f"  finite differences, entry {name}[0,0]: {g[0, 0]:+.9f} vs {fd[0, 0]:+.9f};",
        f"  largest difference over all {g.size} entries: {diff:.1e}.   More: elman explain U"
        + (" --convention column" if convention == "column" else ""),
    ]
    return "\n".join(lines)
