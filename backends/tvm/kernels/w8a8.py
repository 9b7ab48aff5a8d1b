"""W8A8 ``linear``: the input quantized statically to uint8, int8 weights, integer dot products
(``sparsecc.ir.encodings`` documents the arithmetic; the interpreter's ``W8A8`` is the same).

    quantize_input   xq = clamp(round_half_even(x / scale) + zero, 0, 255) as uint8
    dense_w8a8       acc[o] = sum_k xq[k] * code[o, k] (int32), then
                     y[o] = float32(acc[o] - zero * colsum[o]) * (float32(scale) * weight_scale[o]) (+ bias)

A 2-D convolution is the same GEMM with the roles turned round (``conv_w8a8``): each int8 weight row is broadcast
against the quantized input's patches (``conv_patches``: a quarter of float32 patches' bytes, 16 output positions
per block), so the result comes out channels-first, as the next op wants it.

On x86 with AVX-512 VNNI the weight is packed ``OI16o4i`` (``[O/16, K/4, 16, 4]``) and ``DotProductMatmul``
tiles the output like ``RegisterTiledMatmul`` but tensorizes the inner 16 outputs x 4 inputs into one
``vpdpbusd`` (64 multiply-adds per instruction, four times a float32 FMA's), with the dequantization and any
epilogue folded into the tile's write-back. With AVX2 and no VNNI (a Zen 3) a linear's int8 weight is packed
``OI16o2i`` and each 8 outputs x 2 inputs are one ``vpmaddwd`` on the codes widened to int16 (16 exact
multiply-adds, twice a float32 FMA's). ``vpmaddubsw`` takes 32 (8 outputs x 4 inputs, then a ``vpmaddwd`` by ones
sums its int16 pairs) but saturates those pairs for int8 codes; for int7 ones (W7A8, ``W7A8_BLOCK``) it cannot, so
their weight keeps ``OI16o4i`` and runs it: 1.4x the ``vpmaddwd`` kernel on a Zen 3 (MiniLM's 384 -> 1536 GEMM
at 128 rows: 0.86 -> 0.61 ms, float32 1.15). A W7A8 convolution stores its patches position-major (``k_minor``),
the operand ``vpmaddubsw`` takes, and runs it too (2-3x the float32 convolution there). A W4A8 linear's int4
codes are packed two per byte (``encodings.pack_halves`` per ``OI16o4i`` block); ``DotProductMatmul`` unpacks a
register tile's nibbles once per reduction step for all its rows (one shift and two masks per 64) and multiplies
them as int7 codes; the nibbles are the codes plus 8, which ``input_offsets`` corrects once per input row. It
reads half W7A8's bytes: a 4096 x 4096 GEMV runs at about W7A8's time where that one is compute-bound, and at half
of it where memory is the limit. An N:M W7A8 linear (``2:4+w7a8``) multiplies its kept codes only: its weight
is packed ``OI8o4i`` over the kept columns (a register tile's 8 outputs x 4 codes per reduction step, 32
contiguous bytes), and beside it each kept code's input within its window of 16 (``encodings.window_picks``);
per register tile and reduction step, each row's window is one 16-byte load and the inputs of 8 outputs x 4 kept
codes one ``vpshufb`` (``pick_inputs``, ``window_gather``), then one ``vpmaddubsw`` as above. Half the multiplies
of W7A8 for 2:4, plus one shuffle per 32: MiniLM's 384 -> 1536 GEMM at 128 rows ran 1.3-1.5x the W7A8 one. An
N:M W4A8 linear (``2:4+w4a8``) is the same with one byte per kept value holding its pick (low nibble) and its
int4 code plus 8 (high nibble, ``encodings.codes_hold_picks``): ``picked_codes`` unpacks a tile's codes once per
step (a shift, a mask, a subtraction per 32), the picks are the bytes themselves (``vpshufb`` reads the low
nibble once masked). 2:4 at W4A8's bytes and a quarter of W7A8's multiplies: for a memory-bound GEMV. Other
targets, AVX2 W8A8 convolutions and N:M weights the picks do not fit run the same compute with TVM's default
loops (correct, not fast; an N:M weight's codes decoded to dense int8 ones first).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

from tvm import s_tir, te, tirx
from tvm.s_tir import dlight as dl
from tvm.target import Target

from sparsecc.ir.encodings import CODE_SHIFT, PICK_MASK, PICK_WINDOW

from .encoded import row_reader
from .matmul import tile_rows
from .tiling import accumulator_budget, find_block, tile_write_back

W8A8_BLOCK = "sparsecc_dense_w8a8"
W7A8_BLOCK = "sparsecc_dense_w7a8"
"""The same compute on int7 codes (``|code| <= 63``), which ``vpmaddubsw`` multiplies without saturating."""
W4A8_BLOCK = "sparsecc_dense_w4a8"
"""The same compute on int4 codes, unpacked per register tile (``UNPACK_BLOCK``) and multiplied as int7 ones."""
NM_BLOCKS = {8: "sparsecc_dense_nm_w8a8", 7: "sparsecc_dense_nm_w7a8", 4: "sparsecc_dense_nm_w4a8"}
"""The same compute over an N:M weight's kept codes, each times the input its index picks (``dense_nm_w8a8``)."""
PICKING_BITS = (7, 4)
"""Codes of the N:M blocks ``DotProductMatmul`` schedules (``vpmaddubsw`` multiplies int7 ones, and int4 ones as
int7, without saturating)."""
PICK_BLOCK = "sparsecc_pick_inputs"
UNPACK_BLOCK = "sparsecc_unpack_int4"
INPUT_OFFSET_BLOCK = "sparsecc_input_offsets"
PATCHES_BLOCK = "sparsecc_conv_patches"
W8A8_CONV_BLOCK = "sparsecc_conv_w8a8"
W7A8_CONV_BLOCK = "sparsecc_conv_w7a8"
"""A convolution on int7 codes, whose patches are stored position-major (``conv_patches(..., k_minor=True)``)."""
QUANTIZE_BLOCK = "sparsecc_quantize_input"
PATCH_LANES = 16
"""Output positions per packed patch block: one ``vpdpbusd``'s 16 int32 lanes."""

