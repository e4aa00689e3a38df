"""``fr-mer scan``: resolve every annotated clip to its frame files, write the table, summarise.

Its dataset inputs, shared with ``fr-mer preprocess``, are :mod:`fr_mer.commands.dataset_options`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from fr_mer.commands.dataset_options import dataset_inputs, dataset_options, scan_from_options
from fr_mer.output_paths import check_not_an_input
from fr_mer.pipeline.scan import format_summary, write_table


@click.command("scan")
@dataset_options
@click.option("--out", type=click.Path(path_type=Path, allow_dash=True),
              default="-", show_default=True,
              help="Table to write (CSV, one row per clip). '-' writes it to standard output "
                   "and the summary to standard error.")
def command(out: Path, **kwargs: object) -> None:
    """Resolve every annotated clip to its frame files and report what was found.

    Computes nothing from the images. Writes one row per clip (dataset, subject,
    clip, emotion, label, onset/apex/offset frame and path, status, problem, ...)
    and a summary: counts per database, class and status, and every problem.
    Exit status 0 whenever the inputs could be read, whatever the rows' status.
    """
    to_stdout = str(out) == "-"
    if not to_stdout:
        check_not_an_input(out, "--out", dataset_inputs(**kwargs))
        if out.is_dir():
            raise click.BadParameter(f"{out} is a folder; give the table's file name", param_hint="--out")
    result = scan_from_options(**kwargs)
    if to_stdout:
        try:
            if sys.stdout is None:  # started with stdout closed (`>&-`)
                raise BrokenPipeError
            write_table(result.clips, sys.stdout)
            sys.stdout.flush()
        except (BrokenPipeError, ValueError, OSError) as error:  # ValueError: a closed file object
            reason = getattr(error, "strerror", None) or "it is closed"
            raise click.ClickException(f"--out -: cannot write the table to standard output ({reason}); "
                                       "give --out FILE") from None
        click.echo(format_summary(result), err=True, nl=False)
    else:
        try:
            write_table(result.clips, out)
        except OSError as error:
            raise click.ClickException(
                f"{out}: cannot write the table ({error.strerror}); check --out"
            ) from None
        click.echo(format_summary(result, table=str(out)), nl=False)
