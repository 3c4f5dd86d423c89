"""What a model file becomes: declarations, and equations of one operation
each (``flatten.py`` makes them, ``equations.py`` checks the whole)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Decl:
    name: str
    role: str            # input | target | param
    shape: tuple         # (rows, cols) as dim names or digit strings
    onehot: bool
    line: int


@dataclass(frozen=True)
class Term:
    """sign · coef · (a W | a Wᵀ | a ⊙ b | v | the number coef), by ``op``."""
    sign: int
    factors: tuple
    op: str = "plain"    # mul | mulT | had | plain | const
    coef: float = 1.0


@dataclass(frozen=True)
class Equation:
    lhs: str
    kind: str            # affine | func | loss
    line: int
    source: str
    terms: tuple = ()
    func: str = ""
    args: tuple = ()

    def uses(self):
        if self.kind == "affine":
            return [f for t in self.terms for f in t.factors]
        return list(self.args)


@dataclass
class Model:
    name: str
    path: str
    dims: dict
    decls: dict
    equations: list
    shapes: dict                     # every name -> (rows, cols)
    recur: dict = field(default_factory=dict)    # input name -> state it reads, e.g. h_prev -> h
    loss: str = "J"
    lookups: dict = field(default_factory=dict)  # row name -> (matrix, one-hot input): L_x -> (L, x)

    @property
    def params(self):
        return [n for n, d in self.decls.items() if d.role == "param"]

    @property
    def states(self):
        """The recurrent states in the order their equations run (h, c)."""
        used = set(self.recur.values())
        return [e.lhs for e in self.equations if e.lhs in used]

    def carried(self, state):
        """The inputs that read ``state`` one step back (h -> [h_prev])."""
        return [i for i, s in self.recur.items() if s == state]

    def is_onehot(self, n) -> bool:
        return n in self.decls and self.decls[n].onehot

    def definition(self, n):
        return next((eq for eq in self.equations if eq.lhs == n), None)

    def prev_of(self, n):
        """The state a recurrent input stands for one step back (h_prev -> h)."""
        return self.recur.get(n)

    def row_shape(self, n):
        """The shape of a quantity, or of a looked-up row (L_x: 1×d)."""
        if n in self.shapes:
            return self.shapes[n]
        return ("1", self.shapes[self.lookups[n][0]][1])

    def line_of(self, n):
        """The line that defines or declares ``n`` (a row: its lookup's line)."""
        if n in self.lookups:
            W, x = self.lookups[n]
            return next(e.line for e in self.equations for t in e.terms if t.op == "mul" and t.factors == (x, W))
        eq = self.definition(n)
        return eq.line if eq else self.decls[n].line
