"""The CPU executors' precisions: fp32, and bf16 mixed precision where the machine has it.

``bf16``: the matrix products take bfloat16 operands and accumulate in
float32 (a BLAS bf16 GEMM: MKL's ``cblas_gemm_bf16bf16f32``, AMX tiles or
AVX512-BF16 instructions); the master weights stay float32 and are updated
in float32; the element-wise work (activations, f', the loss) runs in
float32 and a bfloat16 copy of each result is kept for the next product.

Where either half is missing, bf16 is refused with one line that says which,
never emulated: a CPU without AMX or AVX512-BF16 would have MKL widen every
operand back to float32 in software, slower than fp32 itself; a BLAS without
a bf16 GEMM has nothing to call.

Which BLAS a precision may use is decided in one place,
:func:`..blas_choice.select_blas` (``--blas`` and its ``auto``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import compiled
from .activations import activate
from .blas_choice import select_blas
from .blas_libraries import bfloat16, load_library
from .errors import ConfigError
from .gemm import current_blas

PRECISIONS = ("fp32", "bf16")
# /proc/cpuinfo flags of a native bf16 product: AMX tiles, or AVX-512 bf16 dot products.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")

_compiled = compiled.optional("_bf16")     # the compiled converter, or None
NATIVE_KERNEL = _compiled.KERNEL if _compiled is not None else None
_native = _compiled                        # what to_bf16 calls: the converter, or None
_fused_passes = {"forward": True, "backward": True}   # which of the activations' passes run


def use_native_converter(enabled: bool) -> bool:
    """Whether :func:`to_bf16` calls the compiled converter (when built) or NumPy's cast;
    returns the previous setting. For comparing the two (tests, benchmarks)."""
    global _native
    before = _native is not None
    _native = _compiled if enabled else None
    return before


def use_fused_passes(forward: bool = True, backward: bool = True) -> tuple[bool, bool]:
    """Whether :func:`activate_to_bf16` (forward) and :func:`scale_to_bf16` (backward)
    take the activations' compiled passes (when built) or NumPy's passes and the
    converter; returns the previous settings. For comparing them
    (benchmarks/bf16_step.py)."""
    before = _fused_passes["forward"], _fused_passes["backward"]
    _fused_passes.update(forward=bool(forward), backward=bool(backward))
    return before


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_bf16_missing(flags: set[str] | None = None) -> str | None:
    """Why this CPU has no native bf16 product, or None when it has one."""
    flags = cpu_flags() if flags is None else flags
    if any(flag in flags for flag in BF16_CPU_FLAGS):
        return None
    return (f"this CPU has no native bf16 products (none of {', '.join(BF16_CPU_FLAGS)} "
            "among its flags), so bf16 would be emulated, slower than fp32; use fp32")


def bf16_unavailable(flags: set[str] | None = None) -> str | None:
    """Why ``--precision bf16`` cannot run on the CPU here, or None.

    The CPU's flags first (``flags``: given instead of this CPU's, nothing is
    measured); then, on this CPU, whether the bf16 GEMM really is faster than
    the same library's fp32 one (:func:`bf16_measured_slower`).
    """
    if bfloat16 is None:
        return "ml_dtypes is not installed (it comes with the mkl extra)"
    missing = cpu_bf16_missing(flags)
    if missing is not None or flags is not None:
        return missing
    return bf16_measured_slower()


def bf16_measured_slower() -> str | None:
    """Why the installed bf16 GEMM does not pay on this CPU, or None.

    The flags say what the CPU can do, not whether the BLAS uses it: a
    library may take a generic path on another vendor's CPU and emulate.
    So the bf16 GEMM is timed against the same library's fp32 one on a
    step's products (``--blas auto``'s probe, cached once per machine); not
    faster means emulated, refused. No library with a bf16 GEMM: None (the
    caller's own error says what to install).
    """
    from .blas_choice import cached_probe, installed_blas

    libraries = [library for library in map(load_library, installed_blas())
                 if library.bf16 is not None]
    if not libraries:
        return None
    library = libraries[0]
    fp32 = cached_probe([library], "fp32")["seconds"][library.name]
    bf16 = cached_probe([library], "bf16")["seconds"][library.name]
    if bf16 < fp32:
        return None
    return (f"{library.name}'s bf16 products took {bf16 / fp32:.1f}x the time of its fp32 "
            "ones on this CPU (emulated, not native), so bf16 would be slower; use fp32")


def use_bf16_blas():
    """Make sure :func:`..gemm.gemm` can multiply bfloat16; returns the BLAS it will call.

    Keeps the current BLAS when it has a bf16 GEMM, else switches the process
    to ``auto``'s choice among those with one (:func:`..blas_choice.select_blas`;
    a one-line error when none is installed). Refuses where bf16 is not native
    (see :func:`bf16_unavailable`).
    """
    reason = bf16_unavailable()
    if reason is not None:
        raise ConfigError(f"--precision bf16: {reason}")
    library = current_blas()
    if library.bf16 is None:
        library = select_blas("auto", "bf16")   # one line when no BLAS here has a bf16 GEMM
    return library


def to_bf16(source: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = source`` rounded to bfloat16 (nearest even); returns ``out``.

    ``source`` float32 (another float dtype takes NumPy's cast) and ``out``
    bfloat16, same shape, 1-D or 2-D with contiguous rows (column blocks of a
    matrix included; other layouts take NumPy's cast). Through the compiled
    converter when it is built (AVX512-BF16 where the CPU has it: ~4x NumPy's
    cast here), else NumPy's cast (ml_dtypes).
    """
    if (_native is not None and source.dtype == np.float32 and 1 <= source.ndim <= 2
            and source.size and source.strides[-1] == 4 and out.strides[-1] == 2):
        _native.to_bf16(source, out.view(np.uint16))
    else:
        np.copyto(out, source, casting="unsafe")
    return out


