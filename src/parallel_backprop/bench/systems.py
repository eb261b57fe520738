"""The systems a benchmark compares, each doing the same work: one training step per batch.

Same work for every trainer: the same all-sigmoid network, the same batch,
the same update rule (plain SGD unless the grid names others: momentum,
Adam... with :class:`~parallel_backprop.optim.OptimizerConfig`'s default
settings, no weight decay) on ``0.5 * sum((a - y)^2) / batch``, the same
precision (float32 products unless the grid names bf16: then our executors
in bf16 beside ``torch-bf16`` and ``jax-bf16``, float32 parameters
throughout), the same initial weights where the library lets us set them,
and the same number of threads. Three kinds of system:

executor  ours, through :func:`~parallel_backprop.executors.make_executor`
peer      what a user would run instead: a plain NumPy loop, PyTorch eager (and
          under bf16 autocast), ``torch.compile``, JAX ``jit`` (fp32 and bf16
          products), scikit-learn's ``MLPClassifier``
ceiling   a large float32 GEMM: the machine's rate for the work that
          dominates a step (``gemm`` through the BLAS our executors call;
          ``gemm-mkl`` MKL's sgemm and ``gemm-bf16`` MKL's bfloat16 GEMM with
          float32 accumulation, whichever BLAS the executors call;
          ``gemm-torch`` and ``gemm-jax`` through those libraries' own)

A builder runs inside the worker process (thread variables already set)
and returns a :class:`Workload`: ``run(k)`` does k steps, cycling through a
pool of distinct batches. Libraries are imported inside the builders, so a
missing peer costs nothing until it is asked for.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ..errors import PbpError, install_hint
from ..executors import EXECUTORS, Executor, make_executor
from ..fileio import one_line
from ..gemm import blas_record
from ..network import Network
from ..optim import OPTIMIZERS, OptimizerConfig


@dataclass(frozen=True)
class System:
    """A system the harness can time, and what it needs installed."""

    name: str
    kind: str                     # "executor", "peer" or "ceiling"
    requires: tuple[str, ...]     # modules it imports
    description: str
    extra: str = ""               # the pip extra that installs ``requires``
    peer_optimizers: tuple[str, ...] = ("sgd",)   # the update rules a peer is built with
    peer_precisions: tuple[str, ...] = ("fp32",)  # a peer's (or ceiling's) product precision
    # Why it cannot run here beyond a missing module (e.g. no MKL library), or None.
    check: Callable[[], str | None] | None = None

    @property
    def optimizers(self) -> tuple[str, ...]:
        """The update rules it can be timed with (none for a ceiling)."""
        if self.kind == "ceiling":
            return ()
        return self.executor.optimizers if self.executor is not None else self.peer_optimizers

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions of the products it can be timed at."""
        return self.executor.precisions if self.executor is not None else self.peer_precisions

    @property
    def executor(self) -> type[Executor] | None:
        """The executor class of a system of kind "executor"; None for the others."""
        return EXECUTORS.get(self.name) if self.kind == "executor" else None

    def unavailable(self) -> str | None:
        """Why it cannot run on this machine, or None. An executor answers for itself
        (its modules, a GPU, an mpiexec); the others need their modules."""
        if self.executor is not None:
            return self.executor.unavailable()
        missing = missing_modules(self)
        if missing:
            return (f"{', '.join(missing)} is not installed "
                    f"({install_hint(self.extra)})")
        return self.check() if self.check is not None else None

    @property
    def on_device(self) -> bool:
        """Whether it computes on a device (a GPU), not on the CPU's cores."""
        return self.executor is not None and self.executor.device != "cpu"


