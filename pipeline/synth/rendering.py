"""Frames of a planned clip: the neutral face warped by its expression under the nuisances.

A clip is a subject's neutral face (:mod:`fr_mer.pipeline.synth.faces`) warped, frame
by frame, by its expression's displacement field (:mod:`fr_mer.pipeline.synth.motion`)
scaled by the temporal profile onset -> apex -> offset, under nuisances that do
not depend on the class: a per-clip head pose and a small head movement during
the clip, blinks, a lighting change, sensor noise and JPEG compression. A frame
depends only on its clip and its number.
"""
from __future__ import annotations

import cv2
import numpy as np

from fr_mer.pipeline.synth import motion
from fr_mer.pipeline.synth.config import ClipParams
from fr_mer.pipeline.synth.faces import Identity
from fr_mer.pipeline.synth.planning import FRAME_STREAM, random_stream


def apex_displacement(identity: Identity, clip: ClipParams) -> np.ndarray:
    """The expression's displacement at the apex, ``(H, W, 2)`` float32 (dx, dy), pixels.

    In the subject's neutral-face coordinates (before head pose); the head
    moves this field rigidly with the face. Blinks are a nuisance, not part of it.
    The clip's ``amplitude_scale`` multiplies it.
    """
    field = motion.expression_field(identity.landmarks, identity.shape, clip.expression)
    return field if clip.amplitude_scale == 1.0 else field * np.float32(clip.amplitude_scale)


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
        rng = random_stream(self.seed, FRAME_STREAM, *clip.key, index)
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
