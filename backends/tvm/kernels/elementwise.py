"""Elementwise and data-movement PrimFuncs on CPU: one flat, parallel, vectorised loop per output.

TVM's default CPU pipeline leaves these as scalar single-threaded loop nests (a fused GELU on a MiniLM
activation took ~14 ms); flattening the output's loops and splitting them into a parallel outer loop and a
vector-wide inner one is all they need, since each element is independent.
"""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import try_inline
from tvm.target import Target

LANES = 16
PARALLEL_MIN = 4096
"""Fewer elements than this run on one thread: waking the pool costs more than it saves."""


class Injective(dl.ScheduleRule):
    """Schedules PrimFuncs made only of injective blocks (elementwise, broadcast, transpose, concat, ...)."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos or not all(info.is_injective() for info in infos):
            return None
        for info in try_inline(sch, infos):
            loops = sch.get_loops(info.block_rv)
            if not loops or any(_is_zero(sch.get(loop).extent) for loop in loops):
                continue
            extent = _static_size(sch, loops)
            if extent is not None and extent < LANES:
                continue
            last = sch.get(loops[-1]).extent
            width = _row_vector(last)
            if width:
                # split the innermost loop itself: a vector then covers consecutive elements by construction,
                # where a vector of the flattened loops needs `% extent` arithmetic LLVM cannot see through
                # (it gathered and scattered byte by byte: a MiniLM input quantization took 23 us, not 3; a
                # ResNet 56 x 56 one 980 us, not 150)
                rows, inner = sch.split(loops[-1], [None, width])
                outer = sch.fuse(*loops[:-1], rows)
            else:
                flat = sch.fuse(*loops) if len(loops) > 1 else loops[0]
                outer, inner = sch.split(flat, [None, LANES])
            if extent is None or extent >= PARALLEL_MIN:
                sch.parallel(outer)
            sch.vectorize(inner)
        return sch


def _row_vector(extent: tirx.PrimExpr) -> int:
    """The vector width for a static innermost extent: ``LANES`` or the largest power of two under it that divides
    the extent (56 -> 8, 7 -> 1: a scalar row loop, which LLVM still unrolls); 0 for a symbolic extent."""
    if not isinstance(extent, tirx.IntImm):
        return 0
    return next(w for w in (LANES, 8, 4, 2, 1) if int(extent) % w == 0)


def _static_size(sch: s_tir.Schedule, loops: list) -> int | None:
    """The number of iterations of ``loops`` together, or None if one is symbolic."""
    size = 1
    for loop in loops:
        extent = sch.get(loop).extent
        if not isinstance(extent, tirx.IntImm):
            return None
        size *= int(extent)
    return size


def _is_zero(extent: tirx.PrimExpr) -> bool:
    return isinstance(extent, tirx.IntImm) and int(extent) == 0
