"""The ``pbp`` command line: train, predict, fetch, bench, tune, study, report.

Options are validated here, at the boundary; any bad input ends with one
line on stderr (``pbp: error: ...``) and a non-zero exit status, never a
traceback. Outputs are checked for writability before training starts and
written atomically after it ends.

- :mod:`.options`  options shared by several commands, declared once
- :mod:`.runs`     option groups and the start of a training run (train, tune)
- one module per command or group: :mod:`.train`, :mod:`.predict`,
  :mod:`.fetch`, :mod:`.bench`, :mod:`.tune`, :mod:`.study` (study, report)
"""

from __future__ import annotations

import sys
import time

import click

from .. import __version__
from ..errors import PbpError
from ..fileio import one_line, os_reason
from ..interrupts import exit_status, stop_on_signals
from .bench import bench_command
from .fetch import fetch_command
from ..plugins import load_plugins
from .predict import predict_command
from .study import report_command, study_command
from .train import train_command
from .tune import tune_command

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pbp")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import MODULE (a module name or a .py file) before the command, so that "
                   "the activations and executors it registers can be used; repeatable.")
def cli(plugins: tuple[str, ...]) -> None:
    """Train multilayer perceptrons with parallel backpropagation."""
    load_plugins(plugins)


for command in (train_command, predict_command, fetch_command, bench_command, tune_command,
                study_command, report_command):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pbp`` script: one-line errors, non-zero exit codes."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        # The arguments travel in ``obj`` so that --ranks can start the same command.
        with stop_on_signals():   # SIGTERM stops a run as Ctrl-C does
            result = cli.main(args=args, prog_name="pbp", standalone_mode=False,
                              obj={"argv": args})
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        return _fail(exc.exit_code, exc.format_message())
    except (click.Abort, KeyboardInterrupt) as exc:
        # Click turns a KeyboardInterrupt into Abort: the message is the original's.
        # 130 for Ctrl-C, 143 for SIGTERM, as a shell reports them.
        return _fail(exit_status(), str(exc.__cause__ or exc), what="interrupted")
    except PbpError as exc:
        return _fail(1, str(exc))
    except MemoryError:
        return _fail(1, "out of memory; try a smaller --batch-size or --limit")
    except OSError as exc:   # a file failing where no reader or writer named it: still one line
        return _fail(1, f"{exc.filename}: {os_reason(exc)}" if exc.filename else one_line(exc))
    return result if isinstance(result, int) else 0


def _fail(code: int, message: str = "", what: str = "error") -> int:
    """Print ``pbp: error: <message>``; as one of several MPI ranks, name it and end the job.

    Returning would leave the other ranks waiting for this one in a collective
    (or this one waiting for them in MPI_Finalize): the job would hang. A rank
    other than 0 waits a moment first: every rank runs the same command, and
    when rank 0 meets the same error, its line and abort are the job's one
    line; an error of this rank alone (its host lacks the data) still shows.
    """
    from ..executors.mpi import OTHER_RANKS_WAIT_S, abort_job, distributed_rank, rank_label

    where = rank_label()
    if where:
        what += f" on {where}"
        if distributed_rank()[0] != 0:
            time.sleep(OTHER_RANKS_WAIT_S)
    click.echo(f"pbp: {what}" + (f": {message}" if message else ""), err=True)
    abort_job(code)
    return code
