"""Neural-network aten ops: linear/matmul, convolution, pooling, resampling, normalization, softmax and
scaled dot-product attention."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from sparsecc.ir.graph import TensorType

from ..importer import Call, Const, Unavailable
from . import converter


# ---- linear algebra ---------------------------------------------------------------------------------
@converter("aten.linear.default")
def _linear(call: Call) -> str:
    inputs = [call.ir(call["input"]), call.ir(call["weight"])]
    if call["bias"] is not None:
        inputs.append(call.ir(call["bias"]))
    return call.emit("linear", inputs, call.out_type())


@converter("aten.mm.default", "aten.bmm.default", "aten.matmul.default")
def _matmul(call: Call) -> str:
    """A constant 2-D right operand becomes ``linear`` in canonicalization (matmul_to_linear)."""
    return call.emit("matmul", [call.ir(call["self"]), call.ir(call["other"] if "other" in call.args
                                                                 else call["mat2"])], call.out_type())


@converter("aten.addmm.default")
def _addmm(call: Call) -> str:
    """bias + mat1 @ mat2: ``linear`` with weight mat2^T when mat2 is a constant (as torch.export writes
    nn.Linear: ``addmm(b, x, permute(W))``, so the weight is W itself, never copied)."""
    if call["beta"] != 1 or call["alpha"] != 1:
        raise call.unsupported(f"beta={call['beta']}, alpha={call['alpha']} (only 1)")
    bias, x, mat2 = call["self"], call["mat1"], call["mat2"]
    out = call.out_type()
    if isinstance(mat2, Const):
        weight = Const(mat2.data.t(), f"{mat2.name}_t")
        if call.type(bias).shape == (out.shape[1],):
            return call.emit("linear", [call.ir(x), call.ir(weight), call.ir(bias)], out)
        product = call.emit("linear", [call.ir(x), call.ir(weight)], out)
    else:
        product = call.emit("matmul", [call.ir(x), call.ir(mat2)], out)
    return call.emit("add", [product, call.operand(bias, out.dtype)], out)


# ---- convolution --------------------------------------------------------------------------------------
def _per_axis(values: Sequence[int] | int, n: int) -> list[int]:
    values = [values] if isinstance(values, int) else list(values)
    return [int(v) for v in values] * n if len(values) == 1 else [int(v) for v in values]


@converter("aten.convolution.default")
def _convolution(call: Call) -> str:
    x = call["input"]
    n = call.rank(x) - 2
    if n not in (1, 2, 3):
        raise call.unsupported(f"convolution with {n} spatial dims")
    padding = _per_axis(call["padding"], n)
    attrs = dict(strides=_per_axis(call["stride"], n), pads=padding + padding,
                 dilations=_per_axis(call["dilation"], n), groups=int(call["groups"]))
    inputs = [call.ir(x), call.ir(call["weight"])]
    if call["bias"] is not None:
        inputs.append(call.ir(call["bias"]))
    if call["transposed"]:
        return call.emit("conv_transpose", inputs, call.out_type(),
                         output_padding=_per_axis(call["output_padding"], n), **attrs)
    if any(_per_axis(call["output_padding"], n)):
        raise call.unsupported("output_padding on a forward convolution")
    return call.emit("conv", inputs, call.out_type(), **attrs)


# ---- pooling ------------------------------------------------------------------------------------------
def _pool_args(call: Call, x: Any) -> tuple[int, list[int], list[int], list[int]]:
    n = call.rank(x) - 2
    kernel = _per_axis(call["kernel_size"], n)
    stride = _per_axis(call["stride"], n) if call["stride"] else kernel
    return n, kernel, stride, _per_axis(call["padding"], n)


@converter("aten.max_pool2d_with_indices.default", "aten.max_pool3d_with_indices.default")
def _max_pool(call: Call) -> tuple[str, Unavailable]:
    x = call["self"]
    n, kernel, stride, padding = _pool_args(call, x)
    y = call.emit("max_pool", [call.ir(x)], call.out_type(0), kernel=kernel, strides=stride,
                  pads=padding + padding, dilations=_per_axis(call["dilation"], n), ceil_mode=bool(call["ceil_mode"]))
    return y, Unavailable("indices")


@converter("aten.avg_pool1d.default", "aten.avg_pool2d.default", "aten.avg_pool3d.default")
def _avg_pool(call: Call) -> str:
    x = call["self"]
    n, kernel, stride, padding = _pool_args(call, x)
    if call.args.get("divisor_override") is not None:
        raise call.unsupported("divisor_override")
    ceil_mode, out = bool(call["ceil_mode"]), call.out_type()
    # the IR pools the zero-padded input, where a ceil-mode window may start in the right padding;
    # torch drops such a window: refuse the rare shapes where the two disagree
    sizes = call.type(x).shape[2:]
    for size, k, s, p, o in zip(sizes, kernel, stride, padding, out.shape[2:]):
        padded = size + 2 * p
        ir_out = (padded - k + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (ir_out - 1) * s >= padded:
            ir_out -= 1
        if ir_out != o:
            raise call.unsupported(f"ceil_mode window placement differs from torch for size {size}")
    return call.emit("avg_pool", [call.ir(x)], out, kernel=kernel, strides=stride, pads=padding + padding,
                     ceil_mode=ceil_mode, count_include_pad=bool(call["count_include_pad"]))


@converter("aten._adaptive_avg_pool1d.default", "aten._adaptive_avg_pool2d.default",
           "aten._adaptive_avg_pool3d.default", "aten.adaptive_avg_pool1d.default")
def _adaptive_avg_pool(call: Call) -> str:
    """Exact when every output size divides its input size: a plain average pool (a mean for size 1)."""
    x = call["self"]
    t, out = call.type(x), call.out_type()
    sizes, outs = t.shape[2:], out.shape[2:]
    if not all(isinstance(s, int) for s in sizes) or any(s % o for s, o in zip(sizes, outs)):
        raise call.unsupported(f"output size {list(outs)} does not divide input size {list(sizes)}")
    if all(o == 1 for o in outs):
        return call.emit("reduce_mean", [call.ir(x)], out, axes=list(range(2, t.rank)), keepdims=True)
    kernel = [s // o for s, o in zip(sizes, outs)]
    return call.emit("avg_pool", [call.ir(x)], out, kernel=kernel, strides=kernel, pads=[0] * (2 * len(kernel)),
                     ceil_mode=False, count_include_pad=False)


# ---- resampling ---------------------------------------------------------------------------------------
def _check_scales(call: Call, x: Any, out: TensorType, scales: Sequence[float] | None) -> None:
    """torch maps output to input coordinates with 1/scale when scale factors are given; the IR uses
    in/out: equal only when out == in * scale exactly."""
    sizes = call.type(x).shape[2:]
    if not all(isinstance(s, int) for s in sizes):
        raise call.unsupported("resampling of symbolic spatial dims")
    for size, o, s in zip(sizes, out.shape[2:], scales or []):
        if s is not None and size * s != o:
            raise call.unsupported(f"scale factor {s} does not map size {size} exactly to {o}")


def _resize(call: Call, mode: str, coordinates: str, nearest: str = "floor") -> str:
    x, out = call["input"] if "input" in call.args else call["self"], call.out_type()
    scales = call.args.get("scale_factors")
    if scales is None and "scales_h" in call.args:
        scales = [call.args.get(k) for k in ("scales_d", "scales_h", "scales_w") if k in call.args]
    _check_scales(call, x, out, scales)
    return call.emit("resize", [call.ir(x)], out, sizes=list(out.shape[2:]), mode=mode,
                     coordinate_transformation_mode=coordinates, nearest_mode=nearest)


@converter("aten.upsample_nearest1d.vec", "aten.upsample_nearest2d.vec", "aten.upsample_nearest3d.vec",
           "aten.upsample_nearest2d.default")
def _upsample_nearest(call: Call) -> str:
    return _resize(call, "nearest", "asymmetric")


@converter("aten._upsample_nearest_exact1d.vec", "aten._upsample_nearest_exact2d.vec",
           "aten._upsample_nearest_exact3d.vec")
def _upsample_nearest_exact(call: Call) -> str:
    return _resize(call, "nearest", "half_pixel", "round_prefer_ceil")


@converter("aten.upsample_linear1d.vec", "aten.upsample_bilinear2d.vec", "aten.upsample_trilinear3d.vec",
           "aten.upsample_bilinear2d.default")
def _upsample_linear(call: Call) -> str:
    coordinates = "align_corners" if call["align_corners"] else "pytorch_half_pixel"
    return _resize(call, "linear", coordinates, "")


# ---- normalization --------------------------------------------------------------------------------------
def _affine(call: Call, value: Any, channels: Any, fill: float, dtype: str) -> str:
    """A per-channel weight/bias, or the identity (ones/zeros) where torch's is None."""
    if value is not None:
        return call.ir(value)
    if not isinstance(channels, int):
        raise call.unsupported("a symbolic channel count")
    return call.const(np.full((channels,), fill, dtype=np.dtype(dtype)), f"{call.name}_{'scale' if fill else 'shift'}")


