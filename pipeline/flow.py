"""Optical flow (TV-L1), optical strain and the small flow image fed to the models.

Coordinates: arrays are (H, W) images indexed [row, col] = [y, x]; a flow is
(H, W, 2) float32 with channel 0 = u (horizontal, +x = right) and channel 1 =
v (vertical, +y = down), in pixels of the image it was computed on, from
``prev`` to ``nxt``: ``prev[y, x] ~ nxt[y + v, x + u]``.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from fr_mer.config import settings
from fr_mer.errors import ParameterError
from fr_mer.limits import check_number

#: Side of the aligned face crop on which the flow is computed by default (an
#: inter-ocular distance of 92 px, near the native resolution of CASME II's
#: faces). Measured in docs/pipeline.md ("Flow size"): from 128 to 256 the
#: error of the 28x28 input on a 1 px micro-expression halves, for 2.7x the time.
DEFAULT_FLOW_SIZE = 256

#: Side of the model input (u, v, strain) images, as STSTNet / Dual-Inception use.
DEFAULT_FEATURE_SIZE = 28

#: The normalisation ``fr-mer preprocess`` applies by default (docs/pipeline.md, "The model input"):
#: raw flow, on which the linear probe of the development benchmark beats minmax255 by 0.05-0.08 UF1
#: (docs/benchmarks-devbench.md); the flow models fit their input scale on the training rows.
DEFAULT_NORMALISATION = "none"

#: The normalisation of a cache whose params record none: every cache made before the choice existed.
UNRECORDED_NORMALISATION = "minmax255"

#: The normalisations of :func:`flow_features`, by name, as stored in the cache.
NORMALISATIONS = {
    "minmax255": (
        "each channel (u, v, strain) of each sample min-max scaled to 0..255 after the "
        "resize, as STSTNet's released 28x28 inputs are (so STSTNet's released weights "
        "apply); a constant channel becomes 0; float32, not rounded"
    ),
    "none": (
        "raw values after the resize: u and v in pixels of the flow-size crop, strain "
        "dimensionless (pixel/pixel)"
    ),
}


#: The TV-L1 implementations, by the name a cache records (``params["flow_implementation"]``).
FLOW_IMPLEMENTATIONS = {
    "opencv": "cv2.optflow.DualTVL1OpticalFlow, one pair at a time in each worker process",
    "torch": "fr_mer.pipeline.tvl1_torch, the same algorithm and parameters, pairs batched on one torch device "
             "(docs/tvl1-torch.md)",
}

#: The implementation of ``fr-mer preprocess`` by default (``--flow-device opencv``).
DEFAULT_FLOW_IMPLEMENTATION = "opencv"

#: ``fr-mer preprocess --flow-device`` choices: ``opencv``, or the torch implementation on a device.
FLOW_DEVICES = ("opencv", "cpu", "cuda")


def flow_implementation(device: str) -> str:
    """The implementation a ``--flow-device`` runs (recorded in the cache): ``opencv``, else ``torch``."""
    if device not in FLOW_DEVICES:
        raise ValueError(f"unknown flow device {device!r}; choose one of {', '.join(FLOW_DEVICES)}")
    return "opencv" if device == "opencv" else "torch"


#: Median filter sizes OpenCV's ``medianBlur`` accepts for float32 images (TV-L1's ``median_filtering``).
MEDIAN_SIZES = (3, 5)


@settings
class TVL1Params:
    """Parameters of ``cv2.optflow.DualTVL1OpticalFlow`` (defaults are OpenCV's).

    ``lambda_`` weights the data term (smaller: smoother flow); ``nscales``
    pyramid levels with ``scale_step`` between them; ``warps`` warpings per
    level; ``epsilon`` stopping tolerance; ``median_filtering`` the median
    filter size applied to the flow between warps. Recorded with
    :func:`fr_mer.config.to_record` (the cache's ``params["tvl1"]``).
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5
    use_initial_flow: bool = False

    def __post_init__(self) -> None:
        # OpenCV accepts NaN, negative or infinite values and returns flows all NaN, all 0 or of
        # thousands of pixels, or fails an assertion naming no option: each is refused here, by name.
        for name in ("tau", "lambda_", "theta"):
            check_number(f"TV-L1 {name} (--tvl1 {name}=...)", getattr(self, name), low=0, low_open=True, high=1e6)
        check_number("TV-L1 epsilon (--tvl1 epsilon=...)", self.epsilon, low=0, high=1e6)
        check_number("TV-L1 scale_step (--tvl1 scale_step=...)", self.scale_step, low=0, low_open=True, high=0.99)
        check_number("TV-L1 gamma (--tvl1 gamma=...)", self.gamma, low=0, high=1e6)
        for name, high in (("nscales", 20), ("warps", 100), ("inner_iterations", 1000), ("outer_iterations", 1000)):
            check_number(f"TV-L1 {name} (--tvl1 {name}=...)", getattr(self, name), low=1, high=high, integer=True)
        if self.median_filtering not in (0, 1, *MEDIAN_SIZES) or isinstance(self.median_filtering, bool):
            raise ParameterError(f"TV-L1 median_filtering (--tvl1 median_filtering=...) must be 0 or 1 (off) or one of "
                                 f"{MEDIAN_SIZES} (what OpenCV's medianBlur takes for float images; an other size "
                                 f"fails OpenCV's assertion), got {self.median_filtering!r}")

    def create(self):
        """A new OpenCV solver with these parameters."""
        return cv2.optflow.DualTVL1OpticalFlow_create(
            tau=self.tau, lambda_=self.lambda_, theta=self.theta, nscales=self.nscales,
            warps=self.warps, epsilon=self.epsilon, innnerIterations=self.inner_iterations,
            outerIterations=self.outer_iterations, scaleStep=self.scale_step, gamma=self.gamma,
            medianFiltering=self.median_filtering, useInitialFlow=self.use_initial_flow,
        )


def _gray(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim != 2:
        raise ValueError(f"{name} must be a grayscale (H, W) image, got shape {image.shape}")
    return image


def tvl1_flow(prev: np.ndarray, nxt: np.ndarray, params: TVL1Params = TVL1Params()) -> np.ndarray:
    """Dense TV-L1 optical flow from ``prev`` to ``nxt``.

    Args:
        prev, nxt: (H, W) grayscale images of the same shape, uint8 or float
            on the 0..255 scale of 8-bit images (e.g. an interpolated uint8 frame).
        params: solver parameters.

    Returns:
        (H, W, 2) float32 flow (u, v) in pixels, ``prev[y, x] ~ nxt[y + v, x + u]``.
    """
    a, b = _gray(prev, "prev"), _gray(nxt, "nxt")
    if a.shape != b.shape:
        raise ValueError(f"prev and nxt must have the same shape, got {a.shape} and {b.shape}")
    if a.dtype == np.uint8 and b.dtype == np.uint8:
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    else:
        # OpenCV reads float images as 0..1 (it multiplies them by 255); ours are
        # on the 0..255 scale of the frames, kept as float for sub-level detail.
        a, b = (np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0) for x in (a, b))
    flow = params.create().calc(a, b, None)
    return np.asarray(flow, dtype=np.float32)


def tvl1_flows(prev: Sequence[np.ndarray], nxt: Sequence[np.ndarray], params: TVL1Params = TVL1Params(), *,
               implementation: str = DEFAULT_FLOW_IMPLEMENTATION, device: str = "cpu") -> np.ndarray:
    """The TV-L1 flows of several pairs of one size, with either implementation.

    Args:
        prev, nxt: N (H, W) grayscale images each, as :func:`tvl1_flow` takes them.
        params: solver parameters.
        implementation: a key of :data:`FLOW_IMPLEMENTATIONS`: ``opencv`` runs
            :func:`tvl1_flow` pair by pair; ``torch`` runs every pair as one batch
            of :func:`fr_mer.pipeline.tvl1_torch.tvl1_flow` on ``device``
            (``cpu``, ``cuda``, ``cuda:1``; torch is imported only then).

    Returns:
        (N, H, W, 2) float32 flows (u, v) in pixels, as :func:`tvl1_flow`'s.
    """
    if len(prev) != len(nxt):
        raise ValueError(f"prev and nxt must hold as many images, got {len(prev)} and {len(nxt)}")
    if implementation == "opencv":
        return np.stack([tvl1_flow(a, b, params) for a, b in zip(prev, nxt)]).astype(np.float32, copy=False)
    if implementation != "torch":
        raise ValueError(f"unknown flow implementation {implementation!r}; choose one of "
                         f"{', '.join(FLOW_IMPLEMENTATIONS)}")
    import torch

    from fr_mer.pipeline import tvl1_torch

    first = [_gray(a, "prev") for a in prev]
    second = [_gray(b, "nxt") for b in nxt]
    with torch.no_grad():
        image0 = torch.from_numpy(np.stack(first).astype(np.float32, copy=False)).to(device)
        image1 = torch.from_numpy(np.stack(second).astype(np.float32, copy=False)).to(device)
        flow = tvl1_torch.tvl1_flow(image0, image1, params)
    return flow.permute(0, 2, 3, 1).cpu().numpy()


def _backward_diff(f: np.ndarray, axis: int) -> np.ndarray:
    """f[i] - f[i-1] along ``axis``; the first row/column repeats the second's value."""
    d = np.diff(f, axis=axis)
    first = np.take(d, [0], axis=axis) if f.shape[axis] > 1 else np.zeros_like(np.take(f, [0], axis=axis))
    return np.concatenate([first, d], axis=axis)


def optical_strain(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Optical strain magnitude of a flow field.

    ``|e| = sqrt(e_xx^2 + e_yy^2 + 0.5 * (du/dy + dv/dx)^2)`` with
    ``e_xx = du/dx``, ``e_yy = dv/dy`` (docs/pipeline.md, the form of STSTNet's
    group). Derivatives are backward differences (``f[x] - f[x-1]``, one pixel
    step), the first column (for d/dx) and first row (for d/dy), which have no
    backward neighbour, replicate the next one's value.

    Args:
        u, v: (H, W) horizontal and vertical flow in pixels.

    Returns:
        (H, W) float32, dimensionless (pixel per pixel).
    """
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if u.ndim != 2 or u.shape != v.shape:
        raise ValueError(f"u and v must be (H, W) arrays of the same shape, got {u.shape} and {v.shape}")
    u_x, u_y = _backward_diff(u, 1), _backward_diff(u, 0)
    v_x, v_y = _backward_diff(v, 1), _backward_diff(v, 0)
    return np.sqrt(u_x**2 + v_y**2 + 0.5 * (u_y + v_x) ** 2).astype(np.float32)


def flow_features(u: np.ndarray, v: np.ndarray, strain: np.ndarray, size: int = DEFAULT_FEATURE_SIZE,
                  normalisation: str = DEFAULT_NORMALISATION) -> np.ndarray:
    """The model input: u, v and strain resized to ``size`` x ``size``.

    Each channel is resized with ``cv2.INTER_AREA`` (a box average: values keep
    their unit, pixels of the flow-size crop) and then normalised as
    :data:`NORMALISATIONS` describes.

    Returns:
        (3, size, size) float32 in channel order (u, v, strain).
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; choose one of {sorted(NORMALISATIONS)}")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    channels = [np.asarray(c, dtype=np.float32) for c in (u, v, strain)]
    shape = channels[0].shape
    if len(shape) != 2 or any(c.shape != shape for c in channels):
        raise ValueError(f"u, v and strain must be (H, W) arrays of one shape, got {[c.shape for c in channels]}")
    out = np.stack([cv2.resize(c, (int(size), int(size)), interpolation=cv2.INTER_AREA) for c in channels])
    if normalisation == "minmax255":
        lo = out.min(axis=(1, 2), keepdims=True)
        span = out.max(axis=(1, 2), keepdims=True) - lo
        out = np.where(span > 0, (out - lo) * (np.float32(255.0) / np.where(span > 0, span, 1)), 0)
    return out.astype(np.float32)
