"""What the register-tiled templates (``matmul.py``, ``conv.py``) share: a PrimFunc reduced to one reduction block
whose result is written back through a small scratch tile, with every elementwise neighbour folded in; and how
big that tile may be on a target's vector register file."""
from __future__ import annotations

from tvm import s_tir
from tvm.target import Target

ACCUMULATOR_SHARE = 3 / 4
"""Of a target's vector registers, the share a tile's accumulators may hold: the rest keep the loaded weight
vectors and the broadcast input. An AVX2 tile of 8 rows x 16 float32 lanes (16 of its 16 ymm registers) spilled
on every FMA: MiniLM's 384 -> 1536 linear ran 51 GMAC/s, 87 with 4 rows (a Zen 3 core)."""


def vector_registers(target: Target) -> tuple[int, int]:
    """(float32 lanes per vector register, vector registers) of a CPU target: AVX-512 16 x 32, AVX/AVX2 8 x 16,
    AArch64 NEON 4 x 32, anything else 4 x 16."""
    from tvm.target.codegen import target_has_features

    if "aarch64" in str(target.attrs.get("mtriple", "") or ""):
        return 4, 32
    if target_has_features("avx512f", target):
        return 16, 32
    if target_has_features("avx", target):
        return 8, 16
    return 4, 16


TILE_BYTES = 1024
"""TVM's stack-allocation limit (``kMaxStackAlloca``): a scratch tile of this many bytes or more comes from the
workspace pool instead, where LLVM cannot keep the accumulators in registers and every FMA stores to memory (a
14-pixel x 32-channel convolution tile ran 15x slower; a GEMM tile of 4 rows x 64 lanes, exactly 1 KiB, ran 83
GFLOP/s on one core against 128 for 4 x 48)."""


def accumulator_budget(target: Target, lanes: int, tiles: int = 1) -> int:
    """How many ``lanes``-wide float32/int32 accumulators each of ``tiles`` register tiles may keep on ``target``:
    together they fit its ``ACCUMULATOR_SHARE`` of the registers (an accumulator needs ``lanes`` / the vector's
    lanes registers), and each one's scratch buffer stays under ``TILE_BYTES``."""
    vector_lanes, registers = vector_registers(target)
    in_registers = int(registers * ACCUMULATOR_SHARE) // (tiles * max(1, -(-lanes // vector_lanes)))
    return max(1, min(in_registers, (TILE_BYTES - 1) // (lanes * 4)))


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
