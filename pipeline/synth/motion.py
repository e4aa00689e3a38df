"""Facial action units as displacement fields placed on a face's own 68 landmarks.

The model of the motion (``docs/synthetic-data.md`` explains it in prose):

- A face frame from the landmarks: origin between the eye centres, ``ex`` along
  the eye line, ``up`` perpendicular to it towards the forehead, unit the
  inter-ocular distance (IOD, between the eye centres). Each action unit is a
  few *anchors* (a landmark group on one side of the face, or on the midline)
  that move in a direction given in that frame (``out`` = away from the
  midline, ``up`` = towards the forehead).
- Each anchor moves the skin around it with a smooth bump of compact support,
  ``w(r) = (1 - r^2)^3`` for ``r < 1`` (``r`` is the elliptical distance in
  units of the anchor's radii), 0 beyond: C2-smooth, Gaussian-like, and exactly
  zero outside the anchor's ellipse, so the motion is local to the units'
  regions by construction.
- The field of an expression is the sum of its anchors' fields, scaled so that
  its largest magnitude is the expression's apex amplitude, given in pixels on
  a 128 px face: the pipeline's aligned crop (:class:`pipeline.align.AlignParams`,
  eye centres ``eye_distance * 128`` px apart), which is where the flow is computed.

Fields here are *forward* displacements: the skin at ``p`` moves to ``p + d(p)``.
The renderer warps with the backward map ``x -> x - d(x)``, exact to first
order for fields this small and smooth.

Shapes and units: landmarks ``(68, 2)`` float (x, y) in image pixels; fields
``(H, W, 2)`` float32 (dx, dy) in image pixels.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from fr_mer.pipeline.align import AlignParams

#: Apex amplitude limit: largest displacement at the apex, pixels on a 128 px face.
MAX_AMPLITUDE_128 = 2.0
#: Reference face of the amplitudes: the pipeline's 128 px aligned crop.
REFERENCE_FACE_PX = 128
#: Distance between the eye centres on that reference face, px.
REFERENCE_EYE_DISTANCE_PX = AlignParams().eye_distance * REFERENCE_FACE_PX

#: Which side of the face an anchor's landmarks are on, as the sign of ``out``
#: along the image's eye line: landmarks 36-41 (image left) are -1.
RIGHT, CENTRE, LEFT = -1, 0, 1


@dataclasses.dataclass(frozen=True)
class Anchor:
    """One moving patch of skin.

    ``landmarks``: indices whose mean is the patch centre (before ``offset``);
    ``side``: RIGHT/LEFT (image left/right half) or CENTRE; ``offset`` and
    ``direction``: (out, up) in IOD units; ``radii``: semi-axes of the support
    ellipse (along the eye line, along ``up``) in IOD units; ``weight``: the
    relative strength inside its unit.
    """

    landmarks: tuple[int, ...]
    side: int
    direction: tuple[float, float]
    radii: tuple[float, float]
    offset: tuple[float, float] = (0.0, 0.0)
    weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class ActionUnit:
    code: str
    name: str
    anchors: tuple[Anchor, ...]


def _bilateral(right: tuple[int, ...], left: tuple[int, ...], **kwargs: object) -> tuple[Anchor, Anchor]:
    return Anchor(right, RIGHT, **kwargs), Anchor(left, LEFT, **kwargs)  # type: ignore[arg-type]


#: The action units of the generator (FACS codes), by code.
ACTION_UNITS: dict[str, ActionUnit] = {
    unit.code: unit
    for unit in (
        ActionUnit("AU1", "inner brow raiser",
                   _bilateral((20, 21), (22, 23), direction=(0.0, 1.0), radii=(0.30, 0.28))),
        ActionUnit("AU2", "outer brow raiser",
                   _bilateral((17, 18, 19), (24, 25, 26), direction=(0.15, 1.0), radii=(0.32, 0.28))),
        ActionUnit("AU4", "brow lowerer",
                   _bilateral((19, 20, 21), (22, 23, 24), direction=(-0.55, -0.85), radii=(0.38, 0.28))),
        ActionUnit("AU5", "upper lid raiser",
                   _bilateral((37, 38), (43, 44), direction=(0.0, 1.0), radii=(0.22, 0.12),
                              weight=0.9)),
        ActionUnit("AU6", "cheek raiser",
                   _bilateral((40, 41), (46, 47), direction=(0.1, 1.0), radii=(0.38, 0.30),
                              offset=(0.05, -0.38))
                   + _bilateral((40, 41), (46, 47), direction=(0.0, 1.0), radii=(0.20, 0.10),
                                weight=0.6)),
        ActionUnit("AU12", "lip corner puller",
                   _bilateral((48,), (54,), direction=(0.55, 0.85), radii=(0.30, 0.25))),
        ActionUnit("AU15", "lip corner depressor",
                   _bilateral((48,), (54,), direction=(0.15, -1.0), radii=(0.30, 0.28),
                              offset=(0.0, -0.05))),
        ActionUnit("AU26", "jaw drop", (
            Anchor((56, 57, 58), CENTRE, direction=(0.0, -1.0), radii=(0.40, 0.20), weight=0.7),
            Anchor((7, 8, 9), CENTRE, direction=(0.0, -1.0), radii=(0.55, 0.30)),
        )),
        # Not an expression: the blink nuisance (eyelid closing), any class.
        ActionUnit("AU45", "blink",
                   _bilateral((37, 38), (43, 44), direction=(0.0, -1.0), radii=(0.22, 0.14))),
    )
}

#: Units of each composite class: ``required`` are always present (at least one of
#: ``any_of`` when given), ``optional`` each with its probability.
CLASS_UNITS: dict[str, dict[str, object]] = {
    # brow lowerer and/or lip-corner depressor (disgust, anger, repression...)
    "negative": {"required": (), "any_of": ("AU4", "AU15"), "optional": {}},
    # lip-corner puller, often with the cheek raiser (Duchenne smile)
    "positive": {"required": ("AU12",), "any_of": (), "optional": {"AU6": 0.6}},
    # brow raisers, sometimes the upper-lid raiser and the jaw drop
    "surprise": {"required": (), "any_of": ("AU1", "AU2"), "optional": {"AU5": 0.5, "AU26": 0.4}},
}


@dataclasses.dataclass(frozen=True)
class Expression:
    """What moves at the apex: units with per-side intensity, and the apex amplitude.

    ``units``: (code, right-side intensity, left-side intensity), intensities in
    [0, 1] (a unilateral unit has one side 0 or weak); ``amplitude``: largest
    displacement of the whole field at the apex, pixels on a 128 px face.
    """

    label: str
    units: tuple[tuple[str, float, float], ...]
    amplitude: float

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(code for code, _, _ in self.units)


def sample_expression(
    label: str,
    rng: np.random.Generator,
    *,
    amplitude: tuple[float, float] = (1.0, MAX_AMPLITUDE_128),
    asymmetry: float = 0.2,
) -> Expression:
    """A random expression of class ``label``: a partial combination of its units.

    Each unit's intensity is drawn in [0.6, 1]; with probability ``asymmetry``
    one side is weakened to 30-70 % (unilateral units such as ``L12``); the apex
    amplitude (px on a 128 px face) is uniform in ``amplitude``.
    """
    if label not in CLASS_UNITS:
        raise ValueError(f"unknown class {label!r}: expected one of {', '.join(CLASS_UNITS)}")
    low, high = amplitude
    if not 0 < low <= high <= MAX_AMPLITUDE_128:
        raise ValueError(
            f"amplitude range {amplitude!r} must satisfy 0 < low <= high <= {MAX_AMPLITUDE_128}"
        )
    spec = CLASS_UNITS[label]
    codes = list(spec["required"])  # type: ignore[arg-type]
    any_of = tuple(spec["any_of"])  # type: ignore[arg-type]
    if any_of:
        # every non-empty subset is possible; all of them is the most common
        chosen = [code for code in any_of if rng.random() < 0.6]
        if not chosen:
            chosen = [any_of[int(rng.integers(len(any_of)))]]
        codes += chosen
    for code, probability in spec["optional"].items():  # type: ignore[union-attr]
        if rng.random() < probability:
            codes.append(code)
    units = []
    for code in codes:
        intensity = float(rng.uniform(0.6, 1.0))
        right = left = intensity
        if rng.random() < asymmetry:
            weak = intensity * float(rng.uniform(0.3, 0.7))
            if rng.random() < 0.5:
                right = weak
            else:
                left = weak
        units.append((code, right, left))
    return Expression(label, tuple(units), float(rng.uniform(low, high)))


@dataclasses.dataclass(frozen=True)
class FaceFrame:
    """The face's own coordinate frame, from its 68 landmarks (image pixels)."""

    origin: np.ndarray  # (2,) midpoint of the eye centres
    ex: np.ndarray  # (2,) unit vector along the eye line, towards landmarks 42-47
    up: np.ndarray  # (2,) unit vector towards the forehead
    iod: float  # inter-ocular distance between eye centres, px
    face_width: float  # jaw width, landmark 0 to 16, px

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray) -> "FaceFrame":
        points = _check_landmarks(landmarks)
        right_eye = points[36:42].mean(axis=0)
        left_eye = points[42:48].mean(axis=0)
        axis = left_eye - right_eye
        iod = float(np.hypot(*axis))
        if iod < 1.0:
            raise ValueError("landmarks: the eye centres coincide; not a face")
        ex = axis / iod
        down = np.array([-ex[1], ex[0]])  # +90 degrees in image coordinates (y down)
        if np.dot(points[8] - (right_eye + left_eye) / 2, down) < 0:
            down = -down  # mirrored landmark order: keep "up" towards the forehead
        return cls(
            origin=(right_eye + left_eye) / 2,
            ex=ex,
            up=-down,
            iod=iod,
            face_width=float(np.hypot(*(points[16] - points[0]))),
        )

    @property
    def px_per_128(self) -> float:
        """Image pixels per pixel of the 128 px reference face (same eye distance)."""
        return self.iod / REFERENCE_EYE_DISTANCE_PX

    def vector(self, side: int, out: float, up: float) -> np.ndarray:
        """A face-frame vector (out, up) as an image vector (not normalised)."""
        return side * out * self.ex + up * self.up if side else out * self.ex + up * self.up


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"landmarks must be a finite (68, 2) array, got shape {points.shape}")
    return points


