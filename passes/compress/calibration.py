"""Calibration statistics: the input Gram matrix ``XᵀX`` of every compressible layer, from real batches run
through the interpreter (so ONNX- and torch-captured graphs are treated alike).

Memory is bounded by the layers, not the data: each layer keeps one ``[K, K]`` float64 sum however many batches
pass. A conv layer's ``X`` is its input unfolded into patches (rows = output positions, ``K = Cin * kh * kw``, the
order of a flattened ``[Cout, Cin, kh, kw]`` weight), so the same formulas serve linear and conv weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from sparsecc.errors import InputError
from sparsecc.interpreter import Interpreter
from sparsecc.ir.graph import Graph, Node
from sparsecc.ir.ops import OPS


@dataclass
class LayerStats:
    gram: np.ndarray
    """``XᵀX`` summed over every calibration row, float64 ``[K, K]``."""
    rows: int = 0
    low: float = 0.0
    high: float = 0.0
    """Smallest and largest input value seen (W8A8's static input grid)."""


@dataclass
class Calibration:
    layers: dict[str, LayerStats] = field(default_factory=dict)
    """Keyed by the name of the weight param the layer reads."""
    batches: int = 0

    def __getitem__(self, weight: str) -> LayerStats:
        return self.layers[weight]

    def __contains__(self, weight: str) -> bool:
        return weight in self.layers


def compressible_weight(graph: Graph, node: Node) -> str | None:
    """The name of the weight param ``node`` reads that compression may re-encode, or None."""
    index = OPS[node.op].compressible_weight
    if index is None or index >= len(node.inputs) or node.inputs[index] not in graph.params:
        return None
    return node.inputs[index]


def calibrate(graph: Graph, batches: Iterable[Sequence[Any]], weights: set[str] | None = None) -> Calibration:
    """Runs every batch (a sequence of graph inputs) through the interpreter and accumulates each compressible
    layer's Gram matrix. ``weights``: restrict to these weight params (default: every compressible one)."""
    calib = Calibration()
    interp = Interpreter(graph)

    def hook(node: Node, args: list[Any], _out: Any) -> None:
        name = compressible_weight(graph, node)
        if name is None or (weights is not None and name not in weights):
            return
        rows = _rows(node, args[0], args[1])
        if rows is None:
            return
        low, high = float(rows.min()), float(rows.max())
        rows = rows.to(torch.float64)
        stats = calib.layers.get(name)
        gram = rows.T @ rows
        if stats is None:
            calib.layers[name] = LayerStats(gram.numpy(), rows.shape[0], low, high)
        else:
            stats.gram += gram.numpy()
            stats.rows += rows.shape[0]
            stats.low, stats.high = min(stats.low, low), max(stats.high, high)

    interp.hooks.append(hook)
    with torch.no_grad():
        for batch in batches:
            interp.run(*batch)
            calib.batches += 1
    if calib.batches == 0:
        raise InputError("calibration: no batches were given")
    return calib


def _rows(node: Node, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
    if node.op == "linear":
        return x.reshape(-1, x.shape[-1])
    attrs = node.attrs
    if node.op != "conv" or x.dim() != 4 or attrs.get("groups", 1) != 1:
        return None
    top, left, bottom, right = attrs["pads"]
    x = torch.nn.functional.pad(x, (left, right, top, bottom))
    patches = torch.nn.functional.unfold(x, tuple(w.shape[2:]), dilation=tuple(attrs["dilations"]),
                                         stride=tuple(attrs["strides"]))  # [N, Cin*kh*kw, L]
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def load_batches(graph: Graph, source: Any, batch_size: int = 8) -> list[list[np.ndarray]]:
    """Calibration batches from ``source``: a list of input tuples, one tuple of arrays/tensors, or a path to an
    ``.npz`` holding one array per graph input (by name). Inputs whose first dim is symbolic are split into
    batches of ``batch_size`` rows."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise InputError(f"calibration file {path}: no such file")
        with np.load(path, allow_pickle=False) as npz:
            missing = [n for n in graph.inputs if n not in npz.files]
            if missing:
                raise InputError(f"calibration file {path}: no array for inputs {missing} (it has {npz.files})")
            source = tuple(npz[n] for n in graph.inputs)
    if isinstance(source, tuple) or (isinstance(source, list) and source and not isinstance(source[0],
                                                                                          (list, tuple))):
        source = _split(graph, [_array(a) for a in source], batch_size)
    return [[_array(a) for a in batch] for batch in source]


def _array(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _split(graph: Graph, arrays: list[np.ndarray], batch_size: int) -> list[list[np.ndarray]]:
    if len(arrays) != len(graph.inputs):
        raise InputError(f"calibration data: {len(arrays)} arrays for {len(graph.inputs)} inputs {graph.inputs}")
    dynamic = all(isinstance(graph.types[n].shape[0], str) for n in graph.inputs if graph.types[n].rank)
    if not dynamic:
        return [arrays]
    n = arrays[0].shape[0]
    return [[a[i:i + batch_size] for a in arrays] for i in range(0, n, batch_size)]
