"""The ONNX frontend: ``import_onnx(model, input_shapes=None) -> Graph``.

    load.py        read + validate (ModelLoadError naming the path), opset check, simplify (optimizer + shapes)
    importer.py    walks the graph: IR values, compile-time known values (shape tensors with symbolic dims)
    converters/    one registry op_type -> converter, grouped by kind (elementwise, nn, tensor, reduce)
    conformance.py runs the ONNX node test suite through sparsecc.compile (tests and benchmarks share it)
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import onnx

from sparsecc.ir.graph import Dim, Graph

from .importer import Importer
from .load import default_opset, load_model, simplify


def import_onnx(model: str | os.PathLike | onnx.ModelProto,
                input_shapes: Mapping[str, Sequence[Dim]] | None = None) -> Graph:
    """The sparsecc IR of an ONNX model (a path or a ModelProto; the proto is not modified).

    ``input_shapes`` fixes or renames input dims (ints or symbol names); ONNX ``dim_param``s become symbolic
    dims, and a dim with neither value nor name gets a fresh symbol.
    """
    proto = load_model(model)
    opset = default_opset(proto)
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return Importer(simplify(copy), opset, input_shapes).run()


__all__ = ["import_onnx"]
