"""A TIR pass for vector loads that gather from one aligned block of 16 elements: ``vpermps`` on x86.

An N:M kernel (``encoded.py``) multiplies each stored weight by the input its index names, ``x[base + index]``,
with a different index in every output lane. Vectorized, that is a gather, which LLVM emits one lane at a time.
But ``base`` is the same in every lane and ``index < m``, so every lane reads within one 16-element block of
``x``. After vectorization this pass finds such loads, ``x[Broadcast(B) + V]`` with ``B mod 16`` a constant ``r``
and ``r + V`` provably in ``[0, 16)``, and rewrites them:

* float32 x 16 on a target with AVX-512: one aligned vector load of the block, then ``vpermps`` by ``r + V``
  (one instruction instead of the compares and blends of a select chain: 2:4 + int4 GEMV ...);
* float32 x 16 with AVX2 (8-lane ``vpermps``): the block's two halves loaded, each half of the result permuted
  from both and blended by bit 3 of its index (4 permutes, 2 blends; 2:4 GEMV on a Zen 3 ...);
* uint8 x 32 on x86 with AVX2 (an N:M W7A8 weight's picked inputs, ``w8a8.pick_inputs``): the block loaded
  into both halves of a vector, then one ``vpshufb``;
* elsewhere: a select chain over the values ``V`` can take, each a broadcast scalar load (ARM).

Both read only the block an in-bounds lane reads (the buffer's size is a multiple of 16, checked), so they are
safe whatever the index's actual values. ``register()`` adds the pass to the end of TVM's default TIR pipeline as
the pipeline named ``PIPELINE`` (``tvm.compile(..., tir_pipeline=PIPELINE)``), with TVM's common-subexpression
elimination moved after it: CSE would otherwise hide the index's bound behind a let-bound variable.
"""
from __future__ import annotations

from typing import Any

import tvm
import tvm_ffi
from tvm import tirx
from tvm.sym import Analyzer

BLOCK = 16
PIPELINE = "sparsecc_cpu"
SELECT_MAX = 16
"""A select chain is emitted for at most this many candidate values (here and in ``encoded._pick``'s own chain);
beyond it the load stays indexed."""


def _split_invariant(index: tirx.PrimExpr) -> tuple[list[tirx.PrimExpr], list[tirx.PrimExpr]]:
    """The terms of a vector index sum: lane-invariant scalars (from broadcasts) and the per-lane rest."""
    if isinstance(index, tirx.Add):
        a_inv, a_var = _split_invariant(index.a)
        b_inv, b_var = _split_invariant(index.b)
        return a_inv + b_inv, a_var + b_var
    if isinstance(index, tirx.Broadcast):
        return [index.value], []
    return [], [index]


def _rewrite(load: Any, permute: str | None, analyzer: Analyzer) -> tirx.PrimExpr | None:
    """The rewritten form of ``load`` (a ``TensorLoad``), or None to keep it."""
    dtype = tvm_ffi.dtype(str(load.ty))
    buffer = load.source
    if dtype.lanes <= 1 or len(load.indices) != 1 or len(getattr(buffer, "shape", ())) != 1:
        return None
    index = load.indices[0]
    size = buffer.shape[0]
    if isinstance(index, (tirx.Ramp, tirx.Broadcast)) or not analyzer.can_prove(tirx.floormod(size, BLOCK) == 0):
        return None  # (a symbolic size too: a dynamic batch's rows x 384)
    invariant, variant = _split_invariant(index)
    if not invariant or not variant:
        return None
    base, offset = sum(invariant[1:], invariant[0]), sum(variant[1:], variant[0])
    r = analyzer.simplify(tirx.floormod(base, BLOCK))
    if not isinstance(r, tirx.IntImm):
        return None
    bound = analyzer.const_int_bound(offset)
    lo, hi = int(r) + bound.min_value, int(r) + bound.max_value
    if lo < 0 or hi >= BLOCK:
        return None
    start = analyzer.simplify(base - r)
    lane_type = str(tvm_ffi.dtype(str(offset.ty))).split("x")[0]
    if permute and str(dtype) == "float32x16":
        lane_index = analyzer.simplify(tirx.Cast("int32x16", offset + tirx.Broadcast(tirx.const(int(r), lane_type),
                                                                                      BLOCK)))
        if permute == "avx512":
            block = tirx.BufferLoad(buffer, [tirx.Ramp(start, 1, BLOCK)])
            return tirx.call_llvm_pure_intrin("float32x16", "llvm.x86.avx512.permvar.sf.512", block, lane_index)
        return _permute_halves(buffer, start, lane_index)
    if permute and str(dtype) == "uint8x32":
        return _shuffle_bytes(buffer, start, offset + tirx.Broadcast(tirx.const(int(r), lane_type), 2 * BLOCK))
    if hi - lo >= SELECT_MAX:
        return None

    def at(c: int) -> tirx.PrimExpr:
        return tirx.Broadcast(tirx.BufferLoad(buffer, [start + c]), dtype.lanes)

    picked = at(hi)
    for c in range(hi - 1, lo - 1, -1):
        picked = tirx.Select(offset == tirx.Broadcast(tirx.const(c - int(r), lane_type), dtype.lanes), at(c), picked)
    return picked


