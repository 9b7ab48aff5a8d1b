"""Data movement and shape ONNX ops: Shape/Size/Constant*, Cast, Reshape/Flatten/(Un)Squeeze, Transpose, Concat,
Split, Slice, Gather*, Expand, Tile, Pad, Range, CumSum, Depth/SpaceToDepth.

Shape tensors are tracked as known values (see ``values.Known``), so chains such as
``Reshape(x, Concat(Shape(x)[0], 128, 12, 32))`` resolve to a canonical ``reshape`` with ``["batch", 128, 12, 32]``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sparsecc.ir.graph import Dim, TensorType

from .. import symbolic
from ..importer import NodeContext
from ..values import Known, ir_dtype, known_array, known_from_tensor, np_dtype, onnx_type_name
from .common import KNOWN_LIMIT, Result, broadcast, converter, known_inputs, norm_axes, norm_axis, reshape

INT64_BIG = 1 << 62  # ends at or beyond this mean "to the end" (exporters write INT64_MAX / INT32_MAX)


# ---- constants and shapes -------------------------------------------------------------------------------
@converter("Constant")
def constant(cx: NodeContext) -> list[Result]:
    attrs = cx.attrs
    if "value" in attrs:
        k = known_from_tensor(cx.node.attribute[0].t)
        if k is None:
            raise cx.unsupported(f"a constant of element type {onnx_type_name(cx.node.attribute[0].t.data_type)}")
        return [k]
    for key, dtype in (("value_float", "float32"), ("value_floats", "float32"), ("value_int", "int64"),
                       ("value_ints", "int64")):
        if key in attrs:
            return [known_array(np.asarray(attrs[key], dtype=np_dtype(dtype)), dtype)]
    raise cx.unsupported(f"constant attribute {sorted(attrs)} (sparse or string constants are not supported)")


@converter("Shape")
def shape(cx: NodeContext) -> list[Result]:
    dims = list(cx.shape(0))
    start, end = int(cx.attr("start", 0)), cx.attr("end")
    dims = dims[slice(start, None if end is None else int(end))]
    return [known_array(np.asarray(dims, dtype=object).reshape(len(dims)), "int64")]


@converter("Size")
def size(cx: NodeContext) -> list[Result]:
    return [known_array(np.asarray(symbolic.product(cx.shape(0)), dtype=object), "int64")]


@converter("ConstantOfShape")
def constant_of_shape(cx: NodeContext) -> list[Result]:
    dims = cx.require_known(0, "the shape").ints()
    value, dtype = np.zeros(1, np.float32), "float32"
    if "value" in cx.attrs:
        k = known_from_tensor(cx.node.attribute[0].t)
        if k is None:
            raise cx.unsupported("a value of an unsupported element type")
        value, dtype = k.numeric(), k.dtype
    if all(isinstance(d, int) for d in dims) and int(np.prod(dims)) <= KNOWN_LIMIT:
        return [known_array(np.full(dims, value.reshape(-1)[0], dtype=value.dtype), dtype)]
    return [cx.emit("expand", [cx.param(value.reshape(()))], TensorType(tuple(dims), dtype), shape=dims)]


@converter("Cast", "CastLike")
def cast(cx: NodeContext) -> list[Result]:
    if cx.op_type == "Cast":
        to = ir_dtype(cx.attr("to"))
        if to is None:
            raise cx.unsupported(f"cast to {onnx_type_name(cx.attr('to'))}")
    else:
        to = cx.dtype(1)
    k = cx.known(0)
    if k is not None and k.data.size <= KNOWN_LIMIT and not k.dtype.startswith(("float", "bfloat")):
        if k.symbolic:
            if to.startswith(("int", "uint")):
                return [Known(k.data, to)]
        else:
            return [known_array(k.numeric().astype(np_dtype(to)), to)]
    if cx.dtype(0) == to:
        return [cx.value(0)]
    return [cx.emit("cast", [cx.value(0)], TensorType(cx.shape(0), to), to=to)]


# ---- reshapes ----------------------------------------------------------------------------------------------
def reshaped(cx: NodeContext, dims: Sequence[Dim]) -> Result:
    """Input 0 reshaped to resolved ``dims`` (known values stay known)."""
    k = cx.known(0)
    if k is not None and k.data.size <= KNOWN_LIMIT and all(isinstance(d, int) for d in dims):
        return Known(k.data.reshape(dims), k.dtype)
    return reshape(cx, cx.value(0), dims)


@converter("Reshape")
def reshape_(cx: NodeContext) -> list[Result]:
    target = cx.require_known(1, "the target shape").ints()
    src = list(cx.shape(0))
    allowzero = bool(cx.attr("allowzero", 0))
    dims: list[Dim] = [src[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
    if dims.count(-1) > 1:
        raise cx.unsupported(f"shape {target} has more than one -1")
    if -1 in dims:
        rest = symbolic.product(d for d in dims if d != -1)
        inferred = symbolic.div(symbolic.product(src), rest)
        if inferred is None:
            raise cx.unsupported(f"cannot infer the -1 of {target} for an input of shape {src}")
        dims[dims.index(-1)] = inferred
    return [reshaped(cx, dims)]


@converter("Flatten")
def flatten(cx: NodeContext) -> list[Result]:
    src = cx.shape(0)
    axis = norm_axis(cx, int(cx.attr("axis", 1)), len(src) + 1)
    return [reshaped(cx, [symbolic.product(src[:axis]), symbolic.product(src[axis:])])]


def _axes_input(cx: NodeContext, attr_until: int, what: str = "axes") -> list[int] | None:
    """Axes from the attribute (opset < attr_until) or input 1."""
    if cx.opset < attr_until:
        axes = cx.attr("axes")
        return None if axes is None else [int(a) for a in axes]
    if not cx.has_input(1):
        return None
    return [int(a) for a in cx.require_known(1, what).ints()]


@converter("Squeeze")
def squeeze(cx: NodeContext) -> list[Result]:
    src = cx.shape(0)
    axes = _axes_input(cx, 13)
    if axes is None:
        if any(isinstance(d, str) for d in src):
            raise cx.unsupported(f"squeeze without axes of a shape with symbolic dims {list(src)}")
        axes = [i for i, d in enumerate(src) if d == 1]
    axes = norm_axes(cx, axes, len(src))
    if any(src[a] != 1 for a in axes):
        raise cx.unsupported(f"squeezing axes {axes} of shape {list(src)}: not all of size 1")
    return [reshaped(cx, [d for i, d in enumerate(src) if i not in axes])]


@converter("Unsqueeze")
def unsqueeze(cx: NodeContext) -> list[Result]:
    src = list(cx.shape(0))
    axes = _axes_input(cx, 13)
    if axes is None:
        raise cx.unsupported("Unsqueeze needs axes")
    axes = sorted(norm_axes(cx, axes, len(src) + len(axes)))
    dims = list(src)
    for a in axes:
        dims.insert(a, 1)
    return [reshaped(cx, dims)]


@converter("Transpose")
def transpose_(cx: NodeContext) -> list[Result]:
    rank = cx.rank(0)
    perm = [int(p) for p in cx.attr("perm", list(range(rank))[::-1])]
    perm = norm_axes(cx, perm, rank)
    if sorted(perm) != list(range(rank)):
        raise cx.unsupported(f"perm {perm} is not a permutation of rank {rank}")
    k = cx.known(0)
    if k is not None and k.data.size <= KNOWN_LIMIT:
        return [Known(np.transpose(k.data, perm), k.dtype)]
    src = cx.shape(0)
    return [cx.emit("transpose", [cx.value(0)], TensorType(tuple(src[p] for p in perm), cx.dtype(0)), perm=perm)]


# ---- joining and splitting ---------------------------------------------------------------------------------
@converter("Concat")
def concat(cx: NodeContext) -> list[Result]:
    present = [i for i in range(cx.num_inputs) if cx.has_input(i)]
    rank = cx.rank(present[0])
    axis = norm_axis(cx, int(cx.attr("axis")), rank)
    ks = known_inputs(cx)
    if ks is not None:
        return [known_array(np.concatenate([k.data.astype(object) if k.symbolic else k.data for k in ks], axis),
                            cx.dtype(present[0]))]
    shapes = [cx.shape(i) for i in present]
    if any(len(s) != rank for s in shapes):
        raise cx.unsupported(f"inputs of different ranks {[list(s) for s in shapes]}")
    for ax in range(rank):
        if ax != axis and len({s[ax] for s in shapes}) > 1:
            raise cx.unsupported(f"inputs {[list(s) for s in shapes]} differ outside axis {axis}")
    # inputs empty along the axis contribute nothing
    present = [i for i in present if cx.shape(i)[axis] != 0] or present[:1]
    out = list(shapes[0])
    total: Dim = 0
    for i in present:
        total = symbolic.add(total, cx.shape(i)[axis])
    out[axis] = total
    if len(present) == 1:
        return [cx.value(present[0])]
    return [cx.emit("concat", [cx.value(i) for i in present], TensorType(tuple(out), cx.dtype(present[0])),
                    axis=axis)]


@converter("Split")
def split(cx: NodeContext) -> list[Result]:
    src = cx.shape(0)
    axis = norm_axis(cx, int(cx.attr("axis", 0)), len(src))
    n = src[axis]
    if cx.opset < 13:
        sizes = cx.attr("split")
    else:
        sizes = cx.require_known(1, "the split sizes").ints() if cx.has_input(1) else None
    if sizes is None:
        if isinstance(n, str):
            raise cx.unsupported(f"splitting symbolic dim '{n}' into equal parts")
        parts = int(cx.attr("num_outputs", cx.num_outputs))
        chunk = -(-n // parts)
        sizes = [min(chunk, n - i * chunk) for i in range(parts)]
        if cx.attr("num_outputs") is None and n % parts:
            raise cx.unsupported(f"dim {n} does not split evenly into {parts} outputs")
    sizes = [int(s) for s in sizes]
    if any(s < 0 for s in sizes) or (isinstance(n, int) and sum(sizes) != n) or isinstance(n, str):
        raise cx.unsupported(f"split sizes {sizes} of dim {n}")
    if len(sizes) != cx.num_outputs:
        raise cx.unsupported(f"{len(sizes)} split sizes for {cx.num_outputs} outputs")
    outs = [TensorType(tuple(s if i == axis else d for i, d in enumerate(src)), cx.dtype(0)) for s in sizes]
    if len(sizes) == 1:
        return [cx.value(0)]
    return cx.emit_multi("split", [cx.value(0)], outs, axis=axis, sizes=sizes)


@converter("Slice")
def slice_(cx: NodeContext) -> list[Result]:
    src = cx.shape(0)
    starts = [int(v) for v in cx.require_known(1, "starts").ints()]
    ends = [int(v) for v in cx.require_known(2, "ends").ints()]
    axes = [int(v) for v in cx.require_known(3, "axes").ints()] if cx.has_input(3) else list(range(len(starts)))
    steps = [int(v) for v in cx.require_known(4, "steps").ints()] if cx.has_input(4) else [1] * len(starts)
    axes = norm_axes(cx, axes, len(src))
    if 0 in steps:
        raise cx.unsupported("slice step 0")
    out = list(src)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        out[axis] = _sliced_dim(cx, src[axis], start, end, step)
    k = cx.known(0)
    if k is not None and k.data.size <= KNOWN_LIMIT:
        index = [slice(None)] * len(src)
        for start, end, axis, step in zip(starts, ends, axes, steps):
            index[axis] = slice(start, end, step)
        return [Known(k.data[tuple(index)], k.dtype)]
    if tuple(out) == tuple(src) and all(s == 1 for s in steps):
        return [cx.value(0)]
    return [cx.emit("slice", [cx.value(0)], TensorType(tuple(out), cx.dtype(0)), starts=starts, ends=ends,
                    axes=axes, steps=steps)]


def _sliced_dim(cx: NodeContext, n: Dim, start: int, end: int, step: int) -> Dim:
    if isinstance(n, int):
        return len(range(*slice(start, end, step).indices(n)))
    if step == 1 and start >= 0 and end >= INT64_BIG >> 32:
        return symbolic.sub(n, start)
    raise cx.unsupported(f"slice [{start}:{end}:{step}] of symbolic dim '{n}' has a data-dependent length")


# ---- indexing ----------------------------------------------------------------------------------------------
@converter("Gather")
def gather(cx: NodeContext) -> list[Result]:
    src = cx.shape(0)
    axis = norm_axis(cx, int(cx.attr("axis", 0)), len(src))
    idx = cx.shape(1)
    ks = known_inputs(cx)
    if ks is not None:
        data, indices = ks[0].data, ks[1].numeric().astype(np.int64)
        return [Known(np.take(data, indices, axis=axis), ks[0].dtype)]
    if cx.dtype(1) not in ("int32", "int64"):
        raise cx.unsupported(f"indices of {cx.dtype(1)}")
    out = tuple(src[:axis]) + tuple(idx) + tuple(src[axis + 1:])
    return [cx.emit("gather", [cx.value(0), cx.value(1)], TensorType(out, cx.dtype(0)), axis=axis)]


@converter("GatherElements")
def gather_elements(cx: NodeContext) -> list[Result]:
    axis = norm_axis(cx, int(cx.attr("axis", 0)), cx.rank(0))
    return [cx.emit("gather_elements", [cx.value(0), cx.value(1)], TensorType(cx.shape(1), cx.dtype(0)), axis=axis)]


@converter("Expand")
def expand(cx: NodeContext) -> list[Result]:
    target = cx.require_known(1, "the target shape").ints()
    out = broadcast(cx, cx.shape(0), target)
    if out == tuple(cx.shape(0)):
        return [cx.known(0) or cx.value(0)]
    k = cx.known(0)
    if k is not None and all(isinstance(d, int) for d in out) and int(np.prod(out)) <= KNOWN_LIMIT:
        return [Known(np.broadcast_to(k.data, out).copy(), k.dtype)]
    return [cx.emit("expand", [cx.value(0)], TensorType(out, cx.dtype(0)), shape=list(out))]


@converter("Tile")
def tile(cx: NodeContext) -> list[Result]:
    repeats = [int(r) for r in cx.require_known(1, "repeats").ints()]
    if len(repeats) != cx.rank(0) or any(r < 0 for r in repeats):
        raise cx.unsupported(f"repeats {repeats} for rank {cx.rank(0)}")
    out = tuple(symbolic.mul(d, r) for d, r in zip(cx.shape(0), repeats))
    return [cx.emit("tile", [cx.value(0)], TensorType(out, cx.dtype(0)), repeats=repeats)]


@converter("Pad")
def pad(cx: NodeContext) -> list[Result]:
    mode = cx.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise cx.unsupported(f"mode={mode!r}")
    rank = cx.rank(0)
    pads = [int(p) for p in cx.require_known(1, "pads").ints()]
    axes = ([int(a) for a in cx.require_known(3, "axes").ints()] if cx.has_input(3) else list(range(rank)))
    axes = norm_axes(cx, axes, rank)
    if len(pads) != 2 * len(axes):
        raise cx.unsupported(f"{len(pads)} pads for {len(axes)} axes")
    full = [0] * (2 * rank)
    for j, a in enumerate(axes):
        full[a], full[rank + a] = pads[j], pads[len(axes) + j]
    value = 0.0
    if cx.has_input(2):
        v = cx.require_known(2, "the constant value").numeric().reshape(-1)
        value = v[0].item() if v.size else 0.0
    if mode != "constant" and any(p < 0 for p in full):
        raise cx.unsupported(f"negative pads in mode {mode!r}")
    out = tuple(symbolic.add(symbolic.add(d, full[i]), full[rank + i]) for i, d in enumerate(cx.shape(0)))
    if mode == "reflect" and any(isinstance(d, int) and (full[i] >= d or full[rank + i] >= d)
                                 for i, d in enumerate(cx.shape(0))):
        raise cx.unsupported("reflect pads as wide as the dim")
    return [cx.emit("pad", [cx.value(0)], TensorType(out, cx.dtype(0)), pads=full, mode=mode, value=value)]


@converter("Range")
def range_(cx: NodeContext) -> list[Result]:
    ks = [cx.known(i) for i in range(3)]
    if any(k is None or k.symbolic for k in ks):
        raise cx.unsupported("Range with run-time (or symbolic) bounds has a data-dependent output length")
    start, limit, delta = (k.numeric().reshape(-1)[0] for k in ks)
    if delta == 0:
        raise cx.unsupported("Range with delta 0")
    n = max(int(np.ceil((limit - start) / delta)), 0)
    dtype = cx.dtype(0)
    data = (start + np.arange(n, dtype=np_dtype(dtype)) * delta).astype(np_dtype(dtype))
    return [known_array(data, dtype) if n <= KNOWN_LIMIT else cx.param(data)]


@converter("Trilu")
def trilu(cx: NodeContext) -> list[Result]:
    """where(mask, x, 0) with the triangle as a constant [rows, cols] mask."""
    rows, cols = cx.shape(0)[-2:]
    if isinstance(rows, str) or isinstance(cols, str):
        raise cx.unsupported("Trilu over symbolic matrix dims")
    k = int(cx.require_known(1, "k").ints()[0]) if cx.has_input(1) else 0
    upper = bool(cx.attr("upper", 1))
    mask = np.triu(np.ones((rows, cols), bool), k) if upper else np.tril(np.ones((rows, cols), bool), k)
    zero = cx.param(np.zeros((), np_dtype(cx.dtype(0))))
    return [cx.emit("where", [cx.param(mask), cx.value(0), zero], cx.type(0))]


@converter("OneHot")
def one_hot(cx: NodeContext) -> list[Result]:
    """(iota == index) * (on - off) + off, as ONNX's reference computes it; negative indices count from depth."""
    depth_k = cx.require_known(1, "depth").numeric().reshape(-1)
    values = cx.require_known(2, "values").numeric().reshape(-1)
    depth = int(depth_k[0])
    if depth_k[0] != depth or depth < 0:
        raise cx.unsupported(f"depth {depth_k[0]}")
    it, vdtype = cx.type(0), cx.dtype(2)
    rank = it.rank
    axis = norm_axis(cx, int(cx.attr("axis", -1)), rank + 1)
    idx = cx.value(0)
    negative = cx.emit("less", [idx, cx.param(np.zeros((), np_dtype(it.dtype)))], TensorType(it.shape, "bool"))
    shifted = cx.emit("add", [idx, cx.param(np.array(depth, np_dtype(it.dtype)))], it)
    idx = reshape(cx, cx.emit("where", [negative, shifted, idx], it), [*it.shape[:axis], 1, *it.shape[axis:]])
    iota = np.arange(depth, dtype=np_dtype(it.dtype)).reshape([1] * axis + [depth] + [1] * (rank - axis))
    out_shape = (*it.shape[:axis], depth, *it.shape[axis:])
    hot = cx.emit("equal", [cx.param(iota), idx], TensorType(out_shape, "bool"))
    hot = cx.emit("cast", [hot], TensorType(out_shape, vdtype), to=vdtype)
    off, on = values[0], values[1]
    scaled = cx.emit("mul", [hot, cx.param(np.asarray(on - off))], TensorType(out_shape, vdtype))
    return [cx.emit("add", [scaled, cx.param(np.asarray(off))], TensorType(out_shape, vdtype))]


