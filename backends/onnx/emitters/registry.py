"""The one registry of ONNX emitters: canonical op name -> function that emits its ONNX nodes.

An emitter is ``fn(cx, *inputs, **attrs)``: ``cx`` is the ``EmitContext`` (its ``node`` is the IR node), ``inputs``
the ONNX value names of the node's inputs (``None`` for an absent optional one), ``attrs`` the node's attributes
with the op's defaults filled in. It returns the ONNX name of each output (a str, or a list for several).
It computes exactly what ``sparsecc/interpreter/torch_ops.py`` computes, composing ONNX ops where the nearest
ONNX op differs, and raises ``cx.unsupported(...)`` for what it cannot express exactly.
"""
from __future__ import annotations

from collections.abc import Callable

EMITTERS: dict[str, Callable] = {}


def emitter(*names: str) -> Callable:
    def wrap(fn: Callable) -> Callable:
        for n in names:
            EMITTERS[n] = fn
        return fn
    return wrap
