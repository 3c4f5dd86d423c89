"""Products called on NumPy's own BLAS from compiled loops: many small
products for the price of one call.

A class softmax's word factor is a product per class present in a window
(``fast.grouped``): 50-100 products of 1-6 rows by 40-200 columns, three
times a window (logits, row sums, dJ/dh). ``np.matmul`` spends 4-5 µs of
dispatch on each, more than the arithmetic of most. Here one compiled call
makes all of a run of groups' products: each is the very BLAS call NumPy
would make (``cblas_?gemm``, or ``cblas_?gemv`` where NumPy takes one row
or a vector as such), on the library NumPy itself loaded, so the results
are NumPy's, bit for bit, and the loop holds no GIL.

The library is found through threadpoolctl (the BLAS NumPy loaded) and
used where it has the ILP64 CBLAS of NumPy's own wheels
(``scipy_cblas_sgemm64_``, scipy-openblas). Elsewhere ``available()`` is
False and the callers keep their NumPy loops: the same numbers, slower.

Arrays are passed as addresses with their leading dimensions, as to CBLAS;
the group tables as ``fast.grouped.Plan`` keeps them.
"""
from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

ROW, NO, TRANS = 101, 111, 112           # CBLAS's CblasRowMajor, CblasNoTrans, CblasTrans
_FOUND: dict = {}


def _library():
    """{dtype: (gemm, gemv, dot) addresses} of NumPy's BLAS, or {}."""
    try:
        from threadpoolctl import ThreadpoolController
        libs = ThreadpoolController().select(user_api="blas", internal_api="openblas").lib_controllers
    except Exception:                       # no threadpoolctl, or it cannot inspect this process
        return {}
    for lib in libs:
        if "scipy_openblas64" not in lib.filepath:
            continue
        try:
            dll = ctypes.CDLL(lib.filepath)
            address = {name: ctypes.cast(getattr(dll, f"scipy_cblas_{name}64_"), ctypes.c_void_p).value
                       for name in ("sgemm", "sgemv", "sdot", "dgemm", "dgemv", "ddot")}
        except (OSError, AttributeError):
            continue
        return {np.dtype(t): tuple(address[c + name] for name in ("gemm", "gemv", "dot"))
                for t, c in (("float32", "s"), ("float64", "d"))}
    return {}


def functions(dtype):
    """(gemm, gemv, dot) addresses for arrays of ``dtype``, or None."""
    if "lib" not in _FOUND:
        _FOUND["lib"] = _library()
    return _FOUND["lib"].get(np.dtype(dtype))


def available(dtype) -> bool:
    return functions(dtype) is not None


def _call(result, fn, *args):
    """Call the C function at address ``fn`` (int64) with ``args`` as they are
    typed; it returns ``result`` (a Numba type)."""
    sig = result(fn, *args)

    def codegen(context, builder, signature, values):
        arg_types = [context.get_value_type(t) for t in signature.args[1:]]
        returns = ir.VoidType() if result == types.void else context.get_value_type(result)
        pointer = builder.inttoptr(values[0], ir.FunctionType(returns, arg_types).as_pointer())
        value = builder.call(pointer, values[1:])
        return context.get_dummy_value() if result == types.void else value
    return sig, codegen


