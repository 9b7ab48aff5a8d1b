"""Symbolic dimensions: a dim is an int or an arithmetic expression over symbol names ("batch", "batch*seq")."""
from __future__ import annotations

import ast
import operator
from typing import Mapping, Sequence

from sparsecc.ir.graph import Dim

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
           ast.Mod: operator.mod}


def eval_dim(dim: Dim, env: Mapping[str, int]) -> int:
    """The value of ``dim`` once the symbols in ``env`` are bound."""
    if isinstance(dim, int):
        return dim
    return _eval(ast.parse(dim, mode="eval").body, env, dim)


def _eval(node: ast.AST, env: Mapping[str, int], text: str) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise KeyError(f"symbol '{node.id}' of dim '{text}' is not bound")
        return env[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval(node.left, env, text), _eval(node.right, env, text))
    raise ValueError(f"unsupported dim expression {text!r}")


def symbols(dim: Dim) -> set[str]:
    if isinstance(dim, int):
        return set()
    return {n.id for n in ast.walk(ast.parse(dim, mode="eval")) if isinstance(n, ast.Name)}


def bind_symbols(declared: Sequence[Dim], actual: Sequence[int], env: dict[str, int], what: str) -> None:
    """Binds plain symbols of ``declared`` to ``actual`` sizes into ``env``; raises ValueError on a conflict."""
    if len(declared) != len(actual):
        raise ValueError(f"{what}: expected rank {len(declared)} {list(declared)}, got shape {list(actual)}")
    for d, a in zip(declared, actual):
        if isinstance(d, str) and d.isidentifier():
            if env.setdefault(d, a) != a:
                raise ValueError(f"{what}: dim '{d}' is {a} here but {env[d]} elsewhere")
        elif eval_dim(d, env) != a:
            raise ValueError(f"{what}: expected shape {list(declared)}, got {list(actual)}")
