"""What each candidate costs on the target: per-layer latency measured there (``backends/tvm/layer_latency``),
and two whole models' end-to-end latency (dense, and every layer at its fastest candidate), from which a plan's
end-to-end latency is predicted:

    predicted = rest + sum over layers of (ms alone + per_byte * weight bytes)     (exact at both measured plans)

Why a term in bytes: a layer timed alone keeps its weights in cache, inside a model whose weights do not fit they
stream from memory, so every weight byte costs extra there. Weighting the gap by time instead (``rest + scale *
sum(ms)``) over-predicted W8A8 plans on MiniLM by 7% where this is within 4%: W8A8 is fast alone *and* small.

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


NOISE_FRACTION = 0.05
"""An in-model excess smaller than this fraction of the dense model's time is timing noise (``per_byte_ms``)."""


@dataclass
class Latencies:
    layers: dict[str, dict[str, float]]
    """Node name -> candidate spec -> ms (the layer alone, on the target)."""
    model_ms: float
    """The dense model, end to end."""
    fastest_ms: float | None = None
    """The plan of every layer's fastest candidate, end to end (None: not measured)."""
    fastest: dict[str, str] = field(default_factory=dict)
    bytes: dict[str, dict[str, float]] = field(default_factory=dict)
    """Node name -> candidate spec -> weight bytes (filled from the candidates; empty: no byte term)."""

    def layer_sum(self, choice: Mapping[str, str]) -> float:
        return sum(options[choice.get(node, DENSE)] for node, options in self.layers.items())

    def byte_sum(self, choice: Mapping[str, str]) -> float:
        return sum(options[choice.get(node, DENSE)] for node, options in self.bytes.items())

    @property
    def per_byte_ms(self) -> float:
        """What a weight byte costs inside the model beyond its layer's time alone (streaming it from memory),
        fitted through the two measured models: the part of their gap the layers alone do not explain, per byte
        the fastest plan saves. 0 when there is no fit: no fastest plan or bytes, no bytes saved, or an excess
        below ``NOISE_FRACTION`` of the model (a 60 us CNN whose weights stay in cache) or negative.

        Capped so that streaming the dense weights takes no more than the dense model spends outside its layers
        alone (``rest_ms`` >= 0): fitted through a small byte saving (the digits CNN's fastest plan saves 8% of
        96 KB), timing noise extrapolated to more than the whole model and predicted negative latencies for most
        digits plans in one run."""
        if self.fastest_ms is None or not self.bytes:
            return 0.0
        saved = self.byte_sum({}) - self.byte_sum(self.fastest)
        excess = (self.model_ms - self.fastest_ms) - (self.layer_sum({}) - self.layer_sum(self.fastest))
        if saved <= 0 or excess < NOISE_FRACTION * self.model_ms:
            return 0.0
        outside_layers = max(self.model_ms - self.layer_sum({}), 0.0)
        return min(excess / saved, outside_layers / self.byte_sum({}))

    def cost(self, node: str, spec: str) -> float:
        """ms ``spec`` adds to the model at ``node``: alone, plus streaming its bytes."""
        beta = self.per_byte_ms
        return self.layers[node][spec] + (beta * self.bytes[node][spec] if beta else 0.0)

    @property
    def rest_ms(self) -> float:
        """Everything but the compressible layers: attention, norms, activations, the call itself."""
        return self.model_ms - sum(self.cost(node, DENSE) for node in self.layers)

    def predict(self, choice: Mapping[str, str]) -> float:
        """End-to-end ms of a plan ``{node: spec}`` (nodes it leaves out stay dense): exact for the dense and (where
        a byte term is fitted) the fastest plan."""
        return self.rest_ms + sum(self.cost(node, choice.get(node, DENSE)) for node in self.layers)


def measure_latencies(graph: Graph, candidates: Mapping[str, Sequence[str]], example: Sequence[np.ndarray],
                      table: Any, calibration: Calibration | None = None, progress: bool = True) -> Latencies:
    """Times every (layer, candidate spec) at the shapes of ``example`` (one input set) with ``table`` (a
    ``LatencyTable`` for the target; cached on disk), then two whole models: dense, and every layer at its
    fastest candidate (compressed with ``calibration`` where a spec needs it), timed in turns. Identical layers
    (same shape, epilogue, candidate) are timed once."""
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
    usable = {node: {s: t for s, t in options.items()
                     if s == DENSE or calibration is not None or not parse_spec(s).needs_calibration()}
              for node, options in layers.items()}
    fastest = {node: min(options, key=options.get) for node, options in usable.items()}
    fastest = {node: spec for node, spec in fastest.items() if spec != DENSE}
    if not fastest:
        return Latencies(layers, table.measure_model(graph, example))
    name = f"{structure_id(graph, example)}:{json.dumps(fastest, sort_keys=True)}"
    model_ms, fastest_ms = table.measure_models(
        [(graph, None), (lambda: compress(graph, {n: parse_spec(s) for n, s in fastest.items()}, calibration)[0],
                         hashlib.sha256(name.encode()).hexdigest()[:24])], example)
    return Latencies(layers, model_ms, fastest_ms, fastest)
