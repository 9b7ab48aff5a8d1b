"""Elementwise ops: unary math and activations, binary arithmetic/comparison/logic with broadcasting, where, cast.

ONNX wants equal input dtypes where torch promotes, so binary emitters cast their inputs to the dtype torch
computes in (``promoted``); compositions reproduce torch where ONNX differs (integer shifts, Python-style float
remainder, softplus's threshold, gelu before opset 20).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from sparsecc.interpreter.torch_ops import torch_dtype
from sparsecc.ir.graph import TensorType, dtype_name

from ..context import ONNX_DTYPES, EmitContext
from .registry import emitter

INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def promoted(*types: TensorType) -> str:
    """The dtype torch computes a binary op in (its type promotion, where 0-d tensors rank below others)."""
    tensors = [torch.empty([0] if t.rank else [], dtype=torch_dtype(t.dtype)) for t in types]
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.result_type(torch.empty([0] if t.dim() else [], dtype=dtype), t)
    return dtype_name(dtype)


def _inputs_as(cx: EmitContext, dtype: str, *xs: str) -> list[str]:
    return [cx.cast(x, cx.in_type(i).dtype, dtype) for i, x in enumerate(xs)]


# ---- unary ----------------------------------------------------------------------------------------------
_UNARY = {
    "neg": "Neg", "abs": "Abs", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "reciprocal": "Reciprocal",
    "sin": "Sin", "cos": "Cos", "tan": "Tan", "asin": "Asin", "acos": "Acos", "atan": "Atan", "sinh": "Sinh",
    "cosh": "Cosh", "tanh": "Tanh", "asinh": "Asinh", "acosh": "Acosh", "atanh": "Atanh", "sigmoid": "Sigmoid",
    "relu": "Relu", "erf": "Erf", "softsign": "Softsign", "mish": "Mish", "hard_swish": "HardSwish",
}


@emitter(*_UNARY)
def _unary(cx: EmitContext, x: str) -> str:
    # torch computes float math on integer inputs in the default float dtype (the node's output dtype)
    (x,) = _inputs_as(cx, cx.out_type().dtype, x)
    return cx.op(_UNARY[cx.node.op], [x])


@emitter("floor", "ceil", "round")
def _rounding(cx: EmitContext, x: str) -> str:
    if cx.in_type(0).dtype in INTS:
        return x  # already integral
    return cx.op({"floor": "Floor", "ceil": "Ceil", "round": "Round"}[cx.node.op], [x])


@emitter("sign")
def _sign(cx: EmitContext, x: str) -> str:
    y = cx.op("Sign", [x])
    if cx.in_type(0).dtype in INTS:
        return y
    return cx.op("Where", [cx.op("IsNaN", [x]), cx.const(0, cx.in_type(0).dtype), y])  # torch: sign(NaN) = 0


@emitter("rsqrt")
def _rsqrt(cx: EmitContext, x: str) -> str:
    (x,) = _inputs_as(cx, cx.out_type().dtype, x)
    return cx.op("Reciprocal", [cx.op("Sqrt", [x])])


@emitter("silu")
def _silu(cx: EmitContext, x: str) -> str:
    return cx.op("Mul", [x, cx.op("Sigmoid", [x])])


@emitter("softplus")
def _softplus(cx: EmitContext, x: str) -> str:
    # torch's softplus returns x itself above its threshold (20)
    dtype = cx.in_type(0).dtype
    return cx.op("Where", [cx.op("Greater", [x, cx.const(20, dtype)]), x, cx.op("Softplus", [x])])


@emitter("logical_not")
def _logical_not(cx: EmitContext, x: str) -> str:
    return cx.op("Not", [cx.cast(x, cx.in_type(0).dtype, "bool")])


@emitter("bitwise_not")
def _bitwise_not(cx: EmitContext, x: str) -> str:
    return cx.op("Not" if cx.in_type(0).dtype == "bool" else "BitwiseNot", [x])


@emitter("isnan")
def _isnan(cx: EmitContext, x: str) -> str:
    if cx.in_type(0).dtype in INTS + ("bool",):
        return cx.op("Not", [cx.op("Equal", [x, x])])  # all False, in x's shape
    return cx.op("IsNaN", [x])


@emitter("isinf")
def _isinf(cx: EmitContext, x: str, *, detect_positive: bool, detect_negative: bool) -> str:
    if cx.in_type(0).dtype in INTS + ("bool",):
        return cx.op("Not", [cx.op("Equal", [x, x])])
    return cx.op("IsInf", [x], detect_positive=int(detect_positive), detect_negative=int(detect_negative))


@emitter("gelu")
def _gelu(cx: EmitContext, x: str, *, approximate: str) -> str:
    """0.5 * x * (1 + erf(x / sqrt 2)), or the tanh approximation (ONNX Gelu needs opset 20)."""
    dtype = cx.in_type(0).dtype
    if approximate == "none":
        inner = cx.op("Erf", [cx.op("Mul", [x, cx.const(1 / math.sqrt(2), dtype)])])
    elif approximate == "tanh":
        cube = cx.op("Mul", [cx.op("Mul", [x, x]), x])
        poly = cx.op("Add", [x, cx.op("Mul", [cube, cx.const(0.044715, dtype)])])
        inner = cx.op("Tanh", [cx.op("Mul", [poly, cx.const(math.sqrt(2 / math.pi), dtype)])])
    else:
        raise cx.unsupported(f"approximate={approximate!r} (expected 'none' or 'tanh')")
    half_x = cx.op("Mul", [x, cx.const(0.5, dtype)])
    return cx.op("Mul", [half_x, cx.op("Add", [inner, cx.const(1, dtype)])])


@emitter("leaky_relu")
def _leaky_relu(cx: EmitContext, x: str, *, alpha: float) -> str:
    return cx.op("LeakyRelu", [x], alpha=float(alpha))


@emitter("elu")
def _elu(cx: EmitContext, x: str, *, alpha: float) -> str:
    return cx.op("Elu", [x], alpha=float(alpha))


@emitter("celu")
def _celu(cx: EmitContext, x: str, *, alpha: float) -> str:
    return cx.op("Celu", [x], alpha=float(alpha))


@emitter("selu")
def _selu(cx: EmitContext, x: str, *, alpha: float, gamma: float) -> str:
    return cx.op("Selu", [x], alpha=float(alpha), gamma=float(gamma))


@emitter("hard_sigmoid")
def _hard_sigmoid(cx: EmitContext, x: str, *, alpha: float, beta: float) -> str:
    return cx.op("HardSigmoid", [x], alpha=float(alpha), beta=float(beta))


@emitter("thresholded_relu")
def _thresholded_relu(cx: EmitContext, x: str, *, alpha: float) -> str:
    return cx.op("ThresholdedRelu", [x], alpha=float(alpha))


@emitter("clip")
def _clip(cx: EmitContext, x: str, *, min: float | None, max: float | None) -> str:
    dtype = cx.out_type().dtype
    (x,) = _inputs_as(cx, dtype, x)
    bounds = [None if b is None else cx.const(b, dtype) for b in (min, max)]
    return cx.op("Clip", [x, *bounds])


# ---- binary -----------------------------------------------------------------------------------------------
_ARITH = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "maximum": "Max", "minimum": "Min"}
_BOOL_ARITH = {"add": "Or", "mul": "And", "maximum": "Or", "minimum": "And"}


@emitter(*_ARITH)
def _arith(cx: EmitContext, a: str, b: str) -> str:
    dtype = cx.out_type().dtype
    a, b = _inputs_as(cx, dtype, a, b)
    if dtype == "bool":
        if cx.node.op not in _BOOL_ARITH:
            raise cx.unsupported("bool operands")
        return cx.op(_BOOL_ARITH[cx.node.op], [a, b])
    return cx.op(_ARITH[cx.node.op], [a, b])


@emitter("pow")
def _pow(cx: EmitContext, a: str, b: str) -> str:
    compute = promoted(cx.in_type(0), cx.in_type(1))
    y = cx.op("Pow", _inputs_as(cx, compute, a, b))
    return cx.cast(y, compute, cx.out_type().dtype)


_COMPARE = {"equal": "Equal", "less": "Less", "less_equal": "LessOrEqual", "greater": "Greater",
            "greater_equal": "GreaterOrEqual"}


@emitter(*_COMPARE)
def _compare(cx: EmitContext, a: str, b: str) -> str:
    return cx.op(_COMPARE[cx.node.op], _inputs_as(cx, promoted(cx.in_type(0), cx.in_type(1)), a, b))


@emitter("logical_and", "logical_or", "logical_xor")
def _logical(cx: EmitContext, a: str, b: str) -> str:
    op = {"logical_and": "And", "logical_or": "Or", "logical_xor": "Xor"}[cx.node.op]
    return cx.op(op, _inputs_as(cx, "bool", a, b))


@emitter("bitwise_and", "bitwise_or", "bitwise_xor")
def _bitwise(cx: EmitContext, a: str, b: str) -> str:
    dtype = cx.out_type().dtype
    kind = cx.node.op.split("_")[1]
    op = kind.capitalize() if dtype == "bool" else f"Bitwise{kind.capitalize()}"
    return cx.op(op, _inputs_as(cx, dtype, a, b))


@emitter("bitshift_left", "bitshift_right")
def _bitshift(cx: EmitContext, a: str, b: str) -> str:
    """torch's shifts: a shift count >= the bit width (or negative) gives 0, or -1 for a negative value shifted
    right; signed right shifts are arithmetic. ONNX BitShift is unsigned only, so shift the unsigned view."""
    dtype = cx.out_type().dtype
    if dtype not in INTS:
        raise cx.unsupported(f"dtype {dtype}")
    a, b = _inputs_as(cx, dtype, a, b)
    bits = np.dtype(dtype).itemsize * 8
    unsigned = dtype if dtype.startswith("u") else f"u{dtype}"
    overshift = cx.op("GreaterOrEqual", [b, cx.const(bits, dtype)])
    if dtype != unsigned:
        overshift = cx.op("Or", [overshift, cx.op("Less", [b, cx.const(0, dtype)])])
    # (ORT has no Where for unsigned 32/64-bit ints: select the count before viewing it unsigned)
    safe_b = cx.cast(cx.op("Where", [overshift, cx.const(0, dtype), b]), dtype, unsigned)

    def shift(value: str, direction: str) -> str:
        return cx.cast(cx.op("BitShift", [cx.cast(value, dtype, unsigned), safe_b], direction=direction),
                       unsigned, dtype)

    zero = cx.const(0, dtype)
    if cx.node.op == "bitshift_left":
        return cx.op("Where", [overshift, zero, shift(a, "LEFT")])
    if dtype == unsigned:
        return cx.op("Where", [overshift, zero, shift(a, "RIGHT")])
    # arithmetic shift of a negative value: ~((~a) >> b), where ~a >= 0 shifts logically; overshift fills signs
    negative = cx.op("Less", [a, zero])
    flipped = cx.op("BitwiseNot", [shift(cx.op("BitwiseNot", [a]), "RIGHT")])
    fill = cx.op("Where", [negative, cx.const(-1, dtype), zero])
    return cx.op("Where", [overshift, fill, cx.op("Where", [negative, flipped, shift(a, "RIGHT")])])


@emitter("prelu")
def _prelu(cx: EmitContext, a: str, b: str) -> str:
    dtype = cx.out_type().dtype
    a, b = _inputs_as(cx, dtype, a, b)
    return cx.op("Where", [cx.op("GreaterOrEqual", [a, cx.const(0, dtype)]), a, cx.op("Mul", [a, b])])


@emitter("mod")
def _mod(cx: EmitContext, a: str, b: str, *, fmod: bool) -> str:
    dtype = cx.out_type().dtype
    a, b = _inputs_as(cx, dtype, a, b)
    if fmod or dtype in INTS:
        return cx.op("Mod", [a, b], fmod=int(fmod))  # integer fmod=0 already takes the divisor's sign
    # float remainder with the divisor's sign, as torch computes it: r = fmod(a, b); r + b where signs differ
    r = cx.op("Mod", [a, b], fmod=1)
    zero = cx.const(0, dtype)
    signs_differ = cx.op("Xor", [cx.op("Less", [r, zero]), cx.op("Less", [b, zero])])
    fix = cx.op("And", [cx.op("Not", [cx.op("Equal", [r, zero])]), signs_differ])
    return cx.op("Where", [fix, cx.op("Add", [r, b]), r])


@emitter("where")
def _where(cx: EmitContext, cond: str, a: str, b: str) -> str:
    dtype = cx.out_type().dtype
    cond = cx.cast(cond, cx.in_type(0).dtype, "bool")
    a = cx.cast(a, cx.in_type(1).dtype, dtype)
    b = cx.cast(b, cx.in_type(2).dtype, dtype)
    return cx.op("Where", [cond, a, b])


@emitter("cast")
def _cast(cx: EmitContext, x: str, *, to: str) -> str:
    if to not in ONNX_DTYPES:
        raise cx.unsupported(f"to={to!r}")
    return cx.op("Cast", [x], to=ONNX_DTYPES[to])
