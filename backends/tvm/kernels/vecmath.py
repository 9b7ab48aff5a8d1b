"""Float32 ``exp`` and ``erf`` as plain arithmetic, so LLVM vectorises them.

TVM lowers ``exp``/``erf`` to libm calls that LLVM cannot vectorise without a vector math library: one scalar
call per element (a MiniLM softmax took 1.2 ms, its GELU 14 ms). These are the classic polynomial forms:
``exp`` is Cephes' ``expf`` (Cody-Waite reduction by ln 2 in two parts, degree-6 polynomial, exponent built in
the float's bits; within 2 ulp of the exact value), ``erf`` is ``topi.fast_erf`` (within 4.5e-7 absolute). NaN,
overflow to inf and underflow to 0 behave as in libm. Other dtypes keep the libm form.
"""
from __future__ import annotations

import math

from tvm import te, tirx, topi

_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4
_EXP_MAX, _EXP_MIN = 88.72283935546875, -103.97207641601562  # exp overflows / underflows to 0 beyond these
_NORMAL_MIN = -87.33654  # below this the result is subnormal: scale in two steps


def exp_scalar(x: tirx.PrimExpr) -> tirx.PrimExpr:
    f = lambda v: tirx.const(v, "float32")  # noqa: E731
    xc = tirx.max(tirx.min(x, f(_EXP_MAX)), f(_EXP_MIN))
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


def exp(t: te.Tensor) -> te.Tensor:
    if t.dtype != "float32":
        return topi.exp(t)
    return te.compute(t.shape, lambda *i: exp_scalar(t(*i)), name="exp")


def erf(t: te.Tensor) -> te.Tensor:
    return topi.fast_erf(t) if t.dtype == "float32" else topi.erf(t)


def softmax(t: te.Tensor, axis: int, log: bool = False) -> te.Tensor:
    """``softmax`` / ``log_softmax`` along ``axis`` with the vectorisable exp (max-subtracted, as torch does)."""
    k = te.reduce_axis((0, t.shape[axis]), name="k")
    keep = lambda i: (*i[:axis], *i[axis + 1:])  # noqa: E731
    rest = [d for j, d in enumerate(t.shape) if j != axis]
    peak = te.compute(rest, lambda *i: te.max(t[(*i[:axis], k, *i[axis:])], axis=k), name="softmax_max")
    shifted = te.compute(t.shape, lambda *i: t(*i) - peak(*keep(i)), name="softmax_shift")
    e = exp(shifted)
    k2 = te.reduce_axis((0, t.shape[axis]), name="k2")
    total = te.compute(rest, lambda *i: te.sum(e[(*i[:axis], k2, *i[axis:])], axis=k2), name="softmax_sum")
    if log:
        return te.compute(t.shape, lambda *i: shifted(*i) - tirx.log(total(*keep(i))), name="log_softmax")
    return te.compute(t.shape, lambda *i: e(*i) / total(*keep(i)), name="softmax")
