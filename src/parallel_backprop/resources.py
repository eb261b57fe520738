"""What training a network costs a machine: host memory, and the check that it fits.

Asked before anything is allocated, so that an absurd network fails in a
second with a one-line error instead of being killed by the OS.
"""

from __future__ import annotations

import os

from .errors import ConfigError
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
    needed, available = training_bytes(network, batch, threads), physical_memory()
    if available is not None and needed > available:
        raise ConfigError(
            f"net {network.spec} ({network.n_params:,} parameters) at batch {batch} "
            f"with {threads} worker(s) needs about {needed / 2**30:,.1f} GiB, more than this "
            f"machine's {available / 2**30:,.1f} GiB of memory; use smaller layers, "
            "a smaller batch or fewer threads")
