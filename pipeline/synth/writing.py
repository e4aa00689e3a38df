"""Synthetic databases written to disk: the layouts, the composite list and the manifest.

:func:`generate` writes one database (CASME II, SAMM or SMIC-HS layout and
annotation file, through :mod:`fr_mer.pipeline.layouts`); :func:`generate_composite`
writes all three and a composite list in the official format. Both record their
:class:`~fr_mer.pipeline.synth.config.SynthSettings` and every clip's ground truth in
``synth-manifest.json`` (:func:`read_settings` reads the settings back).
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fr_mer.config import from_record, to_record
from fr_mer.errors import FrMerError
from fr_mer.pipeline import layouts
from fr_mer.pipeline.labels import CLASS_INDEX, CLASSES
from fr_mer.pipeline.synth.config import (
    COMPOSITE,
    COMPOSITE_LIST_NAME,
    DEFAULT_AMPLITUDE,
    DEFAULT_CLIPS_PER_SUBJECT,
    DEFAULT_DURATION_S,
    DEFAULT_SEED,
    DEFAULT_SUBJECTS,
    LAYOUTS,
    MANIFEST_NAME,
    ClipParams,
    Nuisances,
    SynthSettings,
    check_layout,
    default_frame_size,
)
from fr_mer.pipeline.synth.faces import Identity, Photo, load_photos, person_of
from fr_mer.pipeline.synth.planning import plan_database
from fr_mer.pipeline.synth.rendering import ClipRenderer

#: What the manifest's ``generator`` field holds.
GENERATOR = "fr-mer synth"

Progress = Callable[[ClipParams], None]


class OutputFolderError(FrMerError, FileExistsError):
    """``--out`` cannot be written: not a folder, or a folder that holds something else."""


@dataclasses.dataclass
class SynthDatabase:
    """One generated database: where it is, its annotation file and its clips."""

    dataset: str
    root: Path
    annotations: Path | None
    clips: list[ClipParams]
    identities: list[Identity]

    def counts(self) -> dict[str, int]:
        return {label: sum(c.label == label for c in self.clips) for label in CLASSES}

    def scan_options(self) -> list[str]:
        """Options of ``fr-mer scan``/``preprocess --dataset composite`` for this database."""
        options = [f"--{self.dataset}-root", str(self.root)]
        if self.annotations is not None:
            options += [f"--{self.dataset}-annotations", str(self.annotations)]
        return options


@dataclasses.dataclass
class SynthSummary:
    """What :func:`generate` / :func:`generate_composite` wrote."""

    out_dir: Path
    databases: dict[str, SynthDatabase]
    composite_list: Path | None
    manifest: Path
    seconds: float

    @property
    def n_clips(self) -> int:
        return sum(len(db.clips) for db in self.databases.values())

    def scan_arguments(self) -> list[str]:
        """Arguments of ``fr-mer scan`` (and ``preprocess``) that read what was written."""
        if self.composite_list is not None:
            args = ["--dataset", "composite"]
            for db in self.databases.values():
                args += db.scan_options()
            return args + ["--composite-list", str(self.composite_list)]
        (db,) = self.databases.values()
        args = ["--dataset", db.dataset, "--root", str(db.root)]
        if db.annotations is not None:
            args += ["--annotations", str(db.annotations)]
        return args

    def cache_suggestion(self) -> Path:
        """Where the "next:" line puts the cache: beside the output folder, never inside it (a release
        root is never written into, and ``--overwrite`` leaves files synth did not write)."""
        return self.out_dir.parent / f"{self.out_dir.resolve().name}.h5"

    def lines(self) -> list[str]:
        """A human summary: counts, paths and the commands that read the data."""
        out = [f"wrote {self.n_clips} clips in {self.seconds:.1f} s to {self.out_dir}"]
        for db in self.databases.values():
            counts = ", ".join(f"{k} {v}" for k, v in db.counts().items())
            out.append(
                f"  {db.dataset}: {len(db.identities)} subjects, {len(db.clips)} clips ({counts})"
            )
            out.append(f"    root:        {db.root}")
            if db.annotations is not None:
                out.append(f"    annotations: {db.annotations}")
        if self.composite_list is not None:
            out.append(f"  composite list: {self.composite_list}")
        sources = [identity.source for db in self.databases.values() for identity in db.identities]
        people = {person_of(source) for source in sources}
        if 1 < len(people) < len(sources):
            out.append(f"  note: {len(people)} people for {len(sources)} subjects: some people are several "
                       f"subjects (ask for fewer --subjects to keep one subject per person)")
        out.append(f"  manifest (ground truth per clip): {self.manifest}")
        args = " ".join(shlex.quote(a) for a in self.scan_arguments())
        out.append("next:")
        out.append(f"  fr-mer scan {args}")
        out.append(f"  fr-mer preprocess {args} --out {shlex.quote(str(self.cache_suggestion()))}")
        return out


def _counting(renderer: ClipRenderer, clip: ClipParams, progress: Progress | None) -> Callable[[int], np.ndarray]:
    if progress is None:
        return renderer

    def frame(number: int) -> np.ndarray:
        image = renderer(number)
        if number == clip.offset:
            progress(clip)
        return image

    return frame


def write_database(
    dataset: str,
    root: Path,
    identities: list[Identity],
    clips: list[ClipParams],
    seed: int,
    progress: Progress | None = None,
) -> Path | None:
    """Render ``clips`` into ``dataset``'s layout under ``root``; returns the annotation file (SMIC: None)."""
    by_subject = {identity.name: identity for identity in identities}
    specs = []
    for clip in clips:
        renderer = ClipRenderer(by_subject[clip.subject], clip, seed)
        specs.append(
            layouts.ClipSpec(
                subject=clip.subject,
                clip=clip.clip,
                emotion=clip.emotion,
                onset=clip.onset,
                apex=None if dataset == "smic" else clip.apex,
                offset=clip.offset,
                action_units=clip.action_units,
                frame=_counting(renderer, clip, progress),
            )
        )
    if dataset == "casme2":
        return layouts.write_casme2(root, specs)
    if dataset == "samm":
        return layouts.write_samm(root, specs)
    if dataset == "casme3":
        return layouts.write_casme3(root, specs)
    layouts.write_smic(root, specs)
    return None


