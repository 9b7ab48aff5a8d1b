"""Torch implementations of every canonical op: the reference semantics of ``sparsecc.ir.ops``.

Each function takes the input tensors positionally (``None`` for an absent optional input) and the
node's attributes as keywords, and returns a tensor or a tuple of tensors. Everything stays
differentiable where the math is, so the planner can take Hessians through the interpreter.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

TORCH_OPS: dict[str, Callable] = {}


def register(*names: str) -> Callable:
    def wrap(fn: Callable) -> Callable:
        for n in names:
            TORCH_OPS[n] = fn
        return fn
    return wrap


def _simple(name: str, fn: Callable) -> None:
    TORCH_OPS[name] = lambda *args, **_: fn(*args)


# ---- elementwise --------------------------------------------------------------------------------------
for _n, _f in {
    "neg": torch.neg, "abs": torch.abs, "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt,
    "reciprocal": torch.reciprocal, "sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "asin": torch.asin,
    "acos": torch.acos, "atan": torch.atan, "sinh": torch.sinh, "cosh": torch.cosh, "tanh": torch.tanh,
    "asinh": torch.asinh, "acosh": torch.acosh, "atanh": torch.atanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
    "erf": torch.erf, "floor": torch.floor, "ceil": torch.ceil, "round": torch.round, "sign": torch.sign,
    "logical_not": torch.logical_not, "bitwise_not": torch.bitwise_not, "isnan": torch.isnan, "silu": F.silu,
    "mish": F.mish, "softplus": F.softplus, "softsign": F.softsign, "hard_swish": F.hardswish,
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "maximum": torch.maximum, "minimum": torch.minimum,
    "equal": torch.eq, "less": torch.lt, "less_equal": torch.le, "greater": torch.gt, "greater_equal": torch.ge,
    "logical_and": torch.logical_and, "logical_or": torch.logical_or, "logical_xor": torch.logical_xor,
    "bitwise_and": torch.bitwise_and, "bitwise_or": torch.bitwise_or, "bitwise_xor": torch.bitwise_xor,
    "bitshift_left": torch.bitwise_left_shift, "bitshift_right": torch.bitwise_right_shift, "where": torch.where,
    "matmul": torch.matmul,
}.items():
    _simple(_n, _f)


@register("isinf")
def _isinf(x, *, detect_positive=True, detect_negative=True):
    return (torch.isposinf(x) & detect_positive) | (torch.isneginf(x) & detect_negative)


@register("gelu")
def _gelu(x, *, approximate="none"):
    return F.gelu(x, approximate=approximate)


@register("leaky_relu")
def _leaky_relu(x, *, alpha=0.01):
    return F.leaky_relu(x, alpha)


@register("elu")
def _elu(x, *, alpha=1.0):
    return F.elu(x, alpha)


@register("celu")
def _celu(x, *, alpha=1.0):
    return F.celu(x, alpha)


@register("selu")
def _selu(x, *, alpha, gamma):
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


@register("hard_sigmoid")
def _hard_sigmoid(x, *, alpha=0.2, beta=0.5):
    return torch.clamp(alpha * x + beta, 0, 1)


@register("thresholded_relu")
def _thresholded_relu(x, *, alpha=1.0):
    return torch.where(x > alpha, x, torch.zeros_like(x))


@register("clip")
def _clip(x, *, min=None, max=None):
    return torch.clamp(x, min, max)


@register("prelu")
def _prelu(a, b):
    return torch.where(a >= 0, a, a * b)


@register("div")
def _div(a, b):
    if a.dtype.is_floating_point:
        return torch.div(a, b)
    return torch.div(a, b, rounding_mode="trunc")


@register("pow")
def _pow(a, b):
    return torch.pow(a, b).to(a.dtype)


@register("mod")
def _mod(a, b, *, fmod=False):
    return torch.fmod(a, b) if fmod else torch.remainder(a, b)


@register("cast")
def _cast(x, *, to):
    return x.to(torch_dtype(to))


# ---- reductions -----------------------------------------------------------------------------------------
def _axes(x, axes):
    return list(range(x.dim())) if axes is None else list(axes)


@register("reduce_sum")
def _reduce_sum(x, *, axes=None, keepdims=True):
    return torch.sum(x, dim=_axes(x, axes), keepdim=keepdims) if x.dim() else x


@register("reduce_mean")
def _reduce_mean(x, *, axes=None, keepdims=True):
    return torch.mean(x, dim=_axes(x, axes), keepdim=keepdims) if x.dim() else x


@register("reduce_max")
def _reduce_max(x, *, axes=None, keepdims=True):
    return torch.amax(x, dim=_axes(x, axes), keepdim=keepdims) if x.dim() else x


@register("reduce_min")
def _reduce_min(x, *, axes=None, keepdims=True):
    return torch.amin(x, dim=_axes(x, axes), keepdim=keepdims) if x.dim() else x


@register("reduce_prod")
def _reduce_prod(x, *, axes=None, keepdims=True):
    for a in sorted(_axes(x, axes), reverse=True):
        x = torch.prod(x, dim=a, keepdim=keepdims)
    return x


def _arg(fn, x, axis, keepdims, select_last_index):
    if select_last_index:
        n = x.shape[axis]
        return (n - 1) - fn(torch.flip(x, [axis]), dim=axis, keepdim=keepdims)
    return fn(x, dim=axis, keepdim=keepdims)


@register("argmax")
def _argmax(x, *, axis=0, keepdims=True, select_last_index=False):
    return _arg(torch.argmax, x, axis, keepdims, select_last_index)


@register("argmin")
def _argmin(x, *, axis=0, keepdims=True, select_last_index=False):
    return _arg(torch.argmin, x, axis, keepdims, select_last_index)


@register("cumsum")
def _cumsum(x, *, axis, exclusive=False, reverse=False):
    if reverse:
        x = torch.flip(x, [axis])
    y = torch.cumsum(x, dim=axis).to(x.dtype)
    if exclusive:
        y = y - x
    return torch.flip(y, [axis]) if reverse else y


# ---- linear algebra -----------------------------------------------------------------------------------
@register("linear")
def _linear(x, weight, bias=None):
    return F.linear(x, weight, bias)


@register("einsum")
def _einsum(*operands, equation):
    return torch.einsum(equation, *operands)


# ---- convolution and pooling ------------------------------------------------------------------------
def _split_pads(pads):
    n = len(pads) // 2
    return list(pads[:n]), list(pads[n:])


def _torch_pad(begin, end):
    """ONNX-style per-axis (begin, end) pads -> torch F.pad's last-axis-first list."""
    out = []
    for b, e in zip(reversed(begin), reversed(end)):
        out += [b, e]
    return out


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@register("conv")
def _conv(x, weight, bias=None, *, strides, pads, dilations, groups=1):
    begin, end = _split_pads(pads)
    if begin != end:
        x, begin = F.pad(x, _torch_pad(begin, end)), [0] * len(begin)
    return _CONV[x.dim() - 2](x, weight, bias, list(strides), begin, list(dilations), groups)


