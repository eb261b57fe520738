"""The optional compiled modules, and the step kernels (``_kernels``) among them.

Three modules are built from ``_native/`` where a C compiler is found at
install: ``_kernels`` (direct BLAS calls and fused element-wise passes of a
step, equal to NumPy's bit for bit, and the threads executor's barrier),
``_fused`` (the update rules, :mod:`.optim`) and ``_bf16`` (the bfloat16
conversions, :mod:`.precision`). The package works without any of them,
slower; ``PBP_PURE_PYTHON=1`` in the environment runs it so even where
they were built (to compare, or to rule them out when something looks
wrong). Callers read :data:`kernels` at call time, so a test can set it to
None.

A pass returns the floating-point errors it raised (NumPy's bits; 0 for
none); :func:`check` handles them as NumPy's own passes would under
``np.seterr``: ignored, warned of, raised, or handed to ``np.seterrcall``.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from types import ModuleType

import numpy as np

PURE_PYTHON_VARIABLE = "PBP_PURE_PYTHON"


def optional(name: str) -> ModuleType | None:
    """The compiled module ``parallel_backprop.<name>``, or None where it was not
    built or ``$PBP_PURE_PYTHON`` asks for none (read once, at import)."""
    if os.environ.get(PURE_PYTHON_VARIABLE, "").strip() not in ("", "0"):
        return None
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError:      # built without a C compiler: NumPy's passes and ctypes instead
        return None


kernels = optional("_kernels")

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
