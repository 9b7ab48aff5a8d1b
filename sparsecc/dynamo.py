"""``torch.compile(model, backend="sparsecc", options={...})``, registered via the ``torch_dynamo_backends``
entry point (no ``import sparsecc`` needed).

sparsecc compiles for inference: parameters and buffers are frozen into the artifact (like
inductor's freezing); outputs carry no autograd history. If a frozen parameter is modified in place
afterwards (its version counter moves), the graph is recompiled before the next call. A graph with
an op sparsecc does not support runs eagerly, with a one-line warning naming the op.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

from sparsecc.errors import SparseccError, UnsupportedOpError

OPTIONS = {"target": "x86", "compress": None, "budget": None, "max_drop": None, "calibration": None}


def sparsecc_backend(gm: torch.fx.GraphModule, example_inputs: list[Any],
                     options: dict[str, Any] | None = None) -> Callable:
    unknown = set(options or {}) - set(OPTIONS)
    if unknown:
        raise SparseccError(f"unknown sparsecc options {sorted(unknown)}; valid: {sorted(OPTIONS)}")
    opts = {**OPTIONS, **(options or {})}
    try:
        return _CompiledGraph(gm, example_inputs, opts)
    except UnsupportedOpError as e:
        warnings.warn(f"sparsecc: running this graph eagerly: {e}", stacklevel=2)
        return gm.forward


class _CompiledGraph:
    def __init__(self, gm: torch.fx.GraphModule, example_inputs: list[Any], opts: dict[str, Any]):
        import sparsecc
        from sparsecc.frontends.torch import import_dynamo_graph

        self.gm, self.example_inputs, self.opts = gm, example_inputs, opts
        graph, self.runtime_idx = import_dynamo_graph(gm, example_inputs)
        frozen = set(range(len(example_inputs))) - set(self.runtime_idx)
        self.frozen = [example_inputs[i] for i in sorted(frozen) if isinstance(example_inputs[i], torch.Tensor)]
        self.versions = [t._version for t in self.frozen]
        cm = sparsecc.compile(None, graph=graph, target=opts["target"], compress=opts["compress"],
                              budget=opts["budget"], max_drop=opts["max_drop"], calibration=opts["calibration"])
        self.runner = cm.runner()

    def __call__(self, *args: Any) -> tuple[torch.Tensor, ...]:
        if [t._version for t in self.frozen] != self.versions:
            self.__init__(self.gm, self.example_inputs, self.opts)  # weights changed in place: refreeze
        arrays = [args[i].detach().cpu().numpy() for i in self.runtime_idx]
        return tuple(torch.from_numpy(o) for o in self.runner(*arrays))
