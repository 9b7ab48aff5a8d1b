"""IR -> IR, the TVM pipeline's first stage: store each weight in the layout its CPU kernel streams.

Runs once at compile time, so the artifact holds packed weights and no kernel re-lays them out per call.
Values never change (``sparsecc.ir.layouts``): the interpreter unpacks, so it still computes the same thing.
"""
from __future__ import annotations

import numpy as np

from sparsecc.ir import encodings
from sparsecc.ir.graph import Encoding, Graph, Node, Param, TensorType
from sparsecc.ir.layouts import blocked_layout, conv_layout, pack

from .kernels.w8a8 import PICKED_LANES, dot_product_width, picks_inputs
from .targets import TargetLike, resolve_target

LANES = 16
"""Output channels per packed block: one AVX-512 vector (four NEON vectors) of float32."""

NARROW_WIDTH = 16
"""A 2-D convolution whose output rows are narrower than this (a vector; ResNet's 14 x 14 and 7 x 7 stages) gets
its weight packed ``OIHW16o``: its kernel vectorises along output channels instead of along a row, which 7 pixels
filled under half (ResNet-50's 7 x 7 convolutions: 50-69 -> 85-106 GMAC/s; 14 x 14: 92-100 -> 98-112)."""

NARROW_MIN_REDUCTION = 128
"""... and only if each output sums at least this many products (``C x kh x kw``): the channel-vectorised tile is
written back to NCHW with strided stores, which a short reduction does not pay for (the digits CNN's 16 -> 32
1 x 1 convolution ran 20x slower packed, its 32 -> 64 3 x 3 one twice as fast)."""

PAD_MAX = 1 / 8
"""A dense weight is padded to a whole number of blocks only if that adds at most this fraction of its rows (a
1000-class head: 1008 rows); a small one (10 classes, a rank-4 factor) would mostly compute zeros."""


def relayout_weights(graph: Graph, target: TargetLike) -> Graph:
    """A copy of ``graph`` whose float32 ``linear`` weights are packed ``OI16o`` on CPU targets, and the weights of
    convolutions with narrow outputs ``OIHW16o`` (``_pack_narrow_conv``).

    Compressed weights (``sparsecc.ir.encodings``) are packed together with their companions (scales, indices);
    an N:M W8A8 weight only where its kernel picks inputs (``w8a8.picks_inputs``), in blocks of that kernel's 8
    outputs (``w8a8.PICKED_LANES``), else it stays plain.
    A dense weight whose output count is not a multiple of the block (a 1000-class head) is padded with zero rows
    to the next multiple, and the padded outputs are sliced off (``_pad_outputs``). A weight is left alone when
    another op also reads it (tied embeddings), when it already has a layout, or when padding would add more than
    ``PAD_MAX`` of its rows."""
    target = resolve_target(target)
    if target.kind.name != "llvm":
        return graph
    graph = graph.copy()
    users = graph.users()
    layout = blocked_layout(LANES)
    for node in list(graph.nodes):
        if node.op == "conv":
            _pack_narrow_conv(graph, node, users)
        if node.op != "linear":
            continue
        name = node.inputs[1]
        if encodings.is_compressed(graph, name):
            meta = graph.params[name].encoding.meta
            bits = (meta.get("quant") or {}).get("bits", 8)
            dot = dot_product_width(target, bits)
            picks = encodings.stores_picks(meta)
            block = PICKED_LANES if picks else LANES
            if (encodings.can_relayout(graph, name, block, dot) and len(users[name]) == 1
                    and (not picks or picks_inputs(target, bits))):  # only for that kernel
                encodings.relayout(graph, name, block, dot)
            continue
        if (not _plain_float32(graph, name, 2)
                or any(u.op != "linear" or u.inputs.index(name) != 1 for u in users[name])):
            continue
        if graph.params[name].data.shape[0] % LANES and (len(users[name]) != 1 or not _pad_outputs(graph, node, users)):
            continue
        _repack(graph, name, layout)
    return graph


def _plain_float32(graph: Graph, name: str, ndim: int) -> bool:
    """Whether ``name`` is a param stored as a plain ``ndim``-D float32 array (no encoding, no layout yet) that is
    not also a graph output: a weight relayout may repack."""
    param = graph.params.get(name)
    return (param is not None and param.encoding.kind == "dense" and not param.encoding.meta
            and param.data.dtype == np.float32 and param.data.ndim == ndim and name not in graph.outputs)


def _pack_narrow_conv(graph: Graph, node: Node, users: dict[str, list[Node]]) -> None:
    """Packs ``OIHW16o`` the dense float32 weight of a 2-D, ungrouped convolution with narrow output rows
    (``NARROW_WIDTH``) and a long enough reduction (``NARROW_MIN_REDUCTION``), whose output channels fill whole
    blocks and that nothing else reads."""
    name = node.inputs[1]
    out = graph.types[node.outputs[0]].shape
    if (not _plain_float32(graph, name, 4) or graph.params[name].data.shape[0] % LANES
            or node.attrs.get("groups", 1) != 1 or len(users[name]) != 1 or not isinstance(out[-1], int)
            or out[-1] >= NARROW_WIDTH or np.prod(graph.params[name].data.shape[1:]) < NARROW_MIN_REDUCTION):
        return
    _repack(graph, name, conv_layout(LANES))


def _repack(graph: Graph, name: str, layout: str) -> None:
    graph.params[name] = Param(pack(graph.params[name].data, layout), Encoding("dense", {"layout": layout}))
    graph.types[name] = graph.params[name].type


def _pad_outputs(graph: Graph, node: Node, users: dict[str, list[Node]]) -> bool:
    """Rewrites ``y = linear(x, W, b)`` with ``O`` outputs into ``linear(x, W', b')`` on ``O'`` (the next multiple
    of ``LANES``) outputs, followed by ``y = slice(.., 0:O)``; ``W'`` and ``b'`` are ``W`` and ``b`` with zero rows
    appended. The padded outputs are exactly zero and never seen, so the function is the same, and the packed
    kernel replaces a per-call transpose of ``W`` (ResNet-50's head: 5 ms of 70). False (graph untouched) when the
    bias is not a param of its own or the padding is over ``PAD_MAX``."""
    rows = graph.params[node.inputs[1]].data.shape[0]
    padded = -(-rows // LANES) * LANES
    if padded - rows > rows * PAD_MAX:
        return False
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
    if bias is not None and (bias not in graph.params or len(users.get(bias, [])) != 1
                             or graph.params[bias].data.shape != (rows,) or bias in graph.outputs):
        return False
    out = node.outputs[0]
    wide_type = TensorType((*graph.types[out].shape[:-1], padded), graph.types[out].dtype)
    pad = lambda a: np.concatenate([a, np.zeros((padded - rows, *a.shape[1:]), a.dtype)])  # noqa: E731
    for name in filter(None, node.inputs[1:]):  # same names: a layer's params are still found by them
        graph.params[name] = Param(pad(graph.params[name].data))
        graph.types[name] = graph.params[name].type
    wide = graph.fresh_name(out + "_padded")
    graph.types[wide] = wide_type
    node.outputs = [wide]
    cut = Node("slice", [wide], [out], {"starts": [0], "ends": [rows], "axes": [-1], "steps": [1]},
               node.name + "_unpad", node.source)
    graph.nodes.insert(graph.nodes.index(node) + 1, cut)
    return True
