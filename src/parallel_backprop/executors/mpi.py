"""The mpi executor: the mini-batch split across MPI ranks, gradients summed with Allreduce.

Data parallelism across processes and machines. Every rank holds a full
replica of the parameters and runs the same trainer with the same seed, so
every rank draws the same mini-batches. A step on a global batch of ``n``
rows, ``R`` ranks, ``T`` threads per rank::

    0. start      (once) rank 0's parameters are broadcast: every replica starts equal
    1. shard      rank r takes rows [start_r, stop_r) of the batch (shard_bounds:
                  contiguous, sizes differ by at most one, ranks n.. get none)
       threads    inside the rank, the threads executor's workers split those
                  rows again and write every layer's activations and deltas
    2. gradient   worker k writes its columns of s * g_r, g_r the rank's gradient SUM
                  (same flat layout as the parameters), s = lr / n with n the GLOBAL
                  batch: dW_l = s * a_{l-1}^T @ delta_l, s folded into the GEMM's alpha
    3. allreduce  ONE in-place Allreduce(SUM) of the flat buffer [s g_r | loss_r]: every
                  rank now holds s * (g_0 + ... + g_{R-1}) and the batch's loss sum
                  (non-blocking, polled by wait_for: a stalled rank ends the job after
                  --comm-timeout seconds, named, instead of hanging it)
    4. update     every rank: params -= that sum   (one pass; each worker a slice)

Other update rules (momentum, Adam...; SGD with weight decay too): s = 1 / n,
so the sum is the gradient MEAN, and in step 4 every rank applies the same
:func:`..optim.apply` to its workers' flat slices (cut at weight/bias
boundaries) of the parameters and the state; the replicas stay equal with
no more communication. Per-row sample weights: each rank its rows' weights.

Gradients are sums over rows, never means, so uneven shards (and empty ones
when the epoch's last batch has fewer rows than there are ranks) add up to
exactly the serial gradient; the only difference from a serial run is the
order of the float additions (results agree to ~1e-6 relative).

This class IS the threads executor (its workers, barrier, row and column
split, error handling) with one method replaced: ``_update``, where the
workers combine their deltas into the step (there: ``W -= s * a^T @ delta``
per column slice; here: gradient columns, Allreduce, update).

Why the gradient is written out here, when the threads executor folds the
update into its gradient product (``W -= s * a^T @ delta``, no gradient
buffer)? Because no rank may update before it has every other rank's
contribution: the sum must exist somewhere, and one flat buffer makes it one
collective call. The loss sum rides in one extra element at the end of that
buffer (in the parameters' dtype), so a step costs one collective, not two.

What that costs (measured on 2 cores, MPICH 5 shared memory, 2 ranks): the
in-place Allreduce of Net-1h's 814,091 float32 (3.3 MB) takes 0.33-0.35 ms,
2-3% of a 12-17 ms step at batch 512; Net-2h's 7.5 MB take 0.54-0.58 ms.
Overlapping it with the gradient products (per-layer Allreduces) could win
at most that here; and 99% of Net-1h's gradient is one layer (784 x 1024),
so overlap would first have to cut that layer's product into pieces. Not
done. Across machines the
Allreduce grows (Net-1h at 10 Gb/s: ~2.7 ms on 2 nodes, ~7.7 ms on 64):
docs/scaling.md models when that pays.

``predict`` is collective: every rank computes its shard of the rows and an
Allgatherv gives every rank all outputs, so evaluation runs in parallel
too. ``params`` needs no communication: the replicas are equal.

Only the caller's thread (worker 0) calls MPI, so MPI is started with
thread level "serialized" when this module starts it. A rank that fails must
not leave the others waiting in a collective forever (an MPI job in which one
process has exited and the others wait does not end by itself): ``world``
installs a ``sys.excepthook`` that prints the traceback with the rank and
calls ``MPI.COMM_WORLD.Abort(1)``, which ends every rank, and the command
line does the same for the errors it reports itself. A rank killed by a
signal is noticed by mpiexec, which then ends the others; a rank that stops
answering (SIGSTOP, a lost host) is noticed by ``wait_for``'s timeout.

mpi4py is imported only when an mpi executor is created or ``world`` is
called: importing ``mpi4py.MPI`` starts MPI, and that must not happen as a
side effect of importing this package.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from ..backprop import layer_gradient, product_operands
from ..errors import ConfigError, PbpError, install_hint
from ..interrupts import STOP_SIGNALS, Stopped, exit_status, note_received, signal_name
from ..network import Network
from ..optim import OptimizerConfig
from ..resources import usable_cores
from .base import Layout, OptimizerState
from .optimizing import HostOptimizer, check_weights
from .threads import ThreadsExecutor, check_batch_rows, shard_bounds

INSTALL_HINT = install_hint("mpi")

# Variables a process started by mpiexec (MPICH's Hydra, Intel MPI, Open MPI,
# PMIx launchers, Slurm's srun with PMI) finds in its environment.
_LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")


class MPIUnavailable(PbpError):
    """mpi4py, an MPI library or mpiexec is missing."""


class RankStalled(PbpError):
    """The other ranks sent nothing for ``--comm-timeout`` (``PBP_MPI_TIMEOUT``) seconds."""


# How long a rank waits for the others' gradients before it ends the job. A
# blocking Allreduce waits forever when one rank is stopped (SIGSTOP, a
# swapping or hung host), spinning at full CPU. Generous: a step, an
# evaluation or a checkpoint written by rank 0 must never come near it.
# ``--comm-timeout`` sets it for a run; PBP_MPI_TIMEOUT is its default.
TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_S = "PBP_MPI_TIMEOUT", 120.0
# Waiting: poll without pause this long (a healthy step's wait is shorter;
# MPI progresses only while it is called), then sleep between polls, the
# pause doubling up to its longest. Oversubscribed ranks (more ranks than
# cores on a host) never spin: the rank they wait for needs that core.
SPIN_S, FIRST_PAUSE_S, LONGEST_PAUSE_S = 0.05, 50e-6, 0.001
# After a timeout, how long the ranks that waited listen for each other, to
# tell which ranks are silent (stalled or lost) and name them.
ROLL_CALL_S, ROLL_CALL_TAG = 5.0, 7177

# A rank other than 0 that fails waits this long before it reports, so that an
# error every rank meets (the same command, the same input) is said once, by rank 0.
OTHER_RANKS_WAIT_S = 2.0

_comm_timeout: float | None = None     # --comm-timeout, when given
_spin_s = SPIN_S


def set_comm_timeout(seconds: float | None) -> None:
    """Use ``seconds`` (``--comm-timeout``) instead of PBP_MPI_TIMEOUT; None: the variable."""
    global _comm_timeout
    _comm_timeout = seconds


def mpi_timeout() -> float:
    """Seconds to wait for the other ranks: --comm-timeout, else ``PBP_MPI_TIMEOUT``, else 120."""
    if _comm_timeout is not None:
        return _comm_timeout
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"{TIMEOUT_VARIABLE}={text!r}: expected a number of seconds > 0")
    return seconds


def wait_for(request, timeout_s: float, missing: str) -> None:
    """Wait for a non-blocking MPI ``request``; :class:`RankStalled` after ``timeout_s``.

    Spins for ``SPIN_S`` (what a blocking call would do; not at all when the
    host is oversubscribed), then sleeps between polls so that a rank waiting
    for a stalled one does not burn a core. ``missing`` says what did not
    arrive, for the error line.
    """
    start = time.monotonic()
    pause = 0.0
    while not request.Test():
        waited = time.monotonic() - start
        if waited > timeout_s:
            raise RankStalled(f"{missing} for {timeout_s:g} s; a rank is stalled or its host "
                              f"is unreachable (the limit is --comm-timeout, default "
                              f"{TIMEOUT_VARIABLE} seconds)")
        if waited >= _spin_s:
            pause = min(LONGEST_PAUSE_S, max(FIRST_PAUSE_S, 2 * pause))
            time.sleep(pause)


_roll_calls: dict = {}      # communicator handle -> its duplicate for roll calls


def roll_call_comm(comm):
    """A duplicate of ``comm`` for roll calls, made once per communicator (collective then)."""
    key = comm.py2f()
    if key not in _roll_calls:
        _roll_calls[key] = comm.Dup()
    return _roll_calls[key]


def silent_ranks(comm, listen_s: float = ROLL_CALL_S) -> list[int]:
    """After a timeout: the ranks of ``comm`` from which nothing arrives within ``listen_s``.

    Every rank that timed out sends a one-byte message to every other and
    listens for theirs: ranks that waited like it answer (their own timeout
    comes within a step of this one's); a stopped rank, or one whose host is
    gone, does not. Nothing is waited for beyond ``listen_s``.
    """
    me = comm.Get_rank()
    others = [r for r in range(comm.Get_size()) if r != me]
    token = np.ones(1, np.int8)
    sends = [comm.Isend(token, dest=r, tag=ROLL_CALL_TAG) for r in others]
    boxes = {r: np.zeros(1, np.int8) for r in others}
    pending = {r: comm.Irecv(boxes[r], source=r, tag=ROLL_CALL_TAG) for r in others}
    deadline = time.monotonic() + listen_s
    while pending and time.monotonic() < deadline:
        pending = {r: req for r, req in pending.items() if not req.Test()}
        time.sleep(0.01)
    del sends                 # never waited for: a send to a stopped rank may not complete
    return sorted(pending)


def import_mpi():
    """``mpi4py.MPI`` (which starts MPI on first import), or a one-line error with the fix."""
    try:
        import mpi4py

        if "mpi4py.MPI" not in sys.modules:
            mpi4py.rc.thread_level = "serialized"   # only worker 0 calls MPI, one at a time
        from mpi4py import MPI
    except ImportError as exc:
        raise MPIUnavailable(
            f"executor 'mpi': mpi4py cannot be imported ({exc}); install it with "
            f"{INSTALL_HINT}") from None
    except RuntimeError as exc:     # mpi4py present, but no MPI library it can load
        raise MPIUnavailable(
            f"executor 'mpi': mpi4py found no usable MPI library ({exc}); install one with "
            f"{INSTALL_HINT}") from None
    return MPI


def world() -> tuple[int, int]:
    """``(rank, size)`` of ``COMM_WORLD``, starting MPI if needed.

    With more than one rank it also installs the abort-on-error hook, so that
    an exception on this rank ends the whole job instead of hanging it.
    """
    MPI = import_mpi()
    comm = MPI.COMM_WORLD
    if comm.Get_size() > 1:
        install_abort_hook()
    return comm.Get_rank(), comm.Get_size()


def distributed_rank() -> tuple[int, int] | None:
    """``(rank, size)`` when this process is one of several running MPI ranks, else None.

    Never starts MPI: a process that has not imported ``mpi4py.MPI`` is not a rank.
    """
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None or not MPI.Is_initialized() or MPI.Is_finalized():
        return None
    size = MPI.COMM_WORLD.Get_size()
    return (MPI.COMM_WORLD.Get_rank(), size) if size > 1 else None


def rank_label() -> str:
    """``"rank R of N (host H)"`` for this process, or ``""`` outside a job of several ranks."""
    where = distributed_rank()
    if where is None:
        return ""
    return f"rank {where[0]} of {where[1]} (host {socket.gethostname()})"


def abort_job(code: int = 1) -> None:
    """End every rank of the job now (``MPI_Abort``); does not return when running under MPI."""
    if distributed_rank() is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        # mpiexec stops forwarding output once it hears of the abort: give it
        # a moment to pass on the message (and traceback) just written.
        time.sleep(0.2)
        # MPI_Abort prints a line of its own ("application called MPI_Abort..."),
        # which says nothing the line above did not: the user sees one line.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        sys.modules["mpi4py.MPI"].COMM_WORLD.Abort(code)


_hook_installed = False


def install_abort_hook() -> None:
    """Make an uncaught exception on this rank print its traceback and abort every rank.

    Without it, a rank that raises exits (or waits in ``MPI_Finalize``) while
    the others wait in their next Allreduce, busy-polling, forever.
    Idempotent; chains to the hook that was installed before.
    """
    global _hook_installed
    if _hook_installed:
        return
    previous = sys.excepthook

    def abort_on_uncaught(kind, value, tb):
        where = rank_label()
        try:
            if where:
                sys.stderr.write(f"pbp: {where} failed with {kind.__name__}: {value}; "
                                 "aborting every rank\n")
            previous(kind, value, tb)
        except BaseException:                      # noqa: BLE001 - abort regardless
            traceback.print_exception(kind, value, tb)
        finally:
            abort_job(1)

    sys.excepthook = abort_on_uncaught
    _hook_installed = True


def check_ranks_agree(parts: dict[str, str]) -> None:
    """Stop the job before its first step unless every rank has the same ``parts``.

    ``parts``: what must agree (``"options"``, ``"data"``...) -> a text or
    fingerprint of it. One small allgather of a hash per part; rank 0 names
    the first rank that differs, and what differs, in a ConfigError (its
    abort then ends the job). Ranks that ran different command lines, or
    read different files under the same name, would otherwise train
    different models while summing their gradients, without a word.
    """
    comm = import_mpi().COMM_WORLD
    mine = {name: hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
            for name, text in parts.items()}
    every = comm.allgather((socket.gethostname(), mine, parts.get("environment")))
    for rank, (host, theirs, environment) in enumerate(every):
        differing = [name for name in parts if theirs.get(name) != every[0][1].get(name)]
        if not differing:
            continue
        if comm.Get_rank() == 0:
            versions = (f" ({environment} there, {every[0][2]} on rank 0)"
                        if "environment" in differing else "")
            raise ConfigError(
                f"rank {rank} of {len(every)} (host {host}) has other "
                f"{' and '.join(differing)} than rank 0{versions}: every rank must run the "
                "same command on the same data in the same Python environment; check each "
                "host's command line, data files and installed packages")
        comm.Barrier()      # never passed: rank 0's error aborts the job


class MPIExecutor(ThreadsExecutor):
    """Global mini-batch shards on MPI ranks, ``threads`` workers inside each rank.

    Every rank creates it with the same arguments (the constructor, ``step``
    and ``predict`` are collective).

    Parameters
    ----------
    network : Network
    params : (n_params,) array
        Rank 0's copy is broadcast to every rank; dtype float32 or float64.
    batch_size : int
        The largest GLOBAL batch ``step`` will be given; at least the rank count.
    threads : int
        Workers inside each rank (the threads executor's machinery).
    comm : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD``.
    """

    name = "mpi"
    requires = ("mpi4py",)
    extra = "mpi"
    distributed = True

    @classmethod
    def layout(cls, cores: int, blas_threads: int | None = None) -> Layout:
        """A rank per core, one worker and one BLAS thread in each."""
        return Layout(ranks=cores, workers=1, blas_threads=1, threads=1)

    @classmethod
    def unavailable(cls) -> str | None:
        """Missing mpi4py, or no mpiexec to start ranks with (none needed under one)."""
        reason = super().unavailable()
        if reason is None and not under_mpiexec():
            try:
                find_mpiexec()
            except PbpError as exc:
                reason = str(exc)
        return reason

    def __init__(self, network: Network, params: np.ndarray, *, batch_size: int,
                 threads: int = 1, comm=None, precision: str = "fp32",
                 optimizer: OptimizerConfig | None = None,
                 optimizer_state: OptimizerState | None = None):
        MPI = import_mpi()
        if comm is None:
            world()                                   # the abort hook, for several ranks
            comm = MPI.COMM_WORLD
        self._comm, self._sum, self._IN_PLACE = comm, MPI.SUM, MPI.IN_PLACE
        self.timeout_s = mpi_timeout()
        self.rank, self.ranks = comm.Get_rank(), comm.Get_size()
        self._meet(comm, threads)
        if self.ranks > batch_size:
            raise ConfigError(
                f"{self.ranks} MPI ranks for a batch size of {batch_size}: expected at most "
                f"{batch_size} ranks, so that each has a sample of every full batch; use "
                "fewer ranks or a larger --batch-size")
        P = network.n_params
        # What is reduced, (P + 1,): [s * g_r | loss_r], the rank's scaled gradient sum
        # in the parameters' layout (self._step, its views per layer), then its loss sum.
        # Made before the threads executor's setup, whose optimizer uses it.
        self._reduced = np.empty(P + 1, np.asarray(params).dtype)
        self._step = self._reduced[:P]
        self._step_layers = network.layers(self._step)
        # Each rank's workspace holds its largest shard, ceil(batch / ranks) rows.
        super().__init__(network, params, batch_size=-(-batch_size // self.ranks),
                         threads=threads, precision=precision, optimizer=optimizer,
                         optimizer_state=optimizer_state)
        self.global_batch_size = batch_size
        for replicated in (self._params, self._optimizer.state):  # 0. every replica equal
            if replicated.size:
                self._wait(comm.Ibcast(replicated, root=0), "no starting parameters")
        self._ws.refresh()                            # the bf16 copy of rank 0's parameters
        # Worker k applies flat slice [cut_k, cut_k+1) of the reduced step.
        cuts = self._flat_cuts
        self._update_params = [self._params[cuts[k]:cuts[k + 1]] for k in range(self._workers)]
        self._update_steps = [self._step[cuts[k]:cuts[k + 1]] for k in range(self._workers)]
        self._mpi_type = MPI.DOUBLE if self._params.dtype == np.float64 else MPI.FLOAT

    def _meet(self, comm, threads: int) -> None:
        """Learn every rank's host and cores; say so, and stop spinning, when oversubscribed.

        ``self.hosts[r]`` names rank r's host in error lines. A second
        communicator carries the roll call after a timeout, apart from the
        collectives that timed out.
        """
        global _spin_s
        every = comm.allgather((socket.gethostname(), usable_cores()))
        self.hosts = [host for host, _ in every]
        self._roll = roll_call_comm(comm)
        crowded = sorted({(host, self.hosts.count(host), cores) for host, cores in every
                          if self.hosts.count(host) * threads > cores})
        self._crowded = bool(crowded)
        if crowded:
            _spin_s = 0.0
            host, ranks, cores = crowded[0]
            if self.rank == 0:
                also = f" (and {len(crowded) - 1} more hosts)" if len(crowded) > 1 else ""
                sys.stderr.write(
                    f"pbp: warning: {ranks} ranks x {threads} thread{'s' * (threads > 1)} on "
                    f"host {host}{also}, which has {cores} cores: waiting ranks sleep instead "
                    "of spinning, but fewer ranks (or threads) would train faster\n")

    def _barrier_may_spin(self, workers: int) -> bool:
        """Not where this host's ranks' workers outnumber its cores (see :meth:`_meet`)."""
        return not self._crowded and super()._barrier_may_spin(workers)

    def _wait(self, request, what: str) -> None:
        """``wait_for`` the request; after a timeout, name the silent ranks and their hosts.

        Of the ranks that answer the roll call, the lowest reports (one line
        for the job); the others give it time to end the job first.
        """
        try:
            wait_for(request, self.timeout_s, what)
        except RankStalled:
            silent = silent_ranks(self._roll, min(ROLL_CALL_S, self.timeout_s))
            named = ", ".join(f"rank {r} (host {self.hosts[r]})" for r in silent)
            answering = [r for r in range(self.ranks) if r not in silent]
            if self.rank != answering[0]:
                time.sleep(ROLL_CALL_S + 5)
            raise RankStalled(
                f"{what} from {named or 'the other ranks'} for {self.timeout_s:g} s: "
                f"{'it is' if len(silent) == 1 else 'they are'} stalled or the host is "
                f"unreachable (the limit is --comm-timeout, default {TIMEOUT_VARIABLE}, "
                f"{self.timeout_s:g} s)") from None

    @property
    def is_root(self) -> bool:
        """Whether this rank prints and writes files (rank 0)."""
        return self.rank == 0

    def step(self, x: np.ndarray, y: np.ndarray, lr: float,
             weights: np.ndarray | None = None) -> float:
        n = check_batch_rows(x, self.global_batch_size)
        weights = check_weights(weights, n)
        start, stop = shard_bounds(n, self.ranks, self.rank)      # 1. this rank's rows
        self._post_step(x[start:stop], y[start:stop],
                        None if weights is None else weights[start:stop], lr, n)
        return float(self._reduced[-1])                         # the global loss sum

    def predict(self, x: np.ndarray) -> np.ndarray:
        n, width = x.shape[0], self.network.sizes[-1]
        out = np.empty((n, width), self._params.dtype)
        bounds = [shard_bounds(n, self.ranks, r) for r in range(self.ranks)]
        start, stop = bounds[self.rank]
        out[start:stop] = super().predict(x[start:stop])
        counts = [(b - a) * width for a, b in bounds]
        displacements = [a * width for a, _ in bounds]
        self._wait(self._comm.Iallgatherv(self._IN_PLACE,
                                          [out, (counts, displacements), self._mpi_type]),
                   "no outputs")
        return out

    def _host_optimizer(self, optimizer: OptimizerConfig | None,
                        state: OptimizerState | None) -> HostOptimizer:
        """The update rule over the reduced gradient: nothing folds, every rank applies it."""
        return HostOptimizer(self.network, self._params, optimizer, state, fold_sgd=False,
                             gradient=self._step)

    def _update(self, k: int, x: np.ndarray, n: int, lr: float, batch: int, t: int) -> None:
        """Worker k: its columns of s * g_r, then (after the Allreduce) its slice of the update.

        Replaces the threads executor's update, its only change to that
        executor's step. ``n`` is this rank's row count (0 when the batch has
        fewer rows than there are ranks), ``batch`` the global batch; s is
        lr / batch for plain SGD, 1 / batch (the mean) for the other rules.
        """
        plain = self._optimizer.config.is_plain_sgd
        scale = (lr if plain else 1.0) / batch
        if n == 0:                                    # no rows on this rank this step
            self._update_steps[k].fill(0)
        else:                                         # 2. gradient columns, K = n rows
            ws = self._ws
            for l, (grad_weights, grad_bias) in enumerate(self._step_layers):
                c0, c1 = self._columns[l][k]
                if c0 < c1:
                    a_prev, delta = product_operands(ws, x, l, n)
                    layer_gradient(a_prev, delta[:, c0:c1], grad_weights[:, c0:c1],
                                   grad_bias[c0:c1], scale, ws.bias_rows(l, n)[:, c0:c1])
        self._barrier.wait()                          # g_r and every worker's loss written
        if k == 0:                                    # 3. one collective per step
            self._reduced[-1] = sum(self._losses[:min(n, self._workers)])
            self._wait(self._comm.Iallreduce(self._IN_PLACE, self._reduced, op=self._sum),
                       "no gradient")
        self._barrier.wait()                          # g is the global sum on this rank
        if plain:                                     # 4. the update
            np.subtract(self._update_params[k], self._update_steps[k],
                        out=self._update_params[k])
            self._ws.refresh(*self._flat_cuts[k:k + 2])
        else:
            self._optimizer.apply_flat(self._update_segments[k], lr, t, self._ws)


# ---- starting ranks ------------------------------------------------------------


def under_mpiexec() -> bool:
    """Whether this process was started by mpiexec (or another MPI launcher)."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


def find_mpiexec() -> str:
    """The mpiexec beside the running Python (the mpich wheel puts it there), else on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("mpiexec")
    if found is None:
        raise MPIUnavailable(
            f"--ranks: no mpiexec next to {sys.executable} or on PATH; install one with "
            f"{INSTALL_HINT}")
    return found


def check_launch(ranks: int, batch_size: int) -> str:
    """Validate a ``--ranks`` request before anything starts; returns the mpiexec to use."""
    if ranks > batch_size:
        raise ConfigError(
            f"--ranks {ranks}: more ranks than the batch size {batch_size}; expected at most "
            f"{batch_size} (each rank needs at least one sample of every full batch)")
    if under_mpiexec():
        raise ConfigError(
            f"--ranks {ranks}: this command already runs under mpiexec; drop --ranks "
            "(mpiexec -n sets the number of ranks)")
    if find_spec("mpi4py") is None:
        raise MPIUnavailable(f"--ranks: mpi4py is not installed; install it with {INSTALL_HINT}")
    mpi_timeout()                 # a bad PBP_MPI_TIMEOUT: one line here, not one per rank
    return find_mpiexec()


def without_ranks(argv: list[str]) -> list[str]:
    """``argv`` without ``--ranks N`` and ``--hostfile F`` (or ``--ranks=N``...): the launcher's."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in LAUNCHER_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{name}=" for name in LAUNCHER_OPTIONS)):
            out.append(arg)
    return out


LAUNCHER_OPTIONS = ("--ranks", "--hostfile", "--restarts")
# How long a host may take to answer the check before the launch (ssh's own
# connection timeout is set below it).
HOST_CHECK_S, SSH_CONNECT_S = 20.0, 10
HOST_CHECK = ("from parallel_backprop.cli.runs import environment; print(environment())")


def hostfile_slots(path: Path) -> dict[str, int]:
    """Host -> ranks of a Hydra hostfile (``host[:ranks]`` per line, ``#`` comments); one
    line naming the file when it cannot be read or names no host."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--hostfile {path}: cannot be read ({getattr(exc, 'strerror', exc)})"
                          ) from None
    slots: dict[str, int] = {}
    for line in lines:
        host, _, count = line.split("#")[0].strip().partition(":")
        if host:
            slots[host] = slots.get(host, 0) + (int(count) if count.strip().isdigit() else 1)
    if not slots:
        raise ConfigError(f"--hostfile {path}: names no host; expected lines `host:ranks`")
    return slots


def hostfile_hosts(path: Path) -> list[str]:
    """The hosts of a hostfile, in its order (see :func:`hostfile_slots`)."""
    return list(hostfile_slots(path))


def remote_command(host: str) -> list[str]:
    """How mpiexec will reach ``host``: its launcher (HYDRA_LAUNCHER_EXEC, else ssh)."""
    launcher = os.environ.get("HYDRA_LAUNCHER_EXEC")
    if launcher:
        return [launcher, "-x", host]
    return ["ssh", "-x", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_S}", host]


def check_hosts(path: Path, here: str) -> None:
    """Before a launch on ``path``'s hosts: each answers and has this Python environment.

    Asks every host at once, through the launcher mpiexec will use, to
    import this package with the same Python and print its
    :func:`..cli.runs.environment`; the first host that does not answer,
    cannot run it, or differs from ``here`` ends the launch in one line.
    """
    hosts = hostfile_hosts(path)
    with ThreadPoolExecutor(max_workers=min(32, len(hosts))) as pool:
        answers = list(pool.map(ask_host, hosts))
    for host, (status, out, err) in zip(hosts, answers):
        said = (err.strip().splitlines() or ["no answer"])[-1]
        if status is None or status == 255:
            raise ConfigError(f"--hostfile {path}: host {host} does not answer ({said}); "
                              "start it, or remove it from the hostfile")
        if status != 0:
            raise ConfigError(f"--hostfile {path}: host {host} cannot run {sys.executable} "
                              f"with parallel_backprop ({said}); install the same environment "
                              "at the same path on every host")
        if out.strip() != here:
            raise ConfigError(f"--hostfile {path}: host {host} has another Python environment "
                              f"({out.strip()} there, {here} here); install the same versions "
                              "on every host")


def ask_host(host: str) -> tuple[int | None, str, str]:
    """(exit status or None on a timeout, stdout, stderr) of the environment check on ``host``."""
    command = [*remote_command(host), sys.executable, "-c", shlex.quote(HOST_CHECK)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=HOST_CHECK_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "", f"no answer within {HOST_CHECK_S:g} s"
    except OSError as exc:
        return None, "", f"{command[0]}: {exc.strerror}"
    return done.returncode, done.stdout, done.stderr


def launch_with_restarts(mpiexec: str, ranks: int, argv: list[str], hostfile: Path | None,
                         restarts: int, folder: Path | None) -> int:
    """:func:`launch`; when the job fails, resume it from ``folder`` up to ``restarts`` times.

    Not after a stop (Ctrl-C, SIGTERM: exit 130 or 143) nor before a first
    checkpoint. Each restart first asks the hostfile's hosts again and
    leaves out those that do not answer (a lost host), on as many ranks as
    the others have slots for (at most ``ranks``); the batch is global, so
    the resumed run takes the same steps. One line says each restart.
    """
    from ..checkpoint import checkpoint_paths

    status = launch(mpiexec, ranks, argv, hostfile)
    for attempt in range(1, restarts + 1):
        if status in (0, 130, 143) or folder is None or not checkpoint_paths(folder):
            return status
        where = ""
        if hostfile is not None:
            hostfile, ranks = surviving_hosts(hostfile, ranks, folder)
            where = f" on {', '.join(hostfile_hosts(hostfile))}"
        sys.stderr.write(f"pbp: the job ended with status {status}; restart {attempt} of "
                         f"{restarts} from the last checkpoint in {folder}, {ranks} "
                         f"rank{'s' * (ranks != 1)}{where}\n")
        sys.stderr.flush()
        resume = [] if "--resume" in argv else ["--resume", str(folder)]
        status = launch(mpiexec, ranks, [*argv, *resume], hostfile)
    return status


def surviving_hosts(hostfile: Path, ranks: int, folder: Path) -> tuple[Path, int]:
    """A hostfile of ``hostfile``'s hosts that still answer, and the ranks they take.

    Written next to the checkpoints as ``hosts.restart`` (the checkpoints
    leave other names alone); a ConfigError when no host answers.
    """
    slots = hostfile_slots(hostfile)
    with ThreadPoolExecutor(max_workers=min(32, len(slots))) as pool:
        answers = dict(zip(slots, pool.map(ask_host, slots)))
    alive = {host: n for host, n in slots.items() if answers[host][0] == 0}
    if not alive:
        raise ConfigError(f"--restarts: no host of {hostfile} answers any more; nothing to "
                          "restart on")
    path = Path(folder) / "hosts.restart"
    path.write_text("".join(f"{host}:{n}\n" for host, n in alive.items()))
    return path, min(ranks, sum(alive.values()))


# After a stop signal, how long the ranks may take to finish their step, write
# a checkpoint and stop, before the launcher kills them.
GRACE_S = 30.0


def launch(mpiexec: str, ranks: int, argv: list[str], hostfile: Path | None = None) -> int:
    """Run ``pbp`` with ``argv`` (minus ``--ranks``) on ``ranks`` ranks; its exit status.

    On this machine, or on ``hostfile``'s hosts (mpiexec ``-f``).

    Each rank gets one BLAS thread unless the environment says otherwise (the
    executors pin BLAS anyway; this keeps ranks x cores idle OpenBLAS threads
    from being started). mpiexec runs in a session of its own, so that a
    Ctrl-C or SIGTERM sent to this launcher reaches it exactly once (we
    forward it; mpiexec passes it on to every rank, and rank 0 stops after a
    checkpoint and says where) and so that everything it started can be
    killed together: after a second signal, after ``GRACE_S`` seconds, or
    when this process fails. On Linux mpiexec also gets SIGTERM when this
    process dies, even by SIGKILL (``PR_SET_PDEATHSIG``): no rank outlives
    its launcher.
    """
    hosts = ["-f", str(hostfile)] if hostfile is not None else []
    command = [mpiexec, *hosts, "-n", str(ranks), sys.executable, "-m", "parallel_backprop.cli",
               *without_ranks(argv)]
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                               start_new_session=True, preexec_fn=_terminate_with_parent())
    try:
        with _StopForwarder(process) as stops:
            return stops.wait()
    finally:
        _kill_session(process)


class _StopForwarder:
    """While mpiexec runs: Ctrl-C and SIGTERM go to it; a second one kills its session.

    Used as a context manager, which installs the handlers and puts the
    previous ones back.
    """

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.signum: int | None = None     # the first stop signal, once one came
        self.since = 0.0                   # when it came
        self.killed = ""                   # why the session was killed, once it was
        self._previous: dict = {}

    def __enter__(self) -> "_StopForwarder":
        self._previous = {signum: signal.signal(signum, self._forward)
                          for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _forward(self, signum, frame) -> None:
        note_received(signum)
        if self.signum is not None:
            self.killed = f"stopped by {signal_name(signum)} twice; the ranks were killed"
            _kill_session(self.process, wait=False)
            return
        self.signum, self.since = signum, time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signum)

    def wait(self) -> int:
        """mpiexec's exit status; after a stop signal, 128 + its number (rank 0 said where).

        Raises :class:`~..interrupts.Stopped` when the ranks had to be killed.
        """
        while True:
            try:
                status = self.process.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if self.signum is not None and time.monotonic() - self.since > GRACE_S:
                    self.killed = (f"stopped by {signal_name(self.signum)}; the ranks had "
                                   f"not stopped {GRACE_S:g} s later and were killed")
                    _kill_session(self.process)
        if self.killed:
            raise Stopped(self.killed, self.signum)
        return status if self.signum is None else exit_status()


def _kill_session(process: subprocess.Popen, wait: bool = True) -> None:
    """SIGKILL mpiexec, its proxies and its ranks, unless mpiexec has ended."""
    from ..harness.process import kill_tree     # not at import: harness imports executors

    if process.poll() is None:
        kill_tree(process.pid)
        if wait:
            process.wait()


def _terminate_with_parent():
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()
    PR_SET_PDEATHSIG = 1

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:       # the parent died before the line above
            os._exit(1)
    return arm
