"""IR -> IR, the TVM pipeline's first stage: store each weight in the layout its CPU kernel streams.

Runs once at compile time, so the artifact holds packed weights and no kernel re-lays them out per call.
Values never change (``sparsecc.ir.layouts``): the interpreter unpacks, so it still computes the same thing.
"""
from __future__ import annotations

import numpy as np

from sparsecc.ir import encodings
from sparsecc.ir.graph import Encoding, Graph, Param
from sparsecc.ir.layouts import blocked_layout, pack

from .targets import TargetLike, resolve_target

LANES = 16
"""Output channels per packed block: one AVX-512 vector (four NEON vectors) of float32."""


def relayout_weights(graph: Graph, target: TargetLike) -> Graph:
    """A copy of ``graph`` whose float32 ``linear`` weights are packed ``OI16o`` on CPU targets.

    Compressed weights (``sparsecc.ir.encodings``) are packed together with their companions (scales, indices).
    A weight is left alone when another op also reads it (tied embeddings), when its output count is not a
    multiple of the block, or when it already has a layout."""
    if resolve_target(target).kind.name != "llvm":
        return graph
    graph = graph.copy()
    users = graph.users()
    layout = blocked_layout(LANES)
    for node in graph.nodes:
        if node.op != "linear":
            continue
        name = node.inputs[1]
        param = graph.params.get(name)
        if encodings.is_compressed(graph, name):
            if encodings.can_relayout(graph, name, LANES) and len(users[name]) == 1:
                encodings.relayout(graph, name, LANES)
            continue
        if (param is None or param.encoding.kind != "dense" or param.encoding.meta or param.data.dtype != np.float32
                or param.data.ndim != 2 or param.data.shape[0] % LANES or name in graph.outputs
                or any(u.op != "linear" or u.inputs.index(name) != 1 for u in users[name])):
            continue
        graph.params[name] = Param(pack(param.data, layout), Encoding("dense", {"layout": layout}))
        graph.types[name] = graph.params[name].type
    return graph