BLOCKS, BLOCKS_GEMV = 2, 4
"""Register tile: ``tile_rows`` rows x blocks of 16 int32 accumulators (12-16 in flight hide vpdpbusd's latency)."""
PICKED_ROWS, PICKED_LANES = 4, 8
"""Rows x outputs of an N:M tile: each row keeps its input window and its picked inputs in registers. The weight is
packed ``OI8o4i`` (``relayout``), so that a tile's codes are one contiguous stream."""
PICKED_GEMV_TILES = 4
"""A GEMV's N:M tile: up to this many blocks of 8 outputs side by side (as many as divide the outputs' blocks),
i.e. as many weight streams per thread, which the prefetchers fetch in parallel (a 4096 x 4096 2:4+W4A8 GEMV
after a 64 MB read: 0.58 -> 0.50 ms, W4A8's time)."""


def quantize_input(x: te.Tensor, *, scale: float, zero: int, dtype: str = "uint8") -> te.Tensor:
    """The uint8 codes of ``x``, stored as ``dtype``: ``int16`` for AVX2's ``vpmaddwd``, which then broadcasts an
    input pair with one load."""
    s = tirx.const(scale, "float32")
    return te.compute(x.shape, lambda *i: tirx.max(tirx.min(tirx.nearbyint(x[i] / s) + float(zero), 255.0), 0.0)
                      .astype(dtype), name=QUANTIZE_BLOCK)


INT4_OFFSET = 8
"""What a symmetric int4 code is stored plus (``encodings.store``): its nibble, 1..15."""


def _nibble(byte: Any, high: Any) -> Any:
    """The low (``high`` = 0) or high (1) nibble of a uint8 ``byte``, as int8."""
    return ((byte >> (high * 4).astype("uint8")) & tirx.const(15, "uint8")).astype("int8")


