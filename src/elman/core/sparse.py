"""Gradients that are zero outside a few rows or columns of a parameter.

A window of B·T positions touches at most B·T rows of the embedding L (the
rows of the words it reads), and under sampled softmax at most B·T + S
columns of U and b2. The dense dJ/dL is (V,d) of mostly zeros; at V = 100k
writing those zeros and then adding them to L costs more than the whole
sampled output layer. ``SparseGrad`` keeps only the rows (``axis`` 0) or
columns (``axis`` -1) that are not zero, and the optimizers update only
those (``elman.training.optim``): for SGD and Adagrad that is the same arithmetic on
the same entries as the dense update, since a zero gradient leaves both an
entry and its Adagrad sum unchanged.
"""
from __future__ import annotations

import numpy as np


class SparseGrad:
    """dJ/dP = ``values`` at ``index`` along ``axis``, zero elsewhere.

    index (C,) sorted unique ids; values: P's shape with C in place of
    P.shape[axis]; axis 0 (rows, for L) or -1 (columns, for U and b2).
    Supports what the trainer does with a gradient: ``g *= c`` (the mean
    over positions, clipping), ``dense()``, and ``take``/``put`` of the same
    entries of a parameter-shaped array (the parameter, optimizer state).
    """

    def __init__(self, index, values, shape, axis: int):
        self.index, self.values, self.shape, self.axis = np.asarray(index), values, tuple(shape), axis

    @property
    def dtype(self):
        return self.values.dtype

    def __imul__(self, c):
        self.values *= c
        return self

    def sq_sum(self) -> float:
        """Σ g², the part this gradient adds to the global norm."""
        v = self.values.ravel()
        return float(np.dot(v, v))

    def take(self, arr):
        return arr[self.index] if self.axis == 0 else arr[..., self.index]

    def put(self, arr, values) -> None:
        if self.axis == 0:
            arr[self.index] = values
        else:
            arr[..., self.index] = values

    def dense(self):
        out = np.zeros(self.shape, dtype=self.values.dtype)
        self.put(out, self.values)
        return out

    @property
    def width(self) -> int:
        """Entries per id: a row of L, a column of U (Dh), 1 for b2."""
        return int(np.prod(self.shape)) // self.shape[self.axis]

    def shape_of(self, count: int) -> tuple:
        """The shape of ``values`` for ``count`` ids."""
        return tuple(count if i == len(self.shape) + self.axis or i == self.axis else n
                     for i, n in enumerate(self.shape))

    def __repr__(self):
        return f"SparseGrad({len(self.index)} of {self.shape} along axis {self.axis})"


def sum_sparse(parts: list, like: SparseGrad) -> SparseGrad:
    """The sum of several processes' ``(ids, values)`` of one gradient (each
    laid out as ``like.values``, sorted unique ids): the union of the ids,
    each part added in turn in the order of ``parts`` (so every process that
    sums the same parts gets the same bits). Adding into the columns of U in
    place is ten times faster than sorting rows and reducing them."""
    ids = np.unique(np.concatenate([i for i, _ in parts])) if len(parts) > 1 else np.asarray(parts[0][0])
    out = np.zeros(like.shape_of(len(ids)), like.values.dtype)
    for index, values in parts:
        at = np.searchsorted(ids, index)
        if like.axis == 0:
            out[at] += values
        else:
            out[..., at] += values
    return SparseGrad(ids, out, like.shape, like.axis)


def densify(grads: dict) -> dict:
    """The same gradients, every one a dense array."""
    return {k: g.dense() if isinstance(g, SparseGrad) else g for k, g in grads.items()}
