"""The default pass sequence between a frontend and a backend, readable top to bottom."""
from __future__ import annotations

from sparsecc.passes.canonicalize import (eliminate_dead_code, fold_batch_norm, fold_constants, fuse_linear_bias,
                                          matmul_to_linear)
from sparsecc.passes.manager import PassManager


def canonicalize(verify_each: bool = True) -> PassManager:
    return PassManager([
        ("fold_constants", fold_constants),
        ("matmul_to_linear", matmul_to_linear),
        ("fuse_linear_bias", fuse_linear_bias),
        ("fold_batch_norm", fold_batch_norm),
        ("eliminate_dead_code", eliminate_dead_code),
    ], verify_each=verify_each)