def _permute_halves(buffer: Any, start: tirx.PrimExpr, lane_index: tirx.PrimExpr) -> tirx.PrimExpr:
    """``buffer[start + lane_index]`` (16 lanes, indices in ``[0, 16)``) with AVX2's 8-lane ``vpermps``, which reads
    the low 3 bits of each index: per half of the result, a permute of each half of the block, blended by bit 3."""
    halves = [tirx.BufferLoad(buffer, [tirx.Ramp(start + h * 8, 1, 8)]) for h in (0, 1)]
    parts = []
    for h in (0, 1):
        index = tirx.Shuffle([lane_index], [tirx.const(i, "int32") for i in range(h * 8, h * 8 + 8)])
        low, high = (tirx.call_llvm_pure_intrin("float32x8", "llvm.x86.avx2.permps", half, index) for half in halves)
        parts.append(tirx.Select(index < tirx.Broadcast(tirx.const(8, "int32"), 8), low, high))
    return tirx.Shuffle(parts, [tirx.const(i, "int32") for i in range(BLOCK)])


def _shuffle_bytes(buffer: Any, start: tirx.PrimExpr, lane_index: tirx.PrimExpr) -> tirx.PrimExpr:
    """``buffer[start + lane_index]`` for 32 uint8 lanes with indices in ``[0, 16)``: the block loaded once into
    both 128-bit halves, then one AVX2 ``vpshufb`` (which picks within each half by an index's low 4 bits)."""
    block = tirx.BufferLoad(buffer, [tirx.Ramp(start, 1, BLOCK)])
    both = tirx.Shuffle([block, block], [tirx.const(i % BLOCK, "int32") for i in range(2 * BLOCK)])
    return tirx.call_llvm_pure_intrin("uint8x32", "llvm.x86.avx2.pshuf.b", both, tirx.Cast("int8x32", lane_index))


@tvm.tirx.transform.prim_func_pass(opt_level=0, name="LowerWindowGathers")
def lower_window_gathers(func: tirx.PrimFunc, mod: Any, ctx: Any) -> tirx.PrimFunc:
    from tvm.target.codegen import target_has_features

    target = func.attrs.get("target") if func.attrs is not None else None
    permute = None  # which vpermps: "avx512" (16 lanes), "avx2" (8 lanes), or none
    if target is not None and target.kind.name == "llvm":
        permute = next((name for feature, name in (("avx512f", "avx512"), ("avx2", "avx2"))
                        if target_has_features(feature, target)), None)
    analyzer = Analyzer()

    def visit(load: Any) -> Any:
        new = _rewrite(load, permute, analyzer)
        return load if new is None else new

    return func.with_body(tvm_ffi.structural_map(func.body, [(tvm.ir.TensorLoad, visit)]))


def register() -> None:
    """Registers ``PIPELINE``: TVM's default TIR pipeline, then ``lower_window_gathers``, then CSE."""
    from tvm.tirx import compilation_pipeline as cp

    if PIPELINE in cp.PIPELINE_MAP:
        return

    def factory() -> tuple:
        default, finalize_host, finalize_device = cp.get_tir_pipeline("s_tir")

        @tvm.transform.module_pass(opt_level=0, name=PIPELINE)
        def pipeline(mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
            config = dict(ctx.config)
            cse = not bool(config.get("tirx.disable_cse_tir", False))
            with tvm.transform.PassContext(opt_level=ctx.opt_level, config={**config, "tirx.disable_cse_tir": True},
                                           required_pass=list(ctx.required_pass),
                                           disabled_pass=list(ctx.disabled_pass)):
                mod = default(mod)
            mod = lower_window_gathers(mod)
            return tirx.transform.CommonSubexprElim()(mod) if cse else mod

        return pipeline, finalize_host, finalize_device

    cp.register_tir_pipeline(PIPELINE, factory)
