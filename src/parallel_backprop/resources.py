"""What training a network costs a machine (host memory, and the check that it fits),
and the cores this process may use.

Asked before anything is allocated, so that an absurd network fails in a
second with a one-line error instead of being killed by the OS.
"""

from __future__ import annotations

import os

from .errors import ConfigError, PbpError
from .network import Network


def training_bytes(network: Network, batch: int, threads: int = 1) -> int:
    """About how many bytes of host memory training ``network`` takes, data excluded.

    The parameters twice (the caller's and the executor's copy), one
    gradient buffer per worker, and per worker three activation-sized
    buffers (activations, deltas, scratch) of ``batch`` rows (an upper bound:
    the threads executor gives each worker batch / threads rows).
    """
    width = sum(network.sizes[1:])
    return 4 * (network.n_params * (2 + threads) + 3 * threads * batch * width
                + 2 * batch * (network.sizes[0] + network.sizes[-1]))


def prediction_bytes(network: Network, batch: int) -> int:
    """About how many bytes of host memory predicting with ``network`` takes, inputs excluded.

    The parameters twice (the caller's and the executor's copy) and the
    buffers of one worker's pass over ``batch`` rows, as training counts them.
    """
    return training_bytes(network, batch, threads=1) - 4 * network.n_params


def prediction_batch(network: Network, batch: int) -> int:
    """The largest batch, at most ``batch``, whose prediction buffers fit in memory (at least 1).

    A wide network predicts in smaller batches rather than failing: the
    outputs are the same, and a model too large even for one row is refused
    where it is loaded.
    """
    available = physical_memory()
    while available is not None and batch > 1 and prediction_bytes(network, batch) > available:
        batch //= 2
    return batch


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (all of them where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """How many CPUs this process may run on."""
    return len(usable_cpus())


def physical_memory() -> int | None:
    """Bytes of RAM of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def check_fits_in_memory(network: Network, batch: int, threads: int = 1) -> None:
    """Refuse, before allocating anything, a network that cannot fit in this machine's RAM.

    An absurd ``--net 784-100000000-10`` would otherwise ask the OS for
    hundreds of GB and get killed (or swap for an hour) instead of failing.
    """
    check_allocation(
        training_bytes(network, batch, threads),
        f"net {network.spec} ({network.n_params:,} parameters) at batch {batch} "
        f"with {threads} worker(s)",
        hint="use smaller layers, a smaller batch or fewer threads")


def check_allocation(nbytes: int, what: str, error: type[PbpError] = ConfigError,
                     hint: str = "") -> None:
    """Refuse, before allocating it, an amount of memory this machine does not have.

    Every size read from a file or an option (an array header, an IDX
    header, a model's architecture) is checked here before the memory is
    asked for: a forged header would otherwise end in the OS killing the
    process, or in minutes of swapping, instead of a one-line error.

    ``what`` names the input and what it holds ("x.npy: an array of shape
    (10, 784) of float32"); the message reads "<what> needs about N GiB, more
    than this machine's M GiB of memory[; <hint>]", raised as ``error``.
    """
    available = physical_memory()
    if available is not None and nbytes > available:
        raise error(f"{what} needs about {_amount(nbytes)}, more than this machine's "
                    f"{_amount(available)} of memory" + (f"; {hint}" if hint else ""))


def _amount(nbytes: int) -> str:
    """Bytes in GiB, or in MiB below one GiB (so that no size reads as 0.0 GiB)."""
    if nbytes < 2**30:
        return f"{nbytes / 2**20:,.1f} MiB"
    return f"{nbytes / 2**30:,.1f} GiB"
