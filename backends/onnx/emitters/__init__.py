"""Emitters, one per canonical op, in one registry (``EMITTERS``); importing this package fills it."""
from . import elementwise, nn, reduce, tensor  # noqa: F401  (each module registers its emitters)
from .registry import EMITTERS, emitter

__all__ = ["EMITTERS", "emitter"]