@register("conv_transpose")
def _conv_transpose(x, weight, bias=None, *, strides, pads, dilations, output_padding, groups=1):
    y = _CONV_T[x.dim() - 2](x, weight, bias, list(strides), 0, list(output_padding), groups, list(dilations))
    begin, end = _split_pads(pads)
    index = [slice(None), slice(None)] + [slice(b, y.shape[2 + i] - e) for i, (b, e) in enumerate(zip(begin, end))]
    return y[tuple(index)]


@register("max_pool")
def _max_pool(x, *, kernel, strides, pads, dilations, ceil_mode=False):
    begin, end = _split_pads(pads)
    if begin != end or any(2 * b > k for b, k in zip(begin, kernel)):
        x, begin = F.pad(x, _torch_pad(begin, end), value=-math.inf), [0] * len(begin)
    return _MAX_POOL[x.dim() - 2](x, list(kernel), list(strides), begin, list(dilations), ceil_mode=ceil_mode)


@register("avg_pool")
def _avg_pool(x, *, kernel, strides, pads, ceil_mode=False, count_include_pad=False):
    begin, end = _split_pads(pads)
    pool = _AVG_POOL[x.dim() - 2]
    xp = F.pad(x, _torch_pad(begin, end))
    summed = pool(xp, list(kernel), list(strides), 0, ceil_mode, True)
    if count_include_pad:
        return summed
    ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    count = pool(F.pad(ones, _torch_pad(begin, end)), list(kernel), list(strides), 0, ceil_mode, True)
    return summed / count


# ---- normalization ------------------------------------------------------------------------------------
@register("batch_norm")
def _batch_norm(x, scale, bias, mean, var, *, epsilon=1e-5):
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, epsilon)


