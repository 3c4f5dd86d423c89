"""Gradients that are zero outside a few rows or columns of a parameter.

A window of B·T positions touches at most B·T rows of the embedding L (the
rows of the words it reads), and under sampled softmax at most B·T + S
columns of U and b2. The dense dJ/dL is (V,d) of mostly zeros; at V = 100k
writing those zeros and then adding them to L costs more than the whole
sampled output layer. ``SparseGrad`` keeps only the rows (``axis`` 0) or
columns (``axis`` -1) that are not zero, and the optimizers update only
those (``elman.training.rules``): for SGD and Adagrad that is the same arithmetic on
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
        return sq_sum(self.values)

    def take(self, arr):
        return arr[self.index] if self.axis == 0 else arr[..., self.index]

    def put(self, arr, values) -> None:
        if self.axis == 0:
            arr[self.index] = values
        else:
            arr[..., self.index] = values

    def part(self, arr, sl):
        """arr's rows (axis 0) or columns (axis -1) in the slice ``sl``: a view."""
        return arr[sl] if self.axis == 0 else arr[..., sl]

    def runs(self, min_length: int = 64):
        """The index as runs of consecutive ids, [(slice of the parameter,
        slice of ``values``), ...], when a run is ``min_length`` ids long on
        average; else None. A class softmax's columns are whole classes,
        contiguous ranges of ids: an update can then work on views of each
        run in place, where ``take``/``put`` would copy every column out and
        back through an index (3 passes of fancy indexing, 12 ms a step at
        V = 10k); sampled ids are scattered and take the indexed path."""
        idx = self.index
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        if (len(breaks) + 1) * min_length > len(idx):
            return None
        starts, stops = np.r_[0, breaks], np.r_[breaks, len(idx)]
        return [(slice(int(idx[i]), int(idx[i]) + int(j - i)), slice(int(i), int(j))) for i, j in zip(starts, stops)]

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


def sq_sum(a) -> float:
    """Σ a² of an array in any layout, without copying it: a BLAS dot of a
    contiguous one; for a view with a unit-stride axis (U's gradient,
    (Dh,V) over memory that is word by word) an einsum along that axis,
    where ``ravel`` would first copy it, transposed."""
    a = np.asarray(a)
    for v in (a, a.T):
        if v.flags.c_contiguous:
            v = v.reshape(-1)
            return float(np.dot(v, v))
    b = a.T if a.ndim == 2 and a.strides[0] < a.strides[1] else a
    return float(np.einsum("ij,ij->", b, b)) if b.ndim == 2 else float(np.dot(b, b))


def densify(grads: dict) -> dict:
    """The same gradients, every one a dense array (a ``SparseGrad``, or any
    form that builds its array with ``dense()``, built)."""
    return {k: g.dense() if hasattr(g, "dense") else g for k, g in grads.items()}
