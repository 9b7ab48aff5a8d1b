"""sparsecc IR -> Relax: ``to_relax(graph)`` builds an IRModule whose ``main(*inputs, *params)`` computes the graph.

Graph inputs come first (``graph.inputs`` order), then every param (``graph.params`` order), all as Relax
vars: weights are not embedded as constants, they travel separately in the artifact. Symbolic dims become
``tvm.tirx.Var``s (one per symbol name, shared by every input), dim expressions ("batch*seq") tirx
expressions.

One lowering function per canonical op, registered by name in ``LOWERINGS`` (the torch.fx-interpreter
style of ``sparsecc.interpreter.torch_ops``): ``fn(cx, *inputs, **attrs)`` gets the Relax values of the
node's inputs (None for an absent optional one) and the node's attributes with their defaults filled in, and
returns one Relax expression or a list (one per output). ``cx`` (a ``Lowering``) knows the node, the declared
output types, and emits through the BlockBuilder. Every function computes exactly what the torch reference
computes (``sparsecc/interpreter/torch_ops.py``); where a Relax op differs (NaN propagation, rounding, index
conventions, pooling windows) the lowering composes other ops or writes a small TE function, and what cannot
be done exactly raises ``UnsupportedOpError``.
"""
from __future__ import annotations

import ast
import math
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np
import tvm
from tvm import relax, te, tirx, topi
from tvm.relax import op as R

from sparsecc.errors import UnsupportedOpError
from sparsecc.ir import encodings
from sparsecc.ir.graph import Dim, Graph, Node, TensorType
from sparsecc.ir.layouts import layout_block
from sparsecc.ir.ops import OPS, REQUIRED

from .kernels import (LANES, WeightFormat, batch_matmul, conv2d_direct, conv2d_packed, conv_patches, conv_w8a8,
                      decode_packed, decode_weight, dense_encoded, dense_nm_w8a8, dense_packed, dense_w4a8, dense_w8a8,
                      input_offsets, quantize_input, unpad, vecmath)

LOWERINGS: dict[str, Callable[..., Any]] = {}

FLOATS = ("float16", "bfloat16", "float32", "float64")
HALF = ("float16", "bfloat16")


def lowering(*names: str) -> Callable:
    def wrap(fn: Callable) -> Callable:
        for n in names:
            LOWERINGS[n] = fn
        return fn
    return wrap


# ---- the lowering context -------------------------------------------------------------------------------
class Lowering:
    """State of one ``to_relax`` call: the BlockBuilder, symbolic dims, and the node being lowered."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.bb = relax.BlockBuilder()
        self.symbols: dict[str, tirx.Var] = {}
        self.node: Node | None = None
        self.env: dict[str, relax.Expr] = {}
        """Relax value of every graph value and param lowered so far (companion params of compressed weights)."""

    # -- dims and types
    def sym(self, name: str) -> tirx.Var:
        if name not in self.symbols:
            self.symbols[name] = tirx.Var(name, "int64")
        return self.symbols[name]

    def dim(self, d: Dim) -> Any:
        """An int, or the tirx expression of a symbolic dim ("batch", "batch*seq")."""
        if isinstance(d, (int, np.integer)):
            return int(d)
        return self._dim_expr(ast.parse(d, mode="eval").body, d)

    def _dim_expr(self, e: ast.AST, text: str) -> Any:
        if isinstance(e, ast.Constant) and isinstance(e.value, int):
            return tirx.IntImm("int64", e.value)
        if isinstance(e, ast.Name):
            return self.sym(e.id)
        if isinstance(e, ast.BinOp):
            a, b = self._dim_expr(e.left, text), self._dim_expr(e.right, text)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.FloorDiv: lambda: tirx.floordiv(a, b), ast.Mod: lambda: tirx.floormod(a, b)}
            if type(e.op) in ops:
                return ops[type(e.op)]()
        raise ValueError(f"unsupported dim expression {text!r}")

    def relax_type(self, t: TensorType) -> relax.TensorType:
        return relax.TensorType([self.dim(d) for d in t.shape], t.dtype)

    def out_type(self, i: int = 0) -> TensorType:
        return self.graph.types[self.node.outputs[i]]

    @property
    def out_dtype(self) -> str:
        return self.out_type(0).dtype

    # -- emitting
    def emit(self, expr: relax.Expr) -> relax.Var:
        return self.bb.emit(expr)

    def te(self, fn: Callable, *args: Any, name: str | None = None, **kwargs: Any) -> relax.Var:
        return self.bb.emit_te(fn, *args, primfunc_name_hint=name or self.node.op, **kwargs)

    def unsupported(self, detail: str) -> UnsupportedOpError:
        node = self.node
        return UnsupportedOpError(node.op, node.name, node.source, detail)


# ---- small helpers on Relax values ----------------------------------------------------------------------
def dtype_of(x: relax.Expr) -> str:
    return str(x.ty.dtype)


def rank_of(x: relax.Expr) -> int:
    return int(x.ty.ndim)


def _int(d: Any) -> Any:
    return int(d.value) if isinstance(d, tirx.IntImm) else d


def shape_of(x: relax.Expr) -> list[Any]:
    """Dims of ``x``: ints where static, tirx expressions where symbolic."""
    return [_int(d) for d in x.ty.shape.values]


def is_float(dtype: str) -> bool:
    return dtype in FLOATS


def is_int(dtype: str) -> bool:
    return dtype.startswith(("int", "uint"))


def const(value: Any, dtype: str) -> relax.Constant:
    return relax.const(value, dtype)


def cast(cx: Lowering, x: relax.Expr, dtype: str) -> relax.Expr:
    """``x.to(dtype)`` with torch's semantics: to bool means ``!= 0`` (not a bit truncation)."""
    if dtype_of(x) == dtype:
        return x
    if dtype == "bool":  # x != 0, and NaN is True as in torch (spelled out: TVM's simplifier turns
        # not(x == 0) into an ordered x != 0, which is False for NaN once the two ops are fused)
        nonzero = R.not_equal(x, const(0, dtype_of(x)))
        return cx.emit(R.logical_or(nonzero, R.isnan(x)) if is_float(dtype_of(x)) else nonzero)
    return cx.emit(R.astype(x, dtype))


def to_bool(cx: Lowering, x: relax.Expr) -> relax.Expr:
    return cast(cx, x, "bool")


def common_dtype(*dtypes: str) -> str:
    """torch's type promotion among tensors of equal standing (enough for the canonical ops)."""
    dts = list(dict.fromkeys(dtypes))
    if len(dts) == 1:
        return dts[0]
    floats = [d for d in dts if is_float(d)]
    if floats:
        if len(floats) == 1:
            return floats[0]
        if set(floats) == {"float16", "bfloat16"}:
            return "float32"
        return max(floats, key=lambda d: FLOATS.index(d))
    non_bool = [d for d in dts if d != "bool"]
    if len(non_bool) == 1:
        return non_bool[0]
    return np.result_type(*[np.dtype(d) for d in non_bool]).name


def promote(cx: Lowering, *xs: relax.Expr, dtype: str | None = None) -> list[relax.Expr]:
    dtype = dtype or common_dtype(*[dtype_of(x) for x in xs])
    return [cast(cx, x, dtype) for x in xs]


def broadcast_shape(shapes: Sequence[Sequence[Any]]) -> list[Any]:
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        non_one = [d for d in dims if not (isinstance(d, int) and d == 1)]
        out.append(non_one[0] if non_one else 1)
    return out


def te_broadcast(fn: Callable, *tensors: te.Tensor, name: str = "T") -> te.Tensor:
    """``fn`` applied elementwise to the tensors, with numpy broadcasting (a TE compute)."""
    shapes = [[_int(d) for d in t.shape] for t in tensors]
    out = broadcast_shape(shapes)

    def broadcast(d: Any, o: Any) -> bool:
        # index a size-1 dim with 0 only where it really broadcasts: an unneeded constant index makes
        # AnnotateTIROpPattern call an elementwise op "broadcast", and FuseOps then keeps it out of a conv's epilogue
        return isinstance(d, int) and d == 1 and not (isinstance(o, int) and o == 1)

    def element(t: te.Tensor, shape: list[Any], idx: Sequence[Any]) -> Any:
        off = len(out) - len(shape)
        return t(*[0 if broadcast(d, out[off + k]) else idx[off + k] for k, d in enumerate(shape)])

    return te.compute(out, lambda *idx: fn(*[element(t, s, idx) for t, s in zip(tensors, shapes)]), name=name)


def elementwise(cx: Lowering, fn: Callable, *xs: relax.Expr, name: str | None = None) -> relax.Var:
    """Emits a TE function computing ``fn(*scalars)`` elementwise over broadcast inputs."""
    return cx.te(lambda *ts: te_broadcast(fn, *ts, name=name or cx.node.op), *xs, name=name)


