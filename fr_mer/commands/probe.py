"""`fr-mer probe`: the linear probe of a cache's flow inputs, in the reports of `fr-mer evaluate`."""
from __future__ import annotations

from pathlib import Path

import click

from fr_mer.commands.common import check_writable_target
from fr_mer.pipeline.labels import DATABASES
from fr_mer.probe import DEFAULT_C, FLOW_CHANNELS, ProbeConfig
from fr_mer.protocols import PROTOCOLS


def _channels(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in value.split(",") if c.strip())


@click.command("probe")
@click.option("--cache", type=click.Path(path_type=Path), required=True,
              help="Cache written by `fr-mer preprocess` or `fr-mer import-ststnet`.")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="composite", show_default=True,
              help="composite: MEGC2019 68-subject LOSO over the pooled databases; loso: one database.")
@click.option("--database", type=click.Choice(DATABASES), default=None, help="The database for --protocol loso.")
@click.option("--composite-list", type=click.Path(path_type=Path), default=None,
              help="Composite sample list (official format); default: the official MEGC2019 list.")
@click.option("--channels", default=",".join(FLOW_CHANNELS), show_default=True, callback=_channels,
              help="Flow channels the probe reads, comma-separated (u, v, strain).")
@click.option("--C", "C", type=float, default=DEFAULT_C, show_default=True,
              help="Inverse L2 regularisation of the logistic regression.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Worker processes fitting folds at once, one core's share each [default: every usable core, "
                   "capped by the folds]. The figures do not depend on it.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Results folder.")
def command(cache: Path, protocol: str, database: str | None, composite_list: Path | None,
            channels: tuple[str, ...], C: float, jobs: int | None, out: Path) -> None:
    """Leave-one-subject-out logistic regression on the cache's flow inputs (no network).

    How much class signal preprocessing left: each fold standardises the training
    subjects' flattened inputs and fits an L2 logistic regression (scikit-learn,
    classes balanced), which predicts the held-out subject once. Writes the
    reports of `fr-mer evaluate` (metrics.json, predictions.csv, folds.csv,
    summary.md, confusion plots) to OUT.
    """
    from fr_mer.probe import run_probe

    check_writable_target(out, "--out", folder=True)
    if protocol == "loso" and database is None:
        raise click.UsageError("--protocol loso needs --database")
    config = ProbeConfig(protocol=protocol, database=database,
                         composite_list=str(composite_list) if composite_list else None,
                         channels=channels, C=C)
    run_probe(cache, out, config, jobs=jobs)
    click.echo((Path(out) / "summary.md").read_text())
