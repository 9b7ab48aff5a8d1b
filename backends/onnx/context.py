"""The state of one IR -> ONNX export: emitted nodes, initializers, fresh names and runtime shape tensors.

Emitters (``emitters/``) build ONNX nodes only through an ``EmitContext``: ``cx.op`` appends a node and returns
its output name(s), ``cx.const`` makes a constant initializer, ``cx.shape_tensor`` turns a resolved IR shape (ints
and symbolic dims such as ``"batch*128"``) into a 1-D int64 tensor computed at run time from the ``Shape`` of a
graph input that carries each symbol.
"""
from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sparsecc.errors import UnsupportedOpError
from sparsecc.ir.graph import Dim, Graph, Node, TensorType

ONNX_DTYPES: dict[str, int] = {
    "float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "float16": TensorProto.FLOAT16,
    "bfloat16": TensorProto.BFLOAT16, "int8": TensorProto.INT8, "int16": TensorProto.INT16,
    "int32": TensorProto.INT32, "int64": TensorProto.INT64, "uint8": TensorProto.UINT8,
    "uint16": TensorProto.UINT16, "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64,
    "bool": TensorProto.BOOL,
}

FLOATS = ("float16", "bfloat16", "float32", "float64")

_DIM_OPS = {ast.Add: "Add", ast.Sub: "Sub", ast.Mult: "Mul", ast.FloorDiv: "Div", ast.Mod: "Mod"}
"""Dim expressions -> ONNX int64 ops. Dims are non-negative, so ONNX's truncating Div is floor division."""


def value_info(name: str, ttype: TensorType) -> onnx.ValueInfoProto:
    """An ONNX typed value; symbolic dims (plain symbols and expressions alike) become ``dim_param``s."""
    return helper.make_tensor_value_info(name, ONNX_DTYPES[ttype.dtype], list(ttype.shape))


class EmitContext:
    """Collects the ONNX nodes and initializers of one graph; ``node`` is the IR node being emitted."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.node: Node | None = None
        self._used: set[str] = set(graph.types)
        self._dims: dict[str, str] = {}  # dim expression text -> 1-element int64 tensor
        self._symbol_sources = {d: (name, axis) for name in graph.inputs
                                for axis, d in enumerate(graph.types[name].shape)
                                if isinstance(d, str) and d.isidentifier()}

    # ---- the IR node being emitted ----------------------------------------------------------------------
    def in_type(self, i: int) -> TensorType:
        return self.graph.types[self.node.inputs[i]]

    def out_type(self, i: int = 0) -> TensorType:
        return self.graph.types[self.node.outputs[i]]

    def unsupported(self, detail: str) -> UnsupportedOpError:
        node = self.node
        return UnsupportedOpError(node.op, node.name, node.source, detail)

    # ---- building -------------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A value name not used by the IR graph nor by this export."""
        name, i = base, 0
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def op(self, op_type: str, inputs: Sequence[str | None], outputs: int = 1, **attrs: Any) -> Any:
        """Appends an ONNX node; returns its output name, or the list of names when ``outputs > 1``.

        ``None`` inputs are absent optional ones: trailing ones are left out (ORT crashes on some trailing empty
        names, e.g. LayerNormalization's bias in float16), inner ones become ONNX's empty name."""
        base = self.node.name if self.node is not None else "export"
        names = [self.fresh(f"{base}/{op_type}") for _ in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        inputs = list(inputs)
        while inputs and inputs[-1] is None:
            inputs.pop()
        self.nodes.append(helper.make_node(op_type, [i or "" for i in inputs], names, name=names[0], **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value: Any, dtype: str) -> str:
        """A constant initializer holding ``value`` (a scalar or array) as ``dtype``."""
        array = np.asarray(value).astype(np.dtype(dtype) if dtype != "bfloat16" else np.float32)
        name = self.fresh(f"{self.node.name if self.node is not None else 'export'}/const")
        tensor = numpy_helper.from_array(array, name)
        if dtype == "bfloat16":
            tensor = helper.make_tensor(name, TensorProto.BFLOAT16, array.shape, array.flatten().tolist())
        self.initializers.append(tensor)
        return name

    def cast(self, x: str, from_dtype: str, to_dtype: str) -> str:
        return x if from_dtype == to_dtype else self.op("Cast", [x], to=ONNX_DTYPES[to_dtype])

    # ---- shapes -----------------------------------------------------------------------------------------
    def shape_tensor(self, dims: Sequence[Dim]) -> str:
        """A 1-D int64 tensor holding ``dims``: a constant when all are ints, else built at run time."""
        if all(isinstance(d, int) for d in dims):
            return self.const(np.array(dims, dtype=np.int64), "int64")
        parts = [self.const(np.array([d], dtype=np.int64), "int64") if isinstance(d, int) else self.dim_tensor(d)
                 for d in dims]
        return self.op("Concat", parts, axis=0)

    def dim_tensor(self, dim: str) -> str:
        """A 1-element int64 tensor with the run-time value of a symbolic dim (cached per expression)."""
        if dim not in self._dims:
            self._dims[dim] = self._dim_expr(ast.parse(dim, mode="eval").body, dim)
        return self._dims[dim]

    def _dim_expr(self, e: ast.AST, text: str) -> str:
        if isinstance(e, ast.Constant) and isinstance(e.value, int):
            return self.const(np.array([e.value], dtype=np.int64), "int64")
        if isinstance(e, ast.Name):
            if e.id not in self._symbol_sources:
                raise self.unsupported(f"dim '{text}': symbol '{e.id}' is not a dim of any graph input, so its "
                                       "value is not known at run time")
            name, axis = self._symbol_sources[e.id]
            return self.op("Shape", [name], start=axis, end=axis + 1)
        if isinstance(e, ast.BinOp) and type(e.op) in _DIM_OPS:
            return self.op(_DIM_OPS[type(e.op)], [self._dim_expr(e.left, text), self._dim_expr(e.right, text)])
        raise self.unsupported(f"unsupported dim expression {text!r}")