@intrinsic
def _gemm(typingctx, fn, order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    return _call(types.void, fn, order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


@intrinsic
def _gemv(typingctx, fn, order, t, m, n, alpha, a, lda, x, incx, beta, y, incy):
    return _call(types.void, fn, order, t, m, n, alpha, a, lda, x, incx, beta, y, incy)


@intrinsic
def _dot(typingctx, like, fn, n, x, incx, y, incy):
    """``like``: a number of the type the function returns (float32: sdot)."""
    sig, codegen = _call(like, fn, n, x, incx, y, incy)
    return like(like, fn, n, x, incx, y, incy), lambda context, builder, _, values: codegen(
        context, builder, sig, values[1:])


@njit(cache=True, nogil=True)
def _shape(cuts, off, g):
    """Group g's rows and columns: (n_g, w_g); every group has a row (``fast.grouped.Plan``)."""
    n = cuts[g + 1] - cuts[g]
    return n, (off[g + 1] - off[g]) // n


@njit(cache=True, nogil=True)
def rows_by_columns(blas, A, lda, cuts, B, ldb, first, K, C, off, g0, g1, one, zero):
    """For groups g in [g0, g1): C_g (n_g, w_g) = A[cuts[g]:cuts[g+1]] (n_g, K)
    times the columns first[g]..first[g]+w_g of B, which lie in memory as
    rows of length >= K (``Params``' word-major U: B = [U; b2] seen as
    (V, Dh+1)), so the second factor is B[first:first+w]ᵀ (K, w_g);
    C_g row-major at C + off[g] (elements), w_g = (off[g+1] - off[g]) / n_g.
    NumPy's calls: dot for one row by one column, gemv for one row or one
    column, else gemm(NoTrans, Trans)."""
    gemm, gemv, dot = blas
    size = np.int64(A.itemsize)
    for g in range(g0, g1):
        n, w = _shape(cuts, off, g)
        a, b = A.ctypes.data + cuts[g] * lda * size, B.ctypes.data + first[g] * ldb * size
        if n == 1 and w == 1:
            C[off[g]] = _dot(one, dot, K, a, np.int64(1), b, np.int64(1))
        elif n == 1:
            _gemv(gemv, np.int32(ROW), np.int32(NO), w, K, one, b, ldb, a, np.int64(1), zero,
                  C.ctypes.data + off[g] * size, np.int64(1))
        elif w == 1:
            _gemv(gemv, np.int32(ROW), np.int32(NO), n, K, one, a, lda, b, np.int64(1), zero,
                  C.ctypes.data + off[g] * size, np.int64(1))
        else:
            _gemm(gemm, np.int32(ROW), np.int32(NO), np.int32(TRANS), n, w, K, one, a, lda, b, ldb, zero,
                  C.ctypes.data + off[g] * size, w)


@njit(cache=True, nogil=True)
def rows_by_rows(blas, A, cuts, off, B, ldb, first, K, C, g0, g1, one, zero):
    """For groups g in [g0, g1): C[cuts[g]:cuts[g+1]] (n_g, K) = A_g (n_g, w_g)
    times B[first[g]:first[g]+w_g, :K] (w_g, K), rows of length >= K in
    memory (U's columns, as ``rows_by_columns``); A_g row-major from
    A[off[g]]. NumPy's calls: its own loop for an inner dimension of one
    (a product of two numbers), gemv(Trans) for one row, else gemm."""
    gemm, gemv, dot = blas
    size, ldc = np.int64(A.itemsize), np.int64(C.shape[1])
    for g in range(g0, g1):
        n, w = _shape(cuts, off, g)
        a, b, c = A.ctypes.data + off[g] * size, B.ctypes.data + first[g] * ldb * size, C.ctypes.data + cuts[g] * ldc * size
        if w == 1:
            for i in range(n):
                for k in range(K):
                    C[cuts[g] + i, k] = A[off[g] + i] * B[first[g], k]
        elif n == 1:
            _gemv(gemv, np.int32(ROW), np.int32(TRANS), w, K, one, b, ldb, a, np.int64(1), zero, c, np.int64(1))
        else:
            _gemm(gemm, np.int32(ROW), np.int32(NO), np.int32(NO), n, K, w, one, a, w, b, ldb, zero, c, ldc)


@njit(cache=True, nogil=True)
def row_sums(blas, A, cuts, off, x, s, g0, g1, one, zero):
    """For groups g in [g0, g1): s[cuts[g]:cuts[g+1]] = A_g (n_g, w_g) times
    x[:w_g], A_g row-major from A[off[g]]: each row's sum when x is ones.
    NumPy's calls: dot for one row, its own loop for one column, else gemv."""
    gemm, gemv, dot = blas
    size = np.int64(A.itemsize)
    for g in range(g0, g1):
        n, w = _shape(cuts, off, g)
        a = A.ctypes.data + off[g] * size
        if n == 1:
            s[cuts[g]] = _dot(one, dot, w, a, np.int64(1), x.ctypes.data, np.int64(1))
        elif w == 1:
            for i in range(n):
                s[cuts[g] + i] = A[off[g] + i] * x[0]
        else:
            _gemv(gemv, np.int32(ROW), np.int32(NO), n, w, one, a, w, x.ctypes.data, np.int64(1), zero,
                  s.ctypes.data + cuts[g] * size, np.int64(1))


