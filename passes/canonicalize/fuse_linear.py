"""Rewrites weight-times-activation patterns into ``linear`` so compression passes see every layer.

* ``matmul(x, W)`` with ``W`` a 2-D param  ->  ``linear(x, W^T)``
* ``linear(x, W)`` (no bias) followed by ``add(_, b)`` with ``b`` a param of shape [out] -> ``linear(x, W, b)``
"""
from __future__ import annotations

import numpy as np

from sparsecc.ir.graph import Graph, Param


def _is_param(graph: Graph, name: str, rank: int) -> bool:
    p = graph.params.get(name)
    return p is not None and p.encoding.kind == "dense" and p.data.ndim == rank


def matmul_to_linear(graph: Graph) -> Graph:
    for node in graph.nodes:
        if node.op == "matmul" and _is_param(graph, node.inputs[1], 2) and graph.types[node.inputs[0]].rank >= 1:
            w = graph.params[node.inputs[1]].data
            if not np.issubdtype(w.dtype, np.floating):
                continue
            name = graph.fresh_name(node.inputs[1] + "_t")
            graph.params[name] = Param(np.ascontiguousarray(w.T))
            graph.types[name] = graph.params[name].type
            node.op, node.inputs = "linear", [node.inputs[0], name]
    return graph


def fuse_linear_bias(graph: Graph) -> Graph:
    users = graph.users()
    drop = set()
    producers = graph.producers()
    for node in graph.nodes:
        if node.op != "add":
            continue
        for lhs, rhs in (node.inputs, node.inputs[::-1]):
            lin = producers.get(lhs)
            if (lin is None or lin.op != "linear" or (len(lin.inputs) > 2 and lin.inputs[2])
                    or len(users.get(lhs, [])) != 1 or lhs in graph.outputs or not _is_param(graph, rhs, 1)):
                continue
            out_features = graph.params[lin.inputs[1]].data.shape[0]
            if graph.params[rhs].data.shape != (out_features,) or graph.types[node.outputs[0]] != graph.types[lhs]:
                continue
            lin.inputs = [lin.inputs[0], lin.inputs[1], rhs]
            lin.outputs = list(node.outputs)
            drop.add(id(node))
            break
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    return graph
