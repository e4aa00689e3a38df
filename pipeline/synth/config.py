"""What a synthetic database is made of: the generator's settings and each clip's parameters.

The settings recorded in the manifest (:class:`SynthSettings`, with its
:class:`Nuisances`) are :func:`fr_mer.config.settings` dataclasses: written with
:func:`fr_mer.config.to_record`, read back and validated with
:func:`fr_mer.config.from_record`. :class:`ClipParams` is what
:mod:`~fr_mer.pipeline.synth.planning` draws for one clip and
:mod:`~fr_mer.pipeline.synth.rendering` turns into frames. The synthetic
defaults are defined here once; the command line and the library take them from here.
"""
from __future__ import annotations

import dataclasses

from fr_mer.config import settings
from fr_mer.errors import ParameterError
from fr_mer.limits import MAX_FRAME_SIDE, check_number
from fr_mer.pipeline.labels import DATABASES
from fr_mer.pipeline.synth import motion

#: Databases that the composite layout writes (those of the MEGC2019 composite).
COMPOSITE_LAYOUTS: tuple[str, ...] = DATABASES
#: Layouts the generator writes: the composite's databases and CAS(ME)^3 part A.
LAYOUTS: tuple[str, ...] = (*COMPOSITE_LAYOUTS, "casme3")
#: ``--layout`` value that writes every database of the composite and its list.
COMPOSITE = "composite"
#: Frame rate of each database's camera, frames per second.
FPS: dict[str, int] = {"casme2": 200, "samm": 200, "smic": 100, "casme3": 30}
#: Name of the composite list that the composite layout writes.
COMPOSITE_LIST_NAME = "synthetic_3class_gt.csv"
#: Name of the record of what was generated (settings and every clip's ground truth).
MANIFEST_NAME = "synth-manifest.json"

#: Default frame size (width, height): CASME II's 4:3 at half size, for speed.
DEFAULT_FRAME_SIZE: tuple[int, int] = (320, 240)
#: Frame size of the layouts whose release has its own (CAS(ME)^3's 1280x720 colour camera).
LAYOUT_FRAME_SIZE: dict[str, tuple[int, int]] = {"casme3": (1280, 720)}
#: Range of a subject's face (jaw) width as a fraction of the frame height.
DEFAULT_FACE_SPAN: tuple[float, float] = (0.50, 0.62)
#: The same for layouts whose face is a smaller part of the frame (CAS(ME)^3 films the upper body).
LAYOUT_FACE_SPAN: dict[str, tuple[float, float]] = {"casme3": (0.30, 0.38)}
#: Smallest frame side the face detector works at, px.
MIN_FRAME_SIDE = 96
DEFAULT_SUBJECTS = 4
DEFAULT_CLIPS_PER_SUBJECT = 6
DEFAULT_SEED = 0
#: Range of the apex displacement, px on the 128 px reference face (:mod:`motion`).
DEFAULT_AMPLITUDE: tuple[float, float] = (1.0, motion.MAX_AMPLITUDE_128)
#: Range of a clip's length onset..offset, seconds.
DEFAULT_DURATION_S: tuple[float, float] = (0.065, 0.1)


def default_frame_size(layout: str) -> tuple[int, int]:
    """Frame size of ``layout`` when none is asked for (composite: :data:`DEFAULT_FRAME_SIZE`)."""
    return LAYOUT_FRAME_SIZE.get(layout, DEFAULT_FRAME_SIZE)


def _check_range(name: str, bounds: tuple[float, float], low: float, high: float | None = None) -> None:
    """``bounds`` is (lo, hi) with ``low <= lo <= hi`` (``<= high`` when given)."""
    lo, hi = bounds
    if not low <= lo <= hi or (high is not None and hi > high):
        limit = f" <= {high}" if high is not None else ""
        raise ParameterError(f"{name} {tuple(bounds)!r} must satisfy {low} <= low <= high{limit}")


