"""Signals that ask a run to stop: Ctrl-C (SIGINT) and SIGTERM, treated alike.

SIGTERM is what schedulers (Slurm, Kubernetes, systemd) and
``Popen.terminate()`` send before they kill; a run that ignores it loses
its work. In the command line SIGTERM raises :class:`Stopped`, a
``KeyboardInterrupt``, so every place that already cleans up after Ctrl-C
(a checkpoint written at the next step boundary, bench and study writing
what they measured, their worker processes killed) does the same for it.
The exit status tells the two apart, as a shell does: 130 and 143.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_last: int | None = None   # the stop signal this process received last, if any


class Stopped(KeyboardInterrupt):
    """A stop signal other than Ctrl-C arrived (Python turns Ctrl-C into KeyboardInterrupt)."""

    def __init__(self, message: str = "", signum: int = signal.SIGTERM):
        super().__init__(message)
        self.signum = signum


def signal_name(signum: int) -> str:
    """``Ctrl-C`` for SIGINT, else the signal's name (``SIGTERM``)."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def note_received(signum: int | None) -> None:
    """Remember that ``signum`` asked this process to stop (for its exit status)."""
    global _last
    _last = signum


def exit_status() -> int:
    """The exit status of a process stopped by a signal: 128 + the last one received."""
    return 128 + (_last if _last is not None else signal.SIGINT)


def _raise_stopped(signum: int, frame) -> None:
    note_received(signum)
    raise Stopped(f"stopped by {signal_name(signum)}", signum)


def _note_interrupt(signum: int, frame) -> None:
    note_received(signum)
    signal.default_int_handler(signum, frame)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Stopped` and Ctrl-C is remembered.

    Signals another part of the program chose to ignore stay ignored (MPI
    ranks other than 0 leave stopping to rank 0). Off the main thread,
    where handlers cannot be installed, nothing changes. The handlers found
    are put back at the end.
    """
    note_received(None)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum, handler in ((signal.SIGINT, _note_interrupt),
                                (signal.SIGTERM, _raise_stopped)):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def ignore_stop_signals() -> None:
    """Ignore Ctrl-C and SIGTERM in this process (an MPI rank that leaves them to rank 0)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


__all__ = ["STOP_SIGNALS", "Stopped", "exit_status", "ignore_stop_signals", "note_received",
           "signal_name", "stop_on_signals"]
