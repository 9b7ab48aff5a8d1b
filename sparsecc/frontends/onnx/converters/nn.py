"""Neural-network ONNX ops: MatMul/Gemm/Einsum, Conv/ConvTranspose, pooling, Dropout (inference: identity),
Resize/Upsample."""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from sparsecc.ir.graph import Dim, TensorType

from .. import symbolic
from ..importer import NodeContext
from .common import FLOATS, Result, broadcast, converter, norm_axis, require_float, scalar, transpose, typeof


# ---- linear algebra ------------------------------------------------------------------------------------------
def matmul_shape(cx: NodeContext, a: Sequence[Dim], b: Sequence[Dim]) -> tuple[Dim, ...]:
    if not a or not b:
        raise cx.unsupported("matmul of a scalar")
    a2, b2 = (list(a) if len(a) > 1 else [1, a[0]]), (list(b) if len(b) > 1 else [b[0], 1])
    if a2[-1] != b2[-2]:
        raise cx.unsupported(f"matmul of shapes {list(a)} and {list(b)}")
    out = list(broadcast(cx, a2[:-2], b2[:-2])) + ([a2[-2]] if len(a) > 1 else []) + ([b2[-1]] if len(b) > 1 else [])
    return tuple(out)


@converter("MatMul")
def matmul(cx: NodeContext) -> list[Result]:
    if cx.dtype(0) == "bool":
        raise cx.unsupported("MatMul of bool")
    out = matmul_shape(cx, cx.shape(0), cx.shape(1))
    return [cx.emit("matmul", [cx.value(0), cx.value(1)], TensorType(out, cx.dtype(0)))]


@converter("Gemm")
def gemm(cx: NodeContext) -> list[Result]:
    """alpha * A' @ B' + beta * C; with transB and a constant B it is ``linear`` directly ([N, K] weights)."""
    if cx.rank(0) != 2 or cx.rank(1) != 2:
        raise cx.unsupported("Gemm needs 2-D A and B")
    alpha, beta = float(np.float32(cx.attr("alpha", 1.0))), float(np.float32(cx.attr("beta", 1.0)))
    dtype = cx.dtype(0)
    a = transpose(cx, cx.value(0), [1, 0]) if cx.attr("transA", 0) else cx.value(0)
    m = typeof(cx, a).shape[0]
    trans_b = bool(cx.attr("transB", 0))
    n = cx.shape(1)[0 if trans_b else 1]
    out = TensorType((m, n), dtype)
    if trans_b and cx.known(1) is not None and dtype in FLOATS:
        y = cx.emit("linear", [a, cx.value(1)], out)
    else:
        b = transpose(cx, cx.value(1), [1, 0]) if trans_b else cx.value(1)
        y = cx.emit("matmul", [a, b], out)
    if alpha != 1.0:
        y = cx.emit("mul", [y, scalar(cx, alpha, dtype)], out)
    if cx.has_input(2) and beta != 0.0:
        c = cx.value(2)
        if broadcast(cx, (m, n), cx.shape(2)) != (m, n):
            raise cx.unsupported(f"C of shape {list(cx.shape(2))} does not broadcast to {[m, n]}")
        if beta != 1.0:
            c = cx.emit("mul", [c, scalar(cx, beta, dtype)], cx.type(2))
        y = cx.emit("add", [y, c], out)
    return [y]


@converter("Einsum")
def einsum(cx: NodeContext) -> list[Result]:
    equation = cx.attr("equation").replace(" ", "")
    if "..." in equation:
        raise cx.unsupported(f"einsum {equation!r} with an ellipsis")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    present = [i for i in range(cx.num_inputs) if cx.has_input(i)]
    if len(terms) != len(present):
        raise cx.unsupported(f"einsum {equation!r} for {len(present)} operands")
    sizes: dict[str, Dim] = {}
    for term, i in zip(terms, present):
        if len(term) != cx.rank(i):
            raise cx.unsupported(f"einsum term {term!r} for an operand of rank {cx.rank(i)}")
        for letter, d in zip(term, cx.shape(i)):
            if sizes.setdefault(letter, d) != d:
                if d == 1 or sizes[letter] == 1:
                    raise cx.unsupported(f"einsum {equation!r} broadcasts index {letter!r}")
                raise cx.unsupported(f"einsum index {letter!r} has sizes {sizes[letter]} and {d}")
    if not arrow:
        counts = {c: lhs.count(c) for c in sizes}
        rhs = "".join(sorted(c for c, k in counts.items() if k == 1))
    if not re.fullmatch(r"[A-Za-z]*", rhs):
        raise cx.unsupported(f"einsum {equation!r}")
    out = TensorType(tuple(sizes[c] for c in rhs), cx.dtype(present[0]))
    return [cx.emit("einsum", [cx.value(i) for i in present], out, equation=f"{lhs}->{rhs}")]


