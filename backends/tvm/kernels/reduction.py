"""Row reductions on CPU (softmax, layer norm): rows in parallel, each row's sums and maxima as vector partials.

dlight's ``cpu.Reduction`` already parallelises the rows and vectorises the elementwise blocks, but leaves each
reduction a scalar chain: LLVM may not reorder float additions, so a 384-wide row mean is 384 dependent adds
(a MiniLM layer norm's two means were ~50 us of a 128 x 384 input). ``vecmath`` writes those reductions as
``PARTIAL_LANES`` independent partial reductions (block iterators ``[..., lane, ko]``); this rule puts the lane
loop inside the reduction loop and vectorises it, so a row is summed one vector per step.
"""
from __future__ import annotations

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
