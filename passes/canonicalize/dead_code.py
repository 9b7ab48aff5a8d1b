"""Removes nodes whose outputs nobody uses, and params nobody reads (a compressed weight's companions count as read)."""
from __future__ import annotations

from sparsecc.ir.encodings import COMPANIONS
from sparsecc.ir.graph import Graph


def eliminate_dead_code(graph: Graph) -> Graph:
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if any(o in live for o in node.outputs):
            kept.append(node)
            live.update(i for i in node.inputs if i)
    graph.nodes = kept[::-1]
    live.update(graph.params[p].encoding.meta[k] for p in list(live) if p in graph.params
                for k in COMPANIONS if k in graph.params[p].encoding.meta)
    for name in [p for p in graph.params if p not in live]:
        del graph.params[name]
    defined = live | set(graph.inputs) | {o for n in graph.nodes for o in n.outputs}
    graph.types = {k: v for k, v in graph.types.items() if k in defined}
    return graph
