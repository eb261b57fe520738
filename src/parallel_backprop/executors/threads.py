"""The threads executor: the mini-batch split across CPU threads (the seed's Algorithm 5).

Data parallelism on one machine. A step on ``n`` rows with ``T`` workers
sharing one full-batch workspace::

    1. rows       worker k takes rows [start_k, stop_k) of the batch, contiguous,
                  sizes differing by at most one (T > n: workers n.. get none):
                  forward and every layer's delta for its rows, into ITS rows
                  of the shared activations and deltas; the loss of its rows
       barrier    every row of every delta is written (and W is no longer read)
    2. columns    worker k owns columns C_k of every layer's output:
                  W_l[:, C_k] -= lr/n * a_{l-1}^T @ delta_l[:, C_k]   (one GEMM, beta = 1)
                  b_l[C_k]    -= lr/n * column sums of delta_l[:, C_k]
                  (other update rules: the gradient mean of those columns into a
                  flat buffer, GEMM with beta = 0, then the rule on those columns
                  in one compiled pass; without the compiled module, a third
                  barrier and the rule on worker k's flat range; see .optimizing)

Per-row sample weights are sharded with the rows and scale each worker's
output deltas (:func:`..backprop.deltas`).

The partial gradients of the seed's thread-batches are still summed, but
inside the update GEMM: its inner dimension runs over all n rows, the shards
one after another, so the "reduction" costs no pass of its own. Compared with
each worker writing a full gradient for its shard and then summing T of them
(what this executor did first), it writes no gradient at all, reads the
parameters once instead of T + 2 times, and the update GEMM works on the
whole batch (K = n, not n / T). Measured on 2 cores, Net-1h, batch 128: that
version took ~3.3 ms per step against ~5.1 ms serial (1.5x); its reduction
and update alone were ~0.19 ms and its gradient GEMMs ~10% slower than the
serial ones for their short K.

Every product goes through :func:`..gemm.gemm`, which drops the GIL for
the whole BLAS call and updates column slices of W in place; the
element-wise work (activations, f', sums) is NumPy ufuncs on large arrays,
which drop the GIL too. What remains under the GIL is ~40 Python-level calls
per worker per step.

Each parameter is written by exactly one GEMM over the batch in a fixed
order, so a run is bit-for-bit reproducible for a given seed and T, and
T = 1 performs exactly the serial executor's operations. (Different T give
results equal up to rounding: BLAS blocks the products differently.)

Threads, not processes: the caller's thread is worker 0; T - 1 threads are
started once in ``__init__`` and wait on one cyclic ``threading.Barrier``.
Nothing is allocated per step but a few small Python objects (views, ctypes
arguments, the barrier's waiter locks); the row views of the workspace are
made once per distinct batch length (the full batch and the epoch's last).

The step costs two barrier crossings: "go" and "deltas written". The caller
returns as soon as its own columns are updated; the other workers finish
theirs while the trainer gathers the next batch, and the next "go" (which
every worker reaches only after its update) orders it before the next
forward pass. ``params`` and ``predict`` wait for it the same way.

BLAS is pinned to one thread per worker for the executor's lifetime (T
workers x 1 BLAS thread = T cores). The limit (:class:`..gemm.blas_thread_limit`)
is process-wide, which is what we want; ``close`` restores it. The hybrid executor is this
class with more BLAS threads per worker, the blas executor this class with
one worker.

A worker that raises aborts the barrier; the caller's ``step`` (or
``predict``, ``params``) re-raises that exception instead of hanging, and
the executor is then unusable. ``close`` stops and joins the threads and is
idempotent.
"""

from __future__ import annotations

import threading

import numpy as np

from ..backprop import Workspace, deltas, forward
from ..errors import ConfigError
from ..gemm import blas_thread_limit
from ..network import Network
from ..optim import OPTIMIZERS, OptimizerConfig
from ..precision import PRECISIONS
from .base import Executor, Layout, OptimizerState
from .optimizing import HostOptimizer, check_weights

# Jobs posted to the workers (the first item of ``_job``).
_STEP, _PREDICT, _SYNC, _STOP = "step", "predict", "sync", "stop"

# Column slices start on 64-byte boundaries (16 float32), so no two workers
# write the same cache line of W during the update.
COLUMN_ALIGN = 16


class ExecutorStopped(RuntimeError):
    """The executor was closed, or a worker failed earlier; it cannot run a step."""


def check_batch_rows(x: np.ndarray, batch_size: int) -> int:
    """The rows of a step's batch ``x``, refused unless 1 to ``batch_size``."""
    n = x.shape[0]
    if not 1 <= n <= batch_size:
        raise ConfigError(f"batch of {n} rows: expected 1 to {batch_size} (the batch size)")
    return n


