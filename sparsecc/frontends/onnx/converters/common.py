"""The converter registry and the helpers converters share (types, broadcasting, axes, small emits)."""
from __future__ import annotations

from typing import Callable, Sequence, Union

import numpy as np

from sparsecc.ir.graph import Dim, TensorType

from ..importer import NodeContext
from ..values import Known, np_dtype

Result = Union[str, Known]
Converter = Callable[[NodeContext], Sequence[Result]]
CONVERTERS: dict[str, Converter] = {}

KNOWN_LIMIT = 1 << 16
"""Known (compile-time) values are propagated through ops up to this many elements; larger constant
expressions are emitted as nodes, which ``fold_constants`` evaluates after import."""


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    def wrap(fn: Converter) -> Converter:
        for t in op_types:
            if t in CONVERTERS:
                raise AssertionError(f"two converters for {t}")
            CONVERTERS[t] = fn
        return fn
    return wrap


def broadcast(cx: NodeContext, *shapes: Sequence[Dim]) -> tuple[Dim, ...]:
    """Multidirectional (numpy) broadcasting of possibly symbolic shapes."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            ints = {d for d in dims if isinstance(d, int)}
            if len(ints) > 1:
                raise cx.unsupported(f"shapes {[list(s) for s in shapes]} do not broadcast")
            raise cx.unsupported(f"cannot tell how symbolic dims {sorted(map(str, dims))} broadcast; fix them with "
                                 "input_shapes")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


FLOATS = ("float16", "bfloat16", "float32", "float64")


def require_float(cx: NodeContext, i: int = 0) -> None:
    if cx.dtype(i) not in FLOATS:
        raise cx.unsupported(f"{cx.op_type} of {cx.dtype(i)}")


def norm_axis(cx: NodeContext, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise cx.unsupported(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def norm_axes(cx: NodeContext, axes: Sequence[int], rank: int) -> list[int]:
    out = [norm_axis(cx, int(a), rank) for a in axes]
    if len(set(out)) != len(out):
        raise cx.unsupported(f"repeated axes {list(axes)}")
    return out


def scalar(cx: NodeContext, value: float | int | bool, dtype: str) -> str:
    """A 0-d param holding ``value`` as ``dtype``."""
    return cx.param(np.array(value, dtype=np_dtype(dtype)))


def reshape(cx: NodeContext, x: str, shape: Sequence[Dim]) -> str:
    t = cx.imp.graph.types[x]
    if tuple(shape) == t.shape:
        return x
    return cx.emit("reshape", [x], TensorType(tuple(shape), t.dtype), shape=list(shape))


def transpose(cx: NodeContext, x: str, perm: Sequence[int]) -> str:
    t = cx.imp.graph.types[x]
    if list(perm) == list(range(len(perm))):
        return x
    return cx.emit("transpose", [x], TensorType(tuple(t.shape[p] for p in perm), t.dtype), perm=list(perm))


def typeof(cx: NodeContext, value: str) -> TensorType:
    return cx.imp.graph.types[value]


def known_inputs(cx: NodeContext, limit: int = KNOWN_LIMIT) -> list[Known] | None:
    """All present inputs as Known values when every one is known and small; else None."""
    ks = [cx.known(i) for i in range(cx.num_inputs) if cx.has_input(i)]
    if all(k is not None and k.data.size <= limit for k in ks):
        return ks
    return None
