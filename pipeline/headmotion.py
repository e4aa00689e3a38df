"""Head-motion compensation between the aligned onset and apex crops.

Alignment warps onset and apex with the onset's matrix, so a head movement
between the two frames stays in the pair and the flow sees it as motion. Three
remedies are offered, each acting at its own stage:

- ``"rigid"`` (before the flow, :func:`compensate`): the apex is registered to
  the onset by the similarity transform that best maps the apex's rigid
  landmarks (nose bridge, eye corners, upper face contour: points that facial
  expressions barely move) onto the onset's, least squares.
- ``"nose_flow"`` (after the flow, :func:`compensate_flow`): the mean flow of
  the nose region (the box around landmarks 27-35) is subtracted from the flow
  field, as hand-crafted methods (e.g. MDMO) remove head translation.
- ``"nose_median"`` (after the flow): the same, with the median in place of
  the mean (robust to a nose wrinkle's local motion inside the box), as plain
  pipelines of the field remove head translation.
- ``"rigid_flow"`` (after the flow): a similarity motion field (translation,
  rotation, scale) is fitted by least squares to the flow on the rigid regions
  (the nose box and four small disks on the temples, between the outer eye
  corners and the face contour) and subtracted from the flow field.
- ``"none"``: nothing.

Every method is a no-op at the stage it does not act in, so a runner calls
both functions in turn for any method:
``apex, info = compensate(onset, apex, lm, m)``; ``flow = tvl1_flow(onset, apex)``;
``flow, info2 = compensate_flow(flow, lm, m)``. Methods that act on the flow
subtract the fitted head-motion field everywhere, background included.
:data:`DEFAULT_METHOD` was chosen on the real-face development benchmark
(docs/benchmarks-devbench.md). On synthetic pairs (docs/pipeline.md) ``"rigid"``
is limited by dlib's landmark jitter (about 0.5 px), the nose methods remove
translation only, ``"rigid_flow"`` removes translation, rotation and scale.
"""
from __future__ import annotations

import cv2
import numpy as np

from fr_mer.errors import ParameterError
from fr_mer.pipeline.align import DegenerateImageError, FaceAligner

METHODS = ("none", "rigid", "nose_flow", "nose_median", "rigid_flow")

#: The methods that act on the flow (:func:`compensate_flow`); ``"rigid"`` acts on the apex crop.
FLOW_METHODS = ("nose_flow", "nose_median", "rigid_flow")

#: Chosen on the real-face development benchmark (docs/benchmarks-devbench.md): with the linear
#: probe on fr-mer's 256 px flow, ``nose_median`` beat ``rigid_flow`` by 0.03 UF1 on min-max inputs
#: and 0.06 on raw ones (``rigid_flow`` led on the synthetic pairs of docs/pipeline.md, which have
#: head rotation and scale; the development set's head motion is translation and drift).
DEFAULT_METHOD = "nose_median"

#: Landmarks (iBUG 68, 0-based) that facial expressions barely move: nose bridge
#: 27-30, the eyes' outer and inner corners 36, 39, 42, 45, and the face contour
#: beside the eyes 0-2 and 14-16 (the lower contour follows the jaw).
RIGID_LANDMARKS = (27, 28, 29, 30, 36, 39, 42, 45, 0, 1, 2, 14, 15, 16)

#: Nose landmarks: bridge 27-30, base 31-35.
NOSE_LANDMARKS = tuple(range(27, 36))

#: Temple points of ``"rigid_flow"``: midpoints of these (contour, outer eye corner)
#: landmark pairs, on skin that expressions barely move, spread across the face
#: so that rotation and scale are well determined. (The contour itself is not
#: used: half of a disk there is static background.)
TEMPLE_PAIRS = ((0, 36), (1, 36), (16, 45), (15, 45))

#: Radius of the temple disks, as a fraction of the crop side.
TEMPLE_RADIUS = 0.05


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ParameterError(f"unknown head-motion method {method!r}; choose one of {list(METHODS)}")