def upcast_half(cx: Lowering, x: relax.Expr) -> tuple[relax.Expr, str]:
    """float16/bfloat16 -> float32 (torch computes their math in float32 on CPU); returns (x, original dtype)."""
    dt = dtype_of(x)
    return (cast(cx, x, "float32"), dt) if dt in HALF else (x, dt)


def edt(e: Any) -> str:
    """The dtype name of a tirx expression or a te.Tensor."""
    return str(e.dtype) if isinstance(e, te.Tensor) else str(e.ty.dtype)


def fc(value: float, dtype: str) -> tirx.PrimExpr:
    return tirx.const(value, dtype)


def lowest_value(dtype: str) -> tirx.PrimExpr:
    return fc(-math.inf, dtype) if dtype in FLOATS else tirx.min_value(dtype)


def highest_value(dtype: str) -> tirx.PrimExpr:
    return fc(math.inf, dtype) if dtype in FLOATS else tirx.max_value(dtype)


def _nan_max(x: Any, y: Any) -> Any:
    if edt(x) not in FLOATS:
        return tirx.max(x, y)
    return tirx.Select(tirx.any(y > x, tirx.isnan(y)), y, x)


def _nan_min(x: Any, y: Any) -> Any:
    if edt(x) not in FLOATS:
        return tirx.min(x, y)
    return tirx.Select(tirx.any(y < x, tirx.isnan(y)), y, x)


# torch's max/min reductions: start from -inf/+inf (not the lowest finite value) and propagate NaN
max_reducer = te.comm_reducer(_nan_max, lambda dtype: lowest_value(str(dtype)), name="nan_max")
min_reducer = te.comm_reducer(_nan_min, lambda dtype: highest_value(str(dtype)), name="nan_min")


# ---- elementwise unary ----------------------------------------------------------------------------------
def _float_unary(fn: Callable[[Lowering, relax.Expr], relax.Expr]) -> Callable:
    """A float math function: non-float inputs are converted to the declared output dtype first (torch
    promotes ints to float32), half precision is computed in float32 and rounded back."""
    def lower(cx: Lowering, x: relax.Expr, **_: Any) -> relax.Expr:
        out = cx.out_dtype
        x = cast(cx, x, out if is_float(out) else "float32")
        x, dt = upcast_half(cx, x)
        return cast(cx, fn(cx, x), dt)
    return lower


def _relax_float_unary(op: Callable) -> Callable:
    return _float_unary(lambda cx, x: cx.emit(op(x)))


def _te_float_unary(formula: Callable[[Any, str], Any]) -> Callable:
    return _float_unary(lambda cx, x: elementwise(cx, lambda v: formula(v, dtype_of(x)), x))


for _name, _op in {
    "log": R.log, "sqrt": R.sqrt, "rsqrt": R.rsqrt, "sin": R.sin, "cos": R.cos, "tan": R.tan,
    "asin": R.asin, "acos": R.acos, "atan": R.atan, "sinh": R.sinh, "cosh": R.cosh, "tanh": R.tanh,
    "asinh": R.asinh, "acosh": R.acosh, "atanh": R.atanh, "sigmoid": R.sigmoid,
    "silu": R.nn.silu,
}.items():
    LOWERINGS[_name] = _relax_float_unary(_op)


def _softplus(v: Any, dt: str) -> Any:
    # torch: x > 20 ? x : log1p(exp(x))
    return tirx.Select(v > fc(20.0, dt), v, tirx.log1p(tirx.exp(v)))


for _name, _formula in {
    "reciprocal": lambda v, dt: fc(1.0, dt) / v,
    "softplus": _softplus,
    "mish": lambda v, dt: v * tirx.tanh(_softplus(v, dt)),
    "softsign": lambda v, dt: v / (fc(1.0, dt) + tirx.abs(v)),
    "hard_swish": lambda v, dt: v * tirx.min(tirx.max(v + fc(3.0, dt), fc(0.0, dt)), fc(6.0, dt)) / fc(6.0, dt),
}.items():
    LOWERINGS[_name] = _te_float_unary(_formula)


# exp/erf as vectorisable polynomials (kernels/vecmath.py): libm's scalar calls made softmax and GELU 10x slower
LOWERINGS["exp"] = _float_unary(lambda cx, x: cx.te(vecmath.exp, x, name="exp"))
LOWERINGS["erf"] = _float_unary(lambda cx, x: cx.te(vecmath.erf, x, name="erf"))


def _gelu_erf(t: te.Tensor) -> te.Tensor:
    half = tirx.const(0.5, t.dtype)
    scaled = topi.multiply(t, tirx.const(math.sqrt(0.5), t.dtype))
    return topi.multiply(topi.multiply(t, half), topi.add(tirx.const(1.0, t.dtype), vecmath.erf(scaled)))


@lowering("gelu")
def _gelu(cx: Lowering, x: relax.Expr, *, approximate: str = "none") -> relax.Expr:
    if approximate == "none":
        return _float_unary(lambda cx, x: cx.te(_gelu_erf, x, name="gelu"))(cx, x)
    if approximate == "tanh":
        return _relax_float_unary(R.nn.gelu_tanh)(cx, x)
    raise cx.unsupported(f"gelu approximate={approximate!r}")


@lowering("leaky_relu")
def _leaky_relu(cx: Lowering, x: relax.Expr, *, alpha: float = 0.01) -> relax.Expr:
    return _te_float_unary(lambda v, dt: tirx.Select(v > fc(0.0, dt), v, v * fc(alpha, dt)))(cx, x)


@lowering("elu")
def _elu(cx: Lowering, x: relax.Expr, *, alpha: float = 1.0) -> relax.Expr:
    return _te_float_unary(lambda v, dt: tirx.Select(v > fc(0.0, dt), v, fc(alpha, dt) * (tirx.exp(v) - fc(1.0, dt))))(
        cx, x)


@lowering("celu")
def _celu(cx: Lowering, x: relax.Expr, *, alpha: float = 1.0) -> relax.Expr:
    return _te_float_unary(lambda v, dt: tirx.Select(
        v > fc(0.0, dt), v, fc(alpha, dt) * (tirx.exp(v / fc(alpha, dt)) - fc(1.0, dt))))(cx, x)


@lowering("selu")
def _selu(cx: Lowering, x: relax.Expr, *, alpha: float, gamma: float) -> relax.Expr:
    return _te_float_unary(lambda v, dt: fc(gamma, dt) * tirx.Select(
        v > fc(0.0, dt), v, fc(alpha, dt) * (tirx.exp(v) - fc(1.0, dt))))(cx, x)


@lowering("hard_sigmoid")
def _hard_sigmoid(cx: Lowering, x: relax.Expr, *, alpha: float = 0.2, beta: float = 0.5) -> relax.Expr:
    return _te_float_unary(lambda v, dt: _clamp(fc(alpha, dt) * v + fc(beta, dt), fc(0.0, dt), fc(1.0, dt)))(cx, x)


@lowering("thresholded_relu")
def _thresholded_relu(cx: Lowering, x: relax.Expr, *, alpha: float = 1.0) -> relax.Expr:
    return _te_float_unary(lambda v, dt: tirx.Select(v > fc(alpha, dt), v, fc(0.0, dt)))(cx, x)


def _clamp(v: Any, lo: Any, hi: Any) -> Any:
    """torch.clamp: min(max(v, lo), hi), NaN propagates."""
    if lo is not None:
        v = tirx.Select(v < lo, lo, v)
    if hi is not None:
        v = tirx.Select(v > hi, hi, v)
    return v


@lowering("clip")
def _clip(cx: Lowering, x: relax.Expr, *, min: Any = None, max: Any = None) -> relax.Expr:  # noqa: A002
    dt = dtype_of(x)
    bounds = []
    for b in (min, max):
        if b is not None and not is_float(dt) and float(b) != int(b) and math.isfinite(b):
            raise cx.unsupported(f"clip of {dt} with a fractional bound {b}")
        if b is None or (not is_float(dt) and not math.isfinite(b)):
            bounds.append(None)  # an infinite bound on an integer tensor clips nothing
        else:
            bounds.append(tirx.const(b if is_float(dt) else int(b), dt))
    return elementwise(cx, lambda v: _clamp(v, *bounds), x)


@lowering("neg")
def _neg(cx: Lowering, x: relax.Expr) -> relax.Expr:
    return cx.emit(R.negative(x))


@lowering("abs")
def _abs(cx: Lowering, x: relax.Expr) -> relax.Expr:
    return x if dtype_of(x) == "bool" or dtype_of(x).startswith("uint") else cx.emit(R.abs(x))


@lowering("relu")
def _relu(cx: Lowering, x: relax.Expr) -> relax.Expr:
    dt = dtype_of(x)
    return elementwise(cx, lambda v: tirx.Select(v < tirx.const(0, dt), tirx.const(0, dt), v), x)  # NaN stays NaN


