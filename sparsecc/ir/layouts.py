"""Physical layouts a backend may store a dense weight in (``Encoding.meta["layout"]``).

A layout moves numbers, never changes them: ``unpack(pack(w, l), l) == w`` exactly. Kernels read the packed
form directly (so the re-layout happens once, at compile time); the interpreter and ``inspect`` unpack.

``OI{b}o``: a 2-D ``[O, I]`` weight as ``[O/b, I, b]``, so a kernel streams ``b`` consecutive outputs per input
element (one vector FMA per broadcast input), as in TVM's ``NCHW16c``-style notation.
"""
from __future__ import annotations

import re

import numpy as np

_BLOCKED = re.compile(r"OI(\d+)o")


def layout_block(layout: str) -> int:
    """The block ``b`` of an ``OI{b}o`` layout."""
    m = _BLOCKED.fullmatch(layout)
    if m is None:
        raise ValueError(f"unknown weight layout {layout!r} (known: OI<b>o, e.g. OI16o)")
    return int(m.group(1))


def blocked_layout(block: int) -> str:
    return f"OI{block}o"


def pack(w: np.ndarray, layout: str) -> np.ndarray:
    b = layout_block(layout)
    o, i = w.shape
    if o % b:
        raise ValueError(f"layout {layout}: {o} output rows are not a multiple of {b}")
    return np.ascontiguousarray(w.reshape(o // b, b, i).transpose(0, 2, 1))


def unpack(w: np.ndarray, layout: str) -> np.ndarray:
    b = layout_block(layout)
    ob, i, _ = w.shape
    return np.ascontiguousarray(w.transpose(0, 2, 1).reshape(ob * b, i))


def logical_shape(shape: tuple[int, ...], layout: str | None) -> tuple[int, ...]:
    """The ``[O, I]`` shape of a weight stored as ``shape`` in ``layout`` (``shape`` itself when unpacked)."""
    if layout is None:
        return tuple(shape)
    b = layout_block(layout)
    return (shape[0] * b, shape[1])
