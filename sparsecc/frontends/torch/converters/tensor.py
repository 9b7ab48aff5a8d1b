"""Data movement: views and reshapes, permutes, slicing and indexing, cat/split, expand, padding, and
tensor creation with run-time sizes (creation with static sizes folds to a constant at import)."""
from __future__ import annotations

from typing import Any


from sparsecc.ir.graph import TensorType

from ..importer import Call, Const, Tensor
from . import converter

INT64_MAX = 2 ** 63 - 1


@converter("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten.unsqueeze.default",
           "aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default", "aten.flatten.using_ints",
           "aten.view_copy.default")
def _reshape(call: Call) -> str:
    """Every reshaping view becomes ``reshape`` to the traced (fully resolved) output shape."""
    x, out = call.ir(call["self"]), call.out_type()
    if call.imp.graph.types[x].shape == out.shape:
        return x
    return call.emit("reshape", [x], out, shape=list(out.shape))


@converter("aten.permute.default")
def _permute(call: Call) -> str:
    x = call["self"]
    perm = [call.axis(d, call.rank(x)) for d in call["dims"]]
    return call.emit("transpose", [call.ir(x)], call.out_type(), perm=perm)


@converter("aten.transpose.int")
def _transpose(call: Call) -> str:
    x = call["self"]
    rank = call.rank(x)
    perm = list(range(rank))
    a, b = call.axis(call["dim0"], rank), call.axis(call["dim1"], rank)
    perm[a], perm[b] = perm[b], perm[a]
    return call.emit("transpose", [call.ir(x)], call.out_type(), perm=perm)


@converter("aten.t.default")
def _t(call: Call) -> str:
    x = call["self"]
    if call.rank(x) < 2:
        return call.ir(x)
    return call.emit("transpose", [call.ir(x)], call.out_type(), perm=[1, 0])


@converter("aten.expand.default")
def _expand(call: Call) -> str:
    out = call.out_type()
    return call.emit("expand", [call.ir(call["self"])], out, shape=list(out.shape))


def _bound(call: Call, value: Any, size: Any, default: int) -> int:
    """A slice bound as an int: ``None`` -> default; a symbolic bound equal to the axis size -> the end."""
    if value is None:
        return default
    if isinstance(value, str):
        if value == size:
            return INT64_MAX
        raise call.unsupported(f"slice bound {value} depends on a symbolic size")
    return int(value)


@converter("aten.slice.Tensor")
def _slice(call: Call) -> str:
    x = call["self"]
    t = call.type(x)
    axis = call.axis(call["dim"], t.rank)
    step = int(call["step"])
    if step <= 0:
        raise call.unsupported(f"step {step} (torch slicing needs a positive step)")
    start = _bound(call, call["start"], t.shape[axis], 0)
    end = _bound(call, call["end"], t.shape[axis], INT64_MAX)
    out = call.out_type()
    if start == 0 and end >= INT64_MAX and step == 1:
        return call.ir(x)
    return call.emit("slice", [call.ir(x)], out, starts=[start], ends=[min(end, INT64_MAX)], axes=[axis],
                     steps=[step])


@converter("aten.select.int")
def _select(call: Call) -> str:
    """``x[..., i, ...]``: a one-element slice, then a reshape that drops the axis."""
    x = call["self"]
    t = call.type(x)
    axis = call.axis(call["dim"], t.rank)
    index = call["index"]
    if isinstance(index, str):
        raise call.unsupported(f"index {index} depends on a symbolic size")
    end = INT64_MAX if index == -1 else index + 1
    kept = TensorType(t.shape[:axis] + (1,) + t.shape[axis + 1:], t.dtype)
    piece = call.emit("slice", [call.ir(x)], kept, starts=[index], ends=[end], axes=[axis], steps=[1])
    out = call.out_type()
    return call.emit("reshape", [piece], out, shape=list(out.shape))


@converter("aten.index.Tensor")
def _index(call: Call) -> str:
    """``x[..., idx, ...]`` with one integer index tensor: gather along that axis."""
    x, indices = call["self"], call["indices"]
    used = [(axis, i) for axis, i in enumerate(indices) if i is not None]
    if len(used) != 1:
        raise call.unsupported("advanced indexing with more than one index tensor")
    axis, idx = used[0]
    if call.dtype(idx) not in ("int64", "int32"):
        raise call.unsupported(f"index tensor of dtype {call.dtype(idx)} (boolean masks give data-dependent shapes)")
    return call.emit("gather", [call.ir(x), call.ir(idx)], call.out_type(), axis=axis)


