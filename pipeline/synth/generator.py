"""Synthetic micro-expression databases in the real on-disk layouts.

A clip is a subject's neutral face (:mod:`fr_mer.pipeline.synth.faces`) warped, frame
by frame, by its expression's displacement field (:mod:`fr_mer.pipeline.synth.motion`)
scaled by the temporal profile onset -> apex -> offset, under nuisances that do
not depend on the class: a per-clip head pose and a small head movement during
the clip, blinks, a lighting change, sensor noise and JPEG compression.
:func:`generate` writes one database (CASME II, SAMM or SMIC-HS layout and
annotation file, through :mod:`fr_mer.pipeline.layouts`); :func:`generate_composite`
writes all three and a composite list in the official format.

Determinism: every random draw comes from a ``numpy`` Generator seeded by
``SeedSequence(seed, spawn_key=...)`` with a key naming what is drawn (the
database, subject, clip and frame), so the same seed gives the same bytes, in
any order of generation.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from fr_mer.pipeline.labels import CLASS_INDEX, CLASSES, canonical_subject, disk_subject
from fr_mer.pipeline.synth import motion
from fr_mer.pipeline.synth.faces import DEFAULT_FRAME_SIZE, Identity, Photo, derive_identities, load_photos

#: Layouts the generator writes (the databases of the composite).
LAYOUTS: tuple[str, ...] = ("casme2", "samm", "smic")
#: Frame rate of each database's camera, frames per second.
FPS: dict[str, int] = {"casme2": 200, "samm": 200, "smic": 100}
#: Name of the composite list that :func:`generate_composite` writes.
COMPOSITE_LIST_NAME = "synthetic_3class_gt.csv"
#: Name of the record of what was generated (parameters and every clip's ground truth).
MANIFEST_NAME = "synth-manifest.json"

#: Database spelling of each class's emotions, with their weights (the real
#: releases' proportions among the composite's emotions).
EMOTIONS: dict[str, dict[str, dict[str, float]]] = {
    "casme2": {
        "negative": {"disgust": 63, "repression": 27},
        "positive": {"happiness": 1},
        "surprise": {"surprise": 1},
    },
    "samm": {
        "negative": {"Anger": 57, "Contempt": 12, "Disgust": 9, "Fear": 8, "Sadness": 6},
        "positive": {"Happiness": 1},
        "surprise": {"Surprise": 1},
    },
    "smic": {
        "negative": {"negative": 1},
        "positive": {"positive": 1},
        "surprise": {"surprise": 1},
    },
}

# spawn-key tags: what a random stream is for
_IDENTITY, _CLIP, _FRAME = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Nuisances:
    """Class-independent disturbances, each drawn per clip.

    Amplitudes are in pixels on the 128 px reference face (:mod:`motion`).

    Attributes:
        pose_shift: per-clip head position, uniform in +-this (px on 128): the
            same for all frames of the clip, different between clips.
        pose_rotation_deg: per-clip head roll, uniform in +-this (degrees).
        head_shift: head movement from onset to offset, normal with this
            standard deviation per axis (px on 128).
        head_rotation_deg: head roll from onset to offset, normal, this SD (degrees).
        blink_probability: chance that a clip holds a blink (any class).
        blink_amplitude: range of the upper lids' downward movement (px on 128).
        lighting: gain and lighting-gradient change from onset to offset,
            uniform in +-this (fraction).
        noise_sigma: range of the sensor noise SD (grey levels), new noise each frame.
        jpeg_quality: range of the JPEG quality of each clip (CASME II, SAMM);
            None: no JPEG round trip before the layout writes the frame.
    """

    pose_shift: float = 4.0
    pose_rotation_deg: float = 2.0
    head_shift: float = 0.4
    head_rotation_deg: float = 0.25
    blink_probability: float = 0.3
    blink_amplitude: tuple[float, float] = (1.0, 3.0)
    lighting: float = 0.03
    noise_sigma: tuple[float, float] = (0.8, 2.0)
    jpeg_quality: tuple[int, int] | None = (80, 95)

    @classmethod
    def none(cls) -> "Nuisances":
        """No nuisance at all: only the expression moves (tests, illustrations)."""
        return cls(pose_shift=0.0, pose_rotation_deg=0.0, head_shift=0.0, head_rotation_deg=0.0,
                   blink_probability=0.0, blink_amplitude=(0.0, 0.0), lighting=0.0,
                   noise_sigma=(0.0, 0.0), jpeg_quality=None)


@dataclasses.dataclass(frozen=True)
class ClipParams:
    """Everything that makes one clip, drawn by :func:`draw_clip`.

    Frame numbers are absolute (the file names); ``pose``/``drift`` are
    (dx, dy, roll in degrees) with shifts in image pixels, the roll about the
    nose tip; ``drift_shape`` in [0, 1] mixes a linear and an eased head path;
    ``blink`` is (first frame index, length in frames, amplitude px on 128) or None;
    ``lighting`` is (gain change, gradient change, gradient angle in degrees) at the offset.
    """

    dataset: str
    subject: str
    clip: str
    label: str
    emotion: str
    expression: motion.Expression
    onset: int
    apex: int
    offset: int
    residual: float
    pose: tuple[float, float, float]
    drift: tuple[float, float, float]
    drift_shape: float
    blink: tuple[int, int, float] | None
    lighting: tuple[float, float, float]
    noise_sigma: float
    jpeg_quality: int | None
    key: tuple[int, ...]

    @property
    def n_frames(self) -> int:
        return self.offset - self.onset + 1

    @property
    def action_units(self) -> str:
        """FACS-style code as the spreadsheets write it (``4+R15``, ``1+2+5``)."""
        parts = []
        for code, right, left in self.expression.units:
            number = code[2:]
            if right < 0.5 * left:
                number = "L" + number
            elif left < 0.5 * right:
                number = "R" + number
            parts.append(number)
        return "+".join(parts)

    def record(self) -> dict[str, object]:
        """The clip's ground truth, as JSON-ready values."""
        return {
            "dataset": self.dataset,
            "subject": self.subject,
            "clip": self.clip,
            "label": self.label,
            "emotion": self.emotion,
            "onset": self.onset,
            "apex": self.apex,
            "offset": self.offset,
            "action_units": self.action_units,
            "units": [list(u) for u in self.expression.units],
            "amplitude_px_on_128": round(self.expression.amplitude, 4),
            "blink": list(self.blink) if self.blink else None,
            "jpeg_quality": self.jpeg_quality,
        }


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def clip_name(dataset: str, subject: str, index: int, label: str, count: int) -> str:
    """Disk name of a clip in the database's style.

    CASME II ``EP02_01f`` (episode, take), SAMM ``006_1_2`` (subject, inducement,
    take), SMIC ``s1_ne_01`` (disk subject, class code, running number per class).
    """
    if dataset == "casme2":
        return f"EP{index // 2 + 1:02d}_{index % 2 + 1:02d}f"
    if dataset == "samm":
        return f"{subject}_{index // 2 + 1}_{index % 2 + 1}"
    code = {"negative": "ne", "positive": "po", "surprise": "sur"}[label]
    return f"{disk_subject('smic', subject)}_{code}_{count:02d}"


