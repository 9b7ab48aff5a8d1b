"""What each candidate costs on the target: per-layer latency measured there (``backends/tvm/layer_latency``),
and two whole models' end-to-end latency (dense, and every layer at its fastest candidate), so a plan's
end-to-end latency is predicted on the line through them:

    predicted = rest + scale * sum(chosen layers)     (exact at both measured plans)

Bytes come with the candidates themselves (``candidates.py``)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from sparsecc.ir.dims import bind_symbols
from sparsecc.ir.graph import Graph
from sparsecc.passes.compress import Calibration

from .candidates import DENSE


SCALE_RANGE = (0.5, 2.0)
"""Plausible in-model cost of a millisecond of layers timed alone (``Latencies.scale``)."""


@dataclass
class Latencies:
    layers: dict[str, dict[str, float]]
    """Node name -> candidate spec -> ms (the layer alone, on the target)."""
    model_ms: float
    """The dense model, end to end."""
    fastest_ms: float | None = None
    """The plan of every layer's fastest candidate, end to end (None: not measured)."""
    fastest: dict[str, str] = field(default_factory=dict)

    def layer_sum(self, choice: Mapping[str, str]) -> float:
        return sum(options[choice.get(node, DENSE)] for node, options in self.layers.items())

    @property
    def scale(self) -> float:
        """How much a millisecond of layers measured alone costs inside the model, fitted through the two measured
        models (dense, fastest): alone, a layer's weights stay in cache; inside a model whose weights do not fit,
        they stream, so the dense layers cost more there than alone and compressed ones gain more. 1 when the two
        points cannot fit a line: no fastest plan, or a slope outside ``SCALE_RANGE`` (the two models' difference
        is then within their timing noise: a 60 us CNN whose layers' sum moves by 5 us fitted a slope of 4)."""
        if self.fastest_ms is None:
            return 1.0
        span = self.layer_sum({}) - self.layer_sum(self.fastest)
        slope = (self.model_ms - self.fastest_ms) / span if span > 0.05 * self.layer_sum({}) else 0.0
        low, high = SCALE_RANGE
        return slope if low <= slope <= high else 1.0

    @property
    def rest_ms(self) -> float:
        """Everything but the compressible layers: attention, norms, activations, the call itself."""
        return self.model_ms - self.scale * self.layer_sum({})

    def predict(self, choice: Mapping[str, str]) -> float:
        """End-to-end ms of a plan ``{node: spec}`` (nodes it leaves out stay dense): exact for the dense and the
        fastest plan, linear in the layers' measured latencies between them."""
        return self.rest_ms + self.scale * self.layer_sum(choice)


def measure_latencies(graph: Graph, candidates: Mapping[str, Sequence[str]], example: Sequence[np.ndarray],
                      table: Any, calibration: Calibration | None = None, progress: bool = True) -> Latencies:
    """Times every (layer, candidate spec) at the shapes of ``example`` (one input set) with ``table`` (a
    ``LatencyTable`` for the target; cached on disk), then two whole models: dense, and every layer at its
    fastest candidate (compressed with ``calibration`` where a spec needs it). Identical layers (same shape,
    epilogue, candidate) are timed once."""
    from sparsecc.backends.tvm.layer_latency import layer_keys, structure_id
    from sparsecc.passes.compress import compress, parse_spec

    symbols: dict[str, int] = {}
    for name, array in zip(graph.inputs, example):
        bind_symbols(graph.types[name].shape, array.shape, symbols, f"input '{name}'")
    keys = layer_keys(graph, symbols)
    wanted = {(node, spec): dataclasses.replace(keys[node], encoding=spec) if spec != DENSE else keys[node]
              for node, specs in candidates.items() for spec in specs}
    ms = table.measure_many(wanted.values(), progress=progress)
    layers: dict[str, dict[str, float]] = {}
    for (node, spec), key in wanted.items():
        layers.setdefault(node, {})[spec] = ms[key]
    latencies = Latencies(layers, table.measure_model(graph, example))
    usable = {node: {s: t for s, t in options.items()
                     if s == DENSE or calibration is not None or not parse_spec(s).needs_calibration()}
              for node, options in layers.items()}
    fastest = {node: min(options, key=options.get) for node, options in usable.items()}
    fastest = {node: spec for node, spec in fastest.items() if spec != DENSE}
    if fastest:
        name = f"{structure_id(graph, example)}:{json.dumps(fastest, sort_keys=True)}"
        latencies.fastest = fastest
        latencies.fastest_ms = table.measure_model(
            lambda: compress(graph, {n: parse_spec(s) for n, s in fastest.items()}, calibration)[0], example,
            key=hashlib.sha256(name.encode()).hexdigest()[:24])
    return latencies