@lowering("sign")
def _sign(cx: Lowering, x: relax.Expr) -> relax.Expr:
    dt = dtype_of(x)
    zero, one = tirx.const(0, dt), tirx.const(1, dt)
    if dt.startswith("uint"):
        return elementwise(cx, lambda v: tirx.Select(v > zero, one, zero), x)
    # (0 < x) - (x < 0), like torch; NaN -> NaN for floats
    return elementwise(cx, lambda v: tirx.Select(v > zero, one, tirx.Select(v < zero, -one, v * zero)), x)


def _rounding(op: Callable) -> Callable:
    def lower(cx: Lowering, x: relax.Expr) -> relax.Expr:
        if not is_float(dtype_of(x)):
            return x  # integers are already integral (torch returns them unchanged)
        x, dt = upcast_half(cx, x)
        return cast(cx, cx.emit(op(x)), dt)
    return lower


LOWERINGS["floor"] = _rounding(R.floor)
LOWERINGS["ceil"] = _rounding(R.ceil)
LOWERINGS["round"] = _rounding(R.round)  # TVM's round is nearbyint: half to even


@lowering("logical_not")
def _logical_not(cx: Lowering, x: relax.Expr) -> relax.Expr:
    return cx.emit(R.logical_not(to_bool(cx, x)))


@lowering("bitwise_not")
def _bitwise_not(cx: Lowering, x: relax.Expr) -> relax.Expr:
    if dtype_of(x) == "bool":
        return cx.emit(R.logical_not(x))
    if is_float(dtype_of(x)):
        raise cx.unsupported(f"bitwise_not of {dtype_of(x)}")
    return cx.emit(R.bitwise_not(x))


@lowering("isnan")
def _isnan(cx: Lowering, x: relax.Expr) -> relax.Expr:
    if not is_float(dtype_of(x)):
        return cx.emit(R.zeros(relax.ShapeExpr(shape_of(x)), "bool"))
    return cx.emit(R.isnan(x))


@lowering("isinf")
def _isinf(cx: Lowering, x: relax.Expr, *, detect_positive: bool = True, detect_negative: bool = True) -> relax.Expr:
    dt = dtype_of(x)
    if not is_float(dt) or not (detect_positive or detect_negative):
        return cx.emit(R.zeros(relax.ShapeExpr(shape_of(x)), "bool"))
    if detect_positive and detect_negative:
        return cx.emit(R.isinf(x))
    inf = fc(math.inf if detect_positive else -math.inf, dt)
    return elementwise(cx, lambda v: v == inf, x)


# ---- elementwise binary ---------------------------------------------------------------------------------
def _arith(op: Callable, bool_op: Callable | None = None) -> Callable:
    def lower(cx: Lowering, a: relax.Expr, b: relax.Expr) -> relax.Expr:
        a, b = promote(cx, a, b)
        if dtype_of(a) == "bool":
            if bool_op is None:
                raise cx.unsupported("arithmetic on bool tensors")
            return cx.emit(bool_op(a, b))
        return cx.emit(op(a, b))
    return lower


LOWERINGS["add"] = _arith(R.add, R.logical_or)
LOWERINGS["sub"] = _arith(R.subtract)
LOWERINGS["mul"] = _arith(R.multiply, R.logical_and)


def _int_guarded(fn: Callable) -> Callable:
    """Integer division-like scalar fn, made safe from SIGFPE: b == 0 gives 0 (torch raises), and
    b == -1 is computed as a wrapped negation (INT_MIN / -1 traps on x86)."""
    def guarded(a: Any, b: Any) -> Any:
        dt = edt(b)
        zero, one = tirx.const(0, dt), tirx.const(1, dt)
        safe_b = tirx.Select(b == zero, one, b)
        if dt.startswith("int"):
            safe_b = tirx.Select(b == -one, one, safe_b)
        r = fn(a, safe_b)
        if dt.startswith("int"):
            r = tirx.Select(b == -one, -a if fn is tirx.truncdiv else zero, r)
        return tirx.Select(b == zero, zero, r)
    return guarded


@lowering("div")
def _div(cx: Lowering, a: relax.Expr, b: relax.Expr) -> relax.Expr:
    a, b = promote(cx, a, b)
    if is_float(dtype_of(a)):
        return cx.emit(R.divide(a, b))
    if dtype_of(a) == "bool":
        raise cx.unsupported("integer division of bool tensors")
    return elementwise(cx, _int_guarded(tirx.truncdiv), a, b)


@lowering("mod")
def _mod(cx: Lowering, a: relax.Expr, b: relax.Expr, *, fmod: bool = False) -> relax.Expr:
    a, b = promote(cx, a, b)
    dt = dtype_of(a)
    if is_float(dt):
        a, dt = upcast_half(cx, a)
        b, _ = upcast_half(cx, b)
        fdt = dtype_of(a)
        zero = fc(0.0, fdt)

        def remainder(x: Any, y: Any) -> Any:
            # torch: m = fmod(a, b); if m != 0 and (b < 0) != (m < 0): m += b
            m = tirx.truncmod(x, y)  # on floats: LLVM frem / C fmod, exact
            if fmod:
                return m
            signs_differ = tirx.any(tirx.all(y < zero, m > zero), tirx.all(y >= zero, m < zero))
            return tirx.Select(signs_differ, m + y, m)
        return cast(cx, elementwise(cx, remainder, a, b), dt)
    if dt == "bool":
        raise cx.unsupported("mod of bool tensors")
    return elementwise(cx, _int_guarded(tirx.truncmod if fmod else tirx.floormod), a, b)


@lowering("pow")
def _pow(cx: Lowering, a: relax.Expr, b: relax.Expr) -> relax.Expr:
    # torch.pow(a, b).to(a.dtype)
    out = cx.out_dtype
    ct = common_dtype(dtype_of(a), dtype_of(b))
    if is_float(ct):
        a2, b2 = promote(cx, a, b, dtype=ct)
        a2, _ = upcast_half(cx, a2)
        b2, _ = upcast_half(cx, b2)
        return cast(cx, cx.emit(R.power(a2, b2)), out)
    if ct == "bool":
        raise cx.unsupported("pow of bool tensors")
    # integer pow: exact through float64 while |result| < 2**53 (torch wraps on overflow)
    a2, b2 = promote(cx, a, b, dtype=ct)

    def ipow(x: Any, y: Any) -> Any:
        r = tirx.nearbyint(tirx.pow(x.astype("float64"), y.astype("float64")))
        return r.astype(ct)
    return cast(cx, elementwise(cx, ipow, a2, b2), out)


def _nan_select(pick: Callable) -> Callable:
    def fn(x: Any, y: Any) -> Any:
        r = pick(x, y)
        if edt(x) in FLOATS:
            r = tirx.Select(tirx.isnan(x), x, tirx.Select(tirx.isnan(y), y, r))  # torch propagates NaN
        return r
    return fn


_EXTREMA = {"maximum": (R.logical_or, tirx.max), "minimum": (R.logical_and, tirx.min)}


@lowering(*_EXTREMA)
def _extremum(cx: Lowering, a: relax.Expr, b: relax.Expr) -> relax.Expr:
    on_bool, on_numbers = _EXTREMA[cx.node.op]
    a, b = promote(cx, a, b)
    if dtype_of(a) == "bool":
        return cx.emit(on_bool(a, b))
    return elementwise(cx, _nan_select(on_numbers), a, b)


def _compare(op: Callable) -> Callable:
    def lower(cx: Lowering, a: relax.Expr, b: relax.Expr) -> relax.Expr:
        a, b = promote(cx, a, b)
        if dtype_of(a) == "bool":  # TVM's LLVM codegen mis-compiles comparisons of i1
            a, b = cast(cx, a, "uint8"), cast(cx, b, "uint8")
        return cx.emit(op(a, b))
    return lower


for _name, _op in {"equal": R.equal, "less": R.less, "less_equal": R.less_equal, "greater": R.greater,
                   "greater_equal": R.greater_equal}.items():
    LOWERINGS[_name] = _compare(_op)


def _logical(op: Callable) -> Callable:
    def lower(cx: Lowering, a: relax.Expr, b: relax.Expr) -> relax.Expr:
        return cx.emit(op(to_bool(cx, a), to_bool(cx, b)))
    return lower


LOWERINGS["logical_and"] = _logical(R.logical_and)
LOWERINGS["logical_or"] = _logical(R.logical_or)
LOWERINGS["logical_xor"] = _logical(R.logical_xor)


def _bitwise(op: Callable, bool_op: Callable) -> Callable:
    def lower(cx: Lowering, a: relax.Expr, b: relax.Expr) -> relax.Expr:
        a, b = promote(cx, a, b)
        dt = dtype_of(a)
        if dt == "bool":
            return cx.emit(bool_op(a, b))
        if is_float(dt):
            raise cx.unsupported(f"bitwise op on {dt}")
        return cx.emit(op(a, b))
    return lower


LOWERINGS["bitwise_and"] = _bitwise(R.bitwise_and, R.logical_and)
LOWERINGS["bitwise_or"] = _bitwise(R.bitwise_or, R.logical_or)
LOWERINGS["bitwise_xor"] = _bitwise(R.bitwise_xor, R.logical_xor)