def draw_clip(
    seed: int,
    key: tuple[int, ...],
    *,
    dataset: str,
    subject: str,
    clip: str,
    label: str,
    identity: Identity,
    nuisances: Nuisances = Nuisances(),
    amplitude: tuple[float, float] = (1.0, motion.MAX_AMPLITUDE_128),
    duration_s: tuple[float, float] = (0.065, 0.1),
) -> ClipParams:
    """The parameters of one clip, from ``SeedSequence(seed, spawn_key=key + ...)``.

    The expression (and emotion) come from one stream, the timing and every
    nuisance from another: the nuisances of a clip do not depend on its class.
    """
    rng = _rng(seed, *key, 0)
    expression_rng = _rng(seed, *key, 1)
    fps = FPS[dataset]
    n_frames = max(4, int(round(rng.uniform(*duration_s) * fps)))
    apex_index = int(np.clip(round(rng.uniform(0.3, 0.6) * (n_frames - 1)), 1, n_frames - 2))
    first = {"casme2": (1, 400), "samm": (100, 6000), "smic": (1, 4000)}[dataset]
    onset = int(rng.integers(*first))
    expression = motion.sample_expression(label, expression_rng, amplitude=amplitude)
    scale = motion.FaceFrame.from_landmarks(identity.landmarks).px_per_128
    n = nuisances
    pose = (
        float(rng.uniform(-1, 1) * n.pose_shift * scale),
        float(rng.uniform(-1, 1) * n.pose_shift * scale),
        float(rng.uniform(-1, 1) * n.pose_rotation_deg),
    )
    drift = (
        float(rng.normal() * n.head_shift * scale),
        float(rng.normal() * n.head_shift * scale),
        float(rng.normal() * n.head_rotation_deg),
    )
    blink = None
    if rng.random() < n.blink_probability:
        length = int(rng.integers(4, 9)) * fps // 200 + 2
        start = int(rng.integers(-length + 2, n_frames - 1))
        blink = (start, length, float(rng.uniform(*n.blink_amplitude)))
    quality = None if n.jpeg_quality is None else int(rng.integers(n.jpeg_quality[0], n.jpeg_quality[1] + 1))
    return ClipParams(
        dataset=dataset,
        subject=subject,
        clip=clip,
        label=label,
        emotion=_choose(expression_rng, EMOTIONS[dataset][label]),
        expression=expression,
        onset=onset,
        apex=onset + apex_index,
        offset=onset + n_frames - 1,
        residual=float(rng.uniform(0.0, 0.3)),
        pose=pose,
        drift=drift,
        drift_shape=float(rng.uniform()),
        blink=blink,
        lighting=(
            float(rng.uniform(-1, 1) * n.lighting),
            float(rng.uniform(-1, 1) * n.lighting),
            float(rng.uniform(0, 360)),
        ),
        noise_sigma=float(rng.uniform(*n.noise_sigma)),
        jpeg_quality=quality if dataset != "smic" else None,  # SMIC frames are .bmp
        key=tuple(key),
    )


