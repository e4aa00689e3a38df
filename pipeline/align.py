"""Face alignment with dlib: one similarity transform per sample, from the onset frame.

The frontal HOG detector finds the face (its most confident box), the
68-point shape predictor its landmarks; the eye centres (mean of landmarks
36-41 and 42-47, the eye on the image's left first) are mapped level onto
fixed template positions of a square crop. The same matrix warps onset and apex, so alignment adds no motion of its
own. The fallbacks when no face is found are in :meth:`FaceAligner.align_pair`
and docs/pipeline.md.

Coordinates are OpenCV's: x = column, y = row, integer values at pixel centres;
a 2x3 matrix ``M`` maps a frame point ``p`` to ``M[:, :2] @ p + M[:, 2]`` in the crop.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import cv2
import numpy as np

from fr_mer.config import settings
from fr_mer.errors import FrMerError, ParameterError
from fr_mer.pipeline.images import as_gray


class DegenerateImageError(FrMerError, ValueError):
    """An image its geometry cannot be computed on (eye points that coincide, too few pixels to fit, an
    image dlib refuses): bad data, a failure of that sample alone (:mod:`fr_mer.pipeline.preprocess.outcome`)."""


#: Landmark indices of the eyes (iBUG 68-point scheme, 0-based).
LEFT_EYE = slice(36, 42)   # the subject's right eye, on the image's left
RIGHT_EYE = slice(42, 48)

#: Flags an :class:`AlignedPair` can carry.
FACE_FROM_APEX = "face_from_apex"
NO_FACE_WHOLE_FRAME = "no_face_whole_frame"
RELEASE_CROP = "release_crop"

#: The crop rules of :class:`AlignParams`, by the name a cache records (``params["align"]["crop"]``).
CROPS = {
    "template": "the similarity that puts the eye centres on the template (eye_distance, eye_height)",
    "frame": "the whole frame scaled edge to edge onto the square: a cropped release's own face crop",
    "auto": "frame for frames of a cropped release (CASME II's Cropped, SMIC_all_cropped), "
            "template for raw frames",
}

_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


def default_predictor_path() -> Path:
    """The 68-point model file shipped by the ``face-recognition-models`` package.

    The package is found without importing it (its ``__init__`` needs
    setuptools' ``pkg_resources``, absent from recent environments).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / "models" / _PREDICTOR_FILE
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"dlib's 68-point landmark model ({_PREDICTOR_FILE}) was not found: "
        "install it with `pip install face-recognition-models`, or pass the file with --landmarks-model"
    )


@settings
class AlignParams:
    """The canonical face crop and how faces are found.

    Attributes:
        face_size: side of the square crop, pixels (the default ``size``).
        eye_distance: distance between the eye centres, as a fraction of the side.
        eye_height: height of the eye centres from the top, as a fraction of the side.
            With 0.36 / 0.32 all 68 landmarks of a frontal face (chin included) and
            some forehead above the brows fall inside the crop (docs/pipeline.md).
        upsample: the most times the HOG detector upsamples the image (finds faces
            down to about 80 / 2**upsample pixels); fewer are tried first, so the
            cost of upsampling is paid only when no face was found without it.
        detect_max_side: frames whose longest side is above this (pixels) are
            detected on a copy shrunk (INTER_AREA) so that side is this long; the
            box is scaled back to the frame and the landmarks are always fitted on
            the full-resolution frame. SAMM's 2040x1088 and CAS(ME)^3's 1280x720
            frames are detected at 640 px (a face 180-320 px wide at full size, as in
            the synthetic CAS(ME)^3 tree, is then 90-160 px: above the detector's
            80 px window).
        detect_pad: border (fraction of the longest side, replicated pixels) added
            for a second detection try on pre-cropped frames, whose face fills the
            frame and so lacks the margin the HOG window expects.
        crop: the crop rule (:data:`CROPS`). ``auto`` (the default) keeps a cropped
            release's own crop (``frame``): the template's wider square would reach
            past the frame's edge into replicated pixels, whose streaks the flow and
            the strain take for motion (docs/benchmarks-real.md); raw frames get the
            template. Landmarks are found either way (head motion needs them).
    """

    face_size: int = 128
    eye_distance: float = 0.36
    eye_height: float = 0.32
    upsample: int = 1
    detect_max_side: int = 640
    detect_pad: float = 0.25
    crop: str = "auto"

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ParameterError(f"unknown crop {self.crop!r}: expected one of {', '.join(CROPS)}")
        if self.face_size < 8:
            raise ParameterError(f"face_size must be at least 8 pixels, got {self.face_size}")
        if not 0 < self.eye_distance < 1:
            raise ParameterError(f"eye_distance is a fraction of the crop side in (0, 1), got {self.eye_distance}")
        if not 0 < self.eye_height < 1:
            raise ParameterError(f"eye_height is a fraction of the crop side in (0, 1), got {self.eye_height}")
        if self.upsample < 0 or self.detect_max_side < 80 or self.detect_pad < 0:
            raise ParameterError("upsample must be >= 0, detect_max_side >= 80 and detect_pad >= 0")


