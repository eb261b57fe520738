"""Matrix products in place, through BLAS, with the GIL released.

``gemm(a, b, c, alpha, beta)`` computes ``c := alpha * a @ b + beta * c`` for
2-D float32 or float64 views whose rows or columns are contiguous: C-ordered
arrays, their ``.T`` and their row or column slices, with no copy.

Why not ``np.matmul`` or ``scipy.linalg.blas``? ``np.matmul(out=)`` cannot
accumulate (no ``beta``), so folding the SGD update into the gradient
product (``W := W - s * a^T @ delta``) would need a temporary and two more
passes over W. SciPy's f2py wrappers accumulate, but they hold the GIL for
the whole product (two threads calling them take turns: measured 2.4 ms ->
4.9 ms per call) and silently copy a ``c`` that is not Fortran-contiguous,
which leaves the caller's array unchanged. So we call the BLAS routines that
SciPy exports for Cython (``scipy.linalg.cython_blas``, a stable interface)
through ``ctypes``, which releases the GIL during a foreign call and lets us
pass leading dimensions, so a worker can update its own columns of W in place.

BLAS is column-major: a C-ordered (m, n) array with row stride ``ld`` is, to
BLAS, the (n, m) matrix C^T with leading dimension ``ld``. So ``c = a @ b``
is computed as ``c^T = b^T @ a^T``: the operands are passed swapped.
"""

from __future__ import annotations

import ctypes

import numpy as np
import scipy.linalg.cython_blas as cython_blas

_int = ctypes.c_int
_int_p = ctypes.POINTER(_int)


def _blas_routine(name: str, real: type):
    """The Fortran-ABI routine ``name`` from SciPy's BLAS, callable from ctypes."""
    capsule = cython_blas.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    address = get_pointer(capsule, get_name(capsule))
    real_p = ctypes.POINTER(real)
    # gemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    # CFUNCTYPE (not PYFUNCTYPE): ctypes drops the GIL for the call.
    prototype = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, _int_p, _int_p, _int_p,
                                 real_p, ctypes.c_void_p, _int_p, ctypes.c_void_p, _int_p,
                                 real_p, ctypes.c_void_p, _int_p)
    return prototype(address), real


_ROUTINES = {np.dtype(np.float32): _blas_routine("sgemm", ctypes.c_float),
             np.dtype(np.float64): _blas_routine("dgemm", ctypes.c_double)}
_NO, _TRANSPOSE = b"N", b"T"


def _as_blas(x: np.ndarray) -> tuple[bytes, int]:
    """(transpose flag, leading dimension) of ``x`` seen as a C-ordered matrix or its ``.T``."""
    rows, cols = x.shape
    item = x.itemsize
    row_stride, col_stride = x.strides
    if col_stride == item or cols == 1:
        if row_stride % item == 0 and (rows == 1 or row_stride >= cols * item):
            return _NO, max(row_stride // item, cols, 1)
    if row_stride == item or rows == 1:
        if col_stride % item == 0 and (cols == 1 or col_stride >= rows * item):
            return _TRANSPOSE, max(col_stride // item, rows, 1)
    raise ValueError(f"gemm operand with shape {x.shape} and strides {x.strides}: "
                     "expected contiguous rows or contiguous columns")


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, alpha: float = 1.0,
         beta: float = 0.0) -> np.ndarray:
    """``c := alpha * a @ b + beta * c`` in place; returns ``c``.

    a (m, k), b (k, n), c (m, n), all of one dtype (float32 or float64); ``c``
    must have contiguous rows, ``a`` and ``b`` contiguous rows or columns.
    With ``beta == 0`` the old content of ``c`` is ignored (NaNs included).
    """
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or c.shape != (m, n):
        raise ValueError(f"gemm shapes {a.shape} @ {b.shape} -> {c.shape} do not match")
    if not (a.dtype == b.dtype == c.dtype) or a.dtype not in _ROUTINES:
        raise ValueError(f"gemm dtypes {a.dtype}, {b.dtype}, {c.dtype}: expected one of "
                         "float32 or float64")
    if m == 0 or n == 0:
        return c
    routine, real = _ROUTINES[a.dtype]
    trans_c, ldc = _as_blas(c)
    if trans_c is not _NO or not c.flags.writeable:
        raise ValueError("gemm output: expected a writeable array with contiguous rows")
    if k == 0:
        c *= beta
        return c
    trans_a, lda = _as_blas(a)
    trans_b, ldb = _as_blas(b)
    # Column-major c^T (n, m) = b^T (n, k) @ a^T (k, m): operands swapped.
    routine(trans_b, trans_a, _int(n), _int(m), _int(k), real(alpha),
            b.ctypes.data, _int(ldb), a.ctypes.data, _int(lda), real(beta),
            c.ctypes.data, _int(ldc))
    return c
