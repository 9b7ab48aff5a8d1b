"""Compressed weight encodings: how a compressed weight is stored, and its exact decoding.

A weight of logical shape ``[O, ...]`` is viewed as a matrix ``[O, K]`` (a conv weight ``[Cout, Cin/g, kh, kw]``
flattens its reduction axes, input channel slowest). Two stages compose, in this order:

* **N:M sparsity** (``nm=(n, m)``): of every ``m`` consecutive weights along ``K`` only ``n`` are kept. The stored
  columns are ``J = K * n / m`` values plus, per value, its index within its group of ``m``.
* **Quantization** (``quant``): the stored values (all ``K`` of them, or the ``J`` kept ones) become integer codes
  with one float32 scale (and, asymmetric, one zero point) per output row and group of ``group`` stored columns
  (``group=None``: one per row). ``value = (code - zero) * scale``, computed in float32.

Storage (``Param`` + ``Encoding``): the param's array holds the codes (int8 for symmetric 8-bit; uint8 for
asymmetric 8-bit; uint8 two per byte for 4-bit, the even column in the low nibble, symmetric codes offset by 8) or,
without quantization, the float32 kept values. Companion arrays are params of their own, named in ``meta`` (so
every backend receives them as ordinary arguments): ``scales`` and ``zeros`` ``[O, groups]`` float32, ``indices``
``[O, J * bits / 8]`` uint8 with the indices bit-packed (2 bits for ``m <= 4``, 4 for ``m <= 16``, else 8),
lowest bits first. A backend may re-lay out every one of them together (``meta["layout"]``, ``sparsecc.ir.layouts``);
in such a layout the bit-packed arrays are little-endian uint32 words (8 nibbles, 16 2-bit indices), so a kernel
unpacks them with shifts on 32-bit lanes.

**W8A8** (``activation=(scale, zero)``, int8 symmetric per-channel weights only, or int7 ones: codes within +-63,
``bits`` 7, stored as int8, ``linear`` and ``conv``; or int4 ones, ``bits`` 4, packed like any int4 weight,
``linear`` only): the op
also quantizes its input, statically, to uint8 ``xq = clamp(round_half_even(x / scale) + zero, 0, 255)`` and
multiplies integers: ``y = float32(sum_k (xq - zero) * code) * (float32(scale) * weight_scale[o])`` (``W8A8``; a
convolution's zero padding is ``xq = zero``, i.e. ``x = 0``); the companion
``colsums`` ``[O, 1]`` int32 (``sum_k code``) lets an integer kernel subtract the zero point after its dot products.
The int7 form ("W7A8") exists for x86 CPUs without VNNI: there AVX2's ``vpmaddubsw`` multiplies uint8 by int8 in
pairs summed to int16, which saturates for int8 codes (2 x 255 x 128 > 32767) but never for int7 ones (2 x 255 x 63).
A linear's int8, int7 or int4 W8A8 weight may be N:M sparse too (``2:4+w7a8``, ``2:4+w4a8``): its codes are the
kept values', the interpreter multiplies them scattered back to their columns (zeros elsewhere), and a kernel
multiplies the kept ones only; re-laid out, its indices are stored as window picks (``window_picks``), one byte
per kept value (int4: one byte holds the pick in its low nibble and the code plus 8 in its high one,
``codes_hold_picks``, so the weight is one array of a byte per kept value).
The int4 form ("W4A8") halves the weight's bytes again for memory-bound linears (a GEMV): its kernel unpacks the
nibbles to int8 codes per register tile and runs the same integer dot products. Re-laid out ``OI{b}o{d}i``, its
codes are packed per block of ``b x d``: the block's first half in the low nibbles of its bytes, the second half in
the high ones (``pack_halves``), so one shift and two masks unpack a whole vector of bytes into two of codes.

``decode`` is what every kernel computes, in the same float32 operations: the interpreter runs on it, so accuracy
measured there is the deployed accuracy (up to the order of the summation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sparsecc.ir.layouts import blocked_layout, layout_block, pack, unpack

if TYPE_CHECKING:
    from sparsecc.ir.graph import Graph
    import torch

COMPANIONS = ("indices", "scales", "zeros", "colsums")
"""``meta`` keys that name companion params."""
PICK_WINDOW = 16
"""An N:M W8A8 weight re-laid out for CPU stores, instead of its in-group indices, each kept value's input within
its window of this many (``window_picks``): one ``vpshufb`` picks 16 bytes' worth."""


