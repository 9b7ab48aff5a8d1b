"""Register-tiled matrix products on CPU: ``linear`` on a packed (or compressed, ``encoded.py``) weight, and batched
``matmul`` of two activations.

Both kernels read their right operand ``b`` lanes at a time from contiguous memory: a weight packed as
``[O/b, I, b]`` (layout ``OI{b}o``, see ``sparsecc.ir.layouts``), or a row-major ``[..., K, N]`` activation whose
rows are contiguous already. The schedule keeps a ``rows x lanes`` tile of outputs in vector registers while it
walks the reduction axis: each step broadcasts one left element per row and does one lane-wide FMA per row.
Batch 1 (GEMV) uses one row per tile and is bound by weight bandwidth; larger batches reuse each loaded vector
``rows`` times. Output tiles run in parallel. Any elementwise epilogue FuseOps attached (bias, activation,
residual add) is inlined into the tile's write-back, so it costs no extra pass over memory.
"""
from __future__ import annotations

from tvm import s_tir, te, tirx
from tvm.sym import Analyzer
from tvm.s_tir import dlight as dl
from tvm.target import Target

from .encoded import ENCODED_BLOCK, GROUP_SUM_BLOCK
from .tiling import accumulator_budget, find_block, tile_write_back, vector_registers

DENSE_BLOCK = "sparsecc_dense_packed"
MATMUL_BLOCK = "sparsecc_matmul"
"""Names of the reduction blocks the rule looks for."""

LANES = 16
"""Output columns per lane block for ``matmul`` (one AVX-512 float32 vector; ``linear`` takes its weight's block)."""

ROWS = (6, 8, 4)
"""Candidate output rows per register tile (``tile_rows``), best first: counts that divide a row extent need no
bounds check."""

COL_BLOCKS_GEMV = 4
"""Lane blocks of a GEMV tile (one row): four accumulators, four weight streams (2.6 -> 2.0 ms on a 4096x4096
weight)."""