def _usable(landmarks) -> bool:
    return landmarks is not None and np.shape(landmarks) == (68, 2) and bool(np.isfinite(landmarks).all())


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 similarity (rotation, uniform scale, translation) mapping src (N, 2) onto dst (N, 2).

    Closed form (Umeyama 1991 without reflection), float64 inside, float32 out.
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 2 or len(s) < 2:
        raise ValueError(f"need two (N, 2) point sets of the same shape, N >= 2; got {s.shape} and {d.shape}")
    ms, md = s.mean(axis=0), d.mean(axis=0)
    zs = (s - ms) @ np.array([1, 1j])
    zd = (d - md) @ np.array([1, 1j])
    denom = float(np.sum(np.abs(zs) ** 2))
    if denom < 1e-12:
        raise DegenerateImageError("the source points coincide; no similarity transform is defined")
    a = np.sum(np.conj(zs) * zd) / denom
    r = np.array([[a.real, -a.imag], [a.imag, a.real]])
    t = md - r @ ms
    return np.hstack([r, t[:, None]]).astype(np.float32)


def compensate(onset_aligned: np.ndarray, apex_aligned: np.ndarray, landmarks: np.ndarray, method: str,
               *, apex_landmarks: np.ndarray | None = None, aligner=None) -> tuple[np.ndarray, dict]:
    """Image stage: the apex crop to take the flow to, and what was done.

    Args:
        onset_aligned, apex_aligned: (S, S) aligned crops (one matrix for both).
        landmarks: (68, 2) onset landmarks in crop pixels (NaN when the
            alignment found no face).
        method: one of :data:`METHODS`; only ``"rigid"`` acts here.
        apex_landmarks: (68, 2) apex landmarks in crop pixels; detected on the
            apex crop with ``aligner`` (a :class:`pipeline.align.FaceAligner`,
            a default one if None) when not given.

    Returns:
        ``(apex, info)``: the apex (registered to the onset for ``"rigid"``,
        else ``apex_aligned`` itself) and a dict with ``method``, ``applied``
        (bool), ``matrix`` (2x3 apex -> onset crop, identity when not applied)
        and ``reason`` when a method could not be applied (then the apex is
        returned unchanged).
    """
    _check_method(method)
    info: dict = {"method": method, "applied": False, "matrix": np.eye(2, 3, dtype=np.float32)}
    if method != "rigid":
        return apex_aligned, info
    if not _usable(landmarks):
        info["reason"] = "no onset landmarks"
        return apex_aligned, info
    if apex_landmarks is None:
        aligner = FaceAligner() if aligner is None else aligner
        apex_landmarks = aligner.landmarks(apex_aligned, pre_cropped=True)
    if not _usable(apex_landmarks):
        info["reason"] = "no face found on the apex crop"
        return apex_aligned, info
    idx = list(RIGID_LANDMARKS)
    matrix = fit_similarity(np.asarray(apex_landmarks)[idx], np.asarray(landmarks)[idx])
    h, w = np.shape(apex_aligned)[:2]
    image = np.asarray(apex_aligned)
    if image.dtype not in (np.uint8, np.float32):
        image = image.astype(np.float32)
    registered = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    info.update(applied=True, matrix=matrix)
    return registered, info


def nose_box(landmarks: np.ndarray, shape: tuple[int, int], margin: float = 0.15) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), end-exclusive: the nose landmarks' box grown by ``margin`` of its size."""
    pts = np.asarray(landmarks, dtype=np.float64)[list(NOSE_LANDMARKS)]
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    gx, gy = margin * (x1 - x0), margin * (y1 - y0)
    h, w = shape[:2]
    top, bottom = int(np.clip(np.floor(y0 - gy), 0, h - 1)), int(np.clip(np.ceil(y1 + gy), 0, h - 1)) + 1
    left, right = int(np.clip(np.floor(x0 - gx), 0, w - 1)), int(np.clip(np.ceil(x1 + gx), 0, w - 1)) + 1
    return top, bottom, left, right


