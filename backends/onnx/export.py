"""sparsecc IR -> ONNX ``ModelProto`` that runs in onnxruntime.

Graph inputs become ONNX inputs (symbolic dims -> ``dim_param``), params initializers under their own names,
every node goes through its op's emitter (``emitters/``), and graph outputs keep their IR names and types.
IR value names are kept: the last ONNX node an emitter adds for an output is renamed to the IR output name.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from sparsecc.errors import SparseccError, UnsupportedOpError
from sparsecc.ir.graph import Graph, Node, Param
from sparsecc.ir.layouts import unpack
from sparsecc.ir.ops import OPS, REQUIRED

from .context import EmitContext, value_info
from .emitters import EMITTERS

DEFAULT_OPSET = 18
MIN_OPSET = 18  # the emitters use opset-18 forms (axes as inputs in reductions, Split sizes, BitwiseNot, Pad axes)


def to_onnx(graph: Graph, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The ONNX model computing ``graph``; raises ``UnsupportedOpError`` for anything it cannot express exactly."""
    if opset < MIN_OPSET:
        raise SparseccError(f"opset {opset}: the ONNX backend emits opset >= {MIN_OPSET}")
    cx = EmitContext(graph)
    initializers = [_initializer(name, param) for name, param in graph.params.items()]
    env = {name: name for name in list(graph.inputs) + list(graph.params)}
    for node in graph.nodes:
        cx.node = node
        start = len(cx.nodes)
        outs = EMITTERS[_check_op(node)](cx, *_inputs(node, env), **_attrs(node))
        outs = [outs] if isinstance(outs, str) else list(outs)
        if len(outs) != len(node.outputs):
            raise AssertionError(f"emitter of {node.op} returned {len(outs)} outputs, node has {len(node.outputs)}")
        renamed: dict[str, str] = {}
        for ir_name, onnx_name in zip(node.outputs, outs):
            env[ir_name] = _adopt_name(cx.nodes[start:], onnx_name, ir_name, renamed)
    cx.node = None
    if len(set(graph.outputs)) != len(graph.outputs):
        raise UnsupportedOpError("graph outputs", detail="a value listed twice as a graph output cannot be "
                                 "expressed in ONNX (output names are unique)")
    for out in graph.outputs:
        if env[out] != out:
            cx.nodes.append(helper.make_node("Identity", [env[out]], [out], name=f"{out}/output"))
    onnx_graph = helper.make_graph(
        cx.nodes, graph.name, [value_info(i, graph.types[i]) for i in graph.inputs],
        [value_info(o, graph.types[o]) for o in graph.outputs], initializers + cx.initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="sparsecc",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model, full_check=True)
    return model


def save_onnx(graph: Graph, path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Exports ``graph`` (``to_onnx``) and writes it to ``path``; returns the model."""
    model = to_onnx(graph, opset)
    onnx.save_model(model, os.fspath(path))
    return model


def _check_op(node: Node) -> str:
    if node.op not in EMITTERS:
        raise UnsupportedOpError(node.op, node.name, node.source, "the ONNX backend has no emitter for it")
    return node.op


def _inputs(node: Node, env: dict[str, str]) -> list[str | None]:
    """The ONNX names of the node's inputs, ``None`` for absent optional ones (also trailing ones left out)."""
    declared = OPS[node.op].inputs
    args = [env[i] if i else None for i in node.inputs]
    variadic = bool(declared) and declared[-1].endswith("*")
    return args if variadic else args + [None] * (len(declared) - len(args))


def _attrs(node: Node) -> dict:
    """The node's attributes with the op's defaults filled in; unknown or missing ones are errors."""
    schema = OPS[node.op]
    unknown = sorted(set(node.attrs) - set(schema.attrs))
    if unknown:
        raise UnsupportedOpError(node.op, node.name, node.source, f"unknown attribute(s) {unknown}")
    attrs = {k: node.attrs.get(k, default) for k, default in schema.attrs.items()}
    missing = [k for k, v in attrs.items() if v is REQUIRED]
    if missing:
        raise UnsupportedOpError(node.op, node.name, node.source, f"missing attribute(s) {missing}")
    return attrs


def _initializer(name: str, param: Param) -> onnx.TensorProto:
    if param.encoding.kind != "dense":
        raise UnsupportedOpError(f"encoding '{param.encoding.kind}'", name,
                                 detail="the ONNX backend exports dense weights only")
    layout = param.encoding.meta.get("layout")
    data = unpack(param.data, layout) if layout else np.asarray(param.data)
    return numpy_helper.from_array(data, name)


def _adopt_name(emitted: list[onnx.NodeProto], onnx_name: str, ir_name: str, renamed: dict[str, str]) -> str:
    """Renames ``onnx_name`` to ``ir_name`` in the nodes just emitted, if one of them produces it (an emitter
    may also return an existing value, e.g. its input); returns the name the IR value now has in ONNX."""
    if onnx_name in renamed:
        return renamed[onnx_name]
    if not any(onnx_name in n.output for n in emitted):
        return onnx_name
    for n in emitted:
        for field in (n.input, n.output):
            for i, v in enumerate(field):
                if v == onnx_name:
                    field[i] = ir_name
    renamed[onnx_name] = ir_name
    return ir_name
