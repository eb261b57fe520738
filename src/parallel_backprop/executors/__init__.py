"""Executors by name: where a training step runs.

``make_executor("serial", network, params, batch_size=128)`` returns a context
manager with ``step``, ``predict`` and ``params`` (see :mod:`.base`).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..network import Network
from .base import Executor
from .serial import SerialExecutor

EXECUTORS: dict[str, type[Executor]] = {
    "serial": SerialExecutor,
}


def make_executor(name: str, network: Network, params: np.ndarray, *, batch_size: int,
                  threads: int = 1) -> Executor:
    """Create the executor ``name``, holding a copy of ``params``."""
    if name not in EXECUTORS:
        raise ConfigError(f"executor {name!r}: expected one of {', '.join(EXECUTORS)}")
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size}: expected a positive integer")
    if threads < 1:
        raise ConfigError(f"threads {threads}: expected a positive integer")
    return EXECUTORS[name](network, params, batch_size=batch_size, threads=threads)


__all__ = ["EXECUTORS", "Executor", "SerialExecutor", "make_executor"]
