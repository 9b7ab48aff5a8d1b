"""Folds inference ``batch_norm`` into the preceding ``conv`` / ``linear`` (weights and bias rescaled)."""
from __future__ import annotations

import numpy as np

from sparsecc.ir.graph import Graph, Param


def fold_batch_norm(graph: Graph) -> Graph:
    producers, users = graph.producers(), graph.users()
    drop = set()
    for bn in graph.nodes:
        if bn.op != "batch_norm" or not all(i in graph.params for i in bn.inputs[1:]):
            continue
        conv = producers.get(bn.inputs[0])
        if (conv is None or conv.op != "conv" or conv.inputs[1] not in graph.params
                or len(users.get(bn.inputs[0], [])) != 1 or bn.inputs[0] in graph.outputs):
            continue
        scale, shift, mean, var = (graph.params[i].data.astype(np.float64) for i in bn.inputs[1:])
        w = graph.params[conv.inputs[1]].data
        has_bias = len(conv.inputs) > 2 and conv.inputs[2]
        if (has_bias and conv.inputs[2] not in graph.params) or w.dtype != np.float32:
            continue
        b = graph.params[conv.inputs[2]].data.astype(np.float64) if has_bias else np.zeros(w.shape[0])
        factor = scale / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
        new_w = (w * factor.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        new_b = ((b - mean) * factor + shift).astype(w.dtype)
        wname, bname = graph.fresh_name(conv.inputs[1] + "_bn"), None
        graph.params[wname] = Param(new_w)
        graph.types[wname] = graph.params[wname].type
        bname = graph.fresh_name(wname + "_bias")
        graph.params[bname] = Param(new_b)
        graph.types[bname] = graph.params[bname].type
        conv.inputs = [conv.inputs[0], wname, bname]
        conv.outputs = list(bn.outputs)
        drop.add(id(bn))
    graph.nodes = [n for n in graph.nodes if id(n) not in drop]
    return graph