def shard_bounds(n: int, parts: int, k: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of part ``k`` when ``n`` rows are split in ``parts``.

    Contiguous, in order, sizes ``n // parts`` or one more (the first
    ``n % parts`` parts take the extra row); parts ``n..`` are empty when
    ``parts > n``.
    """
    base, extra = divmod(n, parts)
    start = k * base + min(k, extra)
    return start, start + base + (k < extra)


class ThreadsExecutor(Executor):
    """Mini-batch shards on ``threads`` CPU threads, partial gradients summed in a fixed order.

    Parameters
    ----------
    network : Network
    params : (n_params,) array
        Copied; the executor's dtype follows it (float32 or float64).
    batch_size : int
        The largest batch ``step`` will be given.
    threads : int
        Workers, the caller's thread included. More workers than rows in a
        batch is allowed: the extra workers sit that step out.
    blas_threads : int
        BLAS threads inside each worker; 1 here, more for ``hybrid``.
    optimizer, optimizer_state : optional
        The update rule (default plain SGD) and the state to continue from.
    """

    name = "threads"
    optimizers = OPTIMIZERS
    precisions = PRECISIONS

    @classmethod
    def layout(cls, cores: int, blas_threads: int | None = None) -> Layout:
        """A worker per core, BLAS pinned to one thread in each."""
        return Layout(ranks=None, workers=cores, blas_threads=1, threads=cores)

    def __init__(self, network: Network, params: np.ndarray, *, batch_size: int,
                 threads: int = 1, blas_threads: int = 1, precision: str = "fp32",
                 optimizer: OptimizerConfig | None = None,
                 optimizer_state: OptimizerState | None = None):
        super().__init__(network, params, batch_size=batch_size, threads=threads)
        self.precision = precision
        T = self._workers = threads
        self.blas_threads = blas_threads
        self._params = np.array(params, copy=True)                  # (P,)
        self._layers = network.layers(self._params)
        self._optimizer = self._host_optimizer(optimizer, optimizer_state)
        self._ws = Workspace(network, batch_size, self._params.dtype,  # shared, batch rows
                             precision, self._params)
        # The step's inputs, copied (each worker its rows) into one of two
        # buffers in turn: the first layer's update reads every row of the
        # input after ``step`` has returned, when the caller may already be
        # writing its next batch; the next step's "go" orders the reuse.
        self._inputs = [np.empty((batch_size, network.sizes[0]), self._params.dtype)
                        for _ in range(2)]
        self._turn = 0
        self._row_shards: dict[int, list[Workspace]] = {}           # n -> T row views
        # Worker k's columns [c0, c1) of each layer's output, W and b views of them.
        # Cuts are counted from the right, so a layer narrower than 16 columns
        # per worker (the output layer) goes to worker 0, the caller: it
        # finishes first, as the others start their part of a step a wake-up later.
        self._columns = []
        for weights, bias in self._layers:
            width = bias.shape[0]
            cuts = [max(0, width - round((T - k) * width / T / COLUMN_ALIGN) * COLUMN_ALIGN)
                    for k in range(T)]
            cuts[0] = 0
            cuts.append(width)
            self._columns.append([(cuts[k], cuts[k + 1]) for k in range(T)])
        # Worker k's flat range [cut_k, cut_k+1) of the parameters, for updates that
        # come after every gradient column is written (mpi; the rules other than SGD).
        P = self._params.size
        self._flat_cuts = [min(P, round(k * P / T / COLUMN_ALIGN) * COLUMN_ALIGN)
                           for k in range(T)] + [P]
        self._update_segments = [self._optimizer.segments(*self._flat_cuts[k:k + 2])
                                 for k in range(T)]
        self._losses = [0.0] * T

        self._job: tuple = (_SYNC,)
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._closed = False
        self._barrier = threading.Barrier(T)
        self._blas_limit = blas_thread_limit(blas_threads)
        self._pool = [threading.Thread(target=self._worker, args=(k,),
                                       name=f"pbp-{self.name}-{k}", daemon=True)
                      for k in range(1, T)]
        for thread in self._pool:
            thread.start()

    # ---- the public contract -------------------------------------------------

    def step(self, x: np.ndarray, y: np.ndarray, lr: float,
             weights: np.ndarray | None = None) -> float:
        n = check_batch_rows(x, self.batch_size)
        self._post_step(x, y, check_weights(weights, n), lr, n)
        return sum(self._losses[:min(n, self._workers)])  # worker order: reproducible

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.network.sizes[-1]), self._params.dtype)
        if x.shape[0]:
            self._run((_PREDICT, x, out))
        return out

    def params(self) -> np.ndarray:
        self._run((_SYNC,))   # the last step's update may still be running on workers
        return self._params.copy()

    def optimizer_state(self) -> OptimizerState:
        self._run((_SYNC,))   # as for params: the last update may still be running
        return self._optimizer.snapshot()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._error is None:
            self._job = (_STOP,)
            try:
                self._barrier.wait()
            except threading.BrokenBarrierError:
                pass
        for thread in self._pool:
            thread.join()
        if self._blas_limit is not None:
            self._blas_limit.restore()
            self._blas_limit = None

    # ---- what every worker runs ----------------------------------------------

    def _run(self, job: tuple) -> None:
        """Post ``job``, do the caller's part as worker 0, re-raise any worker's error."""
        if self._closed or self._error is not None:
            raise ExecutorStopped(
                f"the {self.name} executor is "
                + ("closed" if self._error is None else "stopped after a worker failed")
            ) from self._error
        self._job = job
        try:
            self._barrier.wait()             # go: every worker has finished the last job
            self._do(0, job)
        except threading.BrokenBarrierError:
            if self._error is None:          # not expected: only _fail aborts, after recording
                raise
            raise self._error from None      # the worker's exception, with its traceback
        except BaseException as exc:         # the caller's own part failed
            self._fail(exc)
            raise

    def _worker(self, k: int) -> None:
        try:
            while True:
                self._barrier.wait()         # go
                job = self._job              # read before the next barrier: see _do
                if job[0] is _STOP:
                    return
                self._do(k, job)
        except threading.BrokenBarrierError:
            return                           # another worker failed, or close() after one
        except BaseException as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        with self._error_lock:
            if self._error is None and not isinstance(exc, threading.BrokenBarrierError):
                self._error = exc
        self._barrier.abort()

    def _do(self, k: int, job: tuple) -> None:
        """Worker k's part of ``job``. Each job crosses the barrier once more after
        every worker has read ``self._job``, so the caller never overwrites it early."""
        kind = job[0]
        if kind is _STEP:
            _, caller_x, x, y, weights, lr, batch, t = job
            n = x.shape[0]
            start, stop = shard_bounds(n, self._workers, k)
            if start < stop:
                rows, xs = self._shards(n)[k], x[start:stop]
                xs[...] = caller_x[start:stop]
                forward(self._layers, xs, rows)
                self._losses[k] = deltas(self._layers, xs, y[start:stop], rows,
                                         None if weights is None else weights[start:stop])
            self._barrier.wait()             # every delta is written, W no longer read
            self._update(k, x, n, lr, batch, t)
        elif kind is _PREDICT:
            _, x, out = job
            busy = min(self._workers, self.batch_size)   # workers with >= 1 workspace row
            if k < busy:
                start, stop = shard_bounds(x.shape[0], busy, k)
                rows = self._shards(self.batch_size)[k]
                for lo in range(start, stop, rows.rows):
                    hi = min(lo + rows.rows, stop)
                    out[lo:hi] = forward(self._layers, x[lo:hi], rows)
            self._barrier.wait()             # every row of out is written
        else:                                # _SYNC
            self._barrier.wait()

    def _host_optimizer(self, optimizer: OptimizerConfig | None,
                        state: OptimizerState | None) -> HostOptimizer:
        """The update rule's buffers over this executor's parameters."""
        return HostOptimizer(self.network, self._params, optimizer, state)

    def _post_step(self, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None, lr: float,
                   batch: int) -> None:
        """Run the step job on rows ``x`` (n, n_in), targets ``y``, row weights ``weights``
        (n,) or None; ``batch`` is the global batch the gradient is averaged over."""
        n = x.shape[0]
        inputs = self._inputs[self._turn][:n]
        self._turn ^= 1
        t = self._optimizer.next_step()
        self._run((_STEP, x, inputs, y, weights, lr, batch, t))

    def _shards(self, n: int) -> list[Workspace]:
        """The T row views of the shared workspace for a batch of ``n`` rows (cached)."""
        shards = self._row_shards.get(n)
        if shards is None:                   # at most twice a run: races only duplicate it
            shards = [self._ws.row_view(*shard_bounds(n, self._workers, k))
                      for k in range(self._workers)]
            self._row_shards[n] = shards
        return shards

    def _update(self, k: int, x: np.ndarray, n: int, lr: float, batch: int, t: int) -> None:
        """Worker k's columns of every layer: W -= lr/batch * a_prev^T @ delta, b likewise;
        or those columns of the gradient mean and the rule on them (compiled), or
        the rule on its flat range once every column is written (NumPy's passes)."""
        ws, optimizer = self._ws, self._optimizer
        for l in range(len(self._layers)):
            c0, c1 = self._columns[l][k]
            if c0 < c1:
                optimizer.columns(l, c0, c1, ws, x, n, lr, batch, t)
        if optimizer.flat_pass:
            self._barrier.wait()             # every column of the gradient mean is written
            optimizer.apply_flat(self._update_segments[k], lr, t, ws)
