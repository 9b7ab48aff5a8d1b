"""What to compress with: the ``--compress`` string, parsed once into a ``CompressionSpec``.

Grammar (stages joined by ``+``, each optionally ``@method``)::

    int8 | int4 | int4-g128 | int8-asym | int4-g64-asym      weight quantization   methods: rtn, gptq
    w8a8                                                     int8 weights and statically quantized uint8 inputs
                                                             (scales from calibration; integer dot products)
                                                             methods: rtn, gptq
    w7a8                                                     the same with int7 weight codes (+-63), which AVX2
                                                             without VNNI multiplies 32 at a time (vpmaddubsw)
    w4a8                                                     the same with int4 weight codes (+-7) packed two per
                                                             byte: half W8A8's weight bytes (linear layers only)
    2:4+w7a8 | 2:4+w4a8 | N:M+w8a8                           N:M sparsity of those integer weights (linear layers):
                                                             the kernel multiplies the kept codes only
    2:4 | 1:4 | 4:8 | N:M                                    N:M sparsity   methods: magnitude, wanda, sparsegpt
    lowrank | lowrank:0.5                                    factorization, keeping that fraction of the params
                                                             methods: svd, asvd (activation-aware)
    lrc:16                                                   rank-16 compensation of the other stages' error
                                                             methods: svd, eora (activation-aware)

e.g. ``2:4+int4-g128``, ``2:4@sparsegpt+int8``, ``2:4+w7a8``, ``lowrank:0.4+int8``, ``int4-g128@rtn+lrc:32``.
Without ``@``, a stage takes its data-aware method when calibration data is available (sparsegpt, gptq, asvd, eora)
and its data-free one otherwise (magnitude, rtn, svd, svd).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from sparsecc.errors import SparseccError
from sparsecc.ir.encodings import QuantSpec

METHODS = {"quant": ("rtn", "gptq"), "nm": ("magnitude", "wanda", "sparsegpt"), "lowrank": ("svd", "asvd"),
           "lrc": ("svd", "eora")}
"""Per stage: its (data-free, data-aware, ...) methods; the first is the data-free default, the last the
data-aware one."""

INTEGER_SCHEMES = {"w8a8": 8, "w7a8": 7, "w4a8": 4}
"""Stages that quantize the layer's input too (static uint8 grid), and the bits of their weight codes."""
_QUANT = re.compile(r"int(4|8)(?:-g(\d+))?(-asym)?")
_NM = re.compile(r"(\d+):(\d+)")
_LOWRANK = re.compile(r"lowrank(?::([0-9.]+))?")
_LRC = re.compile(r"lrc:(\d+)")


@dataclass(frozen=True)
class CompressionSpec:
    text: str
    quant: QuantSpec | None = None
    nm: tuple[int, int] | None = None
    lowrank: float | None = None
    """Fraction of the dense parameters the two factors keep."""
    compensation: int | None = None
    """Rank of the compensation side path."""
    activations: bool = False
    """W8A8: the layers' inputs are quantized too (static per-tensor uint8 grid from calibration)."""
    methods: tuple[tuple[str, str], ...] = ()
    """Explicit ``(stage, method)`` choices; the others default by calibration availability."""

    def method(self, stage: str, calibrated: bool) -> str:
        """The stage's method for a layer: the explicit choice, else by calibration; a layer without input
        statistics (e.g. a grouped convolution, which has no Gram) always takes the data-free method."""
        chosen = dict(self.methods).get(stage)
        if not calibrated:
            return METHODS[stage][0]
        return chosen if chosen is not None else METHODS[stage][-1]

    def needs_calibration(self) -> bool:
        """Whether a stage was explicitly given a data-aware method, or inputs are quantized (static scales)."""
        return self.activations or any(m != METHODS[s][0] for s, m in self.methods)


def parse_spec(text: str) -> CompressionSpec:
    """Parses a ``--compress`` string (see the module docstring); errors name the bad stage."""
    if not isinstance(text, str) or not text.strip():
        raise SparseccError(f"compress: expected a string such as 'int8' or '2:4+int4-g128', got {text!r}")
    fields: dict = {}
    methods = []
    for stage_text in text.replace(" ", "").split("+"):
        stage_text, at, method = stage_text.partition("@")
        try:
            stage, value = _stage(stage_text, text)
        except ValueError as e:
            raise SparseccError(f"compress {text!r}: stage {stage_text!r}: {e}") from None
        if at and not method:
            raise SparseccError(f"compress {text!r}: {stage_text}@ names no method (expected one of "
                                f"{', '.join(METHODS[stage])})")
        if stage in fields:
            raise SparseccError(f"compress {text!r}: two {stage} stages")
        fields[stage] = value
        if method:
            if method not in METHODS[stage]:
                raise SparseccError(f"compress {text!r}: unknown method '{method}' for {stage_text} "
                                    f"(expected one of {', '.join(METHODS[stage])})")
            methods.append((stage, method))
    if "lowrank" in fields and "nm" in fields:
        raise SparseccError(f"compress {text!r}: N:M sparsity of low-rank factors is not supported")
    if set(fields) == {"lrc"}:
        raise SparseccError(f"compress {text!r}: lrc compensates another stage's error; combine it with one, e.g. "
                            "int4-g128+lrc:16")
    activations = fields.get("quant") in INTEGER_SCHEMES
    if activations:
        scheme = fields["quant"]
        if set(fields) - {"quant", "nm"}:
            raise SparseccError(f"compress {text!r}: {scheme} composes with N:M sparsity only (e.g. 2:4+{scheme}), "
                                "not with other stages yet")
        fields["quant"] = QuantSpec(INTEGER_SCHEMES[fields["quant"]])
    return CompressionSpec(text, fields.get("quant"), fields.get("nm"), fields.get("lowrank"), fields.get("lrc"),
                           activations=activations, methods=tuple(methods))


def _stage(stage: str, text: str) -> tuple[str, object]:
    if stage in INTEGER_SCHEMES:
        return "quant", stage
    if m := _QUANT.fullmatch(stage):
        return "quant", QuantSpec(int(m.group(1)), int(m.group(2)) if m.group(2) else None, not m.group(3))
    if m := _NM.fullmatch(stage):
        n, mm = int(m.group(1)), int(m.group(2))
        if not 0 < n < mm:
            raise SparseccError(f"compress {text!r}: N:M needs 0 < N < M, got {stage}")
        return "nm", (n, mm)
    if m := _LOWRANK.fullmatch(stage):
        ratio = float(m.group(1)) if m.group(1) else 0.5
        if not 0 < ratio < 1:
            raise SparseccError(f"compress {text!r}: lowrank keeps a fraction in (0, 1) of the params, got {ratio}")
        return "lowrank", ratio
    if m := _LRC.fullmatch(stage):
        if int(m.group(1)) < 1:
            raise ValueError("the compensation rank must be at least 1")
        return "lrc", int(m.group(1))
    raise SparseccError(f"compress {text!r}: unknown stage {stage!r} (expected int8, int4[-gN][-asym], w8a8, w7a8, "
                        "w4a8, N:M, lowrank[:RATIO] or lrc:RANK)")
