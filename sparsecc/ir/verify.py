"""Checks the IR's invariants; tests run it after every pass (``PassManager(verify=True)``)."""
from __future__ import annotations

from sparsecc.errors import VerificationError
from sparsecc.ir.encodings import COMPANIONS
from sparsecc.ir.graph import Graph
from sparsecc.ir.ops import OPS, REQUIRED


def verify(graph: Graph) -> None:
    """Raises ``VerificationError`` naming the first broken invariant.

    SSA (each value defined once), defined-before-use (topological order), every value typed,
    every op in the canonical set with a valid arity and attribute set, outputs defined.
    """
    defined = set(graph.inputs) | set(graph.params)
    if len(defined) != len(graph.inputs) + len(graph.params):
        raise VerificationError("a name is both a graph input and a param, or an input is listed twice")
    for name, param in graph.params.items():
        if graph.types.get(name) != param.type:
            raise VerificationError(f"param '{name}' has type {graph.types.get(name)} but holds {param.type}")
        for key in COMPANIONS:
            if key in param.encoding.meta and param.encoding.meta[key] not in graph.params:
                raise VerificationError(f"param '{name}' ({param.encoding.kind}): its {key} "
                                        f"'{param.encoding.meta[key]}' is not a param")
    for node in graph.nodes:
        schema = OPS.get(node.op)
        where = f"node '{node.name}' ({node.op})"
        if schema is None:
            raise VerificationError(f"{where}: not a canonical op")
        present = len(node.inputs)
        if not schema.min_inputs() <= present <= schema.max_inputs():
            raise VerificationError(f"{where}: {present} inputs, expected {schema.min_inputs()}..{schema.max_inputs()}")
        unknown = set(node.attrs) - set(schema.attrs)
        if unknown:
            raise VerificationError(f"{where}: unknown attributes {sorted(unknown)}")
        missing = [k for k, v in schema.attrs.items() if v is REQUIRED and k not in node.attrs]
        if missing:
            raise VerificationError(f"{where}: missing attributes {missing}")
        if len(node.outputs) != schema.num_outputs({**schema.attrs, **node.attrs}):
            raise VerificationError(f"{where}: {len(node.outputs)} outputs, expected {schema.num_outputs(node.attrs)}")
        for i in node.inputs:
            if i and i not in defined:
                raise VerificationError(f"{where}: input '{i}' used before it is defined")
        for o in node.outputs:
            if o in defined:
                raise VerificationError(f"{where}: value '{o}' defined twice")
            if o not in graph.types:
                raise VerificationError(f"{where}: output '{o}' has no type")
            defined.add(o)
    for o in graph.outputs:
        if o not in defined:
            raise VerificationError(f"graph output '{o}' is never defined")
