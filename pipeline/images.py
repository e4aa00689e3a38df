"""The check of the grayscale images that the image operations take (:mod:`~fr_mer.pipeline.align`,
:mod:`~fr_mer.pipeline.flow`): one rule, one message."""
from __future__ import annotations

import numpy as np


def as_gray(image: np.ndarray, name: str, *, min_side: int = 1) -> np.ndarray:
    """``image`` as a (H, W) array: a trailing channel axis of one is dropped; anything else, or a side shorter
    than ``min_side``, raises ValueError naming ``name`` (a caller's mistake: the readers give (H, W) frames)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim != 2 or min(image.shape) < min_side:
        raise ValueError(f"{name} must be a grayscale (H, W) image, got shape {image.shape}")
    return image