# ---- convolution and pooling ----------------------------------------------------------------------------------
def _static_spatial(cx: NodeContext) -> list[int]:
    spatial = list(cx.shape(0)[2:])
    if any(isinstance(d, str) for d in spatial):
        raise cx.unsupported(f"symbolic spatial dims {spatial}")
    if not 1 <= len(spatial) <= 3:
        raise cx.unsupported(f"{len(spatial)} spatial dims (1-3 supported)")
    return spatial


def _window_pads(cx: NodeContext, spatial: list[int], kernel: list[int], strides: list[int],
                 dilations: list[int]) -> list[int]:
    """Begin+end pads from ``pads`` / ``auto_pad`` for a forward window op."""
    n = len(spatial)
    auto_pad = cx.attr("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = [int(p) for p in cx.attr("pads", [0] * (2 * n))]
        if len(pads) != 2 * n:
            raise cx.unsupported(f"pads {pads} for {n} spatial dims")
        return pads
    if auto_pad == "VALID":
        return [0] * (2 * n)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise cx.unsupported(f"auto_pad={auto_pad!r}")
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else big)
        end.append(big if auto_pad == "SAME_UPPER" else small)
    return begin + end


def _window_out(size: int, k: int, s: int, d: int, pb: int, pe: int, ceil_mode: bool) -> int:
    span = size + pb + pe - ((k - 1) * d + 1)
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + pb:
        out -= 1
    return out


def _window_attrs(cx: NodeContext, kernel: list[int]) -> tuple[list[int], list[int], list[int], list[int]]:
    spatial = _static_spatial(cx)
    n = len(spatial)
    if len(kernel) != n:
        raise cx.unsupported(f"kernel {kernel} for {n} spatial dims")
    strides = [int(s) for s in cx.attr("strides", [1] * n)]
    dilations = [int(d) for d in cx.attr("dilations", [1] * n)]
    pads = _window_pads(cx, spatial, kernel, strides, dilations)
    return spatial, strides, dilations, pads


@converter("Conv")
def conv(cx: NodeContext) -> list[Result]:
    require_float(cx)
    wshape = cx.shape(1)
    kernel = [int(k) for k in cx.attr("kernel_shape", wshape[2:])]
    if any(isinstance(d, str) for d in wshape) or list(wshape[2:]) != kernel:
        raise cx.unsupported(f"kernel_shape {kernel} vs weight shape {list(wshape)}")
    spatial, strides, dilations, pads = _window_attrs(cx, kernel)
    groups = int(cx.attr("group", 1))
    n = len(spatial)
    if cx.shape(0)[1] != symbolic.mul(wshape[1], groups):
        raise cx.unsupported(f"input channels {cx.shape(0)[1]} vs weight {list(wshape)} with group={groups}")
    out = [cx.shape(0)[0], wshape[0]] + [_window_out(spatial[i], kernel[i], strides[i], dilations[i], pads[i],
                                                      pads[n + i], False) for i in range(n)]
    return [cx.emit("conv", [cx.value(0), cx.value(1), cx.value(2)], TensorType(tuple(out), cx.dtype(0)),
                    strides=strides, pads=pads, dilations=dilations, groups=groups)]


