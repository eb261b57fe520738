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
                  (bf16: the sum of the workers' column sums of their rows,
                  written in step 1 with the deltas: Workspace.bias_rows)
                  (other update rules: the gradient mean of those columns into a
                  flat buffer, GEMM with beta = 0, then the rule on those columns
                  in one compiled pass; without the compiled module, a third
                  barrier and the rule on worker k's flat range; see .optimizing)

Per-row sample weights are sharded with the rows and scale each worker's
output deltas (:func:`..backprop.deltas`).

Wide layers of small batches go by columns in step 1 too. By rows, each
worker multiplies its rows by the whole of W, and BLAS packs (reads from
memory and copies) all of W for each worker: at Net-1h batch 128 on a
2-core Xeon, each worker's half of the forward pass took 80% of the whole
one's time (1.69 vs 2.11 ms of CPU). So where a hidden layer's W is larger
than the rows it multiplies (n_out > n) and not small, worker k computes
ITS output columns of that layer for every row (forward) and its columns
of the delta below (backward), and only the narrow output layer and the
loss go by rows; a barrier separates parts that read each other's output
whole (:meth:`ThreadsExecutor._plan`). That forward pass took 1.16 +
1.14 ms against serial's 2.12.

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
the BLAS call (all but tiny ones) and updates column slices of W in place;
the element-wise work (activations, f', sums) is compiled passes or NumPy
ufuncs, which drop the GIL too on large arrays. What remains under the GIL
is ~40 Python-level calls per worker per step.

Each parameter is written by exactly one GEMM over the batch in a fixed
order, so a run is bit-for-bit reproducible for a given seed and T, and
T = 1 performs exactly the serial executor's operations. (Different T give
results equal up to rounding: BLAS blocks the products differently.)

Threads, not processes: the caller's thread is worker 0; T - 1 threads are
started once in ``__init__`` and wait on one cyclic barrier (:func:`make_barrier`).
Nothing is allocated per step but a few small Python objects (views, and
threading.Barrier's waiter locks without the compiled module); the row views
of the workspace are made once per distinct batch length (the full batch and
the epoch's last).

The step costs two barrier crossings: "go" and "deltas written", and one
more after each part of the pass split by columns (9-15 us each with the
compiled barrier, whose waiters spin without the GIL; threading.Barrier's
sleeping waiters took 81 us a crossing on a 2-core Xeon VM: steps 2-3%
faster there at Net-1h and Net-2h batch 128, 10% on 784-256-10 at batch
200, none at batch 1024; docs/executors.md). The caller
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

import itertools
import threading

import numpy as np

from .. import compiled
from ..backprop import Workspace, deltas, forward, hidden_delta
from ..errors import ConfigError
from ..gemm import blas_thread_limit
from ..network import Network
from ..optim import OPTIMIZERS, OptimizerConfig
from ..precision import PRECISIONS, copy_rows
from ..resources import usable_cores
from .base import Executor, Layout, OptimizerState
from .optimizing import HostOptimizer, check_weights

# Jobs posted to the workers (the first item of ``_job``).
_STEP, _PREDICT, _SYNC, _STOP = "step", "predict", "sync", "stop"

# Column slices start on 64-byte boundaries (16 float32), so no two workers
# write the same cache line of W during the update.
COLUMN_ALIGN = 16

# A product whose W has fewer elements is never split by columns (see
# ThreadsExecutor._plan): BLAS packs a W of 256 KB in microseconds, less than
# the barrier the split costs.
COLUMN_SPLIT_MIN = 1 << 16


class ExecutorStopped(RuntimeError):
    """The executor was closed, or a worker failed earlier; it cannot run a step."""


def make_barrier(parties: int, spin: bool = True):
    """A cyclic barrier for ``parties`` workers: the compiled one where built (its
    waiters spin, then sleep, without the GIL: 9-15 us a crossing for two threads
    on a 2-core Xeon VM against threading.Barrier's 81; ``spin`` false: they
    sleep at once, for workers that outnumber the cores), else threading's."""
    if compiled.kernels is not None:
        return compiled.kernels.Barrier(parties, spin)
    return threading.Barrier(parties)


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
                             precision, self._params, parts=T)
        # The step's inputs, copied (each worker its rows) into one of two
        # buffers in turn: the first layer's update reads every row of the
        # input after ``step`` has returned, when the caller may already be
        # writing its next batch; the next step's "go" orders the reuse.
        self._inputs = [np.empty((batch_size, network.sizes[0]), self.step_input_dtype())
                        for _ in range(2)]
        self._turn = 0
        self._row_shards: dict[tuple[int, int], list[Workspace]] = {}  # (n, layer) -> T views
        self._plans: dict[int, tuple[list[tuple[int, int, bool]], int]] = {}  # n -> _plan
        self._split_columns(T)
        # Worker k's flat range [cut_k, cut_k+1) of the parameters, for updates that
        # come after every gradient column is written (mpi; the rules other than SGD).
        P = self._params.size
        self._flat_cuts = [min(P, round(k * P / T / COLUMN_ALIGN) * COLUMN_ALIGN)
                           for k in range(T)] + [P]
        self._update_segments = [self._optimizer.segments(*self._flat_cuts[k:k + 2])
                                 for k in range(T)]
        self._losses = [0.0] * T

        self._job: tuple = (_SYNC,)
        self._numpy_errors = np.geterr()       # the caller's, applied by every worker
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._closed = False
        self._barrier = make_barrier(T, spin=self._barrier_may_spin(T))
        self._blas_limit = blas_thread_limit(blas_threads)
        self._pool = [threading.Thread(target=self._worker, args=(k,),
                                       name=f"pbp-{self.name}-{k}", daemon=True)
                      for k in range(1, T)]
        for thread in self._pool:
            thread.start()

    def _barrier_may_spin(self, workers: int) -> bool:
        """Whether waiting workers may spin: only with a core for each worker."""
        return workers <= usable_cores()

    def _split_columns(self, T: int) -> None:
        """Worker k's columns [c0, c1) of each layer's output (``_columns``), and the
        layers too narrow to split (``_shared``), updated by whichever worker is free."""
        # Worker k's columns [c0, c1) of each layer's output, W and b views of them.
        # Cuts are counted from the right, so a layer narrower than 16 columns
        # per worker (the output layer) falls whole to worker 0: split by columns
        # it is the caller's (the others start a wake-up later); its update is
        # shared (self._shared).
        self._columns = []
        for weights, bias in self._layers:
            width = bias.shape[0]
            cuts = [max(0, width - round((T - k) * width / T / COLUMN_ALIGN) * COLUMN_ALIGN)
                    for k in range(T)]
            cuts[0] = 0
            cuts.append(width)
            self._columns.append([(cuts[k], cuts[k + 1]) for k in range(T)])
        self._parts: list[dict] = [{} for _ in range(T)]    # k -> layer -> _column_part
        # Layers whose columns all fall to one worker (fewer than 16 per worker:
        # the output layer): updated by whichever worker is done with its own
        # columns first, from the step's iterator over them (_update).
        self._shared = [l for l, columns in enumerate(self._columns)
                        if T > 1 and columns[0] == (0, self._layers[l][1].shape[0])]
        self._own = [l for l in range(len(self._layers)) if l not in self._shared]
        self._spare: list = [iter(()) for _ in range(T)]    # k -> the step's iterator

    # ---- the public contract -------------------------------------------------

    def step(self, x: np.ndarray, y: np.ndarray, lr: float,
             weights: np.ndarray | None = None) -> float:
        n = check_batch_rows(x, self.batch_size)
        self._post_step(x, y, check_weights(weights, n), lr, n)
        return sum(self._losses[:min(n, self._workers)])  # worker order: reproducible

    def step_input_dtype(self) -> np.dtype:
        return self._ws.input_dtype

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
        self._numpy_errors = np.geterr()     # NumPy's error handling is per thread: see _worker
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
                if self._numpy_errors != np.geterr():
                    # The caller's (e.g. overflow left to the divergence check, not warned of).
                    np.seterr(**self._numpy_errors)
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
            _, caller_x, x, y, weights, lr, batch, t, shared = job
            self._spare[k] = shared
            n = x.shape[0]
            start, stop = shard_bounds(n, self._workers, k)
            if x is not caller_x:            # (the same array: nothing to copy)
                copy_rows(caller_x[start:stop], x[start:stop])
            self._forward(k, caller_x, x, n)
            if start < stop:
                self._losses[k] = deltas(self._layers, x[start:stop], y[start:stop],
                                         self._shards(n)[k],
                                         None if weights is None else weights[start:stop],
                                         lowest=self._plan(n)[1])
            self._backward_columns(k, n)
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
        if self._workers == 1 and x.dtype == inputs.dtype and x.flags.c_contiguous:
            inputs = x                       # one worker: done with x before step returns
        first_by_columns = self._plan(n)[0][0][2]
        if first_by_columns and not (x.dtype == inputs.dtype and x.flags.c_contiguous):
            inputs[...] = x                  # the first layer's columns read every row of x:
            x = inputs                       # rows gemm takes as they are
        t = self._optimizer.next_step()
        self._run((_STEP, x, inputs, y, weights, lr, batch, t, iter(self._shared)))

    def _shards(self, n: int, first: int = 0) -> list[Workspace]:
        """The T row views of the shared workspace for a batch of ``n`` rows, over its
        layers ``first..`` (cached)."""
        shards = self._row_shards.get((n, first))
        if shards is None:                   # at most twice a run: races only duplicate it
            shards = [self._ws.row_view(*shard_bounds(n, self._workers, k), k)
                      for k in range(self._workers)]
            if first:
                shards = [shard.layers_view(first, len(self._layers)) for shard in shards]
            self._row_shards[(n, first)] = shards
        return shards

    def _plan(self, n: int) -> tuple[list[tuple[int, int, bool]], int]:
        """How a step of ``n`` rows is split (cached): the forward pass in parts
        ``(first, stop, by_columns)``, layers [first, stop) split by rows or one
        hidden layer split by output columns; and ``lowest``, the lowest layer
        whose delta is computed by rows (those below it go by columns).

        By rows, every worker multiplies its rows by the whole of W, so BLAS
        packs (reads and copies) all of W once per worker; by columns, each
        packs its own part of W and it is the other operand, the layer's
        input (or the delta above), that every worker packs whole. A product
        goes by columns where its W is the larger of the two (a hidden width
        over ``n``; Net-1h's first layer at batch 128, where by rows each
        worker's half of the forward pass cost 80% of the whole) and not
        small (``COLUMN_SPLIT_MIN``). The output layer goes by rows: the loss
        and the output delta need whole rows. One worker: serial's calls.
        bf16 products: by rows (the workspace's bf16 copies are whole layers').
        """
        plan = self._plans.get(n)
        if plan is None:
            sizes, last = self.network.sizes, len(self._layers) - 1

            def by_columns(weights: np.ndarray, width: int) -> bool:
                return (self._workers > 1 and not self._ws.bf16
                        and weights.size >= COLUMN_SPLIT_MIN and width > n)

            parts: list[tuple[int, int, bool]] = []
            for l in range(last + 1):
                columns = l < last and by_columns(self._layers[l][0], sizes[l + 1])
                if columns or not parts or parts[-1][2]:
                    parts.append((l, l + 1, columns))
                else:
                    parts[-1] = (parts[-1][0], l + 1, False)
            lowest = last          # delta l - 1 comes from delta l and W_l (n_in = sizes[l])
            while lowest > 0 and not by_columns(self._layers[lowest][0], sizes[lowest]):
                lowest -= 1
            plan = self._plans[n] = (parts, lowest)
        return plan

    def _forward(self, k: int, caller_x: np.ndarray, x: np.ndarray, n: int) -> None:
        """Worker k's part of the forward pass of the step's ``n`` rows, part by part of
        :meth:`_plan`; a barrier after each part that the next one reads whole.

        ``caller_x``: the caller's rows, read whole by a first layer split by
        columns; ``x``: the step's input buffer, worker k's rows copied.
        """
        ws = self._ws
        start, stop = shard_bounds(n, self._workers, k)
        for first, end, by_columns in self._plan(n)[0]:
            if by_columns:
                c0, c1 = self._columns[first][k]
                if c0 < c1:
                    weights, bias = self._layers[first]
                    inputs = caller_x if first == 0 else ws.a[first - 1][:n]
                    view, a, _, _ = self._column_part(k, first)
                    forward([(weights[:, c0:c1], bias[c0:c1])], inputs, view)
                    ws.a[first][:n, c0:c1] = a[:n]
            elif start < stop:
                inputs = x[start:stop] if first == 0 else ws.a[first - 1][start:stop]
                forward(self._layers[first:end], inputs, self._shards(n, first)[k])
            if end < len(self._layers):
                self._barrier.wait()         # the next part reads every row and column

    def _backward_columns(self, k: int, n: int) -> None:
        """Worker k's columns of the deltas below :meth:`_plan`'s ``lowest``, layer by
        layer, each after a barrier: it reads every row and column of the delta above."""
        ws = self._ws
        parts, lowest = self._plan(n)
        forward_columns = {first for first, _, by_columns in parts if by_columns}
        for l in range(lowest - 1, -1, -1):
            self._barrier.wait()             # every row of delta l + 1 is written
            c0, c1 = self._columns[l][k]
            if c0 < c1:
                _, a, delta, scratch = self._column_part(k, l)
                if l not in forward_columns:     # else a holds them from the forward pass
                    a[:n] = ws.a[l][:n, c0:c1]
                hidden_delta(ws.functions[l], self._layers[l + 1][0][c0:c1], ws.delta[l + 1][:n],
                             a[:n], None if ws.z[l] is None else ws.z[l][:n, c0:c1],
                             delta[:n], scratch[:n])
                ws.delta[l][:n, c0:c1] = delta[:n]

    def _column_part(self, k: int, l: int) -> tuple[Workspace, np.ndarray, np.ndarray, np.ndarray]:
        """Worker k's contiguous buffers for its columns [c0, c1) of layer l: a
        workspace view whose activations are ``a``, then ``a``, ``delta``, ``scratch``
        (batch_size, c1 - c0); made by worker k on first use, kept.

        The element-wise work of a layer split by columns runs on these and
        its results are copied into place: NumPy's ufuncs buffer a column
        slice (copy it in pieces) before working on it, so the bias add and
        sigmoid of 128 x 512 columns of 1024 took 142 us in place against
        46 us contiguous, plus 8 us for the copy.
        """
        part = self._parts[k].get(l)
        if part is None:
            c0, c1 = self._columns[l][k]
            rows, dtype = self.batch_size, self._params.dtype
            view = self._ws.layers_view(l, l + 1, (c0, c1))
            a, delta = (np.empty((rows, c1 - c0), dtype) for _ in range(2))
            view.a = [a]
            scratch = self._ws.scratch[l].reshape(-1)[rows * c0:rows * c1]
            part = self._parts[k][l] = (view, a, delta, scratch.reshape(rows, c1 - c0))
        return part

    def _update(self, k: int, x: np.ndarray, n: int, lr: float, batch: int, t: int) -> None:
        """Worker k's columns of every layer: W -= lr/batch * a_prev^T @ delta, b likewise;
        or those columns of the gradient mean and the rule on them (compiled), or
        the rule on its flat range once every column is written (NumPy's passes)."""
        ws, optimizer = self._ws, self._optimizer
        # Its columns of the other layers, then shared layers until none is left,
        # each taken by one worker: next() on the step's iterator is atomic under
        # the GIL, and a layer's update is the same product whichever worker runs
        # it, so the run stays reproducible.
        for l in itertools.chain(self._own, self._spare[k]):
            c0, c1 = (0, self._layers[l][1].shape[0]) if l in self._shared \
                else self._columns[l][k]
            if c0 < c1:
                optimizer.columns(l, c0, c1, ws, x, n, lr, batch, t)
        if optimizer.flat_pass:
            self._barrier.wait()             # every column of the gradient mean is written
            optimizer.apply_flat(self._update_segments[k], lr, t, ws)
