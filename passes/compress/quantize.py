"""Weight quantization of a 2-D weight ``[O, K]`` onto the ``QuantSpec`` grid that ``EncodedWeight`` decodes:
round-to-nearest, and GPTQ (Frantar et al. 2022), whose OBS column sweep SparseGPT shares.

The grid of a group of weights: symmetric ``scale = max|w| / qmax``, codes ``round(w / scale)``; asymmetric a
min/max grid that contains 0, ``scale = (max - min) / (2^bits - 1)``, ``zero = round(-min / scale)``, codes
``round(w / scale) + zero``. Rounding is half-to-even; an all-zero group gets scale 1 (codes 0).
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch

from sparsecc.ir.encodings import EncodedWeight, QuantSpec

from .memo import remembered

Rule = Callable[[int, Callable[[int], torch.Tensor]], torch.Tensor]
"""A sweep's choice for column ``col``: ``rule(col, ahead)`` returns the column's new value, where ``ahead(width)``
is the current (error-updated) weights of columns ``col .. col + width``."""


# ---- the grid ---------------------------------------------------------------------------------------------------
def fit_grid(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale and zero point (None when symmetric) of every row of ``w [..., c]``, over its last axis, float32."""
    w = w.float()
    if spec.symmetric:
        scale = w.abs().amax(-1) / spec.qmax
        return torch.where(scale > 0, scale, 1.0), None
    lo, hi = w.amin(-1).clamp(max=0), w.amax(-1).clamp(min=0)
    scale = (hi - lo) / spec.qmax
    scale = torch.where(scale > 0, scale, 1.0)
    return scale, torch.round(-lo / scale)


def to_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, spec: QuantSpec) -> torch.Tensor:
    """The (float-valued) integer codes of ``w`` on the grid; ``scale``/``zero`` broadcast against ``w``."""
    codes = torch.round(w / scale) + (0 if zero is None else zero)
    return codes.clamp(spec.qmin, spec.qmax)


def fake_quant(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, spec: QuantSpec) -> torch.Tensor:
    """``w`` rounded onto the grid, in the same float32 operations as ``EncodedWeight.dense``."""
    codes = to_codes(w, scale, zero, spec)
    return (codes if zero is None else codes - zero) * scale


def quantize_on(w: np.ndarray, spec: QuantSpec, scales: np.ndarray, zeros: np.ndarray | None) -> EncodedWeight:
    """The encoding of ``w [O, K]`` on a given grid (``scales``/``zeros`` ``[O, groups]``)."""
    o, k = w.shape
    g = k // spec.groups(k)
    s = torch.as_tensor(scales, dtype=torch.float32)
    z = None if zeros is None else torch.as_tensor(zeros, dtype=torch.float32)
    codes = to_codes(torch.as_tensor(w, dtype=torch.float32), s.repeat_interleave(g, 1),
                     None if z is None else z.repeat_interleave(g, 1), spec)
    return EncodedWeight((o, k), codes.numpy().astype(np.int32), quant=spec, scales=s.numpy(),
                         zeros=None if z is None else z.numpy())


def rtn(w: np.ndarray, spec: QuantSpec) -> EncodedWeight:
    """Round-to-nearest quantization of ``w [O, K]``, one grid per row and group of ``spec.group`` columns."""
    o, k = w.shape
    scales, zeros = fit_grid(torch.as_tensor(w).reshape(o, spec.groups(k), -1), spec)
    return quantize_on(w, spec, scales.numpy(), None if zeros is None else zeros.numpy())


