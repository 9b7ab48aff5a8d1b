"""Transformer ops decomposed into canonical ops, each following ONNX's reference implementation step by step.

Attention-23: scaled Q and K (each by sqrt(scale)), optional past K/V concatenation (the present outputs),
grouped-query head repetition, softcap, the additive bias (boolean or float mask, causal triangle), softmax with
fully masked rows zeroed, and the qk_matmul_output modes. RotaryEmbedding-23: cos/sin caches (gathered by
position ids), half-split or interleaved rotation of the first rotary_embedding_dim features.
"""
from __future__ import annotations

import numpy as np

from sparsecc.ir.graph import TensorType

from ..importer import NodeContext
from ..values import ir_dtype, np_dtype
from .common import Result, broadcast, converter, reshape, scalar, transpose, typeof
from .nn import matmul_shape
from .softmax import reference_softmax


def _heads_first(cx: NodeContext, x: str, heads: int) -> str:
    """[B, S, H*D] -> [B, H, S, D]."""
    b, s, hidden = typeof(cx, x).shape
    if hidden % heads:
        raise cx.unsupported(f"hidden size {hidden} not divisible by {heads} heads")
    return transpose(cx, reshape(cx, x, [b, s, heads, hidden // heads]), [0, 2, 1, 3])


def _repeat_heads(cx: NodeContext, x: str, reps: int) -> str:
    """np.repeat(x, reps, axis=1) of a [B, H, S, D] tensor."""
    if reps == 1:
        return x
    b, h, s, d = typeof(cx, x).shape
    dt = typeof(cx, x).dtype
    wide = cx.emit("expand", [reshape(cx, x, [b, h, 1, s, d])], TensorType((b, h, reps, s, d), dt),
                   shape=[b, h, reps, s, d])
    return reshape(cx, wide, [b, h * reps, s, d])


def _emit(cx: NodeContext, op: str, inputs: list[str], **attrs) -> str:
    """A broadcasting op whose result has the dtype of its last input (the value branch of ``where``)."""
    shape = broadcast(cx, *[typeof(cx, i).shape for i in inputs])
    return cx.emit(op, inputs, TensorType(shape, typeof(cx, inputs[-1]).dtype), **attrs)


@converter("Attention")
def attention(cx: NodeContext) -> list[Result]:
    dtype = cx.dtype(0)
    if dtype not in ("float32", "float64", "float16"):
        raise cx.unsupported(f"Attention of {dtype}")
    rank = cx.rank(0)
    if any(isinstance(d, str) for i in range(3) for d in cx.shape(i)):
        raise cx.unsupported("Attention over symbolic dims")
    q, k, v = cx.value(0), cx.value(1), cx.value(2)
    if rank == 3:
        q_heads, kv_heads = cx.attr("q_num_heads"), cx.attr("kv_num_heads")
        if q_heads is None or kv_heads is None:
            raise cx.unsupported("3-D inputs need q_num_heads and kv_num_heads")
        q, k, v = _heads_first(cx, q, q_heads), _heads_first(cx, k, kv_heads), _heads_first(cx, v, kv_heads)
    elif rank != 4:
        raise cx.unsupported(f"rank {rank} inputs")
    head_size = typeof(cx, q).shape[3]
    scale = cx.attr("scale")
    scale = 1 / np.sqrt(head_size) if scale is None else float(np.float32(scale))
    root = scalar(cx, np.sqrt(scale), dtype)
    present = []
    for past_i, x in ((4, k), (5, v)):
        if cx.has_input(past_i):
            pt, xt = cx.type(past_i), typeof(cx, x)
            shape = xt.shape[:2] + (pt.shape[2] + xt.shape[2],) + xt.shape[3:]
            x = cx.emit("concat", [cx.value(past_i), x], TensorType(shape, dtype), axis=2)
        present.append(x)
    k, v = present
    past_len = cx.shape(4)[2] if cx.has_input(4) else 0
    heads_q, heads_k = typeof(cx, q).shape[1], typeof(cx, k).shape[1]
    if heads_q % heads_k or heads_k != typeof(cx, v).shape[1]:
        raise cx.unsupported(f"{heads_q} query heads for {heads_k} key heads")
    k_rep, v_rep = _repeat_heads(cx, k, heads_q // heads_k), _repeat_heads(cx, v, heads_q // heads_k)
    q_scaled = _emit(cx, "mul", [q, root])
    k_t = transpose(cx, _emit(cx, "mul", [k_rep, root]), [0, 1, 3, 2])
    qk = cx.emit("matmul", [q_scaled, k_t], TensorType(matmul_shape(cx, typeof(cx, q_scaled).shape,
                                                                   typeof(cx, k_t).shape), dtype))
    softcap = float(np.float32(cx.attr("softcap", 0.0)))
    if softcap > 0:
        cap = scalar(cx, softcap, dtype)
        qk = _emit(cx, "mul", [_emit(cx, "tanh", [_emit(cx, "div", [qk, cap])]), cap])
    q_len, kv_len = typeof(cx, qk).shape[2:]
    bias, masked_rows = _bias(cx, dtype, q_len, kv_len, past_len)
    with_bias = _emit(cx, "add", [qk, bias]) if bias else qk
    probs = _softmax(cx, with_bias)
    if masked_rows is not None:
        probs = _emit(cx, "where", [masked_rows, scalar(cx, 0, typeof(cx, probs).dtype), probs])
    mode = int(cx.attr("qk_matmul_output_mode", 0))
    qk_out = {0: qk, 1: qk, 2: with_bias, 3: probs}.get(mode)
    if qk_out is None:
        raise cx.unsupported(f"qk_matmul_output_mode={mode}")
    probs = _cast(cx, probs, dtype)
    y = cx.emit("matmul", [probs, v_rep], TensorType(matmul_shape(cx, typeof(cx, probs).shape,
                                                                typeof(cx, v_rep).shape), dtype))
    if rank == 3:
        b, h, s, d = typeof(cx, y).shape
        y = reshape(cx, transpose(cx, y, [0, 2, 1, 3]), [b, s, h * d])
    return [y, k, v, _cast(cx, qk_out, dtype)]


def _cast(cx: NodeContext, x: str, dtype: str) -> str:
    t = typeof(cx, x)
    return x if t.dtype == dtype else cx.emit("cast", [x], TensorType(t.shape, dtype), to=dtype)


def _softmax(cx: NodeContext, x: str) -> str:
    precision = cx.attr("softmax_precision")
    if precision is not None:
        target = ir_dtype(precision)
        if target is None or not target.startswith("float"):
            raise cx.unsupported(f"softmax_precision {precision}")
        x = _cast(cx, x, target)
    axis = typeof(cx, x).rank - 1
    if typeof(cx, x).dtype == "float16":
        return reference_softmax(cx, x, axis, log=False)
    return cx.emit("softmax", [x], typeof(cx, x), axis=axis)


def _bias(cx: NodeContext, dtype: str, q_len: int, kv_len: int, past_len: int) -> tuple[str, str | None]:
    """The additive attention bias (0 / -inf / float mask values) and, when some row may be fully masked, a bool
    tensor marking those rows (the reference zeroes their probabilities)."""
    npd = np_dtype(dtype)
    causal = bool(cx.attr("is_causal", 0))
    triangle = None
    if causal:
        allowed = np.arange(kv_len)[None, :] <= np.arange(q_len)[:, None] + past_len
        triangle = np.where(allowed, npd.type(0), npd.type(-np.inf)).astype(npd)
    if not cx.has_input(3):
        if triangle is None:
            return "", None
        if np.isneginf(triangle.max(axis=-1)).any():
            raise cx.unsupported("a causal mask that masks whole rows")
        return cx.param(triangle), None
    mask, mt = cx.value(3), cx.type(3)
    if mt.shape[-1] != kv_len:
        pad = kv_len - mt.shape[-1]
        if pad < 0:
            raise cx.unsupported(f"attn_mask of {mt.shape[-1]} keys for {kv_len}")
        fill = 0.0 if mt.dtype == "bool" else -np.inf
        shape = mt.shape[:-1] + (kv_len,)
        mask = cx.emit("pad", [mask], TensorType(shape, mt.dtype), pads=[0] * mt.rank + [0] * (mt.rank - 1) + [pad],
                       mode="constant", value=fill)
        mt = TensorType(shape, mt.dtype)
    if mt.dtype == "bool":
        mask = cx.emit("where", [mask, scalar(cx, 0, dtype), scalar(cx, -np.inf, dtype)], TensorType(mt.shape, dtype))
    elif mt.dtype != dtype:
        raise cx.unsupported(f"attn_mask of {mt.dtype} for {dtype} inputs")
    bias = _emit(cx, "add", [mask, cx.param(triangle)]) if triangle is not None else mask
    bt = typeof(cx, bias)
    reduced = TensorType(bt.shape[:-1] + (1,), dtype)
    peak = cx.emit("reduce_max", [bias], reduced, axes=[bt.rank - 1], keepdims=True)
    rows = cx.emit("isinf", [peak], TensorType(reduced.shape, "bool"), detect_positive=False, detect_negative=True)
    return bias, rows


def _slice_last(cx: NodeContext, x: str, start: int, end: int, step: int = 1) -> str:
    t = typeof(cx, x)
    size = len(range(*slice(start, end, step).indices(t.shape[-1])))
    return cx.emit("slice", [x], TensorType(t.shape[:-1] + (size,), t.dtype), starts=[start], ends=[end],
                   axes=[t.rank - 1], steps=[step])


@converter("RotaryEmbedding")
def rotary_embedding(cx: NodeContext) -> list[Result]:
    """ONNX RotaryEmbedding-23 as its reference computes it, on a [B, S, H, D] view of the input."""
    t = cx.type(0)
    if t.dtype not in ("float32", "float64", "float16") or any(isinstance(d, str) for d in t.shape):
        raise cx.unsupported(f"input {t}")
    x = cx.value(0)
    if t.rank == 4:
        x = transpose(cx, x, [0, 2, 1, 3])
    elif t.rank == 3:
        heads = int(cx.attr("num_heads", 0))
        if heads <= 0 or t.shape[2] % heads:
            raise cx.unsupported(f"num_heads={heads} for hidden size {t.shape[2]}")
        x = reshape(cx, x, [t.shape[0], t.shape[1], heads, t.shape[2] // heads])
    else:
        raise cx.unsupported(f"rank {t.rank} input")
    head = typeof(cx, x).shape[3]
    dim = int(cx.attr("rotary_embedding_dim", 0)) or head
    caches = []
    for i in (1, 2):
        cache = cx.value(i)
        if cx.has_input(3):
            ct, pt = cx.type(i), cx.type(3)
            cache = cx.emit("gather", [cache, cx.value(3)], TensorType(pt.shape + ct.shape[1:], ct.dtype), axis=0)
        ct = typeof(cx, cache)
        if ct.shape[-1] != dim // 2:
            raise cx.unsupported(f"cache of width {ct.shape[-1]} for rotary_embedding_dim {dim}")
        caches.append(reshape(cx, cache, [*ct.shape[:2], 1, ct.shape[2]]))
    cos, sin = caches
    rotate = _slice_last(cx, x, 0, dim) if dim < head else x
    interleaved = bool(cx.attr("interleaved", 0))
    if interleaved:
        x1, x2 = _slice_last(cx, rotate, 0, dim, 2), _slice_last(cx, rotate, 1, dim, 2)
    else:
        x1, x2 = _slice_last(cx, rotate, 0, dim // 2), _slice_last(cx, rotate, dim // 2, dim)
    real = _emit(cx, "sub", [_emit(cx, "mul", [cos, x1]), _emit(cx, "mul", [sin, x2])])
    imag = _emit(cx, "add", [_emit(cx, "mul", [sin, x1]), _emit(cx, "mul", [cos, x2])])
    rt = typeof(cx, real)
    if interleaved:
        pairs = [reshape(cx, v, [*rt.shape, 1]) for v in (real, imag)]
        joined = cx.emit("concat", pairs, TensorType((*rt.shape, 2), rt.dtype), axis=rt.rank)
        rotated = reshape(cx, joined, [*rt.shape[:-1], dim])
    else:
        rotated = cx.emit("concat", [real, imag], TensorType((*rt.shape[:-1], dim), rt.dtype), axis=rt.rank - 1)
    if dim < head:
        rest = _slice_last(cx, x, dim, head)
        rotated = cx.emit("concat", [rotated, rest], typeof(cx, x), axis=3)
    if t.rank == 4:
        return [transpose(cx, rotated, [0, 2, 1, 3])]
    return [reshape(cx, rotated, list(t.shape))]
