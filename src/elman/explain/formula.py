"""A user's NumPy-like formula, evaluated safely.

The text is parsed with ``ast`` and walked by hand: only names from the
model, numbers, ``+ - * / ** @``, unary minus, ``.T`` and calls to a short
list of functions (also as ``np.<name>``) are allowed; nothing is ever
passed to ``eval``. A matrix product whose shapes do not conform raises
``NonConforming`` naming the product as the user wrote it; so does an
element-wise operation on shapes NumPy cannot broadcast.
"""
from __future__ import annotations

import ast

import numpy as np

from elman.errors import ElmanError
from elman.core.layers import log_softmax_rows, sigmoid

MAX_LENGTH = 2000


def _sigmoid_prime(z):
    s = sigmoid(np.asarray(z, dtype=np.float64))
    return s * (1.0 - s)


def _tanh_prime(z):
    return 1.0 - np.tanh(np.asarray(z, dtype=np.float64)) ** 2


FUNCTIONS = {
    "sigmoid": sigmoid, "sigmoid_prime": _sigmoid_prime, "tanh": np.tanh, "tanh_prime": _tanh_prime,
    "relu": lambda z: np.maximum(z, 0.0), "exp": np.exp, "log": np.log,
    "softmax": lambda z: np.exp(log_softmax_rows(np.atleast_2d(z))),
    "outer": np.outer, "transpose": np.transpose, "ones_like": np.ones_like,
    "zeros_like": np.zeros_like, "sum": np.sum, "maximum": np.maximum,
    "multiply": None, "dot": None, "matmul": None,        # shape-checked below
}


class FormulaError(ElmanError):
    """The formula cannot be read: syntax, an unknown name, a forbidden construct."""


class NonConforming(Exception):
    def __init__(self, product: str, shapes: tuple, kind: str):
        super().__init__(product)
        self.product, self.shapes, self.kind = product, shapes, kind


def evaluate(source: str, env: dict):
    """The value of ``source`` with the names in ``env``."""
    if len(source) > MAX_LENGTH:
        raise FormulaError(f"the formula is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"cannot parse the formula: {exc.msg} (column {exc.offset})") from None
    with np.errstate(all="ignore"):
        return _Eval(source.strip(), env).visit(tree.body)


class _Eval:
    def __init__(self, source, env):
        self.source, self.env = source, env

    def text(self, node):
        return ast.get_source_segment(self.source, node) or ast.unparse(node)

    def refuse(self, node, what=None):
        raise FormulaError(f"`{self.text(node)}`: {what or 'not allowed in a formula'} (use the model's "
                           "names, numbers, + - * / ** @, .T and "
                           f"{', '.join(k for k in FUNCTIONS)})")

    def visit(self, node):
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            self.refuse(node)
        return method(node)

    def visit_Name(self, node):
        if node.id not in self.env:
            known = ", ".join(sorted(self.env))
            raise FormulaError(f"unknown name `{node.id}` (this model has: {known})")
        return self.env[node.id]

    def visit_Constant(self, node):
        if type(node.value) not in (int, float):
            self.refuse(node, "only numbers may be constants")
        return float(node.value)

    def visit_UnaryOp(self, node):
        v = self.visit(node.operand)
        if isinstance(node.op, ast.USub):
            return -v
        if isinstance(node.op, ast.UAdd):
            return v
        self.refuse(node)

    def visit_Attribute(self, node):
        if node.attr != "T":
            self.refuse(node, "the only attribute allowed is .T")
        return np.transpose(self.visit(node.value))

    def visit_BinOp(self, node):
        a, b = self.visit(node.left), self.visit(node.right)
        if isinstance(node.op, ast.MatMult):
            return self.matmul(node, a, b)
        if isinstance(node.op, ast.Pow):
            if not isinstance(node.right, ast.Constant) or abs(b) > 16:
                self.refuse(node, "a power needs a small constant exponent")
            return a ** b
        ops = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}
        if type(node.op) not in ops:
            self.refuse(node)
        self.elementwise(node, a, b)
        return ops[type(node.op)](a, b)

    def elementwise(self, node, a, b):
        sa, sb = np.shape(a), np.shape(b)
        try:
            np.broadcast_shapes(sa, sb)
        except ValueError:
            raise NonConforming(self.text(node), (sa, sb), "element-wise") from None

    def matmul(self, node, a, b):
        sa, sb = np.shape(a), np.shape(b)
        if len(sa) == 0 or len(sb) == 0 or sa[-1] != sb[0 if len(sb) == 1 else -2]:
            raise NonConforming(self.text(node), (sa, sb), "product")
        return a @ b

    def visit_Call(self, node):
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in ("np", "numpy"):
            fname = f.attr
        elif isinstance(f, ast.Name):
            fname = f.id
        else:
            self.refuse(node)
        if fname not in FUNCTIONS or node.keywords:
            self.refuse(node, f"`{fname}` is not an allowed function" if fname not in FUNCTIONS
                        else "keyword arguments are not allowed")
        args = [self.visit(a) for a in node.args]
        if fname in ("dot", "matmul"):
            return self.matmul(node, *args) if len(args) == 2 else self.refuse(node, "takes two arguments")
        if fname == "multiply":
            if len(args) != 2:
                self.refuse(node, "takes two arguments")
            self.elementwise(node, *args)
            return args[0] * args[1]
        try:
            return FUNCTIONS[fname](*args)
        except (TypeError, ValueError) as exc:
            raise FormulaError(f"`{self.text(node)}`: {exc}") from None
