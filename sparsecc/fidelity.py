"""Deployed kernels vs the interpreter, layer by layer: is a gap between their outputs a kernel that computes
something else, or one activation code that rounded the other way?

The interpreter is the specification: every kernel must compute what it computes. End to end that can only be
checked for models whose float operations are all exact or all follow the same order. A layer that quantizes its
input (W8A8, W7A8, W4A8: static activation scales) rounds ``x / scale``; where ``x`` lies within a few float32 ulps
of a rounding tie, the compiled model (whose layer norms, softmaxes and matmuls sum in another order) and the
interpreter may round it apart: one code step. Through attention, that step reaches every token of the next
layer, moves more inputs across ties, and the final outputs can differ by far more than a float error.

``check_fidelity`` tells the two apart. It builds the model once more with every ``linear`` / ``conv`` input and
output also returned, runs it and the interpreter on the same inputs, and per layer reports:

* ``kernel_diff``: the deployed output vs the interpreter's evaluation of that one layer **on the deployed
  input**, i.e. the kernel against its specification, free of everything upstream;
* ``input_diff``: the deployed vs the interpreter's input of the layer (what upstream float order did);
* ``code_flips``: for input-quantizing layers, how many activation codes differ between quantizing the two.

A faithful build has every ``kernel_diff`` at float32 rounding (~1e-7), whatever its end-to-end difference.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from sparsecc.errors import SparseccError
from sparsecc.ir.graph import Graph

LAYER_OPS = ("linear", "conv")


@dataclass
class LayerFidelity:
    node: str
    op: str
    weight: str
    encoding: str
    input_diff: float
    """max |deployed input - interpreter input| / max |interpreter input|."""
    kernel_diff: float
    """max |deployed output - interpreter(layer, deployed input)| / max |that|."""
    code_flips: int | None = None
    """Input-quantizing layers: activation codes that differ between quantizing the two inputs."""
    codes: int | None = None


@dataclass
class FidelityReport:
    end_to_end: float
    """max over outputs of max |deployed - interpreter| / max |interpreter| (the instrumented build)."""
    instrumented_vs_deployed: float | None
    """The instrumented build's outputs vs the plain deployed model's (0: returning the layers changed nothing)."""
    layers: list[LayerFidelity]

    @property
    def kernel_diff(self) -> float:
        return max((layer.kernel_diff for layer in self.layers), default=0.0)

    @property
    def code_flips(self) -> int:
        return sum(layer.code_flips or 0 for layer in self.layers)

    @property
    def first_flip(self) -> LayerFidelity | None:
        return next((layer for layer in self.layers if layer.code_flips), None)

    def summary(self) -> str:
        text = (f"end to end {self.end_to_end:.1e}; every layer's kernel on the deployed input within "
                f"{self.kernel_diff:.1e} of the interpreter ({len(self.layers)} layers)")
        first = self.first_flip
        if first is not None:
            codes = sum(layer.codes or 0 for layer in self.layers)
            text += (f"; {self.code_flips} of {codes} activation codes rounded apart, the first at {first.node} "
                     f"({first.code_flips} there; its input differs by {first.input_diff:.1e})")
        return text

    def as_dict(self) -> dict[str, Any]:
        first = self.first_flip
        return {"end_to_end": self.end_to_end, "kernel_diff": self.kernel_diff, "code_flips": self.code_flips,
                "first_flip": None if first is None else first.node,
                "instrumented_vs_deployed": self.instrumented_vs_deployed,
                "layers": [asdict(layer) for layer in self.layers]}


def relative_diff(out: Any, ref: Any) -> float:
    """max |out - ref| / max |ref|, in float64."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"shapes differ: {out.shape} vs {ref.shape}")
    return float(np.abs(out - ref).max(initial=0.0) / max(np.abs(ref).max(initial=0.0), 1e-30))


def check_fidelity(model: Any, *inputs: np.ndarray, target: Any = "x86") -> FidelityReport:
    """Layer-by-layer fidelity of ``model`` (a ``CompiledModel``, or a graph to build for ``target``) on
    ``inputs`` (see the module docstring). The model is built once more, with its layers' inputs and outputs
    returned; for a ``CompiledModel`` its own outputs are compared with that build's."""
    import torch

    from sparsecc.backends.tvm import compile_graph, prepare_graph, target_name
    from sparsecc.compiler import RUNNABLE_HERE
    from sparsecc.interpreter.interpreter import Interpreter

    compiled = None if isinstance(model, Graph) else model
    plain = None
    if compiled is not None:
        plain = compiled(*inputs)  # first: an artifact for another device fails here, before any build
        plain = plain if isinstance(plain, tuple) else (plain,)
        model, target = compiled.graph, compiled.manifest["target"]["name"]
    elif target_name(target) not in (*RUNNABLE_HERE, "cuda"):
        raise SparseccError(f"check_fidelity runs the model here; a {target_name(target)} build cannot run on this "
                            "machine (check an x86 build of the same graph: its layers compute the same codes)")
    graph = prepare_graph(model, target)
    layers = [n for n in graph.nodes if n.op in LAYER_OPS and all(not i or i in graph.params for i in n.inputs[1:])]
    probed = list(dict.fromkeys(v for n in layers for v in (n.inputs[0], n.outputs[0]) if v not in graph.outputs))
    instrumented = graph.copy()
    instrumented.outputs = list(graph.outputs) + probed
    deployed = dict(zip(instrumented.outputs, compile_graph(instrumented, target)(*inputs)))
    interp = Interpreter(instrumented)
    with torch.no_grad():
        env: dict[str, Any] = {}
        symbols = interp.bind_inputs(inputs, env)
        reference = dict(zip(instrumented.outputs, (o.numpy() for o in interp.run(*inputs))))
        report = []
        for node in layers:
            x_dep = torch.from_numpy(np.asarray(deployed[node.inputs[0]]))
            args = [x_dep] + [interp.params[i] if i else None for i in node.inputs[1:]]
            alone = interp.run_node(node, args, symbols).numpy()
            row = LayerFidelity(node.name, node.op, node.inputs[1], graph.params[node.inputs[1]].encoding.kind,
                                relative_diff(x_dep, reference[node.inputs[0]]),
                                relative_diff(deployed[node.outputs[0]], alone))
            quantizer = interp.w8a8.get(node.inputs[1])
            if quantizer is not None:
                codes_dep = quantizer.quantize(x_dep)
                codes_ref = quantizer.quantize(torch.from_numpy(np.asarray(reference[node.inputs[0]])))
                row.code_flips, row.codes = int((codes_dep != codes_ref).sum()), codes_ref.numel()
            report.append(row)
    end_to_end = max(relative_diff(deployed[o], reference[o]) for o in graph.outputs)
    if plain is not None:
        plain = max(relative_diff(deployed[o], out) for o, out in zip(graph.outputs, plain))
    return FidelityReport(end_to_end, plain, report)