@converter("EyeLike")
def eye_like(cx: NodeContext) -> list[Result]:
    shape = cx.shape(0)
    if len(shape) != 2 or any(isinstance(d, str) for d in shape):
        raise cx.unsupported(f"input shape {list(shape)} (static 2-D required)")
    dtype = ir_dtype(cx.attr("dtype")) if cx.attr("dtype") is not None else cx.dtype(0)
    if dtype is None:
        raise cx.unsupported(f"dtype {cx.attr('dtype')}")
    return [known_array(np.eye(*shape, k=int(cx.attr("k", 0)), dtype=np_dtype(dtype)), dtype)]


@converter("CumSum")
def cumsum(cx: NodeContext) -> list[Result]:
    axis = norm_axis(cx, int(cx.require_known(1, "axis").ints()[0]), cx.rank(0))
    return [cx.emit("cumsum", [cx.value(0)], cx.type(0), axis=axis, exclusive=bool(cx.attr("exclusive", 0)),
                    reverse=bool(cx.attr("reverse", 0)))]


@converter("DepthToSpace", "SpaceToDepth")
def depth_space(cx: NodeContext) -> list[Result]:
    if cx.rank(0) != 4:
        raise cx.unsupported(f"rank {cx.rank(0)} input (4-D NCHW required)")
    b = int(cx.attr("blocksize"))
    n, c, h, w = cx.shape(0)
    x = cx.value(0)
    if cx.op_type == "DepthToSpace":
        cb = symbolic.div(c, b * b)
        if cb is None:
            raise cx.unsupported(f"channels {c} not divisible by blocksize^2")
        crd = cx.attr("mode", "DCR") == "CRD"
        view = [n, cb, b, b, h, w] if crd else [n, b, b, cb, h, w]
        perm = [0, 1, 4, 2, 5, 3] if crd else [0, 3, 4, 1, 5, 2]
        final = [n, cb, symbolic.mul(h, b), symbolic.mul(w, b)]
    else:
        hb, wb = symbolic.div(h, b), symbolic.div(w, b)
        if hb is None or wb is None:
            raise cx.unsupported(f"spatial dims {h}x{w} not divisible by blocksize")
        view, perm = [n, c, hb, b, wb, b], [0, 3, 5, 1, 2, 4]
        final = [n, symbolic.mul(c, b * b), hb, wb]
    v = reshape(cx, x, view)
    t = cx.emit("transpose", [v], TensorType(tuple(view[p] for p in perm), cx.dtype(0)), perm=perm)
    return [reshape(cx, t, final)]

