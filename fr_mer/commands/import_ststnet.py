"""`fr-mer import-ststnet`: STSTNet's released inputs -> an fr-mer cache."""
from __future__ import annotations

from pathlib import Path

import click

from fr_mer.pipeline.composite import read_composite_list
from fr_mer.ststnet_import import import_ststnet


@click.command("import-ststnet")
@click.option("--images", type=click.Path(path_type=Path), required=True,
              help="Folder of STSTNet's released 28x28 flow images ('{subject}_{clip} .png').")
@click.option("--labels", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Composite label list (official format); default: the official list shipped with fr-mer.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Cache file to write (HDF5).")
@click.option("--overwrite", is_flag=True, help="Rebuild the cache instead of resuming it.")
def command(images: Path, labels: Path | None, out: Path, overwrite: bool) -> None:
    """Convert STSTNet's released composite inputs into an fr-mer cache."""
    with click.progressbar(length=len(read_composite_list(labels)), label="importing") as bar:
        summary = import_ststnet(images, labels, out, overwrite=overwrite, on_sample=lambda key: bar.update(1))
    click.echo(f"{out}: {summary.written} written, {summary.skipped} already there, "
               f"{len(summary.failed)} failed")
    for key, reason in list(summary.failed.items())[:20]:
        click.echo(f"  failed {key}: {reason}")
