"""Softmax, LogSoftmax (opset < 13: over a 2-D coercion of the input) and Hardmax."""
from __future__ import annotations

import numpy as np

from sparsecc.ir.graph import TensorType

from .. import symbolic
from ..importer import NodeContext
from .common import Result, converter, norm_axis, require_float, reshape, typeof


@converter("Softmax", "LogSoftmax")
def softmax(cx: NodeContext) -> list[Result]:
    require_float(cx)
    rank = cx.rank(0)
    if cx.opset >= 13:
        return [_softmax(cx, cx.value(0), norm_axis(cx, int(cx.attr("axis", -1)), rank))]
    # opset < 13: the input is coerced to 2-D [prod(:axis), prod(axis:)] and normalized along axis 1
    axis = norm_axis(cx, int(cx.attr("axis", 1)), rank)
    shape = cx.shape(0)
    flat = reshape(cx, cx.value(0), [symbolic.product(shape[:axis]), symbolic.product(shape[axis:])])
    return [reshape(cx, _softmax(cx, flat, 1), shape)]


def _softmax(cx: NodeContext, x: str, axis: int) -> str:
    log = cx.op_type == "LogSoftmax"
    if typeof(cx, x).dtype in ("float16", "bfloat16"):
        return reference_softmax(cx, x, axis, log)
    return cx.emit("log_softmax" if log else "softmax", [x], typeof(cx, x), axis=axis)


def reference_softmax(cx: NodeContext, x: str, axis: int, log: bool) -> str:
    """(log-)softmax computed as ONNX's reference does: max, x - max and exp, the sum, the division (then the
    log) each rounded to the input's type; a half-precision sum accumulates in float32 and is rounded once (as
    numpy does). The canonical softmax rounds once at the end, which for half types differs by an ulp."""
    t = typeof(cx, x)
    reduced = TensorType(tuple(1 if i == axis else d for i, d in enumerate(t.shape)), t.dtype)
    peak = cx.emit("reduce_max", [x], reduced, axes=[axis], keepdims=True)
    e = cx.emit("exp", [cx.emit("sub", [x, peak], t)], t)
    wide = "float32" if t.dtype in ("float16", "bfloat16") else t.dtype
    summand = e if wide == t.dtype else cx.emit("cast", [e], TensorType(t.shape, wide), to=wide)
    total = cx.emit("reduce_sum", [summand], TensorType(reduced.shape, wide), axes=[axis], keepdims=True)
    if wide != t.dtype:
        total = cx.emit("cast", [total], reduced, to=t.dtype)
    y = cx.emit("div", [e, total], t)
    return cx.emit("log", [y], t) if log else y


@converter("Hardmax")
def hardmax(cx: NodeContext) -> list[Result]:
    """1 at the first maximum along ``axis``, 0 elsewhere: argmax compared with an index ramp."""
    require_float(cx)
    if cx.opset < 13:
        raise cx.unsupported("Hardmax before opset 13 (2-D coercion)")
    t = cx.type(0)
    axis = norm_axis(cx, int(cx.attr("axis", -1)), t.rank)
    n = t.shape[axis]
    if isinstance(n, str):
        raise cx.unsupported(f"Hardmax along symbolic dim '{n}'")
    reduced = tuple(1 if i == axis else d for i, d in enumerate(t.shape))
    best = cx.emit("argmax", [cx.value(0)], TensorType(reduced, "int64"), axis=axis, keepdims=True)
    ramp = cx.param(np.arange(n, dtype=np.int64).reshape([n if i == axis else 1 for i in range(t.rank)]))
    hot = cx.emit("equal", [ramp, best], TensorType(t.shape, "bool"))
    return [cx.emit("cast", [hot], t, to=t.dtype)]
