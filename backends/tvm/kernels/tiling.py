"""What the register-tiled templates (``matmul.py``, ``conv.py``) share: a PrimFunc reduced to one reduction block
whose result is written back through a small scratch tile, with every elementwise neighbour folded in."""
from __future__ import annotations

from tvm import s_tir


def tile_write_back(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV,
                    keep: tuple[str, ...] = ()) -> s_tir.schedule.SBlockRV | None:
    """Inlines the fused neighbours of ``block`` (a reshape/cast feeding it, the epilogue's intermediates: GELU
    reads its input twice) except the blocks named in ``keep``, caches ``block``'s output in a scratch buffer and
    folds the epilogue's last block into the write-back of that buffer. Returns the write-back block, or None when
    the epilogue does not fold (the caller leaves the function unscheduled: correct, only slower).

    The scratch buffer is "global": a small global buffer becomes a stack alloca that LLVM promotes to registers,
    whereas TVM serves "local" ones from its workspace pool, where every accumulation stays a memory store."""
    name = sch.get(block).name_hint
    for other in sch.get_child_blocks(sch.get_sblock("root"))[:-1]:
        if sch.get(other).name_hint not in (name, *keep):
            try:
                sch.compute_inline(other)
            except s_tir.ScheduleError:
                pass
    out = sch.cache_write(block, 0, "global")
    consumers = sch.get_consumers(out)
    if len(consumers) > 1:
        return None
    if consumers:
        try:
            sch.reverse_compute_inline(consumers[0])
        except s_tir.ScheduleError:
            return None
    return out


def find_block(sch: s_tir.Schedule, *names: str) -> s_tir.schedule.SBlockRV | None:
    """The first of the blocks named ``names`` that the PrimFunc has."""
    for name in names:
        try:
            return sch.get_sblock(name)
        except s_tir.ScheduleError:
            continue
    return None