def unpack_int4(w: te.Tensor, lanes: int) -> te.Tensor:
    """A re-laid-out W4A8 weight ``[O/b, K/d, b * d / 2]`` (each block's codes packed ``pack_halves``) as its
    nibbles ``[O/b, K/d, b, d]`` int8, the codes plus ``INT4_OFFSET``: the operand of the int7 dot products, whose
    sums ``dense_w4a8`` corrects by ``input_offsets``. ``DotProductMatmul`` computes it per register tile, where
    each byte vector becomes two nibble vectors by one shift and two masks."""
    blocks, steps, half = (int(d) for d in w.shape)
    dot = 2 * half // lanes

    def nibble(b: Any, q: Any, i: Any, d: Any) -> Any:
        f = i * dot + d
        return _nibble(w[b, q, f % half], f // half)

    return te.compute((blocks, steps, lanes, dot), nibble, name=UNPACK_BLOCK)


def input_offsets(xq: te.Tensor) -> te.Tensor:
    """``-INT4_OFFSET * sum_k xq[..., k]`` per input row: ``dense_w4a8``'s correction for summing nibbles, the
    codes plus ``INT4_OFFSET``. A function of its own, so the GEMM reads it as an argument (TVM folds an epilogue
    into a tile's write-back only if it reads no other intermediate of the function)."""
    *lead, k = xq.shape
    s = te.reduce_axis((0, k), name="s")
    return te.compute(lead, lambda *i: te.sum(xq[(*i, s)].astype("int32") * -INT4_OFFSET, axis=s),
                      name=INPUT_OFFSET_BLOCK)


def _integer_sums(lead: list, columns: Any, operand: Any, code: Any, rows: Any, name: str) -> te.Tensor:
    """``acc[..., o] = sum_r operand(lead, o, r) * code(o, r)`` over ``columns`` in int32."""
    r = te.reduce_axis((0, columns), name="k")
    return te.compute((*lead, rows), lambda *i: te.sum(
        operand(i[:-1], i[-1], r).astype("int32") * code(i[-1], r).astype("int32"), axis=r), name=name)


def _inputs(xq: te.Tensor) -> Any:
    """The ``operand`` of ``_integer_sums`` for a dense weight: input ``r`` of the row, whatever the output."""
    return lambda lead, o, r: xq[(*lead, r)]


def dense_w8a8(xq: te.Tensor, w: te.Tensor, scales: te.Tensor, colsums: te.Tensor, bias: te.Tensor | None = None,
               *, scale: float, zero: int, lanes: int | None, bits: int = 8) -> te.Tensor:
    """``xq`` uint8 codes ``[..., K]`` (stored as int16 for ``d`` = 2), ``w`` int8 ``[O, K]`` or packed
    ``[O/b, K/d, b, d]`` (int7 codes for ``bits`` 7; a packed int4 weight takes ``dense_w4a8``), or for ``bits`` 4
    uint8 nibbles ``[O, K/2]``; ``scales``/``colsums`` ``[O, 1]`` or packed ``[O/b, 1, b]``."""
    if lanes:
        rows, dot = w.shape[0] * lanes, int(w.shape[3])
        code = lambda o, r: w[o // lanes, r // dot, o % lanes, r % dot]  # noqa: E731
    elif bits == 4:
        rows = w.shape[0]
        code = lambda o, r: _nibble(w[o, r // 2], r % 2) - tirx.const(INT4_OFFSET, "int8")  # noqa: E731
    else:
        rows = w.shape[0]
        code = lambda o, r: w[o, r]  # noqa: E731
    acc = _integer_sums(xq.shape[:-1], xq.shape[-1], _inputs(xq), code, rows,
                        {8: W8A8_BLOCK, 7: W7A8_BLOCK, 4: W4A8_BLOCK}[bits])
    return _dequantized(acc, -1, row_reader(colsums, lanes), row_reader(scales, lanes), bias, scale=scale, zero=zero)


def dense_w4a8(xq: te.Tensor, offsets: te.Tensor, w: te.Tensor, scales: te.Tensor, colsums: te.Tensor,
               bias: te.Tensor | None = None, *, scale: float, zero: int, lanes: int) -> te.Tensor:
    """W4A8 on a weight packed ``[O/b, K/d, b * d / 2]`` (``unpack_int4``): ``sum_k xq * code`` as
    ``offsets + sum_k xq * nibble`` (``input_offsets``), so the unpacked nibbles need no subtraction (two vector
    operations fewer per 64 codes); then dequantized like ``dense_w8a8``."""
    nibbles = unpack_int4(w, lanes)
    dot = int(nibbles.shape[3])
    sums = _integer_sums(xq.shape[:-1], xq.shape[-1], _inputs(xq),
                         lambda o, r: nibbles[o // lanes, r // dot, o % lanes, r % dot], nibbles.shape[0] * lanes,
                         W4A8_BLOCK)
    acc = te.compute(sums.shape, lambda *i: sums[i] + offsets[i[:-1]], name="add_offsets")
    return _dequantized(acc, -1, row_reader(colsums, lanes), row_reader(scales, lanes), bias, scale=scale, zero=zero)


def picked_codes(w: te.Tensor) -> te.Tensor:
    """The int4 codes of a re-laid-out N:M W4A8 weight (``encodings.codes_hold_picks``: the code plus 8 in each
    byte's high nibble), as int8. ``DotProductMatmul`` computes it per register tile and reduction step: one shift,
    one mask and one subtraction per 32 codes."""
    return te.compute(w.shape, lambda *i: (w[i] >> tirx.const(CODE_SHIFT, "uint8")).astype("int8")
                      - tirx.const(INT4_OFFSET, "int8"), name=UNPACK_BLOCK)


def pick_inputs(xq: te.Tensor, picks: te.Tensor, nm: tuple[int, int]) -> te.Tensor:
    """The input each kept weight of a re-laid-out N:M weight multiplies: ``[..., O/b, J/d, b, d]`` uint8, where
    ``picks`` (``encodings.window_picks``, laid out like the codes) holds each kept weight's input within its
    window of ``PICK_WINDOW``. ``DotProductMatmul`` computes it per register tile and reduction step, where every
    row's window is one 16-byte load and its picks for 8 outputs x 4 kept weights one ``vpshufb``
    (``window_gather``); ``& PICK_MASK`` tells that pass the pick stays within the window (and drops an int4
    weight's code from its byte, ``encodings.codes_hold_picks``)."""
    *lead, _ = xq.shape
    blocks, steps, b, d = (int(s) for s in picks.shape)
    per_window = PICK_WINDOW * nm[0] // nm[1] // d  # reduction steps per window
    mask = tirx.const(PICK_MASK, "uint8")

    def pick(*i: Any) -> Any:
        window = i[-3] // per_window
        return xq[(*i[:-4], window * PICK_WINDOW + (picks[i[-4:]] & mask).astype("int32"))]

    return te.compute((*lead, blocks, steps, b, d), pick, name=PICK_BLOCK)


def dense_nm_w8a8(xq: te.Tensor, w: te.Tensor, picks: te.Tensor, scales: te.Tensor, colsums: te.Tensor,
                  bias: te.Tensor | None = None, *, scale: float, zero: int, nm: tuple[int, int],
                  bits: int) -> te.Tensor:
    """W8A8 on a re-laid-out N:M weight: ``acc[..., o] = sum_j picked[..., o, j] * code[o, j]`` over the ``J`` kept
    codes only (half the multiplies for 2:4), then dequantized like ``dense_w8a8`` (``colsums`` sum the kept codes).
    ``w`` and ``picks`` are ``[O/b, J/d, b, d]`` (``pick_inputs``); for ``bits`` 4 both are the weight's bytes,
    codes and picks in one (``picked_codes``). A plain N:M W8A8 weight is decoded to dense codes for
    ``dense_w8a8`` instead (``lower.py``)."""
    *lead, _ = xq.shape
    blocks, steps, b, d = (int(s) for s in w.shape)
    picked = pick_inputs(xq, picks, nm)
    codes = picked_codes(w) if bits == 4 else w
    acc = _integer_sums(lead, steps * d, lambda lead, o, r: picked[(*lead, o // b, r // d, o % b, r % d)],
                        lambda o, r: codes[o // b, r // d, o % b, r % d], blocks * b, NM_BLOCKS[bits])
    return _dequantized(acc, -1, row_reader(colsums, b), row_reader(scales, b), bias, scale=scale, zero=zero)


def _dequantized(acc: te.Tensor, channel_axis: int, colsum: Any, weight_scale: Any, bias: te.Tensor | None, *,
                 scale: float, zero: int) -> te.Tensor:
    """The int32 dot products ``acc`` as float32: ``float32(acc - zero * colsum[o]) * (scale * weight_scale[o])``
    (+ ``bias[o]``), ``o`` the index along ``channel_axis``; ``colsum`` / ``weight_scale`` read ``(o, 0)``."""
    s = tirx.const(scale, "float32")

    def dequantize(*i: Any) -> Any:
        o = i[channel_axis]
        y = (acc[i] - zero * colsum(o, 0)).astype("float32") * (s * weight_scale(o, 0))
        return y if bias is None else y + bias[o]

    return te.compute(acc.shape, dequantize, name="dequantize")


def row_blocks(out_w: int) -> int:
    """Blocks of ``PATCH_LANES`` output positions per output row, or 0: rows at least half a block wide are padded
    to whole blocks, so a block's positions are consecutive pixels of one row (a 56-wide row wastes 8 of 64 lanes);
    narrower rows (7, the digits CNN's 4) would waste most lanes, so their positions are blocked flat, several rows
    per block, at the cost of gathered patches."""
    return -(-out_w // PATCH_LANES) if 2 * out_w > PATCH_LANES else 0


def _row_stride(out_w: int) -> int:
    """Positions from one output row to the next in ``P'``: whole blocks (``row_blocks``), or the row itself."""
    return row_blocks(out_w) * PATCH_LANES or out_w


def padded_positions(out_hw: tuple[int, int]) -> int:
    """``P'``: the output positions ``conv_w8a8`` computes (``row_blocks``), a multiple of ``PATCH_LANES``."""
    oh, ow = out_hw
    return -(-oh * _row_stride(ow) // PATCH_LANES) * PATCH_LANES


def _position(p: Any, out_hw: tuple[int, int]) -> tuple[Any, Any, Any]:
    """Output row, column and whether position ``p`` of ``P'`` is a real one."""
    oh, ow = out_hw
    stride = _row_stride(ow)
    # blocked rows are all real, only past a row's end is padding; flat ones, only past the last row
    return p // stride, p % stride, p % stride < ow if row_blocks(ow) else p < oh * ow


def conv_patches(xq: te.Tensor, kernel: tuple[int, int], strides: list[int], pads: list[int],
                 dilations: list[int], out_hw: tuple[int, int], *, zero: int, k_minor: bool = False) -> te.Tensor:
    """A W8A8 2-D convolution's quantized input ``[N, C, H, W]`` as patches for the integer GEMM:
    ``[N, P'/16, K/4, 4, 16]`` (``padded_positions``): per block of 16 output positions, 4 reduction steps
    (``K = C * kh * kw``, the flattened weight's order) x 16 positions, so that 16 bytes are pixels of one input row
    (a vector load at stride 1) when the block holds one output row. ``k_minor``: ``[N, P'/16, K/4, 16, 4]``, each
    position's 4 reduction steps together, the operand ``vpmaddubsw`` (and ``vpdpbusd``) takes as it is (W7A8).
    Padding is ``zero``: ``xq - zero = 0``, the same as padding ``x`` with 0; so are the padded positions."""
    n, c, h, w = xq.shape
    kh, kw = kernel
    pad = tirx.const(zero, "uint8")

    def patch(b: Any, pb: Any, kq: Any, kl: Any, pl: Any) -> Any:
        if k_minor:
            kl, pl = pl, kl
        r = kq * 4 + kl
        row, col, real = _position(pb * PATCH_LANES + pl, out_hw)
        ci, kk = r // (kh * kw), r % (kh * kw)
        ih = row * strides[0] - pads[0] + kk // kw * dilations[0]
        iw = col * strides[1] - pads[1] + kk % kw * dilations[1]
        inside = tirx.all(real, ih >= 0, ih < h, iw >= 0, iw < w)
        return tirx.if_then_else(inside, xq[b, ci, tirx.max(tirx.min(ih, h - 1), 0), tirx.max(tirx.min(iw, w - 1), 0)],
                                 pad)

    block = (PATCH_LANES, 4) if k_minor else (4, PATCH_LANES)
    return te.compute((n, padded_positions(out_hw) // PATCH_LANES, c * kh * kw // 4, *block), patch,
                      name=PATCHES_BLOCK)


def conv_w8a8(xp: te.Tensor, w: te.Tensor, scales: te.Tensor, colsums: te.Tensor, bias: te.Tensor | None = None,
              *, scale: float, zero: int, narrow: bool = False) -> te.Tensor:
    """The W8A8 convolution as ``acc[n, o, p] = sum_k code[o, k] * patch[n, p, k]``, dequantized like
    ``dense_w8a8``: output ``[N, O, P']``, channels-first already (``unpad`` drops the padded positions).
    Here the weight row is the broadcast operand and the patches the packed one, so the output needs no
    transpose. ``narrow``: int7 codes, patches ``k_minor``."""
    n, blocks, kq, _, _ = xp.shape
    r = te.reduce_axis((0, kq * 4), name="k")

    def patch(b: Any, p: Any) -> Any:
        at = (p % PATCH_LANES, r % 4) if narrow else (r % 4, p % PATCH_LANES)
        return xp[b, p // PATCH_LANES, r // 4, *at]

    acc = te.compute((n, w.shape[0], blocks * PATCH_LANES), lambda b, o, p: te.sum(
        w[o, r].astype("int32") * patch(b, p).astype("int32"), axis=r),
        name=W7A8_CONV_BLOCK if narrow else W8A8_CONV_BLOCK)
    return _dequantized(acc, 1, row_reader(colsums, None), row_reader(scales, None), bias, scale=scale, zero=zero)


def unpad(y: te.Tensor, out_hw: tuple[int, int]) -> te.Tensor:
    """``conv_w8a8``'s ``[N, O, P']`` as the convolution's ``[N, O, OH, OW]``."""
    n, o, _ = y.shape
    oh, ow = out_hw
    stride = _row_stride(ow)
    return te.compute((n, o, oh, ow), lambda b, c, i, j: y[b, c, i * stride + j], name="unpad")


VNNI_INTRIN = "sparsecc_dot_16x4_vnni"
VNNI_INTRIN_PATCHES = "sparsecc_dot_16x4_vnni_patches"
VNNI_INTRIN_PATCHES_K_MINOR = "sparsecc_dot_16x4_vnni_patches_k_minor"
"""``vpdpbusd`` as tensor intrinsics: 16 int32 accumulators += 4 broadcast bytes . 16 x 4 packed bytes. A linear
broadcasts its uint8 input against its int8 weight packed ``[16, 4]``; a convolution broadcasts its int8 weight
against uint8 patches stored ``[4, 16]`` (``conv_patches``), turned ``[16, 4]`` by one byte shuffle first, or
stored ``[16, 4]`` already (``k_minor``, W7A8)."""
AVX2_INTRIN = "sparsecc_dot_8x2_avx2"
"""``vpmaddwd`` as a tensor intrinsic: 8 int32 accumulators += 2 broadcast input codes (stored as int16) . 8 x 2
packed int8 codes widened to int16 (exact: each pair sums to at most 2 x 255 x 128)."""
AVX2_INTRIN_INT7 = "sparsecc_dot_8x4_avx2_int7"
AVX2_INTRIN_INT7_PATCHES = "sparsecc_dot_8x4_avx2_int7_patches"
AVX2_INTRIN_INT7_PICKED = "sparsecc_dot_8x4_avx2_int7_picked"
"""``vpmaddubsw`` then ``vpmaddwd`` by ones: 8 int32 accumulators += 4 broadcast bytes . 8 x 4 packed bytes, one
side uint8 input codes and the other int7 weight codes (exact: a pair sums to at most 2 x 255 x 63 < 2^15). A
linear broadcasts the input against its weight; a convolution its weight against ``k_minor`` patches; an N:M
linear multiplies each lane's own 4 picked inputs (``pick_inputs``) by its 4 kept codes."""


def dot_product_width(target: Target, bits: int = 8) -> int:
    """Inputs per output one integer dot-product step of ``target`` sums for ``bits``-bit weight codes, the ``d`` of
    W8A8's weight layout ``OI16o{d}i``: 2 for int8 codes on AVX2 without VNNI (``vpmaddwd``), else 4 (``vpdpbusd``;
    ``vpmaddubsw`` for int7 codes on AVX2; the default loops read any)."""
    from tvm.target.codegen import target_has_features

    if (bits == 8 and target.kind.name == "llvm" and not target_has_features("avx512vnni", target)
            and target_has_features("avx2", target)):
        return 2
    return 4


def picks_inputs(target: Target, bits: int) -> bool:
    """Whether ``target`` has the N:M W8A8 kernel that picks each lane's inputs (``pick_inputs``): int7 or int4
    codes on x86 with AVX2 (``vpshufb``, ``vpmaddubsw``). Elsewhere an N:M W8A8 weight stays plain and runs TVM's
    default loops (correct, not fast)."""
    from tvm.target.codegen import target_has_features

    return bits in PICKING_BITS and target.kind.name == "llvm" and target_has_features("avx2", target)


def integer_scheme(target: Target) -> str:
    """The integer ``--compress`` scheme that runs fastest on ``target``: ``w7a8`` on AVX2 without VNNI (its int7
    weights take ``vpmaddubsw``: 32 multiply-adds per instruction pair, ``vpmaddwd`` 16), else ``w8a8``."""
    return "w7a8" if dot_product_width(target, 8) == 2 else "w8a8"


def _dot_desc(lanes: int, width: int, broadcast: str, packed: str, k_major: bool = False,
              paired: bool = False) -> "tirx.PrimFunc":
    """What an integer dot-product intrinsic computes: ``c[lanes] += a[width] . b``, int32 sums of ``a`` (dtype
    ``broadcast``, the same ``width`` inputs for every lane; ``paired``: ``a[lanes, width]``, its own per lane)
    times ``b`` (dtype ``packed``), ``b`` stored ``[width, lanes]`` if ``k_major`` else ``[lanes, width]``."""
    from tvm.script import tirx as T

    shape = (width, lanes) if k_major else (lanes, width)
    a_shape = (lanes, width) if paired else (width,)

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer(a_shape, broadcast, offset_factor=1), b: T.Buffer(shape, packed, offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:lanes, 0:width] if paired else a[0:width], b[0:shape[0], 0:shape[1]])
            T.writes(c[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, width):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        c[vi] = c[vi] + T.cast(a[vi, vk] if paired else a[vk], "int32") * T.cast(
                            b[vk, vi] if k_major else b[vi, vk], "int32")

    return desc


def _register_vnni(name: str, broadcast: str, packed: str, k_major: bool) -> None:
    """Registers ``name``: ``c[16] += a[4] . b``, ``a`` of dtype ``broadcast``, ``b`` of ``packed`` (one of them
    uint8, the other int8), ``b`` ``[4, 16]`` if ``k_major`` else ``[16, 4]``; one ``vpdpbusd`` (which takes its
    uint8 operand first), after a ``vpermb`` for ``k_major``.

    TVM 0.27 ships one (``dot_16x4_vnni``) but declares the operands as 16 x i32, which its bundled LLVM rejects
    (the intrinsic takes 64 x i8 since LLVM 18); importing it also costs ~40 s (the package imports every target's
    intrinsics). These pass bytes."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    shape = (4, 16) if k_major else (16, 4)

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((4,), broadcast, offset_factor=1), b: T.Buffer(shape, packed, offset_factor=1),
             c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:shape[0], 0:shape[1]])
            T.writes(c[0:16])
            a_x64 = T.meta_var(T.reinterpret(T.broadcast(T.reinterpret(a.vload([0], broadcast + "x4"), dtype="int32"),
                                                         16), dtype=broadcast + "x64"))
            stored = T.meta_var(b.vload([0, 0], dtype=packed + "x64"))
            q = T.meta_var(T.ramp(T.int8(0), T.int8(1), 64))  # byte 4 i + k of the result: byte 16 k + i of the block
            b_x64 = T.meta_var(T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.permvar.qi.512"), stored,
                q % T.int8(4) * T.int8(16) + q // T.int8(4), dtype=packed + "x64") if k_major else stored)
            c[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), c.vload([0], "int32x16"),
                a_x64 if broadcast == "uint8" else b_x64, b_x64 if broadcast == "uint8" else a_x64, dtype="int32x16")

    TensorIntrin.register(name, _dot_desc(16, 4, broadcast, packed, k_major), impl, override=True)


def _register_pmaddwd(name: str) -> None:
    """Registers ``name``: ``c[8] += a[2] . b[8, 2]``, ``a`` int16 (broadcast as one 32-bit word), ``b`` int8
    (sign-extended to int16), as one ``vpmaddwd``. Widening a uint8 pair in the loop instead took three shuffles
    per row and step, which made the kernel twice as slow as the float32 one."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((2,), "int16", offset_factor=1), b: T.Buffer((8, 2), "int8", offset_factor=1),
             c: T.Buffer((8,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:8], a[0:2], b[0:8, 0:2])
            T.writes(c[0:8])
            pair = T.meta_var(T.reinterpret(a.vload([0], "int16x2"), dtype="int32"))
            a_x16 = T.meta_var(T.reinterpret(T.broadcast(pair, 8), dtype="int16x16"))
            b_x16 = T.meta_var(T.cast(b.vload([0, 0], "int8x16"), "int16x16"))
            c[T.ramp(T.int32(0), 1, 8)] = c.vload([0], "int32x8") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), a_x16, b_x16, dtype="int32x8")

    TensorIntrin.register(name, _dot_desc(8, 2, "int16", "int8"), impl, override=True)


def _register_maddubs(name: str, broadcast: str, packed: str, paired: bool = False) -> None:
    """Registers ``name``: ``c[8] += a[4] . b[8, 4]``, ``a`` of dtype ``broadcast`` (as one 32-bit word), ``b`` of
    ``packed`` (one uint8, the other int7 codes in int8), as ``vpmaddubsw`` (uint8 x int8 products summed in pairs
    to int16; it takes its uint8 operand first) and ``vpmaddwd`` by ones (the pairs summed to int32). Only for int7
    codes: int8 ones can overflow a pair's int16 sum, which saturates. ``paired``: ``a[8, 4]``, 4 inputs of each
    lane's own (an N:M weight's picked inputs), loaded as they are."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    a_shape = (8, 4) if paired else (4,)

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer(a_shape, broadcast, offset_factor=1), b: T.Buffer((8, 4), packed, offset_factor=1),
             c: T.Buffer((8,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:8], a[0:8, 0:4] if paired else a[0:4], b[0:8, 0:4])
            T.writes(c[0:8])
            a_x32 = T.meta_var(a.vload([0, 0], broadcast + "x32") if paired else T.reinterpret(
                T.broadcast(T.reinterpret(a.vload([0], broadcast + "x4"), dtype="int32"), 8), dtype=broadcast + "x32"))
            b_x32 = T.meta_var(b.vload([0, 0], packed + "x32"))
            pairs = T.meta_var(T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                                                       *((a_x32, b_x32) if broadcast == "uint8" else (b_x32, a_x32)),
                                                       dtype="int16x16"))
            c[T.ramp(T.int32(0), 1, 8)] = c.vload([0], "int32x8") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), pairs, T.broadcast(T.int16(1), 16),
                dtype="int32x8")

    TensorIntrin.register(name, _dot_desc(8, 4, broadcast, packed, paired=paired), impl, override=True)


_INTRINSICS: dict[str, Callable[[], None]] = {
    VNNI_INTRIN: partial(_register_vnni, VNNI_INTRIN, "uint8", "int8", k_major=False),
    VNNI_INTRIN_PATCHES: partial(_register_vnni, VNNI_INTRIN_PATCHES, "int8", "uint8", k_major=True),
    VNNI_INTRIN_PATCHES_K_MINOR: partial(_register_vnni, VNNI_INTRIN_PATCHES_K_MINOR, "int8", "uint8", k_major=False),
    AVX2_INTRIN: partial(_register_pmaddwd, AVX2_INTRIN),
    AVX2_INTRIN_INT7: partial(_register_maddubs, AVX2_INTRIN_INT7, "uint8", "int8"),
    AVX2_INTRIN_INT7_PATCHES: partial(_register_maddubs, AVX2_INTRIN_INT7_PATCHES, "int8", "uint8"),
    AVX2_INTRIN_INT7_PICKED: partial(_register_maddubs, AVX2_INTRIN_INT7_PICKED, "uint8", "int8", paired=True),
}
_registered: set[str] = set()


def _registered_intrinsic(name: str) -> str:
    """``name``, registered with TVM on its first use: parsing the TVMScript of all of them took ~7 s of every process
    that imported the kernels (most never tensorize one)."""
    if name not in _registered:
        _INTRINSICS[name]()
        _registered.add(name)
    return name


class DotProductMatmul(dl.ScheduleRule):
    """Schedules a PrimFunc holding a ``W8A8_BLOCK`` / ``W7A8_BLOCK`` on a packed weight, or a ``W8A8_CONV_BLOCK``
    / ``W7A8_CONV_BLOCK``, for x86 with AVX-512 VNNI (``vpdpbusd``); for AVX2 without it, a ``W8A8_BLOCK`` on an
    ``OI16o2i`` weight (``vpmaddwd``) and the W7A8 blocks (``vpmaddubsw``); with AVX2, an N:M W7A8 block on its
    picked inputs (``vpshufb``, ``vpmaddubsw``)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        from tvm.target.codegen import target_has_features

        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        picking = [NM_BLOCKS[bits] for bits in PICKING_BITS]
        block = find_block(sch, W8A8_BLOCK, W7A8_BLOCK, W4A8_BLOCK, *picking, W8A8_CONV_BLOCK, W7A8_CONV_BLOCK)
        if block is None:
            return None
        name = sch.get(block).name_hint
        conv = name in (W8A8_CONV_BLOCK, W7A8_CONV_BLOCK)
        picked = name in picking
        narrow = name in (W7A8_BLOCK, W4A8_BLOCK, *picking, W7A8_CONV_BLOCK)
        packed = sch.get(block).reads[1].source.shape  # the weight (linear) or the patches (conv)
        if len(packed) != (5 if conv else 4):
            return None
        dot = 4 if conv else int(packed[3])
        if picked:  # each lane its own inputs: AVX2's vpshufb picks them, 16 bytes at a time (also with AVX-512)
            if dot != 4 or not picks_inputs(target, PICKING_BITS[picking.index(name)]):
                return None
            intrin, vector = AVX2_INTRIN_INT7_PICKED, 8
        elif target_has_features("avx512vnni", target) and dot == 4:
            intrin = (VNNI_INTRIN_PATCHES_K_MINOR if narrow else VNNI_INTRIN_PATCHES) if conv else VNNI_INTRIN
            vector = 16
        elif not conv and dot == 2 and target_has_features("avx2", target):
            intrin, vector = AVX2_INTRIN, 8
        elif narrow and dot == 4 and target_has_features("avx2", target):
            intrin, vector = AVX2_INTRIN_INT7_PATCHES if conv else AVX2_INTRIN_INT7, 8
        else:
            return None
        # the input's quantization is computed once, before the tiles (a quantization that is this function's
        # epilogue, feeding the next W8A8 layer, folds into the write-back like any other)
        quantize = find_block(sch, QUANTIZE_BLOCK)
        # per register tile and reduction step: the unpacked codes and/or the rows' picked inputs
        per_step = [b for b in (find_block(sch, UNPACK_BLOCK), find_block(sch, PICK_BLOCK)) if b is not None]
        reader = per_step[-1] if picked else block  # the block that reads the quantized input
        if quantize is not None and not any(sch.get(p).name_hint == QUANTIZE_BLOCK
                                            for p in sch.get_producers(reader)):
            quantize = None
        out = tile_write_back(sch, block, keep=(QUANTIZE_BLOCK,) * (quantize is not None) + (UNPACK_BLOCK, PICK_BLOCK))
        if out is None:
            return None
        if quantize is not None:
            loops = sch.get_loops(quantize)
            fused = sch.fuse(*loops)
            outer, inner = sch.split(fused, [None, 16])
            sch.parallel(outer)
            sch.vectorize(inner)
        *outer, m, n = sch.get_loops(out)
        if picked:  # a row's picked inputs serve one vector of outputs: 4 x 8 ran 1.4x the 4 x 16 tile
            rows = tile_rows(sch.get(m).extent, exact=True, budget=PICKED_ROWS)
            column_blocks = int(sch.get(n).extent) // vector
            width = vector * max(t for t in range(PICKED_GEMV_TILES if rows == 1 else 1, 0, -1)
                                 if column_blocks % t == 0)
        else:
            rows, blocks = _tile(sch.get(m).extent, int(sch.get(n).extent) // 16, accumulator_budget(target, 16))
            width = blocks * 16
        mo, mi = sch.split(m, [None, rows])
        no, ni = sch.split(n, [None, width])
        sch.reorder(*outer, mo, no, mi, ni)
        sch.compute_at(block, no, preserve_unit_loops=True)
        *_, row, col, k = sch.get_loops(block)
        blk, lane = sch.split(col, [None, vector])
        ko, ki = sch.split(k, [None, dot])
        sch.reorder(ko, row, blk, lane, ki)
        for unpack in per_step:  # this step's codes of the tile, or its rows' picked inputs, once per tile
            sch.compute_at(unpack, ko)
            loops = sch.get_loops(unpack)
            below = [sch.get(lp).same_as(sch.get(ko)) for lp in loops].index(True) + 1
            *blocks, output, step = loops[below:]  # rows and blocks (unit loops are dropped), then one block
            if picked:  # 8 outputs x 4: one vpshufb's picks, or one vector of int4 codes
                sch.vectorize(sch.fuse(output, step))
            else:
                half, byte = sch.split(sch.fuse(output, step), [2, None])
                sch.vectorize(byte)
                sch.unroll(half)
            for b in blocks:
                sch.unroll(b)
        sch.unroll(blk)
        sch.unroll(row)
        sch.vectorize(sch.split(ni, [None, 16])[1])
        sch.parallel(sch.fuse(*outer, mo, no))
        init = sch.decompose_reduction(block, ko)
        sch.vectorize(sch.get_loops(init)[-1])
        sch.tensorize(lane, _registered_intrinsic(intrin))
        return sch


class RowOffsets(dl.ScheduleRule):
    """Schedules ``input_offsets``: its rows in parallel (LLVM vectorises each row's integer sum itself)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        block = find_block(sch, INPUT_OFFSET_BLOCK)
        if block is None or len(sch.get_loops(block)) < 2:
            return None
        *rows, _ = sch.get_loops(block)
        sch.parallel(sch.fuse(*rows))
        return sch


class PositionMajorPatches(dl.ScheduleRule):
    """Schedules ``conv_patches(..., k_minor=True)`` (W7A8): the patch blocks in parallel and, within one, each of
    its 4 reduction steps as a vector over the 16 positions, whose pixels are neighbours in the input (stored 4
    bytes apart). The default elementwise schedule vectorised the 4 steps of one position instead, a gather from 4
    channels or taps with the index arithmetic per byte: 5.6 ms for a 64-channel 56 x 56 3 x 3 convolution's
    patches, 4.8x their position-minor form, and 5x the integer GEMM they feed."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        block = find_block(sch, PATCHES_BLOCK)
        if block is None or [int(d) for d in sch.get(block).writes[0].source.shape[-2:]] != [PATCH_LANES, 4]:
            return None
        *outer, position, step = sch.get_loops(block)
        sch.reorder(step, position)
        sch.parallel(sch.fuse(*outer))
        sch.unroll(step)
        sch.vectorize(position)
        return sch


def _tile(rows_extent: tirx.PrimExpr, column_blocks: int, budget: int) -> tuple[int, int]:
    """(rows, blocks of 16 outputs) of the register tile: ``BLOCKS_GEMV`` blocks for one row, else ``BLOCKS``
    blocks when at least 4 rows still fit the ``budget`` of 16-lane accumulators beside them, fewer otherwise
    (AVX2: 4 rows x 1 block rather than 2 x 2, so each widened weight vector serves 4 rows)."""
    want = BLOCKS_GEMV if isinstance(rows_extent, tirx.IntImm) and int(rows_extent) == 1 else BLOCKS
    for blocks in range(want, 1, -1):
        if column_blocks % blocks == 0:
            rows = tile_rows(rows_extent, exact=True, budget=max(1, budget // blocks))
            if rows >= 4 or rows == 1:  # one row: GEMV, or no row count divides the extent
                return rows, blocks
    return tile_rows(rows_extent, exact=True, budget=budget), 1
