"""What each layer could become, and what each choice would cost in accuracy.

Every candidate is a compression spec (``passes/compress/spec.py``) applied to one layer by the compression pass
itself, on a one-layer graph holding the real weight and its calibration statistics: the planner's estimate is
made from exactly the weight the final compile will produce.

Damage, in the HAWQ-V2/V3 form ``½ · Tr(H_l)/n_l · ‖W − Ŵ‖²`` (the predicted increase of the sensitivity loss),
with the squared error measured in the layer's input metric ``‖E‖²_G = tr(E G Eᵀ) · K / tr(G)`` (``G`` the
calibration Gram ``XᵀX``, ``K`` its size). When the inputs are isotropic this is the plain Frobenius norm; when
they are not it credits what GPTQ/SparseGPT/activation-aware SVD optimize (the output error), which the plain
norm would penalize. W8A8 also rounds the layer's input to a grid of step ``s``: its noise ``W e`` (``e``
uniform, variance ``s²/12``) adds ``‖W‖² · (s²/12) / E[x²]`` to the same squared error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sparsecc.ir.graph import Graph, Node
from sparsecc.passes.compress import Calibration, compress, parse_spec
from sparsecc.passes.compress.apply import LayerReport, input_grid, why_not
from sparsecc.passes.compress.calibration import LayerStats, compressible_weight

from .refine import OutputDamage
from .sensitivity import Trace

LADDER = ("int8", "int4-g128", "int4-g64", "int4-g32", "2:4", "2:4+int8", "2:4+int4-g64",
          "lowrank:0.5", "lowrank:0.25", "lowrank:0.5+int8@rtn", "lowrank:0.25+int8@rtn", "w8a8", "w7a8",
          "2:4+w7a8")
"""Candidate specs per compressible layer besides ``dense``: weight-only int8/int4 (group-wise), 2:4 alone and
with int8/int4, two ranks of the low-rank ladder alone and with int8 factors, and W8A8, W7A8 and 2:4 W7A8 (when
calibrated; ``plan.for_target`` keeps the W7A8 ones only for x86 without VNNI, where they are faster: elsewhere W8A8
costs the same and damages less, and 2:4 W7A8 has no kernel that skips the pruned weights).
Each takes its data-aware method (GPTQ, SparseGPT, activation-aware SVD) when the layer has statistics, except
the factors' int8 (RTN: at 8 bits per channel GPTQ's gain is nil and it was most of the planner's time)."""
DENSE = "dense"


@dataclass
class Candidate:
    spec: str
    bytes: int
    damage: float
    """The loss increase the planner uses: ``measured`` when refined, else ``predicted``."""
    sq_error: float
    """``‖W − Ŵ‖²_G``."""
    method: str = ""
    predicted: float = 0.0
    """Hessian estimate (see the module docstring)."""
    measured: float | None = None
    """Measured loss increase with this layer alone compressed (``refine.py``), when refined."""
    dominated: bool = False
    """Another candidate of the layer costs no more and is predicted to damage no more: never chosen, and not
    refined (``refine_top``)."""
    layer: Graph | None = field(default=None, repr=False, compare=False)
    """The compressed one-layer graph, until refined."""


def layer_graph(graph: Graph, node: Node) -> Graph:
    """``node`` alone, with its real weight (and bias) under their own names: what the pass compresses."""
    one = Graph(name=f"layer_{node.name}")
    x = one.add_input(node.inputs[0], graph.types[node.inputs[0]])
    inputs = [x]
    for name in node.inputs[1:]:
        if name:
            one.params[name] = graph.params[name]
            one.types[name] = graph.types[name]
        inputs.append(name)
    (y,) = one.add_node(node.op, inputs, [graph.types[node.outputs[0]]], dict(node.attrs), name=node.name)
    one.outputs = [y]
    return one


