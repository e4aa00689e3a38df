"""Identities for the synthetic data: face photos turned into distinct subjects.

Every subject is one photo seen through its own geometry (scale, aspect, a
small rotation, a smooth shape warp, mirror), skin tone, lighting and skin
texture, at a fixed frame size. The landmarks of a subject are detected on its
own image by the same dlib detector and shape predictor as the pipeline uses,
so a subject exists only if the pipeline can find its face.

A folder of photos is a set of *people*: the file name up to its first ``_`` names
the person (``sub01_EP02_01f.jpg`` and ``sub01_EP03_02.jpg`` are one person, as in the
composite's apex faces), and each person gives one photo, so that one real person
is one derived subject, never several.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from fr_mer.errors import FrMerError
from fr_mer.pipeline.clips import FRAME_SUFFIXES
from fr_mer.pipeline.synth.config import DEFAULT_FACE_SPAN, DEFAULT_FRAME_SIZE

#: iBUG 68-point index of each landmark's mirror image (the left/right swap of a flip).
_MIRRORED = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]
)
#: Photos whose face (jaw width) is larger than this are reduced to it, px.
_MAX_FACE_WIDTH = 320.0
#: A photo whose face (jaw) is wider than this fraction of its smaller side is a tight crop.
_TIGHT_CROP = 0.55
#: Draws of derivation parameters tried before a subject is declared undetectable.
_ATTEMPTS = 12


class PhotoError(FrMerError, ValueError):
    """A face photo (or the folder of them) that cannot make a subject; the message names it."""


@dataclasses.dataclass(frozen=True)
class Photo:
    """A source face photo: BGR uint8 image and its 68 landmarks (x, y) in pixels.

    ``name``: the file's stem; ``person``: who it shows (:func:`person_of`).
    """

    name: str
    image: np.ndarray
    landmarks: np.ndarray

    @property
    def person(self) -> str:
        return person_of(self.name)


def person_of(name: str) -> str:
    """The person a photo named ``name`` (a file stem) shows: the name up to its first ``_``."""
    return name.split("_", 1)[0]


@dataclasses.dataclass(frozen=True)
class Identity:
    """A synthetic subject's neutral face.

    ``image``: (H, W, 3) float32 BGR in [0, 255]; ``landmarks``: (68, 2) float32
    (x, y) detected on it; ``params``: how it was derived from ``source``.
    """

    name: str
    source: str
    image: np.ndarray
    landmarks: np.ndarray
    params: dict[str, float]

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]

    @property
    def face_width(self) -> float:
        return float(np.hypot(*(self.landmarks[16] - self.landmarks[0])))


def detect_landmarks(gray: np.ndarray, *, pre_cropped: bool = False) -> np.ndarray | None:
    """68 landmarks (x, y) of the largest face that the pipeline's aligner finds, or None.

    ``pre_cropped``: the image is a face crop; the aligner adds its padded try.
    """
    from fr_mer.pipeline.align import FaceAligner  # the one place that runs dlib

    global _ALIGNER
    if _ALIGNER is None:  # loading the shape predictor takes about a second
        _ALIGNER = FaceAligner()
    return _ALIGNER.landmarks(gray, pre_cropped=pre_cropped)


_ALIGNER = None


def astronaut() -> np.ndarray:
    """scikit-image's bundled astronaut photo (Eileen Collins), BGR uint8."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def _photo_landmarks(gray: np.ndarray) -> np.ndarray | None:
    """The photo's landmarks; tight face crops (the composite's apex faces) get more tries."""
    landmarks = detect_landmarks(gray)
    if landmarks is None:  # the aligner's rule for cropped frames: a padded copy
        landmarks = detect_landmarks(gray, pre_cropped=True)
    if landmarks is None:  # low-contrast crops: equalised, on a grey border
        pad = max(gray.shape) // 4
        padded = cv2.copyMakeBorder(cv2.equalizeHist(gray), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=128)
        found = detect_landmarks(padded)
        landmarks = None if found is None else np.asarray(found) - pad
    return landmarks


