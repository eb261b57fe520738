"""Matrix products in place, through BLAS, with the GIL released.

``gemm(a, b, c, alpha, beta)`` computes ``c := alpha * a @ b + beta * c`` for
2-D views whose rows or columns are contiguous: C-ordered arrays, their
``.T`` and their row or column slices, with no copy. Operands are float32 or
float64 (``c`` of the same dtype), or bfloat16 (``ml_dtypes.bfloat16``) with a
float32 ``c``: products in bfloat16, accumulated in float32, where the BLAS in
use has such a routine (MKL's ``cblas_gemm_bf16bf16f32``: AMX tiles or
AVX512-BF16 where the CPU has them).

Why not ``np.matmul`` or ``scipy.linalg.blas``? ``np.matmul(out=)`` cannot
accumulate (no ``beta``), so folding the SGD update into the gradient
product (``W := W - s * a^T @ delta``) would need a temporary and two more
passes over W. SciPy's f2py wrappers accumulate, but they hold the GIL for
the whole product (two threads calling them take turns: measured 2.4 ms ->
4.9 ms per call) and silently copy a ``c`` that is not Fortran-contiguous,
which leaves the caller's array unchanged. So we call the BLAS routines
themselves (through the compiled module :mod:`.compiled`, or ctypes where it
was not built), releasing the GIL during the call (the compiled module keeps
it for products under 2^18 multiply-adds, shorter than a hand-over) and
passing leading dimensions, so a worker can update its own columns of W in
place.

Two BLAS libraries (see :mod:`.blas_libraries`): SciPy's OpenBLAS (always
there) and MKL (the ``mkl`` extra). :func:`use_blas` chooses the one every
later ``gemm`` call goes through, for the whole process; until it is called,
the one ``$PBP_BLAS`` names (so that the processes a command starts compute
with the BLAS it chose; see :mod:`.blas_choice`), else OpenBLAS.
:func:`blas_thread_limit` sets its threads for every thread of the process.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from threadpoolctl import ThreadpoolController

from . import blas_libraries
from .blas_libraries import BLAS_NAMES, BlasLibrary, bfloat16, load_library
from .errors import ConfigError

_NO, _TRANSPOSE = b"N", b"T"
_current: BlasLibrary | None = None
_controller: tuple[tuple[int, int], ThreadpoolController] | None = None


def use_blas(name: str) -> BlasLibrary:
    """Route every later :func:`gemm` through the BLAS ``name``; returns it.

    ``name`` is one of :data:`BLAS_NAMES`; a library that is not installed is
    a one-line :class:`ConfigError` saying how to install it.
    """
    global _current
    _current = load_library(name)
    return _current


def current_blas() -> BlasLibrary:
    """The BLAS :func:`gemm` calls now: :func:`use_blas`'s, else ``$PBP_BLAS``'s, else OpenBLAS."""
    global _current
    if _current is None:
        from .blas_choice import BLAS_CHOICES, BLAS_VARIABLE, resolve_blas

        name = os.environ.get(BLAS_VARIABLE) or "openblas"
        if name not in BLAS_CHOICES:
            raise ConfigError(f"${BLAS_VARIABLE} {name!r}: expected one of "
                              f"{', '.join(BLAS_CHOICES)}")
        _current = load_library(resolve_blas(name))
    return _current


def _threadpools() -> ThreadpoolController:
    """threadpoolctl's view of the process's BLAS libraries, scanned again only when a
    module was imported or a BLAS loaded since (a scan took ~1.5 ms, every executor)."""
    global _controller
    key = (len(sys.modules), len(blas_libraries.loaded_names()))
    if _controller is None or _controller[0] != key:
        _controller = (key, ThreadpoolController())
    return _controller[1]


class blas_thread_limit:
    """Every BLAS of the process on ``threads`` threads per calling thread, until restored.

    threadpoolctl's limit, plus the library's process-wide count where its
    limit binds only the thread that sets it (MKL), so that the workers that
    call BLAS from other threads follow it too (of ``library``: by default
    the one in use). A context manager, or held for an executor's lifetime
    and undone with :meth:`restore`.
    """

    def __init__(self, threads: int, library: BlasLibrary | None = None):
        self._library = library or current_blas()
        setter = self._library.set_threads
        self._before = self._library.get_threads() if setter is not None else None
        self._limits = _threadpools().limit(limits=threads, user_api="blas")
        if setter is not None:
            setter(threads)

    def restore(self) -> None:
        """Put back the thread counts found when the limit was set (idempotent)."""
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None
            if self._before is not None:
                self._library.set_threads(self._before)

    def __enter__(self) -> "blas_thread_limit":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def blas_record(library: BlasLibrary | None = None) -> dict:
    """What records say of a BLAS (the one in use by default): name, path, version, threads."""
    library = library or current_blas()
    threads = library.get_threads() if library.get_threads is not None else None
    if threads is None:
        from threadpoolctl import threadpool_info

        threads = next((info.get("num_threads") for info in threadpool_info()
                        if info.get("filepath") == library.path), None)
    return {"name": library.name, "path": library.path, "version": library.version,
            "threading_layer": library.threading_layer, "threads": threads,
            "bf16": library.bf16 is not None}


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


def _routine(library: BlasLibrary, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """The library's routine for these operand dtypes, or a ValueError naming them."""
    operands = a.dtype if a.dtype == b.dtype else None
    if operands == bfloat16 and c.dtype == np.float32:
        if library.bf16 is None:
            raise ConfigError(f"bfloat16 products: the {library.name} BLAS has no bf16 GEMM "
                              f"({library.bf16_missing})")
        return library.bf16
    if operands == c.dtype and operands in library.routines:
        return library.routines[operands]
    raise ValueError(f"gemm dtypes {a.dtype}, {b.dtype}, {c.dtype}: expected float32 or "
                     "float64 throughout, or bfloat16 operands with a float32 result")


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, alpha: float = 1.0,
         beta: float = 0.0) -> np.ndarray:
    """``c := alpha * a @ b + beta * c`` in place; returns ``c``.

    a (m, k), b (k, n), c (m, n); ``c`` must have contiguous rows, ``a`` and
    ``b`` contiguous rows or columns. With ``beta == 0`` the old content of
    ``c`` is ignored (NaNs included).
    """
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or c.shape != (m, n):
        raise ValueError(f"gemm shapes {a.shape} @ {b.shape} -> {c.shape} do not match")
    routine = _routine(current_blas(), a, b, c)
    if m == 0 or n == 0:
        return c
    trans_c, ldc = _as_blas(c)
    if trans_c is not _NO or not c.flags.writeable:
        raise ValueError("gemm output: expected a writeable array with contiguous rows")
    if k == 0:
        c *= beta
        return c
    trans_a, lda = _as_blas(a)
    trans_b, ldb = _as_blas(b)
    routine(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    return c


__all__ = ["BLAS_NAMES", "BlasLibrary", "bfloat16", "blas_record", "blas_thread_limit",
           "current_blas", "gemm", "use_blas"]
