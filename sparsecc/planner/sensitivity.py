"""Per-layer sensitivity: the trace of the loss Hessian with respect to each compressible layer's weight.

Hutchinson's estimator: for Rademacher probes ``v`` (entries ±1), ``E[vᵀ H v] = Tr(H)``. One probe spans every
layer at once, and layer ``l``'s estimate is ``v_lᵀ (H v)_l``: its cross terms with other layers have zero mean,
so each probe costs one Hessian-vector product for the whole model. The products are forward-over-reverse
(``torch.func.jvp`` of ``torch.func.grad``) through the interpreter, so ONNX-imported graphs are treated exactly
like torch-captured ones. Probes cycle through the calibration batches and stop once every layer's estimate has
a relative standard error below ``tolerance`` (or at ``max_probes``).

The loss, evaluated at the dense weights:

* ``"mse"`` (default, label-free): squared distance of every float output to the dense model's own output,
  divided by the dense output's mean square: a unitless relative output error (embeddings, regressions);
* ``"kl"`` (label-free, classifiers): KL divergence from the dense model's softmax over the last axis;
* ``"ce"``: cross-entropy against ``labels`` (one integer class per row of the first output).

At the dense weights the label-free losses are at their minimum, so their Hessian is the Gauss-Newton /
Fisher matrix: positive semi-definite, and ``½ δᵀ H δ`` predicts the loss a weight change ``δ`` costs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from sparsecc.errors import SparseccError
from sparsecc.interpreter import Interpreter
from sparsecc.interpreter.interpreter import graph_param_tensor
from sparsecc.ir.graph import Graph
from sparsecc.passes.compress.calibration import compressible_weight

LOSSES = ("mse", "kl", "ce")


@dataclass
class Trace:
    """Hutchinson estimate of ``Tr(H_l)`` for one weight: mean over probes and its standard error."""
    mean: float
    stderr: float
    probes: int
    size: int
    """Number of weights ``n_l``: ``mean / size`` is the per-weight curvature HAWQ-V2 uses."""

    @property
    def per_weight(self) -> float:
        return max(self.mean, 0.0) / self.size


def layer_weights(graph: Graph) -> list[str]:
    """Names of the compressible weights of ``graph`` (in node order): the layers the planner decides on."""
    names = [compressible_weight(graph, node) for node in graph.nodes]
    return list(dict.fromkeys(n for n in names if n is not None))


def hessian_traces(graph: Graph, batches: Sequence[Sequence[Any]], loss: str = "mse",
                   labels: Sequence[Any] | None = None, weights: Sequence[str] | None = None, seed: int = 0,
                   min_probes: int = 8, max_probes: int = 64, tolerance: float = 0.1,
                   progress: Callable[[int, float], None] | None = None) -> dict[str, Trace]:
    """``Tr(H)`` of the loss for each weight in ``weights`` (default: every compressible one; see the module
    docstring). ``labels``: one array per batch (``loss="ce"``). ``progress(probes, worst relative stderr)``
    is called after each probe."""
    if loss not in LOSSES:
        raise SparseccError(f"sensitivity loss '{loss}': expected one of {', '.join(LOSSES)}")
    if loss == "ce" and (labels is None or len(labels) != len(batches)):
        raise SparseccError("sensitivity loss 'ce' needs labels: one array of classes per calibration batch")
    if not batches:
        raise SparseccError("Hessian sensitivity needs at least one calibration batch")
    names = list(weights) if weights is not None else layer_weights(graph)
    params = {k: graph_param_tensor(graph, k) for k in graph.params}
    trainable = {k: params[k] for k in names}
    objectives = [_objective(graph, params, list(batch), loss, None if labels is None else labels[i])
                  for i, batch in enumerate(batches)]
    generator = torch.Generator().manual_seed(seed)
    samples: dict[str, list[float]] = {k: [] for k in names}
    for probe in range(max_probes):
        v = {k: torch.randint(0, 2, w.shape, generator=generator).to(w.dtype) * 2 - 1 for k, w in trainable.items()}
        _, hv = torch.func.jvp(torch.func.grad(objectives[probe % len(objectives)]), (trainable,), (v,))
        for k in names:
            samples[k].append(float(torch.sum(hv[k].double() * v[k].double())))
        worst = _worst_relative_error(samples)
        if progress:
            progress(probe + 1, worst)
        if probe + 1 >= min_probes and worst <= tolerance:
            break
    return {k: _trace(s, trainable[k].numel()) for k, s in samples.items()}


def _objective(graph: Graph, params: dict[str, torch.Tensor], batch: list[Any], loss: str,
               labels: Any) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """The loss of one batch as a function of the chosen weights (the rest fixed at their dense values)."""
    with torch.no_grad():
        reference = Interpreter(graph, params).run(*batch)
    floats = [i for i, r in enumerate(reference) if r.is_floating_point()]
    if not floats:
        raise SparseccError("Hessian sensitivity needs a floating-point model output to measure the loss on")
    target = None if labels is None else torch.as_tensor(np.asarray(labels)).long()

    def objective(weights: dict[str, torch.Tensor]) -> torch.Tensor:
        outs = Interpreter(graph, {**params, **weights}).run(*batch)
        if loss == "ce":
            return torch.nn.functional.cross_entropy(outs[floats[0]].reshape(-1, outs[floats[0]].shape[-1]), target)
        total = outs[floats[0]].new_zeros(())
        for i in floats:
            out, ref = outs[i], reference[i]
            if loss == "kl":
                total = total + torch.nn.functional.kl_div(out.log_softmax(-1).reshape(-1, out.shape[-1]),
                                                           ref.log_softmax(-1).reshape(-1, ref.shape[-1]),
                                                           log_target=True, reduction="batchmean")
            else:
                total = total + ((out - ref) ** 2).mean() / (ref ** 2).mean().clamp_min(1e-30)
        return total

    return objective


def _worst_relative_error(samples: dict[str, list[float]]) -> float:
    worst = 0.0
    for s in samples.values():
        if len(s) < 2:
            return math.inf
        mean = abs(float(np.mean(s)))
        err = float(np.std(s, ddof=1)) / math.sqrt(len(s))
        worst = max(worst, err / mean if mean > 0 else (0.0 if err == 0 else math.inf))
    return worst


def _trace(samples: list[float], size: int) -> Trace:
    err = float(np.std(samples, ddof=1)) / math.sqrt(len(samples)) if len(samples) > 1 else math.inf
    return Trace(float(np.mean(samples)), err, len(samples), size)
