"""Direct 2-D convolution on CPU (NCHW, float32), vectorised along the output width.

A register tile holds ``rows`` output channels x ``lanes`` consecutive output pixels of one output row. Each
step of the reduction (input channel, kernel row, kernel column) loads one vector of input pixels and does one
FMA per output channel with that channel's weight broadcast from memory, so the weights need no re-layout and
the activations stay NCHW (no layout conversions around each conv). The zero-padded input is materialised once
per call by a parallel copy, so the inner loop has no bounds checks; for a strided convolution that copy also
splits it by stride phase (``_phases``), so the vector's input pixels are contiguous there too.
Grouped and depthwise convolutions use the same tile: each output channel reads its group's input channels.
A 1 x 1 convolution that reads pixel for pixel (stride 1; the lowering takes a strided one's pixels first) runs
its H x W pixels as one row, so the vectors need not divide a row (28 pixels in 8-lane AVX2 vectors).
"""
from __future__ import annotations

from typing import Sequence

from tvm import s_tir, te, tirx, topi
from tvm.s_tir import dlight as dl
from tvm.target import Target

from .tiling import accumulator_budget, find_block, tile_write_back, vector_registers

CONV_BLOCK = "sparsecc_conv2d"
PACKED_CONV_BLOCK = "sparsecc_conv2d_packed"
PAD_BLOCK = "sparsecc_conv2d_pad"
ROWS = (6, 8, 4, 3, 2, 1)
"""Output channels per register tile, best first; the first that divides the channel count and fits the target's
registers (``tiling.accumulator_budget``) is taken (no tail)."""
PACKED_BLOCKS = 2
"""``conv2d_packed``'s tile: one output row x up to this many blocks of 16 channels (14 accumulators for a
7-pixel row), as many as divide the channel blocks and fit ``tiling.accumulator_budget`` (registers, and TVM's
stack-allocation limit)."""


