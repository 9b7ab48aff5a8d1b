"""The ``--budget`` string: what the plan must fit in.

    latency=0.5      end-to-end latency at most half the dense model's, measured on the target
    size=0.25        compressible layers' weights at most a quarter of their float32 bytes (may choose encodings
                     slower than dense on the target: the plan's predicted latency shows it)
    latency=0.6,size=0.3   both

``max_drop`` (``--max-drop``) bounds the predicted loss increase instead (the sensitivity loss: relative output
MSE for the default label-free loss); without a budget the planner then minimizes latency (or bytes) under it.
"""
from __future__ import annotations

from dataclasses import dataclass

from sparsecc.errors import SparseccError


@dataclass(frozen=True)
class Budget:
    latency: float | None = None
    """Fraction of the dense model's measured end-to-end latency."""
    size: float | None = None
    """Fraction of the compressible layers' float32 weight bytes."""
    max_drop: float | None = None
    """Upper bound on the predicted damage (loss increase)."""

    @property
    def latency_bound(self) -> bool:
        """Whether latency is part of the goal (a latency cap, or latency minimized under ``max_drop``): then only
        encodings faster than the dense layer on the target may be chosen. A size-only budget asks for bytes and
        may take slower ones; the plan's predicted latency says so."""
        return self.latency is not None or self.size is None

    def __str__(self) -> str:
        parts = [f"{k}={v:g}" for k, v in (("latency", self.latency), ("size", self.size), ("max-drop", self.max_drop))
                 if v is not None]
        return ",".join(parts)


def parse_budget(text: str | None, max_drop: float | None = None) -> Budget:
    """``"latency=0.5"``, ``"size=0.25"``, ``"latency=0.6,size=0.3"`` (and/or ``max_drop``) -> ``Budget``."""
    fields: dict[str, float] = {}
    for part in (text or "").replace(" ", "").split(","):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if key not in ("latency", "size") or not eq:
            raise SparseccError(f"budget {text!r}: expected latency=FRACTION and/or size=FRACTION, got {part!r}")
        if key in fields:
            raise SparseccError(f"budget {text!r}: {key} given twice")
        try:
            fields[key] = float(value)
        except ValueError:
            raise SparseccError(f"budget {text!r}: {key}={value!r} is not a number") from None
        if not 0 < fields[key] <= 1:
            raise SparseccError(f"budget {text!r}: {key} is a fraction of the dense model's, in (0, 1]; got {value}")
    if max_drop is not None and not max_drop >= 0:
        raise SparseccError(f"max_drop must be a non-negative predicted loss increase, got {max_drop}")
    if not fields and max_drop is None:
        raise SparseccError("compress='auto' needs a budget (e.g. budget='latency=0.5' or 'size=0.25') and/or "
                            "max_drop=")
    return Budget(fields.get("latency"), fields.get("size"), max_drop)
