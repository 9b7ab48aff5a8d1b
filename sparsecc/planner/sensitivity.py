"""Per-layer sensitivity: the trace of the loss Hessian with respect to each compressible layer's weight.

Hutchinson's estimator, ``E[vᵀ A v] = Tr(A)`` for Rademacher probes ``v`` (entries ±1), applied where it gives
every layer its own estimate from one pass:

* ``"mse"`` (default, label-free): squared distance of every float output to the dense model's own output,
  divided by the dense output's mean square (a unitless relative output error: embeddings, regressions);
* ``"kl"`` (label-free, classifiers): KL divergence from the dense model's softmax over the last axis.

At the dense weights these losses are at their minimum with zero residual, so their Hessian is exactly the
Gauss-Newton matrix ``H = Jᵀ H_y J`` (``J`` the Jacobian of the outputs, ``H_y`` the loss's Hessian in the
outputs). Then ``Tr(H_l) = E ‖J_lᵀ u‖²`` for output-space probes ``u`` with ``E[u uᵀ] = H_y``: Rademacher
entries scaled by ``H_y``'s constant diagonal (mse), or ``e_y − p`` with ``y`` drawn from the dense softmax
``p`` (kl). One vector-Jacobian product (``torch.func.vjp`` through the interpreter, so ONNX-imported graphs are
treated like torch-captured ones) gives every layer's ``J_lᵀ u`` at once: no cross-layer terms, every sample
non-negative. (Probing the weights instead, ``v_lᵀ (H v)_l``, mixes in the other layers' curvature: the
estimate for a small first conv was dominated by it and often came out negative.)

* ``"ce"``: cross-entropy against ``labels`` (one integer class per row of the first output). Away from the
  loss's minimum the Hessian is not Gauss-Newton, so this one probes the weights: ``v_lᵀ (H v)_l`` with
  Hessian-vector products by ``torch.func.jvp`` of ``torch.func.grad``.

Probes cycle through the calibration batches and stop once every layer's estimate has a relative standard error
below ``tolerance`` (or at ``max_probes``). ``½ δᵀ H δ`` then predicts the loss a weight change ``δ`` costs.
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
from sparsecc.passes.compress.memo import content_digest

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


def loss_value(loss: str, outs: Sequence[torch.Tensor], reference: Sequence[torch.Tensor],
               labels: torch.Tensor | None = None) -> torch.Tensor:
    """The sensitivity loss (module docstring) of float outputs ``outs`` against the dense model's ``reference``
    (``ce``: the first output against ``labels``). The measured damage (``refine.py``) uses the same."""
    if loss == "ce":
        return torch.nn.functional.cross_entropy(outs[0].reshape(-1, outs[0].shape[-1]), labels)
    total = outs[0].new_zeros(())
    for out, ref in zip(outs, reference):
        if loss == "kl":
            total = total + torch.nn.functional.kl_div(out.log_softmax(-1).reshape(-1, out.shape[-1]),
                                                       ref.log_softmax(-1).reshape(-1, ref.shape[-1]),
                                                       log_target=True, reduction="batchmean")
        else:
            total = total + ((out - ref) ** 2).mean() / (ref ** 2).mean().clamp_min(1e-30)
    return total


def graph_digest(graph: Graph) -> str:
    """A content key of ``graph``: its nodes, types, params and their encodings."""
    structure = ([(n.op, n.inputs, n.outputs, sorted(n.attrs.items())) for n in graph.nodes], graph.inputs,
                 graph.outputs, sorted((k, str(t)) for k, t in graph.types.items()),
                 sorted((k, p.encoding.kind, repr(p.encoding.meta)) for k, p in graph.params.items()))
    return content_digest([graph.params[k].data for k in sorted(graph.params)], structure).hex()


def problem_digest(graph: Graph, batches: Sequence[Sequence[Any]], loss: str,
                   labels: Sequence[Any] | None = None) -> str:
    """A content key of what the sensitivity and the measured damages are computed from: the graph
    (``graph_digest``), the calibration batches, the loss and the labels. Their results are remembered under it
    (``passes/compress/memo.py``, on disk too), so a second plan of the same model skips them."""
    arrays = [np.asarray(a) for b in batches for a in b] + [np.asarray(y) for y in labels or ()]
    return content_digest(arrays, graph_digest(graph), loss).hex()


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
    generator = torch.Generator().manual_seed(seed)
    probe_fns = [(_hvp_probe if loss == "ce" else _output_probe)(graph, params, trainable, list(batch), loss,
                                                                  None if labels is None else labels[i], generator)
                 for i, batch in enumerate(batches)]
    samples: dict[str, list[float]] = {k: [] for k in names}
    for probe in range(max_probes):
        for k, value in probe_fns[probe % len(probe_fns)]().items():
            samples[k].append(value)
        worst = _worst_relative_error(samples)
        if progress:
            progress(probe + 1, worst)
        if probe + 1 >= min_probes and worst <= tolerance:
            break
    return {k: _trace(s, trainable[k].numel()) for k, s in samples.items()}


Probe = Callable[[], dict[str, float]]
"""One Hutchinson sample of every layer's ``Tr(H_l)``."""


