"""Nested expressions flattened into equations of one operation each, with
every shape checked on the way.

The argument of a function becomes z1, z2, ... in order (the seed's names:
z1 = h(t-1)H + eI + b1, z2 = hU + b2); any other inner expression t1,
t2, ... An affine equation is a sum of terms, each one of

    a W      a row times a matrix            op "mul"
    a Wᵀ     a row times a transposed param  op "mulT"
    a ⊙ b    two rows of one shape           op "had"
    v        a quantity added                op "plain"
    c        a number added (1 − z)          op "const"

each with a sign and a positive coefficient (0.5 * a).
"""
from __future__ import annotations

from elman.explain.grammar import ModelError
from elman.explain.ir import Equation, Term


def fmt(shape):
    return "×".join(shape)


class Builder:
    def __init__(self, path, dims, decls, taken, later):
        self.path, self.dims, self.decls = path, dims, decls
        self.shapes = {n: d.shape for n, d in decls.items()}
        self.taken, self.equations = set(taken), []
        self.counters = {"z": 0, "t": 0}
        self.later = later               # lhs -> line, for "used before defined"

    def fresh(self, prefix):
        while True:
            self.counters[prefix] += 1
            n = f"{prefix}{self.counters[prefix]}"
            if n not in self.taken:
                self.taken.add(n)
                return n

    def same(self, a, b):
        """Sizes agree: the same dim name, or equal numbers where one is a literal."""
        size = lambda d: int(d) if d.isdigit() else self.dims[d]  # noqa: E731
        return a == b or ((a.isdigit() or b.isdigit()) and size(a) == size(b))

    def same_shape(self, s, t):
        return all(self.same(a, b) for a, b in zip(s, t))

    def named(self, node, where, prefix):
        """A node as a name, emitting an equation for it if it is not one."""
        at = f"{self.path}:{where[0]}"
        if node[0] == "name":
            self.shape_of(node[1], where)
            return node[1]
        if node[0] == "T":
            raise ModelError(f"{at}: `{node[1]}ᵀ` may only stand on the right of a product (h {node[1]}.T)")
        if node[0] == "num":
            raise ModelError(f"{at}: the number {node[1]:g} stands where a vector or matrix is needed")
        n = self.fresh(prefix)
        self.emit(n, node, where)
        return n

    def shape_of(self, n, where):
        if n not in self.shapes:
            at = f"{self.path}:{where[0]}"
            if n in self.later:
                raise ModelError(f"{at}: `{n}` is used before the line that defines it (line {self.later[n]})")
            raise ModelError(f"{at}: `{n}` is used but never declared or defined")
        return self.shapes[n]

    def emit(self, lhs, node, where):
        if node[0] == "call":
            self.call(lhs, node[1], node[2], where)
            return
        at = f"{self.path}:{where[0]}"
        terms, shape = [], None
        for sign, t in (node[1] if node[0] == "sum" else [(1, node)]):
            coef, t = unscale(t)
            if coef < 0:
                sign, coef = -sign, -coef
            term, tshape = self.term(sign, coef, t, where)
            terms.append(term)
            if tshape is None:
                continue
            if shape is not None and not self.same_shape(tshape, shape):
                raise ModelError(f"{at}: the terms of `{lhs}` have different shapes: {fmt(shape)} and {fmt(tshape)}")
            shape = shape or tshape
        if shape is None:
            raise ModelError(f"{at}: `{lhs}` is a constant; a quantity needs at least one vector in it")
        self.add(Equation(lhs, "affine", where[0], where[1], terms=tuple(terms)), shape, at)

    def term(self, sign, coef, t, where):
        """One term of a sum: (Term, its shape or None for a number)."""
        at = f"{self.path}:{where[0]}"
        if t[0] == "num":
            return Term(sign, (), "const", coef * t[1]), None
        if t[0] == "mul":
            return self.product(sign, coef, t, where)
        if t[0] == "had":
            a, b = self.named(t[1], where, "t"), self.named(t[2], where, "t")
            sa, sb = self.shapes[a], self.shapes[b]
            for n, s in ((a, sa), (b, sb)):
                if s[0] != "1" or (n in self.decls and self.decls[n].onehot):
                    raise ModelError(f"{at}: `{a} ⊙ {b}` multiplies rows entry by entry; `{n}` is "
                                     + ("one-hot: look it up with a product instead" if s[0] == "1" else fmt(s)))
            if not self.same_shape(sa, sb):
                raise ModelError(f"{at}: `{a} ⊙ {b}` needs two rows of one shape: {fmt(sa)} and {fmt(sb)}")
            return Term(sign, (a, b), "had", coef), sa
        v = self.named(t, where, "t")
        return Term(sign, (v,), "plain", coef), self.shapes[v]

    def product(self, sign, coef, t, where):
        at = f"{self.path}:{where[0]}"
        a = self.named(t[1], where, "t")
        transposed = t[2][0] == "T"
        if transposed:
            W = t[2][1]
            if self.decls.get(W) is None or self.decls[W].role != "param":
                raise ModelError(f"{at}: only a declared param may be transposed, and `{W}` is not one")
        else:
            W = self.named(t[2], where, "t")
        sa, sw = self.shapes[a], self.shapes[W]
        shown = f"{a} {W}" + ("ᵀ" if transposed else "")
        if sa[0] != "1":
            raise ModelError(f"{at}: in `{shown}` the left factor `{a}` must be a row vector (1×n), not {fmt(sa)}")
        inner, out = (sw[1], sw[0]) if transposed else sw
        if not self.same(sa[1], inner):
            wshape = fmt(sw[::-1]) if transposed else fmt(sw)
            raise ModelError(f"{at}: `{shown}` does not conform: ({fmt(sa)})({wshape})")
        return Term(sign, (a, W), "mulT" if transposed else "mul", coef), ("1", out)

    def call(self, lhs, f, args, where):
        at = f"{self.path}:{where[0]}"
        if f == "cross_entropy":
            self.loss(lhs, args, where)
            return
        if len(args) != 1:
            raise ModelError(f"{at}: {f} takes one argument")
        a = self.named(args[0], where, "z")
        if f == "softmax" and self.shapes[a][0] != "1":
            raise ModelError(f"{at}: {f} of `{a}` needs a row vector, not {fmt(self.shapes[a])}")
        self.add(Equation(lhs, "func", where[0], where[1], func=f, args=(a,)), self.shapes[a], at)

    def loss(self, lhs, args, where):
        at = f"{self.path}:{where[0]}"
        if len(args) != 2:
            raise ModelError(f"{at}: cross_entropy takes (probabilities, one-hot target)")
        p, y = (self.named(a, where, "t") for a in args)
        src = next((e for e in self.equations if e.lhs == p), None)
        if src is None or src.func != "softmax":
            raise ModelError(f"{at}: `{p}` must be defined as softmax(...) to be the first argument of cross_entropy")
        if not (y in self.decls and self.decls[y].onehot and self.decls[y].role == "target"):
            raise ModelError(f"{at}: `{y}` must be a one-hot target (declare: target {y} : onehot(n))")
        if not self.same_shape(self.shapes[p], self.shapes[y]):
            raise ModelError(f"{at}: `{p}` is {fmt(self.shapes[p])} but `{y}` is {fmt(self.shapes[y])}")
        self.add(Equation(lhs, "loss", where[0], where[1], func="cross_entropy", args=(p, y)), ("1", "1"), at)

    def add(self, eq, shape, at):
        if eq.lhs in self.decls:
            raise ModelError(f"{at}: `{eq.lhs}` is declared as {self.decls[eq.lhs].role}; it cannot be assigned")
        if eq.lhs in self.shapes:
            raise ModelError(f"{at}: `{eq.lhs}` is assigned twice")
        for n in eq.uses():
            if self.decls.get(n) and self.decls[n].role == "target" and eq.kind != "loss":
                raise ModelError(f"{at}: target `{n}` may only appear in cross_entropy")
        self.shapes[eq.lhs] = tuple(shape)
        self.equations.append(eq)


def unscale(node):
    """(c, node) with every number factor of a product of terms pulled out:
    0.5 * a * b -> (0.5, a ⊙ b)."""
    if node[0] == "scale":
        c, inner = unscale(node[2])
        return node[1] * c, inner
    if node[0] == "had":
        ca, a = unscale(node[1])
        cb, b = unscale(node[2])
        return ca * cb, ("had", a, b)
    return 1.0, node
