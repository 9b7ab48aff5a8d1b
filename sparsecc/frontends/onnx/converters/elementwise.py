"""Elementwise ONNX ops: unary math and activations, broadcasting binary ops, variadic Max/Min/Sum/Mean, Where,
Clip. Integer/bool ops on known (compile-time) values are evaluated here, symbolically for shape arithmetic."""
from __future__ import annotations

from typing import Callable

import numpy as np

from sparsecc.ir.graph import TensorType

from .. import symbolic
from ..importer import NodeContext
from ..values import Known, known_array
from .common import Result, broadcast, converter, known_inputs, reshape, scalar

UNARY = {
    "Abs": "abs", "Neg": "neg", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Reciprocal": "reciprocal",
    "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "asin", "Acos": "acos", "Atan": "atan", "Sinh": "sinh",
    "Cosh": "cosh", "Tanh": "tanh", "Asinh": "asinh", "Acosh": "acosh", "Atanh": "atanh", "Sigmoid": "sigmoid",
    "Relu": "relu", "Erf": "erf", "Floor": "floor", "Ceil": "ceil", "Round": "round", "Sign": "sign",
    "Not": "logical_not", "BitwiseNot": "bitwise_not", "IsNaN": "isnan", "Softplus": "softplus",
    "Softsign": "softsign", "HardSwish": "hard_swish", "Mish": "mish",
}
PREDICATES = ("isnan", "isinf")
FLOAT_ONLY = {"exp", "log", "sqrt", "reciprocal", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh",
              "asinh", "acosh", "atanh", "sigmoid", "erf", "softplus", "softsign", "hard_swish", "mish", "gelu",
              "leaky_relu", "elu", "celu", "selu", "hard_sigmoid", "thresholded_relu"}


def unary(cx: NodeContext, op: str, **attrs) -> list[Result]:
    t = cx.type(0)
    if op in FLOAT_ONLY and not t.dtype.startswith(("float", "bfloat")):
        raise cx.unsupported(f"{cx.op_type} of {t.dtype}")
    out = TensorType(t.shape, "bool" if op in PREDICATES else t.dtype)
    if op == "logical_not" and (k := known_inputs(cx)) is not None and not k[0].symbolic:
        return [Known(np.logical_not(k[0].numeric()), "bool")]
    return [cx.emit(op, [cx.value(0)], out, **attrs)]


def _register_unary(onnx_op: str, op: str) -> None:
    converter(onnx_op)(lambda cx: unary(cx, op))


for _onnx_op, _op in UNARY.items():
    _register_unary(_onnx_op, _op)


@converter("Identity")
def identity(cx: NodeContext) -> list[Result]:
    k = cx.known(0)
    return [k if k is not None else cx.value(0)]


@converter("IsInf")
def isinf(cx: NodeContext) -> list[Result]:
    return unary(cx, "isinf", detect_positive=bool(cx.attr("detect_positive", 1)),
                 detect_negative=bool(cx.attr("detect_negative", 1)))


@converter("Gelu")
def gelu(cx: NodeContext) -> list[Result]:
    approximate = cx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise cx.unsupported(f"approximate={approximate!r}")
    return unary(cx, "gelu", approximate=approximate)


_ACTIVATIONS = {  # ONNX op -> (canonical op, {attr: ONNX default})
    "LeakyRelu": ("leaky_relu", {"alpha": 0.01}), "Elu": ("elu", {"alpha": 1.0}), "Celu": ("celu", {"alpha": 1.0}),
    "Selu": ("selu", {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}),
    "HardSigmoid": ("hard_sigmoid", {"alpha": 0.2, "beta": 0.5}),
    "ThresholdedRelu": ("thresholded_relu", {"alpha": 1.0}),
}


def _register_activation(onnx_op: str, op: str, defaults: dict) -> None:
    converter(onnx_op)(lambda cx: unary(cx, op, **{k: float(np.float32(cx.attr(k, v))) for k, v in defaults.items()}))


for _onnx_op, (_op, _defaults) in _ACTIVATIONS.items():
    _register_activation(_onnx_op, _op, _defaults)


@converter("Swish")
def swish(cx: NodeContext) -> list[Result]:
    """x * sigmoid(alpha * x)."""
    alpha = float(np.float32(cx.attr("alpha", 1.0)))
    if alpha == 1.0:
        return unary(cx, "silu")
    x, t = cx.value(0), cx.type(0)
    scaled = cx.emit("mul", [x, scalar(cx, alpha, t.dtype)], t)
    return [cx.emit("mul", [x, cx.emit("sigmoid", [scaled], t)], t)]