_PEERS = [
    System("numpy", "peer", (), "plain NumPy backprop: new arrays every step"),
    System("torch", "peer", ("torch",), "PyTorch eager, nn.Sequential + torch.optim",
           "compare", OPTIMIZERS),
    System("torch-bf16", "peer", ("torch",), "PyTorch eager under torch.autocast('cpu', "
           "bfloat16): bf16 products, SGD on float32 parameters", "compare", ("sgd",),
           ("bf16",)),
    System("torch-compile", "peer", ("torch",), "PyTorch with torch.compile(model)", "compare",
           OPTIMIZERS),
    System("jax", "peer", ("jax",), "JAX, jit-compiled step with grad", "compare"),
    System("jax-bf16", "peer", ("jax",), "JAX jit, bf16 products accumulated in float32, "
           "float32 parameters", "compare", ("sgd",), ("bf16",)),
    System("sklearn", "peer", ("sklearn",),
           "scikit-learn MLPClassifier(solver='sgd' or 'adam', activation='logistic'), "
           "partial_fit", "compare", ("sgd", "momentum", "nesterov", "adam")),
]
_CEILINGS = [
    System("gemm", "ceiling", (), "float32 GEMM through the BLAS the executors call"),
    System("gemm-mkl", "ceiling", (), "float32 GEMM through MKL (cblas_sgemm)", "mkl",
           check=lambda: _without_mkl()),
    System("gemm-bf16", "ceiling", ("ml_dtypes",), "bfloat16 GEMM with float32 accumulation "
           "through MKL (cblas_gemm_bf16bf16f32)", "mkl", check=lambda: _without_mkl()),
    System("gemm-torch", "ceiling", ("torch",), "float32 GEMM through torch.matmul", "compare"),
    System("gemm-jax", "ceiling", ("jax",), "float32 GEMM through jax.jit(a @ b)", "compare"),
]


class SystemTable(Mapping):
    """Every system by name: each registered executor (those a plugin registers at run
    time too, read from the registry at every look-up), then the peers and ceilings."""

    def _table(self) -> dict[str, System]:
        executors = {name: System(name, "executor", cls.requires, cls.summary(), cls.extra)
                     for name, cls in EXECUTORS.items()}
        return {**executors, **{system.name: system for system in _PEERS + _CEILINGS}}

    def __getitem__(self, name: str) -> System:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


SYSTEMS = SystemTable()
# The one ceiling efficiencies are measured against.
CEILING = "gemm"


def missing_modules(system: System) -> list[str]:
    """The modules ``system`` needs that are not installed (found without importing them)."""
    return [module for module in system.requires if importlib.util.find_spec(module) is None]


def availability(system: System) -> str | None:
    """Why ``system`` cannot run on this machine, or None when it can."""
    return system.unavailable()


def describe_systems() -> list[str]:
    """A line per system: its name, kind, whether it can run here, what it is (and why not)."""
    lines = []
    for system in SYSTEMS.values():
        reason = availability(system)
        state = "available" if reason is None else "unavailable"
        lines.append(f"{system.name:<14} {system.kind:<9} {state:<12} {system.description}"
                     + ("" if reason is None else f" ({reason})"))
    return lines


class Unavailable(Exception):
    """The system cannot run here (a library or a compiler is missing); the run skips it."""


@dataclass
class Workload:
    """One system set up for one configuration.

    ``run(k)`` performs k steps (training steps on the next k batches of the
    pool, or GEMMs for a ceiling), each of ``flops_per_step`` FLOPs on
    ``samples_per_step`` samples (0 for a ceiling), and returns once the
    work is done.
    """

    run: Callable[[int], None]
    notes: list[str] = field(default_factory=list)
    close: Callable[[], None] = lambda: None
    flops_per_step: float = 0.0       # set by build() for trainers, from the network
    samples_per_step: int = 0
    blas: dict | None = None          # the BLAS it computes with (gemm.blas_record), if ours


