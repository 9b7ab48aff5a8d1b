"""Reductions: Reduce{Sum,Mean,Max,Min,Prod} map 1:1; L1/L2/LogSum/LogSumExp/SumSquare compose them with
elementwise ops; ArgMax/ArgMin. Axes moved from an attribute to an input in opset 13 (ReduceSum) / 18 (others)."""
from __future__ import annotations

import numpy as np

from sparsecc.ir.graph import TensorType

from ..importer import NodeContext
from ..values import known_array, np_dtype
from .common import Result, converter, norm_axes

DIRECT = {"ReduceSum": "reduce_sum", "ReduceMean": "reduce_mean", "ReduceMax": "reduce_max",
          "ReduceMin": "reduce_min", "ReduceProd": "reduce_prod"}
COMPOSED = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


def _axes(cx: NodeContext) -> list[int] | None:
    """Normalized axes, None for all; an empty list means 'no reduction' (noop_with_empty_axes)."""
    attr_until = 13 if cx.op_type == "ReduceSum" else 18
    if cx.opset < attr_until:
        axes = cx.attr("axes")
    else:
        axes = cx.require_known(1, "axes").ints() if cx.has_input(1) else None
    if not axes:
        return [] if cx.attr("noop_with_empty_axes", 0) else None
    return sorted(norm_axes(cx, [int(a) for a in axes], cx.rank(0)))


def _reduce(cx: NodeContext, op: str, x: str, axes: list[int] | None, keepdims: bool) -> str:
    src = cx.imp.graph.types[x]
    every = range(src.rank) if axes is None else axes
    shape = tuple(1 if i in every else d for i, d in enumerate(src.shape) if keepdims or i not in every)
    return cx.emit(op, [x], TensorType(shape, src.dtype), axes=axes, keepdims=keepdims)


def _unary(cx: NodeContext, op: str, x: str) -> str:
    return cx.emit(op, [x], cx.imp.graph.types[x])


EMPTY_SET = {"ReduceMax": -np.inf, "ReduceMin": np.inf, "ReduceSum": 0, "ReduceProd": 1, "ReduceMean": np.nan,
             "ReduceL1": 0, "ReduceL2": 0, "ReduceSumSquare": 0, "ReduceLogSum": -np.inf, "ReduceLogSumExp": -np.inf}
"""What ONNX (opset 18+) defines each reduction over an empty set to give."""


def _empty_reduction(cx: NodeContext, axes: list[int] | None, keepdims: bool) -> Result:
    src = cx.shape(0)
    every = range(len(src)) if axes is None else axes
    shape = [1 if i in every else d for i, d in enumerate(src) if keepdims or i not in every]
    if any(isinstance(d, str) for d in shape):
        raise cx.unsupported(f"reduction of an empty set to the symbolic shape {shape}")
    dtype, value = np_dtype(cx.dtype(0)), EMPTY_SET[cx.op_type]
    if dtype.kind in "iu" and np.isnan(value):
        raise cx.unsupported("mean of an empty set of integers")
    if dtype.kind in "iu" and np.isinf(value):
        value = np.iinfo(dtype).min if value < 0 else np.iinfo(dtype).max
    return known_array(np.full(shape, value, dtype=dtype), cx.dtype(0))


@converter(*DIRECT, *COMPOSED)
def reduce(cx: NodeContext) -> list[Result]:
    axes, keepdims = _axes(cx), bool(cx.attr("keepdims", 1))
    if cx.dtype(0) == "bool":
        raise cx.unsupported("reduction of bool")
    if axes != [] and any(cx.shape(0)[a] == 0 for a in (range(cx.rank(0)) if axes is None else axes)):
        return [_empty_reduction(cx, axes, keepdims)]
    x = cx.value(0)
    if axes == []:  # noop_with_empty_axes: the ops are still applied elementwise
        axes_for, x_is_result = None, True
    else:
        axes_for, x_is_result = axes, False
    op = cx.op_type
    floating = cx.dtype(0).startswith(("float", "bfloat"))
    if op in ("ReduceL2", "ReduceLogSum", "ReduceLogSumExp") and not floating:
        raise cx.unsupported(f"{op} of {cx.dtype(0)}")
    if op in DIRECT:
        return [x if x_is_result else _reduce(cx, DIRECT[op], x, axes_for, keepdims)]
    if op == "ReduceL1":
        x = _unary(cx, "abs", x)
    elif op in ("ReduceL2", "ReduceSumSquare"):
        x = cx.emit("mul", [x, x], cx.imp.graph.types[x])
    elif op == "ReduceLogSumExp":
        x = _unary(cx, "exp", x)
    if not x_is_result:
        x = _reduce(cx, "reduce_sum", x, axes_for, keepdims)
    if op == "ReduceL2":
        x = _unary(cx, "sqrt", x)
    elif op in ("ReduceLogSum", "ReduceLogSumExp"):
        x = _unary(cx, "log", x)
    return [x]


@converter("ArgMax", "ArgMin")
def argreduce(cx: NodeContext) -> list[Result]:
    src = cx.shape(0)
    axis = norm_axes(cx, [int(cx.attr("axis", 0))], len(src))[0]
    keepdims = bool(cx.attr("keepdims", 1))
    shape = tuple(1 if i == axis else d for i, d in enumerate(src) if keepdims or i != axis)
    return [cx.emit("argmax" if cx.op_type == "ArgMax" else "argmin", [cx.value(0)], TensorType(shape, "int64"),
                    axis=axis, keepdims=keepdims, select_last_index=bool(cx.attr("select_last_index", 0)))]
