"""Low-rank factorization ``W [O, K] ~ U [O, r] @ V [r, K]`` (V applied first), plain or activation-aware, and the
low-rank compensation of a compressed weight's error (LoRC / EoRA).

Activation-aware (SVD-LLM whitening): with the calibration gram ``G = X^T X = S S^T`` (Cholesky), the output
error ``||(W - UV) X^T||_F^2 = ||(W - UV) S||_F^2``, so the truncated SVD of ``W S``, mapped back by ``S^-1``, is the
best rank-r approximation for those inputs (Eckart-Young) -- never worse than the plain SVD on them.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from sparsecc.passes.compress.quantize import check_gram

from .memo import remembered


def _check_rank(w: np.ndarray, rank: int) -> None:
    if not 1 <= rank <= min(w.shape):
        raise ValueError(f"rank {rank} of a {w.shape[0]}x{w.shape[1]} weight: need 1 <= rank <= {min(w.shape)}")


def _truncate(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 rank-``rank`` factors of ``w`` with the singular values split evenly (sqrt to each side)."""
    _check_rank(w, rank)
    a = np.ascontiguousarray(w, np.float64)
    u, s, vt = remembered("svd", (a,), lambda: np.linalg.svd(a, full_matrices=False))
    root = np.sqrt(s[:rank])
    return u[:, :rank] * root, root[:, None] * vt[:rank]


def whitener(gram: np.ndarray, damp: float = 1e-6) -> np.ndarray:
    """Lower Cholesky factor ``S`` of ``gram + damp * mean(diag) * I`` (damping keeps dead inputs invertible)."""
    g = np.ascontiguousarray(gram, np.float64)
    scale = float(np.mean(np.diag(g))) or 1.0
    return remembered("whitener", (g,), lambda: np.linalg.cholesky(g + damp * scale * np.eye(len(g))), damp)


def svd_factors(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Truncated SVD: the best rank-``rank`` approximation in Frobenius norm, as float32 ``(U, V)``."""
    u, v = _truncate(w, rank)
    return u.astype(np.float32), v.astype(np.float32)


def whitened_svd_factors(w: np.ndarray, rank: int, gram: np.ndarray,
                         damp: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """The rank-``rank`` ``(U, V)`` minimising the output error on the calibration inputs of ``gram``: truncated
    SVD of ``W S``, then ``V = V_r S^-1`` by a triangular solve."""
    check_gram(w, gram)
    s = whitener(gram, damp)
    u, vs = _truncate(np.asarray(w, np.float64) @ s, rank)
    v = scipy.linalg.solve_triangular(s, vs.T, trans="T", lower=True).T  # V S = vs
    return u.astype(np.float32), v.astype(np.float32)


def rank_for_energy(w: np.ndarray, energy: float, gram: np.ndarray | None = None, damp: float = 1e-6) -> int:
    """The smallest rank whose singular values (of ``W S`` when a gram is given) keep ``energy`` of the sum of
    their squares."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy fraction must be in (0, 1], got {energy}")
    a = np.asarray(w, np.float64)
    if gram is not None:
        check_gram(w, gram)
        a = a @ whitener(gram, damp)
    cumulative = np.cumsum(np.linalg.svd(a, compute_uv=False) ** 2)
    return max(1, int(np.searchsorted(cumulative, energy * cumulative[-1], side="left")) + 1)


def rank_for_params(o: int, k: int, ratio: float) -> int:
    """The largest rank ``r`` whose factors hold at most ``ratio`` of the dense parameters (``r (o + k) <=
    ratio o k``), at least 1 and at most ``min(o, k)``."""
    if ratio <= 0:
        raise ValueError(f"parameter ratio must be positive, got {ratio}")
    return int(min(max(1, (ratio * o * k) // (o + k)), min(o, k)))


def compensation(w: np.ndarray, w_hat: np.ndarray, rank: int, gram: np.ndarray | None = None,
                 damp: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Rank-``rank`` ``(U, V)`` with ``w_hat + U V ~ w``: plain SVD of the error ``E = W - W_hat`` (LoRC), or, with a
    gram, its activation-whitened SVD (EoRA's eigenspace projection: any square root of the gram gives the same
    optimum)."""
    e = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
    return svd_factors(e, rank) if gram is None else whitened_svd_factors(e, rank, gram, damp)
