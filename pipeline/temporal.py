"""Temporal descriptors of a clip: fixed-length resampling, dynamic images, DSSI.

All functions take grayscale frames (a sequence of (H, W) arrays of one shape,
or one (T, H, W) array) in time order, onset first, and return numpy arrays.

- :func:`resample_clip`: the clip resampled to a fixed number of frames by
  linear interpolation in time (MERANet's ``clip_frames``).
- :func:`rank_pool_weights` and :func:`dynamic_image`: approximate rank
  pooling (Bilen et al., "Dynamic Image Networks for Action Recognition",
  CVPR 2016) with the weights ``a_t = 2t - T - 1`` that SMA-STN uses.
- :func:`dssi`: SMA-STN's Dynamic Segmented Sparse Imaging: K segment dynamic
  images then a global one (``dynamic_images``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: Frames per segment in :func:`dssi` unless told otherwise (see there).
DEFAULT_FRAMES_PER_SEGMENT = 5


def _as_stack(frames: Sequence[np.ndarray] | np.ndarray, name: str = "frames") -> np.ndarray:
    """(T, H, W) array from a sequence of (H, W) frames, checking shapes."""
    if isinstance(frames, np.ndarray):
        stack = frames
    else:
        frames = list(frames)
        if not frames:
            raise ValueError(f"{name}: empty clip; pass at least one (H, W) frame")
        shapes = {np.shape(f) for f in frames}
        if len(shapes) != 1:
            raise ValueError(
                f"{name}: frames of different shapes {sorted(shapes)}; "
                "align and crop every frame to one size first"
            )
        stack = np.stack([np.asarray(f) for f in frames])
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise ValueError(
            f"{name}: expected grayscale frames (T, H, W) with T >= 1, got shape {stack.shape}"
        )
    return stack


def resample_clip(frames: Sequence[np.ndarray] | np.ndarray, length: int) -> np.ndarray:
    """Resample a clip to ``length`` frames by linear interpolation in time.

    Output frame ``i`` (0-based) sits at position ``i * (T - 1) / (length - 1)``
    of the input (0 = first frame, T - 1 = last), so the first and last input
    frames are kept exactly and the others are blended from their two
    neighbours; ``length == 1`` gives the first frame. Works both ways (fewer or
    more frames than the input).

    Args:
        frames: T frames (H, W), onset..offset, any numeric dtype.
        length: number of output frames, >= 1.

    Returns:
        (length, H, W) array of the input dtype; integer dtypes are rounded to
        the nearest value and clipped to the dtype's range.
    """
    stack = _as_stack(frames)
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length must be an integer >= 1, got {length!r}")
    n = stack.shape[0]
    positions = np.linspace(0.0, n - 1, int(length))
    lower = np.floor(positions).astype(np.int64)
    upper = np.minimum(lower + 1, n - 1)
    weight = (positions - lower)[:, None, None]
    work = stack.astype(np.float64)
    out = (1.0 - weight) * work[lower] + weight * work[upper]
    if np.issubdtype(stack.dtype, np.integer):
        info = np.iinfo(stack.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(stack.dtype)


def rank_pool_weights(length: int) -> np.ndarray:
    """Approximate rank pooling weights ``a_t = 2t - T - 1`` for t = 1..T.

    (T,) float32, antisymmetric in time and summing to zero: T = 4 gives
    [-3, -1, 1, 3].
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"length must be an integer >= 1, got {length!r}")
    t = np.arange(1, int(length) + 1, dtype=np.float64)
    return (2.0 * t - length - 1.0).astype(np.float32)


def dynamic_image(frames: Sequence[np.ndarray] | np.ndarray, *, normalise: bool = True) -> np.ndarray:
    """Dynamic image ``sum_t a_t * frame_t`` of a clip, (H, W) float32.

    Scaling: with ``normalise`` (default) the sum is multiplied by
    ``6 / (T (T + 1))``. Since ``sum_t a_t^2 = T (T^2 - 1) / 3``, this makes each
    pixel the change from the first to the last frame along that pixel's
    least-squares line through time: a linear ramp from ``v`` to ``v + c`` over
    the clip gives exactly ``c`` whatever T is, so segment and global images of
    clips of any length (and frame rate) share one scale, in the frames' own
    intensity units (e.g. grey levels). ``normalise=False`` gives the raw sum of
    Bilen et al. Because the weights sum to zero, a constant added to every
    frame (a brightness change) leaves the image unchanged; a single frame gives
    zeros.
    """
    stack = _as_stack(frames).astype(np.float64)
    n = stack.shape[0]
    weights = rank_pool_weights(n).astype(np.float64)
    image = np.tensordot(weights, stack, axes=(0, 0))
    if normalise:
        image *= 6.0 / (n * (n + 1))
    return image.astype(np.float32)