@dataclass(frozen=True)
class QuantSpec:
    bits: int = 8
    group: int | None = None
    symmetric: bool = True

    def __post_init__(self) -> None:
        if self.bits not in (4, 7, 8) or (self.bits == 7 and not self.symmetric):
            raise ValueError(f"quantization to {self.bits} bits: only 4 and 8 are supported (and symmetric 7 for "
                             "W7A8)")
        if self.group is not None and self.group <= 0:
            raise ValueError(f"quantization group size must be positive, got {self.group}")

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) + 1 if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.symmetric else (1 << self.bits) - 1

    @property
    def name(self) -> str:
        return f"int{self.bits}" + (f"-g{self.group}" if self.group else "") + ("" if self.symmetric else "-asym")

    def groups(self, columns: int) -> int:
        g = self.group or columns
        if columns % g:
            raise ValueError(f"{self.name}: {columns} columns are not a multiple of the group size {g}")
        return columns // g


@dataclass
class EncodedWeight:
    """A compressed weight in logical form: ``values`` ``[O, J]`` (float32 values, or integer codes centred on
    zero for symmetric / in ``[0, 2^bits)`` for asymmetric quantization), ``indices`` ``[O, J]`` for N:M."""

    shape: tuple[int, ...]
    values: np.ndarray
    nm: tuple[int, int] | None = None
    indices: np.ndarray | None = None
    quant: QuantSpec | None = None
    scales: np.ndarray | None = None
    zeros: np.ndarray | None = None
    activation: tuple[float, int] | None = None
    """W8A8: the static uint8 grid ``(scale, zero)`` of the op's input."""

    @property
    def kind(self) -> str:
        parts = [f"{self.nm[0]}:{self.nm[1]}"] if self.nm else []
        if self.activation is not None:
            parts.append(f"w{self.quant.bits if self.quant else 8}a8")
        elif self.quant:
            parts.append(self.quant.name)
        return "+".join(parts) or "dense"

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def reduction(self) -> int:
        return int(np.prod(self.shape[1:]))

    def stored_values(self) -> np.ndarray:
        """``[O, J]`` float32: the kept values, dequantized exactly as the kernels do."""
        if self.quant is None:
            return self.values.astype(np.float32)
        g = self.quant.group or self.values.shape[1]
        codes = self.values.astype(np.float32)
        zeros = np.float32(0) if self.zeros is None else np.repeat(self.zeros, g, axis=1)
        return (codes - zeros) * np.repeat(self.scales, g, axis=1)

    def dense(self) -> np.ndarray:
        """The float32 weight of logical shape ``shape`` this encoding stands for."""
        return self.scatter(self.stored_values())

    def scatter(self, values: np.ndarray) -> np.ndarray:
        """``values`` ``[O, J]`` (stored values, or codes) at their places in the logical weight, zeros at the
        places N:M dropped."""
        if self.nm is None:
            return values.reshape(self.shape)
        n, m = self.nm
        o, j = values.shape
        w = np.zeros((o, j // n, m), values.dtype)
        np.put_along_axis(w, self.indices.reshape(o, j // n, n).astype(np.int64), values.reshape(o, j // n, n), 2)
        return w.reshape(self.shape)

    def nbytes(self) -> int:
        """Bytes as stored (packed codes and indices included; int7 codes take a byte each)."""
        bits = (4 if self.quant.bits == 4 else 8) if self.quant else 32
        total = self.values.size * bits // 8
        if self.nm:
            total += self.indices.size * index_bits(self.nm[1]) // 8
        for a in (self.scales, self.zeros):
            total += 0 if a is None else a.size * 4
        return total + (self.rows * 4 if self.activation else 0)


def index_bits(m: int) -> int:
    return 2 if m <= 4 else 4 if m <= 16 else 8


def window_picks(indices: np.ndarray, n: int, m: int) -> np.ndarray:
    """In-group indices ``[O, J]`` of an N:M weight as each kept value's input within its window of
    ``PICK_WINDOW`` inputs (``picks_fit``): ``indices % m`` undoes it."""
    group = np.arange(indices.shape[1]) % (PICK_WINDOW * n // m) // n  # the value's group within its window
    return (group * m + indices).astype(np.uint8)


def picks_fit(nm: tuple[int, int], reduction: int, dot: int = 4) -> bool:
    """Whether an N:M W8A8 weight can be stored as window picks for dot products of ``dot`` kept values: ``m``
    divides the window, a window keeps whole dot products, and the reduction is whole windows."""
    n, m = nm
    return PICK_WINDOW % m == 0 and PICK_WINDOW * n // m % dot == 0 and reduction % PICK_WINDOW == 0


def nm_compress(w: np.ndarray, mask: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Kept values ``[O, J]`` and their in-group indices of a 2-D ``w`` whose boolean ``mask`` keeps exactly ``n``
    of every ``m`` consecutive columns."""
    o, k = w.shape
    if k % m:
        raise ValueError(f"N:M {n}:{m}: the reduction size {k} is not a multiple of {m}")
    kept = mask.reshape(o, k // m, m)
    if not np.all(kept.sum(axis=2) == n):
        raise ValueError(f"N:M {n}:{m}: the mask does not keep exactly {n} of every {m}")
    idx = np.argsort(~kept, axis=2, kind="stable")[:, :, :n]  # kept positions, ascending
    values = np.take_along_axis(w.reshape(o, k // m, m), idx, 2)
    return values.reshape(o, -1), idx.reshape(o, -1).astype(np.uint8)


class W8A8:
    """The arithmetic of a W8A8 ``linear`` or ``conv`` (see the module docstring), exactly as the integer kernels
    compute it; the codes and output scales are prepared once, not per call. The op itself runs between
    ``quantize`` and ``dequantize`` on float64 integers (``codes``, logical shape), whose sums are exact."""

    def __init__(self, enc: EncodedWeight):
        import torch

        scale, self.zero = enc.activation
        self.scale = torch.tensor(scale, dtype=torch.float32)
        self.codes = torch.from_numpy(enc.scatter(enc.values.astype(np.float64)))
        self.out_scale = self.scale * torch.from_numpy(enc.scales.reshape(-1))

    def quantize(self, x: "torch.Tensor") -> "torch.Tensor":
        """``xq - zero`` as float64: integers (padding a convolution's input with 0 pads ``xq`` with ``zero``)."""
        import torch

        return (torch.clamp(torch.round(x / self.scale) + self.zero, 0, 255) - self.zero).to(torch.float64)

    def dequantize(self, acc: "torch.Tensor", bias: "torch.Tensor | None", channel_axis: int) -> "torch.Tensor":
        """The op's float64 integer sums rounded to float32 (like int32 -> float32), scaled per output channel."""
        import torch

        view = [1] * acc.dim()
        view[channel_axis] = -1
        y = acc.to(torch.float32) * self.out_scale.reshape(view)
        return y if bias is None else y + bias.reshape(view)


# ---- bit packing ------------------------------------------------------------------------------------------------
def pack_bits(a: np.ndarray, bits: int) -> np.ndarray:
    """Packs the last axis of an array of small unsigned ints ``bits`` each, lowest bits first, into uint8."""
    per = 8 // bits
    if a.shape[-1] % per:
        raise ValueError(f"cannot pack {a.shape[-1]} {bits}-bit fields into whole bytes")
    a = a.astype(np.uint8).reshape(*a.shape[:-1], -1, per)
    shifts = (np.arange(per, dtype=np.uint8) * bits)
    return np.bitwise_or.reduce(a << shifts, axis=-1).astype(np.uint8)


def unpack_bits(a: np.ndarray, bits: int) -> np.ndarray:
    per = 8 // bits
    shifts = (np.arange(per, dtype=np.uint8) * bits)
    return ((a[..., None] >> shifts) & ((1 << bits) - 1)).reshape(*a.shape[:-1], -1).astype(np.uint8)


# ---- to and from graph params ----------------------------------------------------------------------------------
def store(graph: "Graph", name: str, enc: EncodedWeight) -> None:
    """Replaces param ``name`` of ``graph`` by ``enc`` (codes in the param, companions as new params)."""
    from sparsecc.ir.graph import Encoding, Param

    meta: dict = {"shape": list(enc.shape)}
    data = enc.values
    if enc.quant is not None:
        q = enc.quant
        if data.size and (data.min() < q.qmin or data.max() > q.qmax):
            raise ValueError(f"{q.name} codes of {name} span [{data.min()}, {data.max()}], outside [{q.qmin}, "
                             f"{q.qmax}]")
        meta["quant"] = {"bits": q.bits, "group": q.group, "symmetric": q.symmetric}
        if q.bits == 4:
            data = pack_bits(data + (8 if q.symmetric else 0), 4)
        else:
            data = data.astype(np.int8 if q.symmetric else np.uint8)
        meta["scales"] = graph.add_param(f"{name}.scales", enc.scales.astype(np.float32))
        if not q.symmetric:
            meta["zeros"] = graph.add_param(f"{name}.zeros", enc.zeros.astype(np.float32))
    else:
        data = data.astype(np.float32)
    if enc.activation is not None:
        if enc.quant is None or not enc.quant.symmetric or enc.quant.group:
            raise ValueError(f"W8A8 takes int8 (or int7, int4) symmetric per-channel weights, not {enc.kind}")
        if enc.quant.bits == 4 and len(enc.shape) != 2:
            raise ValueError(f"W4A8 is for linear weights only, not a weight of shape {list(enc.shape)}")
        if enc.nm and len(enc.shape) != 2:
            raise ValueError(f"N:M W8A8 is for linear weights only, not {enc.kind} of shape {list(enc.shape)}")
        meta["activation"] = {"scale": float(enc.activation[0]), "zero": int(enc.activation[1])}
        colsums = enc.values.astype(np.int32).sum(axis=1, keepdims=True).astype(np.int32)
        meta["colsums"] = graph.add_param(f"{name}.colsums", colsums)
    if enc.nm is not None:
        meta["nm"] = list(enc.nm)
        meta["indices"] = graph.add_param(f"{name}.indices", pack_bits(enc.indices, index_bits(enc.nm[1])))
    graph.params[name] = Param(np.ascontiguousarray(data), Encoding(enc.kind, meta))
    graph.types[name] = graph.params[name].type


def pack_halves(codes: np.ndarray) -> np.ndarray:
    """``[..., 2h]`` nibbles as ``[..., h]`` bytes: the first ``h`` in the low nibbles, the last ``h`` in the high
    ones (a W4A8 weight's blocks: one byte shift and a mask per half unpack them)."""
    h = codes.shape[-1] // 2
    return (codes[..., :h] | codes[..., h:] << 4).astype(np.uint8)


def unpack_halves(packed: np.ndarray) -> np.ndarray:
    return np.concatenate([packed & 0xF, packed >> 4], axis=-1).astype(np.uint8)


def _nibble_blocks(meta: dict) -> bool:
    """Whether the param's data is a re-laid-out dense W4A8 weight (nibbles packed per block, ``pack_halves``)."""
    return "activation" in meta and "layout" in meta and meta["quant"]["bits"] == 4 and "nm" not in meta


def codes_hold_picks(meta: dict) -> bool:
    """Whether the param's data is a re-laid-out N:M W4A8 weight: per kept value one byte, its window pick in the
    low nibble and its code plus 8 in the high one (the kernel masks the one, shifts out the other); such a weight
    has no ``indices`` companion."""
    return stores_picks(meta) and "layout" in meta and meta["quant"]["bits"] == 4


PICK_MASK, CODE_SHIFT = PICK_WINDOW - 1, 4
"""Where ``codes_hold_picks`` bytes keep the pick (``byte & PICK_MASK``) and the code (``byte >> CODE_SHIFT``)."""


def _from_layout(arr: np.ndarray, meta: dict, data: bool) -> np.ndarray:
    if "layout" not in meta:
        return arr
    if data and codes_hold_picks(meta):
        return pack_bits(unpack(arr, meta["layout"]) >> CODE_SHIFT, 4)
    if data and _nibble_blocks(meta):
        blocks = unpack_halves(arr)
        codes = unpack(blocks.reshape(*blocks.shape[:2], layout_block(meta["layout"]), -1), meta["layout"])
        return pack_bits(codes, 4)
    arr = unpack(arr, meta["layout"] if data else companion_layout(meta["layout"]))
    return arr.view("<u1") if arr.dtype == np.uint32 else arr


def companion_layout(layout: str) -> str:
    """Companions are ``[O, few]`` arrays: only the output block of the weight's layout applies to them."""
    return blocked_layout(layout_block(layout))


def _to_layout(arr: np.ndarray, layout: str, words: bool) -> np.ndarray:
    return pack(arr.view("<u4") if words else arr, layout)


def _bit_packed(meta: dict) -> dict[str, bool]:
    """Which of a compressed weight's arrays (``"data"`` and companions) hold bit-packed fields (re-laid out, an
    N:M W8A8 weight's indices become window picks, one per byte)."""
    return {"data": (meta.get("quant") or {}).get("bits") == 4 and "activation" not in meta,
            "indices": "nm" in meta and index_bits(meta["nm"][1]) < 8 and not stores_picks(meta), "scales": False,
            "zeros": False, "colsums": False}


def stores_picks(meta: dict) -> bool:
    """Whether the weight's indices are stored as window picks in its layout, once it has one (N:M W8A8)."""
    return "nm" in meta and "activation" in meta


def companion(graph: "Graph", name: str, key: str) -> np.ndarray | None:
    """The (unpacked) array of ``name``'s companion ``key``, or None."""
    meta = graph.params[name].encoding.meta
    if key == "indices" and codes_hold_picks(meta):
        arr = graph.params[name].data & PICK_MASK
    elif key not in meta:
        return None
    else:
        arr = graph.params[meta[key]].data
    if key == "indices" and stores_picks(meta) and "layout" in meta:
        m = meta["nm"][1]
        return pack_bits(unpack(arr, meta["layout"]) % m, index_bits(m))
    return _from_layout(arr, meta, data=False)


def load(graph: "Graph", name: str) -> EncodedWeight:
    """The ``EncodedWeight`` param ``name`` stores (layouts undone, bits unpacked)."""
    param = graph.params[name]
    meta = param.encoding.meta
    data = _from_layout(param.data, meta, data=True)
    quant = QuantSpec(**meta["quant"]) if "quant" in meta else None
    if quant is not None:
        if quant.bits == 4:
            data = unpack_bits(data, 4).astype(np.int32) - (8 if quant.symmetric else 0)
        data = data.astype(np.int32)
    nm = tuple(meta["nm"]) if "nm" in meta else None
    indices = None if nm is None else unpack_bits(companion(graph, name, "indices"), index_bits(nm[1]))
    act = meta.get("activation")
    return EncodedWeight(tuple(meta["shape"]), data, nm, indices, quant, companion(graph, name, "scales"),
                         companion(graph, name, "zeros"), None if act is None else (act["scale"], act["zero"]))


def is_compressed(graph: "Graph", name: str) -> bool:
    p = graph.params.get(name)
    return p is not None and p.encoding.kind != "dense"


def cpu_layout(meta: dict, block: int, dot: int = 4) -> str:
    """The layout CPU kernels read a compressed weight in: ``OI{b}o``, or for W8A8's dot products ``OI{b}o{dot}i``
    (``dot`` inputs per output and instruction: 4 for x86 ``vpdpbusd``, 2 for AVX2 ``vpmaddwd``)."""
    return blocked_layout(block, dot if "activation" in meta else 0)


def can_relayout(graph: "Graph", name: str, block: int, dot: int = 4) -> bool:
    """Whether ``relayout`` applies: rows a multiple of ``block``, bit-packed arrays in whole uint32 words, W8A8
    inputs in whole groups of ``dot``."""
    param = graph.params[name]
    meta = param.encoding.meta
    arrays = {"data": param.data, **{k: graph.params[meta[k]].data for k in COMPANIONS if k in meta}}
    packed = _bit_packed(meta)
    reduction = int(np.prod(meta["shape"][1:]))
    return "layout" not in meta and meta["shape"][0] % block == 0 and all(
        a.shape[1] % 4 == 0 for k, a in arrays.items() if packed[k]) and (
        "activation" not in meta or reduction % dot == 0) and (
        not stores_picks(meta) or picks_fit(tuple(meta["nm"]), reduction, dot))


def relayout(graph: "Graph", name: str, block: int, dot: int = 4) -> None:
    """Stores compressed param ``name`` in ``cpu_layout`` and its companions in blocks of ``block`` rows (every
    array is ``[O, ...]`` per row; bit-packed uint8 arrays become uint32 words first); an N:M W8A8 weight's
    indices become window picks in the weight's own layout (an int4 one's, in its codes' bytes)."""
    from sparsecc.ir.graph import Encoding, Param

    param = graph.params[name]
    layout = cpu_layout(param.encoding.meta, block, dot)
    meta = dict(param.encoding.meta, layout=layout)
    words = _bit_packed(meta)
    picks = None
    if stores_picks(meta):  # one pick per kept value, laid out like the codes
        n, m = meta["nm"]
        picks = pack(window_picks(unpack_bits(graph.params[meta["indices"]].data, index_bits(m)), n, m), layout)
    if codes_hold_picks(meta):
        del graph.params[meta["indices"]], graph.types[meta["indices"]]
        del meta["indices"]
    for key in COMPANIONS:
        if key in meta:
            c = meta[key]
            if key == "indices" and picks is not None:
                data = picks
            else:
                data = _to_layout(graph.params[c].data, companion_layout(layout), words[key])
            graph.params[c] = Param(data, Encoding("dense", {"companion_of": name}))
            graph.types[c] = graph.params[c].type
    if codes_hold_picks(meta):
        data = pack(unpack_bits(param.data, 4), layout) << CODE_SHIFT | picks
    elif _nibble_blocks(meta):
        blocks = pack(unpack_bits(param.data, 4), layout)
        data = pack_halves(blocks.reshape(*blocks.shape[:2], -1))
    else:
        data = _to_layout(param.data, layout, words["data"])
    graph.params[name] = Param(data, Encoding(param.encoding.kind, meta))
    graph.types[name] = graph.params[name].type