def rigid_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the nose box and the temple disks (:data:`TEMPLE_PAIRS`) where ``"rigid_flow"`` fits."""
    h, w = shape[:2]
    lm = np.asarray(landmarks, dtype=np.float64)
    mask = np.zeros((h, w), dtype=bool)
    top, bottom, left, right = nose_box(lm, shape)
    mask[top:bottom, left:right] = True
    ys, xs = np.mgrid[0:h, 0:w]
    radius = TEMPLE_RADIUS * max(h, w)
    for a, b in TEMPLE_PAIRS:
        cx, cy = 0.5 * (lm[a] + lm[b])
        mask |= (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
    return mask


def fit_similarity_field(flow: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Least-squares similarity motion field fitted to ``flow`` where ``mask`` is true.

    The field is ``(u, v)(x, y) = F[:, :2] @ (x, y) + F[:, 2]`` with
    ``F[:, :2] = [[a, -b], [b, a]]`` (a small rotation and scale change plus a
    translation), which is the displacement of a similarity transform.

    Returns:
        F, (2, 3) float32, in the flow's pixels.
    """
    ys, xs = np.nonzero(mask)
    if len(xs) < 3:
        raise DegenerateImageError("the fitting region holds fewer than 3 pixels")
    cx, cy = xs.mean(), ys.mean()
    x, y = xs - cx, ys - cy
    one, zero = np.ones_like(x, dtype=np.float64), np.zeros_like(x, dtype=np.float64)
    design = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
    target = np.concatenate([flow[ys, xs, 0], flow[ys, xs, 1]]).astype(np.float64)
    a, b, tx, ty = np.linalg.lstsq(design, target, rcond=None)[0]
    lin = np.array([[a, -b], [b, a]])
    return np.hstack([lin, (np.array([tx, ty]) - lin @ [cx, cy])[:, None]]).astype(np.float32)


def motion_field(model: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, 2) float32 displacement ``model[:, :2] @ (x, y) + model[:, 2]`` at every pixel."""
    h, w = shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    m = np.asarray(model, dtype=np.float64)
    u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    return np.stack([u, v], axis=-1).astype(np.float32)


def compensate_flow(flow: np.ndarray, landmarks: np.ndarray, method: str) -> tuple[np.ndarray, dict]:
    """Flow stage: the flow with the head's motion removed, and what was done.

    Args:
        flow: (S, S, 2) flow (u, v) in pixels, onset -> apex, on the aligned crop.
        landmarks: (68, 2) onset landmarks in crop pixels.
        method: one of :data:`METHODS`; ``"nose_flow"``, ``"nose_median"`` and ``"rigid_flow"`` act here.

    Returns:
        ``(flow, info)``: the flow minus the head-motion field; ``info`` holds
        ``method``, ``applied``, ``field`` (2x3, the subtracted field as in
        :func:`fit_similarity_field`: for the nose methods a pure translation;
        zeros when nothing was subtracted) and ``reason`` when the method could
        not be applied (then the flow is returned unchanged).
    """
    _check_method(method)
    f = np.asarray(flow, dtype=np.float32)
    if f.ndim != 3 or f.shape[2] != 2:
        raise ValueError(f"flow must be (H, W, 2), got {f.shape}")
    info: dict = {"method": method, "applied": False, "field": np.zeros((2, 3), dtype=np.float32)}
    if method not in FLOW_METHODS:
        return f, info
    if not _usable(landmarks):
        info["reason"] = "no onset landmarks"
        return f, info
    if method in ("nose_flow", "nose_median"):
        top, bottom, left, right = nose_box(landmarks, f.shape)
        field = np.zeros((2, 3), dtype=np.float32)
        nose = f[top:bottom, left:right].reshape(-1, 2)
        field[:, 2] = np.median(nose, axis=0) if method == "nose_median" else nose.mean(axis=0)
    else:
        field = fit_similarity_field(f, rigid_mask(landmarks, f.shape))
    info.update(applied=True, field=field)
    return f - motion_field(field, f.shape), info