def dense_packed(x: te.Tensor, w: te.Tensor, bias: te.Tensor | None = None) -> te.Tensor:
    """``y[..., o] = sum_i x[..., i] * w[o // b, i, o % b] (+ bias[o])`` for ``x`` of any rank >= 2."""
    *lead, k = x.shape
    blocks, _, b = w.shape
    r = te.reduce_axis((0, k), name="k")
    y = te.compute((*lead, blocks * b), lambda *i: te.sum(x[(*i[:-1], r)] * w[i[-1] // b, r, i[-1] % b], axis=r),
                   name=DENSE_BLOCK)
    if bias is None:
        return y
    return te.compute(y.shape, lambda *i: y[i] + bias[i[-1]], name="bias_add")


def batch_matmul(a: te.Tensor, b: te.Tensor) -> te.Tensor:
    """numpy ``a @ b`` for operands of rank >= 2, batch dims broadcast."""
    *batch_a, m, k = a.shape
    *batch_b, _, n = b.shape
    rank = max(len(batch_a), len(batch_b))
    batch = []
    for i in range(rank):
        da = batch_a[i - rank + len(batch_a)] if i >= rank - len(batch_a) else 1
        db = batch_b[i - rank + len(batch_b)] if i >= rank - len(batch_b) else 1
        batch.append(db if _is_one(da) else da)

    def index(batch_dims: list, idx: tuple) -> list:
        off = rank - len(batch_dims)
        return [0 if _is_one(d) else idx[off + j] for j, d in enumerate(batch_dims)]

    r = te.reduce_axis((0, k), name="k")
    return te.compute((*batch, m, n), lambda *i: te.sum(
        a[(*index(batch_a, i), i[-2], r)] * b[(*index(batch_b, i), r, i[-1])], axis=r), name=MATMUL_BLOCK)


def _is_one(d: tirx.PrimExpr) -> bool:
    return isinstance(d, (int, tirx.IntImm)) and int(d) == 1


def tile_shape(rows_extent: tirx.PrimExpr, column_blocks: int, budget: int, vectors: int = 1, registers: int = 32,
               tiles: int = 1) -> tuple[int, int]:
    """(rows, lane blocks) of a register tile of at most ``budget`` accumulators, each ``vectors`` registers wide.
    GEMV takes one row x ``COL_BLOCKS_GEMV`` blocks. A GEMM tile must fit the ``registers`` with one step's operands:
    its accumulators (``tiles`` tiles of them), a weight vector per block and one broadcast input. Of those that fit,
    it takes the most accumulators, then the fewest loads per FMA (a broadcast per row and ``vectors`` weight loads
    per block each step), then the most rows; rows divide the extent where a count does (``tile_rows``).

    With AVX-512 that is 4 rows x 3 blocks of 16 lanes: MiniLM's 384 -> 1536 linear ran 149 GFLOP/s on one core,
    against 88 for 8 rows x 1 block, whose 8 FMAs per step wait on 9 loads and the FMA latency. With AVX2, 4 rows x
    1 block: 2 x 3 (12 accumulator and 6 weight ymm registers) spilled and ran 0.57x as fast."""
    if _is_one(rows_extent):
        return 1, next(b for b in range(min(COL_BLOCKS_GEMV, budget), 0, -1) if column_blocks % b == 0)
    analyzer = Analyzer()
    dividing = [r for r in (*ROWS, 3, 2) if r <= budget and analyzer.can_prove(tirx.floormod(rows_extent, r) == 0)]
    shapes = [(r, b) for r in dividing or [tile_rows(rows_extent, budget=budget)]
              for b in range(1, budget // r + 1)
              if column_blocks % b == 0 and (tiles * r * b + b) * vectors + 1 <= registers]
    return max(shapes or [(1, 1)], key=lambda s: (s[0] * s[1], -(s[0] + s[1] * vectors), s[0]))


def tile_rows(extent: tirx.PrimExpr, exact: bool = False, budget: int = max(ROWS)) -> int:
    """Rows per register tile: one for GEMV; else a count of at most ``budget`` (the accumulators a row of the
    tile costs fit the target's registers, ``tiling.accumulator_budget``) that divides the row extent when one does
    (a symbolic ``batch*128`` included), so tiles need no bounds check. When none does (a bare symbolic ``batch``),
    the first such count with a bounds check, or 1 if ``exact`` (a tensorized tile cannot take the check)."""
    if isinstance(extent, tirx.IntImm) and int(extent) == 1:
        return 1
    fitting = [r for r in (*ROWS, 3, 2) if r <= budget] or [1]
    analyzer = Analyzer()
    return next((r for r in fitting if analyzer.can_prove(tirx.floormod(extent, r) == 0)), 1 if exact else fitting[0])


def _tile_output(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int, target: Target, tiles: int = 1,
                 keep: tuple[str, ...] = ()) -> tuple[list, s_tir.schedule.LoopRV, int] | None:
    """Writes ``block``'s result back through a scratch tile (``tile_write_back``), splits the output into tiles of
    ``tile_shape``'s rows x lane blocks of ``lanes`` for ``target`` (``tiles`` tiles of accumulators share its
    registers), and computes ``block`` once per tile. The column tiles are the outer loop: the row tiles within one
    reuse its weight block from cache (rows outer streamed the whole weight, 2.4 MB for MiniLM's FFN, once per row
    tile). Returns the loops over tiles, the write-back's column loop within a tile and ``blocks``; None when the
    epilogue does not fold."""
    out = tile_write_back(sch, block, keep)
    if out is None:
        return None
    *outer, m, n = sch.get_loops(out)  # tile: rows of the last leading axis x blocks of lanes columns
    vector_lanes, registers = vector_registers(target)
    rows, blocks = tile_shape(sch.get(m).extent, int(sch.get(n).extent) // lanes,
                              accumulator_budget(target, lanes, tiles), vectors=max(1, lanes // vector_lanes),
                              registers=registers, tiles=tiles)
    mo, mi = sch.split(m, [None, rows])
    no, ni = sch.split(n, [None, blocks * lanes])
    sch.reorder(*outer, no, mo, mi, ni)
    sch.compute_at(block, mo, preserve_unit_loops=True)
    return [*outer, no, mo], ni, blocks


def _parallel_tiles(sch: s_tir.Schedule, tile: list, write_back: s_tir.schedule.LoopRV, blocks: int,
                    lanes: int) -> None:
    """Vectorizes a tile's write-back and runs the tiles in parallel."""
    sch.vectorize(sch.split(write_back, [blocks, lanes])[1])
    sch.parallel(sch.fuse(*tile))


class RegisterTiledMatmul(dl.ScheduleRule):
    """Schedules a PrimFunc holding a ``DENSE_BLOCK`` or ``MATMUL_BLOCK`` plus elementwise neighbours."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        if find_block(sch, GROUP_SUM_BLOCK) is not None:
            return self._group_sums(sch, target)
        dense = find_block(sch, DENSE_BLOCK, ENCODED_BLOCK, MATMUL_BLOCK)
        if dense is None:
            return None
        name = sch.get(dense).name_hint
        # dense reads x[..., k], then w[o // b, k, o % b]: the weight's block is the lane count (encoded weights
        # are packed in blocks of LANES, see relayout.py)
        lanes = int(sch.get(dense).reads[-1].source.shape[2]) if name == DENSE_BLOCK else LANES
        reductions = sum(1 for v in sch.get(dense).iter_vars if v.iter_type == tirx.IterVar.CommReduce)
        tiled = _tile_output(sch, dense, lanes, target)
        if tiled is None:
            return None
        tile, write_back, blocks = tiled
        # one loop per block var, unit ones kept: ..., m, n, k (encoded weights: k split in two, jo and ji)
        *_, row, col = sch.get_loops(dense)[:-reductions]
        k = sch.get_loops(dense)[-reductions:]
        block, lane = sch.split(col, [blocks, lanes])
        sch.reorder(*k, row, block, lane)
        sch.vectorize(lane)
        sch.unroll(block)
        sch.unroll(row)
        for inner in k[1:]:  # the encoded kernel's byte-sized inner step: constant shifts once unrolled
            sch.unroll(inner)
        k = k[0]
        _parallel_tiles(sch, tile, write_back, blocks, lanes)
        init = sch.decompose_reduction(dense, k)
        sch.vectorize(sch.get_loops(init)[-1])
        return sch

    def _group_sums(self, sch: s_tir.Schedule, target: Target) -> s_tir.Schedule | None:
        """A quantized weight's kernel (``encoded.dense_encoded``): the output tile walks the scale groups; per
        group, the tile of group sums (``ENCODED_BLOCK``) is accumulated in registers from zero like a dense tile,
        then scaled once and added to the output tile (``GROUP_SUM_BLOCK``): two tiles share the registers."""
        top, sums = sch.get_sblock(GROUP_SUM_BLOCK), sch.get_sblock(ENCODED_BLOCK)
        tiled = _tile_output(sch, top, LANES, target, tiles=2, keep=(ENCODED_BLOCK,))
        if tiled is None:
            return None
        tile, write_back, blocks = tiled
        *_, row, col, g = sch.get_loops(top)
        block, lane = sch.split(col, [blocks, LANES])
        sch.reorder(g, row, block, lane)
        sch.compute_at(sums, g, preserve_unit_loops=True)
        # the group's reduction: (gi, ji), ji a whole word of nibbles and indices (constant shifts once unrolled),
        # or gi alone when the compute writes a word's nibbles out itself
        inner = 2 if sum(v.iter_type == tirx.IterVar.CommReduce for v in sch.get(sums).iter_vars) == 2 else 1
        *_, s_row, s_col, s_group = sch.get_loops(sums)[:-inner]
        reduce = sch.get_loops(sums)[-inner:]
        s_block, s_lane = sch.split(s_col, [blocks, LANES])
        sch.reorder(s_group, *reduce, s_row, s_block, s_lane)
        sch.vectorize(s_lane)
        sch.unroll(s_block)
        sch.unroll(s_row)
        if inner == 2:
            sch.unroll(reduce[1])
        sch.vectorize(lane)
        sch.unroll(block)
        sch.unroll(row)
        _parallel_tiles(sch, tile, write_back, blocks, LANES)
        for block_rv, loop in ((sums, reduce[0]), (top, g)):
            sch.vectorize(sch.get_loops(sch.decompose_reduction(block_rv, loop))[-1])
        return sch

