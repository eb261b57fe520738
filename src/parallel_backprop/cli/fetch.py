"""``pbp fetch``: find a data set's files, downloading what is missing; print their paths."""

from __future__ import annotations

from pathlib import Path

import click

from ..data import DATASETS
from ..data.sources import IMAGE_DOWNLOADS, locate_images, locate_kdd
from .options import RegistryChoice, quiet_option

KDD = "kdd99"   # the data set whose files locate_kdd finds


def fetchable() -> list[str]:
    """The registry's data sets that are read from files (all but the generated ones)."""
    return [name for name in DATASETS
            if name in IMAGE_DOWNLOADS or name == KDD]


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
    if dataset == KDD:
        paths = [locate_kdd("full" if full else None, data_dir, progress=not quiet)]
    else:
        paths = list(locate_images(dataset, data_dir, progress=not quiet).values())
    for path in paths:
        click.echo(str(path))
