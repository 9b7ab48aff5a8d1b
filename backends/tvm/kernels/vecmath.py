"""Float32 ``exp`` and ``erf`` as plain arithmetic, so LLVM vectorises them.

TVM lowers ``exp``/``erf`` to libm calls that LLVM cannot vectorise without a vector math library: one scalar
call per element (a MiniLM softmax took 1.2 ms, its GELU 14 ms). These are the classic polynomial forms:
``exp`` is Cephes' ``expf`` (Cody-Waite reduction by ln 2 in two parts, degree-6 polynomial, exponent built in
the float's bits; within 2 ulp of the exact value), ``erf`` is ``topi.fast_erf`` (within 4.5e-7 absolute). NaN,
overflow to inf and underflow to 0 behave as in libm. Other dtypes keep the libm form.
"""
from __future__ import annotations

import math
from typing import Callable

import tvm
from tvm import te, tirx, topi

# TVM 0.27 does not mark ``nearbyint`` or ``isnan`` vectorizable, so a vectorized loop holding one was emitted as
# scalar code, which LLVM re-vectorised on its own terms: every W8A8 input quantization across the outer loop with
# gathers and byte-wise scatters (a MiniLM activation's took 23 us instead of 3), every ``exp`` (its NaN check) 8
# lanes wide on AVX-512 (a MiniLM attention softmax: 131 -> 97 us). LLVM lowers the vector forms to one
# ``vrndscaleps`` (x86) / ``frintx`` (ARM) and one unordered compare.
for _op in ("tirx.nearbyint", "tirx.isnan"):
    if not tvm.ir.Op.get(_op).get_attr("TVectorizable"):  # once, however the module is imported
        tvm.ir.register_op_attr(_op, "TVectorizable", True)

_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4
_EXP_MAX, _EXP_MIN = 88.72283935546875, -103.97207641601562  # exp overflows / underflows to 0 beyond these
_NORMAL_MIN = -87.33654  # below this the result is subnormal: scale in two steps


def exp_scalar(x: tirx.PrimExpr) -> tirx.PrimExpr:
    f = lambda v: tirx.const(v, "float32")  # noqa: E731
    # below _EXP_MIN the result is 0 (selected at the end): compute from 0 there, not from the clamped -103.97,
    # whose subnormal intermediate products (2^-75 * 2^-75) cost an Intel core a microcode assist per element; every
    # masked attention score is such an input (a padded MiniLM sentence's softmax: 777 us instead of 149)
    xc = tirx.Select(x < f(_EXP_MIN), f(0.0), tirx.min(x, f(_EXP_MAX)))
    n = tirx.floor(xc * f(1 / math.log(2)) + f(0.5))
    r = xc - n * f(_LN2_HI) - n * f(_LN2_LO)
    p = f(_EXP_POLY[0])
    for c in _EXP_POLY[1:]:
        p = p * r + f(c)
    y = p * r * r + r + f(1.0)
    ni = n.astype("int32")
    # 2^n as two factors so that n down to -150 (subnormal results) stays representable
    half = tirx.shift_right(ni, 1)
    two_a = tirx.reinterpret("float32", tirx.shift_left(half + 127, 23))
    two_b = tirx.reinterpret("float32", tirx.shift_left(ni - half + 127, 23))
    value = y * two_a * two_b
    value = tirx.Select(x > f(_EXP_MAX), f(math.inf), value)
    value = tirx.Select(x < f(_EXP_MIN), f(0.0), value)
    return tirx.Select(tirx.isnan(x), x, value)


def exp(t: te.Tensor, shift: Callable[..., tirx.PrimExpr] | None = None) -> te.Tensor:
    """``exp(t)``, or ``exp(t - shift(*index))`` with the subtraction inside the same loop (softmax: no buffer of
    shifted values)."""
    if t.dtype != "float32":
        return topi.exp(t if shift is None else te.compute(t.shape, lambda *i: t(*i) - shift(*i), name="shift"))
    return te.compute(t.shape, lambda *i: exp_scalar(t(*i) if shift is None else t(*i) - shift(*i)), name="exp")


