"""The exceptions users see. Each one carries a one-line message that names the problem.

The CLI prints ``str(error)`` for any ``SparseccError`` and exits non-zero without a traceback.
"""
from __future__ import annotations


class SparseccError(Exception):
    """Base class of every error sparsecc raises on purpose."""


class UnsupportedOpError(SparseccError):
    """An op, attribute or dtype that sparsecc cannot compile faithfully.

    Raised instead of ever producing a silently wrong result.
    """

    def __init__(self, op_type: str, node: str = "", source: str = "", detail: str = ""):
        self.op_type, self.node, self.source, self.detail = op_type, node, source, detail
        where = f" (node '{node}'" + (f", from {source}" if source else "") + ")" if node or source else ""
        super().__init__(f"unsupported op {op_type}{where}" + (f": {detail}" if detail else ""))


class ModelLoadError(SparseccError):
    """A model file that is missing, truncated or not a model."""


class InputError(SparseccError):
    """Run-time inputs whose count, shape or dtype do not match the compiled signature."""


class ArtifactError(SparseccError):
    """A .scc artifact that is tampered, truncated or from an incompatible format version."""


class VerificationError(SparseccError):
    """An IR graph that breaks an invariant (a bug in a frontend or pass, not in the user's model)."""
