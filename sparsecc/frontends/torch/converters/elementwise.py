"""Elementwise aten ops: unary math, binary arithmetic and comparisons with torch's type promotion,
where, clamp, casts, activations."""
from __future__ import annotations

from typing import Any

import torch

from sparsecc.interpreter.torch_ops import torch_dtype
from sparsecc.ir.graph import TensorType

from ..importer import Call, Const, Tensor
from . import converter

# aten unary op -> canonical op (same shape, same dtype)
UNARY = {
    "neg": "neg", "abs": "abs", "exp": "exp", "log": "log", "sqrt": "sqrt", "rsqrt": "rsqrt",
    "reciprocal": "reciprocal", "sin": "sin", "cos": "cos", "tan": "tan", "asin": "asin", "acos": "acos",
    "atan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "asinh": "asinh", "acosh": "acosh",
    "atanh": "atanh", "sigmoid": "sigmoid", "relu": "relu", "erf": "erf", "floor": "floor", "ceil": "ceil",
    "round": "round", "sign": "sign", "logical_not": "logical_not", "bitwise_not": "bitwise_not",
    "silu": "silu", "mish": "mish", "hardswish": "hard_swish",
}


def _unary(op: str) -> Any:
    def convert(call: Call) -> str:
        x = call["self"]
        out = call.out_type()
        return call.emit(op, [call.operand(x, out.dtype)], out)
    return convert


for _aten, _op in UNARY.items():
    converter(f"aten.{_aten}.default")(_unary(_op))


@converter("aten.isinf.default", "aten.isnan.default")
def _float_predicate(call: Call) -> str:
    """isinf/isnan read the input as it is (a cast to the bool result would lose it)."""
    return call.emit(call.op.split(".")[1], [call.ir(call["self"])], call.out_type())


@converter("aten.log1p.default")
def _log1p(call: Call) -> str:
    """log1p(x) = log(u) * x / (u - 1) with u = 1 + x (exact to rounding; Kahan), x where u == 1."""
    out = call.out_type()
    x = call.operand(call["self"], out.dtype)
    one = call.scalar(1.0, out.dtype)
    u = call.emit("add", [x, one], out)
    ratio = call.emit("div", [call.emit("mul", [call.emit("log", [u], out), x], out),
                              call.emit("sub", [u, one], out)], out)
    return call.emit("where", [call.emit("equal", [u, one], TensorType(out.shape, "bool")), x, ratio], out)


def _promoted(call: Call, *values: Any) -> str:
    """torch's result dtype of an elementwise op on ``values`` (tensors and Python scalars)."""
    probes = []
    for v in values:
        if isinstance(v, (Tensor, Const)):
            probes.append(torch.empty((1,) * call.rank(v), dtype=torch_dtype(call.dtype(v))))
        elif isinstance(v, (bool, int, float)):
            probes.append(v)
        else:
            raise call.unsupported(f"operand {v!r} is not a tensor or a number")
    return str(torch.result_type(*probes)).replace("torch.", "") if len(probes) > 1 else call.dtype(values[0])


def _binary(op: str, first: str = "self", second: str = "other") -> Any:
    def convert(call: Call) -> str:
        a, b = call[first], call[second]
        out = call.out_type()
        dtype = out.dtype if out.dtype != "bool" else _ir_name(_promoted(call, a, b))
        alpha = call.args.get("alpha", 1)
        if alpha != 1:
            b_val = call.operand(b, dtype)
            b_type = call.imp.graph.types[b_val]
            b = Tensor(call.emit("mul", [b_val, call.scalar(alpha, dtype)], b_type))
        return call.emit(op, [call.operand(a, dtype), call.operand(b, dtype)], out)
    return convert


def _ir_name(dtype: str) -> str:
    from sparsecc.ir.graph import dtype_name

    return dtype_name(f"torch.{dtype}")


for _aten, _op in {"add": "add", "sub": "sub", "mul": "mul", "maximum": "maximum", "minimum": "minimum",
                   "eq": "equal", "lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
                   "logical_and": "logical_and", "logical_or": "logical_or", "logical_xor": "logical_xor",
                   "bitwise_and": "bitwise_and", "bitwise_or": "bitwise_or", "bitwise_xor": "bitwise_xor"}.items():
    for _overload in ("Tensor", "Scalar", "default"):
        converter(f"aten.{_aten}.{_overload}")(_binary(_op))
converter("aten.pow.Tensor_Tensor", "aten.pow.Tensor_Scalar")(_binary("pow", "self", "exponent"))
converter("aten.pow.Scalar")(_binary("pow", "self", "exponent"))


@converter("aten.ne.Tensor", "aten.ne.Scalar")
def _ne(call: Call) -> str:
    return call.emit("logical_not", [_binary("equal")(call)], call.out_type())