def apex_displacement(identity: Identity, clip: ClipParams) -> np.ndarray:
    """The expression's displacement at the apex, ``(H, W, 2)`` float32 (dx, dy), pixels.

    In the subject's neutral-face coordinates (before head pose); the head
    moves this field rigidly with the face. Blinks are a nuisance, not part of it.
    """
    return motion.expression_field(identity.landmarks, identity.shape, clip.expression)


def au_region_mask(identity: Identity, clip: ClipParams) -> np.ndarray:
    """Where the clip's action units may move the face, ``(H, W)`` bool (neutral-face coordinates)."""
    return motion.expression_region(identity.landmarks, identity.shape, clip.expression)


class ClipRenderer:
    """Frames of one clip: ``renderer(n)`` is absolute frame ``n`` as uint8.

    BGR ``(H, W, 3)`` for CASME II and SMIC, grayscale ``(H, W)`` for SAMM (its
    camera is monochrome). Frame ``n`` depends only on the clip and ``n``.
    """

    def __init__(self, identity: Identity, clip: ClipParams, seed: int) -> None:
        self.identity = identity
        self.clip = clip
        self.seed = seed
        self.gray = clip.dataset == "samm"
        self.image = cv2.cvtColor(identity.image, cv2.COLOR_BGR2GRAY) if self.gray else identity.image
        self.field = apex_displacement(identity, clip)
        region = au_region_mask(identity, clip)
        self.blink = None
        if clip.blink:
            self.blink = motion.blink_field(identity.landmarks, identity.shape, clip.blink[2])
            region |= np.any(self.blink != 0, axis=-1)
        self.region_box = _bounding_box(region)
        self.profile = motion.temporal_profile(clip.n_frames, clip.apex - clip.onset, clip.residual)
        height, width = identity.shape
        self.grid_x, self.grid_y = np.meshgrid(
            np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
        )
        self.pivot = tuple(float(v) for v in identity.landmarks[30])  # nose tip
        gain, gradient, angle = clip.lighting
        face = motion.FaceFrame.from_landmarks(identity.landmarks)
        theta = np.deg2rad(angle)
        along = ((self.grid_x - float(face.origin[0])) * float(np.cos(theta))
                 + (self.grid_y - float(face.origin[1])) * float(np.sin(theta))) / face.face_width
        self.light = (gain + gradient * along).astype(np.float32)
        # Sensor noise: uniform random bytes through the inverse normal CDF (a
        # quantised Gaussian, as an ADC gives), much faster than drawing normals.
        levels = (np.arange(256, dtype=np.float64) + 0.5) / 256.0
        self.noise_table = (clip.noise_sigma * _normal_quantile(levels)).astype(np.float32)

    def _blink_level(self, index: int) -> float:
        if self.clip.blink is None:
            return 0.0
        start, length, _ = self.clip.blink
        phase = (index - start) / (length - 1)
        return float(np.sin(np.pi * phase) ** 2) if 0.0 <= phase <= 1.0 else 0.0

    def head(self, index: int) -> tuple[float, float, float]:
        """Head pose (dx px, dy px, roll degrees) at frame ``index`` (0 = onset)."""
        tau = index / max(self.clip.n_frames - 1, 1)
        mix = self.clip.drift_shape
        path = mix * tau + (1.0 - mix) * 0.5 * (1.0 - float(np.cos(np.pi * tau)))
        dx, dy, roll = (p + d * path for p, d in zip(self.clip.pose, self.clip.drift))
        return float(dx), float(dy), float(roll)

    def __call__(self, number: int) -> np.ndarray:
        clip = self.clip
        if not clip.onset <= number <= clip.offset:
            raise ValueError(f"frame {number} is outside {clip.clip}'s {clip.onset}..{clip.offset}")
        index = number - clip.onset
        dx, dy, roll = self.head(index)
        # frame pixel x -> neutral-face point y: the inverse of y -> R (y - c) + c + t
        theta = np.deg2rad(roll)
        cos, sin = float(np.cos(theta)), float(np.sin(theta))
        cx, cy = self.pivot
        px = self.grid_x - (cx + dx)
        py = self.grid_y - (cy + dy)
        map_x = cos * px + sin * py + cx
        map_y = cos * py - sin * px + cy
        level = float(self.profile[index])
        blink = self._blink_level(index)
        if (level > 0.0 or blink > 0.0) and self.region_box is not None:
            field = level * self.field
            if blink > 0.0 and self.blink is not None:
                field = field + blink * self.blink
            box = self._frame_box(dx, dy, cos, sin)
            if box is not None:
                rows, cols = box
                moved = cv2.remap(field, map_x[rows, cols], map_y[rows, cols],
                                  interpolation=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                map_x[rows, cols] -= moved[..., 0]
                map_y[rows, cols] -= moved[..., 1]
        frame = cv2.remap(self.image, map_x, map_y, interpolation=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT_101)
        tau = index / max(clip.n_frames - 1, 1)
        light = 1.0 + tau * self.light
        frame *= light if self.gray else light[..., None]
        rng = _rng(self.seed, _FRAME, *clip.key, index)
        noise = np.frombuffer(rng.bytes(frame.size), dtype=np.uint8).reshape(frame.shape)
        frame += cv2.LUT(noise, self.noise_table)
        frame = cv2.convertScaleAbs(frame)  # round and saturate to uint8
        if clip.jpeg_quality is not None:
            ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, clip.jpeg_quality])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for {clip.clip} frame {number}")
            frame = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        return frame

    def _frame_box(self, dx: float, dy: float, cos: float, sin: float) -> tuple[slice, slice] | None:
        """Frame pixels whose neutral-face point may lie in the moving region."""
        (y0, y1), (x0, x1) = self.region_box
        cx, cy = self.pivot
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64) - (cx, cy)
        fx = cos * corners[:, 0] - sin * corners[:, 1] + cx + dx
        fy = sin * corners[:, 0] + cos * corners[:, 1] + cy + dy
        height, width = self.identity.shape
        left, right = max(int(np.floor(fx.min())) - 3, 0), min(int(np.ceil(fx.max())) + 4, width)
        top, bottom = max(int(np.floor(fy.min())) - 3, 0), min(int(np.ceil(fy.max())) + 4, height)
        if left >= right or top >= bottom:
            return None
        return slice(top, bottom), slice(left, right)