@converter("aten._native_batch_norm_legit_no_training.default")
def _batch_norm(call: Call) -> tuple[str, Unavailable, Unavailable]:
    x = call["input"]
    t = call.type(x)
    inputs = [call.ir(x), _affine(call, call["weight"], t.shape[1], 1.0, t.dtype),
              _affine(call, call["bias"], t.shape[1], 0.0, t.dtype),
              call.ir(call["running_mean"]), call.ir(call["running_var"])]
    y = call.emit("batch_norm", inputs, call.out_type(0), epsilon=float(call["eps"]))
    return y, Unavailable("save_mean"), Unavailable("save_invstd")


@converter("aten.native_layer_norm.default")
def _layer_norm(call: Call) -> tuple[str, Unavailable, Unavailable]:
    x = call["input"]
    axis = call.rank(x) - len(call["normalized_shape"])
    inputs = [call.ir(x)] + [call.ir(v) if v is not None else "" for v in (call["weight"], call["bias"])]
    while inputs[-1] == "":
        inputs.pop()
    y = call.emit("layer_norm", inputs, call.out_type(0), axis=axis, epsilon=float(call["eps"]))
    return y, Unavailable("mean"), Unavailable("rstd")


@converter("aten.native_group_norm.default")
def _group_norm(call: Call) -> tuple[str, Unavailable, Unavailable]:
    x = call["input"]
    t = call.type(x)
    inputs = [call.ir(x), _affine(call, call["weight"], t.shape[1], 1.0, t.dtype),
              _affine(call, call["bias"], t.shape[1], 0.0, t.dtype)]
    y = call.emit("group_norm", inputs, call.out_type(0), num_groups=int(call["group"]), epsilon=float(call["eps"]))
    return y, Unavailable("mean"), Unavailable("rstd")


