"""Arithmetic on dims that may be symbolic ("batch", "batch*seq"), for shape values the importer tracks.

A product of symbols and an integer is kept in a canonical form (``"128*batch*seq"``: coefficient first, symbols
sorted) so equal products compare equal and exact division (Reshape's -1) can be done; any other expression is
kept as a parenthesized string that ``sparsecc.ir.dims`` evaluates at run time.
"""
from __future__ import annotations

import re
from collections import Counter

from sparsecc.ir.graph import Dim

_PRODUCT = re.compile(r"^\s*(\d+|[A-Za-z_]\w*)(\s*\*\s*(\d+|[A-Za-z_]\w*))*\s*$")


def sanitize_symbol(name: str) -> str:
    """An ONNX dim_param as an identifier ("batch size" -> "batch_size", "2d" -> "s_2d")."""
    text = re.sub(r"\W", "_", name.strip()) or "dim"
    return text if text[0].isalpha() or text[0] == "_" else f"s_{text}"


def _monomial(d: Dim) -> tuple[int, Counter] | None:
    """``d`` as (coefficient, symbol multiset), or None when it is not a plain product."""
    if isinstance(d, int):
        return d, Counter()
    if not _PRODUCT.match(d):
        return None
    coef, syms = 1, Counter()
    for factor in d.split("*"):
        factor = factor.strip()
        if factor.isdigit():
            coef *= int(factor)
        else:
            syms[factor] += 1
    return coef, syms


def _format(coef: int, syms: Counter) -> Dim:
    names = sorted(syms.elements())
    if not names or coef == 0:
        return coef
    return "*".join(([str(coef)] if coef != 1 else []) + names)


def _wrap(d: Dim) -> str:
    return str(d) if isinstance(d, int) or _monomial(d) is not None else f"({d})"


def mul(a: Dim, b: Dim) -> Dim:
    ma, mb = _monomial(a), _monomial(b)
    if ma is not None and mb is not None:
        return _format(ma[0] * mb[0], ma[1] + mb[1])
    return f"{_wrap(a)}*{_wrap(b)}"


def add(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if b == 0:
        return a
    if a == 0:
        return b
    return f"{_wrap(a)}+{_wrap(b)}"


def sub(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a - b
    if a == b:
        return 0
    if b == 0:
        return a
    return f"{_wrap(a)}-{_wrap(b)}"


def div(a: Dim, b: Dim) -> Dim | None:
    """``a / b`` when it is exact (known to divide); None otherwise."""
    if isinstance(a, int) and isinstance(b, int):
        return a // b if b != 0 and a % b == 0 else None
    ma, mb = _monomial(a), _monomial(b)
    if ma is None or mb is None or mb[0] == 0 or ma[0] % mb[0] or any(ma[1][s] < n for s, n in mb[1].items()):
        return None
    return _format(ma[0] // mb[0], ma[1] - mb[1])


def product(dims) -> Dim:
    out: Dim = 1
    for d in dims:
        out = mul(out, d)
    return out


def is_symbolic(d: object) -> bool:
    return isinstance(d, str)