@converter("Shrink")
def shrink(cx: NodeContext) -> list[Result]:
    """x - bias where x > lambd, x + bias where x < -lambd, else 0."""
    bias, lambd = float(np.float32(cx.attr("bias", 0.0))), float(np.float32(cx.attr("lambd", 0.5)))
    x, t = cx.value(0), cx.type(0)
    if not t.dtype.startswith(("float", "bfloat")):
        raise cx.unsupported(f"Shrink of {t.dtype}")
    cond = TensorType(t.shape, "bool")
    above = cx.emit("greater", [x, scalar(cx, lambd, t.dtype)], cond)
    below = cx.emit("less", [x, scalar(cx, -lambd, t.dtype)], cond)
    down = cx.emit("sub", [x, scalar(cx, bias, t.dtype)], t)
    up = cx.emit("add", [x, scalar(cx, bias, t.dtype)], t)
    inner = cx.emit("where", [below, up, scalar(cx, 0, t.dtype)], t)
    return [cx.emit("where", [above, down, inner], t)]


@converter("Clip")
def clip(cx: NodeContext) -> list[Result]:
    """``clip`` with constant bounds; with a run-time bound, maximum then minimum (np.clip's order)."""
    if cx.dtype(0) == "bool":
        raise cx.unsupported("Clip of bool")
    present = [(i, key) for i, key in ((1, "min"), (2, "max")) if cx.has_input(i)]
    for i, key in present:
        if cx.rank(i) != 0 and list(cx.shape(i)) != [1]:
            raise cx.unsupported(f"{key} bound of shape {list(cx.shape(i))} (a scalar is required)")
    x = cx.value(0)
    if all(cx.known(i) is not None for i, _ in present):
        bounds = {key: cx.known(i).numeric().reshape(-1)[0].item() for i, key in present}
        return [cx.emit("clip", [x], cx.type(0), **bounds) if bounds else x]
    for i, key in present:
        x = cx.emit("maximum" if key == "min" else "minimum", [x, reshape(cx, cx.value(i), [])], cx.type(0))
    return [x]


# ---- binary ---------------------------------------------------------------------------------------------
BINARY = {
    "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Equal": "equal", "Less": "less",
    "LessOrEqual": "less_equal", "Greater": "greater", "GreaterOrEqual": "greater_equal", "And": "logical_and",
    "Or": "logical_or", "Xor": "logical_xor", "BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or",
    "BitwiseXor": "bitwise_xor", "PRelu": "prelu",
}
COMPARISONS = ("equal", "less", "less_equal", "greater", "greater_equal", "logical_and", "logical_or", "logical_xor")


def _trunc_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    q = np.abs(a) // np.where(b == 0, 1, np.abs(b))
    return (q * np.sign(a) * np.sign(b)).astype(a.dtype)


_NUMERIC: dict[str, Callable] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": _trunc_div, "equal": np.equal, "less": np.less,
    "less_equal": np.less_equal, "greater": np.greater, "greater_equal": np.greater_equal,
    "logical_and": np.logical_and, "logical_or": np.logical_or, "maximum": np.maximum, "minimum": np.minimum,
}


def _sym_equal(a, b):
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, int) and b < 1 or isinstance(b, str) and isinstance(a, int) and a < 1:
        return False  # a symbolic dim is at least 1
    raise ValueError("undecidable")


_SYMBOLIC: dict[str, Callable] = {"add": symbolic.add, "sub": symbolic.sub, "mul": symbolic.mul, "equal": _sym_equal}


def _sym_div(a, b):
    q = symbolic.div(a, b)
    if q is None:
        raise ValueError("inexact")
    return q


_SYMBOLIC["div"] = _sym_div


def evaluate_known(op: str, ks: list[Known], out_dtype: str) -> Known | None:
    """``op`` on known integer/bool values (shape arithmetic), symbolic elements included; None if not exact."""
    if any(k.dtype.startswith(("float", "bfloat")) for k in ks):
        return None  # float constant expressions are left to fold_constants (the interpreter's semantics)
    if not any(k.symbolic for k in ks):
        fn = _NUMERIC.get(op)
        if fn is None or (op == "div" and any((k.numeric() == 0).any() for k in ks[1:])):
            return None
        with np.errstate(all="ignore"):
            return known_array(np.asarray(fn(*[k.numeric() for k in ks])), out_dtype)
    fn = _SYMBOLIC.get(op)
    if fn is None:
        return None
    try:
        data = np.frompyfunc(lambda a, b: fn(_py(a), _py(b)), 2, 1)(ks[0].data, ks[1].data)
    except ValueError:
        return None
    return known_array(np.asarray(data, dtype=object), out_dtype)


