"""Normalizations: BatchNormalization, Instance/Group/Layer/RMS normalization, LpNormalization,
MeanVarianceNormalization, and LRN (decomposed). Where ONNX's reference composes the math differently from the
canonical op (extra outputs, RMS, MVN), the decomposition follows the reference's order of operations."""
from __future__ import annotations

import numpy as np

from sparsecc.ir.graph import TensorType

from ..importer import NodeContext
from .common import Result, broadcast, converter, norm_axis, require_float, reshape, scalar, typeof


@converter("BatchNormalization")
def batch_norm(cx: NodeContext) -> list[Result]:
    require_float(cx)
    if int(cx.attr("training_mode", 0)):
        raise cx.unsupported("training_mode=1 (batch statistics)")
    if cx.rank(0) < 2:
        raise cx.unsupported("BatchNormalization of rank < 2")
    dtypes = {cx.dtype(i) for i in range(5)}
    if len(dtypes) != 1:
        raise cx.unsupported(f"mixed dtypes {sorted(dtypes)}")
    epsilon = _epsilon(cx)
    return [cx.emit("batch_norm", [cx.value(i) for i in range(5)], cx.type(0), epsilon=epsilon)]


@converter("InstanceNormalization")
def instance_norm(cx: NodeContext) -> list[Result]:
    require_float(cx)
    channels = cx.shape(0)[1]
    if not isinstance(channels, int) or cx.rank(0) < 3:
        raise cx.unsupported(f"input shape {list(cx.shape(0))}")
    epsilon = _epsilon(cx)
    return [cx.emit("group_norm", [cx.value(0), cx.value(1), cx.value(2)], cx.type(0), num_groups=channels,
                    epsilon=epsilon)]