def _shift(left: bool) -> Callable:
    def lower(cx: Lowering, a: relax.Expr, b: relax.Expr) -> relax.Expr:
        a, b = promote(cx, a, b)
        dt = dtype_of(a)
        if not is_int(dt):
            raise cx.unsupported(f"bit shift of {dt}")
        bits = np.dtype(dt).itemsize * 8
        signed = dt.startswith("int")

        def shift(x: Any, y: Any) -> Any:
            # torch: a shift by a negative amount or by >= the width gives 0 (left) or the sign fill (right)
            max_shift = bits if left else bits - int(signed)
            bad = y >= tirx.const(max_shift, dt)
            if signed:
                bad = tirx.any(bad, y < tirx.const(0, dt))
            safe = tirx.Select(bad, tirx.const(0, dt), y)
            if left:
                return tirx.Select(bad, tirx.const(0, dt), x << safe)
            fill = x >> tirx.const(bits - 1, dt) if signed else tirx.const(0, dt)
            return tirx.Select(bad, fill, x >> safe)
        return elementwise(cx, shift, a, b)
    return lower


LOWERINGS["bitshift_left"] = _shift(left=True)
LOWERINGS["bitshift_right"] = _shift(left=False)


@lowering("prelu")
def _prelu(cx: Lowering, a: relax.Expr, b: relax.Expr) -> relax.Expr:
    b = cast(cx, b, dtype_of(a))
    zero = const(0, dtype_of(a))
    return cx.emit(R.where(R.greater_equal(a, zero), a, R.multiply(a, b)))


@lowering("where")
def _where(cx: Lowering, cond: relax.Expr, a: relax.Expr, b: relax.Expr) -> relax.Expr:
    a, b = promote(cx, a, b)
    return cx.emit(R.where(to_bool(cx, cond), a, b))


@lowering("cast")
def _cast(cx: Lowering, x: relax.Expr, *, to: str) -> relax.Expr:
    # float -> int: LLVM's fptosi truncates toward zero like C / torch (out-of-range values are undefined in both)
    return cast(cx, x, to)


# ---- reductions -----------------------------------------------------------------------------------------
def _reduction(op: Callable, empty_axes_is_all: bool = True, accumulate_in_out_dtype: bool = False) -> Callable:
    """``op(cx, x, axes, keepdims)`` emits the reduction; this wrapper handles torch's conventions."""
    def lower(cx: Lowering, x: relax.Expr, *, axes: Sequence[int] | None = None, keepdims: bool = True) -> relax.Expr:
        rank = rank_of(x)
        if rank == 0:
            return x
        if axes is not None and len(axes) == 0:
            if not empty_axes_is_all:
                return x
            axes = None  # torch's dim=[] reduces every axis
        if accumulate_in_out_dtype:  # torch sums bool/int32 into int64 when the result type says so
            x = cast(cx, x, cx.out_dtype)
        x, dt = upcast_half(cx, x)
        axes = list(range(rank)) if axes is None else [int(a) for a in axes]
        return cast(cx, op(cx, x, axes, keepdims), dt)
    return lower


def _relax_reduce(op: Callable) -> Callable:
    return lambda cx, x, axes, keepdims: cx.emit(op(x, axes, keepdims))


def te_reduce(t: te.Tensor, reducer: Callable, axes: Sequence[int], keepdims: bool) -> te.Tensor:
    rank = len(t.shape)
    rs = {a: te.reduce_axis((0, t.shape[a]), name=f"r{a}") for a in axes}
    shape = [1 if a in rs else d for a, d in enumerate(t.shape)] if keepdims else [
        d for a, d in enumerate(t.shape) if a not in rs]

    def fn(*i: Any) -> Any:
        it, idx = iter(i), []
        for a in range(rank):
            if a in rs:
                idx.append(rs[a])
                if keepdims:
                    next(it)
            else:
                idx.append(next(it))
        return reducer(t(*idx), axis=list(rs.values()))
    return te.compute(shape, lambda *i: fn(*i), name="reduce")


def _te_reduce(reducer: Callable) -> Callable:
    return lambda cx, x, axes, keepdims: cx.te(lambda t: te_reduce(t, reducer, axes, keepdims), x)


LOWERINGS["reduce_sum"] = _reduction(_relax_reduce(R.sum), accumulate_in_out_dtype=True)
LOWERINGS["reduce_mean"] = _reduction(_relax_reduce(R.mean))
LOWERINGS["reduce_max"] = _reduction(_te_reduce(max_reducer))  # NaN propagates, -inf stays -inf
LOWERINGS["reduce_min"] = _reduction(_te_reduce(min_reducer))
LOWERINGS["reduce_prod"] = _reduction(_relax_reduce(R.prod), empty_axes_is_all=False, accumulate_in_out_dtype=True)


def _argreduce(topi_fn: Callable) -> Callable:
    def lower(cx: Lowering, x: relax.Expr, *, axis: int = 0, keepdims: bool = True,
              select_last_index: bool = False) -> relax.Expr:
        if rank_of(x) == 0:
            return cx.emit(R.zeros(relax.ShapeExpr([]), "int64"))
        if dtype_of(x) == "bool":
            x = cast(cx, x, "uint8")
        idx = cx.te(lambda t: topi_fn(t, axis=axis, keepdims=keepdims, select_last_index=select_last_index), x)
        return cast(cx, idx, "int64")
    return lower


LOWERINGS["argmax"] = _argreduce(topi.argmax)
LOWERINGS["argmin"] = _argreduce(topi.argmin)


@lowering("cumsum")
def _cumsum(cx: Lowering, x: relax.Expr, *, axis: int, exclusive: bool = False, reverse: bool = False) -> relax.Expr:
    out = cx.out_dtype
    acc = "int64" if not is_float(dtype_of(x)) else dtype_of(x)  # torch accumulates integers in int64
    x = cast(cx, x, acc)
    if reverse:
        x = cx.emit(R.flip(x, axis))
    y = cx.emit(R.cumsum(x, axis=axis, exclusive=exclusive))
    if reverse:
        y = cx.emit(R.flip(y, axis))
    return cast(cx, y, out)


# ---- linear algebra -------------------------------------------------------------------------------------
def _acc_dtype(dt: str) -> str | None:
    return "float32" if dt in HALF else None  # accumulate half precision in float32, like torch on CPU


@lowering("matmul")
def _matmul(cx: Lowering, a: relax.Expr, b: relax.Expr) -> relax.Expr:
    a, b = promote(cx, a, b)
    dt = dtype_of(a)
    n = shape_of(b)[-1]
    if dt == "float32" and rank_of(a) >= 2 and rank_of(b) >= 2 and isinstance(n, int) and n % LANES == 0:
        return cx.te(batch_matmul, a, b, name="matmul")  # the register-tiled template (kernels/matmul.py)
    return cast(cx, cx.emit(R.matmul(a, b, out_dtype=_acc_dtype(dt))), dt)


@lowering("linear")
def _linear(cx: Lowering, x: relax.Expr, weight: relax.Expr, bias: relax.Expr | None = None) -> relax.Expr:
    dt = dtype_of(x)
    if encodings.is_compressed(cx.graph, cx.node.inputs[1]):
        return _linear_encoded(cx, x, weight, bias)
    if _param_layout(cx, cx.node.inputs[1]) is not None:
        return _linear_packed(cx, x, weight, bias)
    y = cx.emit(R.matmul(x, R.permute_dims(weight), out_dtype=_acc_dtype(dt)))
    if bias is not None:
        y = cx.emit(R.add(y, cast(cx, bias, dtype_of(y))))
    return cast(cx, y, dt)


def _param_layout(cx: Lowering, name: str) -> str | None:
    param = cx.graph.params.get(name)
    return param.encoding.meta.get("layout") if param is not None else None


def _linear_packed(cx: Lowering, x: relax.Expr, weight: relax.Expr, bias: relax.Expr | None) -> relax.Expr:
    """``linear`` on an ``OI{b}o``-packed weight: the ``kernels.matmul`` template (tiles rows of x's last leading
    axis, so a symbolic batch in front keeps the register tile's bounds static)."""
    vector = rank_of(x) == 1
    if vector:
        x = cx.emit(R.reshape(x, [1, shape_of(x)[0]]))
    args = [x, weight] + ([cast(cx, bias, dtype_of(x))] if bias is not None else [])
    y = cx.te(dense_packed, *args, name="dense_packed")
    return cx.emit(R.reshape(y, [shape_of(y)[1]])) if vector else y


def _encoded(cx: Lowering, name: str) -> tuple[WeightFormat, list[relax.Expr]]:
    """The format of compressed param ``name`` and the Relax values of its companions (kernel argument order)."""
    meta = cx.graph.params[name].encoding.meta
    lanes = layout_block(meta["layout"]) if "layout" in meta else None
    companions = [cx.env[meta[k]] for k in encodings.COMPANIONS if k in meta]
    return WeightFormat.from_meta(meta, lanes), companions