@converter("aten._softmax.default", "aten._log_softmax.default", "aten.softmax.int", "aten.log_softmax.int")
def _softmax(call: Call) -> str:
    x, out = call["self"], call.out_type()
    if call.args.get("half_to_float"):
        raise call.unsupported("half_to_float")
    op = "log_softmax" if "log_softmax" in call.op else "softmax"
    return call.emit(op, [call.cast(call.ir(x), out.dtype)], out, axis=call.axis(call["dim"], call.rank(x)))


# ---- attention ----------------------------------------------------------------------------------------
@converter("aten.scaled_dot_product_attention.default")
def _sdpa(call: Call) -> str:
    """softmax(q k^T * scale + mask) v, the math torch's reference implementation states."""
    q, k, v, mask = call["query"], call["key"], call["value"], call["attn_mask"]
    if call["dropout_p"] != 0:
        raise call.unsupported(f"dropout_p={call['dropout_p']}")
    if call.args.get("enable_gqa"):
        raise call.unsupported("enable_gqa")
    qt, kt = call.type(q), call.type(k)
    if qt.shape[:-2] != kt.shape[:-2]:
        raise call.unsupported("query and key with different batch/head dims")
    rank, dtype = qt.rank, qt.dtype
    length, source = qt.shape[-2], kt.shape[-2]
    kt_shape = kt.shape[:-2] + (kt.shape[-1], kt.shape[-2])
    k_t = call.emit("transpose", [call.ir(k)], TensorType(kt_shape, dtype),
                    perm=list(range(rank - 2)) + [rank - 1, rank - 2])
    scores_type = TensorType(qt.shape[:-1] + (source,), dtype)
    scores = call.emit("matmul", [call.ir(q), k_t], scores_type)
    scale = call["scale"] if call["scale"] is not None else 1.0 / math.sqrt(qt.shape[-1])
    scores = call.emit("mul", [scores, call.scalar(float(scale), dtype)], scores_type)
    if call["is_causal"]:
        if not (isinstance(length, int) and isinstance(source, int)):
            raise call.unsupported("is_causal with symbolic sequence lengths")
        causal = call.const(np.tril(np.ones((length, source), dtype=bool)), f"{call.name}_causal")
        scores = call.emit("where", [causal, scores, call.scalar(float("-inf"), dtype)], scores_type)
    if mask is not None:
        if call.dtype(mask) == "bool":
            scores = call.emit("where", [call.ir(mask), scores, call.scalar(float("-inf"), dtype)], scores_type)
        else:
            scores = call.emit("add", [scores, call.operand(mask, dtype)], scores_type)
    weights = call.emit("softmax", [scores], scores_type, axis=rank - 1)
    return call.emit("matmul", [weights, call.ir(v)], call.out_type())

