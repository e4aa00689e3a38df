"""Fused tensor operations for small, memory-bound networks.

A training step of a shallow network such as STSTNet spends its time in
elementwise passes over the full-resolution activations, not in arithmetic.
The functions here compute the same functions as their textbook compositions
with fewer such passes; each states its shapes and where it differs (only in
floating-point rounding).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["avg_pool_linear", "conv_relu_bn_maxpool", "dropout", "dropout_mask", "masked_conv_relu_bn_maxpool",
           "random_bits_mask"]


#: Samples per pass on the CPU: every later pass over a chunk's activations
#: (statistics, pooling, and in the backward pass the gradient and the weight
#: gradient) then reads data still in cache; 64 samples of 16 x 30 x 30 floats
#: measured fastest on the 2-core Xeon machines this was tuned on.
CPU_CHUNK = 64


_MKLDNN_CONV_RELU: bool | None = None  # whether this torch build has oneDNN's fused convolution


def _use_mkldnn_relu(x: torch.Tensor) -> bool:
    global _MKLDNN_CONV_RELU
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    if _MKLDNN_CONV_RELU is None:
        try:
            torch.ops.mkldnn._convolution_pointwise  # noqa: B018 (a lookup that raises when absent)
            _MKLDNN_CONV_RELU = torch.backends.mkldnn.is_available()
        except (AttributeError, RuntimeError):
            _MKLDNN_CONV_RELU = False
    return _MKLDNN_CONV_RELU and torch.backends.mkldnn.enabled


def _conv_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: int) -> torch.Tensor:
    """relu(conv2d(x)) in channels-last layout; on the CPU the ReLU runs inside oneDNN's convolution.

    ``x`` must already be channels-last. The fused kernel writes the activations
    once instead of twice (convolution, then an in-place ReLU pass).
    """
    if _use_mkldnn_relu(x):
        out = torch.ops.mkldnn._convolution_pointwise(
            x, weight, bias, [padding, padding], [1, 1], [1, 1], 1, "relu", [], "")
        if out.is_contiguous(memory_format=torch.channels_last):
            return out
        return out.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, weight, bias, padding=padding).relu_()


def _pool_selected(r: torch.Tensor, sign: torch.Tensor | None, kernel: int, stride: int, padding: int,
                   indices: bool):
    """Max-pool of ``r``, or min-pool in the channels where ``sign`` is -1.

    Returns the selected values of ``r`` (not of ``sign * r``) and, if asked,
    their flat indices within each (H, W) plane.
    """
    source = r if sign is None else r * sign.view(1, -1, 1, 1)
    if indices:
        pooled, where = F.max_pool2d(source, kernel, stride, padding, return_indices=True)
    else:
        pooled, where = F.max_pool2d(source, kernel, stride, padding), None
    if sign is not None:
        pooled = pooled * sign.view(1, -1, 1, 1)
    return pooled, where


class _ConvReluBnMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, running_mean, running_var, training, momentum, eps,
                conv_padding, pool_kernel, pool_stride, pool_padding, chunk):
        x = x.contiguous(memory_format=torch.channels_last)
        # BN is a per-channel affine map, so it commutes with max-pooling when
        # its slope is >= 0 and turns it into min-pooling when it is < 0:
        # normalise the pooled maps instead of the full-resolution ones.
        negative = gamma < 0
        sign = torch.where(negative, -1.0, 1.0).to(x.dtype) if bool(negative.any()) else None
        needs_grad = any(ctx.needs_input_grad[1:5])
        activations, selected, where = [], [], []
        total = squares = None
        for part in x.split(chunk):
            r = _conv_relu(part, weight, bias, conv_padding)
            if training:
                # Per-channel sum and sum of squares on the channels-last (N*H*W, C)
                # view: a column sum, and the diagonal of the (C, C) Gram matrix
                # from one BLAS call (together several times faster than
                # var_mean's Welford pass; relative error ~1e-6).
                flat = r.permute(0, 2, 3, 1).reshape(-1, r.shape[1])
                part_total, part_squares = flat.sum(dim=0), torch.mm(flat.t(), flat).diagonal()
                total = part_total if total is None else total + part_total
                squares = part_squares if squares is None else squares + part_squares
            pooled, index = _pool_selected(r, sign, pool_kernel, pool_stride, pool_padding, needs_grad)
            activations.append(r)
            selected.append(pooled)
            where.append(index)
        selected = torch.cat(selected) if len(selected) > 1 else selected[0]
        n = x.shape[0] * r.shape[2] * r.shape[3]
        if training:
            if n < 2:
                raise ValueError("batch norm needs more than one value per channel in training")
            mean64 = total.to(torch.float64) / n
            var64 = (squares.to(torch.float64) / n - mean64 * mean64).clamp(min=0.0)
            mean, var = mean64.to(x.dtype), var64.to(x.dtype)
            if running_mean is not None:
                with torch.no_grad():
                    running_mean.mul_(1.0 - momentum).add_(mean, alpha=momentum)
                    running_var.mul_(1.0 - momentum).add_(var64.to(x.dtype) * (n / (n - 1)), alpha=momentum)
        else:
            mean, var = running_mean, running_var
        inv_std = torch.rsqrt(var + eps)
        scale = gamma * inv_std
        shift = beta - mean * scale
        out = torch.addcmul(shift.view(1, -1, 1, 1), selected, scale.view(1, -1, 1, 1))
        if needs_grad:
            ctx.save_for_backward(x, weight, selected, mean, inv_std, gamma, *activations, *where)
            ctx.training = training
            ctx.conv_padding = conv_padding
            ctx.chunk = chunk
            ctx.n = n
            ctx.bias_size = None if bias is None else list(bias.shape)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, selected, mean, inv_std, gamma, *rest = ctx.saved_tensors
        activations, where = rest[:len(rest) // 2], rest[len(rest) // 2:]
        c, n = selected.shape[1], ctx.n
        dims = (0, 2, 3)
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        xhat = (selected - mean.view(1, -1, 1, 1)) * inv_std.view(1, -1, 1, 1)
        sum_g = grad_out.sum(dim=dims)
        sum_gx = (grad_out * xhat).sum(dim=dims)
        scale = gamma * inv_std
        if ctx.training:
            # d loss / d r = scale * (g - mean(g) - xhat * mean(g * xhat)) with g
            # zero except at the pooled positions, so the dense part is the
            # per-channel affine map c0 + c1 * r.
            c1 = (-(scale / n) * inv_std * sum_gx).view(1, c, 1, 1)
            c0 = (-(scale / n) * (sum_g - mean * inv_std * sum_gx)).view(1, c, 1, 1)
        sparse = grad_out * scale.view(1, c, 1, 1)
        mask = [False, ctx.needs_input_grad[1], ctx.bias_size is not None and ctx.needs_input_grad[2]]
        grad_w = grad_b = None
        for r, index, part_x, part_sparse in zip(activations, where, x.split(ctx.chunk), sparse.split(ctx.chunk)):
            if ctx.training:
                grad_r = torch.addcmul(c0, r, c1).contiguous(memory_format=torch.channels_last)
            else:
                grad_r = torch.zeros_like(r, memory_format=torch.channels_last)
            b = r.shape[0]
            plane = grad_r.flatten(2)  # (B, C, H*W), a view for channels-last memory
            plane.scatter_add_(2, index.reshape(b, c, -1), part_sparse.reshape(b, c, -1))
            # Through the ReLU, in place: zero wherever r == 0.
            torch.ops.aten.threshold_backward.grad_input(grad_r, r, 0.0, grad_input=grad_r)
            if mask[1] or mask[2]:
                _, part_w, part_b = torch.ops.aten.convolution_backward(
                    grad_r, part_x, weight, ctx.bias_size,
                    [1, 1], [ctx.conv_padding] * 2, [1, 1], False, [0, 0], 1, mask)
                grad_w = part_w if grad_w is None or part_w is None else grad_w + part_w
                grad_b = part_b if grad_b is None or part_b is None else grad_b + part_b
        grad_gamma = sum_gx if ctx.needs_input_grad[3] else None
        grad_beta = sum_g if ctx.needs_input_grad[4] else None
        return (None, grad_w, grad_b, grad_gamma, grad_beta) + (None,) * 10


def conv_relu_bn_maxpool(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         gamma: torch.Tensor, beta: torch.Tensor, running_mean: torch.Tensor | None,
                         running_var: torch.Tensor | None, *, training: bool, momentum: float = 0.1,
                         eps: float = 1e-5, conv_padding: int = 0, pool_kernel: int = 2,
                         pool_stride: int | None = None, pool_padding: int = 0,
                         chunk: int | None = None) -> torch.Tensor:
    """``max_pool2d(batch_norm(relu(conv2d(x))))`` with one pass fewer per stage.

    Shapes: ``x`` (B, Cin, H, W); ``weight`` (C, Cin, k, k) applied with stride 1
    and ``conv_padding``; ``bias``, ``gamma``, ``beta``, ``running_mean``,
    ``running_var`` (C,). Returns (B, C, H', W') in channels-last memory, H' and
    W' as ``F.max_pool2d(..., pool_kernel, pool_stride, pool_padding)`` gives.

    In training mode the batch statistics come from the full-resolution ReLU
    output (biased variance to normalise, unbiased variance into
    ``running_var``, as ``nn.BatchNorm2d`` does); the running buffers, if
    given, are updated in place with ``momentum``. In evaluation mode the
    running statistics normalise. Gradients flow to ``weight``, ``bias``,
    ``gamma`` and ``beta`` (not to ``x``: it is network input here).

    ``chunk``: samples per pass (default :data:`CPU_CHUNK` on the CPU, the whole
    batch elsewhere); it changes speed only, not the result beyond rounding.
    On a GPU the check for a negative ``gamma`` is one host synchronisation.

    Differences from the composition: floating-point rounding only (sums are
    accumulated in another order, and in float64 for the statistics), and where
    several activations in one pooling window are exactly equal the gradient
    may go to another of them.
    """
    if x.requires_grad:
        raise ValueError("conv_relu_bn_maxpool gives no gradient for its input x; pass a tensor without grad")
    pool_stride = pool_kernel if pool_stride is None else pool_stride
    if chunk is None:
        chunk = CPU_CHUNK if x.device.type == "cpu" else x.shape[0]
    chunk = max(1, min(int(chunk), x.shape[0]))
    if training and running_mean is not None and momentum is None:
        raise ValueError("momentum must be a number; compute the cumulative factor before calling")
    return _ConvReluBnMaxPool.apply(x, weight, bias, gamma, beta, running_mean, running_var, training,
                                    momentum, eps, conv_padding, pool_kernel, pool_stride, pool_padding, chunk)


def avg_pool_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kernel: int) -> torch.Tensor:
    """``F.linear(F.avg_pool2d(x, kernel).flatten(1), weight, bias)`` as one matrix product.

    Shapes: ``x`` (B, C, H, W) with H and W multiples of ``kernel``; ``weight``
    (n, C * H/kernel * W/kernel) in the pooled map's (C, H', W') order;
    ``bias`` (n,). Returns (B, n). Averaging is linear, so it folds into the
    weight (each weight repeated over its kernel x kernel window and divided by
    kernel^2); the product then reads ``x`` in its own memory order (a
    channels-last ``x`` is not copied) and the pooling's backward pass, slow
    for channels-last maps, disappears.
    """
    b, c, h, w = x.shape
    if h % kernel or w % kernel:
        raise ValueError(f"avg_pool_linear needs H and W divisible by {kernel}, got {h}x{w}")
    n = weight.shape[0]
    expanded = weight.view(n, c, h // kernel, 1, w // kernel, 1).expand(n, c, h // kernel, kernel, w // kernel, kernel)
    expanded = expanded.reshape(n, c, h, w) / float(kernel * kernel)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        features, expanded = x.permute(0, 2, 3, 1).reshape(b, -1), expanded.permute(0, 2, 3, 1).reshape(n, -1)
    else:
        features, expanded = x.reshape(b, -1), expanded.reshape(n, -1)
    return F.linear(features, expanded, bias)


_BIT_TABLES: dict[tuple[torch.device, torch.dtype, float], torch.Tensor] = {}


def _bit_table(device: torch.device, dtype: torch.dtype, scale: float) -> torch.Tensor:
    key = (device, dtype, scale)
    table = _BIT_TABLES.get(key)
    if table is None:
        byte = torch.arange(256, dtype=torch.int64).unsqueeze(1)
        bits = (byte >> torch.arange(8, dtype=torch.int64)) & 1
        table = (bits.to(torch.float64) * scale).to(device=device, dtype=dtype)
        _BIT_TABLES[key] = table
    return table


def random_bits_mask(shape: torch.Size | tuple[int, ...], scale: float, *, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None) -> torch.Tensor:
    """A tensor of ``shape`` whose elements are independently 0 or ``scale`` with probability 1/2 each.

    Built from 64 random bits per 64 elements (one int64 draw) expanded
    through a (256, 8) lookup table, instead of one random number per element:
    the draw is what costs on the CPU. Uses ``generator`` or torch's global one.
    """
    count = 1
    for size in shape:
        count *= int(size)
    words = -(-count // 64)
    draws = torch.empty(words, dtype=torch.int64, device=device)
    draws.random_(-2 ** 63, None, generator=generator)  # the full 64-bit range: every bit fair
    octets = draws.view(torch.uint8).to(torch.int32)
    mask = _bit_table(torch.device(device), dtype, float(scale)).index_select(0, octets)
    return mask.view(-1)[:count].view(shape)


def dropout_mask(shape: torch.Size | tuple[int, ...], p: float, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted-dropout multiplier of ``shape``: 0 with probability ``p``, else ``1 / (1 - p)``.

    ``p = 0.5`` (STSTNet's value) uses :func:`random_bits_mask`; other values
    draw one uniform number per element, exactly as ``F.dropout`` does.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if p == 0.5:
        return random_bits_mask(shape, 2.0, device=device, dtype=dtype, generator=generator)
    keep = torch.empty(shape, device=device, dtype=dtype).bernoulli_(1.0 - p, generator=generator)
    return keep.div_(1.0 - p)


def dropout(x: torch.Tensor, p: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout (training mode): ``x`` times :func:`dropout_mask`, any shape.

    The same distribution as ``F.dropout(x, p, training=True)``; the mask is laid
    out in ``x``'s memory order (channels-last included), so the product
    streams through both tensors in order.
    """
    if p == 0.0:
        return x
    mask = dropout_mask((x.numel(),), p, device=x.device, dtype=x.dtype, generator=generator)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        b, c, h, w = x.shape
        return x * mask.view(b, h, w, c).permute(0, 3, 1, 2)
    return x * mask.view(x.shape)


