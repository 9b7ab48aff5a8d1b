"""Physical layouts a backend may store a dense weight in (``Encoding.meta["layout"]``).

A layout moves numbers, never changes them: ``unpack(pack(w, l), l) == w`` exactly. Kernels read the packed
form directly (so the re-layout happens once, at compile time); the interpreter and ``inspect`` unpack.

``OI{b}o``: a 2-D ``[O, I]`` weight as ``[O/b, I, b]``, so a kernel streams ``b`` consecutive outputs per input
element (one vector FMA per broadcast input), as in TVM's ``NCHW16c``-style notation.
``OI{b}o{i}i``: ``[O/b, I/i, b, i]``, ``i`` consecutive inputs of each output together: the operand of an integer
dot-product instruction (x86 ``vpdpbusd`` reads 16 outputs x 4 int8 inputs).
``OIHW{b}o``: a 4-D ``[O, I, H, W]`` convolution weight as ``[O/b, I, H, W, b]``: ``b`` output channels per vector.
"""
from __future__ import annotations

import re

import numpy as np

_BLOCKED = re.compile(r"OI(\d+)o(?:(\d+)i)?")
_CONV = re.compile(r"OIHW(\d+)o")


def _blocks(layout: str) -> tuple[int, int]:
    m = _BLOCKED.fullmatch(layout)
    if m is None:
        raise ValueError(f"unknown weight layout {layout!r} (known: OI<b>o, OI<b>o<i>i, OIHW<b>o, e.g. OI16o, "
                         "OI16o4i, OIHW16o)")
    return int(m.group(1)), int(m.group(2) or 0)


def _conv_block(layout: str) -> int | None:
    m = _CONV.fullmatch(layout)
    return int(m.group(1)) if m else None


def layout_block(layout: str) -> int:
    """The output block ``b`` of an ``OI{b}o`` / ``OI{b}o{i}i`` / ``OIHW{b}o`` layout."""
    return _conv_block(layout) or _blocks(layout)[0]


def conv_layout(block: int) -> str:
    return f"OIHW{block}o"


def blocked_layout(block: int, inner: int = 0) -> str:
    return f"OI{block}o" + (f"{inner}i" if inner else "")


def pack(w: np.ndarray, layout: str) -> np.ndarray:
    conv = _conv_block(layout)
    if conv is not None:
        o, *rest = w.shape
        if w.ndim != 4 or o % conv:
            raise ValueError(f"layout {layout}: needs a 4-D weight with a multiple of {conv} output channels, "
                             f"not {list(w.shape)}")
        return np.ascontiguousarray(w.reshape(o // conv, conv, *rest).transpose(0, 2, 3, 4, 1))
    b, i = _blocks(layout)
    o, k = w.shape
    if o % b:
        raise ValueError(f"layout {layout}: {o} output rows are not a multiple of {b}")
    if i and k % i:
        raise ValueError(f"layout {layout}: {k} inputs are not a multiple of {i}")
    if i:
        return np.ascontiguousarray(w.reshape(o // b, b, k // i, i).transpose(0, 2, 1, 3))
    return np.ascontiguousarray(w.reshape(o // b, b, k).transpose(0, 2, 1))


def unpack(w: np.ndarray, layout: str) -> np.ndarray:
    conv = _conv_block(layout)
    if conv is not None:
        ob, ci, kh, kw, _ = w.shape
        return np.ascontiguousarray(w.transpose(0, 4, 1, 2, 3).reshape(ob * conv, ci, kh, kw))
    b, i = _blocks(layout)
    if i:
        ob, ki, _, _ = w.shape
        return np.ascontiguousarray(w.transpose(0, 2, 1, 3).reshape(ob * b, ki * i))
    ob, k, _ = w.shape
    return np.ascontiguousarray(w.transpose(0, 2, 1).reshape(ob * b, k))


def logical_shape(shape: tuple[int, ...], layout: str | None) -> tuple[int, ...]:
    """The ``[O, I]`` shape of a weight stored as ``shape`` in ``layout`` (``shape`` itself when unpacked)."""
    if layout is None:
        return tuple(shape)
    conv = _conv_block(layout)
    if conv is not None:
        return (shape[0] * conv, *shape[1:4])
    b, i = _blocks(layout)
    return (shape[0] * b, shape[1] * i if i else shape[1])
