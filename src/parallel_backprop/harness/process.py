"""A measured process: its thread variables, its own session, a timeout, its error line.

Bench workers and the study's ``pbp train`` runs start here. Thread
variables are set before start-up because BLAS and OpenMP size their pools
when they load; a session of its own lets a timeout or Ctrl-C end the
process's children too (torch.compile starts compiler processes, mpiexec
its ranks).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

# Read by OpenBLAS, OpenMP (torch, MKL), MKL, BLIS, Accelerate and numexpr at start-up.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def process_env(threads: int) -> dict[str, str]:
    """The environment of a measured process: the thread variables set to ``threads``,
    and this package importable from wherever this process imported it."""
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def run_isolated(command: list[str], env: dict, timeout_s: float) -> tuple[int, str] | None:
    """Run ``command``; ``(exit status, stderr)``, or None when it ran past ``timeout_s``."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill(process)
        return None
    except BaseException:
        kill(process)
        raise
    return process.returncode, stderr


def error_line(stderr: str) -> str:
    """The line of a process's stderr that names its error (MPI appends its own lines)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception|Unavailable)\b", line)]
    return (errors or lines or ["no message"])[-1]


def kill(process: subprocess.Popen) -> None:
    """End ``process`` and everything in its session; wait for it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.communicate()


__all__ = ["THREAD_VARIABLES", "error_line", "kill", "process_env", "run_isolated"]
