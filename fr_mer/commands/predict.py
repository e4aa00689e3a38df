"""`fr-mer predict`: class probabilities for one onset/apex pair, or for a clip (its apex spotted or given)."""
from __future__ import annotations

import json
from pathlib import Path

import click


def _frame_index(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        index = int(value)
    except ValueError:
        index = -1
    if index < 0:
        raise click.BadParameter(f"{value!r}: with --clip, give a frame index (0 is the clip's first frame)",
                                 param_hint=option)
    return index


def _image_file(value: str | None, option: str) -> Path:
    if value is None:
        raise click.UsageError(f"give {option} (an image file), or --clip (a folder of frames or a video)")
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(f"{value!r}: no such image file", param_hint=option)
    return path


@click.command("predict")
@click.option("--model", "checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              required=True, help="Checkpoint written by `fr-mer train`.")
@click.option("--clip", type=click.Path(path_type=Path, exists=True), default=None,
              help="A clip: a folder of its frames (in the order of the numbers in their names) or a video "
                   "file OpenCV reads. Its apex is spotted between --onset and the last frame unless --apex "
                   "is given.")
@click.option("--onset", default=None,
              help="Onset (neutral) frame: an image file; with --clip, its index in the clip (default 0).")
@click.option("--apex", default=None,
              help="Apex frame: an image file; with --clip, its index in the clip (default: spotted).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(checkpoint: Path, clip: Path | None, onset: str | None, apex: str | None, as_json: bool) -> None:
    """Align the faces, compute the onset->apex flow and strain as `fr-mer preprocess` does, and classify."""
    from fr_mer.inference import predict_clip, predict_pair

    if clip is not None:
        result = predict_clip(checkpoint, clip, onset=_frame_index(onset, "--onset"),
                              apex=_frame_index(apex, "--apex"))
        frames = {"onset": result.onset, "apex": result.apex, "offset": result.offset,
                  "apex_spotted": result.apex_spotted,
                  "names": dict(zip(("onset", "apex", "offset"), result.frame_names))}
    else:
        result = predict_pair(checkpoint, _image_file(onset, "--onset"), _image_file(apex, "--apex"))
        frames = None
    if as_json:
        record = {"probabilities": result.probabilities, "predicted": result.predicted,
                  "flags": result.flags, "note": result.params_note}
        click.echo(json.dumps(record if frames is None else {**record, "frames": frames}, indent=2))
        return
    for name, p in result.probabilities.items():
        click.echo(f"{name:9s} {p:.4f}")
    click.echo(f"predicted: {result.predicted}" + (f"  (flags: {', '.join(result.flags)})" if result.flags else ""))
    if frames is not None:
        names = frames["names"]
        click.echo(f"frames: onset {result.onset} ({names['onset']}), apex {result.apex} ({names['apex']}, "
                   f"{'spotted' if result.apex_spotted else 'given'}), offset {result.offset} ({names['offset']})")
    click.echo(f"note: {result.params_note}")