OPAQUE = 8
"""``relax.transform.AnnotateTIROpPattern``'s ``kOpaque``: a PrimFunc with this ``op_pattern`` fuses with nothing."""

DECODE_ROWS = 16
"""From this many input rows (a static count, or a symbolic one with a static factor this big: ``batch x 128``
tokens) a linear on an N:M weight decodes the weight once per call into a dense packed one for the dense GEMM:
reading it as stored costs a select chain per weight in every row tile (MiniLM b1 2:4+int8 took 2.2x dense)."""


def _static_rows(x: relax.Expr) -> int:
    """The product of the static leading dims of ``x`` (a lower bound on its row count; 0 for a 1-D ``x``)."""
    rows = 1 if rank_of(x) >= 2 else 0
    for d in shape_of(x)[:-1]:
        rows *= d if isinstance(d, int) else 1
    return rows


def _linear_encoded(cx: Lowering, x: relax.Expr, weight: relax.Expr, bias: relax.Expr | None) -> relax.Expr:
    """``linear`` on a compressed weight: on CPU (weights packed by ``relayout``) the kernel reads the encoding as
    stored, except N:M at ``DECODE_ROWS`` rows or more (decoded once per call, then the dense GEMM); elsewhere the
    weight is decoded (``kernels.encoded``) and multiplied densely. A W8A8 weight quantizes the input first; a
    packed N:M one then multiplies its kept codes only (``dense_nm_w8a8``)."""
    fmt, companions = _encoded(cx, cx.node.inputs[1])
    if dtype_of(x) != "float32":
        raise cx.unsupported(f"a compressed weight with a {dtype_of(x)} input (float32 only)")
    meta = cx.graph.params[cx.node.inputs[1]].encoding.meta
    act = meta.get("activation")
    if act is not None:  # codes as int16 for a weight packed in pairs of inputs (AVX2's vpmaddwd)
        pairs = fmt.lanes is not None and fmt.bits == 8 and shape_of(weight)[3] == 2
        xq = cx.te(partial(quantize_input, scale=act["scale"], zero=act["zero"], dtype="int16" if pairs else "uint8"),
                   x, name="quantize_input")
        args = [xq, weight, *companions] + ([bias] if bias is not None else [])
        bits = fmt.bits
        if fmt.nm is not None and fmt.lanes is not None:  # the kept codes only, inputs picked per lane
            if encodings.codes_hold_picks(meta):  # the picks are the weight's own bytes
                args.insert(2, weight)
            return cx.te(partial(dense_nm_w8a8, scale=act["scale"], zero=act["zero"], nm=fmt.nm, bits=bits),
                         *args, name=f"dense_nm_w{bits}a8")
        if fmt.nm is not None:  # plain: its codes decoded to dense int8 ones, then TVM's loops (correct, not fast)
            codes = cx.te(partial(decode_weight, fmt=fmt, shape=[fmt.rows, fmt.reduction], codes=True), weight,
                          companions[0], name="decode_codes")
            args, bits = [xq, codes, *args[3:]], 8
        if bits == 4 and fmt.lanes is not None:  # nibbles summed as stored, corrected per input row
            offsets = cx.te(input_offsets, xq, name="input_offsets", primfunc_attrs={"op_pattern": OPAQUE})
            return cx.te(partial(dense_w4a8, scale=act["scale"], zero=act["zero"], lanes=fmt.lanes), xq, offsets,
                         *args[1:], name="dense_w4a8")
        return cx.te(partial(dense_w8a8, scale=act["scale"], zero=act["zero"], lanes=fmt.lanes, bits=bits),
                     *args, name=f"dense_w{bits}a8")
    if fmt.lanes is not None and fmt.nm is not None and _static_rows(x) >= DECODE_ROWS:
        packed = cx.te(partial(decode_packed, fmt=fmt), weight, *companions, name="decode_packed")
        return _linear_packed(cx, x, packed, bias)
    if fmt.lanes is not None and rank_of(x) >= 2:
        args = [x, weight, *companions] + ([bias] if bias is not None else [])
        return cx.te(partial(dense_encoded, fmt=fmt, has_bias=bias is not None), *args, name="dense_encoded")
    dense = cx.te(partial(decode_weight, fmt=fmt, shape=[fmt.rows, fmt.reduction]), weight, *companions,
                  name="decode_weight")
    y = cx.emit(R.matmul(x, R.permute_dims(dense)))
    return y if bias is None else cx.emit(R.add(y, bias))


@lowering("einsum")
def _einsum(cx: Lowering, *operands: relax.Expr, equation: str) -> relax.Expr:
    ops = promote(cx, *operands)
    lhs = equation.replace(" ", "").split("->")[0].split(",")
    for term in lhs:
        letters = [c for c in term if c.isalpha()]
        if len(letters) != len(set(letters)):
            raise cx.unsupported(f"einsum {equation!r}: a repeated index within one operand (a diagonal)")
    ops = [upcast_half(cx, o)[0] for o in ops]
    return cast(cx, cx.emit(R.einsum(relax.Tuple(ops), equation.replace(" ", ""))), cx.out_dtype)


# ---- convolution and pooling ----------------------------------------------------------------------------
_CONV = {1: R.nn.conv1d, 2: R.nn.conv2d, 3: R.nn.conv3d}
_LAYOUTS = {1: ("NCW", "OIW"), 2: ("NCHW", "OIHW"), 3: ("NCDHW", "OIDHW")}


def _spatial(cx: Lowering, x: relax.Expr) -> int:
    n = rank_of(x) - 2
    if n not in (1, 2, 3):
        raise cx.unsupported(f"{n} spatial dims (1-3 supported)")
    return n


def _add_channel_bias(cx: Lowering, y: relax.Expr, bias: relax.Expr | None) -> relax.Expr:
    if bias is None:
        return y
    n = rank_of(y) - 2
    b = cx.emit(R.reshape(cast(cx, bias, dtype_of(y)), [-1] + [1] * n))
    return cx.emit(R.add(y, b))


def _conv_core(cx: Lowering, x: relax.Expr, weight: relax.Expr, strides: Sequence[int], pads: Sequence[int],
               dilations: Sequence[int], groups: int, packed: bool = False) -> relax.Expr:
    n = _spatial(cx, x)
    dt = dtype_of(x)
    if (n == 2 and list(shape_of(weight)[2:]) == [1, 1] and not any(pads) and list(strides) != [1, 1]
            and all(isinstance(d, int) for d in shape_of(x)[2:])):
        # a strided 1 x 1 convolution reads every s-th pixel: take those first, then it reads pixel for pixel
        x = cx.emit(R.strided_slice(x, axes=[2, 3], begin=[0, 0], end=shape_of(x)[2:], strides=list(strides)))
        strides = [1, 1]
    if packed:  # relayout packed the weight OIHW16o (a narrow float32 conv2d, groups 1)
        return cx.te(conv2d_packed, x, weight, list(strides), list(pads), list(dilations), name="conv2d")
    if n == 2 and dt == "float32" and all(isinstance(d, int) for d in shape_of(x)[1:] + shape_of(weight)):
        # the vectorised template (kernels/conv.py)
        return cx.te(conv2d_direct, x, cast(cx, weight, dt), list(strides), list(pads), list(dilations), groups,
                     name="conv2d")
    data_layout, kernel_layout = _LAYOUTS[n]
    y = cx.emit(_CONV[n](x, cast(cx, weight, dt), strides=list(strides), padding=list(pads),
                         dilation=list(dilations), groups=groups, data_layout=data_layout,
                         kernel_layout=kernel_layout, out_dtype=_acc_dtype(dt) or dt))
    return y


@lowering("conv")
def _conv(cx: Lowering, x: relax.Expr, weight: relax.Expr, bias: relax.Expr | None = None, *,
          strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int], groups: int = 1) -> relax.Expr:
    dt = dtype_of(x)
    if encodings.is_compressed(cx.graph, cx.node.inputs[1]):
        fmt, companions = _encoded(cx, cx.node.inputs[1])
        meta = cx.graph.params[cx.node.inputs[1]].encoding.meta
        if "activation" in meta:
            return _conv_w8a8(cx, x, weight, companions, bias, meta, strides, pads, dilations, groups)
        weight = cx.te(partial(decode_weight, fmt=fmt, shape=meta["shape"]), weight, *companions,
                       name="decode_weight")
    packed = _param_layout(cx, cx.node.inputs[1]) is not None and not encodings.is_compressed(cx.graph,
                                                                                              cx.node.inputs[1])
    y = _conv_core(cx, x, weight, strides, pads, dilations, groups, packed)
    return cast(cx, _add_channel_bias(cx, y, bias), dt)


