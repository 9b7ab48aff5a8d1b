"""QuantizeLinear / DequantizeLinear (per-tensor or per-axis, no blocks) as canonical ops, the way ONNX's
reference computes them: dequantize in float32 then cast to the scale's type; quantize by x / scale, round half
to even, add the zero point in int32, saturate, cast."""
from __future__ import annotations

import numpy as np

from sparsecc.ir.graph import TensorType

from ..importer import NodeContext
from ..values import ir_dtype
from .common import Result, converter, norm_axis, reshape, typeof

QUANT_TYPES = ("int8", "uint8", "int16", "uint16")


def _per_axis(cx: NodeContext, i: int) -> str:
    """Input ``i`` (a scale or zero point) shaped to broadcast against input 0."""
    if int(cx.attr("block_size", 0)):
        raise cx.unsupported("blocked quantization")
    t, rank = cx.type(i), cx.rank(0)
    if t.rank == 0 or t.shape == (1,):
        return reshape(cx, cx.value(i), [])
    if t.rank != 1:
        raise cx.unsupported(f"scale/zero point of shape {list(t.shape)}")
    axis = norm_axis(cx, int(cx.attr("axis", 1)), rank)
    return reshape(cx, cx.value(i), [t.shape[0] if a == axis else 1 for a in range(rank)])


def _as(cx: NodeContext, x: str, dtype: str) -> str:
    t = typeof(cx, x)
    return x if t.dtype == dtype else cx.emit("cast", [x], TensorType(t.shape, dtype), to=dtype)


@converter("DequantizeLinear")
def dequantize(cx: NodeContext) -> list[Result]:
    if cx.dtype(0) not in QUANT_TYPES + ("int32",) or cx.attr("output_dtype") not in (None, 0):
        raise cx.unsupported(f"dequantizing {cx.dtype(0)}")
    shape = cx.shape(0)
    x = _as(cx, cx.value(0), "float32")
    if cx.has_input(2):
        x = cx.emit("sub", [x, _as(cx, _per_axis(cx, 2), "float32")], TensorType(shape, "float32"))
    y = cx.emit("mul", [x, _as(cx, _per_axis(cx, 1), "float32")], TensorType(shape, "float32"))
    return [_as(cx, y, cx.dtype(1))]


@converter("QuantizeLinear")
def quantize(cx: NodeContext) -> list[Result]:
    if cx.attr("precision") not in (None, 0):
        raise cx.unsupported("precision attribute")
    out = cx.dtype(2) if cx.has_input(2) else ir_dtype(cx.attr("output_dtype") or 2)
    if out not in QUANT_TYPES or not int(cx.attr("saturate", 1)):
        raise cx.unsupported(f"quantizing to {out}")
    if cx.attr("output_dtype") not in (None, 0) and ir_dtype(cx.attr("output_dtype")) != out:
        raise cx.unsupported("output_dtype differs from the zero point's type")
    shape = cx.shape(0)
    scale = _per_axis(cx, 1)
    wide = "float64" if "float64" in (cx.dtype(0), cx.dtype(1)) else "float32"
    q = cx.emit("div", [_as(cx, cx.value(0), wide), _as(cx, scale, wide)], TensorType(shape, wide))
    q = _as(cx, cx.emit("round", [q], TensorType(shape, wide)), "int32")
    if cx.has_input(2):
        q = cx.emit("add", [q, _as(cx, _per_axis(cx, 2), "int32")], TensorType(shape, "int32"))
    info = np.iinfo(out)
    q = cx.emit("clip", [q], TensorType(shape, "int32"), min=int(info.min), max=int(info.max))
    return [_as(cx, q, out)]