@dataclasses.dataclass(frozen=True)
class PlacedAnchor:
    """An anchor on a particular face: centre, image direction and ellipse (pixels)."""

    centre: np.ndarray  # (2,)
    direction: np.ndarray  # (2,) image vector, |direction| = the anchor's relative strength
    axes: np.ndarray  # (2, 2) rows: unit vectors of the ellipse's axes
    radii: np.ndarray  # (2,) semi-axes in pixels


def place_units(
    landmarks: np.ndarray, units: Mapping[str, tuple[float, float]]
) -> list[PlacedAnchor]:
    """Anchors of ``units`` (code -> (right, left) intensity) placed on a face.

    The intensity of each side multiplies its anchors' directions; centre anchors
    take the mean of the two sides.
    """
    points = _check_landmarks(landmarks)
    frame = FaceFrame.from_landmarks(points)
    placed: list[PlacedAnchor] = []
    for code, (right, left) in units.items():
        if code not in ACTION_UNITS:
            raise ValueError(f"unknown action unit {code!r}: expected one of {', '.join(ACTION_UNITS)}")
        for anchor in ACTION_UNITS[code].anchors:
            intensity = {RIGHT: right, LEFT: left, CENTRE: (right + left) / 2}[anchor.side]
            if intensity <= 0:
                continue
            side = anchor.side
            centre = points[list(anchor.landmarks)].mean(axis=0) + frame.iod * frame.vector(
                side, *anchor.offset
            )
            raw = frame.vector(side, *anchor.direction)
            direction = raw / np.hypot(*raw) * anchor.weight * intensity
            placed.append(
                PlacedAnchor(
                    centre=centre,
                    direction=direction,
                    axes=np.stack([frame.ex, frame.up]),
                    radii=np.asarray(anchor.radii, dtype=np.float64) * frame.iod,
                )
            )
    return placed


