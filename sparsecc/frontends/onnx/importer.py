"""Walks an ONNX graph in order and builds the sparsecc IR, one converter call per ONNX node.

Each ONNX value maps either to an IR value (a graph input, a param, or a node output) or to a ``Known``
compile-time value (initializers, constants, and shape tensors whose elements may be symbolic dims). Converters
see a ``NodeContext``: typed access to the node's inputs and attributes, and ``emit`` to add canonical nodes.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from sparsecc.errors import InputError, UnsupportedOpError
from sparsecc.ir.graph import Dim, Graph, TensorType
from sparsecc.ir.verify import verify

from .load import converter_opset
from .symbolic import sanitize_symbol
from .values import Known, ir_dtype, known_from_tensor, onnx_type_name

DEFAULT_DOMAINS = ("", "ai.onnx")


class NodeContext:
    """One ONNX node as a converter sees it."""

    def __init__(self, importer: "Importer", node: onnx.NodeProto):
        self.imp, self.node = importer, node
        self.op_type = node.op_type
        self.name = node.name or (node.output[0] if node.output else node.op_type)
        self.source = f"onnx node '{self.name}' ({node.op_type})"
        self.opset = importer.opset
        """The opset whose version of the op applies (see ``load.converter_opset``), set by the importer."""
        self.attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    # ---- inputs ---------------------------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self.node.input)

    @property
    def num_outputs(self) -> int:
        return len(self.node.output)

    def has_input(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def has_output(self, i: int) -> bool:
        return i < len(self.node.output) and self.node.output[i] != ""

    def known(self, i: int) -> Known | None:
        return self.imp.known.get(self.node.input[i]) if self.has_input(i) else None

    def require_known(self, i: int, what: str) -> Known:
        k = self.known(i)
        if k is None:
            raise self.unsupported(f"{what} (input {i}) must be a compile-time constant, "
                                   "but it is computed at run time")
        return k

    def type(self, i: int) -> TensorType:
        return self.imp.type_of(self.node.input[i], self)

    def shape(self, i: int) -> tuple[Dim, ...]:
        return self.type(i).shape

    def dtype(self, i: int) -> str:
        return self.type(i).dtype

    def rank(self, i: int) -> int:
        return len(self.type(i).shape)

    def value(self, i: int) -> str:
        """The IR value of input ``i`` ("" if absent); a known value becomes a param here."""
        if not self.has_input(i):
            return ""
        return self.imp.value_of(self.node.input[i], self)

    def attr(self, name: str, default: Any = None) -> Any:
        v = self.attrs.get(name, default)
        return v.decode() if isinstance(v, bytes) else v

    # ---- building ---------------------------------------------------------------------------------------
    def emit(self, op: str, inputs: Sequence[str], out: TensorType, **attrs: Any) -> str:
        return self.emit_multi(op, inputs, [out], **attrs)[0]

    def emit_multi(self, op: str, inputs: Sequence[str], outs: Sequence[TensorType], **attrs: Any) -> list[str]:
        base = self.node.output[0] if self.node.output and self.node.output[0] else self.name
        return self.imp.graph.add_node(op, inputs, outs, attrs, name=self.imp.graph.fresh_name(base),
                                       source=self.source)

    def param(self, data: np.ndarray, base: str = "") -> str:
        return self.imp.graph.add_param(base or f"{self.name}_const", data)

    def unsupported(self, detail: str) -> UnsupportedOpError:
        return UnsupportedOpError(self.op_type, self.name, self.source, detail)


class Importer:
    def __init__(self, model: onnx.ModelProto, opset: int, input_shapes: Mapping[str, Sequence[Dim]] | None):
        self.model, self.opset = model, opset
        self.input_shapes = dict(input_shapes or {})
        self.graph = Graph(name=sanitize_symbol(model.graph.name or "main"))
        self.values: dict[str, str] = {}  # ONNX value -> IR value
        self.known: dict[str, Known] = {}

    def run(self) -> Graph:
        g = self.model.graph
        for init in g.initializer:
            self._add_initializer(init)
        for inp in g.input:
            if inp.name not in self.known:
                self._add_input(inp)
        unknown_names = set(self.input_shapes) - {i.name for i in g.input}
        if unknown_names:
            raise InputError(f"input_shapes names {sorted(unknown_names)}, which are not graph inputs")
        for node in g.node:
            self._convert(node)
        outputs = []
        for out in g.output:
            if out.name in self.known:
                outputs.append(self.value_of(out.name, None))
            elif out.name in self.values:
                outputs.append(self.values[out.name])
            else:
                raise UnsupportedOpError("graph output", detail=f"'{out.name}' is never computed")
        self.graph.outputs = _rename_outputs(self.graph, outputs, [o.name for o in g.output])
        verify(self.graph)
        return self.graph

    def _convert(self, node: onnx.NodeProto) -> None:
        from .converters import CONVERTERS

        cx = NodeContext(self, node)
        if node.domain not in DEFAULT_DOMAINS:
            raise cx.unsupported(f"custom domain {node.domain!r}: only the default ONNX domain is supported")
        convert = CONVERTERS.get(node.op_type)
        if convert is None:
            raise cx.unsupported("no converter for this ONNX op")
        try:
            cx.opset = converter_opset(node.op_type, self.opset)
        except UnsupportedOpError as e:
            raise cx.unsupported(e.detail) from None
        results = convert(cx)
        missing = [o for o in node.output[len(results):] if o]
        if missing:
            raise cx.unsupported(f"outputs {missing} are not supported")
        for name, result in zip(node.output, results):
            if not name:
                continue
            # (a name an exporter defines twice refers to its latest definition from here on)
            self.known.pop(name, None)
            self.values.pop(name, None)
            if isinstance(result, Known):
                self.known[name] = result
            else:
                self.values[name] = result

    # ---- graph inputs ----------------------------------------------------------------------------------
    def _add_initializer(self, init: onnx.TensorProto) -> None:
        known = known_from_tensor(init)
        if known is None:
            raise UnsupportedOpError("initializer", detail=f"'{init.name}' has element type "
                                     f"{onnx_type_name(init.data_type)}, which sparsecc does not support")
        self.known[init.name] = known

    def _add_input(self, inp: onnx.ValueInfoProto) -> None:
        tt = inp.type.tensor_type
        if not inp.type.HasField("tensor_type"):
            raise UnsupportedOpError("graph input", detail=f"'{inp.name}' is not a tensor (sequences, maps, "
                                     "optionals are not supported)")
        dtype = ir_dtype(tt.elem_type)
        if dtype is None:
            raise UnsupportedOpError("graph input", detail=f"'{inp.name}' has element type "
                                     f"{onnx_type_name(tt.elem_type)}, which sparsecc does not support")
        if inp.name in self.input_shapes:
            shape = [d if isinstance(d, int) else sanitize_symbol(str(d)) for d in self.input_shapes[inp.name]]
        elif not tt.HasField("shape"):
            raise UnsupportedOpError("graph input", detail=f"'{inp.name}' has no shape; give it with input_shapes")
        else:
            shape = []
            for axis, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value"):
                    shape.append(int(d.dim_value))
                elif d.HasField("dim_param"):
                    shape.append(sanitize_symbol(d.dim_param))
                else:
                    shape.append(sanitize_symbol(f"{inp.name}_dim{axis}"))
        self.values[inp.name] = self.graph.add_input(inp.name, TensorType(tuple(shape), dtype))

    # ---- lookups -----------------------------------------------------------------------------------------
    def type_of(self, name: str, cx: NodeContext | None) -> TensorType:
        if name in self.values:
            return self.graph.types[self.values[name]]
        if name in self.known:
            return self.known[name].type
        raise _undefined(name, cx)

    def value_of(self, name: str, cx: NodeContext | None) -> str:
        if name in self.values:
            return self.values[name]
        known = self.known.get(name)
        if known is None:
            raise _undefined(name, cx)
        if known.symbolic:
            detail = (f"'{name}' holds symbolic dims {known.ints()} and is used as run-time data; fix the dims with "
                      "input_shapes")
            if cx is not None:
                raise cx.unsupported(detail)
            raise UnsupportedOpError("graph output", detail=detail)
        ir = self.graph.add_param(sanitize_symbol(name), known.numeric())
        self.values[name] = ir
        return ir


def _undefined(name: str, cx: NodeContext | None) -> UnsupportedOpError:
    if cx is not None:
        return cx.unsupported(f"input '{name}' is not defined before this node (not a tensor value)")
    return UnsupportedOpError("graph", detail=f"value '{name}' is not defined")


def _rename_outputs(graph: Graph, outputs: list[str], wanted: list[str]) -> list[str]:
    """Gives node-produced graph outputs their ONNX names where those are free (callers see the same names)."""
    producers = graph.producers()
    result = []
    for value, want in zip(outputs, wanted):
        node = producers.get(value)
        if value != want and node is not None and want not in graph.types and outputs.count(value) == 1:
            node.outputs[node.outputs.index(value)] = want
            graph.types[want] = graph.types.pop(value)
            for n in graph.nodes:
                n.inputs = [want if i == value else i for i in n.inputs]
            value = want
        result.append(value)
    return result
