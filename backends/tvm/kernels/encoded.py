"""Kernels that read compressed weights directly (``sparsecc.ir.encodings``): quantized, N:M sparse and both.

One TE compute covers every encoding, because the two stages compose independently:

* the **value** of stored column ``j`` of output ``o``: the float32 value itself, or ``(code - zero) * scale`` with
  the code read from int8/uint8 or from a nibble of a packed byte and the scale/zero of ``j``'s group;
* the **input column** it multiplies: ``j`` itself when dense, ``(j // n) * m + index(o, j)`` for N:M, the index
  read from its bit-packed companion. Each output lane picks a different one of its group's ``m`` inputs, which
  all lie in one block of 16: ``window_gather`` makes that pick one ``vpermps`` (AVX-512) or a select chain over
  lane-invariant loads, so vector code needs no gather instruction (``_pick``).

``y[..., o] = sum_j x[..., column(o, j)] * value(o, j)``: the float operations of the decode are those of
``EncodedWeight.dense`` (so the interpreter computes the same weights), only the summation order differs. A
quantized weight's scale is factored out of its group: ``sum_g scale(o, g) * sum_(j in g) x[..., column(o, j)] *
code(o, j)``, one multiply per group instead of one per weight (equal up to float rounding); dense int4 on CPU
sums ``1 + nibble / 16`` instead of the code and corrects with the input's own group sums (``_int4_by_mantissa``).

On CPU every array is packed ``OI{b}o`` (``[O/b, columns, b]``) so the register-tiled schedule of ``matmul.py``
streams ``b`` outputs per vector; the reduction is split in two axes, ``(jo, ji)``, whose inner extent covers a
whole byte of nibbles and of indices, so after unrolling every shift amount is a constant. ``decode_weight`` is the
same decode written out to a dense weight, for kernels with no compressed form (convolutions, GPU matmuls).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tvm import te, tirx

from sparsecc.ir.encodings import index_bits

from .window_gather import BLOCK, SELECT_MAX

ENCODED_BLOCK = "sparsecc_dense_encoded"
"""Name of the reduction block; ``RegisterTiledMatmul`` schedules it like the dense one."""
GROUP_SUM_BLOCK = "sparsecc_group_sum"
"""Name of the block that scales and adds a quantized weight's group sums (``ENCODED_BLOCK`` is then per group)."""