def _photo(name: str, image: np.ndarray) -> Photo | None:
    landmarks = _photo_landmarks(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    if landmarks is None:
        return None
    landmarks = np.asarray(landmarks, dtype=np.float64)
    face_width = float(np.hypot(*(landmarks[16] - landmarks[0])))
    if face_width > _TIGHT_CROP * min(image.shape[:2]):
        # a tight face crop: a subject's frame reaches past its edges, and a mirrored
        # border would put half-faces there that the detector takes for the face
        pad = int(round(face_width))
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        landmarks = landmarks + pad
    if face_width > _MAX_FACE_WIDTH:
        # a box filter now, so that the subjects' warps never shrink by much
        # (an interpolating warp that shrinks aliases the skin texture)
        factor = _MAX_FACE_WIDTH / face_width
        height, width = image.shape[:2]
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        landmarks = (landmarks + 0.5) * (np.array(size) / (width, height)) - 0.5
    return Photo(name, image, landmarks)


def load_photos(faces: Path | str | None = None) -> list[Photo]:
    """One photo with its landmarks per person: the astronaut when ``faces`` is None, else a folder.

    A folder's image files are grouped into people (:func:`person_of`), people in name
    order; each person's photos are tried in name order and the first in which dlib finds
    a face is theirs. A file that cannot be read, or a person in none of whose photos a
    face is found, is an error naming the files (give upright, frontal photos with one
    face each, at least about 80 px between the ears).
    """
    if faces is None:
        photo = _photo("astronaut", astronaut())
        if photo is None:  # the model files or dlib are broken, not the photo
            raise RuntimeError("no face found in scikit-image's astronaut: check the dlib install")
        return [photo]
    folder = Path(faces)
    if not folder.is_dir():
        raise PhotoError(f"{folder}: not a folder of face photos; check --faces")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES
    )
    if not files:
        raise PhotoError(
            f"{folder}: no image files ({', '.join(FRAME_SUFFIXES)}); check --faces"
        )
    people: dict[str, list[Path]] = {}
    for path in files:
        people.setdefault(person_of(path.stem), []).append(path)
    photos = []
    for person in sorted(people):
        photo = _first_face(people[person], folder)
        if photo is None:
            names = ", ".join(path.name for path in people[person])
            raise PhotoError(
                f"{folder / people[person][0].name}: no face found by dlib's frontal detector in any photo "
                f"of {person!r} ({names}); use an upright, frontal photo with one face, or remove them "
                f"from {folder}"
            )
        photos.append(photo)
    return photos


def _first_face(paths: list[Path], folder: Path) -> Photo | None:
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise PhotoError(f"{path}: cannot be read as an image; remove it from {folder}")
        photo = _photo(path.stem, image)
        if photo is not None:
            return photo
    return None


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]-ish: a (cells x cells) grid, bicubic to ``shape``."""
    grid = rng.uniform(-1.0, 1.0, size=(cells, cells)).astype(np.float32)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _draw_params(
    rng: np.random.Generator, frame_size: tuple[int, int], face_span: tuple[float, float]
) -> dict[str, float]:
    width, height = frame_size
    return {
        "mirror": float(rng.random() < 0.5),
        # jaw width; with brows and chin the face spans about 1.1x this
        "face_width": float(height * rng.uniform(*face_span)),
        "aspect": float(rng.uniform(0.9, 1.1)),
        "rotation_deg": float(rng.uniform(-4.0, 4.0)),
        "shift_x": float(width * rng.uniform(-0.08, 0.08)),
        "shift_y": float(height * rng.uniform(-0.04, 0.04)),
        "warp_px": float(rng.uniform(1.5, 4.0)),
        "tone": float(rng.uniform(0.55, 1.1)),
        "warmth": float(rng.uniform(-0.1, 0.1)),
        "gamma": float(rng.uniform(0.85, 1.15)),
        "light_gradient": float(rng.uniform(-0.3, 0.3)),
        "light_angle_deg": float(rng.uniform(0.0, 360.0)),
        "texture": float(rng.uniform(2.0, 4.0)),
    }


def _placement(
    photo: Photo, params: dict[str, float], frame_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The subject's geometry: photo point p goes to ``linear @ (p - centre) + target``."""
    width, height = frame_size
    points = photo.landmarks
    face_w = float(np.hypot(*(points[16] - points[0])))
    centre = (points[17:27].mean(axis=0) + points[8]) / 2  # between brows and chin
    angle = np.deg2rad(params["rotation_deg"])
    scale = params["face_width"] / face_w
    sx = scale * np.sqrt(params["aspect"]) * (-1.0 if params["mirror"] else 1.0)
    sy = scale / np.sqrt(params["aspect"])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = np.array([width / 2 + params["shift_x"], height * 0.52 + params["shift_y"]])
    return rotation @ np.diag([sx, sy]), centre, target


