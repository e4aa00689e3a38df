"""``fr-mer preprocess``: turn the scanned clips into cache samples, in parallel and resumably."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from fr_mer.commands.dataset_options import clips_from_options, dataset_inputs, dataset_options
from fr_mer.commands.name_values import parse_name_values
from fr_mer.errors import ParameterError
from fr_mer.limits import MAX_CLIP_FRAMES, MAX_FLOW_BATCH, MAX_IMAGE_SIDE, MAX_JOBS, MAX_THREADS
from fr_mer.output_paths import check_not_an_input
from fr_mer.pipeline.align import AlignParams
from fr_mer.pipeline.cache import check_replaceable
from fr_mer.pipeline.clips import OK, REPAIRED, UNUSABLE
from fr_mer.pipeline.flow import (DEFAULT_FEATURE_SIZE, DEFAULT_FLOW_SIZE, DEFAULT_NORMALISATION, FLOW_DEVICES,
                                  NORMALISATIONS, TVL1Params, flow_implementation)
from fr_mer.pipeline.headmotion import DEFAULT_METHOD, METHODS
from fr_mer.pipeline.preprocess import (
    DEFAULT_FLOW_BATCH,
    ClipOptions,
    DynamicImageOptions,
    PreprocessParams,
    PreprocessRun,
    default_jobs,
)
from fr_mer.pipeline.temporal import DEFAULT_FRAMES_PER_SEGMENT


def _field_names(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def _overrides(cls: type, items: tuple[str, ...], option: str) -> object:
    """``cls`` with ``NAME=VALUE`` items applied; values typed like the field's default."""
    defaults = cls()
    changes: dict[str, object] = {}
    for name, text in parse_name_values(items, option, [f.name for f in dataclasses.fields(cls)]).items():
        item = f"{name}={text}"
        default = getattr(defaults, name)
        try:
            if isinstance(default, bool):
                if text.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(text)
                value: object = text.strip().lower() in ("true", "1", "yes")
            else:
                value = type(default)(text)
        except ValueError:
            raise click.BadParameter(
                f"{item!r}: {name} takes a {type(default).__name__} value", param_hint=option
            ) from None
        changes[name] = value
    try:
        return dataclasses.replace(defaults, **changes)
    except ParameterError as error:  # a NAME=VALUE out of its range: the option's own value is wrong
        raise click.BadParameter(str(error), param_hint=option) from None


@click.command("preprocess")
@dataset_options
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="HDF5 cache to create, or to complete when it exists with the same parameters "
                   "(layout: docs/cache-format.md).")
@click.option("--jobs", type=click.IntRange(min=1, max=MAX_JOBS), default=None,
              help="Worker processes, one core each [default: every usable core].")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run the clips on a dask.distributed cluster: the scheduler's address (tcp://host:8786) "
                   "or scheduler file (.json). The workers must see the frames at the same paths; this "
                   "process writes --out (docs/cluster.md). Needs fr-mer[cluster].")
@click.option("--overwrite", is_flag=True,
              help="Delete the cache at --out first and recompute everything (needed when the "
                   "parameters changed: samples made two ways are never mixed).")
@click.option("--flow-size", type=click.IntRange(min=16, max=MAX_IMAGE_SIDE),
              default=DEFAULT_FLOW_SIZE, show_default=True,
              help="Side in pixels of the aligned face on which TV-L1 runs (docs/pipeline.md "
                   "measures its effect on accuracy and time).")
@click.option("--flow-device", type=click.Choice(FLOW_DEVICES), default="opencv", show_default=True,
              help="Who computes TV-L1: opencv = OpenCV's DualTVL1OpticalFlow in each worker; cpu or cuda = "
                   "fr-mer's torch port (same algorithm and parameters, docs/tvl1-torch.md) in this process, "
                   "--flow-batch pairs at once on that device, while the workers align. Recorded in the cache "
                   "(opencv or torch): a cache is completed with the same choice.")
@click.option("--flow-batch", type=click.IntRange(min=1, max=MAX_FLOW_BATCH),
              default=DEFAULT_FLOW_BATCH, show_default=True,
              help="Pairs per torch TV-L1 batch with --flow-device cpu or cuda (lower it if the GPU runs out "
                   "of memory).")
@click.option("--flow-threads", type=click.IntRange(min=1, max=MAX_THREADS), default=None,
              help="CPU threads of the torch TV-L1 in this process with --flow-device cpu [default: the usable "
                   "cores divided among this process and the --jobs workers; 1 on a machine shared with other "
                   "jobs, docs/tvl1-torch.md].")
@click.option("--feature-size", type=click.IntRange(min=1, max=MAX_IMAGE_SIDE),
              default=DEFAULT_FEATURE_SIZE, show_default=True,
              help="Side of the 'flow' model input (u, v, strain).")
@click.option("--normalisation", type=click.Choice(sorted(NORMALISATIONS)), default=DEFAULT_NORMALISATION,
              show_default=True,
              help="Scaling of the 'flow' input: minmax255 = each channel of each sample to 0..255 "
                   "(STSTNet's inputs); none = pixels and unitless strain.")
@click.option("--face-size", type=click.IntRange(min=16, max=MAX_IMAGE_SIDE),
              default=AlignParams().face_size, show_default=True,
              help="Side of the stored aligned onset and apex faces (onset_face, apex_face).")
@click.option("--head-motion", type=click.Choice(METHODS), default=DEFAULT_METHOD, show_default=True,
              help="Head-motion compensation method (docs/pipeline.md, 'Head motion', says what each "
                   "does and the measurement behind the default).")
@click.option("--tvl1", "tvl1_items", multiple=True, metavar="NAME=VALUE",
              help=f"A TV-L1 parameter (repeatable), e.g. --tvl1 lambda_=0.1. Names: {_field_names(TVL1Params)}.")
