"""What each candidate costs on the target: per-layer latency measured there (``backends/tvm/layer_latency``),
and the dense model's end-to-end latency, so a plan's end-to-end latency can be predicted as

    predicted = model_dense - sum(dense layers) + sum(chosen layers).

Bytes come with the candidates themselves (``candidates.py``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from sparsecc.ir.dims import bind_symbols
from sparsecc.ir.graph import Graph

from .candidates import DENSE


@dataclass
class Latencies:
    layers: dict[str, dict[str, float]]
    """Node name -> candidate spec -> ms (the layer alone, on the target)."""
    model_ms: float
    """The dense model, end to end."""

    @property
    def rest_ms(self) -> float:
        """Everything but the compressible layers: attention, norms, activations, the call itself."""
        return self.model_ms - sum(options[DENSE] for options in self.layers.values())

    def predict(self, choice: Mapping[str, str]) -> float:
        """End-to-end ms of a plan ``{node: spec}`` (nodes it leaves out stay dense)."""
        return self.rest_ms + sum(options[choice.get(node, DENSE)] for node, options in self.layers.items())


def measure_latencies(graph: Graph, candidates: Mapping[str, Sequence[str]], example: Sequence[np.ndarray],
                      table: Any, progress: bool = True) -> Latencies:
    """Times every (layer, candidate spec) at the shapes of ``example`` (one input set) with ``table`` (a
    ``LatencyTable`` for the target; cached on disk), and the dense model end to end. Identical layers (same
    shape, epilogue, candidate) are timed once."""
    from sparsecc.backends.tvm.layer_latency import layer_keys

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
    return Latencies(layers, table.measure_model(graph, example))
