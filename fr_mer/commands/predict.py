"""`fr-mer predict`: class probabilities for one onset/apex pair."""
from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("predict")
@click.option("--model", "checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              required=True, help="Checkpoint written by `fr-mer train`.")
@click.option("--onset", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="Onset (neutral) frame image.")
@click.option("--apex", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="Apex frame image.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(checkpoint: Path, onset: Path, apex: Path, as_json: bool) -> None:
    """Align the faces, compute the onset->apex flow and strain, and classify."""
    from fr_mer.inference import predict_pair
    from fr_mer.pipeline.preprocess import SampleError

    try:
        result = predict_pair(checkpoint, onset, apex)
    except SampleError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({"probabilities": result.probabilities, "predicted": result.predicted,
                               "flags": result.flags, "note": result.params_note}, indent=2))
        return
    for name, p in result.probabilities.items():
        click.echo(f"{name:9s} {p:.4f}")
    click.echo(f"predicted: {result.predicted}" + (f"  (flags: {', '.join(result.flags)})" if result.flags else ""))
    click.echo(f"note: {result.params_note}")
