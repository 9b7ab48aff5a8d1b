"""Convolution, pooling and normalization (NC + spatial layout, ONNX-style begin..end pads like the IR)."""
from __future__ import annotations

import numpy as np

from ..context import FLOATS, EmitContext
from .registry import emitter


@emitter("conv")
def _conv(cx: EmitContext, x: str, weight: str, bias: str | None, *, strides: list[int], pads: list[int],
          dilations: list[int], groups: int) -> str:
    return cx.op("Conv", [x, weight, bias], strides=list(strides), pads=list(pads), dilations=list(dilations),
                 group=groups)


@emitter("conv_transpose")
def _conv_transpose(cx: EmitContext, x: str, weight: str, bias: str | None, *, strides: list[int], pads: list[int],
                    dilations: list[int], output_padding: list[int], groups: int) -> str:
    return cx.op("ConvTranspose", [x, weight, bias], strides=list(strides), pads=list(pads),
                 dilations=list(dilations), output_padding=list(output_padding), group=groups)


def _ceil_pads(cx: EmitContext, kernel: list[int], strides: list[int], pads: list[int],
               dilations: list[int]) -> list[int]:
    """Pads that make a floor-mode pool produce the node's declared (ceil-mode) output size: the end pads grow by
    the last window's overhang. Windows reaching into that overhang see only padding there, as in torch."""
    n = len(kernel)
    in_dims, out_dims = cx.in_type(0).shape[2:], cx.out_type().shape[2:]
    if not all(isinstance(d, int) for d in in_dims + out_dims):
        raise cx.unsupported("ceil_mode with symbolic spatial dims")
    ends = [e + max(0, (o - 1) * s + d * (k - 1) + 1 - (size + b + e))
            for size, o, k, s, d, b, e in zip(in_dims, out_dims, kernel, strides, dilations, pads[:n], pads[n:])]
    return list(pads[:n]) + ends


def _pad_spatial(cx: EmitContext, x: str, pads: list[int], value: str) -> str:
    n = len(pads) // 2
    return cx.op("Pad", [x, cx.const(np.array([0, 0] + pads[:n] + [0, 0] + pads[n:], dtype=np.int64), "int64"),
                         value])


def _explicit_padding(ceil_mode: bool, pads: list[int], kernel: list[int]) -> bool:
    """ORT's pools want each pad smaller than the kernel, and differ from torch on ceil-mode output sizes."""
    return ceil_mode or any(p >= k for p, k in zip(pads, list(kernel) * 2))


_MAX_POOL_DTYPES = {"float32": "float32", "float64": "float64", "float16": "float16", "int8": "int8",
                    "uint8": "uint8", "int16": "float64", "uint16": "float64", "int32": "float64", "uint32": "float64"}
"""Input dtype -> the dtype ORT's MaxPool runs in (wider integers go through float64, exactly)."""


@emitter("max_pool")
def _max_pool(cx: EmitContext, x: str, *, kernel: list[int], strides: list[int], pads: list[int],
              dilations: list[int], ceil_mode: bool) -> str:
    dtype = cx.in_type(0).dtype
    if dtype not in _MAX_POOL_DTYPES:
        raise cx.unsupported(f"dtype {dtype}")
    compute = _MAX_POOL_DTYPES[dtype]
    x = cx.cast(x, dtype, compute)
    if _explicit_padding(ceil_mode, list(pads), list(kernel)):
        lowest = -np.inf if compute in FLOATS else np.iinfo(compute).min  # padding never wins
        x = _pad_spatial(cx, x, _ceil_pads(cx, kernel, strides, pads, dilations) if ceil_mode else list(pads),
                         cx.const(lowest, compute))
        pads = [0] * len(pads)
    attrs = {"kernel_shape": list(kernel), "strides": list(strides), "pads": list(pads), "dilations": list(dilations)}
    y = cx.op("MaxPool", [x], **attrs)
    if compute in FLOATS:  # torch propagates NaN through max; ORT's MaxPool skips it
        nan_in_window = cx.op("MaxPool", [cx.cast(cx.op("IsNaN", [x]), "bool", compute)], **attrs)
        y = cx.op("Where", [cx.cast(nan_in_window, compute, "bool"), cx.const(np.nan, compute), y])
    return cx.cast(y, compute, dtype)