def erf(t: te.Tensor) -> te.Tensor:
    return topi.fast_erf(t) if t.dtype == "float32" else topi.erf(t)


PARTIAL_LANES = 16
"""Softmax's max and sum over an axis that is a multiple of this run as this many independent partial reductions
(one vector of accumulators), then one short horizontal step: a single scalar chain of 128 dependent adds per row
was most of a MiniLM attention softmax's time."""


def _row_reduce(t: te.Tensor, axis: int, combine: str, name: str) -> te.Tensor:
    """``max`` or ``sum`` of ``t`` along ``axis`` (dropped), in ``PARTIAL_LANES`` partial reductions when it divides
    the axis."""
    reducer = te.max if combine == "max" else te.sum
    n = t.shape[axis]
    if not partial_reducible(n):
        k = te.reduce_axis((0, n), name="k")
        return te.compute([d for j, d in enumerate(t.shape) if j != axis],
                          lambda *i: reducer(t[(*i[:axis], k, *i[axis:])], axis=k), name=name)
    lanes = PARTIAL_LANES
    ko = te.reduce_axis((0, int(n) // lanes), name="ko")
    # partial[..., lane] over the rest of the row: lane is the last (spatial, vectorisable) axis
    rest = [d for j, d in enumerate(t.shape) if j != axis]
    partial = te.compute((*rest, lanes), lambda *i: reducer(t[(*i[:axis], ko * lanes + i[-1], *i[axis:-1])], axis=ko),
                         name=f"{name}_partial")
    lane = te.reduce_axis((0, lanes), name="lane")
    return te.compute(rest, lambda *i: reducer(partial[(*i, lane)], axis=lane), name=name)


def partial_reducible(n: int | tirx.PrimExpr) -> bool:
    """Whether ``_row_reduce`` splits an axis of extent ``n`` into partial lanes (a static multiple of them)."""
    return isinstance(n, (int, tirx.IntImm)) and int(n) % PARTIAL_LANES == 0 and int(n) > PARTIAL_LANES


def normalize(t: te.Tensor, axis: int, epsilon: float) -> te.Tensor:
    """``(t - mean) * (1 / sqrt(var + epsilon))`` along ``axis`` (biased variance), both moments summed in
    partial lanes: layer norm's core."""
    keep = lambda i: (*i[:axis], *i[axis + 1:])  # noqa: E731
    count = tirx.const(float(int(t.shape[axis])), t.dtype)
    total = _row_reduce(t, axis, "sum", "norm_sum")
    centered = te.compute(t.shape, lambda *i: t(*i) - total(*keep(i)) / count, name="norm_center")
    squares = te.compute(t.shape, lambda *i: centered(*i) * centered(*i), name="norm_square")
    spread = _row_reduce(squares, axis, "sum", "norm_var_sum")
    one, eps = tirx.const(1.0, t.dtype), tirx.const(epsilon, t.dtype)
    return te.compute(t.shape, lambda *i: centered(*i) * (one / tirx.sqrt(spread(*keep(i)) / count + eps)),
                      name="normalize")


def softmax(t: te.Tensor, axis: int, log: bool = False) -> te.Tensor:
    """``softmax`` / ``log_softmax`` along ``axis`` with the vectorisable exp (max-subtracted, as torch does)."""
    keep = lambda i: (*i[:axis], *i[axis + 1:])  # noqa: E731
    peak = _row_reduce(t, axis, "max", "softmax_max")
    e = exp(t, lambda *i: peak(*keep(i)))
    total = _row_reduce(e, axis, "sum", "softmax_sum")
    if log:
        return te.compute(t.shape, lambda *i: t(*i) - peak(*keep(i)) - tirx.log(total(*keep(i))), name="log_softmax")
    # times the sum's reciprocal, as torch's CPU softmax does: one divide per row (104 -> 96 us for MiniLM's)
    one = tirx.const(1.0, t.dtype)
    return te.compute(t.shape, lambda *i: e(*i) * (one / total(*keep(i))), name="softmax")