def masked_channel_statistics(r: torch.Tensor, sample_weight: torch.Tensor):
    """Per-channel mean and biased variance of ``r`` (B, C, H, W) over the samples weighted 1.

    ``sample_weight`` (B, C): 1 where sample b counts for channel c, 0 where it
    is padding. One pass over ``r`` (each sample's own mean and variance), then
    the channel's over its real samples by the law of total variance. Returns
    ``(mean, var, n)``, each (C,), ``n`` the number of values per channel; a
    channel with no real sample gets mean and variance 0. Differentiable.
    """
    samples = sample_weight.sum(0)
    sample_var, sample_mean = torch.var_mean(r, dim=(2, 3), correction=0)  # (B, C)
    safe_samples = samples.clamp(min=1.0)
    mean = (sample_mean * sample_weight).sum(0) / safe_samples
    var = ((sample_var + (sample_mean - mean).square()) * sample_weight).sum(0) / safe_samples
    return mean, var, samples * (r.shape[2] * r.shape[3])


@torch.no_grad()
def update_running_statistics(running_mean: torch.Tensor, running_var: torch.Tensor, mean: torch.Tensor,
                              var: torch.Tensor, n: torch.Tensor, momentum: float) -> None:
    """``nn.BatchNorm2d``'s running update (unbiased variance), in place, for the channels with ``n`` > 1."""
    active = n > 1
    unbiased = var * (n / (n - 1).clamp(min=1.0))
    running_mean.copy_(torch.where(active, running_mean * (1 - momentum) + mean * momentum, running_mean))
    running_var.copy_(torch.where(active, running_var * (1 - momentum) + unbiased * momentum, running_var))