@dataclass(frozen=True)
class WeightFormat:
    """What a kernel needs to know of an encoding (from the param's ``Encoding.meta``)."""

    rows: int
    columns: int
    """Stored columns ``J`` (the reduction length read from the weight)."""
    reduction: int
    """Logical reduction length ``K`` (``J * m / n`` for N:M)."""
    lanes: int | None
    """Block of the ``OI{b}o`` layout every array is packed in, or None for plain ``[O, ...]`` arrays."""
    bits: int | None = None
    group: int | None = None
    symmetric: bool = True
    nm: tuple[int, int] | None = None

    @classmethod
    def from_meta(cls, meta: dict[str, Any], lanes: int | None) -> "WeightFormat":
        shape = meta["shape"]
        k = math.prod(shape[1:])
        nm = tuple(meta["nm"]) if "nm" in meta else None
        q = meta.get("quant") or {}
        return cls(shape[0], k * nm[0] // nm[1] if nm else k, k, lanes, q.get("bits"), q.get("group"),
                   q.get("symmetric", True), nm)

    @property
    def word_bits(self) -> int:
        """Bit-packed arrays (nibbles, indices) are read in uint32 words when packed ``OI{b}o``, else in bytes."""
        return 32 if self.lanes else 8

    @property
    def period(self) -> int:
        """Stored columns per inner reduction step: whole words of nibbles and of indices, whole N:M groups."""
        p = self.word_bits // 4 if self.bits == 4 else 1
        if self.nm:
            p = math.lcm(p, self.word_bits // index_bits(self.nm[1]), self.nm[0])
        return p


def row_reader(arr: te.Tensor, lanes: int | None) -> Callable[[Any, Any], Any]:
    """``read(o, col)`` of a per-row array, packed ``OI{lanes}o`` (``[O/b, cols, b]``) or plain ``[O, cols]``."""
    if lanes is None:
        return lambda o, c: arr[o, c]
    return lambda o, c: arr[o // lanes, c, o % lanes]


def _code(fmt: WeightFormat, w: te.Tensor, zeros: te.Tensor | None) -> Callable:
    """``code(o, j)``: stored column ``j`` of row ``o`` as float32 before its group's scale (minus its zero)."""
    read = row_reader(w, fmt.lanes)
    zero = row_reader(zeros, fmt.lanes) if zeros is not None else None
    group = fmt.group or fmt.columns

    def code(o: Any, j: Any) -> Any:
        if fmt.bits == 4:
            c = _nibble_as_float(read, o, j, fmt.word_bits, 8 if fmt.symmetric else 0)
        else:
            c = read(o, j).astype("float32")
        return c if zero is None else c - zero(o, j // group)

    return code


def _value(fmt: WeightFormat, w: te.Tensor, scales: te.Tensor | None, zeros: te.Tensor | None) -> Callable:
    """``value(o, j)``: stored column ``j`` of row ``o`` as float32, decoded like ``EncodedWeight.dense``."""
    if fmt.bits is None:
        return row_reader(w, fmt.lanes)
    code, scale = _code(fmt, w, zeros), row_reader(scales, fmt.lanes)
    group = fmt.group or fmt.columns
    return lambda o, j: code(o, j) * scale(o, j // group)


def _field(read: Callable, o: Any, j: Any, bits: int, word_bits: int) -> Any:
    """Field ``j`` (``bits`` wide) of row ``o`` of a bit-packed array read in ``word_bits`` words, as uint32."""
    per = word_bits // bits
    dt = f"uint{word_bits}"
    word = read(o, j // per)
    return ((word >> (bits * (j % per)).astype(dt)) & tirx.const((1 << bits) - 1, dt)).astype("uint32")


MAGIC = 1 << 23
"""``float32`` whose bits are ``0x4B000000``: OR-ing a small integer into its mantissa gives ``MAGIC + integer``."""


def _nibble_as_float(read: Callable, o: Any, j: Any, word_bits: int, offset: int) -> Any:
    """``nibble j - offset`` as float32, exactly: ``bits(MAGIC) | nibble`` reinterpreted, minus ``MAGIC + offset``
    (two plain vector ops instead of a widening shuffle, an int-to-float convert and a subtraction)."""
    nibble = _field(read, o, j, 4, word_bits)
    as_float = tirx.reinterpret("float32", nibble | tirx.const(0x4B000000, "uint32"))
    return as_float - float(MAGIC + offset)


ONE_BITS, MANTISSA_SHIFT = 0x3F800000, 19
"""``float32`` 1.0, and where a nibble goes in its mantissa to read ``1 + nibble / 16``."""


def _nibble_mantissa(word: Any, at: int) -> Any:
    """``1 + nibble / 16`` as float32, exactly, for the nibble at bit ``at`` of an int32 ``word``: moved straight
    to the top of 1.0's mantissa (one shift and one and-or per vector; ``_nibble_as_float`` needs a subtraction
    more). An arithmetic right shift's incoming sign bits land above the mask."""
    moved = word << MANTISSA_SHIFT - at if at <= MANTISSA_SHIFT else word >> at - MANTISSA_SHIFT
    return tirx.reinterpret("float32", (moved & (0xF << MANTISSA_SHIFT)) | ONE_BITS)


def input_column(fmt: WeightFormat, indices: te.Tensor | None) -> Callable:
    """``column(o, j) -> (base, index)``: the input column stored column ``j`` multiplies is ``base + index``."""
    if fmt.nm is None:
        return lambda o, j: (j, None)
    n, m = fmt.nm
    bits = index_bits(m)
    read = row_reader(indices, fmt.lanes)

    def column(o: Any, j: Any) -> Any:
        index = _field(read, o, j, bits, fmt.word_bits) if bits < 8 else read(o, j)
        return (j // n) * m, index.astype("int32")

    return column


def _pick(x: te.Tensor, lead: Sequence[Any], base: Any, index: Any, m: int) -> Any:
    """``x[..., base + index]`` with ``0 <= index < m``.

    When ``m`` divides ``window_gather.BLOCK`` and so does the row length, every group lies in one aligned block of
    16 inputs: the load is left a plain indexed one (``index & (m - 1)`` bounds it) for ``window_gather`` to turn
    into ``vpermps`` (or a select chain on targets without AVX-512). Otherwise a select chain over the group's
    lane-invariant loads (up to ``window_gather.SELECT_MAX`` candidates, as there), or an indexed load."""
    if index is None:
        return x[(*lead, base)]
    k = x.shape[-1]
    if BLOCK % m == 0 and isinstance(k, (int, tirx.IntImm)) and int(k) % BLOCK == 0:
        return x[(*lead, base + (index & (m - 1)))]
    if m > SELECT_MAX:
        return x[(*lead, base + index)]
    picked = x[(*lead, base + m - 1)]
    for c in range(m - 2, -1, -1):
        picked = tirx.Select(index == c, x[(*lead, base + c)], picked)
    return picked


def _split(fmt: WeightFormat, companions: Sequence[te.Tensor]) -> tuple[Any, Any, Any]:
    """(indices, scales, zeros) of a weight whose companions come in ``encodings.COMPANIONS`` order (None: absent)."""
    rest = list(companions)
    indices = rest.pop(0) if fmt.nm else None
    scales = rest.pop(0) if fmt.bits else None
    zeros = rest.pop(0) if fmt.bits and not fmt.symmetric else None
    return indices, scales, zeros


def _decoders(fmt: WeightFormat, w: te.Tensor, companions: Sequence[te.Tensor]) -> tuple[Callable, Callable]:
    """``value`` and ``column`` of a weight whose companions come in ``encodings.COMPANIONS`` order."""
    indices, scales, zeros = _split(fmt, companions)
    return _value(fmt, w, scales, zeros), input_column(fmt, indices)


def scaled_by_group(fmt: WeightFormat) -> bool:
    """Whether the kernel sums each scale group's codes first and scales the sum once (every quantized format
    whose groups hold whole reduction steps): one multiply per group instead of one per weight."""
    group = fmt.group or fmt.columns
    return fmt.bits is not None and group % fmt.period == 0 and fmt.columns % group == 0


def dense_encoded(x: te.Tensor, w: te.Tensor, *companions: te.Tensor, fmt: WeightFormat,
                  has_bias: bool = False) -> te.Tensor:
    """``linear(x, W) (+ bias)`` with ``W`` read in its encoding. ``companions``: the indices (N:M), scales and
    zeros (quantized, asymmetric) present, in that order, then the bias if ``has_bias``.

    Quantized weights (``scaled_by_group``) are summed per scale group into ``ENCODED_BLOCK`` and the group sums
    scaled and added in ``GROUP_SUM_BLOCK``: ``sum_g scale_g * sum_(j in g) x_j * code_j``, the interpreter's
    ``sum_j x_j * (code_j * scale_g)`` up to float rounding."""
    bias = companions[-1] if has_bias else None
    companions = companions[:-1] if has_bias else companions
    m = fmt.nm[1] if fmt.nm else 1
    *lead, _ = x.shape
    p = fmt.period
    if scaled_by_group(fmt) and fmt.bits == 4 and fmt.nm is None and fmt.lanes:
        y = _int4_by_mantissa(x, w, *_split(fmt, companions)[1:], fmt=fmt)
    elif scaled_by_group(fmt):
        indices, scales, zeros = _split(fmt, companions)
        code, column, scale = _code(fmt, w, zeros), input_column(fmt, indices), row_reader(scales, fmt.lanes)
        group = fmt.group or fmt.columns
        gi = te.reduce_axis((0, group // p), name="gi")
        ji = te.reduce_axis((0, p), name="ji")

        def group_sum(*i: Any) -> Any:
            o, j = i[-2], i[-1] * group + gi * p + ji
            base, index = column(o, j)
            return te.sum(_pick(x, i[:-2], base, index, m) * code(o, j), axis=[gi, ji])

        sums = te.compute((*lead, fmt.rows, fmt.columns // group), group_sum, name=ENCODED_BLOCK)
        g = te.reduce_axis((0, fmt.columns // group), name="g")
        y = te.compute((*lead, fmt.rows), lambda *i: te.sum(sums[(*i, g)] * scale(i[-1], g), axis=g),
                       name=GROUP_SUM_BLOCK)
    else:
        value, column = _decoders(fmt, w, companions)
        jo = te.reduce_axis((0, fmt.columns // p), name="jo")
        ji = te.reduce_axis((0, p), name="ji")

        def body(*i: Any) -> Any:
            o, j = i[-1], jo * p + ji
            base, index = column(o, j)
            return te.sum(_pick(x, i[:-1], base, index, m) * value(o, j), axis=[jo, ji])

        y = te.compute((*lead, fmt.rows), body, name=ENCODED_BLOCK)
    if bias is None:
        return y
    return te.compute(y.shape, lambda *i: y[i] + bias[i[-1]], name="bias_add")


def _int4_by_mantissa(x: te.Tensor, w: te.Tensor, scales: te.Tensor, zeros: te.Tensor | None, *,
                      fmt: WeightFormat) -> te.Tensor:
    """Dense int4 (packed ``OI{b}o``) with each group's sum taken over ``f = 1 + nibble / 16``
    (``_nibble_mantissa``): ``code = nibble - zero = 16 f - 16 - zero`` (``zero`` = 8 when symmetric), so

        ``sum_g scale_g * sum_(j in g) x_j code_j = sum_g scale_g * (16 * sum_j x_j f_j - (16 + zero_g) * X_g)``

    where ``X_g = sum_(j in g) x_j`` is the input's own group sum, shared by every output. The inner loop is then
    shift, and-or, FMA: a quarter fewer vector operations than decoding ``code`` itself; the reassociation costs a
    few bits of float rounding (``f`` sits in [1, 2), ``code / 16`` in [-0.5, 0.5)). N:M picks a different input
    per output, so it has no shared ``X_g`` and keeps the direct decode."""
    *lead, _ = x.shape
    read, scale = row_reader(w, fmt.lanes), row_reader(scales, fmt.lanes)
    zero = row_reader(zeros, fmt.lanes) if zeros is not None else None
    group, per = fmt.group or fmt.columns, fmt.word_bits // 4
    groups = fmt.columns // group
    gi = te.reduce_axis((0, group // per), name="gi")  # the group's words; their nibbles written out below

    def group_sum(*i: Any) -> Any:
        o, j = i[-2], i[-1] * group + gi * per
        word = tirx.reinterpret("int32", read(o, j // per))
        return te.sum(sum(x[(*i[:-2], j + t)] * _nibble_mantissa(word, 4 * t) for t in range(per)), axis=gi)

    sums = te.compute((*lead, fmt.rows, groups), group_sum, name=ENCODED_BLOCK)
    r = te.reduce_axis((0, group), name="r")
    inputs = te.compute((*lead, groups), lambda *i: te.sum(x[(*i[:-1], i[-1] * group + r)], axis=r),
                        name="input_group_sum")
    sixteen = tirx.const(16.0, "float32")

    def offset(o: Any, g: Any) -> Any:
        return tirx.const(24.0, "float32") if zero is None else sixteen + zero(o, g)

    g = te.reduce_axis((0, groups), name="g")
    return te.compute((*lead, fmt.rows), lambda *i: te.sum(
        scale(i[-1], g) * (sixteen * sums[(*i, g)] - offset(i[-1], g) * inputs[(*i[:-1], g)]), axis=g),
        name=GROUP_SUM_BLOCK)


def decode_weight(w: te.Tensor, *companions: te.Tensor, fmt: WeightFormat, shape: Sequence[int],
                  codes: bool = False) -> te.Tensor:
    """The dense float32 weight of logical ``shape`` (``[O, ...]``) an encoding stands for; with ``codes``, its
    symmetric integer codes as int8 instead, before any scale (an N:M W8A8 weight's, for the plain integer GEMM;
    ``companions`` then the indices only)."""
    if codes:
        code = _code(fmt, w, None)
        value, column = (lambda o, j: code(o, j).astype("int8")), input_column(fmt, companions[0])
    else:
        value, column = _decoders(fmt, w, companions)
    inner = list(shape[1:])

    def flat(i: Sequence[Any]) -> Any:
        k = i[0]
        for d, extent in zip(i[1:], inner[1:]):
            k = k * extent + d
        return k

    if fmt.nm is None:
        return te.compute(tuple(shape), lambda o, *i: value(o, flat(i)), name="decode_weight")
    n, m = fmt.nm
    zero = tirx.const(0, "int8" if codes else "float32")

    def element(o: Any, *i: Any) -> Any:
        k = flat(i)
        out = zero
        for t in range(n):
            j = (k // m) * n + t
            base, index = column(o, j)
            out = tirx.Select(base + index == k, value(o, j), out)
        return out

    return te.compute(tuple(shape), element, name="decode_weight")


def decode_packed(w: te.Tensor, *companions: te.Tensor, fmt: WeightFormat) -> te.Tensor:
    """The dense float32 weight an encoding stands for, packed ``OI{b}o`` (``[O/b, K, b]``) for ``dense_packed``:
    a batched linear on an N:M weight decodes it once per call instead of once per row tile."""
    dense = decode_weight(w, *companions, fmt=fmt, shape=[fmt.rows, fmt.reduction])
    b = fmt.lanes
    return te.compute((fmt.rows // b, fmt.reduction, b), lambda ob, k, lane: dense[ob * b + lane, k],
                      name="decode_packed")