@converter("GroupNormalization")
def group_norm(cx: NodeContext) -> list[Result]:
    require_float(cx)
    groups, channels = int(cx.attr("num_groups")), cx.shape(0)[1]
    if not isinstance(channels, int) or channels % groups:
        raise cx.unsupported(f"{channels} channels in {groups} groups")
    if cx.dtype(0) not in ("float32", "float64"):
        raise cx.unsupported(f"stash_type semantics for {cx.dtype(0)}")
    epsilon = _epsilon(cx)
    weights = [cx.value(1), cx.value(2)]
    if cx.opset < 21:  # scale and bias per group: repeat them per channel
        weights = []
        for i in (1, 2):
            k = cx.require_known(i, "per-group scale/bias")
            weights.append(cx.param(np.repeat(k.numeric(), channels // groups)))
    return [cx.emit("group_norm", [cx.value(0), *weights], cx.type(0), num_groups=groups, epsilon=epsilon)]


def _stats(cx: NodeContext, x: str, axes: list[int]) -> tuple[str, str, TensorType]:
    """mean and x - mean over ``axes`` (kept), and the reduced type."""
    t = typeof(cx, x)
    reduced = _reduced(t, axes)
    mean = cx.emit("reduce_mean", [x], reduced, axes=axes, keepdims=True)
    return mean, cx.emit("sub", [x, mean], t), reduced


def _inv_sqrt(cx: NodeContext, v: str, epsilon: float) -> str:
    t = typeof(cx, v)
    shifted = cx.emit("add", [v, scalar(cx, epsilon, t.dtype)], t)
    return cx.emit("reciprocal", [cx.emit("sqrt", [shifted], t)], t)


def _trailing_axes_and_epsilon(cx: NodeContext) -> tuple[list[int], float]:
    """Layer/RMS normalization: stash_type checked; the normalized axes [axis, rank) and epsilon."""
    if cx.dtype(0) not in ("float32", "float64"):
        raise cx.unsupported(f"stash_type semantics for {cx.dtype(0)}")
    if int(cx.attr("stash_type", 1)) != 1:
        raise cx.unsupported(f"stash_type={cx.attr('stash_type')}")
    rank = cx.rank(0)
    return list(range(norm_axis(cx, int(cx.attr("axis", -1)), rank), rank)), _epsilon(cx)


def _epsilon(cx: NodeContext) -> float:
    """The epsilon attribute as the float32 ONNX's reference computes with."""
    return float(np.float32(cx.attr("epsilon", 1e-5)))


def _reduced(t: TensorType, axes: list[int]) -> TensorType:
    """``t`` with ``axes`` reduced to 1 (keepdims)."""
    return TensorType(tuple(1 if i in axes else d for i, d in enumerate(t.shape)), t.dtype)


@converter("LayerNormalization")
def layer_norm(cx: NodeContext) -> list[Result]:
    """Y with the canonical layer_norm; the optional Mean and InvStdDev outputs computed alongside."""
    axes, epsilon = _trailing_axes_and_epsilon(cx)
    y = cx.emit("layer_norm", [cx.value(0), cx.value(1), cx.value(2)], cx.type(0), axis=axes[0], epsilon=epsilon)
    if not (cx.has_output(1) or cx.has_output(2)):
        return [y]
    mean, centered, reduced = _stats(cx, cx.value(0), axes)
    var = cx.emit("reduce_mean", [cx.emit("mul", [centered, centered], cx.type(0))], reduced, axes=axes,
                  keepdims=True)
    return [y, mean, _inv_sqrt(cx, var, epsilon)]


@converter("RMSNormalization")
def rms_norm(cx: NodeContext) -> list[Result]:
    """X / sqrt(mean(X^2) + epsilon) * scale over axes [axis, rank), as ONNX's reference writes it."""
    axes, epsilon = _trailing_axes_and_epsilon(cx)
    x, t = cx.value(0), cx.type(0)
    reduced = _reduced(t, axes)
    ms = cx.emit("reduce_mean", [cx.emit("mul", [x, x], t)], reduced, axes=axes, keepdims=True)
    y = cx.emit("mul", [x, _inv_sqrt(cx, ms, epsilon)], t)
    out = TensorType(broadcast(cx, t.shape, cx.shape(1)), t.dtype)
    return [cx.emit("mul", [y, cx.value(1)], out)]


@converter("LpNormalization")
def lp_norm(cx: NodeContext) -> list[Result]:
    require_float(cx)
    p, axis = int(cx.attr("p", 2)), norm_axis(cx, int(cx.attr("axis", -1)), cx.rank(0))
    if p not in (1, 2):
        raise cx.unsupported(f"p={p}")
    x, t = cx.value(0), cx.type(0)
    reduced = _reduced(t, [axis])
    terms = cx.emit("abs", [x], t) if p == 1 else cx.emit("mul", [x, x], t)
    norm = cx.emit("reduce_sum", [terms], reduced, axes=[axis], keepdims=True)
    if p == 2:
        norm = cx.emit("sqrt", [norm], reduced)
    zero = scalar(cx, 0, t.dtype)
    is_zero = cx.emit("equal", [norm, zero], TensorType(reduced.shape, "bool"))
    return [cx.emit("where", [is_zero, zero, cx.emit("div", [x, norm], t)], t)]  # a zero vector stays zero


@converter("MeanVarianceNormalization")
def mean_variance_norm(cx: NodeContext) -> list[Result]:
    """(x - mean) / (sqrt(mean(x^2) - mean^2) + 1e-9), as ONNX's reference computes it."""
    require_float(cx)
    t = cx.type(0)
    axes = sorted(norm_axis(cx, int(a), t.rank) for a in cx.attr("axes", [0, 2, 3]))
    x = cx.value(0)
    reduced = TensorType(tuple(1 if i in axes else d for i, d in enumerate(t.shape)), t.dtype)
    mean = cx.emit("reduce_mean", [x], reduced, axes=axes, keepdims=True)
    mean_sq = cx.emit("reduce_mean", [cx.emit("mul", [x, x], t)], reduced, axes=axes, keepdims=True)
    var = cx.emit("sub", [mean_sq, cx.emit("mul", [mean, mean], reduced)], reduced)
    std = cx.emit("add", [cx.emit("sqrt", [var], reduced), scalar(cx, 1e-9, t.dtype)], reduced)
    return [cx.emit("div", [cx.emit("sub", [x, mean], t), std], t)]


@converter("LRN")
def lrn(cx: NodeContext) -> list[Result]:
    """x / (bias + alpha/size * sum of x^2 over a channel window)^beta, the window sum as an avg_pool over a
    [N, 1, C, H*W] view (count_include_pad so the divisor is always ``size``)."""
    require_float(cx)
    size = int(cx.attr("size"))
    alpha, beta = float(np.float32(cx.attr("alpha", 1e-4))), float(np.float32(cx.attr("beta", 0.75)))
    bias = float(np.float32(cx.attr("bias", 1.0)))
    shape, dtype = cx.shape(0), cx.dtype(0)
    if cx.rank(0) < 3 or any(isinstance(d, str) for d in shape[1:]):
        raise cx.unsupported(f"input shape {list(shape)} (static C and spatial dims required)")
    x = cx.value(0)
    square = cx.emit("mul", [x, x], cx.type(0))
    view = [shape[0], 1, shape[1], int(np.prod(shape[2:]))]
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    summed = cx.emit("avg_pool", [reshape(cx, square, view)], TensorType(tuple(view), dtype), kernel=[size, 1],
                     strides=[1, 1], pads=[lo, 0, hi, 0], count_include_pad=True)
    mean = reshape(cx, summed, shape)
    scaled = cx.emit("mul", [mean, scalar(cx, alpha, dtype)], cx.type(0))
    denom = cx.emit("add", [scaled, scalar(cx, bias, dtype)], cx.type(0))
    powered = cx.emit("pow", [denom, scalar(cx, beta, dtype)], cx.type(0))
    return [cx.emit("div", [x, powered], cx.type(0))]