def _py(v):
    return v if isinstance(v, str) else int(v)


def binary(cx: NodeContext, op: str, a: str | None = None, b: str | None = None, **attrs) -> list[Result]:
    out_dtype = "bool" if op in COMPARISONS else cx.dtype(0)
    if op in COMPARISONS[5:] and cx.dtype(0) != "bool":
        raise cx.unsupported(f"{cx.op_type} of {cx.dtype(0)}")
    shape = broadcast(cx, cx.shape(0), cx.shape(1)) if op != "prelu" else cx.shape(0)
    if op == "prelu" and broadcast(cx, cx.shape(0), cx.shape(1)) != tuple(cx.shape(0)):
        raise cx.unsupported(f"slope of shape {list(cx.shape(1))} does not broadcast to {list(cx.shape(0))}")
    if not attrs and (ks := known_inputs(cx)) is not None and (k := evaluate_known(op, ks, out_dtype)) is not None:
        return [k]
    return [cx.emit(op, [cx.value(0), cx.value(1)], TensorType(shape, out_dtype), **attrs)]


def _register_binary(onnx_op: str, op: str) -> None:
    converter(onnx_op)(lambda cx: binary(cx, op))


for _onnx_op, _op in BINARY.items():
    _register_binary(_onnx_op, _op)


@converter("Mod")
def mod(cx: NodeContext) -> list[Result]:
    fmod = bool(cx.attr("fmod", 0))
    if not fmod and cx.dtype(0).startswith(("float", "bfloat")) and cx.opset < 28:
        raise cx.unsupported("fmod=0 on floats is not defined before Mod-28")
    return binary(cx, "mod", fmod=fmod)


@converter("BitShift")
def bitshift(cx: NodeContext) -> list[Result]:
    direction = cx.attr("direction")
    if direction not in ("LEFT", "RIGHT"):
        raise cx.unsupported(f"direction={direction!r}")
    if not cx.dtype(0).startswith("uint"):
        raise cx.unsupported(f"shift of {cx.dtype(0)} (the canonical shifts are unsigned)")
    return binary(cx, "bitshift_left" if direction == "LEFT" else "bitshift_right")


def _variadic(cx: NodeContext, op: str) -> tuple[str, TensorType]:
    present = [i for i in range(cx.num_inputs) if cx.has_input(i)]
    acc, acc_shape = cx.value(present[0]), cx.shape(present[0])
    for i in present[1:]:
        acc_shape = broadcast(cx, acc_shape, cx.shape(i))
        acc = cx.emit(op, [acc, cx.value(i)], TensorType(acc_shape, cx.dtype(0)))
    return acc, TensorType(acc_shape, cx.dtype(0))


@converter("Max", "Min")
def max_min(cx: NodeContext) -> list[Result]:
    op = "maximum" if cx.op_type == "Max" else "minimum"
    ks = known_inputs(cx)
    if ks is not None and len(ks) == 2 and (k := evaluate_known(op, ks, cx.dtype(0))) is not None:
        return [k]
    return [_variadic(cx, op)[0]]


@converter("Sum")
def sum_(cx: NodeContext) -> list[Result]:
    return [_variadic(cx, "add")[0]]


@converter("Mean")
def mean(cx: NodeContext) -> list[Result]:
    total, t = _variadic(cx, "add")
    n = sum(1 for i in range(cx.num_inputs) if cx.has_input(i))
    if n == 1:
        return [total]
    if not t.dtype.startswith(("float", "bfloat")):
        raise cx.unsupported(f"Mean of {t.dtype}")
    return [cx.emit("div", [total, scalar(cx, n, t.dtype)], t)]


@converter("Where")
def where(cx: NodeContext) -> list[Result]:
    shape = broadcast(cx, cx.shape(0), cx.shape(1), cx.shape(2))
    ks = known_inputs(cx)
    if ks is not None and not ks[0].symbolic and not any(k.dtype.startswith(("float", "bfloat")) for k in ks):
        data = np.where(ks[0].numeric(), ks[1].data, ks[2].data)
        return [known_array(np.asarray(data), cx.dtype(1))]
    return [cx.emit("where", [cx.value(0), cx.value(1), cx.value(2)], TensorType(shape, cx.dtype(1)))]