@converter("aten.embedding.default")
def _embedding(call: Call) -> str:
    return call.emit("gather", [call.ir(call["weight"]), call.ir(call["indices"])], call.out_type(), axis=0)


@converter("aten.gather.default")
def _gather(call: Call) -> str:
    x = call["self"]
    return call.emit("gather_elements", [call.ir(x), call.ir(call["index"])], call.out_type(),
                     axis=call.axis(call["dim"], call.rank(x)))


@converter("aten.cat.default")
def _cat(call: Call) -> str:
    out = call.out_type()
    tensors = [t for t in call["tensors"] if call.type(t).shape != (0,)]  # torch skips legacy empty tensors
    axis = call.axis(call["dim"], out.rank)
    if len(tensors) == 1:
        return call.cast(call.ir(tensors[0]), out.dtype)
    return call.emit("concat", [call.operand(t, out.dtype) for t in tensors], out, axis=axis)


def _split(call: Call, sizes: list[int]) -> tuple[str, ...]:
    x = call["self"]
    axis = call.axis(call["dim"], call.rank(x))
    types = [call.out_type(i) for i in range(len(sizes))]
    return tuple(call.emit("split", [call.ir(x)], types, axis=axis, sizes=sizes))


@converter("aten.split_with_sizes.default")
def _split_with_sizes(call: Call) -> tuple[str, ...]:
    sizes = call["split_sizes"]
    if not all(isinstance(s, int) for s in sizes):
        raise call.unsupported(f"symbolic split sizes {sizes}")
    return _split(call, list(sizes))


@converter("aten.split.Tensor")
def _split_tensor(call: Call) -> tuple[str, ...]:
    x = call["self"]
    size = call.type(x).shape[call.axis(call["dim"], call.rank(x))]
    piece = call["split_size"]
    if not isinstance(size, int) or not isinstance(piece, int):
        raise call.unsupported("split of a symbolic axis")
    return _split(call, [min(piece, size - s) for s in range(0, size, piece)])


@converter("aten.constant_pad_nd.default")
def _constant_pad(call: Call) -> str:
    x = call["self"]
    return _pad(call, x, call["pad"], "constant", float(call["value"]))


def _pad(call: Call, x: Any, torch_pads: list[int], mode: str, value: float = 0.0) -> str:
    """torch's pads (last axis first, (begin, end) pairs) -> ONNX layout over all axes."""
    rank = call.rank(x)
    begin, end = [0] * rank, [0] * rank
    for i in range(len(torch_pads) // 2):
        begin[rank - 1 - i], end[rank - 1 - i] = int(torch_pads[2 * i]), int(torch_pads[2 * i + 1])
    return call.emit("pad", [call.ir(x)], call.out_type(), pads=begin + end, mode=mode, value=value)


@converter("aten.reflection_pad1d.default", "aten.reflection_pad2d.default", "aten.reflection_pad3d.default")
def _reflection_pad(call: Call) -> str:
    return _pad(call, call["self"], call["padding"], "reflect")


@converter("aten.replication_pad1d.default", "aten.replication_pad2d.default", "aten.replication_pad3d.default")
def _replication_pad(call: Call) -> str:
    return _pad(call, call["self"], call["padding"], "edge")


@converter("aten.repeat.default")
def _repeat(call: Call) -> str:
    x, repeats = call["self"], list(call["repeats"])
    name, t = call.ir(x), call.type(x)
    if len(repeats) > t.rank:  # torch prepends axes of size 1
        lead = len(repeats) - t.rank
        name = call.emit("reshape", [name], TensorType((1,) * lead + t.shape, t.dtype),
                         shape=[1] * lead + list(t.shape))
    return call.emit("tile", [name], call.out_type(), repeats=repeats)


@converter("aten.full.default", "aten.full_like.default", "aten.zeros_like.default", "aten.ones_like.default",
           "aten.scalar_tensor.default")
def _full(call: Call) -> str:
    """A filled tensor whose size is symbolic (or too big to store): ``expand`` of a scalar."""
    out = call.out_type()
    fill = {"aten.zeros_like.default": 0, "aten.ones_like.default": 1}.get(call.op)
    if fill is None:
        fill = call.args.get("fill_value", call.args.get("s"))
    if isinstance(fill, (Tensor, Const, str)):
        raise call.unsupported("a fill value computed at run time")
    scalar = call.scalar(fill, out.dtype)
    if out.rank == 0:
        return scalar
    return call.emit("expand", [scalar], out, shape=list(out.shape))
