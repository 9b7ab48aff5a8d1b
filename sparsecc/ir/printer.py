"""A readable text form of a graph, one line per node (like torch.fx's ``graph.print_tabular`` but terser)."""
from __future__ import annotations

from sparsecc.ir.graph import Graph


def format_graph(graph: Graph, max_nodes: int | None = None) -> str:
    lines = [f"graph {graph.name}(" + ", ".join(f"%{i}: {graph.types[i]}" for i in graph.inputs) + ") {"]
    for name, p in graph.params.items():
        enc = "" if p.encoding.kind == "dense" else f" <{p.encoding.kind}>"
        lines.append(f"  param %{name}: {p.type}{enc}")
    nodes = graph.nodes if max_nodes is None else graph.nodes[:max_nodes]
    for node in nodes:
        types = ", ".join(str(graph.types[o]) for o in node.outputs)
        lines.append(f"  {node}  # {types}")
    if max_nodes is not None and len(graph.nodes) > max_nodes:
        lines.append(f"  ... {len(graph.nodes) - max_nodes} more nodes")
    lines.append("  return " + ", ".join(f"%{o}" for o in graph.outputs))
    lines.append("}")
    return "\n".join(lines)
