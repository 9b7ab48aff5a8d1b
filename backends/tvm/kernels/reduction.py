"""Row reductions on CPU (softmax, layer norm): rows in parallel, each row's sums and maxima as vector partials;
and window reductions (pooling): every output pixel reduces a few neighbours, so the output row is the vector.

dlight's ``cpu.Reduction`` already parallelises the rows and vectorises the elementwise blocks, but leaves each
reduction a scalar chain: LLVM may not reorder float additions, so a 384-wide row mean is 384 dependent adds
(a MiniLM layer norm's two means were ~50 us of a 128 x 384 input). ``vecmath`` writes those reductions as
``PARTIAL_LANES`` independent partial reductions (block iterators ``[..., lane, ko]``); this rule puts the lane
loop inside the reduction loop and vectorises it, so a row is summed one vector per step.
"""
from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl

from .vecmath import PARTIAL_LANES

_DATA_PAR, _REDUCE = 0, 2  # tirx.IterVar kinds


class RowReduction(dl.cpu.Reduction):
    """``dlight.cpu.Reduction`` with the partial reductions vectorised across their lanes."""

    @staticmethod
    def _unroll_reduction_inner(sch: s_tir.Schedule, block_rv: s_tir.schedule.SBlockRV, vec_lanes: int) -> None:
        if _is_partial(sch.get(block_rv)):
            *_, lane, ko = sch.get_loops(block_rv)
            sch.reorder(ko, lane)
            sch.vectorize(lane)  # before the init is split off: a vector loop must hold a whole reduction block
            init = sch.decompose_reduction(block_rv, ko)
            sch.vectorize(sch.get_loops(init)[-1])
            return
        dl.cpu.Reduction._unroll_reduction_inner(sch, block_rv, vec_lanes)


def _is_partial(block: s_tir.SBlock) -> bool:
    """A block reducing along its last iterator into ``PARTIAL_LANES`` lanes (its second-to-last iterator)."""
    iters = block.iter_vars
    if len(iters) < 2 or iters[-1].iter_type != _REDUCE or iters[-2].iter_type != _DATA_PAR:
        return False
    if any(it.iter_type == _REDUCE for it in iters[:-1]):
        return False
    extent = iters[-2].dom.extent
    return isinstance(extent, tirx.IntImm) and int(extent) == PARTIAL_LANES


WINDOW_MAX = 64
"""A reduction over at most this many elements per output (a pooling window; ResNet's 3 x 3) is a window
reduction."""


class WindowReduction(dl.ScheduleRule):
    """A PrimFunc of one block that reduces a small window per output (max/avg pooling): the output's outer axes in
    parallel, the window's loops outside the last output axis, which is vectorised; every window element updates a
    vector of outputs. TVM's default loops ran ResNet-50's 3 x 3 max pool (64 x 112 x 112) as scalar code on one
    core."""

    def apply(self, func: tirx.PrimFunc, target, tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        try:
            blocks = sch.get_child_blocks(sch.get_sblock("root"))
        except s_tir.ScheduleError:  # no root block: already written as loops (cumsum's scan)
            return None
        if len(blocks) != 1:
            return None
        block = blocks[0]
        iters = sch.get(block).iter_vars
        kinds = [it.iter_type for it in iters]
        spatial = kinds.index(_REDUCE) if _REDUCE in kinds else len(kinds)
        extents = [it.dom.extent for it in iters]
        if (spatial == 0 or spatial == len(kinds) or any(k != _REDUCE for k in kinds[spatial:])
                or not all(isinstance(e, tirx.IntImm) for e in extents)):
            return None
        window = math.prod(int(e) for e in extents[spatial:])
        if window > WINDOW_MAX or int(extents[spatial - 1]) % 8:  # whole vectors of 8 or 16 along the row
            return None
        loops = sch.get_loops(block)
        outer, last, reduce = loops[:spatial - 1], loops[spatial - 1], loops[spatial:]
        sch.reorder(*outer, *reduce, last)
        lanes = 16 if int(extents[spatial - 1]) % 16 == 0 else 8
        # parallel and vector loops before the init is split off, as in RowReduction
        sch.vectorize(sch.split(last, [None, lanes])[1])
        if outer:
            sch.parallel(sch.fuse(*outer))
        init = sch.decompose_reduction(block, reduce[0])
        sch.vectorize(sch.get_loops(init)[-1])
        return sch
