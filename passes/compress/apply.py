"""The compression pass: ``compress(graph, spec, calibration) -> (graph, report)``.

Every compressible layer (``linear``, ``conv``: ``OPS[op].compressible_weight``) whose weight is a float32 param
read by that layer alone is compressed by the spec's stages:

* N:M and/or quantization keep the op and re-encode its weight (``sparsecc.ir.encodings``);
* low-rank rewrites ``linear(x, W)`` into ``linear(linear(x, V), U)`` (a k×k conv into a k×k conv to ``r``
  channels, then a 1×1 conv), each factor quantized when the spec quantizes;
* compensation adds a low-rank side path ``+ linear(linear(x, V), U)`` fitted to the remaining error.

A layer the spec cannot encode (reduction not a multiple of M or of the group, shared weight, ...) stays dense
and the report says why. The report has, per layer, the encoding, bytes, and the weight error and (when
calibrated) output error ``tr(E G Eᵀ) / tr(W G Wᵀ)`` of the compressed weight.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

import numpy as np

from sparsecc.ir import encodings
from sparsecc.ir.encodings import EncodedWeight, QuantSpec
from sparsecc.ir.graph import Graph, Node, TensorType

from . import lowrank, quantize, sparsify
from .calibration import Calibration, LayerStats, compressible_weight
from .spec import METHODS, CompressionSpec


RANK_BLOCK = 16
"""Low-rank ranks are rounded down to a multiple of this (the packed CPU kernels' output block)."""


@dataclass
class LayerReport:
    node: str
    op: str
    weight: str
    shape: list[int]
    encoding: str
    method: str = ""
    dense_bytes: int = 0
    bytes: int = 0
    weight_error: float = 0.0
    """``‖W - Ŵ‖ / ‖W‖`` (Frobenius)."""
    output_error: float | None = None
    """``tr(E G Eᵀ) / tr(W G Wᵀ)`` on the calibration inputs' Gram ``G``: the relative squared output error."""
    skipped: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compress(graph: Graph, spec: CompressionSpec | Mapping[str, CompressionSpec],
             calibration: Calibration | None = None,
             progress: Callable[[str], None] | None = None) -> tuple[Graph, list[LayerReport]]:
    """A compressed copy of ``graph`` and one report per compressible layer (see the module docstring).

    ``spec``: one spec for every layer, or a per-layer plan ``{node name: spec}`` (the planner's output; a layer
    the plan does not name stays dense). ``progress(name)`` is called before each layer."""
    plan = None if isinstance(spec, CompressionSpec) else dict(spec)
    if calibration is None:
        for one in ([spec] if plan is None else plan.values()):
            for stage, method in one.methods:
                if method != METHODS[stage][0]:
                    _need(None, method)
            if one.activations:
                input_grid(None)
    graph = graph.copy()
    users = graph.users()
    reports = []
    for node in list(graph.nodes):
        name = compressible_weight(graph, node)
        if name is None:
            continue
        if progress:
            progress(node.name)
        param = graph.params[name]
        shape = list(param.data.shape)
        report = LayerReport(node.name, node.op, name, shape, "dense", dense_bytes=param.data.nbytes,
                             bytes=param.data.nbytes)
        reports.append(report)
        layer_spec = spec if plan is None else plan.get(node.name)
        if layer_spec is None:
            report.method = "kept dense by the plan"
            continue
        reason = _ineligible(graph, node, name, users, layer_spec)
        if reason:
            report.skipped = reason
            continue
        stats = calibration[name] if calibration is not None and name in calibration else None
        _compress_layer(graph, node, name, layer_spec, stats, report)
        if stats is None and calibration is not None and _data_aware(layer_spec):
            report.method += " (data-free: no input statistics for this layer)"
    return graph, reports


def _compress_layer(graph: Graph, node: Node, name: str, spec: CompressionSpec, stats: LayerStats | None,
                    report: LayerReport) -> None:
    """Compresses one eligible layer in place and fills its report."""
    shape = list(graph.params[name].data.shape)
    w = graph.params[name].data.reshape(shape[0], -1)
    gram = None if stats is None else stats.gram
    if spec.lowrank is not None:
        w_hat = _factorize(graph, node, w, spec, gram, report)
    else:
        enc = _encode(w, spec, gram, report)
        enc.shape = tuple(shape)
        if spec.activations:
            enc.activation = input_grid(stats)
        encodings.store(graph, name, enc)
        w_hat = enc.dense().reshape(w.shape)
        report.bytes = enc.nbytes()
    if spec.compensation is not None:
        w_hat = _compensate(graph, node, w, w_hat, spec, gram, report)
    report.encoding = spec.text
    _measure(report, w, w_hat, gram)


def _data_aware(spec: CompressionSpec) -> bool:
    """Whether some stage of ``spec`` would take a data-aware method given input statistics."""
    stages = [s for s, on in (("quant", spec.quant), ("nm", spec.nm), ("lowrank", spec.lowrank),
                              ("lrc", spec.compensation)) if on is not None]
    return any(spec.method(s, True) != METHODS[s][0] for s in stages)


def why_not(graph: Graph, node: Node, spec: CompressionSpec) -> str:
    """Why the compressible layer ``node`` cannot take ``spec`` ('' if it can)."""
    return _ineligible(graph, node, compressible_weight(graph, node), graph.users(), spec)


def _ineligible(graph: Graph, node: Node, name: str, users: dict[str, list[Node]], spec: CompressionSpec) -> str:
    """Why the layer cannot take ``spec`` ('' if it can)."""
    data = graph.params[name].data
    if data.dtype != np.float32 or graph.params[name].encoding.kind != "dense" or graph.params[name].encoding.meta:
        return f"weight is {data.dtype} / {graph.params[name].encoding.kind}, not a plain float32 array"
    if len(users[name]) != 1 or name in graph.outputs:
        return "weight is shared with other ops"
    if node.op == "conv" and node.attrs.get("groups", 1) != 1 and (spec.lowrank or spec.compensation):
        return "grouped convolution: no low-rank form"
    if node.op == "conv" and spec.compensation:
        return "compensation is implemented for linear layers only"
    k = int(np.prod(data.shape[1:]))
    if node.op == "conv" and spec.activations and spec.quant.bits == 4:
        return "W4A8 is for linear layers only (its kernel unpacks nibbles for linear dot products)"
    if node.op == "conv" and spec.activations and spec.nm:
        return "N:M W8A8 is for linear layers only (its kernel picks a linear's inputs)"
    if node.op == "conv" and spec.activations and (data.ndim != 4 or node.attrs.get("groups", 1) != 1 or k % 4):
        return (f"W8A8 convolutions: 2-D, ungrouped, Cin*kh*kw a multiple of 4 (the integer kernel's dot products); "
                f"this one has weight {list(data.shape)}, groups {node.attrs.get('groups', 1)}")
    columns = k
    if spec.nm:
        n, m = spec.nm
        if k % m:
            return f"reduction {k} is not a multiple of M={m}"
        columns = k * n // m
        per = 8 // encodings.index_bits(m)
        if columns % per:
            return f"{columns} kept values do not fill whole bytes of indices"
    if spec.quant and spec.lowrank is None:
        return _quant_fit(spec.quant, columns)
    return ""


def input_grid(stats: LayerStats | None) -> tuple[float, int]:
    """W8A8's static uint8 grid ``(scale, zero)`` for a layer's input: its calibration range, widened to hold 0."""
    if stats is None:
        from sparsecc.errors import SparseccError

        raise SparseccError("w8a8 needs calibration data (calibration=... / --calib) for its input scales")
    low, high = min(stats.low, 0.0), max(stats.high, 0.0)
    scale = float(np.float32(max(high - low, 1e-8) / 255.0))
    return scale, int(np.clip(np.rint(-low / scale), 0, 255))


def _quant_fit(q: QuantSpec, columns: int) -> str:
    if q.group and columns % q.group:
        return f"{columns} stored columns are not a multiple of the group {q.group}"
    if q.bits == 4 and columns % 2:
        return f"{columns} stored columns: int4 packs two per byte"
    return ""


def _encode(w: np.ndarray, spec: CompressionSpec, gram: np.ndarray | None, report: LayerReport) -> EncodedWeight:
    """N:M and/or quantization of a 2-D weight, by the spec's methods."""
    calibrated = gram is not None
    if spec.nm is None:
        enc, report.method = _quantize(w, spec, gram)
        return enc
    n, m = spec.nm
    method = spec.method("nm", calibrated)
    report.method = method
    if method == "sparsegpt":
        gram = _need(gram, method)
        if spec.quant is not None and spec.method("quant", calibrated) == "gptq":
            report.method = "sparsegpt+gptq (joint)"
            return sparsify.sparsegpt_quant(w, n, m, gram, spec.quant)
        w, mask = sparsify.sparsegpt(w, n, m, gram)
    elif method == "wanda":
        w, mask = sparsify.wanda(w, n, m, _need(gram, method))
    else:
        w, mask = sparsify.magnitude(w, n, m)
    if spec.quant is not None:
        report.method += "+rtn"
    return sparsify.encode_nm(w, mask, n, m, spec.quant)


def _quantize(w: np.ndarray, spec: CompressionSpec, gram: np.ndarray | None) -> tuple[EncodedWeight, str]:
    """Quantization alone, by the spec's method for a layer with (or without) a Gram: the encoding and the method."""
    method = spec.method("quant", gram is not None)
    enc = quantize.gptq(w, spec.quant, _need(gram, method)) if method == "gptq" else quantize.rtn(w, spec.quant)
    return enc, method


def _need(gram: np.ndarray | None, method: str) -> np.ndarray:
    if gram is None:
        from sparsecc.errors import SparseccError

        raise SparseccError(f"compression method '{method}' needs calibration data (calibration=... / --calib)")
    return gram


def _factorize(graph: Graph, node: Node, w: np.ndarray, spec: CompressionSpec, gram: np.ndarray | None,
               report: LayerReport) -> np.ndarray:
    """Rewrites ``node`` into two factors (see the module docstring); returns the weight they stand for."""
    o, k = w.shape
    rank = lowrank.rank_for_params(o, k, spec.lowrank)
    if rank >= RANK_BLOCK:  # whole blocks of the CPU kernels' 16 output lanes: a ragged rank runs unpacked, 40x slower
        rank -= rank % RANK_BLOCK
    method = spec.method("lowrank", gram is not None)
    u, v = (lowrank.whitened_svd_factors(w, rank, _need(gram, method)) if method == "asvd"
            else lowrank.svd_factors(w, rank))
    report.method = f"{method} rank {rank}"
    orig = node.inputs[1]
    weight = graph.params[orig].data
    x = node.inputs[0]
    v_shape = (rank,) + weight.shape[1:]
    u_shape = (o, rank) + (1,) * (weight.ndim - 2)
    v_name = graph.add_param(f"{orig}.v", v.astype(np.float32).reshape(v_shape))
    u_name = graph.add_param(f"{orig}.u", u.astype(np.float32).reshape(u_shape))
    out_type = graph.types[node.outputs[0]]
    mid_type = TensorType(out_type.shape[:-1] + (rank,), "float32") if node.op == "linear" else TensorType(
        (out_type.shape[0], rank) + out_type.shape[2:], "float32")
    index = graph.nodes.index(node)
    (mid,) = graph.add_node(node.op, [x, v_name], [mid_type], dict(node.attrs), name=f"{node.name}.v",
                            source=node.source)
    graph.nodes.insert(index, graph.nodes.pop())
    node.inputs = [mid, u_name] + node.inputs[2:]
    if node.op == "conv":  # the second factor is a 1x1 conv
        spatial = weight.ndim - 2
        node.attrs = {"strides": [1] * spatial, "pads": [0] * (2 * spatial), "dilations": [1] * spatial}
    del graph.params[orig], graph.types[orig]
    report.bytes = 0
    w_hat = u @ v
    methods = []
    for factor, gram_f in ((v_name, gram), (u_name, None if gram is None else v @ gram @ v.T)):
        nbytes, method = _encode_factor(graph, factor, spec, gram_f)
        report.bytes += nbytes
        methods += [method] if method else []
    if methods:
        report.method += ", factors " + "/".join(dict.fromkeys(methods))
    if spec.quant is not None:
        fu = encodings.load(graph, u_name).dense() if encodings.is_compressed(graph, u_name) else u
        fv = encodings.load(graph, v_name).dense() if encodings.is_compressed(graph, v_name) else v
        w_hat = fu.reshape(o, rank) @ fv.reshape(rank, k)
    return w_hat


def _encode_factor(graph: Graph, name: str, spec: CompressionSpec, gram: np.ndarray | None) -> tuple[int, str]:
    """Quantizes a low-rank factor when the spec quantizes (and the factor fits the grid); returns its bytes and
    the quantization method ('' when it stays float32)."""
    data = graph.params[name].data
    w = data.reshape(data.shape[0], -1)
    if spec.quant is None or _quant_fit(spec.quant, w.shape[1]):
        return data.nbytes, ""
    enc, method = _quantize(w, spec, gram)
    enc.shape = tuple(data.shape)
    encodings.store(graph, name, enc)
    return enc.nbytes(), method


def _compensate(graph: Graph, node: Node, w: np.ndarray, w_hat: np.ndarray, spec: CompressionSpec,
                gram: np.ndarray | None, report: LayerReport) -> np.ndarray:
    """Adds ``+ linear(linear(x, V), U)`` fitted to ``W - Ŵ`` after ``node``; returns the corrected weight."""
    method = spec.method("lrc", gram is not None)
    rank = min(spec.compensation, *w.shape)
    u, v = lowrank.compensation(w, w_hat, rank, _need(gram, method) if method == "eora" else None)
    report.method += f", {method} compensation rank {rank}"
    base = node.inputs[1]
    v_name = graph.add_param(f"{base}.lrc_v", v.astype(np.float32))
    u_name = graph.add_param(f"{base}.lrc_u", u.astype(np.float32))
    report.bytes += u.size * 4 + v.size * 4
    y = node.outputs[0]
    out_type = graph.types[y]
    index = graph.nodes.index(node) + 1
    start = len(graph.nodes)
    (t,) = graph.add_node("linear", [node.inputs[0], v_name], [TensorType(out_type.shape[:-1] + (rank,), "float32")],
                          name=f"{node.name}.lrc_v", source=node.source)
    (c,) = graph.add_node("linear", [t, u_name], [out_type], name=f"{node.name}.lrc_u", source=node.source)
    (total,) = graph.add_node("add", [y, c], [out_type], name=f"{node.name}.lrc_add", source=node.source)
    added = graph.nodes[start:]
    del graph.nodes[start:]
    for later in graph.nodes[index:]:
        later.inputs = [total if i == y else i for i in later.inputs]
    graph.outputs = [total if o == y else o for o in graph.outputs]
    graph.nodes[index:index] = added
    return w_hat + u.astype(np.float32) @ v.astype(np.float32)


def _measure(report: LayerReport, w: np.ndarray, w_hat: np.ndarray, gram: np.ndarray | None) -> None:
    e = w.astype(np.float64) - w_hat.astype(np.float64)
    report.weight_error = float(np.linalg.norm(e) / max(np.linalg.norm(w), 1e-30))
    if gram is not None:
        wd = w.astype(np.float64)
        report.output_error = float(np.sum((e @ gram) * e) / max(np.sum((wd @ gram) * wd), 1e-30))