def render_identity(
    photo: Photo, params: dict[str, float], frame_size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """The neutral face of one subject: ``(H, W, 3)`` float32 BGR in [0, 255].

    Geometry: a similarity with aspect change that puts the photo's face at the
    drawn size and place, mirrored or not, plus a smooth warp; then skin tone,
    gamma, a directional lighting gradient and static skin texture.
    """
    width, height = frame_size
    linear, centre, target = _placement(photo, params, frame_size)
    # frame pixel x -> photo pixel: inverse of p -> linear @ (p - centre) + target
    inverse = np.linalg.inv(linear)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    warp_x = params["warp_px"] * _smooth_noise(rng, (height, width), 4)
    warp_y = params["warp_px"] * _smooth_noise(rng, (height, width), 4)
    qx = xs + warp_x - target[0]
    qy = ys + warp_y - target[1]
    map_x = (inverse[0, 0] * qx + inverse[0, 1] * qy + centre[0]).astype(np.float32)
    map_y = (inverse[1, 0] * qx + inverse[1, 1] * qy + centre[1]).astype(np.float32)
    image = cv2.remap(
        photo.image, map_x, map_y, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101
    ).astype(np.float32)

    gains = params["tone"] * np.array(
        [1.0 - params["warmth"], 1.0, 1.0 + params["warmth"]], dtype=np.float32
    )
    image = 255.0 * (np.clip(image * gains, 0.0, 255.0) / 255.0) ** params["gamma"]
    light_angle = np.deg2rad(params["light_angle_deg"])
    along = ((xs - target[0]) * np.cos(light_angle) + (ys - target[1]) * np.sin(light_angle)) / (
        params["face_width"]
    )
    image *= np.clip(1.0 + params["light_gradient"] * along, 0.4, 1.6)[..., None].astype(np.float32)
    texture = cv2.GaussianBlur(
        rng.standard_normal((height, width)).astype(np.float32), (0, 0), 1.0
    )
    texture *= params["texture"] / max(float(texture.std()), 1e-6)
    image += texture[..., None]
    return np.clip(image, 0.0, 255.0).astype(np.float32)


def derive_identity(
    photo: Photo,
    name: str,
    seed: np.random.SeedSequence,
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
    face_span: tuple[float, float] = DEFAULT_FACE_SPAN,
) -> Identity:
    """One subject from ``photo``, deterministic for ``seed``.

    ``face_span``: range of the face's (jaw) width as a fraction of the frame height.
    Parameters are redrawn (deterministically) while the detector misses the
    derived face; after several misses, several more with the detection run on a
    histogram-equalised copy (low-contrast photos), then the photo is reported as unusable.
    """
    rng = np.random.default_rng(seed)
    for attempt in range(2 * _ATTEMPTS):
        params = _draw_params(rng, frame_size, face_span)
        image = render_identity(photo, params, frame_size, rng)
        gray = cv2.cvtColor(image.round().astype(np.uint8), cv2.COLOR_BGR2GRAY)
        landmarks = detect_landmarks(gray if attempt < _ATTEMPTS else cv2.equalizeHist(gray))
        if landmarks is None:
            continue
        landmarks = np.asarray(landmarks, dtype=np.float32)
        width, height = frame_size
        margin = 2.0
        if (landmarks.min() < margin or landmarks[:, 0].max() > width - 1 - margin
                or landmarks[:, 1].max() > height - 1 - margin):
            continue
        # the detector must have found this face, not something else in the frame
        linear, centre, target = _placement(photo, params, frame_size)
        expected = (photo.landmarks - centre) @ linear.T + target
        if params["mirror"]:
            expected = expected[_MIRRORED]
        error = np.hypot(*(landmarks - expected).T).mean()
        if error > 0.1 * params["face_width"]:
            continue
        return Identity(name, photo.name, image, landmarks, params)
    raise PhotoError(
        f"photo {photo.name!r}: the detector missed the face in {2 * _ATTEMPTS} derived subjects at "
        f"frame size {frame_size[0]}x{frame_size[1]}; use a larger --size or a clearer photo"
    )


def derive_identities(
    photos: list[Photo],
    names: list[str],
    seed: int,
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
    *,
    key: tuple[int, ...] = (),
    first: int = 0,
    face_span: tuple[float, float] = DEFAULT_FACE_SPAN,
) -> list[Identity]:
    """Subjects ``names``, taking the photos in turn from photo ``first``.

    Subject ``i`` is drawn from ``SeedSequence(seed, spawn_key=key + (i,))``: the
    same subject whatever else is generated, in any order.
    """
    if not photos:
        raise PhotoError("no face photos to derive subjects from")
    return [
        derive_identity(
            photos[(first + i) % len(photos)],
            name,
            np.random.SeedSequence(seed, spawn_key=(*key, i)),
            frame_size,
            face_span,
        )
        for i, name in enumerate(names)
    ]