def conv2d_direct(x: te.Tensor, w: te.Tensor, strides: Sequence[int], pads: Sequence[int],
                  dilations: Sequence[int], groups: int) -> te.Tensor:
    """``y[n, o, h, v] = sum_{c, i, j} xpad[n, g(o)*cg + c, h*sh + i*dh, v*sw + j*dw] * w[o, c, i, j]``."""
    n, _, height, width = x.shape
    out_ch, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    og = out_ch // groups
    oh = (height + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (width + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
    c = te.reduce_axis((0, cg), name="c")
    i = te.reduce_axis((0, kh), name="i")
    j = te.reduce_axis((0, kw), name="j")
    if sh == sw == 1:
        if any(pads):
            x = topi.nn.pad(x, [0, 0, pads[0], pads[1]], [0, 0, pads[2], pads[3]], name=PAD_BLOCK)
        read = lambda b, ch, row, col: x[b, ch, row, col]  # noqa: E731
    else:
        phases = _phases(x, pads, (sh, sw), (min(sh, dh * (kh - 1) + 1), min(sw, dw * (kw - 1) + 1)))
        read = lambda b, ch, row, col: phases[b, ch, row % sh, col % sw, row // sh, col // sw]  # noqa: E731
    return te.compute((n, out_ch, oh, ow), lambda b, o, h, v: te.sum(
        read(b, o // og * cg + c, h * sh + i * dh, v * sw + j * dw) * w[o, c, i, j], axis=[c, i, j]),
        name=CONV_BLOCK)


def conv2d_packed(x: te.Tensor, w: te.Tensor, strides: Sequence[int], pads: Sequence[int],
                  dilations: Sequence[int]) -> te.Tensor:
    """An ungrouped conv2d on a weight packed ``OIHW{b}o`` (``[O/b, C, kh, kw, b]``): ``y[n, o, h, v] = sum_{c, i,
    j} xpad[n, c, h*sh + i*dh, v*sw + j*dw] * w[o // b, c, i, j, o % b]``."""
    n, _, height, width = x.shape
    blocks, cin, kh, kw, b = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    oh = (height + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (width + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
    if any(pads):
        x = topi.nn.pad(x, [0, 0, pads[0], pads[1]], [0, 0, pads[2], pads[3]], name=PAD_BLOCK)
    c = te.reduce_axis((0, cin), name="c")
    i = te.reduce_axis((0, kh), name="i")
    j = te.reduce_axis((0, kw), name="j")
    return te.compute((n, blocks * b, oh, ow), lambda bt, o, h, v: te.sum(
        x[bt, c, h * sh + i * dh, v * sw + j * dw] * w[o // b, c, i, j, o % b], axis=[c, i, j]),
        name=PACKED_CONV_BLOCK)


def _phases(x: te.Tensor, pads: Sequence[int], strides: tuple[int, int], used: tuple[int, int]) -> te.Tensor:
    """The zero-padded input split by stride phase: ``phases[n, c, p, q, a, b] = xpad[n, c, a*sh + p, b*sw + q]``
    for the ``used`` phases ``p, q`` (a kernel that spans fewer pixels than the stride, a strided 1 x 1, reads only
    the first ones).

    A strided convolution reads every ``sw``-th padded pixel; from the phase split, the pixels one output row's
    vector needs are consecutive (phase ``q = col % sw``, then ``b = col // sw`` steps by one per output pixel).
    Read in place, they were a gather per vector: ResNet-50's stride-2 convolutions ran at half the speed of the
    others."""
    n, ch, height, width = x.shape
    sh, sw = strides
    rows = (height + pads[0] + pads[2] + sh - 1) // sh
    cols = (width + pads[1] + pads[3] + sw - 1) // sw

    def value(b, c, p, q, a, e):
        row, col = a * sh + p - pads[0], e * sw + q - pads[1]
        inside = tirx.all(row >= 0, row < height, col >= 0, col < width)
        return tirx.if_then_else(inside, x[b, c, tirx.max(tirx.min(row, height - 1), 0),
                                           tirx.max(tirx.min(col, width - 1), 0)], tirx.const(0, x.dtype))

    return te.compute((n, ch, *used, rows, cols), value, name=PAD_BLOCK)


def _lanes(width: int, vector: int) -> int:
    """Pixels per tile row: the whole row when it fits 16, else the largest divisor of the row in 8..16 that is a
    whole number of ``vector``-lane registers, else the largest divisor in 8..16 (no tail). With AVX2 a 56-pixel
    row takes 8 (one ymm) rather than 14 (a ymm, an xmm and two scalars per FMA step)."""
    if width <= 16:
        return width
    divisors = [d for d in range(16, 7, -1) if width % d == 0]
    return next((d for d in divisors if d % vector == 0), divisors[0] if divisors else 16)


def _conv_with_write_back(func: tirx.PrimFunc, target: Target, name: str) -> tuple | None:
    """For a CPU PrimFunc holding the conv block ``name``: (schedule, conv block, its write-back with the epilogue
    folded in, the pad block or None); None when the function is not one or its epilogue does not fold. The padded
    input stays materialised, so the inner loop has no bounds checks."""
    if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
        return None
    sch = s_tir.Schedule(func)
    conv = find_block(sch, name)
    if conv is None:
        return None
    out = tile_write_back(sch, conv, keep=(PAD_BLOCK,))
    if out is None:
        return None
    return sch, conv, out, find_block(sch, PAD_BLOCK)


def _pixel_for_pixel(conv: s_tir.SBlock) -> bool:
    """Whether the unpadded direct conv block ``conv`` reads input pixel (h, v) for output pixel (h, v) alone: a 1 x 1
    kernel (``i``, ``j`` of extent 1) and the input as large as the output (stride 1)."""
    iters = conv.iter_vars
    x = conv.reads[0].source
    return (int(iters[5].dom.extent) == int(iters[6].dom.extent) == 1 and len(x.shape) == 4
            and [int(d) for d in x.shape[2:]] == [int(iters[2].dom.extent), int(iters[3].dom.extent)])


class DirectConv2D(dl.ScheduleRule):
    """Schedules a PrimFunc holding ``CONV_BLOCK`` (plus its pad and an elementwise epilogue)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        found = _conv_with_write_back(func, target, CONV_BLOCK)
        if found is None:
            return None
        sch, conv, out, pad = found
        pointwise = pad is None and _pixel_for_pixel(sch.get(conv))
        if pointwise:  # one row of H x W pixels: its vectors need not fit a row (28 x 28 with AVX2: 10 -> 61 GMAC/s)
            width = int(sch.get(conv).iter_vars[3].dom.extent)
            sch.transform_layout(conv, ("write", 0), lambda b, o, h, v: (b, o, h * width + v))  # the tile's scratch
            sch.transform_block_layout(out, lambda b, o, h, v: (b, o, h * width + v))
            sch.transform_block_layout(conv, lambda b, o, h, v, c, i, j: (b, o, h * width + v, c, i, j))
            b, o, pixels = sch.get_loops(out)
            h, v = sch.split(pixels, [1, None])
        else:
            b, o, h, v = sch.get_loops(out)
        channels = int(sch.get(o).extent)
        lanes = _lanes(int(sch.get(v).extent), vector_registers(target)[0])
        budget = accumulator_budget(target, lanes)
        # each row finds its own group's input: any count works
        rows = next(r for r in ROWS if channels % r == 0 and (r <= budget or r == 1))
        oo, oi = sch.split(o, [None, rows])
        vo, vi = sch.split(v, [None, lanes])
        sch.reorder(b, oo, h, vo, oi, vi)
        sch.compute_at(conv, vo, preserve_unit_loops=True)
        # one loop per block var (unit ones kept): b o h v c i j, or b o p c i j
        _, row, *_, lane = sch.get_loops(conv)[4:-3]
        reduce = sch.get_loops(conv)[-3:]
        sch.reorder(*reduce, row, lane)
        sch.vectorize(lane)
        sch.unroll(row)
        sch.vectorize(vi)
        sch.parallel(sch.fuse(b, oo, h))
        sch.decompose_reduction(conv, reduce[0])
        if pad is not None:
            loops = sch.get_loops(pad)
            sch.parallel(sch.fuse(*loops[:-1]))
        return sch


class PackedConv2D(dl.ScheduleRule):
    """Schedules a PrimFunc holding ``PACKED_CONV_BLOCK``: a register tile of one output row x ``PACKED_BLOCKS``
    blocks of 16 output channels; each reduction step loads one weight vector per block and broadcasts one input
    pixel per output pixel (so a stride costs nothing), like the dense GEMM tile of ``matmul.py``. The tile is
    written back to NCHW with the channels strided, once per tile."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        found = _conv_with_write_back(func, target, PACKED_CONV_BLOCK)
        if found is None:
            return None
        sch, conv, out, pad = found
        lanes = int(sch.get(conv).reads[-1].source.shape[-1])
        b, o, h, v = sch.get_loops(out)
        width, channel_blocks = int(sch.get(v).extent), int(sch.get(o).extent) // lanes
        budget = accumulator_budget(target, lanes)
        blocks = next(k for k in range(PACKED_BLOCKS, 0, -1)
                      if channel_blocks % k == 0 and (width * k <= budget or k == 1))
        oo, oi = sch.split(o, [None, blocks * lanes])
        sch.reorder(b, oo, h, v, oi)
        sch.compute_at(conv, h, preserve_unit_loops=True)
        _, col, _, pixel, *reduce = sch.get_loops(conv)[3:]  # tile: b o h | per block var: b o h v c i j
        block, lane = sch.split(col, [blocks, lanes])
        sch.reorder(*reduce, pixel, block, lane)
        sch.vectorize(lane)
        sch.unroll(block)
        sch.unroll(pixel)
        sch.vectorize(sch.split(oi, [blocks, lanes])[1])
        sch.parallel(sch.fuse(b, oo, h))
        init = sch.decompose_reduction(conv, reduce[0])
        sch.vectorize(sch.get_loops(init)[-1])
        if pad is not None:
            loops = sch.get_loops(pad)
            sch.parallel(sch.fuse(*loops[:-1]))
        return sch