@converter("ConvTranspose")
def conv_transpose(cx: NodeContext) -> list[Result]:
    require_float(cx)
    spatial = _static_spatial(cx)
    n = len(spatial)
    wshape = cx.shape(1)
    kernel = [int(k) for k in cx.attr("kernel_shape", wshape[2:])]
    if list(wshape[2:]) != kernel:
        raise cx.unsupported(f"kernel_shape {kernel} vs weight shape {list(wshape)}")
    strides = [int(s) for s in cx.attr("strides", [1] * n)]
    dilations = [int(d) for d in cx.attr("dilations", [1] * n)]
    out_pad = [int(p) for p in cx.attr("output_padding", [0] * n)]
    groups = int(cx.attr("group", 1))
    natural = [strides[i] * (spatial[i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 for i in range(n)]
    auto_pad = cx.attr("auto_pad", "NOTSET")
    output_shape = cx.attr("output_shape")
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [int(s) for s in output_shape][-n:] if output_shape is not None else [
            spatial[i] * strides[i] for i in range(n)]
        totals = [natural[i] - target[i] for i in range(n)]
        if any(t < 0 for t in totals):
            raise cx.unsupported(f"output_shape {target} larger than the natural output {natural}")
        upper = auto_pad == "SAME_UPPER"
        pads = ([t // 2 if upper else t - t // 2 for t in totals] + [t - t // 2 if upper else t // 2 for t in totals])
    elif auto_pad in ("NOTSET", "", "VALID"):
        pads = [int(p) for p in cx.attr("pads", [0] * (2 * n))] if auto_pad != "VALID" else [0] * (2 * n)
    else:
        raise cx.unsupported(f"auto_pad={auto_pad!r}")
    out = [cx.shape(0)[0], symbolic.mul(wshape[1], groups)] + [natural[i] - pads[i] - pads[n + i] for i in range(n)]
    return [cx.emit("conv_transpose", [cx.value(0), cx.value(1), cx.value(2)], TensorType(tuple(out), cx.dtype(0)),
                    strides=strides, pads=pads, dilations=dilations, output_padding=out_pad, groups=groups)]


def _canonical_pool_out(op: str, size: int, k: int, s: int, d: int, pb: int, pe: int, ceil_mode: bool) -> int:
    """The output size the canonical pool op gives (torch's rule, see the interpreter): a ceil-mode window must
    start inside the input plus left pad (max_pool with torch-style symmetric pads) or the padded input."""
    k_eff = (k - 1) * d + 1
    out = (size + pb + pe - k_eff + (s - 1 if ceil_mode else 0)) // s + 1
    torch_pads = op == "max_pool" and pb == pe and 2 * pb <= k
    limit = size + pb if torch_pads else size + pb + pe
    if ceil_mode and (out - 1) * s >= limit:
        out -= 1
    return out


@converter("MaxPool", "AveragePool")
def pool(cx: NodeContext) -> list[Result]:
    """ONNX drops a ceil-mode window that starts in the right pad; where the canonical op keeps it, the extra
    trailing outputs are sliced off."""
    if cx.op_type == "AveragePool":
        require_float(cx)
    op = "max_pool" if cx.op_type == "MaxPool" else "avg_pool"
    kernel = [int(k) for k in cx.attr("kernel_shape")]
    spatial, strides, dilations, pads = _window_attrs(cx, kernel)
    ceil_mode = bool(cx.attr("ceil_mode", 0))
    n = len(spatial)
    args = [(spatial[i], kernel[i], strides[i], dilations[i], pads[i], pads[n + i], ceil_mode) for i in range(n)]
    want = [_window_out(*a) for a in args]
    got = [_canonical_pool_out(op, *a) for a in args]
    if any(w > g for w, g in zip(want, got)):
        raise cx.unsupported(f"output size {want} exceeds the canonical pool's {got}")
    lead = tuple(cx.shape(0)[:2])
    out = TensorType(lead + tuple(got), cx.dtype(0))
    if op == "max_pool":
        if int(cx.attr("storage_order", 0)) != 0 and cx.has_output(1):
            raise cx.unsupported("storage_order=1")
        y = cx.emit("max_pool", [cx.value(0)], out, kernel=kernel, strides=strides, pads=pads, dilations=dilations,
                    ceil_mode=ceil_mode)
    else:
        if any(d != 1 for d in dilations):
            raise cx.unsupported(f"AveragePool dilations {dilations}")
        y = cx.emit("avg_pool", [cx.value(0)], out, kernel=kernel, strides=strides, pads=pads, ceil_mode=ceil_mode,
                    count_include_pad=bool(cx.attr("count_include_pad", 0)))
    if want == got:
        return [y]
    axes = list(range(2, 2 + n))
    return [cx.emit("slice", [y], TensorType(lead + tuple(want), cx.dtype(0)), starts=[0] * n, ends=want, axes=axes,
                    steps=[1] * n)]


@converter("GlobalAveragePool", "GlobalMaxPool")
def global_pool(cx: NodeContext) -> list[Result]:
    require_float(cx)
    rank = cx.rank(0)
    axes = list(range(2, rank))
    shape = tuple(cx.shape(0)[:2]) + (1,) * (rank - 2)
    op = "reduce_mean" if cx.op_type == "GlobalAveragePool" else "reduce_max"
    return [cx.emit(op, [cx.value(0)], TensorType(shape, cx.dtype(0)), axes=axes, keepdims=True)]


@converter("Dropout")
def dropout(cx: NodeContext) -> list[Result]:
    if cx.has_input(2):
        mode = cx.require_known(2, "training_mode")
        if mode.numeric().any():
            raise cx.unsupported("training_mode=True (random dropout)")
    if cx.has_output(1):
        raise cx.unsupported("the mask output")
    return [cx.known(0) or cx.value(0)]


# ---- resampling ---------------------------------------------------------------------------------------------
RESIZE_MODES = {("nearest", "asymmetric", "floor"), ("nearest", "half_pixel", "round_prefer_ceil"),
                ("linear", "half_pixel", ""), ("linear", "pytorch_half_pixel", ""), ("linear", "align_corners", "")}


def _resize(cx: NodeContext, mode: str, ctm: str, nearest_mode: str, scales: list[float] | None,
            sizes: list[int] | None) -> list[Result]:
    shape = cx.shape(0)
    rank = len(shape)
    if rank < 3 or any(isinstance(d, str) for d in shape[2:]):
        raise cx.unsupported(f"input shape {list(shape)} (static spatial dims required)")
    if sizes is None:
        if len(scales) != rank:
            raise cx.unsupported(f"{len(scales)} scales for rank {rank}")
        sizes = []
        for d, s in zip(shape, scales):
            exact = d if isinstance(d, str) and s == 1.0 else d * s if isinstance(d, int) else None
            if exact is None or abs(exact - round(exact)) > 1e-6 * max(1.0, abs(exact)):
                raise cx.unsupported(f"scale {s} of dim {d} is not an exact size ratio")
            sizes.append(d if isinstance(d, str) else int(round(exact)))
    if len(sizes) != rank or any(o != i for o, i in zip(sizes[:2], shape[:2])):
        raise cx.unsupported(f"resizing {list(shape)} to {sizes}: only spatial axes may change")
    key = (mode, ctm, nearest_mode if mode == "nearest" else "")
    if key not in RESIZE_MODES:
        raise cx.unsupported(f"mode {mode!r}, coordinate_transformation_mode {ctm!r}"
                             + (f", nearest_mode {nearest_mode!r}" if mode == "nearest" else ""))
    if ctm == "pytorch_half_pixel" and any(s == 1 for s in sizes[2:]):
        raise cx.unsupported("pytorch_half_pixel to an output size of 1")
    if mode == "linear":
        require_float(cx)
    return [cx.emit("resize", [cx.value(0)], TensorType(tuple(shape[:2]) + tuple(sizes[2:]), cx.dtype(0)),
                    sizes=[int(s) for s in sizes[2:]], mode=mode, coordinate_transformation_mode=ctm,
                    nearest_mode=nearest_mode if mode == "nearest" else "floor")]


@converter("Resize")
def resize(cx: NodeContext) -> list[Result]:
    mode = cx.attr("mode", "nearest")
    if int(cx.attr("antialias", 0)) or cx.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise cx.unsupported("antialias / keep_aspect_ratio_policy")
    scales_k = cx.known(2) if cx.has_input(2) else None
    sizes_k = cx.known(3) if cx.has_input(3) else None
    if (cx.has_input(2) and scales_k is None) or (cx.has_input(3) and sizes_k is None):
        raise cx.unsupported("scales/sizes computed at run time")
    scales = [float(s) for s in scales_k.numeric().reshape(-1)] if scales_k is not None and scales_k.data.size else None
    sizes = [int(s) for s in sizes_k.ints()] if sizes_k is not None and sizes_k.data.size else None
    if (scales is None) == (sizes is None):
        raise cx.unsupported("exactly one of scales and sizes must be given")
    axes = cx.attr("axes")
    if axes is not None:
        rank = cx.rank(0)
        full_scales, full_sizes = [1.0] * rank, list(cx.shape(0))
        for j, a in enumerate(axes):
            a = norm_axis(cx, int(a), rank)
            if scales is not None:
                full_scales[a] = scales[j]
            else:
                full_sizes[a] = sizes[j]
        scales, sizes = (full_scales, None) if scales is not None else (None, full_sizes)
    return _resize(cx, mode, cx.attr("coordinate_transformation_mode", "half_pixel"),
                   cx.attr("nearest_mode", "round_prefer_floor"), scales, sizes)


@converter("Upsample")
def upsample(cx: NodeContext) -> list[Result]:
    mode = cx.attr("mode", "nearest")
    scales = [float(s) for s in cx.require_known(1, "scales").numeric().reshape(-1)]
    if mode != "nearest":
        raise cx.unsupported(f"Upsample mode {mode!r} (asymmetric linear)")
    return _resize(cx, mode, "asymmetric", "floor", scales, None)

