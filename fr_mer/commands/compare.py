"""`fr-mer compare`: paired statistics for two finished runs (same seeds, folds and samples)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from fr_mer.limits import MAX_BOOTSTRAP


@click.command("compare")
@click.argument("run_a", type=click.Path(path_type=Path, file_okay=False))
@click.argument("run_b", type=click.Path(path_type=Path, file_okay=False))
@click.option("--also-a", "more_a", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Another run folder of A's model and settings with other seeds (--first-seed), merged "
                   "into A's seeds; repeatable.")
@click.option("--also-b", "more_b", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Another run folder of B's, as --also-a; repeatable.")
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(min=1, max=MAX_BOOTSTRAP),
              default=1000, show_default=True,
              help="Bootstrap resamples of the subjects for the confidence interval.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the bootstrap's random generator (the same seed gives the same interval).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write every figure (per seed, per scope, McNemar counts) to this JSON file.")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), default=None,
              help="Also write the printed tables and verdict to this Markdown file.")
def command(run_a: Path, run_b: Path, more_a: tuple[Path, ...], more_b: tuple[Path, ...], n_bootstrap: int,
            seed: int, json_path: Path | None, markdown_path: Path | None) -> None:
    """Compare RUN_A with RUN_B, two `fr-mer evaluate --out` folders run with the same seeds.

    Prints per-seed differences, the mean difference A - B with its standard
    error, a bootstrap interval over subjects, wins per seed and McNemar's test,
    for all samples and per database, then a one-line verdict (docs/comparing.md).
    Seeds of one side run by separate calls join it with --also-a / --also-b.
    """
    from fr_mer.compare import compare_runs
    from fr_mer.comparison_report import comparison_record, to_markdown
    from fr_mer.atomic import write_text
    from fr_mer.output_paths import check_output

    runs = {"RUN_A": run_a, "RUN_B": run_b, "--also-a": more_a, "--also-b": more_b}
    check_output(json_path, "--json", runs, folder=False)
    check_output(markdown_path, "--markdown", {**runs, "--json": json_path}, folder=False)

    comparison = compare_runs([run_a, *more_a], [run_b, *more_b], n_bootstrap=n_bootstrap, seed=seed)
    markdown = to_markdown(comparison)
    for path, text in ((json_path, json.dumps(comparison_record(comparison), indent=2) + "\n"),
                       (markdown_path, markdown)):
        if path is not None:
            try:  # whole or not at all: a full disk leaves no half-written file
                write_text(path, text)
            except OSError as error:
                raise click.ClickException(f"{path}: cannot be written ({error.strerror or error}); free space "
                                           "or choose another path") from None
    click.echo(markdown.rstrip("\n"))
