"""What ``pbp train`` and ``pbp tune`` share: option groups and the start of a run.

A run loads its data set, builds its network, prints one header line and
knows its MPI rank; with ``--ranks N`` it is started again under mpiexec
with the same command line (see :func:`command_argv`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click

from ..blas_choice import select_blas
from ..data import Dataset
from ..errors import ConfigError
from ..executors import GpuExecutor, executor_class
from ..fileio import check_outputs
from ..interrupts import ignore_stop_signals
from ..network import Network
from ..trainer import TrainConfig
from .data import DataOptions, OptionGroup


@dataclass(frozen=True)
class NetOptions(OptionGroup):
    """The options of :data:`.options.network_options`."""

    net: str
    activation: str
    output_activation: str | None
    loss: str | None            # None: the preset's, for classification
    preset_loss: str = "mse"

    def build(self, data) -> Network:
        """The network for ``data``; a regression's has linear outputs, one per target, and
        mse (whatever the hidden activation), the only output and loss that fit targets
        standardised to any real value."""
        if data.task != "regress":
            return Network.from_spec(self.net, data.n_features, data.n_classes,
                                     activation=self.activation,
                                     output_activation=self.output_activation,
                                     loss=self.loss or self.preset_loss)
        if self.loss not in (None, "mse") or self.output_activation not in (None, "linear"):
            given = (f"--loss {self.loss}" if self.loss not in (None, "mse")
                     else f"--output-activation {self.output_activation}")
            raise ConfigError(f"{given}: a regression trains a linear output with mse; leave "
                              "it out (or use --task classify)")
        return Network.from_spec(self.net, data.n_features, data.n_classes,
                                 activation=self.activation, output_activation="linear",
                                 loss="mse", n_outputs=data.n_classes)


@dataclass(frozen=True)
class ExecutorOptions(OptionGroup):
    """The options of :data:`.options.executor_options`."""

    executor: str
    threads: int
    blas_threads: int
    precision: str
    ranks: int | None
    comm_timeout: float | None = None
    hostfile: Path | None = None
    restarts: int = 0
    blas: str = "auto"

    def train_config(self, **settings) -> TrainConfig:
        """A TrainConfig with this executor and ``settings`` (batch_size, lr, epochs...)."""
        return TrainConfig(executor=self.executor, threads=self.threads,
                           blas_threads=self.blas_threads, precision=self.precision,
                           blas=self.chosen_blas(), **settings)

    def chosen_blas(self) -> str | None:
        """The library ``--blas`` names (``auto``: the one measured faster here), in use from
        now on here and in the processes this run starts; None for a GPU executor."""
        if executor_class(self.executor).device != "cpu":
            return None
        return select_blas(self.blas, self.precision).name

    @property
    def distributed(self) -> bool:
        """Whether the executor runs on MPI ranks."""
        return bool(executor_class(self.executor).distributed)

    @property
    def on_gpu(self) -> bool:
        """Whether the executor is (or extends) the Triton GPU executor."""
        return issubclass(executor_class(self.executor), GpuExecutor)


@dataclass
class Run:
    """A run's data and network, where it stands among MPI ranks, and its printer."""

    data: Dataset
    network: Network
    rank: int
    n_ranks: int
    echo: Callable[[str], None]

    @property
    def root(self) -> bool:
        """Rank 0 (or the only process): prints, evaluates and writes the outputs."""
        return self.rank == 0


def start_run(data: DataOptions, net: NetOptions, run: ExecutorOptions, *, seed: int,
              quiet: bool, outputs: dict, header: Callable[[Run], str]) -> Run:
    """Check the outputs, load the data, build the network and print ``header(run)``.

    ``outputs``: option name -> path (or None) of the files written at the end;
    none may be one of the data files (see :func:`..fileio.check_outputs`).
    Under MPI every rank calls this with the same seed (same data, same
    batches); only rank 0 checks and writes outputs, and prints.
    """
    if run.distributed:
        from ..executors.mpi import set_comm_timeout

        set_comm_timeout(run.comm_timeout)
    rank, n_ranks = mpi_world() if run.distributed else (0, 1)
    if rank == 0:   # fail on an unwritable output now, not after the training it would lose
        check_outputs(outputs, data.input_files())
    if run.on_gpu:   # no GPU (or no Triton): say so before loading any data
        from ..executors.gpu import load_backend, select_device

        select_device(*load_backend())
    dataset = data.load(seed, quiet or rank != 0)
    echo = click.echo if rank == 0 and not quiet else (lambda line: None)
    started = Run(dataset, net.build(dataset), rank, n_ranks, echo)
    if n_ranks > 1:
        check_agreement(started)
    echo(header(started))
    for note in getattr(dataset, "notes", ()):   # what the loader decided for a table
        echo(note)
    return started


