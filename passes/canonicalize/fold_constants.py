"""Evaluates nodes whose inputs are all params (lifted constants, shape arithmetic) into new params.

Folding is skipped when the result would be much larger than its inputs (e.g. an ``expand`` of a
scalar to a big mask) so artifacts don't bloat.
"""
from __future__ import annotations

import torch

from sparsecc.interpreter import Interpreter, param_tensor
from sparsecc.ir.graph import Graph, Param

MAX_GROWTH = 4  # fold only when output bytes <= MAX_GROWTH * input bytes (or tiny)
SMALL = 1 << 16


def fold_constants(graph: Graph) -> Graph:
    interp = Interpreter(graph, params={})
    cache: dict[str, torch.Tensor] = {}
    kept = []
    for node in graph.nodes:
        ins = [i for i in node.inputs if i]
        foldable = ins and all(i in graph.params and graph.params[i].encoding.kind == "dense" for i in ins) and all(
            graph.types[o].is_static for o in node.outputs)  # a symbolic size is known only at run time
        # torch <-> numpy has no bfloat16 bridge: such nodes stay for the backend to compute
        foldable = foldable and all(graph.types[v].dtype != "bfloat16" for v in ins + node.outputs)
        if foldable:
            args = [cache.setdefault(i, param_tensor(graph.params[i])) if i else None for i in node.inputs]
            try:
                with torch.no_grad():
                    out = interp.run_node(node, args, {})
            except (NotImplementedError, RuntimeError):  # torch lacks this kernel (e.g. uint16 bitwise_not,
                kept.append(node)                        # 4-D reflect pads): the backend computes it instead
                continue
            outs = out if isinstance(out, tuple) else (out,)
            in_bytes = sum(a.numel() * a.element_size() for a in args if a is not None)
            out_bytes = sum(o.numel() * o.element_size() for o in outs)
            if out_bytes <= max(SMALL, MAX_GROWTH * in_bytes):
                for name, value in zip(node.outputs, outs):
                    graph.params[name] = Param(value.contiguous().numpy())
                    graph.types[name] = graph.params[name].type
                continue
        kept.append(node)
    graph.nodes = kept
    return graph
