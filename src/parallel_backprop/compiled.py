"""The compiled step kernels (``_kernels``, from ``_native/kernels.c``), or None.

Direct BLAS calls and fused element-wise passes that equal NumPy's bit for
bit (see the C file); the package works without them, slower at small
batches. Callers read :data:`kernels` at call time, so a test (or a
benchmark comparing the two) can set it to None.

A pass returns the floating-point errors it raised (NumPy's bits; 0 for
none); :func:`check` handles them as NumPy's own passes would under
``np.seterr``: ignored, warned of, raised, or handed to ``np.seterrcall``.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

try:
    from . import _kernels as kernels
except ImportError:          # built without a C compiler: NumPy's passes and ctypes instead
    kernels = None

# The dtypes the kernels take (float32, float64), by NumPy's type character.
KERNEL_DTYPES = "fd"

_ERRORS = (("divide", "divide by zero", 1), ("over", "overflow", 2),
           ("under", "underflow", 4), ("invalid", "invalid value", 8))


def check(raised: int, operation: str) -> None:
    """Handle the floating-point errors ``raised`` by the pass ``operation`` as np.seterr says."""
    if not raised:
        return
    policy = np.geterr()
    for kind, words, bit in _ERRORS:
        if not raised & bit or policy[kind] == "ignore":
            continue
        message = f"{words} encountered in {operation}"
        mode = policy[kind]
        if mode == "raise":
            raise FloatingPointError(message)
        if mode == "warn":
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        elif mode == "call":
            np.geterrcall()(words, bit)
        elif mode == "print":
            print(f"Warning: {message}", file=sys.stderr)
        elif mode == "log":
            np.geterrcall().write(f"Warning: {message}\n")