def _outputs(graph: Graph, params: dict[str, torch.Tensor], batch: list[Any]) -> Callable[..., list[torch.Tensor]]:
    """The float outputs of one batch as a function of the chosen weights (the rest fixed at their dense values)."""
    with torch.no_grad():
        reference = Interpreter(graph, params).run(*batch)
    floats = [i for i, r in enumerate(reference) if r.is_floating_point()]
    if not floats:
        raise SparseccError("Hessian sensitivity needs a floating-point model output to measure the loss on")

    def outputs(weights: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        outs = Interpreter(graph, {**params, **weights}).run(*batch)
        return [outs[i] for i in floats]

    return outputs


def _output_probe(graph: Graph, params: dict[str, torch.Tensor], trainable: dict[str, torch.Tensor],
                  batch: list[Any], loss: str, _labels: Any, generator: torch.Generator) -> Probe:
    """Label-free losses: ``‖J_lᵀ u‖²`` with ``u`` drawn so that ``E[u uᵀ]`` is the loss's Hessian in the outputs."""
    outputs = _outputs(graph, params, batch)
    with torch.no_grad():
        reference = outputs(trainable)

    def probe() -> dict[str, float]:
        outs, vjp = torch.func.vjp(outputs, trainable)
        cotangents = []
        for ref in reference:
            if loss == "kl":  # Hessian of batchmean KL in the logits: (diag(p) - p pᵀ) / rows
                p = ref.softmax(-1).reshape(-1, ref.shape[-1])
                draw = torch.multinomial(p, 1, generator=generator).squeeze(1)
                u = (torch.nn.functional.one_hot(draw, p.shape[1]).to(p.dtype) - p) / math.sqrt(p.shape[0])
            else:  # Hessian of mean((out - ref)²) / mean(ref²): 2 / (numel · mean(ref²)) · I
                scale = math.sqrt(2.0 / (ref.numel() * float((ref ** 2).mean().clamp_min(1e-30))))
                u = (torch.randint(0, 2, ref.shape, generator=generator).to(ref.dtype) * 2 - 1) * scale
            cotangents.append(u.reshape(ref.shape))
        (grads,) = vjp(cotangents)
        return {k: float(torch.sum(g.double() ** 2)) for k, g in grads.items()}

    return probe


def _hvp_probe(graph: Graph, params: dict[str, torch.Tensor], trainable: dict[str, torch.Tensor],
               batch: list[Any], _loss: str, labels: Any, generator: torch.Generator) -> Probe:
    """Cross-entropy against labels: ``v_lᵀ (H v)_l`` with a Rademacher ``v`` over every weight."""
    outputs = _outputs(graph, params, batch)
    target = torch.as_tensor(np.asarray(labels)).long()

    def objective(weights: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_value("ce", outputs(weights), [], target)

    def probe() -> dict[str, float]:
        v = {k: torch.randint(0, 2, w.shape, generator=generator).to(w.dtype) * 2 - 1 for k, w in trainable.items()}
        _, hv = torch.func.jvp(torch.func.grad(objective), (trainable,), (v,))
        return {k: float(torch.sum(hv[k].double() * v[k].double())) for k in trainable}

    return probe


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
