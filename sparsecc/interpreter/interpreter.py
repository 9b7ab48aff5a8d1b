"""Executes an IR graph with torch ops (the reference backend, and what calibration/Hessians run on)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from sparsecc.errors import InputError, UnsupportedOpError
from sparsecc.interpreter.torch_ops import TORCH_OPS, torch_dtype
from sparsecc.ir import encodings
from sparsecc.ir.dims import bind_symbols, eval_dim
from sparsecc.ir.graph import Graph, Node, Param
from sparsecc.ir.layouts import unpack

SHAPE_ATTRS = ("shape",)  # attributes that may hold symbolic dims, resolved per call


def param_tensor(param: Param) -> torch.Tensor:
    """The dense tensor a dense param stands for (a packed layout, ``sparsecc.ir.layouts``, is unpacked)."""
    if param.encoding.kind != "dense":
        raise UnsupportedOpError(f"encoding {param.encoding.kind}", detail="decode it with graph_param_tensor")
    layout = param.encoding.meta.get("layout")
    data = unpack(param.data, layout) if layout else np.array(param.data, copy=True)
    return torch.from_numpy(data)


def graph_param_tensor(graph: Graph, name: str) -> torch.Tensor:
    """The dense tensor param ``name`` stands for: compressed encodings decode exactly as their kernels do
    (``sparsecc.ir.encodings``)."""
    if encodings.is_compressed(graph, name):
        return torch.from_numpy(encodings.load(graph, name).dense())
    return param_tensor(graph.params[name])


class Interpreter:
    """Runs ``graph`` node by node. ``run_node`` is the one dispatch point (one torch function per op)."""

    def __init__(self, graph: Graph, params: dict[str, torch.Tensor] | None = None):
        self.graph = graph
        self.params = params if params is not None else {k: graph_param_tensor(graph, k) for k in graph.params}
        self.hooks: list[Callable[[Node, list[Any], Any], None]] = []
        self.w8a8 = {k: encodings.W8A8(encodings.load(graph, k)) for k, p in graph.params.items()
                     if "activation" in p.encoding.meta}
        """W8A8 weights: their ``linear`` / ``conv`` quantizes its input (``encodings.W8A8``)."""

    def run(self, *inputs: Any) -> list[torch.Tensor]:
        env: dict[str, Any] = dict(self.params)
        symbols = self.bind_inputs(inputs, env)
        for node in self.graph.nodes:
            args = [env[i] if i else None for i in node.inputs]
            out = self.run_node(node, args, symbols)
            for hook in self.hooks:
                hook(node, args, out)
            outs = out if isinstance(out, tuple) else (out,)
            env.update(zip(node.outputs, outs))
        return [env[o] for o in self.graph.outputs]

    def bind_inputs(self, inputs: Sequence[Any], env: dict[str, Any]) -> dict[str, int]:
        graph = self.graph
        if len(inputs) != len(graph.inputs):
            raise InputError(f"expected {len(graph.inputs)} inputs ({', '.join(graph.inputs)}), got {len(inputs)}")
        symbols: dict[str, int] = {}
        for name, value in zip(graph.inputs, inputs):
            t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
            want = graph.types[name]
            if t.dtype != torch_dtype(want.dtype):
                raise InputError(f"input '{name}': expected dtype {want.dtype}, got {str(t.dtype)[6:]}")
            try:
                bind_symbols(want.shape, tuple(t.shape), symbols, f"input '{name}'")
            except ValueError as e:
                raise InputError(str(e)) from None
            env[name] = t
        return symbols

    def run_node(self, node: Node, args: list[Any], symbols: dict[str, int]) -> Any:
        fn = TORCH_OPS.get(node.op)
        if fn is None:
            raise UnsupportedOpError(node.op, node.name, node.source, "no interpreter implementation")
        attrs = node.attrs
        if symbols and any(k in attrs for k in SHAPE_ATTRS):
            attrs = {k: [eval_dim(d, symbols) for d in v] if k in SHAPE_ATTRS else v for k, v in attrs.items()}
        if node.op in ("linear", "conv") and node.inputs[1] in self.w8a8:
            q = self.w8a8[node.inputs[1]]
            acc = fn(q.quantize(args[0]), q.codes, **attrs)
            return q.dequantize(acc, args[2] if len(args) > 2 else None, -1 if node.op == "linear" else 1)
        return fn(*args, **attrs)


def run_graph(graph: Graph, *inputs: Any) -> list[np.ndarray]:
    """Convenience: numpy in, numpy out, no autograd."""
    with torch.no_grad():
        return [o.numpy() for o in Interpreter(graph).run(*inputs)]