@dataclasses.dataclass
class AlignedPair:
    """Onset and apex warped by one matrix.

    ``onset``/``apex``: (size, size) crops, the input's dtype (uint8 in, uint8 out).
    ``matrix``: (2, 3) float32, frame -> crop. ``landmarks``: (68, 2) float32 in
    crop pixels (those of the frame the face was found on), all NaN when no face
    was found. ``flags``: :data:`FACE_FROM_APEX`, :data:`NO_FACE_WHOLE_FRAME`,
    :data:`RELEASE_CROP`.
    """

    onset: np.ndarray
    apex: np.ndarray
    matrix: np.ndarray
    landmarks: np.ndarray
    flags: list[str] = dataclasses.field(default_factory=list)


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points (x, y) by a 2x3 affine matrix; float32."""
    m = np.asarray(matrix, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return (p @ m[:, :2].T + m[:, 2]).astype(np.float32)


def eye_centres(landmarks: np.ndarray) -> np.ndarray:
    """(2, 2): centre of the image-left eye (36-41), then of the image-right eye (42-47)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must be a (68, 2) array, got {lm.shape}")
    return np.stack([lm[LEFT_EYE].mean(axis=0), lm[RIGHT_EYE].mean(axis=0)]).astype(np.float32)


def similarity_from_two_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation) taking src[0]->dst[0], src[1]->dst[1]."""
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    zs, zd = s[:, 0] + 1j * s[:, 1], d[:, 0] + 1j * d[:, 1]
    if abs(zs[1] - zs[0]) < 1e-6:
        raise DegenerateImageError("the two source points coincide; no similarity transform is defined")
    a = (zd[1] - zd[0]) / (zs[1] - zs[0])
    b = zd[0] - a * zs[0]
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]], dtype=np.float32)


def whole_frame_matrix(shape: tuple[int, int], size: int) -> np.ndarray:
    """2x3 matrix scaling a (H, W) frame onto a (size, size) crop, edge to edge (pixel centres kept)."""
    h, w = shape[:2]
    sx, sy = size / w, size / h
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]], dtype=np.float32)


def rescale_matrix(matrix: np.ndarray, from_size: int, to_size: int) -> np.ndarray:
    """The frame -> crop matrix for a crop of ``to_size`` from one for ``from_size`` (the same face region).

    Pixel centres: crop point x at from_size is ``(x + 0.5) * to_size / from_size - 0.5``
    at to_size, so a plain ``matrix * ratio`` is off by half a pixel times (ratio - 1).
    """
    r = to_size / from_size
    scale = np.array([[r, 0, 0.5 * r - 0.5], [0, r, 0.5 * r - 0.5], [0, 0, 1]])
    return (scale @ np.vstack([np.asarray(matrix, dtype=np.float64), [0, 0, 1]]))[:2].astype(np.float32)


def rescale_points(points: np.ndarray, from_size: int, to_size: int) -> np.ndarray:
    """(N, 2) crop points at ``from_size`` -> the same points in a crop of ``to_size`` (NaN stays NaN)."""
    r = to_size / from_size
    return ((np.asarray(points, dtype=np.float64) + 0.5) * r - 0.5).astype(np.float32)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))


class FaceAligner:
    """dlib face detection + landmarks and the canonical similarity warp.

    The dlib models load on first use in each process and are not pickled, so
    an aligner can be sent to joblib workers.
    """

    def __init__(self, params: AlignParams = AlignParams(), predictor_path: str | Path | None = None) -> None:
        self.params = params
        if predictor_path is None:
            self.predictor_path = default_predictor_path()
        else:
            self.predictor_path = Path(predictor_path)
            if not self.predictor_path.is_file():
                raise FileNotFoundError(
                    f"landmark model {self.predictor_path} does not exist: pass dlib's "
                    f"{_PREDICTOR_FILE} (pip install face-recognition-models ships it)"
                )
        self._detector = None
        self._predictor = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_detector"] = state["_predictor"] = None
        return state

    def _models(self):
        if self._predictor is None:
            import dlib

            self._detector = dlib.get_frontal_face_detector()
            try:
                self._predictor = dlib.shape_predictor(str(self.predictor_path))
            except RuntimeError as exc:
                raise RuntimeError(
                    f"cannot read the landmark model {self.predictor_path} ({exc}): "
                    f"pass dlib's {_PREDICTOR_FILE} with --landmarks-model"
                ) from exc
        return self._detector, self._predictor

    # -- detection ------------------------------------------------------------
    def _detect(self, gray: np.ndarray, pre_cropped: bool):
        """The most confident face box in frame pixels as (left, top, right, bottom), or None.

        The most confident rather than the largest: on a noisy astronaut frame the
        HOG detector also returned a larger false box on the suit (score 0.06
        against 1.5 for the face); the recordings hold one face.
        """
        detector, _ = self._models()
        p = self.params
        scale = min(1.0, p.detect_max_side / max(gray.shape))
        small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        pad = int(round(p.detect_pad * max(small.shape))) if pre_cropped and p.detect_pad > 0 else 0
        tries = [(up, 0) for up in range(p.upsample + 1)]
        if pad:
            tries = [t for up in range(p.upsample + 1) for t in ((up, 0), (up, pad))]
        for up, border in tries:
            image = small if not border else cv2.copyMakeBorder(small, border, border, border, border,
                                                                cv2.BORDER_REPLICATE)
            try:
                boxes, scores, _ = detector.run(image, up, 0.0)
            except RuntimeError as exc:  # dlib's own, on an image its detector cannot take
                raise DegenerateImageError(f"dlib's face detector: {exc}") from exc
            if len(boxes):
                box = boxes[int(np.argmax(scores))]
                return tuple((c - border) / scale for c in (box.left(), box.top(), box.right(), box.bottom()))
        return None

    def landmarks(self, gray: np.ndarray, *, pre_cropped: bool = False) -> np.ndarray | None:
        """(68, 2) float32 landmarks (x, y) of the most confident detected face, or None when no face.

        ``pre_cropped``: the frame is a face crop (cropped releases); adds a
        detection try on a padded copy (see :class:`AlignParams`).
        """
        import dlib

        image = _to_uint8(as_gray(gray, "gray", min_side=2))
        box = self._detect(image, pre_cropped)
        if box is None:
            return None
        _, predictor = self._models()
        rect = dlib.rectangle(*(int(round(c)) for c in box))
        try:
            shape = predictor(image, rect)
        except RuntimeError as exc:  # dlib's own, on an image its landmark predictor cannot take
            raise DegenerateImageError(f"dlib's landmark predictor: {exc}") from exc
        return np.array([(q.x, q.y) for q in shape.parts()], dtype=np.float32)

    # -- geometry -------------------------------------------------------------
    def template_eyes(self, size: int | None = None) -> np.ndarray:
        """(2, 2) float32: where the image-left and image-right eye centres land in the crop."""
        s = self.params.face_size if size is None else int(size)
        # fractions of the crop's extent, which runs from -0.5 to s - 0.5 in
        # pixel-centre coordinates: the template scales exactly with the size
        half = 0.5 * self.params.eye_distance * s
        centre, height = 0.5 * s - 0.5, self.params.eye_height * s - 0.5
        return np.array([[centre - half, height], [centre + half, height]], dtype=np.float32)

    def transform(self, landmarks: np.ndarray, size: int | None = None) -> np.ndarray:
        """2x3 float32 similarity, frame -> (size, size) crop, putting the eye centres on :meth:`template_eyes`."""
        return similarity_from_two_points(eye_centres(landmarks), self.template_eyes(size))

    def warp(self, gray: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
        """``cv2.warpAffine`` of ``gray`` to (size, size), linear interpolation, border replicated.

        When the matrix shrinks the frame by more than 1.5x, the frame is first
        shrunk with ``cv2.INTER_AREA`` (and the matrix adjusted): a plain
        bilinear warp would alias the skin texture into noise that the flow sees
        as motion. Keeps the input's dtype.
        """
        image = as_gray(gray, "gray", min_side=2)
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (2, 3):
            raise ValueError(f"matrix must be 2x3, got {m.shape}")
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        if scale < 1 / 1.5:
            h, w = image.shape
            nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
            # small pixel (x', y') covers frame pixels around ((x'+0.5)*w/nw - 0.5, ...)
            fx, fy = w / nw, h / nh
            up = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]])
            m = (np.vstack([m, [0, 0, 1]]) @ up)[:2]
        if image.dtype not in (np.uint8, np.float32):
            image = image.astype(np.float32)
        return cv2.warpAffine(image, m, (int(size), int(size)), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    def uses_frame_crop(self, pre_cropped: bool) -> bool:
        """Whether :meth:`align_pair` keeps the whole frame as the crop (the ``crop`` rule)."""
        return self.params.crop == "frame" or (self.params.crop == "auto" and pre_cropped)

    def align_pair(self, onset: np.ndarray, apex: np.ndarray, *, size: int | None = None,
                   pre_cropped: bool = False) -> AlignedPair:
        """Warp onset and apex with one matrix found on the onset frame.

        Rule: landmarks of the most confident face on the onset; if none, on the apex
        (flag ``face_from_apex``); if neither has a face, the whole frame is
        scaled edge to edge onto the crop (flag ``no_face_whole_frame``, the
        landmarks are NaN): a last resort for raw frames. With the ``frame`` crop
        (and ``auto`` on ``pre_cropped`` frames) the whole frame is the crop
        whether a face was found or not (flag ``release_crop``); the landmarks,
        when found, are mapped into it. ``pre_cropped`` also adds the padded
        detection try.
        """
        onset = as_gray(onset, "onset", min_side=2)
        apex = as_gray(apex, "apex", min_side=2)
        if onset.shape != apex.shape:
            raise ValueError(f"onset and apex frames differ in size: {onset.shape} and {apex.shape}")
        size = self.params.face_size if size is None else int(size)
        flags: list[str] = []
        found = self.landmarks(onset, pre_cropped=pre_cropped)
        if found is None:
            found = self.landmarks(apex, pre_cropped=pre_cropped)
            if found is not None:
                flags.append(FACE_FROM_APEX)
        frame_crop = self.uses_frame_crop(pre_cropped)
        if frame_crop:
            flags.append(RELEASE_CROP)
        if found is None:
            flags.append(NO_FACE_WHOLE_FRAME)
        if frame_crop or found is None:
            matrix = whole_frame_matrix(onset.shape, size)
        else:
            matrix = self.transform(found, size)
        if found is None:
            landmarks = np.full((68, 2), np.nan, dtype=np.float32)
        else:
            landmarks = apply_matrix(matrix, found)
        return AlignedPair(
            onset=self.warp(onset, matrix, size),
            apex=self.warp(apex, matrix, size),
            matrix=matrix,
            landmarks=landmarks,
            flags=flags,
        )