def _sparse_indices(start: int, stop: int, count: int | None) -> np.ndarray:
    """``count`` indices evenly spaced from start to stop, both included."""
    span = stop - start + 1
    if count is None or count >= span:
        return np.arange(start, stop + 1)
    return np.unique(np.rint(np.linspace(start, stop, count)).astype(np.int64))


def dssi_indices(
    length: int, segments: int, frames_per_segment: int | None = DEFAULT_FRAMES_PER_SEGMENT
) -> tuple[list[np.ndarray], np.ndarray]:
    """The frame indices :func:`dssi` pools for a clip of ``length`` frames.

    Returns the index array of each of the K segments and that of the global
    image. See :func:`dssi` for the protocol; ``length`` must be >= K + 1.
    """
    if length < segments + 1:
        raise ValueError(f"a clip of {length} frames cannot give {segments} segments of >= 2 frames")
    bounds = np.rint(np.linspace(0, length - 1, segments + 1)).astype(np.int64)
    parts = [_sparse_indices(int(a), int(b), frames_per_segment) for a, b in zip(bounds[:-1], bounds[1:])]
    return parts, np.unique(np.concatenate(parts))


def dssi(
    frames: Sequence[np.ndarray] | np.ndarray,
    segments: int,
    *,
    frames_per_segment: int | None = DEFAULT_FRAMES_PER_SEGMENT,
    normalise: bool = True,
) -> np.ndarray:
    """SMA-STN's Dynamic Segmented Sparse Imaging: (K + 1, H, W) float32.

    Protocol (the paper's sampling details are not public; this is fr-mer's
    reconstruction, see docs/models.md):

    1. A clip of fewer than K + 1 frames is first resampled to K + 1 frames
       (:func:`resample_clip`), so every segment spans at least two frames.
    2. The clip's frame positions 0..T-1 are cut at ``round(k (T - 1) / K)``,
       k = 0..K, into K contiguous segments; neighbouring segments share their
       boundary frame, so together they cover every frame-to-frame change.
    3. Sparse sampling: each segment keeps ``frames_per_segment`` frames evenly
       spaced from its first to its last frame (both included; all of them when
       the segment is shorter, or when ``frames_per_segment`` is None). This
       makes a segment image independent of frame rate (SMIC-HS is filmed at
       100 fps, CASME II and SAMM at 200) and of near-duplicate frames.
    4. Image k is the :func:`dynamic_image` of segment k's sampled frames; the
       last image is the dynamic image of all sampled frames together, in order
       (the global descriptor).

    Args:
        frames: T aligned grayscale frames (H, W), onset..offset.
        segments: K >= 1.
        frames_per_segment: frames kept per segment (>= 2), or None for all.
        normalise: scaling of :func:`dynamic_image` (default: change per window,
            in the frames' intensity units).
    """
    if isinstance(segments, bool) or not isinstance(segments, (int, np.integer)) or segments < 1:
        raise ValueError(f"segments must be an integer >= 1, got {segments!r}")
    if frames_per_segment is not None and (
        not isinstance(frames_per_segment, (int, np.integer)) or frames_per_segment < 2
    ):
        raise ValueError(
            f"frames_per_segment must be an integer >= 2 or None, got {frames_per_segment!r}"
        )
    stack = _as_stack(frames)
    if stack.shape[0] < segments + 1:
        stack = resample_clip(stack.astype(np.float32), segments + 1)
    parts, everything = dssi_indices(stack.shape[0], int(segments), frames_per_segment)
    images = [dynamic_image(stack[idx], normalise=normalise) for idx in parts]
    images.append(dynamic_image(stack[everything], normalise=normalise))
    return np.stack(images).astype(np.float32)
