"""Measured damage: the loss increase when one layer alone takes a candidate, run on calibration rows.

The Hessian estimate (``candidates.py``) is a quadratic model around the dense weights with an isotropic
curvature per layer. It ranks layers well, but it misjudges large, structured errors: on MiniLM it put
low-rank factorizations (whose error is large and lies in a few output directions) 3-15x below the loss they
really cost, while it predicted W8A8 within 2x. Measuring is exact for one layer at a time: the whole graph runs
in the interpreter with that layer's node replaced by its compressed one-layer graph, and the same loss as the
sensitivity's (``sensitivity.py``: mse / kl against the dense outputs, or ce against labels) is compared with the
dense model's. Layers are then assumed to add up, as in the Hessian form.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from sparsecc.interpreter import Interpreter
from sparsecc.ir.graph import Graph
from sparsecc.passes.compress.memo import remembered

from .sensitivity import graph_digest, loss_value, problem_digest


class OutputDamage:
    """``damage(node, compressed one-layer graph)`` -> loss increase over the dense model on ``batches``.

    The dense run's values are kept, so a candidate only re-runs the graph from its layer onwards."""

    def __init__(self, graph: Graph, batches: Sequence[Sequence[np.ndarray]], loss: str = "mse",
                 labels: Sequence[Any] | None = None):
        self.graph, self.loss = graph, loss
        self.interp = Interpreter(graph)
        self.index = {n.name: i for i, n in enumerate(graph.nodes)}
        self.labels = None if labels is None else [torch.as_tensor(np.asarray(y)).long() for y in labels]
        self.runs: list[tuple[dict[str, Any], dict[str, int]]] = []
        with torch.no_grad():
            for batch in batches:
                env: dict[str, Any] = dict(self.interp.params)
                symbols = self.interp.bind_inputs(list(batch), env)
                self._run(env, symbols, 0, None)
                self.runs.append((env, symbols))
        self.reference = [[env[o] for o in graph.outputs] for env, _ in self.runs]
        self.dense = [self._loss(ref, i) for i, ref in enumerate(self.reference)]
        """The dense model's own loss per batch (0 for the label-free losses)."""
        self.key = problem_digest(graph, batches, loss, labels)

    def _run(self, env: dict[str, Any], symbols: dict[str, int], start: int, swap: tuple[str, Graph] | None) -> None:
        for node in self.graph.nodes[start:]:
            args = [env[i] if i else None for i in node.inputs]
            if swap is not None and node.name == swap[0]:
                out = Interpreter(swap[1]).run(args[0])[0]
            else:
                out = self.interp.run_node(node, args, symbols)
            env.update(zip(node.outputs, out if isinstance(out, tuple) else (out,)))

    def __call__(self, node: str, layer: Graph) -> float:
        """Remembered (``passes/compress/memo.py``) under the problem and the compressed layer's contents."""
        return remembered("refine", (), lambda: self._measure(node, layer), self.key, node, graph_digest(layer))

    def _measure(self, node: str, layer: Graph) -> float:
        total = 0.0
        with torch.no_grad():
            for i, (dense_env, symbols) in enumerate(self.runs):
                env = dict(dense_env)
                self._run(env, symbols, self.index[node], (node, layer))
                total += self._loss([env[o] for o in self.graph.outputs], i) - self.dense[i]
        return total / len(self.runs)

    def _loss(self, outs: list[torch.Tensor], batch: int) -> float:
        floats = [j for j, out in enumerate(outs) if out.is_floating_point()]
        return float(loss_value(self.loss, [outs[j] for j in floats], [self.reference[batch][j] for j in floats],
                                None if self.labels is None else self.labels[batch]))