def _conv_w8a8(cx: Lowering, x: relax.Expr, weight: relax.Expr, companions: list[relax.Expr],
               bias: relax.Expr | None, meta: dict, strides: Sequence[int], pads: Sequence[int],
               dilations: Sequence[int], groups: int) -> relax.Expr:
    """A W8A8 convolution (``kernels/w8a8.py``): quantize, packed patches, the integer GEMM, drop the padding."""
    shape = shape_of(x)
    if groups != 1 or len(shape) != 4 or dtype_of(x) != "float32" or not all(isinstance(d, int) for d in shape[1:]):
        raise cx.unsupported(f"W8A8 convolution of a {dtype_of(x)} input {shape} with groups={groups} (2-D, "
                             "float32, static channels and spatial dims, groups 1 only)")
    if "layout" in meta:
        raise cx.unsupported(f"W8A8 convolution weight in layout {meta['layout']} (its kernel reads it plain)")
    o, *kernel = meta["shape"][:1] + meta["shape"][2:]
    out_hw = tuple(int(d) for d in cx.out_type(0).shape[2:])
    act = meta["activation"]
    narrow = meta["quant"]["bits"] == 7  # W7A8: patches k-minor, the operand vpmaddubsw takes
    xq = cx.te(partial(quantize_input, scale=act["scale"], zero=act["zero"]), x, name="quantize_input")
    # opaque to FuseOps: fused, the producers (quantize, the previous layer's epilogue) would run once per tap
    patches = cx.te(partial(conv_patches, kernel=tuple(kernel), strides=list(strides), pads=list(pads),
                            dilations=list(dilations), out_hw=out_hw, zero=act["zero"], k_minor=narrow), xq,
                    name="conv_patches", primfunc_attrs={"op_pattern": OPAQUE})
    codes = cx.emit(R.reshape(weight, [o, -1]))
    y = cx.te(partial(conv_w8a8, scale=act["scale"], zero=act["zero"], narrow=narrow),
              *([patches, codes, *companions] + ([bias] if bias is not None else [])),
              name=f"conv_w{meta['quant']['bits']}a8")
    return cx.te(partial(unpad, out_hw=out_hw), y, name="unpad")


