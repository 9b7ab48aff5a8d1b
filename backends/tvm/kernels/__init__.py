"""Hand-scheduled kernel templates, chosen by (op, weight encoding/layout, target).

Each template is a TE compute (what the kernel computes, emitted by the lowering in ``lower.py``) plus a dlight
``ScheduleRule`` (how it runs, applied in the pipeline's ``schedule`` stage). A rule recognises its kernel by the
name of the compute block, so a fused PrimFunc (kernel + elementwise epilogue) is still found and scheduled.

    encoded.py      linear on a compressed weight (int8/int4, N:M, both) read as stored; decode for the rest
    w8a8.py         linear / conv2d with a statically quantized uint8 input and int8 weights (int7, int4 too):
                    VNNI / AVX2 dot products; N:M int7 linears on their kept codes, inputs picked by vpshufb
    matmul.py       linear on a packed weight (layout OI16o) and batched matmul of activations: register-tiled
                    GEMM / streaming GEMV with the elementwise epilogue fused
    conv.py         direct NCHW conv2d (grouped/depthwise too), vectorised along the output width; on a weight
                    packed OIHW16o (narrow outputs), vectorised along the output channels
    elementwise.py  injective PrimFuncs: one flat parallel + vectorised loop
    vecmath.py      float32 exp / erf / softmax / layer norm as vectorisable arithmetic (no scalar libm calls)
    reduction.py    row reductions with injective neighbours (softmax, layer norm): rows in parallel, partial
                    sums/maxima vectorised (``dlight.cpu.Reduction`` plus vector partials); window reductions
                    (pooling): the output row vectorised
"""
from .conv import DirectConv2D, PackedConv2D, conv2d_direct, conv2d_packed
from .encoded import WeightFormat, decode_packed, decode_weight, dense_encoded
from .elementwise import Injective
from . import vecmath
from .reduction import RowReduction, WindowReduction
from .matmul import LANES, RegisterTiledMatmul, batch_matmul, dense_packed
from .w8a8 import (DotProductMatmul, PositionMajorPatches, RowOffsets, conv_patches, conv_w8a8, dense_nm_w8a8,
                   dense_w4a8, dense_w8a8, input_offsets, quantize_input, unpad)

CPU_RULES = (DotProductMatmul(), PositionMajorPatches(), RowOffsets(), RegisterTiledMatmul(), DirectConv2D(),
             PackedConv2D(), WindowReduction(), RowReduction(), Injective())
"""The rules the CPU pipeline applies, in order (the first that matches a PrimFunc schedules it)."""

__all__ = ["CPU_RULES", "LANES", "DirectConv2D", "DotProductMatmul", "Injective", "PackedConv2D",
           "PositionMajorPatches", "RegisterTiledMatmul", "RowOffsets", "RowReduction", "WindowReduction",
           "WeightFormat", "batch_matmul", "conv2d_direct", "conv2d_packed", "conv_patches", "conv_w8a8",
           "decode_packed", "decode_weight", "dense_encoded", "dense_nm_w8a8", "dense_packed", "dense_w4a8",
           "dense_w8a8", "input_offsets", "quantize_input", "unpad", "vecmath"]