def bump(r2: np.ndarray) -> np.ndarray:
    """The blob profile ``(1 - r^2)^3`` for ``r^2 < 1``, else 0 (``r2`` is r squared).

    1 at the centre, C2-smooth, support the unit disc: compact, so a unit's
    motion vanishes exactly outside its region.
    """
    inside = np.clip(1.0 - r2, 0.0, None)
    return inside * inside * inside


def _anchor_bbox(anchor: PlacedAnchor, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    # half-extent of a rotated ellipse along x and y
    extent = np.sqrt((anchor.radii[:, None] ** 2 * anchor.axes**2).sum(axis=0))
    x0 = int(np.floor(anchor.centre[0] - extent[0])) - 1
    x1 = int(np.ceil(anchor.centre[0] + extent[0])) + 2
    y0 = int(np.floor(anchor.centre[1] - extent[1])) - 1
    y1 = int(np.ceil(anchor.centre[1] + extent[1])) + 2
    height, width = shape
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _anchor_r2(anchor: PlacedAnchor, box: tuple[slice, slice]) -> np.ndarray:
    ys = np.arange(box[0].start, box[0].stop, dtype=np.float64)
    xs = np.arange(box[1].start, box[1].stop, dtype=np.float64)
    dx = xs[None, :] - anchor.centre[0]
    dy = ys[:, None] - anchor.centre[1]
    a = (dx * anchor.axes[0, 0] + dy * anchor.axes[0, 1]) / anchor.radii[0]
    b = (dx * anchor.axes[1, 0] + dy * anchor.axes[1, 1]) / anchor.radii[1]
    return a * a + b * b


def unit_field(anchors: list[PlacedAnchor], shape: tuple[int, int]) -> np.ndarray:
    """Sum of the anchors' bump-weighted displacements, unscaled: ``(H, W, 2)`` float64."""
    field = np.zeros((*shape, 2), dtype=np.float64)
    for anchor in anchors:
        box = _anchor_bbox(anchor, shape)
        if box is None:
            continue
        weight = bump(_anchor_r2(anchor, box))
        field[box[0], box[1], 0] += weight * anchor.direction[0]
        field[box[0], box[1], 1] += weight * anchor.direction[1]
    return field


def region_mask(anchors: list[PlacedAnchor], shape: tuple[int, int]) -> np.ndarray:
    """Pixels inside any anchor's ellipse (where the field may be non-zero): ``(H, W)`` bool."""
    mask = np.zeros(shape, dtype=bool)
    for anchor in anchors:
        box = _anchor_bbox(anchor, shape)
        if box is not None:
            mask[box] |= _anchor_r2(anchor, box) < 1.0
    return mask


def _units_of(expression: Expression) -> dict[str, tuple[float, float]]:
    return {code: (right, left) for code, right, left in expression.units}


def expression_field(
    landmarks: np.ndarray, shape: tuple[int, int], expression: Expression
) -> np.ndarray:
    """The apex displacement of ``expression`` on a face: ``(H, W, 2)`` float32, pixels.

    Its largest magnitude is ``expression.amplitude`` pixels on a 128 px face,
    i.e. ``amplitude * face_width / 128`` image pixels.
    """
    if not 0 < expression.amplitude <= MAX_AMPLITUDE_128 + 1e-9:
        raise ValueError(
            f"expression amplitude {expression.amplitude} must be in (0, {MAX_AMPLITUDE_128}]"
        )
    frame = FaceFrame.from_landmarks(landmarks)
    field = unit_field(place_units(landmarks, _units_of(expression)), shape)
    peak = float(np.sqrt((field**2).sum(axis=-1)).max()) if field.size else 0.0
    if peak == 0.0:
        raise ValueError("the expression's regions lie outside the image; move the face inside")
    return (field * (expression.amplitude * frame.px_per_128 / peak)).astype(np.float32)


def expression_region(
    landmarks: np.ndarray, shape: tuple[int, int], expression: Expression
) -> np.ndarray:
    """Where ``expression`` may move the face (its units' ellipses): ``(H, W)`` bool."""
    return region_mask(place_units(landmarks, _units_of(expression)), shape)


def blink_field(landmarks: np.ndarray, shape: tuple[int, int], amplitude: float) -> np.ndarray:
    """Both upper lids moving down by at most ``amplitude`` px on a 128 px face: ``(H, W, 2)``."""
    frame = FaceFrame.from_landmarks(landmarks)
    field = unit_field(place_units(landmarks, {"AU45": (1.0, 1.0)}), shape)
    peak = float(np.sqrt((field**2).sum(axis=-1)).max())
    if peak == 0.0:
        return field.astype(np.float32)
    return (field * (amplitude * frame.px_per_128 / peak)).astype(np.float32)


def temporal_profile(
    n_frames: int, apex_index: int, residual: float = 0.0
) -> np.ndarray:
    """Expression intensity per frame, onset (0) -> apex (1) -> offset (``residual``).

    ``sin^2`` rise from the onset to the apex, ``cos^2`` fall from the apex to the
    offset towards ``residual`` (the face need not be back to neutral at the
    annotated offset). ``(n_frames,)`` float64, frame 0 is the onset.
    """
    if n_frames < 2 or not 0 < apex_index < n_frames:
        raise ValueError(
            f"need 2+ frames with the apex after the onset, got n_frames={n_frames}, "
            f"apex_index={apex_index}"
        )
    if not 0.0 <= residual < 1.0:
        raise ValueError(f"residual {residual} must be in [0, 1)")
    index = np.arange(n_frames, dtype=np.float64)
    rise = np.sin(0.5 * np.pi * index / apex_index) ** 2
    tail = max(n_frames - 1 - apex_index, 1)
    fall = residual + (1.0 - residual) * np.cos(0.5 * np.pi * (index - apex_index) / tail) ** 2
    return np.where(index <= apex_index, rise, fall)