@emitter("avg_pool")
def _avg_pool(cx: EmitContext, x: str, *, kernel: list[int], strides: list[int], pads: list[int], ceil_mode: bool,
              count_include_pad: bool) -> str:
    if not _explicit_padding(ceil_mode, list(pads), list(kernel)):
        return cx.op("AveragePool", [x], kernel_shape=list(kernel), strides=list(strides), pads=list(pads),
                     count_include_pad=int(count_include_pad))
    # pad explicitly, average over whole windows, then rescale each output by kernel size / the reference's divisor
    dilations = [1] * len(kernel)
    full = _ceil_pads(cx, kernel, strides, pads, dilations) if ceil_mode else list(pads)
    dtype = cx.in_type(0).dtype
    y = cx.op("AveragePool", [_pad_spatial(cx, x, full, cx.const(0, dtype))], kernel_shape=list(kernel),
              strides=list(strides))
    n = len(kernel)
    divisor = np.ones((), dtype=np.float64)
    for size, out, k, s, b, e in zip(cx.in_type(0).shape[2:], cx.out_type().shape[2:], kernel, strides, pads[:n],
                                     pads[n:]):
        lo, hi = (0, size + b + e) if count_include_pad else (b, b + size)
        starts = np.arange(out) * s
        counts = np.clip(np.minimum(starts + k, hi) - np.maximum(starts, lo), 0, None)
        divisor = np.multiply.outer(divisor, counts)
    with np.errstate(divide="ignore"):
        return cx.op("Mul", [y, cx.const(np.prod(kernel) / divisor, dtype)])


@emitter("batch_norm")
def _batch_norm(cx: EmitContext, x: str, scale: str, bias: str, mean: str, var: str, *, epsilon: float) -> str:
    return cx.op("BatchNormalization", [x, scale, bias, mean, var], epsilon=float(epsilon))


def _normalize(cx: EmitContext, x: str, axes: list[int], epsilon: float, dtype: str) -> str:
    """(x - mean) / sqrt(var + eps) over ``axes`` (biased variance), as the reference computes it."""
    axes_t = cx.const(np.array(axes, dtype=np.int64), "int64")
    centered = cx.op("Sub", [x, cx.op("ReduceMean", [x, axes_t], keepdims=1)])
    var = cx.op("ReduceMean", [cx.op("Mul", [centered, centered]), axes_t], keepdims=1)
    return cx.op("Div", [centered, cx.op("Sqrt", [cx.op("Add", [var, cx.const(epsilon, dtype)])])])


@emitter("layer_norm")
def _layer_norm(cx: EmitContext, x: str, weight: str | None, bias: str | None, *, axis: int, epsilon: float) -> str:
    xt = cx.in_type(0)
    normalized = tuple(xt.shape[axis:])
    affine_fits = all(cx.in_type(i).shape == normalized for i, v in ((1, weight), (2, bias)) if v is not None)
    if affine_fits and (weight is not None or all(isinstance(d, int) for d in normalized)):
        if weight is None:
            weight = cx.const(np.ones(normalized), xt.dtype)
        return cx.op("LayerNormalization", [x, weight, bias], axis=axis, epsilon=float(epsilon))
    # weight/bias that only broadcast to the normalized axes: compose
    y = _normalize(cx, x, list(range(axis, xt.rank)), epsilon, xt.dtype)
    if weight is not None:
        y = cx.op("Mul", [y, weight])
    return y if bias is None else cx.op("Add", [y, bias])


@emitter("group_norm")
def _group_norm(cx: EmitContext, x: str, weight: str, bias: str, *, num_groups: int, epsilon: float) -> str:
    """Normalize x viewed as [N, groups, rest], then scale and shift per channel."""
    xt = cx.in_type(0)
    grouped = cx.op("Reshape", [x, cx.const(np.array([0, num_groups, -1], dtype=np.int64), "int64")])
    y = cx.op("Reshape", [_normalize(cx, grouped, [2], epsilon, xt.dtype), cx.op("Shape", [x])])
    per_channel = cx.const(np.array([-1] + [1] * (xt.rank - 2), dtype=np.int64), "int64")
    y = cx.op("Mul", [y, cx.op("Reshape", [weight, per_channel])])
    return cx.op("Add", [y, cx.op("Reshape", [bias, per_channel])])


@emitter("softmax", "log_softmax")
def _softmax(cx: EmitContext, x: str, *, axis: int) -> str:
    return cx.op("Softmax" if cx.node.op == "softmax" else "LogSoftmax", [x], axis=axis)
