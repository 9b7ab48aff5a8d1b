"""A content-keyed memo for the pass's expensive, deterministic decompositions, in memory and on disk.

The planner compresses every layer with several candidates and the final compile compresses the chosen ones
again: the same SVD, whitener or GPTQ run on the same arrays. Keys are the SHA-256 of the arrays' bytes (with
their shapes and dtypes) and the call's other arguments, so a hit is the same computation, never a stale one.

Entries also go to ``$SPARSECC_CACHE/memo`` (``sparsecc.caches``), one pickle each, the least recently used
dropped beyond ``DISK_BYTES``: a second compile of the same model (another ``--compress auto`` budget, a new
process) reads them instead of recomputing (MiniLM: GPTQ and the activation-aware SVDs were ~30 s of a warm
``--compress auto``). Only files this module wrote under that directory are read back; a corrupt one is
recomputed and rewritten.
"""
from __future__ import annotations

import collections
import hashlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from sparsecc.caches import cache_root

_CACHE: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
SIZE = 64
"""Entries kept in memory (least recently used dropped): a MiniLM's 36 layers' GPTQ results fit."""
DISK_BYTES = 2 << 30
"""Bytes of entries kept on disk (least recently used dropped): MiniLM's planner writes ~0.5 GB."""


def content_digest(arrays: Iterable[np.ndarray], *args: Any) -> bytes:
    """SHA-256 of ``arrays`` (shapes, dtypes, bytes) and the ``repr`` of ``args``."""
    digest = hashlib.sha256(repr(args).encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.shape}{a.dtype}".encode())
        digest.update(a.tobytes())
    return digest.digest()


def remembered(name: str, arrays: tuple[np.ndarray, ...], fn: Callable[[], Any], *args: Any) -> Any:
    """``fn()``, remembered under ``name``, the contents of ``arrays`` and ``args``. Callers must not modify the
    result (it is shared with later hits)."""
    key = content_digest(arrays, name, *args)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    path = cache_root() / "memo" / f"{name}-{key.hex()}.pkl"
    result = _load(path)
    if result is None:
        result = fn()
        _store(path, result)
    _CACHE[key] = result
    while len(_CACHE) > SIZE:
        _CACHE.popitem(last=False)
    return result


def _load(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            result = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
        return None
    os.utime(path)  # recently used
    return result


def _store(path: Path, result: Any) -> None:
    """Writes ``result`` atomically, then drops the least recently used entries beyond ``DISK_BYTES``. A cache
    that cannot be written (read-only home, full disk) only costs the recomputation next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        entries = sorted(path.parent.glob("*.pkl"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for entry in entries:
            total += entry.stat().st_size
            if total > DISK_BYTES:
                entry.unlink(missing_ok=True)
    except OSError:
        return
