"""The threads executor: the mini-batch split across CPU threads (the seed's Algorithm 5).

Data parallelism on one machine. A step on ``n`` rows with ``T`` workers::

    1. shard      worker k takes rows [start_k, stop_k) of the batch, contiguous,
                  sizes differing by at most one (T > n: workers n.. get none);
                  forward + backward into its OWN flat gradient buffer g_k,
                  a SUM over its rows, with its own Workspace
       barrier    every g_k is written
    2. reduce     worker k owns slice P_k of the flat parameter buffer:
                  g_0[P_k] += g_1[P_k] + ... (in worker order 0..m-1, m = min(n, T)),
                  params[P_k] -= lr / n * g_0[P_k]

The fixed summation order makes a run bit-for-bit reproducible for a given
seed and T (not across different T: float addition is not associative).
Dividing once by the global ``n`` keeps uneven shards exact.

Why not the serial executor's fused update (``W -= s * a^T @ delta`` in the
gradient GEMM, no gradient written)? Three reasons. The update of W_l cannot
start before every worker is done with W_l: the others still read it in
their forward pass and in their hidden delta ``delta @ W^T``. T fused
updates into the same W would race and sum in a timing-dependent order.
And that GEMM is a ``scipy.linalg.blas`` call, whose f2py wrapper HOLDS the
GIL for the whole product (measured: two threads calling it take turns,
2.4 -> 4.9 ms per call; ``np.matmul`` overlaps, 2.4 -> 2.5 ms). So the
workers write partial gradients with ``np.matmul``, wait at a barrier, and
only then reduce and update, with NumPy ufuncs only.

Threads, not processes: NumPy drops the GIL inside BLAS calls and inside
element-wise loops on large arrays, which is nearly all of a step; the
Python work between them is ~50 NumPy calls per worker per step. Measured
on 2 cores (Net-1h, 64-row shards), two threads run their shards as fast
as two processes do, so the GIL is not what limits this executor. The
caller's thread is worker 0; T - 1 threads are started once in
``__init__`` and wait on one cyclic ``threading.Barrier``. Nothing is
allocated per step but a few small Python objects (views, the barrier's
waiter locks); all arrays are preallocated.

The step costs two barrier crossings: "go" and "gradients written". The
caller returns as soon as its own slice of the update is done; the other
workers finish theirs while the trainer gathers the next batch, and the next
"go" (which every worker reaches only after its update) orders it before the
next forward pass. ``params`` and ``predict`` wait for it the same way.

Where a step's time goes (2 cores, Net-1h, batch 128, T = 2, ~3.3 ms; the
serial step is ~5.1 ms): each 64-row shard 2.7-2.9 ms (half the serial work
but ~10% less efficient: K = 64 in the gradient GEMM, and the gradient is
written instead of folded in), +~0.15 ms when both cores run (shared cache
and memory, not the GIL), the reduce-and-update ~0.19 ms (8 passes over a
half of the 3.2 MB of parameters), barriers, wake-ups and imbalance
~0.2 ms. Hence ~1.5x at batch 128, ~1.7x at 256 and ~1.95x at 1024. On 2
cores at small batches, ``blas`` (one shard, 2 BLAS threads) is faster.

BLAS is pinned to one thread per worker for the executor's lifetime (T
workers x 1 BLAS thread = T cores). threadpoolctl's limit is process-wide,
which is what we want; ``close`` restores it. The hybrid executor is this
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
from threadpoolctl import threadpool_limits

from ..backprop import Workspace, backward, forward
from ..errors import ConfigError
from ..network import Network
from .base import Executor

# Jobs posted to the workers (the first item of ``_job``).
_STEP, _PREDICT, _SYNC, _STOP = "step", "predict", "sync", "stop"

# Parameter slices start on 64-byte boundaries (16 float32), so no two workers
# write the same cache line during the update.
_ALIGN = 16


class ExecutorStopped(RuntimeError):
    """The executor was closed, or a worker failed earlier; it cannot run a step."""


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
    """

    name = "threads"

    def __init__(self, network: Network, params: np.ndarray, *, batch_size: int,
                 threads: int = 1, blas_threads: int = 1):
        super().__init__(network, params, batch_size=batch_size, threads=threads)
        T = self._workers = threads
        self.blas_threads = blas_threads
        self._params = np.array(params, copy=True)                  # (P,)
        self._layers = network.layers(self._params)
        dtype = self._params.dtype
        shard_rows = -(-batch_size // T)                            # ceil(batch / T)
        self._ws = [Workspace(network, shard_rows, dtype) for _ in range(T)]
        # g_k: worker k's gradient SUM over its shard, same layout as params.
        self._grads = [np.empty_like(self._params) for _ in range(T)]   # T x (P,)
        self._grad_layers = [network.layers(g) for g in self._grads]
        # Worker k's slice of the update: params[P_k] and every g_j[P_k].
        P = self._params.size
        cuts = [min(P, round(k * P / T / _ALIGN) * _ALIGN) for k in range(T)] + [P]
        self._param_slices = [self._params[cuts[k]:cuts[k + 1]] for k in range(T)]
        self._grad_slices = [[g[cuts[k]:cuts[k + 1]] for g in self._grads] for k in range(T)]
        self._losses = [0.0] * T

        self._job: tuple = (_SYNC,)
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._closed = False
        self._barrier = threading.Barrier(T)
        self._blas_limit = threadpool_limits(limits=blas_threads, user_api="blas")
        self._pool = [threading.Thread(target=self._worker, args=(k,),
                                       name=f"pbp-{self.name}-{k}", daemon=True)
                      for k in range(1, T)]
        for thread in self._pool:
            thread.start()

    # ---- the public contract -------------------------------------------------

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        n = x.shape[0]
        if not 1 <= n <= self.batch_size:
            raise ConfigError(
                f"batch of {n} rows: expected 1 to {self.batch_size} (the batch size)")
        job = (_STEP, x, y, lr / n, n)
        self._run(job)
        return sum(self._losses[:min(n, self._workers)])  # worker order: reproducible

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.network.sizes[-1]), self._params.dtype)
        if x.shape[0]:
            self._run((_PREDICT, x, out))
        return out

    def params(self) -> np.ndarray:
        self._run((_SYNC,))   # the last step's update may still be running on workers
        return self._params.copy()

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
            self._blas_limit.restore_original_limits()
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
            _, x, y, scale, n = job
            start, stop = shard_bounds(n, self._workers, k)
            if start < stop:
                ws, xs, ys = self._ws[k], x[start:stop], y[start:stop]
                forward(self._layers, xs, ws)
                self._losses[k] = backward(self._layers, xs, ys, ws,
                                           grads=self._grad_layers[k])
            self._barrier.wait()             # every partial gradient is written
            self._update(k, scale, min(n, self._workers))
        elif kind is _PREDICT:
            _, x, out = job
            start, stop = shard_bounds(x.shape[0], self._workers, k)
            ws = self._ws[k]
            for lo in range(start, stop, ws.rows):
                hi = min(lo + ws.rows, stop)
                out[lo:hi] = forward(self._layers, x[lo:hi], ws)
            self._barrier.wait()             # every row of out is written
        else:                                # _SYNC
            self._barrier.wait()

    def _update(self, k: int, scale: float, m: int) -> None:
        """params[P_k] -= scale * (g_0 + ... + g_{m-1})[P_k], summed in place into g_0."""
        grads, params = self._grad_slices[k], self._param_slices[k]
        total = grads[0]
        for j in range(1, m):
            np.add(total, grads[j], out=total)
        np.multiply(total, scale, out=total)
        np.subtract(params, total, out=params)