def check_agreement(started: Run) -> None:
    """Under MPI: stop unless every rank has the same options, network and data.

    Paths are left out of the options: each host may keep the data (and
    write its outputs) elsewhere; the data's content is compared instead.
    """
    from ..checkpoint import data_fingerprint
    from ..executors.mpi import check_ranks_agree

    ctx = click.get_current_context(silent=True)
    options = sorted((name, repr(value)) for name, value in (ctx.params if ctx else {}).items()
                     if not isinstance(value, Path))
    network, data = started.network, started.data
    check_ranks_agree({
        "environment": environment(),
        "options": repr(options),
        "network": repr((network.spec, network.activations, network.loss)),
        "data": data_fingerprint(data.x_train, data.y_train, data.x_val, data.y_val)})


def run_layout(started: Run, run: ExecutorOptions) -> dict:
    """Where this run trains, for its checkpoints: executor, ranks, threads, the ranks' hosts.

    Under MPI a collective (every rank calls it): one small allgather.
    """
    import socket

    hosts = [socket.gethostname()]
    if started.n_ranks > 1:
        from ..executors.mpi import import_mpi

        hosts = import_mpi().COMM_WORLD.allgather(hosts[0])
    return {"executor": run.executor, "ranks": started.n_ranks, "threads": run.threads,
            "hosts": hosts}


def environment() -> str:
    """The versions that must agree between hosts: Python and the packages a step runs."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "none"

    return " ".join([f"python {sys.version.split()[0]}",
                     *(f"{name} {installed(name)}" for name in ("numpy", "mpi4py",
                                                                "parallel-backprop"))])


def mpi_world() -> tuple[int, int]:
    """This process's (rank, ranks); ranks other than 0 leave Ctrl-C and SIGTERM to rank 0.

    mpiexec forwards both signals to every rank, and each would notice one at
    a different step; rank 0 alone stops (after writing a checkpoint, when
    asked to) and its abort then ends the others.
    """
    from ..executors.mpi import world

    rank, n_ranks = world()
    if rank != 0:
        ignore_stop_signals()
    return rank, n_ranks


def launch_ranks(run: ExecutorOptions, batch_size: int, outputs: dict,
                 inputs: dict | None = None, folder: Path | None = None) -> int:
    """``--ranks N``: check what can be checked here, then run this command under mpiexec.

    The ranks re-run this process's whole command line (:func:`command_argv`)
    but ``--ranks``, global options such as ``--plugin`` included.
    """
    from ..executors.mpi import check_hosts, check_launch, launch_with_restarts

    if run.ranks is None:
        given = f"--hostfile {run.hostfile}" if run.hostfile else f"--restarts {run.restarts}"
        raise ConfigError(f"{given}: needs --ranks N (under mpiexec, leave it out)")
    if run.restarts and folder is None:
        raise ConfigError(f"--restarts {run.restarts}: needs --checkpoint-dir (where the job "
                          "resumes from)")
    if not run.distributed:
        raise ConfigError(f"--ranks {run.ranks}: only the mpi executor runs on ranks; add "
                          f"--executor mpi or drop --ranks (executor {run.executor!r})")
    mpiexec = check_launch(run.ranks, batch_size)
    check_outputs(outputs, inputs)
    if run.hostfile is not None:
        check_hosts(run.hostfile, environment())
    return launch_with_restarts(mpiexec, run.ranks, command_argv(), run.hostfile,
                                run.restarts, folder)


def command_plugins() -> tuple[str, ...]:
    """The ``pbp --plugin`` modules of this command line, for the processes it starts."""
    ctx = click.get_current_context(silent=True)
    return tuple(ctx.find_root().params.get("plugins") or ()) if ctx is not None else ()


def command_argv() -> list[str]:
    """The arguments of this ``pbp`` command line (without the program name).

    :func:`..main` passes them in the root context's ``obj``; when the click
    group is called some other way, they are ``sys.argv``'s.
    """
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    if isinstance(obj, dict) and obj.get("argv") is not None:
        return list(obj["argv"])
    return sys.argv[1:]