@register("layer_norm")
def _layer_norm(x, weight=None, bias=None, *, axis, epsilon=1e-5):
    shape = tuple(x.shape[axis:])
    if (weight is None or tuple(weight.shape) == shape) and (bias is None or tuple(bias.shape) == shape):
        return F.layer_norm(x, shape, weight, bias, epsilon)
    dims = list(range(axis, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    y = (x - mean) / torch.sqrt(var + epsilon)
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


@register("group_norm")
def _group_norm(x, weight, bias, *, num_groups, epsilon=1e-5):
    return F.group_norm(x, num_groups, weight, bias, epsilon)


@register("softmax")
def _softmax(x, *, axis):
    return torch.softmax(x, axis)


@register("log_softmax")
def _log_softmax(x, *, axis):
    return torch.log_softmax(x, axis)


# ---- indexing and data movement -----------------------------------------------------------------------
@register("gather")
def _gather(data, indices, *, axis=0):
    n = data.shape[axis]
    idx = torch.where(indices < 0, indices + n, indices).long()
    out = torch.index_select(data, axis, idx.reshape(-1))
    return out.reshape(tuple(data.shape[:axis]) + tuple(indices.shape) + tuple(data.shape[axis + 1:]))


@register("gather_elements")
def _gather_elements(data, indices, *, axis=0):
    n = data.shape[axis]
    return torch.gather(data, axis, torch.where(indices < 0, indices + n, indices).long())


@register("slice")
def _slice(x, *, starts, ends, axes, steps):
    for start, end, axis, step in zip(starts, ends, axes, steps):
        n = x.shape[axis]
        if step > 0:
            lo, hi, _ = slice(start, end, step).indices(n)
            x = x.narrow(axis, lo, max(hi - lo, 0))[(slice(None),) * axis + (slice(None, None, step),)]
        else:
            idx = torch.arange(*slice(start, end, step).indices(n), dtype=torch.long, device=x.device)
            x = torch.index_select(x, axis, idx)
    return x


@register("concat")
def _concat(*inputs, axis):
    return torch.cat(inputs, dim=axis)


@register("split")
def _split(x, *, axis, sizes):
    return tuple(torch.split(x, list(sizes), dim=axis))


@register("reshape")
def _reshape(x, *, shape):
    return x.reshape(tuple(shape))


@register("transpose")
def _transpose(x, *, perm):
    return x.permute(tuple(perm))


@register("expand")
def _expand(x, *, shape):
    return x.expand(tuple(shape))


@register("tile")
def _tile(x, *, repeats):
    return x.repeat(tuple(repeats))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}


@register("pad")
def _pad(x, *, pads, mode="constant", value=0.0):
    begin, end = _split_pads(pads)
    if mode == "constant":
        return F.pad(x, _torch_pad(begin, end), value=value)
    lead = next((i for i, (b, e) in enumerate(zip(begin, end)) if b or e), x.dim())
    # torch pads only trailing axes in non-constant modes, and wants a batch axis in front.
    y = F.pad(x.unsqueeze(0), _torch_pad(begin[lead:], end[lead:]), mode=_PAD_MODES[mode])
    return y.squeeze(0)


_RESIZE = {
    ("nearest", "asymmetric", "floor"): ("nearest", None),
    ("nearest", "half_pixel", "round_prefer_ceil"): ("nearest-exact", None),
    ("linear", "half_pixel", ""): ("linear", False),
    ("linear", "pytorch_half_pixel", ""): ("linear", False),
    ("linear", "align_corners", ""): ("linear", True),
}
RESIZE_MODES = tuple(_RESIZE)
_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


@register("resize")
def _resize(x, *, sizes, mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"):
    key = (mode, coordinate_transformation_mode, nearest_mode if mode == "nearest" else "")
    torch_mode, align = _RESIZE[key]
    if torch_mode == "linear":
        torch_mode = _LINEAR[x.dim() - 2]
    return F.interpolate(x, size=tuple(sizes), mode=torch_mode, align_corners=align)


# ---- dtypes ---------------------------------------------------------------------------------------------
_TORCH_DTYPES = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int8": torch.int8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64, "uint8": torch.uint8,
    "uint16": torch.uint16, "uint32": torch.uint32, "uint64": torch.uint64, "bool": torch.bool,
}


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH_DTYPES[name]