class _MaskedConvReluBnMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, running_mean, running_var, sample_weight, groups, training,
                momentum, eps, conv_padding, pool_kernel, pool_stride, pool_padding):
        r = F.conv2d(x, weight, bias, padding=conv_padding, groups=groups).relu_()
        b, c = r.shape[:2]
        if training:
            weight_bc = sample_weight.repeat_interleave(c // groups, dim=1)  # (B, C)
            mean, var, n = masked_channel_statistics(r, weight_bc)
            if running_mean is not None:
                update_running_statistics(running_mean, running_var, mean, var, n, momentum)
        else:
            mean, var, weight_bc, n = running_mean, running_var, None, None
        inv_std = torch.rsqrt(var + eps)
        scale = gamma * inv_std
        # Batch norm commutes with max-pooling where its slope is >= 0 and turns
        # it into min-pooling where it is < 0: pool sign * r, normalise the pooled maps.
        sign = torch.where(gamma < 0, -1.0, 1.0).to(r.dtype).view(1, c, 1, 1)
        pooled, where = F.max_pool2d(r * sign, pool_kernel, pool_stride, pool_padding, return_indices=True)
        selected = pooled.mul_(sign)
        out = torch.addcmul((beta - mean * scale).view(1, c, 1, 1), selected, scale.view(1, c, 1, 1))
        ctx.save_for_backward(x, weight, r, where, selected, mean, inv_std, gamma, weight_bc, n)
        ctx.groups, ctx.training, ctx.conv_padding = groups, training, conv_padding
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, r, where, selected, mean, inv_std, gamma, weight_bc, n = ctx.saved_tensors
        b, c = r.shape[:2]
        xhat = (selected - mean.view(1, c, 1, 1)) * inv_std.view(1, c, 1, 1)
        sum_g = grad_out.sum(dim=(0, 2, 3))
        sum_gx = (grad_out * xhat).sum(dim=(0, 2, 3))
        scale = gamma * inv_std
        if ctx.training:
            # d loss / d r = scale * (g - mean(g) - xhat * mean(g * xhat)) over the
            # channel's real samples, g zero except at the pooled positions: the
            # dense part is w_b * (c0 + c1 * r), w_b the sample's weight (0 for padding).
            safe_n = n.clamp(min=1.0)
            c1 = -(scale / safe_n) * inv_std * sum_gx
            c0 = -(scale / safe_n) * (sum_g - mean * inv_std * sum_gx)
            grad_r = torch.addcmul((weight_bc * c0).view(b, c, 1, 1), r, (weight_bc * c1).view(b, c, 1, 1))
        else:
            grad_r = torch.zeros_like(r)
        sparse = grad_out * scale.view(1, c, 1, 1)
        grad_r.flatten(2).scatter_add_(2, where.flatten(2), sparse.flatten(2))
        torch.ops.aten.threshold_backward.grad_input(grad_r, r, 0.0, grad_input=grad_r)
        mask = [False, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        _, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_r, x, weight, [weight.shape[0]] if ctx.has_bias else None,
            [1, 1], [ctx.conv_padding] * 2, [1, 1], False, [0, 0], ctx.groups, mask)
        grad_gamma = sum_gx if ctx.needs_input_grad[3] else None
        grad_beta = sum_g if ctx.needs_input_grad[4] else None
        return (None, grad_w, grad_b, grad_gamma, grad_beta) + (None,) * 11


def masked_conv_relu_bn_maxpool(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                gamma: torch.Tensor, beta: torch.Tensor, running_mean: torch.Tensor | None,
                                running_var: torch.Tensor | None, sample_weight: torch.Tensor, *, groups: int = 1,
                                training: bool, momentum: float = 0.1, eps: float = 1e-5, conv_padding: int = 0,
                                pool_kernel: int = 2, pool_stride: int | None = None,
                                pool_padding: int = 0) -> torch.Tensor:
    """``max_pool2d(batch_norm(relu(conv2d(x, groups=groups))))`` with per-group sample masks.

    The form :class:`~fr_mer.models.ststnet.StackedSTSTNet` trains many folds
    with, written for the GPU (no chunks, no oneDNN): group ``g`` of the
    convolution is one fold, and ``sample_weight`` (B, groups), 1 for a real
    sample and 0 for padding, decides which samples enter group ``g``'s batch
    statistics (and its running buffers, updated in place; a group with no
    real sample keeps them). Shapes: ``x`` (B, groups * Cin, H, W); ``weight``
    (C, Cin, k, k) with C a multiple of ``groups``; ``bias``, ``gamma``,
    ``beta``, running buffers (C,). Returns (B, C, H', W').

    Same function as the composition on the real samples, in fewer passes over
    the full-resolution maps: statistics from one ``var_mean`` pass, batch norm
    applied to the pooled maps, and a hand-written backward pass (one dense
    affine pass, one scatter of the pooled gradients, the ReLU mask, the
    weight gradient). Gradients flow to ``weight``, ``bias``, ``gamma`` and
    ``beta``, not to ``x``. Where several activations in one pooling window
    are exactly equal the gradient may go to another of them.
    """
    if x.requires_grad:
        raise ValueError("masked_conv_relu_bn_maxpool gives no gradient for its input x; pass a tensor without grad")
    if sample_weight.shape != (x.shape[0], groups):
        raise ValueError(f"sample_weight must be (batch, groups) = {(x.shape[0], groups)}, "
                         f"got {tuple(sample_weight.shape)}")
    pool_stride = pool_kernel if pool_stride is None else pool_stride
    return _MaskedConvReluBnMaxPool.apply(
        x, weight, bias, gamma, beta, running_mean, running_var, sample_weight.to(x.dtype), groups, training,
        momentum, eps, conv_padding, pool_kernel, pool_stride, pool_padding)