@click.option("--align", "align_items", multiple=True, metavar="NAME=VALUE",
              help=f"A face-alignment parameter (repeatable), e.g. --align upsample=2. Names: "
                   f"{', '.join(f.name for f in dataclasses.fields(AlignParams) if f.name != 'face_size')}.")
@click.option("--landmarks-model", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="dlib's shape_predictor_68_face_landmarks.dat [default: the one of "
                   "face-recognition-models].")
@click.option("--with-clip", is_flag=True,
              help="Also store 'clip_frames': the aligned clip onset..offset resampled to "
                   "--clip-length frames (MERANet).")
@click.option("--clip-length", type=click.IntRange(min=2, max=MAX_CLIP_FRAMES),
              default=ClipOptions().length, show_default=True,
              help="Frames of 'clip_frames'.")
@click.option("--clip-size", type=click.IntRange(min=16, max=MAX_IMAGE_SIDE),
              default=ClipOptions().size, show_default=True,
              help="Side in pixels of the 'clip_frames' crops.")
@click.option("--with-dynamic-images", is_flag=True,
              help="Also store 'dynamic_images': DSSI segment dynamic images and the global one (SMA-STN).")
@click.option("--di-segments", type=click.IntRange(min=1, max=MAX_CLIP_FRAMES),
              default=DynamicImageOptions().segments, show_default=True,
              help="Segments of the DSSI (the global image comes on top).")
@click.option("--di-size", type=click.IntRange(min=16, max=MAX_IMAGE_SIDE),
              default=DynamicImageOptions().size, show_default=True,
              help="Side in pixels of the dynamic images.")
@click.option("--di-frames-per-segment", type=click.IntRange(min=0, max=MAX_CLIP_FRAMES),
              default=DEFAULT_FRAMES_PER_SEGMENT,
              show_default=True, help="Frames sampled per DSSI segment (0: all of them).")
def command(
    out: Path,
    jobs: int | None,
    scheduler: str | None,
    overwrite: bool,
    flow_size: int,
    flow_device: str,
    flow_batch: int,
    flow_threads: int | None,
    feature_size: int,
    normalisation: str,
    face_size: int,
    head_motion: str,
    tvl1_items: tuple[str, ...],
    align_items: tuple[str, ...],
    landmarks_model: Path | None,
    with_clip: bool,
    clip_length: int,
    clip_size: int,
    with_dynamic_images: bool,
    di_segments: int,
    di_size: int,
    di_frames_per_segment: int,
    **dataset: object,
) -> None:
    """Align faces, compute TV-L1 flow and strain, and write the HDF5 cache that models read.

    Takes the same dataset inputs as `fr-mer scan`. Resumable: samples already in
    --out (made with the same parameters) are skipped, so a run that was stopped,
    even by kill -9, is completed by running the same command again. A sample that
    cannot be made is recorded with its reason and the run goes on; the exit status
    is 0 when the run finished, whatever the samples' fate.
    """
    check_not_an_input(out, "--out", {**dataset_inputs(**dataset), "--landmarks-model": landmarks_model})
    if out.is_dir():
        raise click.BadParameter(f"{out} is a folder; give the cache's file name", param_hint="--out")
    if overwrite and out.exists():
        check_replaceable(out)
    if scheduler is not None and jobs is not None:
        raise click.UsageError("--jobs sets local worker processes; with --scheduler the cluster's workers "
                               "do the work: give one of the two")
    align = dataclasses.replace(_overrides(AlignParams, align_items, "--align"), face_size=face_size)
    params = PreprocessParams(
        flow_size=flow_size,
        feature_size=feature_size,
        normalisation=normalisation,
        tvl1=_overrides(TVL1Params, tvl1_items, "--tvl1"),
        flow_implementation=flow_implementation(flow_device),
        align=align,
        head_motion=head_motion,
        smic_apex=str(dataset.get("smic_apex") or "middle"),
        clip=ClipOptions(clip_length, clip_size) if with_clip else None,
        dynamic_images=DynamicImageOptions(di_segments, di_size, di_frames_per_segment or None)
        if with_dynamic_images else None,
        predictor=str(landmarks_model) if landmarks_model else None,
    )

    clips = clips_from_options(**dataset)
    if not clips:
        raise click.ClickException(
            "the inputs hold no annotated clip; run `fr-mer scan` with the same options to see what was found"
        )
    statuses = {s: sum(c.status == s for c in clips) for s in (OK, REPAIRED, UNUSABLE)}
    click.echo(
        f"{len(clips)} clips: {statuses[OK]} ok, {statuses[REPAIRED]} repaired, "
        f"{statuses[UNUSABLE]} unusable (recorded as failures)",
        err=True,
    )
    with PreprocessRun(clips, out, params, jobs=jobs or default_jobs(), overwrite=overwrite, scheduler=scheduler,
                       flow_device=None if flow_device == "opencv" else flow_device, flow_batch=flow_batch,
                       flow_threads=flow_threads) as run:
        where = f"on the cluster at {scheduler} ({run.jobs} worker threads)" if scheduler else f"{run.jobs} job(s)"
        if run.flow_device is not None:
            where += f"; TV-L1 in torch on {run.flow_device}, {run.flow_batch} pairs at a time"
        click.echo(f"{out}: {len(run)} to make, {run.summary.skipped} already cached; {where}", err=True)
        with click.progressbar(length=len(run), label="preprocess", file=sys.stderr,
                               show_pos=True, item_show_func=lambda o: o.key if o else "") as bar:
            for outcome in run:
                bar.update(1, outcome)
    for line in run.summary.lines():
        click.echo(line)
