"""A user's own clip (``fr-mer predict --clip PATH``): a folder of frames in order, or a video file.

The frames of a folder are its image files (:data:`~fr_mer.pipeline.clips.FRAME_SUFFIXES`),
in the order of the numbers in their names (``img9`` before ``img10``, as the releases
number them), other files ignored; a video is every frame OpenCV decodes from it. Either
becomes grayscale frames of one size, with a name for each (the file's, or ``frame N`` of
a video) so that a prediction can say which frames it used.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from fr_mer.errors import FrMerError
from fr_mer.pipeline.clips import FRAME_SUFFIXES
from fr_mer.pipeline.preprocess import is_pre_cropped_path, read_gray
from fr_mer.pipeline.readers.discovery import natural_key

#: Frames a clip may hold: a micro-expression lasts under half a second (100 frames at
#: 200 fps); a longer recording is to be cut to the expression first, not held in memory whole.
MAX_FRAMES = 1000


class ClipReadError(FrMerError, ValueError):
    """A clip that cannot be read as frames; the message names the path and what to do."""


@dataclasses.dataclass
class UserClip:
    """``frames``: (H, W) uint8 grayscale, in time order; ``names``: one per frame;
    ``pre_cropped``: the frames come from a cropped release (``reg_`` files, a ``Cropped`` folder)."""

    path: Path
    frames: list[np.ndarray]
    names: list[str]
    pre_cropped: bool = False


def read_user_clip(path: str | Path) -> UserClip:
    """The frames of a folder of images or of a video file; :class:`ClipReadError` when there are
    fewer than two, they differ in size, or the file is no video OpenCV can decode."""
    path = Path(path)
    if path.is_dir():
        clip = _read_folder(path)
    elif path.is_file():
        clip = _read_video(path)
    else:
        raise ClipReadError(f"{path}: no such folder or video file; give a folder of frames or a video")
    if len(clip.frames) < 2:
        raise ClipReadError(f"{path}: holds {len(clip.frames)} frame; a clip needs at least an onset and an apex")
    return clip


def _read_folder(folder: Path) -> UserClip:
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES),
                   key=lambda p: natural_key(p.name))
    if not files:
        raise ClipReadError(f"{folder}: holds no frame images ({', '.join(FRAME_SUFFIXES)}); give the folder "
                            "that holds the clip's frames")
    if len(files) > MAX_FRAMES:
        raise ClipReadError(f"{folder}: holds {len(files)} frames, more than {MAX_FRAMES}; copy the frames "
                            "from the onset to the offset of the expression into a folder of their own")
    frames = [read_gray(p) for p in files]
    for path, frame in zip(files, frames):
        if frame.shape != frames[0].shape:
            raise ClipReadError(f"{path}: frame size {frame.shape[::-1]} differs from the first frame's "
                                f"{frames[0].shape[::-1]} ({files[0].name})")
    return UserClip(folder, frames, [p.name for p in files], pre_cropped=is_pre_cropped_path(files[0]))


def _read_video(path: Path) -> UserClip:
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while capture.isOpened():
            ok, image = capture.read()
            if not ok:
                break
            if len(frames) == MAX_FRAMES:
                raise ClipReadError(f"{path}: more than {MAX_FRAMES} frames; cut the video to the expression "
                                    "(onset to offset) first")
            frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image)
    finally:
        capture.release()
    if not frames:
        raise ClipReadError(f"{path}: not a video OpenCV can decode (no frame read); give a folder of frames, "
                            "or convert the video (e.g. to .mp4 or .avi)")
    return UserClip(path, frames, [f"frame {i}" for i in range(len(frames))])
