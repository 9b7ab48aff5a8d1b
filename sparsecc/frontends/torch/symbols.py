"""Symbolic sizes: torch's SymInts (sympy expressions over s0, s1, ...) -> IR dims ("batch", "128*batch").

torch.export names its shape symbols ``s0``, ``s43``...; the IR uses the names of the user's
``torch.export.Dim`` objects instead (``Dim("batch")`` -> ``"batch"``), found by matching each dynamic
input axis with the ``dynamic_shapes`` spec. A symbol without a named Dim (``Dim.AUTO``, an archive
loaded from disk) gets the stable name ``<input>_dim<axis>`` of the first input axis it sizes.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import sympy
import torch
from torch.export.dynamic_shapes import Dim as TorchDim
from torch.utils._sympy.functions import CleanDiv, FloorDiv, Mod, PythonMod

from sparsecc.ir.graph import Dim


class SymbolError(ValueError):
    """A size expression the IR cannot state (a float, an unbacked size, an unknown function)."""


def dim_spec_names(dynamic_shapes: Any, arg_names: Sequence[str]) -> dict[tuple[str, int], str]:
    """``{(input name, axis): Dim name}`` from a torch.export ``dynamic_shapes`` spec.

    The spec is a dict keyed by forward-argument name or a tuple/list in argument order; each entry is
    ``{axis: Dim}`` or a per-axis sequence. Derived dims (``2*batch``) name their root symbol.
    """
    if dynamic_shapes is None:
        return {}
    if isinstance(dynamic_shapes, Mapping):
        entries = dict(dynamic_shapes)
    else:
        entries = dict(zip(arg_names, dynamic_shapes))
    names: dict[tuple[str, int], str] = {}
    for arg, spec in entries.items():
        axes = spec.items() if isinstance(spec, Mapping) else enumerate(spec or ())
        for axis, dim in axes:
            if isinstance(dim, TorchDim):
                root = getattr(dim, "root", dim)  # a _DerivedDim names its root
                names[(arg, int(axis))] = root.__name__
    return names


class SymbolTable:
    """Maps torch's shape symbols to IR symbol names and prints size expressions as IR dims."""

    def __init__(self) -> None:
        self.names: dict[sympy.Symbol, str] = {}

    def bind_input(self, input_name: str, shape: Sequence[Any], spec_names: Mapping[tuple[str, int], str]) -> None:
        """Names the free symbols of an input's sizes: from the Dim spec, else ``<input>_dim<axis>``."""
        for axis, size in enumerate(shape):
            if not isinstance(size, torch.SymInt):
                continue
            free = sorted(size.node.expr.free_symbols, key=str)
            if len(free) != 1:
                continue  # a product of other inputs' symbols: named where those appear alone
            symbol = free[0]
            if symbol not in self.names:
                name = spec_names.get((input_name, axis), f"{input_name}_dim{axis}")
                if name in self.names.values():
                    name = f"{name}_{len(self.names)}"
                self.names[symbol] = name

    def dim(self, size: Any) -> Dim:
        """An int, or the IR expression of a SymInt (``"128*batch"``)."""
        if isinstance(size, int):
            return size
        if isinstance(size, torch.SymInt):
            expr = size.node.expr
            if expr.is_number:
                return int(expr)
            return self._print(expr)
        raise SymbolError(f"size {size!r} is not an integer")

    def shape(self, sizes: Sequence[Any]) -> tuple[Dim, ...]:
        return tuple(self.dim(s) for s in sizes)

    # -- printing ----------------------------------------------------------------------------------
    def _print(self, expr: sympy.Expr) -> str:
        if isinstance(expr, sympy.Integer):
            return str(int(expr))
        if isinstance(expr, sympy.Symbol):
            if expr not in self.names:
                raise SymbolError(f"size symbol {expr} is not the size of any input (a data-dependent size)")
            return self.names[expr]
        if isinstance(expr, sympy.Mul):
            return "*".join(self._factor(a) for a in expr.as_ordered_factors())
        if isinstance(expr, sympy.Add):
            return self._sum(expr)
        binary: dict[type, str] = {FloorDiv: "//", CleanDiv: "//", Mod: "%", PythonMod: "%"}
        for kind, op in binary.items():
            if isinstance(expr, kind):
                a, b = expr.args
                return f"{self._factor(a)}{op}{self._factor(b)}"
        raise SymbolError(f"size expression {expr} has no IR form")

    def _factor(self, expr: sympy.Expr) -> str:
        text = self._print(expr)
        return f"({text})" if isinstance(expr, sympy.Add) else text

    def _sum(self, expr: sympy.Add) -> str:
        """Prints ``a + b - c`` with subtraction, since IR dims have no unary minus."""
        out = ""
        for term in expr.as_ordered_terms():
            coeff, rest = term.as_coeff_Mul()
            negative = coeff < 0
            body = self._print(-term if negative else term)
            out = (f"{out} - {body}" if negative else f"{out} + {body}") if out else (
                f"0 - {body}" if negative else body)
        return out

