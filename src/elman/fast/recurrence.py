"""The recurrence's position-parallel products at speed: the same functions
as ``core.layers``' ``rnn_input_forward`` and ``rnn_params_backward``, with
the work shared between the cores (tests check them against the reference).
"""
from __future__ import annotations

import numpy as np

from elman.fast.threads import compiled_for, parallel_for, row_blocks


def threaded_input_forward(e, I, b1):
    """a = e I + b1 for every position at once: (N,d)(d,Dh) + (Dh,) = (N,Dh).

    The part of the pre-activation that does not depend on h(t-1), so a
    whole sequence's worth is one matrix product (shared between the
    cores by rows when it is big).
    """
    a = np.empty((e.shape[0], I.shape[1]), dtype=np.result_type(e, I))
    rows = row_blocks(e.shape[0]) if a.size >= 1 << 16 else [slice(0, len(a))]

    def chunk(i):
        np.matmul(e[rows[i]], I, out=a[rows[i]])
        a[rows[i]] += b1

    parallel_for(chunk, len(rows))
    return a


def threaded_params_backward(dz, h_prev, e, H, I):
    """``core.layers.rnn_params_backward`` (dJ/dH, dJ/dI, dJ/db1, dJ/de from
    the stacked dJ/dz), its three independent products shared by the cores."""
    products = [(h_prev.T, dz), (e.T, dz), (dz, I.T)]
    out = [None] * 3

    def product(i):
        out[i] = products[i][0] @ products[i][1]

    # BLAS lets go of the GIL: where the windows step on one thread, their spare takes one
    compiled_for(product, 3, serial=dz.size < 1 << 16)
    return out[0], out[1], dz.sum(axis=0), out[2]
