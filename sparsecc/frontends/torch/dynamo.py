"""The graph dynamo hands a ``torch.compile`` backend -> sparsecc IR.

Dynamo's graph is torch-level (``torch._C._nn.linear``, ``F.batch_norm``) and receives the module's
parameters and buffers as placeholder inputs. It is lowered to core aten by exporting the GraphModule
itself (non-strict ``torch.export``); parameters and buffers are frozen as params and the remaining
tensor inputs stay run-time inputs.
"""
from __future__ import annotations

from typing import Any

import torch

from sparsecc.errors import UnsupportedOpError
from sparsecc.ir.graph import Graph

from .export import import_exported_program


def _is_state(value: Any) -> bool:
    """A parameter or buffer of an nn.Module: dynamo marks both as static inputs."""
    return isinstance(value, torch.nn.Parameter) or getattr(value, "_dynamo_static_input_type", None) is not None


def import_dynamo_graph(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> tuple[Graph, list[int]]:
    """Returns the graph (parameters and buffers frozen) and the indices of ``example_inputs`` that stay
    run-time inputs, in the graph's input order."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, value in zip(placeholders, example_inputs):
        if not isinstance(value, torch.Tensor):
            raise UnsupportedOpError("placeholder", node.name, "dynamo graph",
                                     f"a {type(value).__name__} input (symbolic sizes need torch.compile(dynamic="
                                     "False) or the torch.export path with dynamic_shapes)")
    runtime_idx = [i for i, v in enumerate(example_inputs) if not _is_state(v)]
    frozen = {i: v.detach() for i, v in enumerate(example_inputs) if _is_state(v)}
    try:
        with torch.no_grad():
            ep = torch.export.export(gm, tuple(v.detach() for v in example_inputs), strict=False)
    except Exception as e:  # noqa: BLE001  any export failure means "run this graph eagerly"
        raise UnsupportedOpError("torch.export", gm.__class__.__name__, "dynamo graph",
                                 f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return import_exported_program(ep, frozen_inputs=frozen), runtime_idx
