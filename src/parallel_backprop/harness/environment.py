"""Where a benchmark or study ran: CPU, cores, BLAS, tuning variables, versions, commit, load.

Recorded with every run, because numbers from a shared machine mean little
without it. Versions are read from package metadata, so the record imports
none of the peers; BLAS is read with threadpoolctl from this process, which
has loaded NumPy's and SciPy's OpenBLAS and, where it is installed, MKL
(both libraries the executors can call: ``gemm_blas`` says which they do).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from ..resources import usable_cpus

# Variables that change how BLAS, OpenMP, PyTorch or XLA run (OPENBLAS_CORETYPE
# picks OpenBLAS's kernels: Haswell's AVX2 ones run at about half the
# AVX-512 rate on the machines this was written on).
VARIABLE_PREFIXES = ("OPENBLAS_", "GOTO", "OMP_", "KMP_", "GOMP_", "MKL_", "BLIS_", "VECLIB_",
                     "NUMEXPR_", "XLA_", "JAX_", "TORCH", "PYTORCH_", "CUDA_VISIBLE")
PACKAGES = ("parallel-backprop", "numpy", "scipy", "threadpoolctl", "torch", "jax", "jaxlib",
            "scikit-learn", "matplotlib")


def compiled_modules() -> dict[str, bool]:
    """Which optional compiled modules the run uses: built, and not switched off by
    ``$PBP_PURE_PYTHON`` (each makes some steps faster; see :mod:`..compiled`)."""
    from .. import compiled

    return {name: compiled.optional(name) is not None for name in ("_kernels", "_fused", "_bf16")}


def environment() -> dict:
    """The environment record stored at the top of ``bench.json`` and ``study.json``."""
    from threadpoolctl import threadpool_info

    from ..blas_choice import installed_blas
    from ..blas_libraries import load_library
    from ..gemm import blas_record

    for name in installed_blas():      # loaded, so that threadpoolctl lists each
        load_library(name)

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(usable_cpus()),
        "physical_cores": _physical_cores(),
        "memory_gib": _memory_gib(),
        "load_average": load_average(),
        "blas": [{key: info.get(key) for key in ("internal_api", "version", "num_threads",
                                                 "threading_layer", "architecture", "prefix")}
                 for info in threadpool_info() if info.get("user_api") == "blas"],
        "gemm_blas": blas_record(),
        "compiled": compiled_modules(),
        "variables": {name: value for name, value in sorted(os.environ.items())
                      if name.startswith(VARIABLE_PREFIXES)},
        "versions": {name: _version(name) for name in PACKAGES},
        "git": _git(),
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages; None where the system has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _cpuinfo() -> list[dict[str, str]]:
    """``/proc/cpuinfo`` as one dict per logical CPU; empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    cpus = []
    for block in text.strip().split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        cpus.append(fields)
    return cpus


def cpu_model() -> str:
    for cpu in _cpuinfo():
        if cpu.get("model name"):
            return cpu["model name"]
    return platform.processor() or platform.machine()


def _physical_cores() -> int | None:
    cores = {(cpu.get("physical id"), cpu.get("core id")) for cpu in _cpuinfo()
             if "core id" in cpu}
    return len(cores) or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2 ** 20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git() -> dict | None:
    """Commit of the checkout the package runs from, and whether it has local changes."""
    source = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None   # not a checkout (an installed wheel), or no git
    return {"commit": commit, "dirty": dirty}


SOURCE_CHANGED = ("the package's files changed during the run: configurations started after "
                  "the change ran the new code, so these results mix two versions")


def source_fingerprint(root: Path | None = None) -> str:
    """A digest of the package's modules (each one's path, size and modification time).

    A bench or study compares it before and after its run: its workers are
    new processes that import the package afresh, so an edit to a checkout
    in between (easy in a 17-minute run) would mix two versions in one set
    of results without a trace in the commit recorded at the start.
    """
    root = root or Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".so", ".pyd") and path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
                          .encode())
    return digest.hexdigest()


def source_change_notes(env: dict, before: str) -> list[str]:
    """Set ``env["source_changed"]``: whether the package's modules differ from the
    :func:`source_fingerprint` ``before`` taken at the start of the run; returns the
    note that then goes first in the run's notes (none if unchanged)."""
    env["source_changed"] = source_fingerprint() != before
    return [SOURCE_CHANGED] if env["source_changed"] else []


def warnings(env: dict) -> list[str]:
    """Notes on settings that change the numbers, for the top of the report."""
    notes = []
    coretype = env["variables"].get("OPENBLAS_CORETYPE")
    if coretype:
        kernels = sorted({lib.get("architecture") or "?" for lib in env["blas"]})
        notes.append(f"OPENBLAS_CORETYPE={coretype} is set: OpenBLAS runs its "
                     f"{', '.join(kernels)} kernels, not the ones it would pick for this CPU")
    return notes


__all__ = ["cpu_model", "environment", "load_average", "warnings"]
