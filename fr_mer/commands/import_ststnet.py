"""`fr-mer import-ststnet`: STSTNet's released inputs (and apex faces) -> an fr-mer cache."""
from __future__ import annotations

from pathlib import Path

import click

from fr_mer.limits import MAX_IMAGE_SIDE
from fr_mer.output_paths import check_not_an_input
from fr_mer.pipeline.align import AlignParams
from fr_mer.pipeline.cache import check_replaceable
from fr_mer.pipeline.composite import read_composite_list
from fr_mer.ststnet_import import import_ststnet


@click.command("import-ststnet")
@click.option("--images", type=click.Path(path_type=Path), required=True,
              help="Folder of STSTNet's released 28x28 flow images ('{subject}_{clip} .png').")
@click.option("--labels", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Composite label list (official format); default: the official list shipped with fr-mer.")
@click.option("--apex-faces", type=click.Path(path_type=Path), default=None,
              help="Folder of the release's apex face crops ('{subject}_{clip}.jpg'): also store each "
                   "sample's apex face aligned by fr-mer's rule (apex_face), its 68 landmarks (landmarks) "
                   "and the landmarks on the flow image (flow_landmarks), for micro_attention and htnet.")
@click.option("--face-size", type=click.IntRange(min=16, max=MAX_IMAGE_SIDE),
              default=AlignParams().face_size, show_default=True,
              help="With --apex-faces: side of the stored aligned apex face.")
@click.option("--landmarks-model", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="With --apex-faces: dlib's shape_predictor_68_face_landmarks.dat "
                   "[default: the one of face-recognition-models].")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Cache file to write (HDF5).")
@click.option("--overwrite", is_flag=True, help="Rebuild the cache instead of resuming it.")
def command(images: Path, labels: Path | None, apex_faces: Path | None, face_size: int,
            landmarks_model: Path | None, out: Path, overwrite: bool) -> None:
    """Convert STSTNet's released composite inputs into an fr-mer cache."""
    check_not_an_input(out, "--out", {"--images": images, "--labels": labels, "--apex-faces": apex_faces,
                                      "--landmarks-model": landmarks_model})
    if overwrite and out.is_file():
        check_replaceable(out)
    if apex_faces is None and (landmarks_model is not None or face_size != AlignParams().face_size):
        raise click.UsageError("--face-size and --landmarks-model apply only with --apex-faces")
    with click.progressbar(length=len(read_composite_list(labels)), label="importing") as bar:
        summary = import_ststnet(
            images, labels, out, apex_faces=apex_faces, align=AlignParams(face_size=face_size),
            predictor=None if landmarks_model is None else str(landmarks_model),
            overwrite=overwrite, on_sample=lambda key: bar.update(1),
        )
    for line in summary.lines(out):
        click.echo(line)
