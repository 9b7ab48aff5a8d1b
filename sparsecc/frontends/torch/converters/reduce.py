"""Reductions: sum/mean/amax/amin/prod, max/min with indices, argmax/argmin, var/std, vector norms, cumsum,
any/all."""
from __future__ import annotations

from typing import Any, Sequence

from sparsecc.ir.graph import TensorType

from ..importer import Call
from . import converter


def _axes(call: Call, dims: Sequence[int] | int | None, rank: int) -> list[int] | None:
    """Reduced axes, non-negative; ``None`` (or an empty list) means all axes, as in torch."""
    if dims is None:
        return None
    dims = [dims] if isinstance(dims, int) else list(dims)
    return [call.axis(d, rank) for d in dims] or None


def _input(call: Call) -> str:
    """The input in the result dtype (torch sums bool and small ints as int64)."""
    return call.cast(call.ir(call["self"]), call.out_type().dtype)


def _reduce(op: str) -> Any:
    def convert(call: Call) -> str:
        x = call["self"]
        axes = _axes(call, call.args.get("dim"), call.rank(x))
        return call.emit(op, [_input(call)], call.out_type(), axes=axes, keepdims=bool(call.args.get("keepdim")))
    return convert


converter("aten.sum.dim_IntList", "aten.sum.default")(_reduce("reduce_sum"))
converter("aten.mean.dim", "aten.mean.default")(_reduce("reduce_mean"))
converter("aten.amax.default", "aten.max.default")(_reduce("reduce_max"))
converter("aten.amin.default", "aten.min.default")(_reduce("reduce_min"))
converter("aten.prod.dim_int", "aten.prod.default")(_reduce("reduce_prod"))


@converter("aten.any.dim", "aten.any.dims", "aten.any.default", "aten.all.dim", "aten.all.dims", "aten.all.default")
def _any_all(call: Call) -> str:
    x = call["self"]
    axes = _axes(call, call.args.get("dim"), call.rank(x))
    out = call.out_type()
    as_bool = call.cast(call.ir(x), "bool")
    as_int = call.cast(as_bool, "int32")
    op = "reduce_max" if call.op.startswith("aten.any") else "reduce_min"
    reduced = call.emit(op, [as_int], TensorType(out.shape, "int32"), axes=axes,
                        keepdims=bool(call.args.get("keepdim")))
    return call.cast(reduced, "bool")


def _arg(op: str) -> Any:
    def convert(call: Call) -> str:
        x = call["self"]
        dim = call["dim"]
        if dim is None:
            raise call.unsupported("argmax/argmin over the flattened tensor (give dim)")
        return call.emit(op, [call.ir(x)], call.out_type(), axis=call.axis(dim, call.rank(x)),
                         keepdims=bool(call["keepdim"]))
    return convert


converter("aten.argmax.default")(_arg("argmax"))
converter("aten.argmin.default")(_arg("argmin"))


@converter("aten.max.dim", "aten.min.dim")
def _max_min_dim(call: Call) -> tuple[str, str]:
    x = call["self"]
    axis = call.axis(call["dim"], call.rank(x))
    keep = bool(call["keepdim"])
    is_max = call.op.startswith("aten.max")
    values = call.emit("reduce_max" if is_max else "reduce_min", [call.ir(x)], call.out_type(0), axes=[axis],
                       keepdims=keep)
    indices = call.emit("argmax" if is_max else "argmin", [call.ir(x)], call.out_type(1), axis=axis, keepdims=keep)
    return values, indices


@converter("aten.var.correction", "aten.std.correction")
def _var(call: Call) -> str:
    """var = sum((x - mean)^2) / (N - correction) over the reduced axes (N static)."""
    x = call["self"]
    t = call.type(x)
    out = call.out_type()
    if not out.dtype.startswith("float"):
        raise call.unsupported(f"variance of {out.dtype}")
    axes = _axes(call, call["dim"], t.rank) or list(range(t.rank))
    count = 1
    for a in axes:
        if not isinstance(t.shape[a], int):
            raise call.unsupported("variance over a symbolic axis")
        count *= t.shape[a]
    correction = 1 if call["correction"] is None else call["correction"]
    xs = call.ir(x)
    kept = TensorType(tuple(1 if i in axes else d for i, d in enumerate(t.shape)), out.dtype)
    mean = call.emit("reduce_mean", [xs], kept, axes=axes, keepdims=True)
    centered = call.emit("sub", [xs, mean], t)
    squared = call.emit("mul", [centered, centered], t)
    total = call.emit("reduce_sum", [squared], out, axes=axes, keepdims=bool(call["keepdim"]))
    var = call.emit("div", [total, call.scalar(float(max(count - correction, 0)), out.dtype)], out)
    return call.emit("sqrt", [var], out) if call.op.startswith("aten.std") else var


@converter("aten.linalg_vector_norm.default")
def _vector_norm(call: Call) -> str:
    x, ord_ = call["self"], call["ord"]
    t, out = call.type(x), call.out_type()
    xs = call.cast(call.ir(x), out.dtype)
    axes = _axes(call, call["dim"], t.rank)
    keep = bool(call["keepdim"])
    full = TensorType(t.shape, out.dtype)
    if ord_ == 2:
        squared = call.emit("mul", [xs, xs], full)
        return call.emit("sqrt", [call.emit("reduce_sum", [squared], out, axes=axes, keepdims=keep)], out)
    if ord_ == 1:
        return call.emit("reduce_sum", [call.emit("abs", [xs], full)], out, axes=axes, keepdims=keep)
    if ord_ == float("inf"):
        return call.emit("reduce_max", [call.emit("abs", [xs], full)], out, axes=axes, keepdims=keep)
    raise call.unsupported(f"ord={ord_} (1, 2 and inf are supported)")


@converter("aten.cumsum.default")
def _cumsum(call: Call) -> str:
    x = call["self"]
    out = call.out_type()
    return call.emit("cumsum", [call.cast(call.ir(x), out.dtype)], out, axis=call.axis(call["dim"], call.rank(x)))