def _bounding_box(mask: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]] | None:
    rows, cols = np.nonzero(np.any(mask, axis=1))[0], np.nonzero(np.any(mask, axis=0))[0]
    if not len(rows):
        return None
    return (int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1]))


def _normal_quantile(p: np.ndarray) -> np.ndarray:
    """Standard normal quantiles of probabilities ``p`` in (0, 1)."""
    from statistics import NormalDist

    unit = NormalDist()
    return np.array([unit.inv_cdf(float(q)) for q in p])


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
        out.append(f"  manifest (ground truth per clip): {self.manifest}")
        args = " ".join(_quote(a) for a in self.scan_arguments())
        out.append("next:")
        out.append(f"  fr-mer scan {args}")
        out.append(f"  fr-mer preprocess {args} --out {_quote(str(self.out_dir / 'cache.h5'))}")
        return out


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _subject_ids(dataset: str, count: int) -> list[str]:
    """Canonical subject ids in the database's style (SAMM's start at 006 as the release)."""
    first = 6 if dataset == "samm" else 1
    return [canonical_subject(dataset, first + i) for i in range(count)]


def _check_counts(subjects: int, clips_per_subject: int) -> None:
    if not isinstance(subjects, int) or subjects < 1:
        raise ValueError(f"subjects must be a positive integer, got {subjects!r}")
    if not isinstance(clips_per_subject, int) or clips_per_subject < 1:
        raise ValueError(f"clips_per_subject must be a positive integer, got {clips_per_subject!r}")


