"""N:M sparsity along the reduction axis of a 2-D weight ``[O, K]``: of every ``m`` consecutive columns of a row,
``n`` are kept. Masks by magnitude, by Wanda's ``|w| * ||x||`` (Sun et al. 2023), or by SparseGPT (Frantar &
Alistarh 2023), which also updates the kept weights to compensate the pruned ones and can quantize them jointly."""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch

from sparsecc.passes.compress.memo import remembered
from sparsecc.passes.compress.quantize import LazyGrid, check_gram, hessian_factor, obs_sweep, quantize_on, rtn
from sparsecc.ir.encodings import EncodedWeight, QuantSpec, nm_compress


def check_nm(shape: tuple[int, ...], n: int, m: int) -> None:
    if not 0 < n <= m:
        raise ValueError(f"N:M sparsity {n}:{m}: need 0 < n <= m")
    if shape[-1] % m:
        raise ValueError(f"N:M sparsity {n}:{m} needs the reduction size to be a multiple of {m}; "
                         f"the weight is {'x'.join(map(str, shape))} (reduction {shape[-1]})")


def nm_mask(score: np.ndarray, n: int, m: int) -> np.ndarray:
    """Boolean mask keeping the ``n`` largest scores of every ``m`` consecutive columns (ties: lower index)."""
    check_nm(score.shape, n, m)
    o, k = score.shape
    order = np.argsort(-score.reshape(o, k // m, m), axis=2, kind="stable")[:, :, :n]
    mask = np.zeros((o, k // m, m), bool)
    np.put_along_axis(mask, order, True, 2)
    return mask.reshape(o, k)


def magnitude(w: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Keeps the largest ``|w|``: the data-free baseline."""
    mask = nm_mask(np.abs(w), n, m)
    return np.where(mask, w, 0).astype(np.float32), mask


def wanda(w: np.ndarray, n: int, m: int, gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keeps the largest ``|w| * ||x_j||``: a weight matters in proportion to the norm of the input it multiplies
    (``gram``'s diagonal holds the squared norms)."""
    check_gram(w, gram)
    mask = nm_mask(np.abs(w) * np.sqrt(np.diag(gram))[None], n, m)
    return np.where(mask, w, 0).astype(np.float32), mask


def _sparsegpt_sweep(w: np.ndarray, n: int, m: int, gram: np.ndarray, damp: float, block: int,
                     grid: LazyGrid | None) -> tuple[np.ndarray, np.ndarray]:
    """The SparseGPT sweep: at the first column of each group of ``m`` the mask keeps the ``n`` weights of largest
    OBS saliency ``w^2 / hinv_jj^2`` (current weights); each column is pruned (and its kept entries quantized on
    ``grid``), and the total error is spread over the later columns."""
    check_nm(w.shape, n, m)
    check_gram(w, gram)
    hinv, dead = hessian_factor(gram, damp)
    hdiag = hinv.diagonal()
    start = torch.as_tensor(w, dtype=torch.float32).clone()
    start[:, dead] = 0
    mask = torch.zeros(w.shape, dtype=torch.bool)

    def rule(col: int, ahead: Callable[[int], torch.Tensor]) -> torch.Tensor:
        if col % m == 0:
            score = ahead(m) ** 2 / hdiag[col:col + m] ** 2
            mask[:, col:col + m] = torch.from_numpy(nm_mask(score.numpy(), n, m))
        kept = torch.where(mask[:, col], ahead(1)[:, 0], 0.0)
        return kept if grid is None else torch.where(mask[:, col], grid.quantize(col, ahead, kept), 0.0)

    return obs_sweep(start, hinv, block, rule).numpy(), mask.numpy()


def sparsegpt(w: np.ndarray, n: int, m: int, gram: np.ndarray, damp: float = 0.01,
              block: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """SparseGPT N:M pruning: the mask and the updated weights (pruned entries exactly 0). (Remembered by content,
    like ``quantize.gptq``: the planner and the final compile prune the same layers; a copy is returned.)"""
    return copy.deepcopy(remembered("sparsegpt", (w, gram), lambda: _sparsegpt_sweep(w, n, m, gram, damp, block, None),
                                    n, m, damp, block))


def sparsegpt_quant(w: np.ndarray, n: int, m: int, gram: np.ndarray, quant: QuantSpec, damp: float = 0.01,
                    block: int = 128) -> EncodedWeight:
    """SparseGPT's joint N:M pruning and quantization in one sweep: every column is pruned, its kept entries are
    quantized, and the total error is compensated on the later columns. The quantization groups run along the
    ``J = K * n / m`` stored columns, so a group of ``quant.group`` stored values spans ``group * m / n`` columns;
    its grid is fitted to the current weights of those columns (pruned ones included) when the sweep reaches it.
    (Remembered by content, like ``sparsegpt``.)"""
    return copy.deepcopy(remembered("sparsegpt_quant", (w, gram),
                                    lambda: _sparsegpt_quant(w, n, m, gram, quant, damp, block), n, m, quant, damp,
                                    block))


def _sparsegpt_quant(w: np.ndarray, n: int, m: int, gram: np.ndarray, quant: QuantSpec, damp: float,
                     block: int) -> EncodedWeight:
    check_nm(w.shape, n, m)
    o, k = w.shape
    groups = quant.groups(k * n // m)
    stored = k * n // m // groups
    if stored % n:
        raise ValueError(f"{quant.name} with N:M {n}:{m}: a group of {stored} stored values does not cover whole "
                         f"groups of {m} columns")
    grid = LazyGrid(quant, o, groups, stored * m // n)
    q, mask = _sparsegpt_sweep(w, n, m, gram, damp, block, grid)
    return encode_nm(q, mask, n, m, quant, *grid.arrays())


def encode_nm(w: np.ndarray, mask: np.ndarray, n: int, m: int, quant: QuantSpec | None = None,
              scales: np.ndarray | None = None, zeros: np.ndarray | None = None) -> EncodedWeight:
    """The N:M encoding of ``w`` under ``mask``; with ``quant`` the kept values ``[O, J]`` are quantized (groups
    along the J stored columns) on the given grid, or by round-to-nearest when no ``scales`` are given."""
    check_nm(w.shape, n, m)
    values, indices = nm_compress(np.asarray(w, np.float32), mask, n, m)
    if quant is None:
        return EncodedWeight(tuple(w.shape), values, (n, m), indices)
    enc = rtn(values, quant) if scales is None else quantize_on(values, quant, scales, zeros)
    return EncodedWeight(tuple(w.shape), enc.values, (n, m), indices, quant, enc.scales, enc.zeros)