def _write_manifest(path: Path, settings: SynthSettings, databases: dict[str, SynthDatabase]) -> Path:
    record = {
        "generator": GENERATOR,
        "complete": True,
        # what --overwrite may delete: the folder was empty when synth claimed it
        "written": sorted(entry.name for entry in path.parent.iterdir() if entry.name != MANIFEST_NAME),
        "settings": to_record(settings),
        "databases": {
            name: {
                "root": db.root.name,
                "annotations": db.annotations.relative_to(db.root).as_posix()
                if db.annotations is not None else None,
                "subjects": {
                    identity.name: {
                        "source": identity.source,
                        **{k: round(v, 4) for k, v in identity.params.items()},
                    }
                    for identity in db.identities
                },
                "clips": [clip.record() for clip in db.clips],
            }
            for name, db in databases.items()
        },
    }
    path.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return path


def read_settings(manifest: Path | str) -> SynthSettings:
    """The settings a finished ``fr-mer synth`` run recorded in ``manifest``, validated."""
    manifest = Path(manifest)
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
    except ValueError as error:
        raise OutputFolderError(f"{manifest}: not a synth manifest ({error})") from None
    if not isinstance(record, dict) or record.get("generator") != GENERATOR or not record.get("complete"):
        raise OutputFolderError(f"{manifest}: not the manifest of a finished fr-mer synth run")
    return from_record(SynthSettings, record.get("settings", {}), source=str(manifest))