def _check_frame_size(frame_size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in frame_size)
    if width < 96 or height < 96:
        raise ValueError(
            f"frame size {width}x{height} is too small for the face detector; use at least 96x96"
        )
    return width, height


def plan_database(
    dataset: str,
    *,
    subjects: int,
    clips_per_subject: int,
    photos: Sequence[Photo],
    seed: int,
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
    nuisances: Nuisances = Nuisances(),
    amplitude: tuple[float, float] = (1.0, motion.MAX_AMPLITUDE_128),
    duration_s: tuple[float, float] = (0.065, 0.1),
) -> tuple[list[Identity], list[ClipParams]]:
    """Subjects and clip parameters of one database (nothing written).

    Classes are balanced within each subject (round robin from a random
    start, then shuffled), so every subject has every class when it has three
    clips or more.
    """
    if dataset not in LAYOUTS:
        raise ValueError(f"unknown layout {dataset!r}: expected one of {', '.join(LAYOUTS)}")
    _check_counts(subjects, clips_per_subject)
    frame_size = _check_frame_size(frame_size)
    if not 0 < duration_s[0] <= duration_s[1]:
        raise ValueError(f"duration range {duration_s!r} must satisfy 0 < low <= high (seconds)")
    d = LAYOUTS.index(dataset)
    ids = _subject_ids(dataset, subjects)
    identities = derive_identities(
        list(photos), ids, seed, frame_size, key=(_IDENTITY, d)
    )
    clips: list[ClipParams] = []
    for s, (subject, identity) in enumerate(zip(ids, identities)):
        rng = _rng(seed, _CLIP, d, s)
        start = int(rng.integers(len(CLASSES)))
        labels = [CLASSES[(start + k) % len(CLASSES)] for k in range(clips_per_subject)]
        labels = [labels[i] for i in rng.permutation(clips_per_subject)]
        per_label: dict[str, int] = {}
        for k, label in enumerate(labels):
            per_label[label] = per_label.get(label, 0) + 1
            name = clip_name(dataset, subject, k, label, per_label[label])
            clips.append(
                draw_clip(
                    seed, (_CLIP, d, s, k),
                    dataset=dataset, subject=subject, clip=name, label=label,
                    identity=identity, nuisances=nuisances, amplitude=amplitude,
                    duration_s=duration_s,
                )
            )
    return identities, clips