@lowering("conv_transpose")
def _conv_transpose(cx: Lowering, x: relax.Expr, weight: relax.Expr, bias: relax.Expr | None = None, *,
                    strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int],
                    output_padding: Sequence[int], groups: int = 1) -> relax.Expr:
    """As a convolution: zero-insert the input by the stride, pad it by dilation*(k-1) minus the pads (a negative
    amount crops), and convolve (stride 1) with the kernel flipped and its in/out channels swapped per group."""
    n = _spatial(cx, x)
    dt = dtype_of(x)
    w_shape = shape_of(weight)
    if not all(isinstance(d, int) for d in w_shape):
        raise cx.unsupported("conv_transpose with a symbolic kernel shape")
    cin, cout_g, kernel = w_shape[0], w_shape[1], w_shape[2:]
    # weight [Cin, Cout/g, *k] -> [Cout, Cin/g, *k], spatially flipped
    w = cx.emit(R.reshape(cast(cx, weight, dt), [groups, cin // groups, cout_g] + kernel))
    w = cx.emit(R.permute_dims(w, [0, 2, 1] + list(range(3, 3 + n))))
    w = cx.emit(R.reshape(w, [groups * cout_g, cin // groups] + kernel))
    for axis in range(2, 2 + n):
        w = cx.emit(R.flip(w, axis))
    if any(s != 1 for s in strides):
        x = cx.te(lambda t: topi.nn.dilate(t, [1, 1] + list(strides)), x, name="dilate")
    begin, end = list(pads[:n]), list(pads[n:])
    full = [d * (k - 1) for d, k in zip(dilations, kernel)]
    pad_begin = [f - b for f, b in zip(full, begin)]
    pad_end = [f - e + op for f, e, op in zip(full, end, output_padding)]
    if any(p < 0 for p in pad_begin + pad_end):  # crop through the generic pad, convolve unpadded
        x = _pad_te(cx, x, [0, 0] + pad_begin + [0, 0] + pad_end, "constant", 0.0)
        pad_begin, pad_end = [0] * n, [0] * n
    y = _conv_core(cx, x, w, [1] * n, pad_begin + pad_end, dilations, groups)
    return cast(cx, _add_channel_bias(cx, y, bias), dt)


def _static_spatial(cx: Lowering, x: relax.Expr) -> list[int]:
    dims = shape_of(x)[2:]
    if not all(isinstance(d, int) for d in dims):
        raise cx.unsupported("pooling over symbolic spatial dims")
    return dims


def _pool_out_size(size: int, k_eff: int, stride: int, total_pad: int, ceil_mode: bool, limit: int) -> int:
    """torch's pooling_output_shape; ``limit``: a ceil-mode window must start before it."""
    out = (size + total_pad - k_eff + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= limit:
        out -= 1
    return out


def _in_range(idx: Any, lo: Any, hi: Any) -> Any:
    return tirx.all(idx >= lo, idx < hi)


@lowering("max_pool")
def _max_pool(cx: Lowering, x: relax.Expr, *, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
              dilations: Sequence[int], ceil_mode: bool = False) -> relax.Expr:
    n = _spatial(cx, x)
    sizes = _static_spatial(cx, x)
    begin, end = list(pads[:n]), list(pads[n:])
    # the reference pads with -inf itself (window limit: the padded input) unless the pads are symmetric
    # and at most half the kernel (torch's own padding; window limit: the input plus the left pad)
    torch_pads = begin == end and all(2 * b <= k for b, k in zip(begin, kernel))
    out = []
    for i in range(n):
        k_eff = dilations[i] * (kernel[i] - 1) + 1
        limit = sizes[i] + begin[i] + (0 if torch_pads else end[i])
        out.append(_pool_out_size(sizes[i], k_eff, strides[i], begin[i] + end[i], ceil_mode, limit))

    def compute(t: te.Tensor) -> te.Tensor:
        dt = edt(t)
        lowest = lowest_value(dt)
        rs = [te.reduce_axis((0, k), name=f"r{i}") for i, k in enumerate(kernel)]

        def fn(nn: Any, c: Any, *o: Any) -> Any:
            pos = [o[i] * strides[i] + rs[i] * dilations[i] - begin[i] for i in range(n)]
            inside = tirx.all(*[_in_range(p, 0, sizes[i]) for i, p in enumerate(pos)])
            safe = [tirx.max(tirx.min(p, sizes[i] - 1), 0) for i, p in enumerate(pos)]
            v = tirx.Select(inside, t(nn, c, *safe), lowest)
            return max_reducer(v, axis=rs)
        return te.compute(list(t.shape[:2]) + out, lambda *i: fn(*i), name="max_pool")

    return cx.te(compute, x)


@lowering("avg_pool")
def _avg_pool(cx: Lowering, x: relax.Expr, *, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
              ceil_mode: bool = False, count_include_pad: bool = False) -> relax.Expr:
    """The reference zero-pads the input, pools it unpadded (a ceil-mode window is cut at the padded input's end)
    and divides by the window's size inside the padded input, or by its count of real elements."""
    n = _spatial(cx, x)
    sizes = _static_spatial(cx, x)
    begin, end = list(pads[:n]), list(pads[n:])
    padded = [s + b + e for s, b, e in zip(sizes, begin, end)]
    out = [_pool_out_size(padded[i], kernel[i], strides[i], 0, ceil_mode, padded[i]) for i in range(n)]
    x, dt = upcast_half(cx, x)

    def compute(t: te.Tensor) -> te.Tensor:
        fdt = edt(t)
        rs = [te.reduce_axis((0, k), name=f"r{i}") for i, k in enumerate(kernel)]

        def total(nn: Any, c: Any, *o: Any) -> Any:
            pos = [o[i] * strides[i] + rs[i] - begin[i] for i in range(n)]
            inside = tirx.all(*[_in_range(p, 0, sizes[i]) for i, p in enumerate(pos)])
            safe = [tirx.max(tirx.min(p, sizes[i] - 1), 0) for i, p in enumerate(pos)]
            return te.sum(tirx.Select(inside, t(nn, c, *safe), fc(0.0, fdt)), axis=rs)
        summed = te.compute(list(t.shape[:2]) + out, lambda *i: total(*i), name="avg_pool_sum")

        def divide(nn: Any, c: Any, *o: Any) -> Any:
            count = tirx.const(1, "int64")
            for i in range(n):
                start = o[i] * strides[i]
                if count_include_pad:
                    cnt = tirx.min(start + kernel[i], padded[i]) - start
                else:
                    cnt = tirx.max(tirx.min(start + kernel[i], begin[i] + sizes[i]) - tirx.max(start, begin[i]), 0)
                count = count * cnt.astype("int64")
            return summed(nn, c, *o) / count.astype(fdt)
        return te.compute(summed.shape, lambda *i: divide(*i), name="avg_pool")

    return cast(cx, cx.te(compute, x), dt)


# ---- normalization --------------------------------------------------------------------------------------
def _channel_view(cx: Lowering, v: relax.Expr, rank: int, dtype: str) -> relax.Expr:
    return cx.emit(R.reshape(cast(cx, v, dtype), [-1] + [1] * (rank - 2)))


@lowering("batch_norm")
def _batch_norm(cx: Lowering, x: relax.Expr, scale: relax.Expr, bias: relax.Expr, mean: relax.Expr,
                var: relax.Expr, *, epsilon: float = 1e-5) -> relax.Expr:
    # torch (inference): alpha = scale / sqrt(var + eps); y = x * alpha + (bias - mean * alpha)
    x, dt = upcast_half(cx, x)
    fdt, rank = dtype_of(x), rank_of(x)
    scale, bias, mean, var = (_channel_view(cx, v, rank, fdt) for v in (scale, bias, mean, var))
    alpha = cx.emit(R.divide(scale, R.sqrt(R.add(var, const(epsilon, fdt)))))
    beta = cx.emit(R.subtract(bias, R.multiply(mean, alpha)))
    return cast(cx, cx.emit(R.add(R.multiply(x, alpha), beta)), dt)


def _normalize(cx: Lowering, x: relax.Expr, axes: list[int], epsilon: float) -> relax.Expr:
    """(x - mean) / sqrt(var + eps) over ``axes`` (biased variance)."""
    fdt = dtype_of(x)
    if axes == [rank_of(x) - 1] and fdt == "float32" and vecmath.partial_reducible(shape_of(x)[-1]):
        return cx.te(vecmath.normalize, x, axes[0], epsilon, name="normalize")
    mean = cx.emit(R.mean(x, axes, keepdims=True))
    centered = cx.emit(R.subtract(x, mean))
    var = cx.emit(R.mean(R.multiply(centered, centered), axes, keepdims=True))
    rstd = cx.emit(R.divide(const(1.0, fdt), R.sqrt(R.add(var, const(epsilon, fdt)))))
    return cx.emit(R.multiply(centered, rstd))


@lowering("layer_norm")
def _layer_norm(cx: Lowering, x: relax.Expr, weight: relax.Expr | None = None, bias: relax.Expr | None = None, *,
                axis: int, epsilon: float = 1e-5) -> relax.Expr:
    x, dt = upcast_half(cx, x)
    fdt = dtype_of(x)
    y = _normalize(cx, x, list(range(axis, rank_of(x))), epsilon)
    if weight is not None:
        y = cx.emit(R.multiply(y, cast(cx, weight, fdt)))
    if bias is not None:
        y = cx.emit(R.add(y, cast(cx, bias, fdt)))
    return cast(cx, y, dt)


@lowering("group_norm")
def _group_norm(cx: Lowering, x: relax.Expr, weight: relax.Expr, bias: relax.Expr, *, num_groups: int,
                epsilon: float = 1e-5) -> relax.Expr:
    x, dt = upcast_half(cx, x)
    fdt, shape, rank = dtype_of(x), shape_of(x), rank_of(x)
    rest = 1
    for d in shape[1:]:
        rest = rest * d
    grouped = cx.emit(R.reshape(x, [shape[0], num_groups, tirx.floordiv(rest, num_groups)
                                    if not isinstance(rest, int) else rest // num_groups]))
    y = cx.emit(R.reshape(_normalize(cx, grouped, [2], epsilon), shape))
    y = cx.emit(R.multiply(y, _channel_view(cx, weight, rank, fdt)))
    y = cx.emit(R.add(y, _channel_view(cx, bias, rank, fdt)))
    return cast(cx, y, dt)


@lowering("softmax", "log_softmax")
def _softmax(cx: Lowering, x: relax.Expr, *, axis: int) -> relax.Expr:
    x, dt = upcast_half(cx, x)
    log = cx.node.op == "log_softmax"
    return cast(cx, cx.te(vecmath.softmax, x, axis % rank_of(x), log, name=cx.node.op), dt)


# ---- indexing and data movement -------------------------------------------------------------------------
@lowering("gather")
def _gather(cx: Lowering, data: relax.Expr, indices: relax.Expr, *, axis: int = 0) -> relax.Expr:
    # mode="wrap" maps index i to i mod n: negative indices count from the end, and a bad index cannot crash
    return cx.emit(R.take(data, cast(cx, indices, "int64"), axis=axis, mode="wrap"))


@lowering("gather_elements")
def _gather_elements(cx: Lowering, data: relax.Expr, indices: relax.Expr, *, axis: int = 0) -> relax.Expr:
    def compute(d: te.Tensor, ind: te.Tensor) -> te.Tensor:
        n = d.shape[axis]

        def fn(*i: Any) -> Any:
            k = ind(*i).astype(edt(n))
            k = tirx.floormod(k, n)  # negative -> from the end; out of range wraps instead of crashing
            return d(*i[:axis], k, *i[axis + 1:])
        return te.compute(ind.shape, fn, name="gather_elements")
    return cx.te(compute, data, indices)


def _slice_bounds(n: Any, start: int, end: int, step: int) -> tuple[Any, Any]:
    """Python's slice(start, end, step).indices(n) for a possibly symbolic ``n``: (first index, count)."""
    def mn(a: Any, b: Any) -> Any:
        return min(a, b) if isinstance(a, int) and isinstance(b, int) else tirx.min(a, b)

    def mx(a: Any, b: Any) -> Any:
        return max(a, b) if isinstance(a, int) and isinstance(b, int) else tirx.max(a, b)

    def ceildiv(a: Any, b: int) -> Any:
        return -(-a // b) if isinstance(a, int) else tirx.floordiv(a + (b - 1), b)

    if not isinstance(n, int):  # keep huge "to the end" sentinels out of tirx (int64 overflow in simplification)
        big = 2**31
        start, end = max(min(start, big), -big), max(min(end, big), -big)
    if step > 0:  # negative: from the end, then clamp to [0, n]
        lo, hi = [mx(mn(v + n, n), 0) if v < 0 else mn(v, n) for v in (start, end)]
        count = mx(ceildiv(hi - lo, step), 0)
    else:  # negative: from the end, then clamp to [-1, n - 1]
        lo, hi = [mx(mn(v + n if v < 0 else v, n - 1), -1) for v in (start, end)]
        count = mx(ceildiv(lo - hi, -step), 0)
    return lo, count


@lowering("slice")
def _slice(cx: Lowering, x: relax.Expr, *, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
           steps: Sequence[int]) -> relax.Expr:
    shape = shape_of(x)
    step_of = [1] * len(shape)
    first = [0] * len(shape)
    out = list(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step == 0:
            raise cx.unsupported("slice step 0")
        # a second slice of the same axis composes with the first
        lo, count = _slice_bounds(out[axis], int(start), int(end), int(step))
        first[axis] = first[axis] + lo * step_of[axis]
        step_of[axis] = step_of[axis] * int(step)
        out[axis] = count

    def compute(t: te.Tensor) -> te.Tensor:
        return te.compute(out, lambda *i: t(*[first[a] + i[a] * step_of[a] for a in range(len(out))]), name="slice")
    return cx.te(compute, x)


@lowering("concat")
def _concat(cx: Lowering, *inputs: relax.Expr, axis: int) -> relax.Expr:
    """A TE concat whose every branch indexes in bounds (clamped, as ``_pad_te`` does): TOPI's concatenate reads
    the inputs a lane does not select at out-of-range offsets, which LLVM for znver4 miscompiles once the
    selects are fused with arithmetic (wrong values, e.g. ONNX's expanded RotaryEmbedding)."""
    xs = [x for x in promote(cx, *inputs, dtype=cx.out_dtype) if shape_of(x)[axis] != 0] or list(inputs[:1])
    if len(xs) == 1:
        return xs[0]

    def compute(*ts: te.Tensor) -> te.Tensor:
        sizes = [t.shape[axis] for t in ts]
        starts = [0]
        for size in sizes[:-1]:
            starts.append(starts[-1] + size)
        out_shape = list(ts[0].shape)
        out_shape[axis] = starts[-1] + sizes[-1]

        def fn(*i: Any) -> Any:
            def take(j: int) -> Any:
                idx = list(i)
                idx[axis] = tirx.max(tirx.min(i[axis] - starts[j], sizes[j] - 1), 0)
                return ts[j](*idx)
            value = take(len(ts) - 1)
            for j in range(len(ts) - 2, -1, -1):
                value = tirx.Select(i[axis] < starts[j + 1], take(j), value)
            return value
        return te.compute(out_shape, fn, name="concat")

    return cx.te(compute, *xs)


@lowering("split")
def _split(cx: Lowering, x: relax.Expr, *, axis: int, sizes: Sequence[Dim]) -> list[relax.Expr]:
    outs, offset = [], 0
    for size in sizes:
        size = cx.dim(size)
        outs.append(cx.emit(R.strided_slice(x, [axis], [offset], [offset + size], assume_inbound=True)))
        offset = offset + size
    return outs


@lowering("reshape")
def _reshape(cx: Lowering, x: relax.Expr, *, shape: Sequence[Dim]) -> relax.Expr:
    return cx.emit(R.reshape(x, [cx.dim(d) for d in shape]))


@lowering("transpose")
def _transpose(cx: Lowering, x: relax.Expr, *, perm: Sequence[int]) -> relax.Expr:
    return cx.emit(R.permute_dims(x, list(perm)))


@lowering("expand")
def _expand(cx: Lowering, x: relax.Expr, *, shape: Sequence[Dim]) -> relax.Expr:
    return cx.emit(R.broadcast_to(x, relax.ShapeExpr([cx.dim(d) for d in shape])))


@lowering("tile")
def _tile(cx: Lowering, x: relax.Expr, *, repeats: Sequence[int]) -> relax.Expr:
    return cx.emit(R.tile(x, [int(r) for r in repeats]))


def _pad_te(cx: Lowering, x: relax.Expr, pads: Sequence[int], mode: str, value: float) -> relax.Expr:
    shape = shape_of(x)
    rank = len(shape)
    begin, end = list(pads[:rank]), list(pads[rank:])
    out = [d + b + e if (b or e) else d for d, b, e in zip(shape, begin, end)]
    if mode not in ("constant", "reflect", "edge"):
        raise cx.unsupported(f"pad mode {mode!r}")

    def compute(t: te.Tensor) -> te.Tensor:
        dt = edt(t)
        fill = tirx.const(bool(value) if dt == "bool" else (value if dt in FLOATS else int(value)), dt)

        def fn(*i: Any) -> Any:
            src, inside = [], []
            for a in range(rank):
                if not (begin[a] or end[a]):
                    src.append(i[a])
                    continue
                n = shape[a]
                j = i[a] - begin[a]
                if mode == "constant":
                    inside.append(_in_range(j, 0, n))
                    j = tirx.max(tirx.min(j, n - 1), 0)
                elif mode == "edge":
                    j = tirx.max(tirx.min(j, n - 1), 0)
                else:  # reflect (mirror without repeating the edge)
                    j = tirx.Select(j < 0, -j, j)
                    j = tirx.Select(j >= n, 2 * (n - 1) - j, j)
                src.append(j)
            v = t(*src)
            return tirx.Select(tirx.all(*inside), v, fill) if inside else v
        return te.compute(out, fn, name="pad")
    return cx.te(compute, x, name="pad")


@lowering("pad")
def _pad(cx: Lowering, x: relax.Expr, *, pads: Sequence[int], mode: str = "constant", value: float = 0.0) -> relax.Expr:
    return _pad_te(cx, x, [int(p) for p in pads], mode, value)


@lowering("resize")
def _resize(cx: Lowering, x: relax.Expr, *, sizes: Sequence[int], mode: str = "nearest",
            coordinate_transformation_mode: str = "asymmetric", nearest_mode: str = "floor") -> relax.Expr:
    """torch's F.interpolate index math, in float32 like its CPU kernels."""
    key = (mode, coordinate_transformation_mode, nearest_mode if mode == "nearest" else "")
    supported = {("nearest", "asymmetric", "floor"), ("nearest", "half_pixel", "round_prefer_ceil"),
                 ("linear", "half_pixel", ""), ("linear", "pytorch_half_pixel", ""), ("linear", "align_corners", "")}
    if key not in supported:
        raise cx.unsupported(f"resize mode {key}")
    n = _spatial(cx, x)
    in_sizes = _static_spatial(cx, x)
    sizes = [int(s) for s in sizes]
    x, dt = upcast_half(cx, x) if mode == "linear" else (x, dtype_of(x))
    align = coordinate_transformation_mode == "align_corners"
    # torch computes source coordinates in float (double for float64 linear resizes)
    cdt = "float64" if mode == "linear" and dtype_of(x) == "float64" else "float32"
    f = np.dtype(cdt).type
    if align:
        scales = [f(i - 1) / f(o - 1) if o > 1 else f(0) for i, o in zip(in_sizes, sizes)]
    else:
        scales = [f(i) / f(o) for i, o in zip(in_sizes, sizes)]

    def compute(t: te.Tensor) -> te.Tensor:
        def src_coord(o: Any, i: int) -> Any:
            scale = fc(float(scales[i]), cdt)
            of = o.astype(cdt)
            if mode == "nearest":
                if coordinate_transformation_mode == "half_pixel":
                    of = of + fc(0.5, cdt)
                return tirx.min(tirx.floor(of * scale).astype("int64"), in_sizes[i] - 1)
            if align:
                return scale * of
            s = scale * (of + fc(0.5, cdt)) - fc(0.5, cdt)
            return tirx.Select(s < fc(0.0, cdt), fc(0.0, cdt), s)

        def fn(nn: Any, c: Any, *o: Any) -> Any:
            if mode == "nearest":
                return t(nn, c, *[src_coord(o[i], i) for i in range(n)])
            taps = []
            for i in range(n):
                s = src_coord(o[i], i)
                i0 = s.astype("int64")
                i1 = tirx.min(i0 + 1, in_sizes[i] - 1)
                l1 = s - i0.astype(cdt)
                taps.append(((i0, fc(1.0, cdt) - l1), (i1, l1)))
            result = None
            for corner in range(2 ** n):
                idx, w = [], None
                for i in range(n):
                    k, lam = taps[i][(corner >> (n - 1 - i)) & 1]
                    idx.append(k)
                    w = lam if w is None else w * lam
                term = w * t(nn, c, *idx).astype(cdt)
                result = term if result is None else result + term
            return result.astype(edt(t))
        return te.compute(list(t.shape[:2]) + sizes, lambda *i: fn(*i), name="resize")

    return cast(cx, cx.te(compute, x), dt)


# ---- the driver -----------------------------------------------------------------------------------------
def _attrs(node: Node) -> dict[str, Any]:
    schema = OPS[node.op]
    attrs = {k: v for k, v in schema.attrs.items() if v is not REQUIRED}
    attrs.update(node.attrs)
    return attrs


def _check_encodings(cx: Lowering, node: Node) -> None:
    """Compressed weights are read by the compressible ops' kernels only."""
    weight = OPS[node.op].compressible_weight
    for i, name in enumerate(node.inputs):
        param = cx.graph.params.get(name)
        if param is not None and param.encoding.kind != "dense" and (i != weight or "shape" not in
                                                                     param.encoding.meta):
            raise cx.unsupported(f"param '{name}' has encoding '{param.encoding.kind}'; the TVM backend has no "
                                 f"kernel that reads it as input {i} of {node.op}")


def lower_node(cx: Lowering, node: Node, env: dict[str, relax.Expr]) -> None:
    cx.node = node
    fn = LOWERINGS.get(node.op)
    if fn is None or node.op not in OPS:
        raise UnsupportedOpError(node.op, node.name, node.source, "no TVM lowering for this op")
    _check_encodings(cx, node)
    args = [env[i] if i else None for i in node.inputs]
    out_types = [cx.graph.types[o] for o in node.outputs]
    if all(t.is_static and 0 in t.shape for t in out_types):
        # empty results need no kernel (and GPU schedules cannot bind threads to zero iterations)
        result = [cx.emit(R.zeros(relax.ShapeExpr(list(t.shape)), t.dtype)) for t in out_types]
    else:
        result = fn(cx, *args, **_attrs(node))
    outs = list(result) if isinstance(result, (list, tuple)) else [result]
    if len(outs) != len(node.outputs):
        raise AssertionError(f"lowering of {node.op} gave {len(outs)} outputs, the node has {len(node.outputs)}")
    for name, value in zip(node.outputs, outs):
        want = cx.graph.types[name]
        value = cast(cx, value, want.dtype)
        if value.ty.shape is None:  # relax could not infer it: assert the declared one
            value = cx.bb.match_cast(value, cx.relax_type(want))
        env[name] = value


def to_relax(graph: Graph, func_name: str = "main") -> tvm.IRModule:
    """The Relax module of ``graph``: ``main(*graph.inputs, *graph.params)`` returns the graph outputs (a tuple
    when there are several)."""
    cx = Lowering(graph)
    env = cx.env
    params: list[relax.Var] = []
    for name in list(graph.inputs) + list(graph.params):
        var = relax.Var(name, cx.relax_type(graph.types[name]))
        env[name] = var
        params.append(var)
    bb = cx.bb
    with bb.function(func_name, params):
        with bb.dataflow():
            for node in graph.nodes:
                lower_node(cx, node, env)
            outs = [env[o] for o in graph.outputs]
            result = outs[0] if len(outs) == 1 else relax.Tuple(outs)
            gv = bb.emit_output(result)
        bb.emit_func_output(gv)
    return bb.get()


def missing_lowerings() -> list[str]:
    """Canonical ops without a lowering (empty when the backend covers the op set)."""
    return sorted(set(OPS) - set(LOWERINGS))
