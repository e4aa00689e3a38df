"""Batched TV-L1 optical flow in torch: the algorithm of OpenCV's ``DualTVL1OpticalFlow``.

The duality-based TV-L1 scheme of Zach, Pock and Bischof (2007) in the form of
Sanchez, Meinhardt-Llopis and Facciolo, "TV-L1 optical flow estimation" (IPOL
2013), as ``cv2.optflow.DualTVL1OpticalFlow`` runs it, step for step, so that
the flow matches OpenCV's and not merely some TV-L1:

- pyramid: each level is the previous one resized by ``scale_step`` with
  bilinear interpolation (no pre-smoothing; OpenCV's ``resize`` with
  ``fx = fy = scale_step``), until a side would fall under 16 px;
- the flow starts at zero on the coarsest level; after each level it is resized
  bilinearly to the next finer level and multiplied by ``1 / scale_step``
  (``u3``, the illumination term, is resized but not multiplied);
- per level: centred image gradients of ``I1`` (one-sided at the border); per
  warp, ``I1`` and its gradients warped by bicubic interpolation (a = -0.75,
  samples outside the image read as 0, as ``remap``'s default border); the dual
  variables start at zero on each level and carry over between warps;
- per outer iteration a median filter (replicated border) on ``u1``, ``u2``; per
  inner iteration the thresholding step, then ``u = v + theta div p``, then the
  dual step with forward differences;
- stopping rule: within a warp, iterations stop once the summed squared change of
  the flow in one inner iteration falls to ``epsilon^2 * H * W`` (of that level),
  evaluated for each pair of the batch on its own.

Every tensor is float32 (OpenCV computes in float32 too). Coordinates follow
``pipeline.flow``: channel 0 of a flow is u (horizontal, +x right), channel 1
is v (vertical, +y down), in pixels, ``image0[y, x] ~ image1[y + v, x + u]``.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from fr_mer.errors import ParameterError
from fr_mer.pipeline.tvl1_params import TVL1Params

#: OpenCV stops adding pyramid levels before a side would fall under this many pixels.
MIN_PYRAMID_SIDE = 16

_FLOAT_EPSILON = torch.finfo(torch.float32).eps


def check_params(params: TVL1Params) -> None:
    """ParameterError naming a setting this implementation cannot run as OpenCV does (every setting's range
    is checked by :class:`TVL1Params` itself, for both implementations)."""
    if params.use_initial_flow:
        raise ParameterError("TVL1Params.use_initial_flow: the torch TV-L1 starts from zero flow; set it to False")


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device this process can run on; ParameterError naming ``--flow-device`` if not.

    A CUDA device is refused when ``torch.cuda.is_available()`` is False (a CPU
    build of torch, no driver, no GPU) or when its index is past the last GPU.
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ParameterError(f"--flow-device {device}: not a torch device ({error}); use cpu or cuda") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ParameterError(
                f"--flow-device {device}: torch sees no CUDA device (torch {torch.__version__}, {built}); "
                "use --flow-device cpu or opencv, or run on a machine with a GPU and a CUDA build of torch"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ParameterError(f"--flow-device {device}: this machine has {torch.cuda.device_count()} CUDA "
                                 "device(s); give an index below that")
    elif device.type != "cpu":
        raise ParameterError(f"--flow-device {device}: the torch TV-L1 runs on cpu or cuda")
    return device


def _check_images(image0: torch.Tensor, image1: torch.Tensor) -> None:
    if image0.ndim != 3 or image0.shape != image1.shape:
        raise ValueError(
            f"image0 and image1 must be (B, H, W) tensors of one shape, got {tuple(image0.shape)} "
            f"and {tuple(image1.shape)}"
        )
    if min(image0.shape[1:]) < 3:
        raise ValueError(f"images must be at least 3x3 pixels, got {tuple(image0.shape[1:])}")
    if image0.device != image1.device:
        raise ValueError(f"image0 and image1 must be on one device, got {image0.device} and {image1.device}")


def pyramid_sizes(height: int, width: int, nscales: int, scale_step: float) -> list[tuple[int, int]]:
    """(H, W) of each pyramid level, finest first, as OpenCV builds them.

    Each level is the previous one's size times ``scale_step``, rounded to the
    nearest integer (half to even, as OpenCV's ``saturate_cast``); the pyramid
    ends before a level with a side under :data:`MIN_PYRAMID_SIDE`.
    """
    sizes = [(height, width)]
    for _ in range(1, nscales):
        h, w = sizes[-1]
        h, w = round(h * scale_step), round(w * scale_step)
        if h < MIN_PYRAMID_SIDE or w < MIN_PYRAMID_SIDE:
            break
        sizes.append((h, w))
    return sizes


def _linear_taps(n_in: int, n_out: int, src_per_dst: float, device) -> tuple[torch.Tensor, ...]:
    """(left, right, frac) of OpenCV's INTER_LINEAR resize along one axis of ``n_in`` -> ``n_out`` pixels.

    Output pixel ``d`` samples the input at ``(d + 0.5) * src_per_dst - 0.5``
    (rounded to float32, as OpenCV does), ``(1 - frac) * in[left] + frac * in[right]``;
    positions before the first or past the last pixel take that pixel's value.
    ``src_per_dst`` is ``1 / fx`` when OpenCV is given a scale factor and
    ``n_in / n_out`` when it is given a size.
    """
    position = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * src_per_dst - 0.5).to(torch.float32)
    left = torch.floor(position)
    frac = position - left
    left = left.long()
    outside = (left < 0) | (left >= n_in - 1)
    frac = torch.where(outside, torch.zeros_like(frac), frac)
    left = left.clamp(0, n_in - 1)
    right = (left + 1).clamp(max=n_in - 1)
    return left.to(device), right.to(device), frac.to(device)


def resize_linear(images: torch.Tensor, size: tuple[int, int], src_per_dst: tuple[float, float]) -> torch.Tensor:
    """OpenCV-style bilinear resize of (..., H, W) to (..., h, w); ``src_per_dst`` = (rows, cols).

    Gathers and lerps rather than a matrix product, which TF32 matmul settings
    would round to 10 bits.
    """
    left, right, frac = _linear_taps(images.shape[-1], size[1], src_per_dst[1], images.device)
    images = torch.lerp(images.index_select(-1, left), images.index_select(-1, right), frac)
    left, right, frac = _linear_taps(images.shape[-2], size[0], src_per_dst[0], images.device)
    return torch.lerp(images.index_select(-2, left), images.index_select(-2, right), frac[:, None])


def centered_gradient(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(d/dx, d/dy) of (B, H, W): half the central difference, half the one-sided one at the border."""
    padded = F.pad(images[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    dx = 0.5 * (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2])
    dy = 0.5 * (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1])
    return dx, dy


def forward_gradient(field: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """(..., 2, H, W) forward differences (x then y) of (..., H, W); zero on the last column / row.

    ``out``, when given, is a buffer of that shape whose last column (x) and last
    row (y) are zero; it is filled in place and returned.
    """
    if out is None:
        out = field.new_zeros(*field.shape[:-2], 2, *field.shape[-2:])
    torch.sub(field[..., :, 1:], field[..., :, :-1], out=out[..., 0, :, :-1])
    torch.sub(field[..., 1:, :], field[..., :-1, :], out=out[..., 1, :-1, :])
    return out


def divergence(dual: torch.Tensor) -> torch.Tensor:
    """(..., H, W) backward-difference divergence of (..., 2, H, W); values before the first row/column are 0."""
    px, py = dual[..., 0, :, :], dual[..., 1, :, :]
    div = px + py
    div[..., :, 1:] -= px[..., :, :-1]
    div[..., 1:, :] -= py[..., :-1, :]
    return div


def _merge_comparators(lo: int, hi: int, stride: int):
    """Comparators of Batcher's odd-even merge of wires lo..hi (inclusive) at ``stride``."""
    step = stride * 2
    if step < hi - lo:
        yield from _merge_comparators(lo, hi, step)
        yield from _merge_comparators(lo + stride, hi, step)
        yield from ((i, i + stride) for i in range(lo + stride, hi - stride, step))
    else:
        yield lo, lo + stride


def _sort_comparators(lo: int, hi: int):
    """Comparators (i < j: min to i, max to j) of Batcher's odd-even merge sort of wires lo..hi."""
    if hi > lo:
        mid = lo + (hi - lo) // 2
        yield from _sort_comparators(lo, mid)
        yield from _sort_comparators(mid + 1, hi)
        yield from _merge_comparators(lo, hi, 1)


@functools.lru_cache(maxsize=None)
def _median_program(count: int) -> tuple[tuple[tuple[str, int, int, int], ...], int]:
    """A min/max program whose result is the median of ``count`` (odd) values.

    Batcher's sorting network on the next power of two of wires, the wires past
    ``count`` holding +inf (their comparators resolve at build time), pruned to
    the operations the middle wire depends on. Returns ((op, out, a, b), ...) over
    value ids (0..count-1 are the inputs) and the id of the median.
    """
    wires = 1 << (count - 1).bit_length()
    value = list(range(count)) + [None] * (wires - count)  # None: +inf
    ops, next_id = [], count
    for i, j in _sort_comparators(0, wires - 1):
        if value[j] is None:
            continue  # min(x, inf) = x stays on i
        if value[i] is None:
            value[i], value[j] = value[j], None
            continue
        ops.append(("min", next_id, value[i], value[j]))
        ops.append(("max", next_id + 1, value[i], value[j]))
        value[i], value[j] = next_id, next_id + 1
        next_id += 2
    result = value[count // 2]
    needed, kept = {result}, []
    for op in reversed(ops):
        if op[1] in needed:
            kept.append(op)
            needed.update(op[2:])
    return tuple(reversed(kept)), result


def median_filter(field: torch.Tensor, size: int) -> torch.Tensor:
    """``size`` x ``size`` median of (..., H, W) with a replicated border (OpenCV's ``medianBlur``).

    A pruned sorting network of elementwise min/max over the shifted images (as
    OpenCV's own float median): exact, about 5x faster than ``Tensor.median`` over
    unfolded windows on the CPU, and made of elementwise kernels only for the GPU.
    """
    shape = field.shape
    half = size // 2
    flat = field.reshape(-1, 1, *shape[-2:])
    padded = F.pad(flat, (half, half, half, half), mode="replicate")[:, 0]
    height, width = shape[-2:]
    values = {dy * size + dx: padded[:, dy:dy + height, dx:dx + width] for dy in range(size) for dx in range(size)}
    program, result = _median_program(size * size)
    last_use = {}
    for position, (_, _, a, b) in enumerate(program):
        last_use[a] = last_use[b] = position
    # intermediate results go to reused buffers: fresh allocations at every one of the
    # ~200 steps cost as much as the min/max themselves on the CPU
    spare = []
    for position, (op, out, a, b) in enumerate(program):
        buffer = spare.pop() if spare else torch.empty_like(padded[:, :height, :width])
        (torch.minimum if op == "min" else torch.maximum)(values[a], values[b], out=buffer)
        values[out] = buffer
        for value in (a, b):
            if value >= size * size and last_use[value] == position:
                spare.append(values.pop(value))
    return values[result].reshape(shape)


#: Coefficient of the bicubic kernel (OpenCV's INTER_CUBIC and torch's bicubic use -0.75).
CUBIC_A = -0.75


def _cubic_weights(frac: torch.Tensor) -> torch.Tensor:
    """(4, ...) weights of the taps at -1, 0, 1, 2 from the sample's fractional position ``frac``."""
    a = CUBIC_A
    w0 = ((a * (frac + 1) - 5 * a) * (frac + 1) + 8 * a) * (frac + 1) - 4 * a
    w1 = ((a + 2) * frac - (a + 3)) * frac * frac + 1
    w2 = ((a + 2) * (1 - frac) - (a + 3)) * (1 - frac) * (1 - frac) + 1
    return torch.stack((w0, w1, w2, 1 - w0 - w1 - w2))


def warp_bicubic(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images sampled at ``(x + u, y + v)`` by bicubic interpolation (a = -0.75).

    Taps outside the image read as 0 (``cv2.remap``'s default constant border).
    ``flow`` is (B, 2, H, W) in pixels. The sample positions are formed as OpenCV
    forms them (``x + u`` in float32), so a zero flow returns the images exactly:
    a normalised ``grid_sample`` grid would not, and the zero border amplifies
    such rounding into flow along the image edges.
    """
    batch, channels, height, width = images.shape
    xs = torch.arange(width, device=images.device, dtype=images.dtype) + flow[:, 0]
    ys = torch.arange(height, device=images.device, dtype=images.dtype)[:, None] + flow[:, 1]
    x0, y0 = torch.floor(xs), torch.floor(ys)
    weights_x, weights_y = _cubic_weights(xs - x0), _cubic_weights(ys - y0)
    taps = torch.arange(-1, 3, device=images.device).view(4, 1, 1, 1)
    # clamp far-away positions first so that the integer conversion cannot overflow
    cols = x0.clamp(-4, width + 4).long() + taps
    rows = y0.clamp(-4, height + 4).long() + taps
    weights_x = weights_x * ((cols >= 0) & (cols < width))
    weights_y = weights_y * ((rows >= 0) & (rows < height))
    cols, rows = cols.clamp(0, width - 1), rows.clamp(0, height - 1)
    flat = images.reshape(batch, channels, height * width)
    out = images.new_zeros(batch, channels, height * width)
    for j in range(4):
        row_sum = images.new_zeros(batch, channels, height * width)
        for i in range(4):
            index = (rows[j] * width + cols[i]).view(batch, 1, -1).expand(-1, channels, -1)
            row_sum.addcmul_(flat.gather(2, index), weights_x[i].view(batch, 1, -1))
        out.addcmul_(row_sum, weights_y[j].view(batch, 1, -1))
    return out.view(batch, channels, height, width)


def _where(active: torch.Tensor, all_active: bool, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` for the pairs still iterating, ``old`` for the converged ones."""
    if all_active:
        return new
    return torch.where(active.view(-1, *([1] * (new.ndim - 1))), new, old)


def _one_scale(image0: torch.Tensor, image1: torch.Tensor, flow: torch.Tensor, params: TVL1Params) -> torch.Tensor:
    """Refine (B, C, H, W) ``flow`` (u1, u2 and, with gamma, u3) on one pyramid level."""
    batch, channels, height, width = flow.shape
    scaled_epsilon = params.epsilon * params.epsilon * height * width
    lambda_theta = params.lambda_ * params.theta
    tau_theta = params.tau / params.theta
    grad_x, grad_y = centered_gradient(image1)
    targets = torch.stack((image1, grad_x, grad_y), dim=1)
    dual = flow.new_zeros(batch, channels, 2, height, width)
    flow_grad = flow.new_zeros(batch, channels, 2, height, width)
    for _ in range(params.warps):
        warped, warped_x, warped_y = warp_bicubic(targets, flow[:, :2]).unbind(1)
        grad_sq = warped_x * warped_x + warped_y * warped_y
        rho_const = warped - warped_x * flow[:, 0] - warped_y * flow[:, 1] - image0
        # the data term's gradient in (u1, u2, u3): the image gradient and gamma
        direction = [warped_x, warped_y] + ([torch.full_like(warped_x, params.gamma)] if channels == 3 else [])
        direction = torch.stack(direction, dim=1)
        # OpenCV's thresholding step: +-lambda*theta where |rho| exceeds lambda*theta*|grad I1|^2,
        # else -rho / |grad I1|^2 (0 where |grad I1|^2 <= float epsilon, as OpenCV); one clamp.
        # Where 0 < |grad I1|^2 <= epsilon and |rho| is large OpenCV steps by +-lambda*theta
        # along a gradient of norm < 4e-4: under 2e-5 px, which this step leaves out.
        neg_inv_grad_sq = torch.where(grad_sq > _FLOAT_EPSILON, -1.0 / grad_sq, torch.zeros_like(grad_sq))
        active = torch.ones(batch, dtype=torch.bool, device=flow.device)
        n_active = batch
        for _ in range(params.outer_iterations):
            if n_active == 0:
                break
            if params.median_filtering > 1:
                filtered = median_filter(flow[:, :2], params.median_filtering)
                flow = torch.cat((_where(active, n_active == batch, filtered, flow[:, :2]), flow[:, 2:]), dim=1)
            for _ in range(params.inner_iterations):
                all_active = n_active == batch
                rho = rho_const + (direction * flow).sum(dim=1)
                step = (rho * neg_inv_grad_sq).clamp_(-lambda_theta, lambda_theta)
                new_flow = torch.addcmul(flow, step[:, None], direction).add_(divergence(dual), alpha=params.theta)
                change = (new_flow - flow).square_().sum(dim=(1, 2, 3))
                flow = _where(active, all_active, new_flow, flow)
                forward_gradient(flow, out=flow_grad)
                norm = torch.hypot(flow_grad[:, :, 0], flow_grad[:, :, 1]).mul_(tau_theta).add_(1.0)
                new_dual = torch.add(dual, flow_grad, alpha=tau_theta).div_(norm[:, :, None])
                dual = _where(active, all_active, new_dual, dual)
                active = active & (change > scaled_epsilon)
                n_active = int(active.sum())
                if n_active == 0:
                    break
    return flow


def tvl1_flow(image0: torch.Tensor, image1: torch.Tensor, params: TVL1Params = TVL1Params()) -> torch.Tensor:
    """Dense TV-L1 optical flow from ``image0`` to ``image1`` for a batch of pairs.

    The result matches ``cv2.optflow.DualTVL1OpticalFlow`` with the same
    parameters (``pipeline.flow.tvl1_flow``) to float32 rounding; see the module
    docstring for the steps. Runs on the images' device (CPU or CUDA).

    Args:
        image0, image1: (B, H, W) grayscale images on the 0..255 scale of 8-bit
            frames (any real dtype; computed in float32), H, W >= 3.
        params: solver parameters (``use_initial_flow`` must be False).

    Returns:
        (B, 2, H, W) float32 flow (u, v) in pixels on the images' device,
        ``image0[b, y, x] ~ image1[b, y + v, x + u]``.
    """
    check_params(params)
    _check_images(image0, image1)
    image0 = image0.to(torch.float32)
    image1 = image1.to(torch.float32)
    batch, height, width = image0.shape
    sizes = pyramid_sizes(height, width, params.nscales, params.scale_step)
    shrink = 1.0 / params.scale_step
    pyramid = [(image0, image1)]
    for size in sizes[1:]:
        pyramid.append(tuple(resize_linear(level, size, (shrink, shrink)) for level in pyramid[-1]))
    channels = 3 if params.gamma != 0 else 2
    # u3 (the illumination term) is not a displacement: it keeps its value across levels
    zoom = torch.tensor([shrink, shrink, 1.0][:channels], dtype=torch.float32, device=image0.device).view(1, -1, 1, 1)
    flow = image0.new_zeros(batch, channels, *sizes[-1])
    for level in range(len(sizes) - 1, -1, -1):
        flow = _one_scale(*pyramid[level], flow, params)
        if level > 0:
            (h, w), (fine_h, fine_w) = sizes[level], sizes[level - 1]
            flow = resize_linear(flow, (fine_h, fine_w), (h / fine_h, w / fine_w)) * zoom
    return flow[:, :2].contiguous()
