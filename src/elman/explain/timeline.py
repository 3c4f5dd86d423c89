"""``elman explain bptt``: the gradients of a whole sequence's loss.

One step's formulas stay as they are; what changes is what the adjoint of
each state means. h(t) is used by its own step and by the next one (as
h(t-1) there), so the fan-out rule adds dJ/dh(t) = δ2(t) Uᵀ + δ1(t+1) Hᵀ,
and every parameter's gradient is the sum over t of the one-step formula.
A model with several states (an LSTM's h and c, a stacked network's
layers) has one such recurrence per state. The witness compares the sums
and every state's adjoint at every step with finite differences of
Σ_t J(t), and shows what the seed's "at (t)" terms alone (no carried term)
would give, and, for several states, what one state's own path alone
(the LSTM's "dc(t)/dc(t−1) = f(t)") leaves out.
"""
from __future__ import annotations

from elman.explain import expr as E
from elman.explain import notation as nt
from elman.explain import numeric, seed_notes
from elman.explain.document import Display, Figure, Heading, Para, Table, figure_data, mdict
from elman.explain.eqmath import equation_math
from elman.explain.pictures import unrolled_picture
from elman.explain.contrib import J, Ctx
from elman.explain.through_time import through_time


def _r(model, e, shift=0):
    return E.render(e, model, timed=True, shift=shift)


def recurrence(d, s) -> nt.M:
    """dJ/ds(t) = (one-step formula) + (each carried input's adjoint at t+1)."""
    model = d.model
    carried = [E.render(d.steps[i].expr, model, timed=True, shift=1) for i in model.carried(s)]
    return nt.seq(nt.frac(J, _r(model, E.Sym(s))), " = ", nt.join([_r(model, d.steps[s].expr)] + carried, " + "))


def _used_twice(d, s):
    model = d.model
    users = [eq for eq in model.equations if s in eq.uses()]
    carried = nt.join([_r(model, E.Sym(i)) for i in model.carried(s)], " and ")
    n = len(users) + len(model.carried(s))
    return Para([_r(model, E.Sym(s)), f" is used {'twice' if n == 2 else f'{n} times'}: by ",
                 nt.join([_r(model, E.Sym(eq.lhs)) for eq in users], " and "), " at step t, and by step t+1, "
                 "where it is that step's ", carried, "."])


def _downstream(model, s):
    """The other states that s reaches within one step (c -> h; h1 -> h2)."""
    seen, frontier = set(), {s}
    while frontier:
        frontier = {eq.lhs for eq in model.equations if frontier & set(eq.uses())} - seen
        seen |= frontier
    return [x for x in model.states if x in seen and x != s]


def _own_path(d, tt, s):
    """What one state's carried term alone leaves out (the LSTM's "just f")."""
    model, err = d.model, tt.own_path_only[s]
    st = _r(model, E.Sym(s))
    if err < numeric.TOL:
        return Para(["Leaving out the other states' carried terms does not change dJ/d", s, "(t) (it still agrees "
                     f"with finite differences, {err:.1e}): nothing that comes back from step t+1 into ", st,
                     " passes through them."])
    carried = [d.steps[i].expr for i in model.carried(s)]
    parts = ["The carried term ", nt.join([E.render(e, model, timed=True, shift=1) for e in carried], " + "),
             " is the path from ", st, " straight into step t+1"]
    e = carried[0]
    if len(carried) == 1 and isinstance(e, E.Had) and e.a == E.Sym(s, adj=True) and isinstance(e.b, E.Sym):
        g = _r(model, e.b, shift=1)
        parts += [": ∂", s, "(t+1)/∂", s, "(t), with everything else step t+1 reads held fixed, is diag(", g,
                  "), the \"d", s, "(t+1)/d", s, "(t) = ", g, "\" of many derivations"]
    later = _downstream(model, s)
    why = ([st, " also reaches ", nt.join([_r(model, E.Sym(x)) for x in later], " and "), " within step t, "
            "which step t+1 reads too, and that path comes back through the first term of the recurrence"]
           if later else ["what comes back from step t+1 also passes through the other states' carried terms"])
    return Para(parts + [". It is a partial derivative, not the whole dependence: "] + why +
                [". Keeping only ", st, "'s own carried term and dropping the other states', dJ/d", s,
                 f"(t) is off from finite differences by a relative {err:.2g}."])