def _foreign_entries(out_dir: Path) -> list[str]:
    """The entries of an earlier synth output folder that synth did not write (its manifest's "written").
    A manifest without that list (an interrupted run, or one of an fr-mer before it) lists nothing:
    then everything but the database folders, the composite list and the manifest is foreign."""
    try:
        record = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    written = record.get("written") if isinstance(record, dict) else None
    if isinstance(written, list):
        ours = {str(name) for name in written}
    elif isinstance(record, dict) and record.get("complete") is False:
        return []  # claimed by a run that was interrupted: the folder was empty when it began
    else:
        ours = {*LAYOUTS, COMPOSITE_LIST_NAME}
    return sorted(entry.name for entry in out_dir.iterdir() if entry.name != MANIFEST_NAME and entry.name not in ours)


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Make ``out_dir`` ready: created when absent; an existing non-empty folder is
    replaced only when ``overwrite`` and it holds a synth manifest (never a user's data).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputFolderError(f"{out_dir}: exists and is not a folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputFolderError(
                f"{out_dir}: folder is not empty; choose another --out, or pass --overwrite "
                f"to replace an earlier fr-mer synth output"
            )
        if not (out_dir / MANIFEST_NAME).is_file():
            raise OutputFolderError(
                f"{out_dir}: not written by fr-mer synth (no {MANIFEST_NAME}); it is left "
                f"alone: choose another --out or empty it yourself"
            )
        foreign = _foreign_entries(out_dir)
        if foreign:
            raise OutputFolderError(
                f"{out_dir}: holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, which fr-mer synth "
                f"did not write; --overwrite never deletes them: move them out, or choose another --out"
            )
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # claimed before anything else is written, so an interrupted run can be overwritten
    (out_dir / MANIFEST_NAME).write_text(
        json.dumps({"generator": GENERATOR, "complete": False}) + "\n", encoding="utf-8"
    )


