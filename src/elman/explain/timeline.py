"""``elman explain bptt``: the gradients of a whole sequence's loss.

One step's formulas stay as they are; what changes is what the adjoint of
the state means. h(t) is used twice, by its own output z2(t) and by the
next step's z1(t+1) (as h(t-1) there), so the fan-out rule adds
dJ/dh(t) = δ2(t) Uᵀ + δ1(t+1) Hᵀ, and every parameter's gradient is the sum
over t of the one-step formula. The witness compares these sums with finite
differences of Σ_t J(t), and shows what the seed's "at (t)" terms alone
(no δ1(t+1) Hᵀ) would give.
"""
from __future__ import annotations

from elman.explain import expr as E
from elman.explain import notation as nt
from elman.explain import numeric, seed_notes
from elman.explain.document import Display, Heading, Para, Table, equation_math, mdict
from elman.explain.engine import through_time
from elman.explain.rules import J, Ctx


def bptt_section(d, T=4, seed_model=False):
    model, c = d.model, Ctx(d.model)
    tt = through_time(d, T=T)
    state, carried = tt.state, tt.carried
    r = lambda e, shift=0: E.render(e, model, timed=True, shift=shift)  # noqa: E731
    h_t = r(E.Sym(state))
    dh = nt.frac(J, h_t)
    total = nt.seq(dh, " = ", r(d.steps[state].expr), " + ",
                   E.render(d.steps[carried].expr, model, timed=True, shift=1))
    users = [eq for eq in model.equations if state in eq.uses()]
    h0 = nt.M(c.q(state).text + "(0)", "{" + c.q(state).tex + "^{(0)}}")
    blocks = [Heading(2, ["Through time: the gradient of a whole sequence (BPTT)"]),
              Para([f"Over a window of steps t = 1 … T the same equations run at every step, with ",
                    r(E.Sym(carried)), " the previous step's ", c.q(state), " (", h0, ", before the first step, "
                    "is given: truncation), and the loss is the sum ", nt.seq(J, " = Σ_t ", J, "(t)"), ":"]),
              Display([equation_math(model, eq, timed=True) for eq in model.equations]),
              Para([h_t, " is used twice: by ", nt.join([r(E.Sym(eq.lhs)) for eq in users], " and "),
                    " at step t, and by step t+1, where it is that step's ", r(E.Sym(carried)),
                    ". The multivariate chain rule "
                    "adds the two paths, which gives the recurrence (run from t = T down to 1, with nothing "
                    "coming back from after the window at t = T):"]),
              Display([total] + [nt.seq(E.sym_math(E.Sym(n, adj=True), model, timed=True), " = ",
                                        r(d.steps[n].expr)) for n in _after(d, state)]),
              Para(["Every one-step formula holds at each t with these totals, and a parameter's gradient is "
                    "the sum of its one-step formula over the window:"]),
              Display([nt.seq(nt.frac(J, c.q(p)), " = Σ_t ", r(d.steps[p].expr)) for p in tt.params
                       if p in model.params])]
    if seed_model:
        blocks.append(Para(seed_notes.AT_T_SUM))
    blocks.append(Para([f"A numerical witness on a random window of T = {T} steps (float64): each sum against central "
                        "finite differences of Σ_t J(t), and the same sums with the term ",
                        E.render(d.steps[carried].expr, model, timed=True, shift=1),
                        " left out (only the \"at (t)\" contributions):"]))
    rows = []
    ref = numeric.seed_bptt(numeric.sequence(model, T, 0, dict(model.dims))) if seed_model else None
    for p in tt.values:
        row = [p, f"{tt.errors[p]:.1e}", f"{numeric.agree(tt.local_only[p], tt.fd[p]):.2g}"]
        if ref is not None:
            row.append(f"{numeric.agree(ref[p].reshape(tt.fd[p].shape), tt.fd[p]):.1e}")
        rows.append(row)
    header = ["parameter", "Σ_t formula vs FD", "without the carried term"]
    blocks.append(Table(header + (["elman.core.model.bptt vs FD"] if ref is not None else []), rows))
    blocks.append(Para(["(Maximum relative errors. The carried term matters for every weight that acts "
                        "before the state; the output weights do not see it.)"]))
    data = {"target": "bptt", "T": T, "recurrence": mdict(total),
            "sums": {p: mdict(r(d.steps[p].expr)) for p in tt.params if p in model.params},
            "max_rel_error": tt.errors,
            "without_carried_term": {p: numeric.agree(tt.local_only[p], tt.fd[p]) for p in tt.values}}
    if ref is not None:
        data["elman_bptt_vs_fd"] = {p: numeric.agree(ref[p].reshape(tt.fd[p].shape), tt.fd[p]) for p in tt.values}
    return blocks, data


def _after(d, state):
    """The adjoints derived after the state's (δ1 for the seed), up to the parameters."""
    names = list(d.steps)
    return [n for n in names[names.index(state) + 1:] if n in d.model.shapes and n not in d.model.decls]
