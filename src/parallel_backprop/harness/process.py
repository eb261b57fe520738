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
    """End ``process`` and everything it started (:func:`kill_tree`); wait for it."""
    kill_tree(process.pid)
    process.communicate()


def kill_tree(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` and every descendant of ``pid``.

    The group alone is not enough: MPICH's process manager starts every rank
    in a process group of its own, so killing mpiexec's group would leave the
    ranks running, adopted by init. Descendants are found in /proc (Linux);
    elsewhere only the group is killed.
    """
    victims = descendants(pid)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def descendants(pid: int) -> list[int]:
    """The children of ``pid``, theirs, and so on (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (name) state ppid ...": the name may hold spaces and parentheses
            parent = int(entry.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue                          # ended while we looked
        children.setdefault(parent, []).append(int(entry.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


__all__ = ["THREAD_VARIABLES", "descendants", "error_line", "kill", "kill_tree", "process_env",
           "run_isolated"]