def write_synth(
    out_dir: Path | str,
    settings: SynthSettings,
    *,
    photos: Sequence[Photo] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> SynthSummary:
    """Write what ``settings`` describe under ``out_dir``: one database at its root, or
    (``layout='composite'``) every database in its own folder and the composite list.

    ``photos``: already loaded by :func:`~fr_mer.pipeline.synth.faces.load_photos`
    (None: loaded from ``settings.faces``).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, overwrite)
    if photos is None:
        photos = load_photos(settings.faces)
    composite = settings.layout == COMPOSITE
    databases = {}
    for position, dataset in enumerate(settings.databases):
        identities, clips = plan_database(
            dataset, subjects=settings.subjects, clips_per_subject=settings.clips_per_subject,
            photos=photos, seed=settings.seed, frame_size=settings.frame_size,
            nuisances=settings.nuisances, amplitude=settings.amplitude,
            amplitude_scale=settings.amplitude_scale, duration_s=settings.duration_s,
            first_photo=position * settings.subjects,
        )
        root = out_dir / dataset if composite else out_dir
        root.mkdir(parents=True, exist_ok=True)
        annotations = write_database(dataset, root, identities, clips, settings.seed, progress)
        databases[dataset] = SynthDatabase(dataset, root, annotations, clips, identities)
    composite_list = None
    if composite:
        rows = [
            (clip.dataset, clip.subject, clip.clip, CLASS_INDEX[clip.label])
            for db in databases.values() for clip in db.clips
        ]
        composite_list = Path(layouts.write_composite_list(out_dir / COMPOSITE_LIST_NAME, rows))
    manifest = _write_manifest(out_dir / MANIFEST_NAME, settings, databases)
    return SynthSummary(out_dir, databases, composite_list, manifest, time.perf_counter() - start)


def generate(
    out_dir: Path | str,
    *,
    layout: str = "casme2",
    subjects: int | None = None,
    clips_per_subject: int = DEFAULT_CLIPS_PER_SUBJECT,
    faces: Path | str | None = None,
    photos: Sequence[Photo] | None = None,
    seed: int = DEFAULT_SEED,
    frame_size: tuple[int, int] | None = None,
    nuisances: Nuisances = Nuisances(),
    amplitude: tuple[float, float] = DEFAULT_AMPLITUDE,
    amplitude_scale: float = 1.0,
    duration_s: tuple[float, float] = DEFAULT_DURATION_S,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> SynthSummary:
    """Write one synthetic database in ``layout``'s real layout under ``out_dir``.

    Args:
        out_dir: the dataset root (created); give it to ``fr-mer scan --root``.
        layout: ``casme2``, ``samm``, ``smic`` or ``casme3``.
        subjects, clips_per_subject: how many; classes are balanced per subject.
            ``subjects`` None: one per person of the photos (:func:`default_subjects`).
        faces: folder of face photos (None: scikit-image's astronaut); or
            ``photos`` already loaded by :func:`fr_mer.pipeline.synth.faces.load_photos`.
        seed: everything random derives from it; the same seed, the same bytes.
        frame_size: (width, height) of the frames, px (None: the layout's default).
        nuisances: class-independent disturbances (:class:`Nuisances`).
        amplitude: range of the apex displacement, px on the 128 px reference face.
        amplitude_scale: multiplier of the expression motion (1: micro-expression size).
        duration_s: range of a clip's length onset..offset, seconds (frames = s x fps).
        overwrite: replace ``out_dir`` when it holds an earlier synth output
            (a non-empty folder is otherwise refused; see :func:`prepare_out_dir`).
        progress: called with each clip's parameters once its frames are written.
    """
    check_layout(layout)
    return _generate(out_dir, layout, subjects, clips_per_subject, faces, photos, seed, frame_size, nuisances,
                     amplitude, amplitude_scale, duration_s, overwrite, progress)


def generate_composite(
    out_dir: Path | str,
    *,
    subjects: int | None = None,
    clips_per_subject: int = DEFAULT_CLIPS_PER_SUBJECT,
    faces: Path | str | None = None,
    photos: Sequence[Photo] | None = None,
    seed: int = DEFAULT_SEED,
    frame_size: tuple[int, int] | None = None,
    nuisances: Nuisances = Nuisances(),
    amplitude: tuple[float, float] = DEFAULT_AMPLITUDE,
    amplitude_scale: float = 1.0,
    duration_s: tuple[float, float] = DEFAULT_DURATION_S,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> SynthSummary:
    """All three databases under ``out_dir/{casme2,samm,smic}`` and their composite list.

    ``subjects`` and ``clips_per_subject`` are per database (subjects are
    distinct across databases). The list ``out_dir/synthetic_3class_gt.csv`` is
    in the official format (``layouts.write_composite_list``): give it
    to ``--composite-list``. Other arguments as :func:`generate`.
    """
    return _generate(out_dir, COMPOSITE, subjects, clips_per_subject, faces, photos, seed, frame_size, nuisances,
                     amplitude, amplitude_scale, duration_s, overwrite, progress)


def default_subjects(photos: Sequence[Photo], layout: str) -> int:
    """Subjects per database when none are asked for: with one photo (the astronaut),
    :data:`DEFAULT_SUBJECTS`; with a folder, every person once, shared out among the
    databases that ``layout`` writes (68 people: 22 per database of a composite)."""
    if len(photos) == 1:
        return DEFAULT_SUBJECTS
    n_databases = len(SynthSettings(layout=layout).databases)
    return max(1, len({photo.person for photo in photos}) // n_databases)


def _generate(out_dir, layout, subjects, clips_per_subject, faces, photos, seed, frame_size, nuisances,
              amplitude, amplitude_scale, duration_s, overwrite, progress) -> SynthSummary:
    if subjects is None:
        photos = load_photos(faces) if photos is None else photos
        subjects = default_subjects(photos, layout)
    settings = SynthSettings(
        layout=layout, subjects=subjects, clips_per_subject=clips_per_subject,
        faces=None if faces is None else str(faces), seed=seed,
        frame_size=default_frame_size(layout) if frame_size is None else tuple(frame_size),
        nuisances=nuisances, amplitude=tuple(amplitude), amplitude_scale=float(amplitude_scale),
        duration_s=tuple(duration_s),
    )
    return write_synth(out_dir, settings, photos=photos, overwrite=overwrite, progress=progress)
