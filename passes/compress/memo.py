"""A small content-keyed memo for the pass's expensive, deterministic decompositions.

The planner compresses every layer with several candidates and the final compile compresses the chosen ones
again: the same SVD, whitener or GPTQ run on the same arrays. Keys are the SHA-256 of the arrays' bytes (with
their shapes and dtypes) and the call's other arguments, so a hit is the same computation, never a stale one.
"""
from __future__ import annotations

import collections
import hashlib
from typing import Any, Callable

import numpy as np

_CACHE: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
SIZE = 64
"""Entries kept (least recently used dropped): a MiniLM's 36 layers' GPTQ results fit."""


def remembered(name: str, arrays: tuple[np.ndarray, ...], fn: Callable[[], Any], *args: Any) -> Any:
    """``fn()``, remembered under ``name``, the contents of ``arrays`` and ``args``. Callers must not modify the
    result (it is shared with later hits)."""
    digest = hashlib.sha256(f"{name}{args!r}".encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.shape}{a.dtype}".encode())
        digest.update(a.tobytes())
    key = digest.digest()
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    result = _CACHE[key] = fn()
    while len(_CACHE) > SIZE:
        _CACHE.popitem(last=False)
    return result