def bptt_section(d, T=4, seed_model=False):
    model, c = d.model, Ctx(d.model)
    tt = through_time(d, T=T)
    states = tt.states
    main = states[-1]               # the hidden state that the output reads, for an LSTM h
    h0 = nt.join([nt.M(c.q(s).text + "(0)", "{" + c.q(s).tex + "^{(0)}}") for s in states], ", ")
    blocks = [Heading(2, ["Through time: the gradient of a whole sequence (BPTT)"]),
              Para(["Over a window of steps t = 1 … T the same equations run at every step, with ",
                    nt.join([_r(model, E.Sym(i)) for s in states for i in model.carried(s)], ", "),
                    " the previous step's ", nt.join([c.q(s) for s in states], ", "), " (", h0,
                    ", before the first step, is given: truncation), and the loss is the sum ",
                    nt.seq(J, " = Σ_t ", J, "(t)"), ":"]),
              Display([equation_math(model, eq, timed=True) for eq in model.equations])]
    blocks += [_used_twice(d, s) for s in states]
    blocks += [Para(["The multivariate chain rule adds the paths, which gives the recurrence", "s" if len(states) > 1
                     else "", " (run from t = T down to 1, with nothing coming back from after the window at t = T):"]),
               Display([recurrence(d, s) for s in states] +
                       [nt.seq(E.sym_math(E.Sym(n, adj=True), model, timed=True), " = ", _r(model, d.steps[n].expr))
                        for n in _after(d, states)]),
               Para(["Every one-step formula holds at each t with these totals, and a parameter's gradient is "
                     "the sum of its one-step formula over the window:"]),
               Display([nt.seq(nt.frac(J, c.q(p)), " = Σ_t ", _r(model, d.steps[p].expr)) for p in tt.params])]
    if len(states) > 1:
        blocks += [_own_path(d, tt, s) for s in states]
    if seed_model:
        blocks.append(Para(seed_notes.AT_T_SUM))
    into = " and ".join(f"{nt.name(s).text}(t)" for s in states)
    fig = Figure("unrolled", unrolled_picture(d), "The computation graph over three steps (parameters, shared by "
                 "every step, left out). Grey arrows run forward; the dashed coloured paths are the terms of the "
                 f"recurrence{'s' if len(states) > 1 else ''} above, the gradient flowing back into {into}, each "
                 "numbered and listed with its formula.")
    blocks.append(fig)
    wb, data = _witness(d, tt, seed_model)
    data["figures"] = [figure_data(fig)]
    data["recurrence"] = mdict(recurrence(d, main))
    data["recurrences"] = {s: mdict(recurrence(d, s)) for s in states}
    return blocks + wb, data


def _witness(d, tt, seed_model):
    model, T = d.model, tt.T
    carried = nt.join([E.render(d.steps[i].expr, model, timed=True, shift=1) for s in tt.states
                       for i in model.carried(s)], ", ")
    blocks = [Para([f"A numerical witness on a random window of T = {T} steps (float64): each sum against central "
                    "finite differences of Σ_t J(t), and the same sums with the carried term", "s " if
                    len(tt.states) > 1 else " ", carried, " left out (only the \"at (t)\" contributions):"])]
    rows = []
    ref = numeric.seed_bptt(numeric.sequence(model, T, d.seed, d.dims)) if seed_model else None
    without = {p: numeric.agree(tt.local_only[p], tt.fd[p]) for p in tt.values}
    for p in tt.values:
        row = [p, f"{tt.errors[p]:.1e}", f"{without[p]:.2g}"]
        if ref is not None:
            row.append(f"{numeric.agree(ref[p].reshape(tt.fd[p].shape), tt.fd[p]):.1e}")
        rows.append(row)
    header = ["parameter", "Σ_t formula vs FD", "without the carried term"]
    blocks.append(Table(header + (["elman.model.bptt vs FD"] if ref is not None else []), rows))
    blocks.append(Para(["(Maximum relative errors. The carried term matters for every weight that acts "
                        "before a state; the output weights do not see it.) Each state's adjoint, at every step "
                        "t = 1 … T, against finite differences of Σ_t J(t) in that state at that step alone:"]))
    blocks.append(Table(["state", "recurrence vs FD, all t"],
                        [[f"dJ/d{s}(t)", f"{tt.state_errors[s]:.1e}"] for s in tt.states]))
    data = {"target": "bptt", "T": T,
            "sums": {p: mdict(_r(model, d.steps[p].expr)) for p in tt.params},
            "max_rel_error": tt.errors, "states_max_rel_error": tt.state_errors,
            "own_path_only": tt.own_path_only, "without_carried_term": without}
    if ref is not None:
        data["elman_bptt_vs_fd"] = {p: numeric.agree(ref[p].reshape(tt.fd[p].shape), tt.fd[p]) for p in tt.values}
    return blocks, data


def _after(d, states):
    """The adjoints derived after the first state's (δ1 for the seed), up to the parameters."""
    names = list(d.steps)
    start = min(names.index(s) for s in states)
    return [n for n in names[start + 1:] if n in d.model.shapes and n not in d.model.decls and n not in states]
