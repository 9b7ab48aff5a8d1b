"""Reductions (sum/mean/max/min/prod, argmax/argmin, cumsum) and linear algebra (matmul, linear, einsum)."""
from __future__ import annotations

import numpy as np

from ..context import FLOATS, EmitContext
from .registry import emitter

_REDUCE = {"reduce_sum": "ReduceSum", "reduce_mean": "ReduceMean", "reduce_max": "ReduceMax",
           "reduce_min": "ReduceMin", "reduce_prod": "ReduceProd"}


@emitter(*_REDUCE)
def _reduce(cx: EmitContext, x: str, *, axes: list[int] | None, keepdims: bool) -> str:
    rank = cx.in_type(0).rank
    if axes is None or (not axes and cx.node.op != "reduce_prod"):
        axes = list(range(rank))  # torch reduces every axis for dim=[] too, except prod, which loops over them
    if rank == 0 or not axes:
        return x
    op, dtype = _REDUCE[cx.node.op], cx.in_type(0).dtype
    axes_t = cx.const(np.array(axes, dtype=np.int64), "int64")
    y = cx.op(op, [x, axes_t], keepdims=int(keepdims))
    if op not in ("ReduceMax", "ReduceMin") or dtype not in FLOATS:
        return y
    # torch's amax/amin propagate NaN; ORT's skip it
    any_nan = cx.op("ReduceMax", [cx.cast(cx.op("IsNaN", [x]), "bool", dtype), axes_t], keepdims=int(keepdims))
    return cx.op("Where", [cx.cast(any_nan, dtype, "bool"), cx.const(np.nan, dtype), y])


@emitter("argmax", "argmin")
def _arg(cx: EmitContext, x: str, *, axis: int, keepdims: bool, select_last_index: bool) -> str:
    return cx.op("ArgMax" if cx.node.op == "argmax" else "ArgMin", [x], axis=axis, keepdims=int(keepdims),
                 select_last_index=int(select_last_index))


@emitter("cumsum")
def _cumsum(cx: EmitContext, x: str, *, axis: int, exclusive: bool, reverse: bool) -> str:
    return cx.op("CumSum", [x, cx.const(np.int64(axis), "int64")], exclusive=int(exclusive), reverse=int(reverse))


@emitter("matmul")
def _matmul(cx: EmitContext, a: str, b: str) -> str:
    return cx.op("MatMul", [a, b])


@emitter("linear")
def _linear(cx: EmitContext, x: str, weight: str, bias: str | None) -> str:
    """x @ weight^T + bias: ONNX Gemm for a 2-D x, else MatMul with the transposed weight."""
    if cx.in_type(0).rank == 2:
        return cx.op("Gemm", [x, weight, bias], transB=1)
    y = cx.op("MatMul", [x, cx.op("Transpose", [weight], perm=[1, 0])])
    return y if bias is None else cx.op("Add", [y, bias])


@emitter("einsum")
def _einsum(cx: EmitContext, *operands: str, equation: str) -> str:
    return cx.op("Einsum", list(operands), equation=equation)
