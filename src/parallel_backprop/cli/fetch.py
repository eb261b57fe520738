"""``pbp fetch``: find a data set's files, downloading what is missing; print their paths."""

from __future__ import annotations

from pathlib import Path

import click

from ..data import fetch_dataset, fetchable
from .options import RegistryChoice, quiet_option


@click.command("fetch")
@click.argument("dataset", type=RegistryChoice(fetchable))
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="Folder to look in first (then $PBP_DATA_DIR, the cache, system packages).")
@click.option("--full", is_flag=True, help="kdd99: the full kddcup.data.gz, not the 10% file.")
@quiet_option("Print only the paths.")
def fetch_command(dataset: str, data_dir: Path | None, full: bool, quiet: bool):
    """Find DATASET's files, downloading (checksum-verified) what is missing; print the paths.

    Run it once where there is network, then train offline.
    """
    # --full chooses KDD Cup 99's full file; the other data sets do not read kdd_file.
    for path in fetch_dataset(dataset, data_dir, progress=not quiet,
                              kdd_file="full" if full else None):
        click.echo(str(path))