def copy_rows(source: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = source`` in ``out``'s dtype: through :func:`to_bf16` into bfloat16
    (NumPy's cast of 512 x 784 float32 rows took 0.22 ms, the converter 0.06)."""
    if bfloat16 is not None and out.dtype == bfloat16:
        to_bf16(source, out)
    else:
        out[...] = source


def _kernel(function, suffix: str, direction: str):
    """The compiled pass ``function.bf16_kernel + suffix`` of the ``direction`` pass, or
    None (not built, none, or switched off by :func:`use_fused_passes`)."""
    if _native is None or not _fused_passes[direction] or not function.bf16_kernel:
        return None
    return getattr(_native, function.bf16_kernel + suffix, None)


def _rows_of_floats(*arrays: np.ndarray) -> bool:
    """Whether the arrays are non-empty 2-D float32 with contiguous rows (the passes' layout)."""
    return all(array.ndim == 2 and array.size and array.dtype == np.float32
               and array.strides[-1] == 4 for array in arrays)


def activate_to_bf16(function, z: np.ndarray, bias: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``z += bias``, ``z = f(z)`` in place for the :class:`..activations.Activation`
    ``function``, then :func:`to_bf16` of it into ``out``; returns ``out``.

    The sigmoid, where the converter is built: one compiled pass instead of
    six (the bias add, NumPy's four, the conversion), ``z`` 2-D float32 with
    contiguous rows. It computes ``1 / (1 + exp(-z))`` with its own exp,
    within 3 ulp of the exact sigmoid but not bit for bit NumPy's
    ``0.5 tanh(z / 2) + 0.5`` (which fp32 keeps); the same values from its
    AVX-512 and portable loops, so a bf16 run still repeats. Per worker of a
    2-thread Net-1h step at batch 1024 on a Xeon: 0.24-0.27 ms, against
    0.43-0.47 for the three compiled passes around NumPy's tanh before it.
    """
    kernel = _kernel(function, "_to_bf16", "forward")
    if (kernel is not None and _rows_of_floats(z)
            and bias.dtype == np.float32 and bias.strides[-1] == 4 and out.strides[-1] == 2):
        kernel(z, bias, out.view(np.uint16))
        return out
    activate(function, z, bias)        # ReLU: one compiled pass where built
    return to_bf16(z, out)


def scale_to_bf16(function, delta: np.ndarray, a: np.ndarray, z: np.ndarray | None,
                  scratch: np.ndarray, out: np.ndarray,
                  sums: np.ndarray | None = None) -> np.ndarray:
    """``delta *= f'`` for the :class:`..activations.Activation` ``function`` (from its
    output ``a`` or input ``z``; ``scratch`` as :meth:`~..activations.Activation.scale_delta`
    takes it), then :func:`to_bf16` of the result into ``out``; returns ``out``.
    ``sums`` (n_out,) float32: set to the column sums of the scaled delta (rows
    added in order: NumPy's ``sum(axis=0)`` gives the same bits), and ``delta``
    then only read by the compiled pass (NumPy's passes scale it in place):
    for a caller that needs no float32 delta afterwards.

    One compiled pass where the converter is built and the activation has one
    (``function.bf16_kernel``: the sigmoid), 2-D float32 with contiguous rows:
    the float32 delta is the same bit for bit, and three passes over it and
    the conversion's are one. At batch 1024 on the Xeon the three NumPy passes
    and the conversion of a 1024 x 1024 delta took ~1.5 ms of a 12 ms step.
    """
    kernel = _kernel(function, "_scale_to_bf16", "backward")
    if (kernel is not None and _rows_of_floats(delta, a) and a.shape == delta.shape
            and out.strides[-1] == 2 and (sums is None or sums.dtype == np.float32)):
        kernel(delta, a, out.view(np.uint16), sums)
        return out
    function.scale_delta(delta, a, z, scratch)
    if sums is not None:
        np.sum(delta, axis=0, out=sums)
    return to_bf16(delta, out)


__all__ = ["BF16_CPU_FLAGS", "NATIVE_KERNEL", "PRECISIONS", "activate_to_bf16",
           "bf16_measured_slower", "bf16_unavailable", "copy_rows", "cpu_bf16_missing", "cpu_flags",
           "scale_to_bf16", "to_bf16",
           "use_bf16_blas", "use_fused_passes", "use_native_converter"]