@dataclass(frozen=True)
class Pool:
    """Synthetic training data: ``x`` (n, n_in) in [0, 1), ``y`` (n, n_out), ``labels`` (n,).

    ``n`` is a whole number of batches; every system steps through the
    same batches in the same order.
    """

    x: np.ndarray
    y: np.ndarray
    labels: np.ndarray
    batch_size: int

    @classmethod
    def make(cls, network: Network, n_classes: int, batch_size: int, min_samples: int,
             seed: int, pool_file: str | None = None) -> "Pool":
        """``min_samples`` rounded up to whole batches, within 2 to 64 batches.

        At most 64 steps per pass keeps passes of tiny batches short; at
        least two keeps consecutive steps on different data. With
        ``pool_file`` (``write_pool``) the rows are a loaded table's, cycled
        when it has fewer.
        """
        n_batches = min(64, max(2, -(-min_samples // batch_size)))
        n = n_batches * batch_size
        if pool_file is not None:
            with np.load(pool_file) as arrays:
                rows = np.arange(n) % len(arrays["labels"])
                x, labels = arrays["x"][rows], arrays["labels"][rows]
            return cls(np.ascontiguousarray(x, np.float32), network.targets(labels), labels,
                       batch_size)
        rng = np.random.default_rng(seed)
        x = rng.random((n, network.sizes[0]), dtype=np.float32)
        labels = rng.integers(0, n_classes, size=n)
        return cls(x, network.targets(labels), labels, batch_size)


    def batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        b = self.batch_size
        return [(self.x[i:i + b], self.y[i:i + b]) for i in range(0, len(self.x), b)]


def write_pool(path, x: np.ndarray, labels: np.ndarray, most: int) -> None:
    """Keep the first ``most`` rows of a data set's inputs and classes for ``Pool.make``."""
    np.savez(path, x=np.asarray(x[:most], np.float32), labels=np.asarray(labels[:most]))


@dataclass(frozen=True)
class Setup:
    """What a builder needs: the configuration as the worker received it."""

    system: str
    network: Network | None       # None for a ceiling
    n_classes: int | None
    batch_size: int | None
    threads: int                  # the configuration's thread count
    executor_threads: int         # make_executor's threads= (workers, or BLAS threads for blas)
    executor_blas_threads: int    # make_executor's blas_threads= (hybrid)
    lr: float
    seed: int
    pool_samples: int
    gemm_size: int
    optimizer: str = "sgd"        # an update rule of ..optim, its default settings
    pool_file: str | None = None
    precision: str = "fp32"       # of the products: one of the system's precisions


def build(setup: Setup) -> Workload:
    """The :class:`Workload` for ``setup.system``; raises :class:`Unavailable` to skip."""
    system = SYSTEMS[setup.system]
    # The runner asked system.unavailable() before starting this process; the
    # modules are checked again in case this process's environment differs.
    if missing_modules(system):
        raise Unavailable(system.unavailable())
    if system.kind == "ceiling":
        return _CEILING_BUILDERS[system.name](setup)
    pool = Pool.make(setup.network, setup.n_classes, setup.batch_size, setup.pool_samples,
                     setup.seed, setup.pool_file)
    builder = _executor if system.kind == "executor" else _PEER_BUILDERS[system.name]
    workload = builder(setup, pool)
    workload.flops_per_step = setup.network.train_flops_per_sample() * setup.batch_size
    workload.samples_per_step = setup.batch_size
    return workload


# ---- ours -------------------------------------------------------------------------

def _executor(setup: Setup, pool: Pool) -> Workload:
    params = setup.network.init_params(setup.seed)
    try:
        executor = make_executor(setup.system, setup.network, params,
                                 batch_size=setup.batch_size, threads=setup.executor_threads,
                                 blas_threads=setup.executor_blas_threads,
                                 precision=setup.precision,
                                 optimizer=OptimizerConfig(setup.optimizer))
    except PbpError as exc:   # e.g. no GPU, no MPI library: this machine cannot run it
        raise Unavailable(str(exc)) from exc
    lr = setup.lr
    if executor.resident_data and executor.load_data(pool.x, pool.y):
        # A device executor with the data resident on the device, as the
        # trainer runs it: steps are "epochs" over pool rows, one wait each.
        def epochs(rows: int, start: int) -> None:
            executor.train_epoch((start + np.arange(rows)) % len(pool.x), lr)

        return Workload(_chunked(epochs, pool), close=executor.close,
                        notes=["data resident on the device (load_data, train_epoch)"])
    # No sync at the end of run(k): an executor may finish its last update in
    # the background, but the next call's first step waits for it, so each
    # timed round pays for the previous round's tail instead of its own.
    return Workload(_cycle(lambda x, y: executor.step(x, y, lr), pool.batches()),
                    close=executor.close,
                    blas=blas_record() if executor.device == "cpu" else None)


def _cycle(step: Callable, batches: list, finish: Callable[[], None] = lambda: None):
    """``run(k)``: ``step(x, y)`` on the next k batches, round the pool; then ``finish()``."""
    position = [0]

    def run(k: int) -> None:
        i = position[0]
        for _ in range(k):
            step(*batches[i])
            i = (i + 1) % len(batches)
        position[0] = i
        finish()

    return run


def _chunked(steps_on_rows: Callable[[int, int], None], pool: Pool):
    """``run(k)`` for a system that takes many steps in one call: ``steps_on_rows(rows, start)``
    trains on ``rows`` pool rows from row ``start`` on (wrapping), at most the whole pool."""
    b, n = pool.batch_size, len(pool.x)
    position = [0]

    def run(k: int) -> None:
        while k:
            m = min(k, n // b)
            steps_on_rows(m * b, position[0])
            position[0] = (position[0] + m * b) % n
            k -= m

    return run


# ---- peers --------------------------------------------------------------------------

def naive_step(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray,
               lr: float) -> None:
    """Plain NumPy sigmoid/MSE backprop step, as a reader would first write it.

    ``layers`` are ``(W, b)`` arrays updated in place; x (n, n_in), y (n, n_out).
    New arrays for every activation, delta and gradient: the allocations are
    part of what this peer measures.
    """
    acts = [x]
    for w, b in layers:
        acts.append(1.0 / (1.0 + np.exp(-(acts[-1] @ w + b))))
    delta = (acts[-1] - y) * acts[-1] * (1.0 - acts[-1])
    for l in range(len(layers) - 1, -1, -1):
        w, b = layers[l]
        grad_w = acts[l].T @ delta
        grad_b = delta.sum(axis=0)
        if l > 0:
            delta = (delta @ w.T) * acts[l] * (1.0 - acts[l])
        w -= lr / x.shape[0] * grad_w
        b -= lr / x.shape[0] * grad_b


def _numpy(setup: Setup, pool: Pool) -> Workload:
    layers = setup.network.layers(setup.network.init_params(setup.seed))
    batches, lr = pool.batches(), setup.lr
    return Workload(_cycle(lambda x, y: naive_step(layers, x, y, lr), batches))


def _torch_model(setup: Setup):
    """nn.Sequential of Linear + Sigmoid with our initial weights, and the grid's optimizer."""
    import torch

    torch.set_num_threads(setup.threads)
    modules = []
    for weights, bias in setup.network.layers(setup.network.init_params(setup.seed)):
        linear = torch.nn.Linear(*weights.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weights.T))   # torch keeps W as (n_out, n_in)
            linear.bias.copy_(torch.from_numpy(bias))
        modules += [linear, torch.nn.Sigmoid()]
    model = torch.nn.Sequential(*modules)
    config = OptimizerConfig(setup.optimizer)
    if config.name in ("adam", "adamw"):    # AdamW's decay is ours: none by default
        rule = torch.optim.AdamW if config.name == "adamw" else torch.optim.Adam
        return model, rule(model.parameters(), lr=setup.lr, betas=(config.beta1, config.beta2),
                           eps=config.eps, weight_decay=config.weight_decay)
    momentum = 0.0 if config.name == "sgd" else config.momentum
    return model, torch.optim.SGD(model.parameters(), lr=setup.lr, momentum=momentum,
                                  nesterov=config.name == "nesterov")


def _torch_step(pool: Pool, forward, optimizer, autocast: bool = False):
    """A training step on torch tensors, and the pool's batches as tensors (no copies).

    ``autocast``: the forward pass under ``torch.autocast("cpu", torch.bfloat16)``
    (bf16 products, their gradients too), the loss on the output in float32.
    """
    import contextlib

    import torch
    import torch.nn.functional as F

    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in pool.batches()]
    mixed = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast \
        else contextlib.nullcontext

    def step(x, y) -> None:
        optimizer.zero_grad(set_to_none=True)
        with mixed():
            output = forward(x)
        loss = F.mse_loss(output.float(), y, reduction="sum") * (0.5 / x.shape[0])
        loss.backward()
        optimizer.step()

    return step, batches


def _torch(setup: Setup, pool: Pool) -> Workload:
    model, optimizer = _torch_model(setup)
    step, batches = _torch_step(pool, model, optimizer)
    return Workload(_cycle(step, batches), notes=[f"torch.set_num_threads({setup.threads})"])


def _torch_bf16(setup: Setup, pool: Pool) -> Workload:
    model, optimizer = _torch_model(setup)
    step, batches = _torch_step(pool, model, optimizer, autocast=True)
    return Workload(_cycle(step, batches), notes=[f"torch.set_num_threads({setup.threads})",
                                                  "torch.autocast('cpu', torch.bfloat16)"])


def _torch_compile(setup: Setup, pool: Pool) -> Workload:
    import torch

    model, optimizer = _torch_model(setup)
    step, batches = _torch_step(pool, torch.compile(model), optimizer)
    # Compile now (the first call), so that a machine without a working
    # compiler skips this peer with the reason instead of failing the run.
    try:
        step(*batches[0])
    except Exception as exc:  # inductor raises many types; all mean "cannot compile here"
        raise Unavailable(f"torch.compile failed: {one_line(exc)}"[:300]) from exc
    return Workload(_cycle(step, batches), notes=[f"torch.set_num_threads({setup.threads})"])


def _jax(setup: Setup, pool: Pool) -> Workload:
    import functools

    import jax
    import jax.numpy as jnp

    params = [(jnp.asarray(w), jnp.asarray(b))
              for w, b in setup.network.layers(setup.network.init_params(setup.seed))]
    batches = [(jnp.asarray(x), jnp.asarray(y)) for x, y in pool.batches()]
    lr = setup.lr

    low = setup.precision == "bf16"

    def product(a, w):
        if not low:
            return a @ w
        # bf16 operands, float32 accumulation and result; the parameters stay float32
        return jnp.dot(a.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                       preferred_element_type=jnp.float32)

    def loss(params, x, y):
        a = x
        for w, b in params:
            a = jax.nn.sigmoid(product(a, w) + b)
        return 0.5 * jnp.sum((a - y) ** 2)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(params, x, y):
        grads = jax.grad(loss)(params, x, y)
        scale = lr / x.shape[0]
        return jax.tree.map(lambda p, g: p - scale * g, params, grads)

    state = [params]

    def train(x, y) -> None:
        state[0] = step(state[0], x, y)

    # Dispatch is asynchronous: run(k) returns once the device is done.
    return Workload(_cycle(train, batches, lambda: jax.block_until_ready(state[0])))


def _sklearn(setup: Setup, pool: Pool) -> Workload:
    from sklearn.neural_network import MLPClassifier

    classes = np.arange(setup.n_classes)
    config = OptimizerConfig(setup.optimizer)
    model = MLPClassifier(
        hidden_layer_sizes=setup.network.sizes[1:-1], activation="logistic",
        solver="adam" if config.name == "adam" else "sgd", alpha=0.0,
        batch_size=setup.batch_size, learning_rate="constant", learning_rate_init=setup.lr,
        momentum=0.0 if config.name == "sgd" else config.momentum,
        nesterovs_momentum=config.name == "nesterov", beta_1=config.beta1,
        beta_2=config.beta2, epsilon=config.eps, shuffle=False, random_state=setup.seed)
    b = setup.batch_size
    model.partial_fit(pool.x[:b], pool.labels[:b], classes=classes)   # sets up the layers

    def steps_on_rows(rows: int, start: int) -> None:
        # One call takes many steps, in mini-batches of batch_size, no
        # shuffling: its input validation is paid once per call, not per step.
        stop = start + rows
        model.partial_fit(pool.x[start:stop], pool.labels[start:stop])
        if stop > len(pool.x):     # wrapped round the end of the pool
            model.partial_fit(pool.x[:stop - len(pool.x)], pool.labels[:stop - len(pool.x)])

    output = "a logistic output" if setup.network.sizes[-1] == 1 else "a softmax output"
    notes = [f"{output} with log-loss (MLPClassifier has no MSE loss) and its own "
             "initial weights"]
    if model.coefs_[0].dtype != np.float32:
        notes.append(f"computes in {model.coefs_[0].dtype}")
    return Workload(_chunked(steps_on_rows, pool), notes=notes)


_PEER_BUILDERS = {"numpy": _numpy, "torch": _torch, "torch-bf16": _torch_bf16,
                  "torch-compile": _torch_compile, "jax": _jax, "jax-bf16": _jax,
                  "sklearn": _sklearn}


# ---- ceilings -----------------------------------------------------------------------

def _repeat(product: Callable[[], object]):
    """``run(k)``: k products."""
    def run(k: int) -> None:
        for _ in range(k):
            product()
    return run


def _square_operands(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((n, n), dtype=np.float32) for _ in range(3)]   # a, b, c (n, n)


def _gemm(setup: Setup) -> Workload:
    from ..gemm import gemm

    a, b, c = _square_operands(setup.gemm_size, setup.seed)
    return Workload(_repeat(lambda: gemm(a, b, c)), flops_per_step=2 * setup.gemm_size ** 3,
                    blas=blas_record())


def _without_mkl() -> str | None:
    """Why MKL cannot be called here, or None."""
    from ..blas_libraries import mkl_installed

    return None if mkl_installed() else f"MKL is not installed ({install_hint('mkl')})"


def _mkl_product(setup: Setup, dtype) -> Workload:
    """``c = a @ b`` through MKL's routine for ``dtype`` operands (float32 result)."""
    from ..blas_libraries import load_library
    from ..precision import cpu_bf16_missing

    library = load_library("mkl")
    a, b, c = _square_operands(setup.gemm_size, setup.seed)
    a, b = a.astype(dtype), b.astype(dtype)
    routine = library.routines[np.dtype(np.float32)] if dtype == np.float32 else library.bf16
    n = setup.gemm_size
    def product():
        # The routine itself, so that the executors' choice of BLAS (use_blas) is not changed.
        routine(b"N", b"N", n, n, n, 1.0, a, n, b, n, 0.0, c, n)
    notes = []
    if dtype != np.float32 and cpu_bf16_missing():
        notes.append(cpu_bf16_missing())
    # MKL's threads: the worker's thread variables (MKL_NUM_THREADS), read when it loads.
    return Workload(_repeat(product), flops_per_step=2 * n ** 3,
                    blas=blas_record(library), notes=notes)


def _gemm_mkl(setup: Setup) -> Workload:
    return _mkl_product(setup, np.float32)


def _gemm_bf16(setup: Setup) -> Workload:
    from ..blas_libraries import bfloat16

    return _mkl_product(setup, bfloat16)


def _gemm_torch(setup: Setup) -> Workload:
    import torch

    torch.set_num_threads(setup.threads)
    a, b, c = (torch.from_numpy(m) for m in _square_operands(setup.gemm_size, setup.seed))
    return Workload(_repeat(lambda: torch.matmul(a, b, out=c)),
                    flops_per_step=2 * setup.gemm_size ** 3)


def _gemm_jax(setup: Setup) -> Workload:
    import jax

    a, b, _ = (jax.numpy.asarray(m) for m in _square_operands(setup.gemm_size, setup.seed))
    product = jax.jit(lambda a, b: a @ b)
    return Workload(_repeat(lambda: product(a, b).block_until_ready()),
                    flops_per_step=2 * setup.gemm_size ** 3)


_CEILING_BUILDERS = {"gemm": _gemm, "gemm-mkl": _gemm_mkl, "gemm-bf16": _gemm_bf16,
                     "gemm-torch": _gemm_torch, "gemm-jax": _gemm_jax}