def _write_database(
    dataset: str,
    root: Path,
    identities: list[Identity],
    clips: list[ClipParams],
    seed: int,
    progress: Callable[[ClipParams], None] | None,
) -> Path | None:
    from fr_mer.pipeline import layouts

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
    layouts.write_smic(root, specs)
    return None


def _counting(
    renderer: ClipRenderer, clip: ClipParams, progress: Callable[[ClipParams], None] | None
) -> Callable[[int], np.ndarray]:
    if progress is None:
        return renderer

    def frame(number: int) -> np.ndarray:
        image = renderer(number)
        if number == clip.offset:
            progress(clip)
        return image

    return frame


def _manifest(path: Path, settings: dict[str, object], databases: dict[str, SynthDatabase]) -> Path:
    record = {
        "generator": "fr-mer synth",
        "complete": True,
        "settings": settings,
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


def _generate(
    out_dir: Path,
    layouts_: Sequence[str],
    roots: dict[str, Path],
    *,
    subjects: int,
    clips_per_subject: int,
    faces: Path | str | None,
    photos: Sequence[Photo] | None,
    seed: int,
    frame_size: tuple[int, int],
    nuisances: Nuisances,
    amplitude: tuple[float, float],
    duration_s: tuple[float, float],
    progress: Callable[[ClipParams], None] | None,
) -> dict[str, SynthDatabase]:
    if photos is None:
        photos = load_photos(faces)
    databases = {}
    for dataset in layouts_:
        identities, clips = plan_database(
            dataset, subjects=subjects, clips_per_subject=clips_per_subject, photos=photos,
            seed=seed, frame_size=frame_size, nuisances=nuisances, amplitude=amplitude,
            duration_s=duration_s,
        )
        root = roots[dataset]
        root.mkdir(parents=True, exist_ok=True)
        annotations = _write_database(dataset, root, identities, clips, seed, progress)
        databases[dataset] = SynthDatabase(dataset, root, annotations, clips, identities)
    return databases


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Make ``out_dir`` ready: created when absent; an existing non-empty folder is
    replaced only when ``overwrite`` and it holds a synth manifest (never a user's data).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out_dir}: folder is not empty; choose another --out, or pass --overwrite "
                f"to replace an earlier fr-mer synth output"
            )
        if not (out_dir / MANIFEST_NAME).is_file():
            raise FileExistsError(
                f"{out_dir}: not written by fr-mer synth (no {MANIFEST_NAME}); it is left "
                f"alone: choose another --out or empty it yourself"
            )
        import shutil

        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # claimed before anything else is written, so an interrupted run can be overwritten
    (out_dir / MANIFEST_NAME).write_text(
        json.dumps({"generator": "fr-mer synth", "complete": False}) + "\n", encoding="utf-8"
    )


def _settings(**values: object) -> dict[str, object]:
    out = {}
    for key, value in values.items():
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        out[key] = str(value) if isinstance(value, Path) else value
    return out


def generate(
    out_dir: Path | str,
    *,
    layout: str = "casme2",
    subjects: int = 4,
    clips_per_subject: int = 6,
    faces: Path | str | None = None,
    photos: Sequence[Photo] | None = None,
    seed: int = 0,
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
    nuisances: Nuisances = Nuisances(),
    amplitude: tuple[float, float] = (1.0, motion.MAX_AMPLITUDE_128),
    duration_s: tuple[float, float] = (0.065, 0.1),
    overwrite: bool = False,
    progress: Callable[[ClipParams], None] | None = None,
) -> SynthSummary:
    """Write one synthetic database in ``layout``'s real layout under ``out_dir``.

    Args:
        out_dir: the dataset root (created); give it to ``fr-mer scan --root``.
        layout: ``casme2``, ``samm`` or ``smic``.
        subjects, clips_per_subject: how many; classes are balanced per subject.
        faces: folder of face photos (None: scikit-image's astronaut); or
            ``photos`` already loaded by :func:`pipeline.synth.faces.load_photos`.
        seed: everything random derives from it; the same seed, the same bytes.
        frame_size: (width, height) of the frames, px.
        nuisances: class-independent disturbances (:class:`Nuisances`).
        amplitude: range of the apex displacement, px on the 128 px reference face.
        duration_s: range of a clip's length onset..offset, seconds (frames = s x fps).
        overwrite: replace ``out_dir`` when it holds an earlier synth output
            (a non-empty folder is otherwise refused; see :func:`prepare_out_dir`).
        progress: called with each clip's parameters once its frames are written.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    _check_counts(subjects, clips_per_subject)
    prepare_out_dir(out_dir, overwrite)
    databases = _generate(
        out_dir, [layout], {layout: out_dir}, subjects=subjects,
        clips_per_subject=clips_per_subject, faces=faces, photos=photos, seed=seed,
        frame_size=frame_size, nuisances=nuisances, amplitude=amplitude,
        duration_s=duration_s, progress=progress,
    )
    manifest = _manifest(
        out_dir / MANIFEST_NAME,
        _settings(layout=layout, subjects=subjects, clips_per_subject=clips_per_subject,
                  faces=faces, seed=seed, frame_size=list(frame_size), nuisances=nuisances,
                  amplitude=list(amplitude), duration_s=list(duration_s)),
        databases,
    )
    return SynthSummary(out_dir, databases, None, manifest, time.perf_counter() - start)


def generate_composite(
    out_dir: Path | str,
    *,
    subjects: int = 4,
    clips_per_subject: int = 6,
    faces: Path | str | None = None,
    photos: Sequence[Photo] | None = None,
    seed: int = 0,
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
    nuisances: Nuisances = Nuisances(),
    amplitude: tuple[float, float] = (1.0, motion.MAX_AMPLITUDE_128),
    duration_s: tuple[float, float] = (0.065, 0.1),
    overwrite: bool = False,
    progress: Callable[[ClipParams], None] | None = None,
) -> SynthSummary:
    """All three databases under ``out_dir/{casme2,samm,smic}`` and their composite list.

    ``subjects`` and ``clips_per_subject`` are per database (subjects are
    distinct across databases). The list ``out_dir/synthetic_3class_gt.csv`` is
    in the official format (``pipeline.layouts.write_composite_list``): give it
    to ``--composite-list``. Other arguments as :func:`generate`.
    """
    from fr_mer.pipeline import layouts

    start = time.perf_counter()
    out_dir = Path(out_dir)
    _check_counts(subjects, clips_per_subject)
    prepare_out_dir(out_dir, overwrite)
    databases = _generate(
        out_dir, LAYOUTS, {name: out_dir / name for name in LAYOUTS}, subjects=subjects,
        clips_per_subject=clips_per_subject, faces=faces, photos=photos, seed=seed,
        frame_size=frame_size, nuisances=nuisances, amplitude=amplitude,
        duration_s=duration_s, progress=progress,
    )
    rows = [
        (clip.dataset, clip.subject, clip.clip, CLASS_INDEX[clip.label])
        for db in databases.values() for clip in db.clips
    ]
    composite = layouts.write_composite_list(out_dir / COMPOSITE_LIST_NAME, rows)
    manifest = _manifest(
        out_dir / MANIFEST_NAME,
        _settings(layout="composite", subjects=subjects, clips_per_subject=clips_per_subject,
                  faces=faces, seed=seed, frame_size=list(frame_size), nuisances=nuisances,
                  amplitude=list(amplitude), duration_s=list(duration_s)),
        databases,
    )
    return SynthSummary(out_dir, databases, Path(composite), manifest, time.perf_counter() - start)