@converter("aten.div.Tensor", "aten.div.Scalar", "aten.div.Tensor_mode", "aten.div.Scalar_mode")
def _div(call: Call) -> str:
    mode = call.args.get("rounding_mode")
    out = call.out_type()
    is_float = out.dtype.startswith(("float", "bfloat"))
    if mode is None:
        return _binary("div")(call)  # the result dtype is float: true division
    if mode == "trunc" and not is_float:
        return _binary("div")(call)  # IR integer div truncates
    if mode == "floor" and is_float:
        q = call.emit("div", [call.operand(call["self"], out.dtype), call.operand(call["other"], out.dtype)], out)
        return call.emit("floor", [q], out)
    raise call.unsupported(f"rounding_mode={mode!r} on {out.dtype}")


@converter("aten.remainder.Tensor", "aten.remainder.Scalar", "aten.fmod.Tensor", "aten.fmod.Scalar")
def _mod(call: Call) -> str:
    out = call.out_type()
    a, b = call.operand(call["self"], out.dtype), call.operand(call["other"], out.dtype)
    return call.emit("mod", [a, b], out, fmod=call.op.startswith("aten.fmod"))


@converter("aten.where.self", "aten.where.ScalarSelf", "aten.where.ScalarOther", "aten.where.Scalar")
def _where(call: Call) -> str:
    out = call.out_type()
    cond = call.operand(call["condition"], "bool")
    return call.emit("where", [cond, call.operand(call["self"], out.dtype), call.operand(call["other"], out.dtype)],
                     out)


@converter("aten.clamp.default", "aten.clamp_min.default", "aten.clamp_max.default", "aten.hardtanh.default",
           "aten.relu6.default")
def _clamp(call: Call) -> str:
    bounds = {"aten.hardtanh.default": ("min_val", "max_val"), "aten.relu6.default": (None, None)}
    lo_key, hi_key = bounds.get(call.op, ("min", "max"))
    if call.op == "aten.relu6.default":
        lo, hi = 0.0, 6.0
    else:
        lo, hi = call.args.get(lo_key), call.args.get(hi_key)
    out = call.out_type()
    if any(isinstance(b, (Tensor, Const)) for b in (lo, hi)):
        raise call.unsupported("tensor bounds (use clamp.Tensor)")
    if out.dtype.startswith(("int", "uint")) and any(isinstance(b, float) and b != int(b) for b in (lo, hi)
                                                    if b is not None):
        raise call.unsupported("fractional bounds on an integer tensor")
    return call.emit("clip", [call.operand(call["self"], out.dtype)], out, min=lo, max=hi)


@converter("aten.clamp.Tensor")
def _clamp_tensor(call: Call) -> str:
    out = call.out_type()
    y = call.operand(call["self"], out.dtype)
    if call["min"] is not None:
        y = call.emit("maximum", [y, call.operand(call["min"], out.dtype)], out)
    if call["max"] is not None:
        y = call.emit("minimum", [y, call.operand(call["max"], out.dtype)], out)
    return y


@converter("aten._to_copy.default", "aten.to.dtype", "aten.clone.default", "aten.alias.default",
           "aten.lift_fresh_copy.default", "aten.detach.default", "aten.contiguous.default")
def _copy(call: Call) -> str:
    """Copies and dtype conversions: a cast where the dtype changes, else the value itself (device and
    memory-format arguments do not change values)."""
    return call.cast(call.ir(call["self"]), call.out_type().dtype)


@converter("aten.gelu.default")
def _gelu(call: Call) -> str:
    return call.emit("gelu", [call.ir(call["self"])], call.out_type(), approximate=call["approximate"])


@converter("aten.leaky_relu.default")
def _leaky_relu(call: Call) -> str:
    return call.emit("leaky_relu", [call.ir(call["self"])], call.out_type(), alpha=float(call["negative_slope"]))


@converter("aten.elu.default")
def _elu(call: Call) -> str:
    if call["scale"] != 1 or call["input_scale"] != 1:
        if call["input_scale"] == 1 and call["alpha"] == 1.6732632423543772:
            return call.emit("selu", [call.ir(call["self"])], call.out_type(), alpha=float(call["alpha"]),
                             gamma=float(call["scale"]))
        raise call.unsupported(f"scale={call['scale']}, input_scale={call['input_scale']}")
    return call.emit("elu", [call.ir(call["self"])], call.out_type(), alpha=float(call["alpha"]))


@converter("aten.hardsigmoid.default")
def _hardsigmoid(call: Call) -> str:
    return call.emit("hard_sigmoid", [call.ir(call["self"])], call.out_type(), alpha=1 / 6, beta=0.5)


@converter("aten.softplus.default")
def _softplus(call: Call) -> str:
    # torch returns x where beta*x > threshold; with beta=1, threshold=20 that equals ln(1+e^x) in float32
    if call["beta"] != 1 or call["threshold"] != 20:
        raise call.unsupported(f"beta={call['beta']}, threshold={call['threshold']} (only 1 and 20)")
    return call.emit("softplus", [call.ir(call["self"])], call.out_type())
