"""``elman check``: what is wrong with my gradient formula?

The candidate is evaluated (safely, ``formula.py``) on a few random
instances of the model, next to the engine's gradient, which the engine has
itself checked against finite differences. The verdict is the first of:

    correct          equal to dJ/dX
    non-conforming   a product (or element-wise operation) whose shapes fail
    sign-flipped     equal to -dJ/dX
    transposed       equal to (±)dJ/dXᵀ: the other convention's layout
    scaled           equal to k·dJ/dX for one constant k
    missing-factor   equal to dJ/dX with one element-wise derivative left out
    wrong            none of these

Names available to a formula: every quantity of the model (x, h_prev, e,
z1, h, z2, yhat, y, L, I, H, U, b1, b2 for the seed) and the adjoint of
each as dJ_d<name> (dJ_dh, dJ_dz1), those of z1, z2 also as delta1 =
dJ/dz1, delta2 = dJ/dz2. In the
row convention every vector is a 1×n row; in the column convention every
vector is an n×1 column and every matrix is the transpose of the row
convention's (z = W a + b, W = Uᵀ), so the gradient is transposed too.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from elman.errors import ElmanError
from elman.explain import expr as E
from elman.explain import formula as F
from elman.explain import notation as nt
from elman.explain.engine import derive
from elman.explain.eqmath import equation_math
from elman.explain.equations import load
from elman.explain.numeric import sizes_for

VERDICTS = ("correct", "sign-flipped", "transposed", "scaled", "missing-factor", "non-conforming", "wrong")
SEEDS = (101, 102, 103)
RTOL = 1e-6


@dataclass
class Verdict:
    verdict: str
    explanation: str
    formula: str
    wrt: str
    convention: str
    expected: str
    detail: dict = field(default_factory=dict)

    def as_dict(self):
        return {"verdict": self.verdict, "wrt": self.wrt, "formula": self.formula,
                "convention": self.convention, "expected": self.expected,
                "explanation": self.explanation, **self.detail}

    def __str__(self):
        return self.verdict + "\n" + textwrap.fill(self.explanation, 78)


def namespace(d, convention):
    """The formula's names on one instance: every quantity of the model,
    and every adjoint as dJ_d<name> (dJ_dh, dJ_dU, dJ_dh_prev), those of
    z1, z2 ... also as delta1, delta2 ..."""
    env = E.column_env(d.env, d.model, wform=True) if convention == "column" else d.env
    out = {}
    for k, v in env.items():
        if k.startswith("d:"):
            n = k[2:]
            if n in d.model.shapes:
                out[f"dJ_d{n}"] = v
                out[E.numpy_name(n, True)] = v
        elif k != d.model.loss:
            out[k] = v
    return out


def _close(a, b):
    scale = np.abs(b).max(initial=0.0)
    return a.shape == b.shape and np.abs(a - b).max(initial=0.0) <= RTOL * max(scale, 1e-12)


def _rel(a, b):
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max(initial=0.0) / max(np.abs(b).max(initial=0.0), 1e-300))


def _constant(ks):
    k = ks[0]
    frac = Fraction(k).limit_denominator(64)
    return str(frac) if abs(float(frac) - k) < 1e-9 * max(1, abs(k)) else f"{k:.6g}"


class _Case:
    """One formula against one target on several instances."""

    def __init__(self, model, wrt, convention):
        self.model, self.wrt, self.convention = model, wrt, convention
        dims = sizes_for(model, distinct=True)
        self.ds = [derive(model, seed=s, dims=dims) for s in SEEDS]
        self.names = {v: (nt.dim(k).text) for k, v in dims.items()}
        d0 = self.ds[0]
        if wrt not in d0.steps:
            raise ElmanError(f"--wrt {wrt}: not a quantity of {model.path} with a gradient "
                             f"(choose from: {', '.join(d0.steps)})")
        self.flipped = convention == "column"     # every quantity is transposed there, the target too
        self.row_expr = d0.expanded(wrt)
        self.short_expr = d0.steps[wrt].expr

    def form(self, e):
        return E.to_column(e, self.model, self.flipped, wform=True) if self.convention == "column" else e

    def env(self, d):
        return E.column_env(d.env, self.model, wform=True) if self.convention == "column" else d.env

    def truth(self, d):
        return E.evaluate(self.form(self.row_expr), self.env(d))

    def shape(self, s):
        return "×".join(self.names.get(n, str(n)) for n in s) if len(s) else "a scalar"


def _sign_hint(case):
    """Where a minus sign comes from on the way to the target."""
    d0 = case.ds[0]
    flips = [e for n in d0.chain(case.wrt) for e in [case.model.definition(n)]
             if e is not None and any(t.op == "const" for t in e.terms)]
    if flips:
        eq = flips[0]
        return (f"The chain passes through {equation_math(case.model, eq).text} (line {eq.line}): the number has "
                "no derivative and only the minus sign survives, so a difference written the other way round "
                "(a − b for b − a) flips the sign. ")
    return "Check the sign of each factor; at the output dJ/dz = ŷ − y. "


def check(source: str, wrt: str, model=None, convention: str = "row") -> Verdict:
    model = model if model is not None and not isinstance(model, str) else load(model)
    if convention not in ("row", "column"):
        raise ElmanError(f"--convention must be row or column, not {convention!r}")
    case = _Case(model, wrt, convention)
    expected = E.to_numpy(case.form(case.row_expr))
    short = E.to_numpy(case.form(case.short_expr))
    target = f"dJ/d{wrt}"
    see = f"See `elman explain {wrt}" + (f" --model-file {model.path}" if model.name != "seed" else "") + "`."
    right = f"{target} = {short}" + (f" = {expected}" if short != expected else "")

    def verdict(v, text, **detail):
        return Verdict(v, f"{text} {see}", source, wrt, convention, expected, detail)

    cands, truths = [], []
    for d in case.ds:
        try:
            c = np.asarray(F.evaluate(source, namespace(d, convention)), dtype=np.float64)
        except F.NonConforming as nc:
            sa, sb = (case.shape(s) for s in nc.shapes)
            what = (f"The product `{nc.product}` does not conform: ({sa})({sb}); a matrix product needs the "
                    "left factor's columns to match the right factor's rows") if nc.kind == "product" else (
                    f"The element-wise `{nc.product}` combines {sa} with {sb}; element-wise operations need "
                    "equal shapes")
            hint = (" In the row convention vectors are 1×n rows, so a row comes first in a product with a "
                    "matrix: δ Wᵀ, not Wᵀ δ." if convention == "row" else
                    " In the column convention vectors are n×1 columns, so a matrix comes first: W δ, not δ W.")
            return verdict("non-conforming", f"{what}.{hint} {right}.", product=nc.product, shapes=[sa, sb])
        t = case.truth(d)
        if c.ndim < 2 and c.size == t.size and c.size > 1:
            c = c.reshape(t.shape)
        cands.append(c)
        truths.append(t)

    n = len(case.ds)
    ok = lambda f: all(_close(c, f(t)) for c, t in zip(cands, truths))  # noqa: E731
    worst = max(_rel(c, t) for c, t in zip(cands, truths))
    prefix = f"On {n} random instances ({', '.join(f'{k}={v}' for v, k in case.names.items())})"
    if ok(lambda t: t):
        return verdict("correct", f"{prefix} `{source}` equals {target} (largest relative difference "
                                  f"{worst:.1e}). {right}.", max_rel_difference=worst)
    if ok(lambda t: -t):
        cause = ("The usual cause, and the seed's: y − ŷ where ŷ − y belongs. y − ŷ is the gradient of the "
                 "log-likelihood log ŷ_y, i.e. −dJ/dz, so a descent step along it would raise the loss. "
                 if "y-yhat" in source.replace(" ", "") else _sign_hint(case))
        return verdict("sign-flipped", f"{prefix} `{source}` equals −{target}: right structure, opposite sign. "
                       f"{cause}{right}.")
    for s, word in ((1, ""), (-1, " and sign-flipped")):
        if ok(lambda t: s * t.T) and truths[0].ndim == 2:
            layout = (f"its (i, j) entry is the (j, i) entry of {target}" if cands[0].shape == truths[0].shape
                      else f"{case.shape(cands[0].shape)} where {wrt} is {case.shape(truths[0].shape)}")
            return verdict("transposed", f"{prefix} `{source}` holds the entries of {target}{word} but transposed: "
                           f"{layout}. A gradient has "
                           f"the shape of what it differentiates; this is the other convention's layout "
                           + (f"(column vectors: z = W a with W = {wrt}ᵀ)" if convention == "row" else
                              "(row vectors, as in the seed)") + f". {right}.", also_sign_flipped=s < 0)
    if all(c.shape == t.shape for c, t in zip(cands, truths)):
        ks = [float((c * t).sum() / max((t * t).sum(), 1e-300)) for c, t in zip(cands, truths)]
        if abs(ks[0]) > 1e-12 and ok(lambda t: ks[0] * t):
            k = _constant(ks)
            return verdict("scaled", f"{prefix} `{source}` is {k} × {target} on every instance: the structure is "
                           f"right, a constant factor is not. {right}.", scale=ks[0], scale_text=k)
        for factor in E.derivs(case.row_expr):
            ablated = E.without(case.row_expr, factor)
            for s, word in ((1, ""), (-1, ", and its sign is flipped")):
                if all(_close(c, s * E.evaluate(case.form(ablated), case.env(d))) for c, d in zip(cands, case.ds)):
                    fp = f"{factor.f}′({factor.arg.name})"
                    body = E.to_numpy(factor.body)
                    return verdict("missing-factor",
                                   f"{prefix} `{source}` equals {target} without the factor {fp} = {body}{word}. "
                                   f"The chain rule through the element-wise {factor.f} multiplies, entry by entry, "
                                   f"by its derivative. {right}.", factor=fp, factor_numpy=body)
    shape_note = (f"It has the right shape, {case.shape(truths[0].shape)}, but its largest relative difference "
                  f"from {target} is {worst:.3g}" if cands[0].shape == truths[0].shape else
                  f"It is {case.shape(cands[0].shape)}, but {target} has the shape of {wrt}, "
                  f"{case.shape(truths[0].shape)}")
    return verdict("wrong", f"{prefix} `{source}` is not {target}, nor its negative, transpose, a constant "
                   f"multiple, or it with one derivative factor left out. {shape_note}. {right}.",
                   max_rel_difference=worst if np.isfinite(worst) else None)
