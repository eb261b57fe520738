"""The BLAS libraries :mod:`.gemm` can call, loaded through ctypes.

Each is presented the same way, as a :class:`BlasLibrary` whose routines take
row-major operands (what a C-ordered NumPy array is)::

    routine(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

with ``trans_*`` ``b"N"`` or ``b"T"`` and ``a``, ``b``, ``c`` arrays whose first
elements are the operands' corners (C-ordered or transposed views).
Each routine is the library's function called by the compiled module
(:mod:`.compiled`: ~0.5 us a call, the GIL dropped for any but tiny
products), or through ctypes where that module was not built (~5 us a
call measured on a 2-core Xeon, the GIL dropped always).

openblas
    The BLAS SciPy ships and exports for Cython (``scipy.linalg.cython_blas``,
    a stable interface): Fortran ABI, so column-major; ``c = a @ b`` is
    computed as ``c^T = b^T @ a^T``, the operands passed swapped.
mkl
    Intel's oneMKL from the ``mkl`` wheel (the ``mkl`` extra):
    ``libmkl_rt``'s CBLAS with row-major layout, and its bf16 GEMM
    ``cblas_gemm_bf16bf16f32`` (bfloat16 operands, float32 accumulation and
    result; AMX tiles on CPUs that have them).

Threads. threadpoolctl limits both libraries, but for MKL it calls
``mkl_set_num_threads_local``, which binds only the thread that enters the
limit: the executors' other workers kept MKL's default (every core), so
two workers ran two MKL threads each on two cores (measured). So
:attr:`BlasLibrary.set_threads` also sets MKL's process-wide count, which
every thread without a local setting follows. MKL's threading layer is
Intel's OpenMP (``libiomp5``, shipped with the wheel) unless
``MKL_THREADING_LAYER`` says otherwise, or GNU's where PyTorch has put
libgomp in the process first (see ``_mkl_setup``): the blas executor needs a
threaded layer, and with the counts set this way 2 workers x 1 thread ran as fast
under it as under the sequential layer, while the GNU layer ran 2-thread
products 3x slower (docs/blas.md has the numbers).
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from . import compiled
from .errors import ConfigError, install_hint

try:                                   # NumPy has no bfloat16 dtype of its own
    import ml_dtypes
    bfloat16: np.dtype | None = np.dtype(ml_dtypes.bfloat16)
except ImportError:
    bfloat16 = None

BLAS_NAMES = ("openblas", "mkl")


@dataclass(frozen=True)
class BlasLibrary:
    """One loaded BLAS: its routines by operand dtype, and its bf16 GEMM if it has one."""

    name: str
    routines: dict[np.dtype, Callable]
    bf16: Callable | None
    bf16_missing: str = ""     # why ``bf16`` is None, for the error message
    path: str = ""             # the shared library, for records
    version: str = ""
    threading_layer: str = ""  # how it runs threads ("pthreads", "intel", ...)
    # set_threads(n): the library's thread count for every thread of the process
    # (None: threadpoolctl's limit is enough); get_threads(): that count.
    set_threads: Callable[[int], None] | None = None
    get_threads: Callable[[], int] | None = None


_int = ctypes.c_int

# The compiled module's routine kinds (see _native/kernels.c).
_CBLAS_KIND = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, "bf16": 2}
_FORTRAN_KIND = {np.dtype(np.float32): 3, np.dtype(np.float64): 4}


def _direct(kind: int, address: int, through_ctypes: Callable) -> Callable:
    """The routine at ``address`` called by the compiled module, or ``through_ctypes``."""
    if compiled.kernels is None:
        return through_ctypes
    return partial(compiled.kernels.gemm, kind, address)


def _scipy_routine(name: str, real: type) -> Callable:
    """SciPy's Fortran-ABI ``name`` (sgemm/dgemm), wrapped to take row-major operands."""
    import scipy.linalg.cython_blas as cython_blas

    capsule = cython_blas.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    int_p, real_p = ctypes.POINTER(_int), ctypes.POINTER(real)
    # gemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), every
    # argument by reference; CFUNCTYPE (not PYFUNCTYPE): ctypes drops the GIL.
    prototype = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, int_p, int_p, int_p,
                                 real_p, ctypes.c_void_p, int_p, ctypes.c_void_p, int_p,
                                 real_p, ctypes.c_void_p, int_p)
    address = get_pointer(capsule, get_name(capsule))
    fortran = prototype(address)

    def row_major(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        # Column-major c^T (n, m) = b^T (n, k) @ a^T (k, m): operands swapped.
        fortran(trans_b, trans_a, _int(n), _int(m), _int(k), real(alpha), b.ctypes.data,
                _int(ldb), a.ctypes.data, _int(lda), real(beta), c.ctypes.data, _int(ldc))
    dtype = np.dtype(np.float32 if real is ctypes.c_float else np.float64)
    return _direct(_FORTRAN_KIND[dtype], address, row_major)


def _load_openblas() -> BlasLibrary:
    import scipy
    from threadpoolctl import threadpool_info

    routines = {np.dtype(np.float32): _scipy_routine("sgemm", ctypes.c_float),
                np.dtype(np.float64): _scipy_routine("dgemm", ctypes.c_double)}
    # SciPy's own OpenBLAS (NumPy may bundle another), as threadpoolctl finds it.
    scipy_dir = os.path.dirname(os.path.dirname(scipy.__file__))
    info = next((info for info in threadpool_info() if info.get("internal_api") == "openblas"
                 and info.get("filepath", "").startswith(os.path.join(scipy_dir, "scipy"))),
                {})
    return BlasLibrary("openblas", routines, None,
                       f"SciPy's OpenBLAS has none; use --blas mkl ({install_hint('mkl')})",
                       info.get("filepath") or os.path.dirname(scipy.__file__),
                       info.get("version") or "", info.get("threading_layer") or "")


_ROW_MAJOR, _CBLAS_TRANSPOSE = 101, {b"N": 111, b"T": 112}


def _mkl_path() -> str | None:
    """Where ``libmkl_rt`` lies: the ``mkl`` wheel puts it in the environment's lib/."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        found = sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
        if found:
            return found[0]
    return None


def _cblas_routine(function, real: type, kind: int) -> Callable:
    """A CBLAS ``?gemm`` (or the bf16 one: ``kind``) as a row-major routine."""
    def row_major(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        function(_ROW_MAJOR, _CBLAS_TRANSPOSE[trans_a], _CBLAS_TRANSPOSE[trans_b], m, n, k,
                 real(alpha), a.ctypes.data, lda, b.ctypes.data, ldb, real(beta),
                 c.ctypes.data, ldc)
    return _direct(kind, ctypes.cast(function, ctypes.c_void_p).value, row_major)


# MKL_Set_Threading_Layer's codes, and the names MKL_THREADING_LAYER takes.
_MKL_LAYERS = {"INTEL": 0, "SEQUENTIAL": 1, "PGI": 2, "GNU": 3, "TBB": 4}


def gnu_openmp_global() -> bool:
    """Whether GNU OpenMP (libgomp) is in the process's global symbol scope: PyTorch
    puts it there when imported. (A wheel's private copy, as scikit-learn's, is not.)"""
    return hasattr(ctypes.CDLL(None), "GOMP_parallel")


def _mkl_setup(library: ctypes.CDLL) -> tuple[str, str]:
    """Choose the threading layer (before any other MKL call); MKL's (version, layer).

    Intel OpenMP unless ``MKL_THREADING_LAYER`` names another, or unless
    libgomp's ``omp_*`` functions are global already: MKL's Intel layer then
    calls them instead of libiomp5's and every thread computes the whole
    product (measured: results off by a factor of about 2). The GNU layer
    runs on that same libgomp, correctly.
    """
    asked = os.environ.get("MKL_THREADING_LAYER", "").strip().upper()
    layer = _MKL_LAYERS.get(asked, _MKL_LAYERS["INTEL"])
    if layer == _MKL_LAYERS["INTEL"] and gnu_openmp_global():
        layer = _MKL_LAYERS["GNU"]
    library.MKL_Set_Threading_Layer.restype = _int
    layer = library.MKL_Set_Threading_Layer(layer)
    names = {code: name.lower() for name, code in _MKL_LAYERS.items()}
    text = ctypes.create_string_buffer(256)
    library.MKL_Get_Version_String(text, len(text))
    words = text.value.decode(errors="replace").split()
    version = words[words.index("Version") + 1] if "Version" in words else text.value.decode()
    return version, names.get(layer, str(layer))


def _load_mkl() -> BlasLibrary:
    path = _mkl_path()
    if path is None:
        raise ConfigError(f"--blas mkl: MKL (libmkl_rt) is not installed in this environment "
                          f"({install_hint('mkl')})")
    library = ctypes.CDLL(path)
    version, layer = _mkl_setup(library)
    routines = {}
    for dtype, symbol, real in ((np.float32, "cblas_sgemm", ctypes.c_float),
                                (np.float64, "cblas_dgemm", ctypes.c_double)):
        function = getattr(library, symbol)
        function.restype = None
        function.argtypes = [_int, _int, _int, _int, _int, _int, real, ctypes.c_void_p, _int,
                             ctypes.c_void_p, _int, real, ctypes.c_void_p, _int]
        routines[np.dtype(dtype)] = _cblas_routine(function, real, _CBLAS_KIND[np.dtype(dtype)])
    bf16 = library.cblas_gemm_bf16bf16f32
    bf16.restype = None
    bf16.argtypes = [_int, _int, _int, _int, _int, _int, ctypes.c_float,
                     ctypes.c_void_p, _int, ctypes.c_void_p, _int, ctypes.c_float,
                     ctypes.c_void_p, _int]
    library.MKL_Set_Num_Threads.argtypes = [_int]
    library.MKL_Get_Max_Threads.restype = _int
    common = dict(path=path, version=version, threading_layer=layer,
                  set_threads=library.MKL_Set_Num_Threads, get_threads=library.MKL_Get_Max_Threads)
    if bfloat16 is None:
        return BlasLibrary("mkl", routines, None, "ml_dtypes is not installed", **common)
    return BlasLibrary("mkl", routines, _cblas_routine(bf16, ctypes.c_float, _CBLAS_KIND["bf16"]),
                       "", **common)


_LOADERS = {"openblas": _load_openblas, "mkl": _load_mkl}
_loaded: dict[str, BlasLibrary] = {}


def loaded_names() -> tuple[str, ...]:
    """The BLAS libraries loaded so far in this process."""
    return tuple(_loaded)


def mkl_installed() -> bool:
    """Whether ``libmkl_rt`` is in this environment (found without loading it)."""
    return _mkl_path() is not None


def load_library(name: str) -> BlasLibrary:
    """The BLAS ``name`` (one of :data:`BLAS_NAMES`), loaded once per process."""
    if name not in _LOADERS:
        raise ConfigError(f"--blas {name!r}: expected one of {', '.join(BLAS_NAMES)}")
    if name not in _loaded:
        _loaded[name] = _LOADERS[name]()
    return _loaded[name]
