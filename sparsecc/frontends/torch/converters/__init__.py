"""The one registry: aten overload name (``"aten.addmm.default"``) -> converter.

A converter takes a ``Call`` and returns the IR value name of its result (or a tuple, for multi-output
ops; ``Unavailable`` for outputs it does not compute). Anything it cannot convert exactly raises
``call.unsupported(detail)``.
"""
from __future__ import annotations

from typing import Any, Callable

from ..importer import Call

Converter = Callable[[Call], Any]
CONVERTERS: dict[str, Converter] = {}


def converter(*ops: str) -> Callable[[Converter], Converter]:
    def wrap(fn: Converter) -> Converter:
        for op in ops:
            if op in CONVERTERS:
                raise AssertionError(f"two converters for {op}")
            CONVERTERS[op] = fn
        return fn
    return wrap


from . import elementwise, nn, reduce, tensor  # noqa: E402,F401  (registration)
