"""Canonicalization: folding and fusing rewrites every frontend's output goes through."""
from sparsecc.passes.canonicalize.dead_code import eliminate_dead_code
from sparsecc.passes.canonicalize.fold_batch_norm import fold_batch_norm
from sparsecc.passes.canonicalize.fold_constants import fold_constants
from sparsecc.passes.canonicalize.fuse_linear import fuse_linear_bias, matmul_to_linear

__all__ = ["eliminate_dead_code", "fold_batch_norm", "fold_constants", "fuse_linear_bias", "matmul_to_linear"]