# ---- the OBS column sweep (GPTQ, SparseGPT) ---------------------------------------------------------------------
def hessian_factor(gram: np.ndarray, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The upper Cholesky factor of the inverse of the damped Hessian ``gram + damp * mean(diag) * I`` (float32),
    and the mask of dead inputs (``diag == 0``), whose Hessian diagonal is set to 1 (their weights must be zeroed)."""
    h = torch.as_tensor(np.asarray(gram), dtype=torch.float64).clone()
    dead = h.diagonal() == 0
    h.diagonal()[dead] = 1
    h.diagonal().add_(damp * h.diagonal().mean())
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(hinv, upper=True).float(), dead


def check_gram(w: np.ndarray, gram: np.ndarray) -> None:
    k = w.shape[1]
    if np.shape(gram) != (k, k):
        shape = "x".join(map(str, np.shape(gram)))
        raise ValueError(f"the gram of a weight {w.shape[0]}x{k} must be {k}x{k}, got {shape}")


class _Sweep:
    """State of one sweep: the current block ``w[:, b0:b1]`` is updated eagerly, later columns once per block
    (GPTQ's lazy batch updates); ``ahead`` folds the block's pending error into columns past the block."""

    def __init__(self, w: torch.Tensor, hinv: torch.Tensor):
        self.w, self.hinv = w, hinv
        self.b0 = self.b1 = self.i = 0
        self.err = torch.zeros(0)

    def ahead(self, width: int) -> torch.Tensor:
        col, end = self.b0 + self.i, self.b0 + self.i + width
        cols = self.w[:, col:min(end, self.b1)]
        if end <= self.b1:
            return cols
        pending = self.err[:, :self.i] @ self.hinv[self.b0:col, self.b1:end]
        return torch.cat([cols, self.w[:, self.b1:end] - pending], 1)


def obs_sweep(w: torch.Tensor, hinv: torch.Tensor, block: int, rule: Rule) -> torch.Tensor:
    """Visits the columns of ``w`` in order; ``rule`` sets each column's final value and the error
    ``(w - q) / hinv[i, i]`` is spread over the later columns along row ``i`` of ``hinv`` (the upper Cholesky
    factor of H^-1), which is the OBS update restricted to the not-yet-visited columns. Returns the final weights."""
    w, out = w.float().clone(), torch.empty_like(w, dtype=torch.float32)
    s = _Sweep(w, hinv)
    k = w.shape[1]
    for b0 in range(0, k, block):
        s.b0, s.b1 = b0, min(b0 + block, k)
        s.err = torch.zeros(w.shape[0], s.b1 - b0)
        h1, w1 = hinv[b0:s.b1, b0:s.b1], w[:, b0:s.b1]
        for i in range(s.b1 - b0):
            s.i = i
            q = rule(b0 + i, s.ahead)
            e = (w1[:, i] - q) / h1[i, i]
            w1[:, i:] -= torch.outer(e, h1[i, i:])
            s.err[:, i] = e
            out[:, b0 + i] = q
        w[:, s.b1:] -= s.err @ hinv[b0:s.b1, s.b1:]
    return out


class LazyGrid:
    """Group grids fitted during a sweep: a group's scale/zero are fitted to the current (error-updated) weights of
    its ``width`` columns when the sweep reaches its first column (GPTQ with ``static_groups=False``)."""

    def __init__(self, spec: QuantSpec, rows: int, groups: int, width: int):
        self.spec, self.width = spec, width
        self.scales = torch.ones(rows, groups)
        self.zeros = None if spec.symmetric else torch.zeros(rows, groups)

    def quantize(self, col: int, ahead: Callable[[int], torch.Tensor], values: torch.Tensor) -> torch.Tensor:
        """``values`` (column ``col``) on its group's grid, fitting that grid first at the group's first column."""
        j = col // self.width
        if col % self.width == 0:
            scale, zero = fit_grid(ahead(self.width), self.spec)
            self.scales[:, j] = scale
            if zero is not None:
                self.zeros[:, j] = zero
        return fake_quant(values, self.scales[:, j], None if self.zeros is None else self.zeros[:, j], self.spec)

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        return self.scales.numpy(), None if self.zeros is None else self.zeros.numpy()


def gptq(w: np.ndarray, spec: QuantSpec, gram: np.ndarray, damp: float = 0.01, block: int = 128) -> EncodedWeight:
    """GPTQ: quantizes the columns in order, each rounding error compensated on the later columns so that the
    output error ``trace((W - Q) H (W - Q)^T)`` on the calibration inputs (``gram = X^T X``) stays small.
    No activation reordering: the codes keep the original column order and contiguous groups. (Remembered by
    content: the planner and the final compile quantize the same layers; a copy is returned.)"""
    check_gram(w, gram)
    return copy.deepcopy(remembered("gptq", (w, gram), lambda: _gptq(w, spec, gram, damp, block), spec, damp, block))


def _gptq(w: np.ndarray, spec: QuantSpec, gram: np.ndarray, damp: float, block: int) -> EncodedWeight:
    o, k = w.shape
    groups = spec.groups(k)
    hinv, dead = hessian_factor(gram, damp)
    start = torch.as_tensor(w, dtype=torch.float32).clone()
    start[:, dead] = 0
    grid = LazyGrid(spec, o, groups, k // groups)
    q = obs_sweep(start, hinv, block, lambda col, ahead: grid.quantize(col, ahead, ahead(1)[:, 0]))
    return quantize_on(q.numpy(), spec, *grid.arrays())
