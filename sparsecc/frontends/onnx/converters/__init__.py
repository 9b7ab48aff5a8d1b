"""ONNX op_type -> converter: one registry, filled by the modules below (grouped by kind)."""
from __future__ import annotations

from . import attention, elementwise, loss, nn, normalization, quantize, reduce, softmax, tensor  # noqa: F401  (they register their converters)
from .common import CONVERTERS

__all__ = ["CONVERTERS"]