@settings
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

    def __post_init__(self) -> None:
        for name in ("pose_shift", "pose_rotation_deg", "head_shift", "head_rotation_deg", "lighting"):
            if getattr(self, name) < 0:
                raise ParameterError(f"nuisance {name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.blink_probability <= 1.0:
            raise ParameterError(f"blink_probability must be in [0, 1], got {self.blink_probability!r}")
        _check_range("blink_amplitude", self.blink_amplitude, 0.0)
        _check_range("noise_sigma", self.noise_sigma, 0.0)
        if self.jpeg_quality is not None:
            _check_range("jpeg_quality", self.jpeg_quality, 0, 100)

    @classmethod
    def none(cls) -> "Nuisances":
        """No nuisance at all: only the expression moves (tests, illustrations)."""
        return cls(pose_shift=0.0, pose_rotation_deg=0.0, head_shift=0.0, head_rotation_deg=0.0,
                   blink_probability=0.0, blink_amplitude=(0.0, 0.0), lighting=0.0,
                   noise_sigma=(0.0, 0.0), jpeg_quality=None)


def check_counts(subjects: int, clips_per_subject: int) -> None:
    """Both are positive integers (a bool is not a count)."""
    for name, value in (("subjects", subjects), ("clips_per_subject", clips_per_subject)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ParameterError(f"{name} must be a positive integer, got {value!r}")


def check_frame_size(frame_size: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` as ints, each at least :data:`MIN_FRAME_SIDE`."""
    width, height = (int(v) for v in frame_size)
    if width > MAX_FRAME_SIDE or height > MAX_FRAME_SIDE:
        raise ParameterError(f"frame size {width}x{height}: each side must be at most {MAX_FRAME_SIDE} pixels "
                             "(memory grows with the frame's area)")
    if width < MIN_FRAME_SIDE or height < MIN_FRAME_SIDE:
        raise ParameterError(
            f"frame size {width}x{height} is too small for the face detector; "
            f"use at least {MIN_FRAME_SIDE}x{MIN_FRAME_SIDE}"
        )
    return width, height


def check_layout(layout: str, *, composite: bool = False) -> str:
    """``layout`` is one of :data:`LAYOUTS` (or :data:`COMPOSITE` when allowed)."""
    choices = (*LAYOUTS, COMPOSITE) if composite else LAYOUTS
    if layout not in choices:
        raise ParameterError(f"unknown layout {layout!r}: expected one of {', '.join(choices)}")
    return layout


@settings
class SynthSettings:
    """Everything that fixes a generated tree's bytes, as the manifest records it.

    ``layout``: one of :data:`LAYOUTS`, or :data:`COMPOSITE`; ``subjects`` and
    ``clips_per_subject`` are per database; ``faces``: the photo folder (None: the
    bundled astronaut); ``frame_size``: (width, height) px; ``amplitude``: range of
    the apex displacement, px on the 128 px face (within the micro-expression limit
    ``MAX_AMPLITUDE_128``); ``amplitude_scale``: multiplier of the whole expression
    motion on top of it (1: micro-expression size; larger: motion seen in raw frames);
    ``duration_s``: range of a clip's length, seconds.
    """

    layout: str = COMPOSITE
    subjects: int = DEFAULT_SUBJECTS
    clips_per_subject: int = DEFAULT_CLIPS_PER_SUBJECT
    faces: str | None = None
    seed: int = DEFAULT_SEED
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE
    nuisances: Nuisances = Nuisances()
    amplitude: tuple[float, float] = DEFAULT_AMPLITUDE
    amplitude_scale: float = 1.0
    duration_s: tuple[float, float] = DEFAULT_DURATION_S

    def __post_init__(self) -> None:
        check_layout(self.layout, composite=True)
        check_counts(self.subjects, self.clips_per_subject)
        check_frame_size(self.frame_size)
        check_plan_ranges(self.amplitude, self.duration_s, self.amplitude_scale)

    @property
    def databases(self) -> tuple[str, ...]:
        """The databases this setting writes."""
        return COMPOSITE_LAYOUTS if self.layout == COMPOSITE else (self.layout,)


def check_plan_ranges(
    amplitude: tuple[float, float], duration_s: tuple[float, float], amplitude_scale: float = 1.0
) -> None:
    """The amplitude range lies in (0, MAX_AMPLITUDE_128], the scale and the duration range are positive."""
    check_number("amplitude_scale (--amplitude)", amplitude_scale, low=0, low_open=True, high=1e3)
    low, high = amplitude
    if not 0 < low <= high <= motion.MAX_AMPLITUDE_128:
        raise ParameterError(
            f"amplitude range {tuple(amplitude)!r} must satisfy 0 < low <= high <= {motion.MAX_AMPLITUDE_128}"
        )
    if not 0 < duration_s[0] <= duration_s[1]:
        raise ParameterError(f"duration range {tuple(duration_s)!r} must satisfy 0 < low <= high (seconds)")


@dataclasses.dataclass(frozen=True)
class ClipParams:
    """Everything that makes one clip, drawn by :func:`~fr_mer.pipeline.synth.planning.draw_clip`.

    Frame numbers are absolute (the file names); ``pose``/``drift`` are
    (dx, dy, roll in degrees) with shifts in image pixels, the roll about the
    nose tip; ``drift_shape`` in [0, 1] mixes a linear and an eased head path;
    ``blink`` is (first frame index, length in frames, amplitude px on 128) or None;
    ``lighting`` is (gain change, gradient change, gradient angle in degrees) at the offset;
    ``amplitude_scale`` multiplies the expression's field (not the blink).
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
    amplitude_scale: float = 1.0

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
        """The clip's ground truth for the manifest, as JSON-ready values."""
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
            "amplitude_px_on_128": round(self.expression.amplitude * self.amplitude_scale, 4),
            "blink": list(self.blink) if self.blink else None,
            "jpeg_quality": self.jpeg_quality,
        }
