"""`fr-mer probe`: the linear probe of a cache's flow inputs, in the reports of `fr-mer evaluate`."""
from __future__ import annotations

from pathlib import Path

import click

from fr_mer.commands.common import allow_incomplete_option, jobs_option, protocol_options, resolve_protocol
from fr_mer.output_paths import check_output, check_results_folder
from fr_mer.pipeline.cache import check_finished
from fr_mer.probe import DEFAULT_C, FLOW_CHANNELS, ProbeConfig
from fr_mer.results_folder import SUMMARY_FILE


def _channels(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in value.split(",") if c.strip())


@click.command("probe")
@click.option("--cache", type=click.Path(path_type=Path), required=True,
              help="Cache written by `fr-mer preprocess` or `fr-mer import-ststnet`.")
@protocol_options
@click.option("--channels", default=",".join(FLOW_CHANNELS), show_default=True, callback=_channels,
              help="Flow channels the probe reads, comma-separated (u, v, strain).")
@click.option("--C", "C", type=float, default=DEFAULT_C, show_default=True,
              help="Inverse L2 regularisation of the logistic regression.")
@jobs_option("Worker processes fitting folds at once, one core's share each [default: every usable core, "
             "capped by the folds]. The figures do not depend on it.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Results folder.")
@allow_incomplete_option
def command(cache: Path, protocol: str, database: str | None, classes: str | None, composite_list: Path | None,
            channels: tuple[str, ...], C: float, jobs: int | None, out: Path,
            allow_incomplete: bool) -> None:
    """Leave-one-subject-out logistic regression on the cache's flow inputs (no network).

    How much class signal preprocessing left: each fold standardises the training
    subjects' flattened inputs and fits an L2 logistic regression (scikit-learn,
    classes balanced), which predicts the held-out subject once. Writes the
    reports of `fr-mer evaluate` (metrics.json, predictions.csv, folds.csv,
    summary.md, confusion plots) to OUT.
    """
    from fr_mer.probe import run_probe

    check_output(out, "--out", {"--cache": cache, "--composite-list": composite_list}, folder=True)
    check_results_folder(out, "--out")
    warning = check_finished(cache, allow_incomplete=allow_incomplete)
    if warning:
        click.echo(warning, err=True)
    choice = resolve_protocol(cache, protocol, database, classes, composite_list)
    config = ProbeConfig(protocol=choice.protocol, database=choice.database, classes=choice.classes,
                         composite_list=choice.composite_list, channels=channels, C=C)
    run_probe(cache, out, config, jobs=jobs)
    click.echo((Path(out) / SUMMARY_FILE).read_text())
