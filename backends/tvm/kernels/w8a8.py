"""W8A8 ``linear``: the input quantized statically to uint8, int8 weights, integer dot products
(``sparsecc.ir.encodings`` documents the arithmetic; the interpreter's ``w8a8_linear`` is the same).

    quantize_input   xq = clamp(round_half_even(x / scale) + zero, 0, 255) as uint8
    dense_w8a8       acc[o] = sum_k xq[k] * code[o, k] (int32), then
                     y[o] = float32(acc[o] - zero * colsum[o]) * (float32(scale) * weight_scale[o]) (+ bias)

On x86 with AVX-512 VNNI the weight is packed ``OI16o4i`` (``[O/16, K/4, 16, 4]``) and ``VnniMatmul`` tiles the
output like ``RegisterTiledMatmul`` but tensorizes the inner 16 outputs x 4 inputs into one ``vpdpbusd`` (64
multiply-adds per instruction, four times a float32 FMA's), with the dequantization and any epilogue folded into
the tile's write-back. Other targets run the same compute with TVM's default loops (correct, not fast).
"""
from __future__ import annotations

from typing import Any

from tvm import s_tir, te, tirx
from tvm.s_tir import dlight as dl
from tvm.target import Target

from .encoded import row_reader
from .matmul import tile_rows
from .tiling import find_block, tile_write_back

W8A8_BLOCK = "sparsecc_dense_w8a8"
QUANTIZE_BLOCK = "sparsecc_quantize_input"

BLOCKS, BLOCKS_GEMV = 2, 4
"""Register tile: ``tile_rows`` rows x blocks of 16 int32 accumulators (12-16 in flight hide vpdpbusd's latency)."""


def quantize_input(x: te.Tensor, *, scale: float, zero: int) -> te.Tensor:
    s = tirx.const(scale, "float32")
    return te.compute(x.shape, lambda *i: tirx.max(tirx.min(tirx.nearbyint(x[i] / s) + float(zero), 255.0), 0.0)
                      .astype("uint8"), name=QUANTIZE_BLOCK)


def dense_w8a8(xq: te.Tensor, w: te.Tensor, scales: te.Tensor, colsums: te.Tensor, bias: te.Tensor | None = None,
               *, scale: float, zero: int, lanes: int | None) -> te.Tensor:
    """``xq`` uint8 ``[..., K]``, ``w`` int8 ``[O, K]`` or packed ``[O/b, K/4, b, 4]``; ``scales``/``colsums``
    ``[O, 1]`` or packed ``[O/b, 1, b]``."""
    *lead, k = xq.shape
    if lanes:
        rows = w.shape[0] * lanes
        code = lambda o, r: w[o // lanes, r // 4, o % lanes, r % 4]  # noqa: E731
    else:
        rows = w.shape[0]
        code = lambda o, r: w[o, r]  # noqa: E731
    colsum, weight_scale = row_reader(colsums, lanes), row_reader(scales, lanes)
    r = te.reduce_axis((0, k), name="k")
    acc = te.compute((*lead, rows), lambda *i: te.sum(
        xq[(*i[:-1], r)].astype("int32") * code(i[-1], r).astype("int32"), axis=r), name=W8A8_BLOCK)
    s = tirx.const(scale, "float32")

    def dequantize(*i: Any) -> Any:
        o = i[-1]
        y = (acc[i] - zero * colsum(o, 0)).astype("float32") * (s * weight_scale(o, 0))
        return y if bias is None else y + bias[o]

    return te.compute(acc.shape, dequantize, name="dequantize")


VNNI_INTRIN = "sparsecc_dot_16x4_vnni"


def _register_vnni() -> None:
    """``vpdpbusd`` as a tensor intrinsic: 16 int32 accumulators += 4 uint8 inputs . 16x4 int8 weights.

    TVM 0.27 ships one (``dot_16x4_vnni``) but declares the operands as 16 x i32, which its bundled LLVM rejects
    (the intrinsic takes 64 x i8 since LLVM 18); importing it also costs ~40 s (the package imports every target's
    intrinsics). This one passes bytes."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
             c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        c[vi] = c[vi] + T.cast(a[vk], "int32") * T.cast(b[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
             c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16])
            a_u8x64 = T.reinterpret(T.broadcast(T.reinterpret(a.vload([0], "uint8x4"), dtype="int32"), 16),
                                    dtype="uint8x64")
            c[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), c.vload([0], "int32x16"), a_u8x64,
                b.vload([0, 0], dtype="int8x64"), dtype="int32x16")

    TensorIntrin.register(VNNI_INTRIN, desc, impl, override=True)


class VnniMatmul(dl.ScheduleRule):
    """Schedules a PrimFunc holding a ``W8A8_BLOCK`` on a packed weight for x86 with AVX-512 VNNI."""

    def __init__(self) -> None:
        _register_vnni()

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        from tvm.target.codegen import target_has_features

        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        block = find_block(sch, W8A8_BLOCK)
        if block is None or len(sch.get(block).reads[1].source.shape) != 4 or not target_has_features(
                "avx512vnni", target):
            return None
        # the input's quantization is computed once, before the tiles (a quantization that is this function's
        # epilogue, feeding the next W8A8 layer, folds into the write-back like any other)
        quantize = find_block(sch, QUANTIZE_BLOCK)
        if quantize is not None and not any(sch.get(p).name_hint == QUANTIZE_BLOCK
                                            for p in sch.get_producers(block)):
            quantize = None
        out = tile_write_back(sch, block, keep=(QUANTIZE_BLOCK,) if quantize is not None else ())
        if out is None:
            return None
        if quantize is not None:
            loops = sch.get_loops(quantize)
            fused = sch.fuse(*loops)
            outer, inner = sch.split(fused, [None, 16])
            sch.parallel(outer)
            sch.vectorize(inner)
        *outer, m, n = sch.get_loops(out)
        rows = tile_rows(sch.get(m).extent, exact=True)
        blocks = BLOCKS_GEMV if rows == 1 else BLOCKS
        n_extent = int(sch.get(n).extent) // 16
        blocks = next(b for b in range(blocks, 0, -1) if n_extent % b == 0)
        mo, mi = sch.split(m, [None, rows])
        no, ni = sch.split(n, [None, blocks * 16])
        sch.reorder(*outer, mo, no, mi, ni)
        sch.compute_at(block, no, preserve_unit_loops=True)
        *_, row, col, k = sch.get_loops(block)
        blk, lane = sch.split(col, [blocks, 16])
        ko, ki = sch.split(k, [None, 4])
        sch.reorder(ko, row, blk, lane, ki)
        sch.unroll(blk)
        sch.unroll(row)
        sch.vectorize(sch.split(ni, [blocks, 16])[1])
        sch.parallel(sch.fuse(*outer, mo, no))
        init = sch.decompose_reduction(block, ko)
        sch.vectorize(sch.get_loops(init)[-1])
        sch.tensorize(lane, VNNI_INTRIN)
        return sch
