"""Indexing and data movement: gather, slice, concat, split, reshape, transpose, expand, tile, pad, resize.

Shapes in attributes are fully resolved IR dims; symbolic ones become run-time shape tensors (``cx.shape_tensor``).
"""
from __future__ import annotations

import numpy as np

from sparsecc.interpreter.torch_ops import RESIZE_MODES
from sparsecc.ir.graph import Dim

from ..context import EmitContext
from .registry import emitter


def _int64s(cx: EmitContext, values: list[int]) -> str:
    return cx.const(np.array(values, dtype=np.int64), "int64")


@emitter("gather")
def _gather(cx: EmitContext, data: str, indices: str, *, axis: int) -> str:
    return cx.op("Gather", [data, indices], axis=axis)


@emitter("gather_elements")
def _gather_elements(cx: EmitContext, data: str, indices: str, *, axis: int) -> str:
    return cx.op("GatherElements", [data, indices], axis=axis)


@emitter("slice")
def _slice(cx: EmitContext, x: str, *, starts: list[int], ends: list[int], axes: list[int], steps: list[int]) -> str:
    """ONNX Slice clamps like Python slicing; an axis given twice is sliced twice, in order, like the reference."""
    groups = [list(range(len(axes)))] if len(set(axes)) == len(axes) else [[i] for i in range(len(axes))]
    for g in groups:
        x = cx.op("Slice", [x] + [_int64s(cx, [attr[i] for i in g]) for attr in (starts, ends, axes, steps)])
    return x


@emitter("concat")
def _concat(cx: EmitContext, *inputs: str, axis: int) -> str:
    return cx.op("Concat", list(inputs), axis=axis)


@emitter("split")
def _split(cx: EmitContext, x: str, *, axis: int, sizes: list[int]) -> list[str] | str:
    if len(sizes) == 1:
        return cx.op("Identity", [x])
    return cx.op("Split", [x, _int64s(cx, list(sizes))], outputs=len(sizes), axis=axis)


@emitter("reshape")
def _reshape(cx: EmitContext, x: str, *, shape: list[Dim]) -> str:
    return cx.op("Reshape", [x, cx.shape_tensor(shape)], allowzero=1)  # a 0 in a resolved shape is a real 0


@emitter("transpose")
def _transpose(cx: EmitContext, x: str, *, perm: list[int]) -> str:
    return cx.op("Transpose", [x], perm=list(perm))


@emitter("expand")
def _expand(cx: EmitContext, x: str, *, shape: list[Dim]) -> str:
    return cx.op("Expand", [x, cx.shape_tensor(shape)])


@emitter("tile")
def _tile(cx: EmitContext, x: str, *, repeats: list[int]) -> str:
    extra = len(repeats) - cx.in_type(0).rank  # torch's repeat prepends axes of size 1 first
    if extra > 0:
        x = cx.op("Unsqueeze", [x, _int64s(cx, list(range(extra)))])
    return cx.op("Tile", [x, _int64s(cx, list(repeats))])


@emitter("pad")
def _pad(cx: EmitContext, x: str, *, pads: list[int], mode: str, value: float) -> str:
    if mode not in ("constant", "reflect", "edge"):
        raise cx.unsupported(f"mode={mode!r} (expected constant, reflect or edge)")
    fill = cx.const(value, cx.in_type(0).dtype) if mode == "constant" else None
    return cx.op("Pad", [x, _int64s(cx, list(pads)), fill], mode=mode)


def _axis_taps(size: int, out: int, mode: str, ctm: str) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(source indices, weights) whose weighted sum resamples one axis as torch's interpolate does, coordinates in
    float32 like ``aten/src/ATen/native/UpSample.h``; weights ``None`` for nearest."""
    f32, i = np.float32, np.arange(out).astype(np.float32)
    scale = f32(size) / f32(out)
    if mode == "nearest":  # asymmetric: floor(i * scale); half_pixel (torch's nearest-exact): floor((i + .5) * scale)
        src = np.floor(scale * (i + f32(0.5 if ctm == "half_pixel" else 0)))
        return [(np.minimum(src.astype(np.int64), size - 1), None)]
    if ctm == "align_corners":
        real = f32((size - 1) / (out - 1) if out > 1 else 0) * i
    else:
        real = np.maximum(scale * (i + f32(0.5)) - f32(0.5), f32(0))
    i0 = np.minimum(np.floor(real).astype(np.int64), size - 1)
    lambda1 = np.clip(real - i0.astype(f32), 0, 1).astype(f32)
    return [(i0, f32(1) - lambda1), (i0 + (i0 < size - 1), lambda1)]


@emitter("resize")
def _resize(cx: EmitContext, x: str, *, sizes: list[Dim], mode: str, coordinate_transformation_mode: str,
            nearest_mode: str) -> str:
    """Gathers source rows (and blends two, for linear) one spatial axis at a time, last axis first: the same
    indices, weights and order of operations as torch's CPU kernel, so results match it to the last bits
    (ORT's Resize rounds its coordinates differently)."""
    key = (mode, coordinate_transformation_mode, nearest_mode if mode == "nearest" else "")
    if key not in RESIZE_MODES:
        raise cx.unsupported(f"mode={mode!r}, coordinate_transformation_mode={coordinate_transformation_mode!r}, "
                             f"nearest_mode={nearest_mode!r} (supported: {RESIZE_MODES})")
    xt = cx.in_type(0)
    spatial = list(xt.shape[2:])
    if not all(isinstance(d, int) for d in spatial + list(sizes)):
        raise cx.unsupported("resize with symbolic spatial dims or sizes")
    for axis in reversed(range(2, xt.rank)):
        size, out = spatial[axis - 2], sizes[axis - 2]
        if size == out:
            continue  # torch copies an axis whose size does not change
        trailing = [1] * (xt.rank - axis - 1)
        terms = []
        for index, weight in _axis_taps(size, out, mode, coordinate_transformation_mode):
            tap = cx.op("Gather", [x, _int64s(cx, list(index))], axis=axis)
            terms.append(tap if weight is None else
                         cx.op("Mul", [tap, cx.const(weight.reshape([out] + trailing), xt.dtype)]))
        x = terms[0] if len(terms) == 1 else cx.op("Add", terms)
    return x
