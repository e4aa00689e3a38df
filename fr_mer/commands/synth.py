"""``fr-mer synth``: write a synthetic micro-expression database in the real layouts."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from fr_mer.errors import ParameterError
from fr_mer.limits import MAX_SEED, MAX_SYNTH_CLIPS, MAX_SYNTH_SUBJECTS
from fr_mer.output_paths import check_not_an_input
from fr_mer.pipeline.synth.config import (
    COMPOSITE,
    DEFAULT_CLIPS_PER_SUBJECT,
    DEFAULT_FRAME_SIZE,
    DEFAULT_SEED,
    DEFAULT_SUBJECTS,
    LAYOUT_FRAME_SIZE,
    LAYOUTS,
    SynthSettings,
    check_frame_size,
    default_frame_size,
)
from fr_mer.pipeline.synth.faces import load_photos
from fr_mer.pipeline.synth.writing import default_subjects, write_synth

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def _parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    match = _SIZE.match(value)
    if match is None:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 320x240")
    try:
        return check_frame_size((int(match.group(1)), int(match.group(2))))
    except ParameterError as error:
        raise click.BadParameter(str(error)) from None


@click.command("synth")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder to write (created; must be empty unless --overwrite).")
@click.option("--layout", type=click.Choice((*LAYOUTS, COMPOSITE)), default=COMPOSITE,
              show_default=True,
              help="Database layout to write; 'composite' writes the composite's three under OUT/casme2, "
                   "OUT/samm, OUT/smic and a composite list for them; 'casme3' writes CAS(ME)^3 part A.")
@click.option("--subjects", type=click.IntRange(min=1, max=MAX_SYNTH_SUBJECTS), default=None,
              help=f"Subjects per database (distinct derived identities). Default: {DEFAULT_SUBJECTS} from "
                   f"the astronaut; with --faces, every person of the folder once, shared out among the "
                   f"databases.")
@click.option("--clips-per-subject", type=click.IntRange(min=1, max=MAX_SYNTH_CLIPS), default=DEFAULT_CLIPS_PER_SUBJECT,
              show_default=True,
              help="Clips per subject; the three classes are balanced within each subject.")
@click.option("--faces", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="Folder of face photos (upright, frontal, one face each) to derive subjects "
                   "from; the file name up to its first '_' names the person (one subject per person). "
                   "Default: scikit-image's bundled astronaut photo.")
@click.option("--seed", type=click.IntRange(min=0, max=MAX_SEED), default=DEFAULT_SEED, show_default=True,
              help="Random seed; the same seed and options write the same frame bytes.")
@click.option("--size", "frame_size", default=None, callback=_parse_size,
              help=f"Frame size WIDTHxHEIGHT in pixels (the face spans about 60-70% of the height; "
                   f"casme3 about 35-45%). "
                   f"Default: {DEFAULT_FRAME_SIZE[0]}x{DEFAULT_FRAME_SIZE[1]}"
                   + "".join(f"; {name} {w}x{h}" for name, (w, h) in LAYOUT_FRAME_SIZE.items()) + ".")
@click.option("--amplitude", "amplitude_scale", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True,
              help="Multiplier of the expression motion: 1 is micro-expression size (1-2 px on a 128 px "
                   "face); e.g. 4 makes it large enough to see in the raw frames. Recorded in the manifest.")
@click.option("--overwrite", is_flag=True,
              help="Replace OUT when it holds an earlier fr-mer synth output (other folders are "
                   "never deleted).")
def command(out: Path, layout: str, subjects: int | None, clips_per_subject: int, faces: Path | None,
            seed: int, frame_size: tuple[int, int] | None, amplitude_scale: float, overwrite: bool) -> None:
    """Write synthetic micro-expression clips in the real CASME II / SAMM / SMIC-HS / CAS(ME)^3 layouts.

    Subjects are derived from face photos; each clip is a class-specific set of
    facial action units (negative: brow lowerer, lip-corner depressor; positive:
    lip-corner puller, cheek raiser; surprise: brow raisers, upper-lid raiser,
    jaw drop) of at most 2 px on a 128 px face, onset -> apex -> offset, with
    head motion, blinks, lighting change, sensor noise and JPEG compression.
    The output reads like the real releases: `fr-mer scan` and `fr-mer preprocess`
    take the paths printed at the end. See docs/synthetic-data.md.
    """
    check_not_an_input(out, "--out", {"--faces": faces})
    photos = None
    if subjects is None:
        photos = load_photos(faces) if faces is not None else None
        subjects = DEFAULT_SUBJECTS if photos is None else default_subjects(photos, layout)
    settings = SynthSettings(layout=layout, subjects=subjects, clips_per_subject=clips_per_subject,
                             faces=None if faces is None else str(faces), seed=seed,
                             frame_size=frame_size or default_frame_size(layout), amplitude_scale=amplitude_scale)
    total = len(settings.databases) * subjects * clips_per_subject
    with click.progressbar(length=total, label="synth", file=sys.stderr, show_pos=True) as bar:
        summary = write_synth(out, settings, photos=photos, overwrite=overwrite,
                              progress=lambda clip: bar.update(1))
    for line in summary.lines():
        click.echo(line)