def eligible(graph: Graph, weights: set[str], calibration: Calibration | None,
             ladder: tuple[str, ...] = LADDER) -> dict[str, list[str]]:
    """Node name -> the specs its layer can take (``dense`` first, then the ladder's in order), for every
    compressible layer whose weight is in ``weights``. W8A8 needs the layer's calibration statistics."""
    out: dict[str, list[str]] = {}
    for node in graph.nodes:
        weight = compressible_weight(graph, node)
        if weight is None or weight not in weights:
            continue
        has_stats = calibration is not None and weight in calibration
        out[node.name] = [DENSE] + [text for text in ladder if not why_not(graph, node, spec := parse_spec(text))
                                    and (has_stats or not spec.activations)]
    return out


def evaluate(graph: Graph, traces: dict[str, Trace], calibration: Calibration | None,
             specs: dict[str, list[str]], progress: Callable[[str], None] | None = None) -> dict[str, list[Candidate]]:
    """Node name -> a ``Candidate`` (bytes, predicted damage, the compressed layer) for each of its ``specs``,
    each compressed for real by the pass on the layer alone. ``traces`` is keyed by weight name."""
    nodes = {n.name: n for n in graph.nodes}
    out: dict[str, list[Candidate]] = {}
    for name, texts in specs.items():
        node = nodes[name]
        weight = compressible_weight(graph, node)
        if progress:
            progress(name)
        one = layer_graph(graph, node)
        stats = calibration[weight] if calibration is not None and weight in calibration else None
        calib = None if stats is None else Calibration({weight: stats}, calibration.batches)
        norms = _norms(graph.params[weight].data, stats)
        options = []
        for text in texts:
            if text == DENSE:
                options.append(Candidate(DENSE, int(graph.params[weight].data.nbytes), 0.0, 0.0, "dense"))
                continue
            spec = parse_spec(text)
            compressed, (report,) = compress(one, spec, calib)
            sq = _squared_error(report, norms, stats, spec.activations)
            predicted = 0.5 * traces[weight].per_weight * sq
            options.append(Candidate(text, int(report.bytes), predicted, sq, report.method, predicted,
                                     layer=compressed))
        out[name] = options
    return out


def refine_top(candidates: dict[str, list[Candidate]], cost: Callable[[str, Candidate], float],
               measure: OutputDamage | None, progress: Callable[[str], None] | None = None) -> None:
    """Marks, per layer, the candidates another one beats on ``cost(node, candidate)`` and predicted damage
    (``dominated``), then replaces the damage of the others, the top ones, by their measured loss increase
    (``measure``; none: the Hessian estimate stays). The compressed layers are released."""
    for node, cands in candidates.items():
        if progress:
            progress(node)
        for c in cands:
            c.dominated = any(d is not c and cost(node, d) <= cost(node, c) and d.predicted <= c.predicted
                              and (cost(node, d), d.predicted) != (cost(node, c), c.predicted) for d in cands)
            if measure is not None and not c.dominated and c.spec != DENSE:
                c.measured = c.damage = measure(node, c.layer)
            c.layer = None


def _norms(weight: np.ndarray, stats: LayerStats | None) -> tuple[float, float | None]:
    """``‖W‖²`` and ``tr(W G Wᵀ)`` (None without statistics): the scales the pass's relative errors are of."""
    w = weight.reshape(weight.shape[0], -1).astype(np.float64)
    return float(np.sum(w * w)), None if stats is None else float(np.sum((w @ stats.gram) * w))


def _squared_error(report: LayerReport, norms: tuple[float, float | None], stats: LayerStats | None,
                   w8a8: bool) -> float:
    """``‖W − Ŵ‖²_G`` from the pass's report (plus W8A8's input rounding; see the module docstring)."""
    norm2, weighted = norms
    if stats is None or report.output_error is None or weighted is None:
        return report.weight_error ** 2 * norm2
    gram = stats.gram
    k = gram.shape[0]
    trace_g = max(float(np.trace(gram)), 1e-30)
    sq = report.output_error * weighted * k / trace_g
    if w8a8:
        scale, _ = input_grid(stats)
        mean_square = trace_g / (max(stats.rows, 1) * k)
        sq += norm2 * (scale * scale / 12.0) / max(mean_square, 1e-30)
    return sq
