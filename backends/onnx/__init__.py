"""The ONNX backend: sparsecc IR -> an ONNX model that runs in onnxruntime.

    from sparsecc.backends.onnx import to_onnx, save_onnx
    model = to_onnx(graph)              # onnx.ModelProto, checked with onnx.checker (full check)
    save_onnx(graph, "model.onnx")

Modules: ``export`` (the graph walk, inputs/params/outputs), ``context`` (names, constants, run-time shape tensors
for symbolic dims), ``emitters/`` (one emitter per canonical op, one registry). Compressed weight encodings are
not exported yet (``UnsupportedOpError``).
"""
from __future__ import annotations

from sparsecc.ir.ops import OPS

from .emitters import EMITTERS
from .export import DEFAULT_OPSET, save_onnx, to_onnx


def missing_emitters() -> list[str]:
    """Canonical ops without an ONNX emitter (empty when the backend covers the whole op set)."""
    return sorted(set(OPS) - set(EMITTERS))


__all__ = ["DEFAULT_OPSET", "EMITTERS", "missing_emitters", "save_onnx", "to_onnx"]
