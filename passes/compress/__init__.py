"""Compression passes: calibration statistics, N:M sparsity, quantization, low-rank factorization, compensation.

    spec.py         the ``--compress`` string -> ``CompressionSpec``
    calibration.py  per-layer input Gram matrices from real batches run through the interpreter
    quantize.py     RTN and GPTQ (int8 / int4, per-channel or group-wise, symmetric or not)
    sparsify.py     N:M masks: magnitude, Wanda, SparseGPT (also jointly with quantization)
    lowrank.py      truncated and activation-aware SVD, rank rules, compensation of another stage's error
    apply.py        the pass itself: every compressible layer of a graph, with a per-layer report
"""
from .apply import LayerReport, compress
from .calibration import Calibration, calibrate, load_batches
from .spec import CompressionSpec, parse_spec

__all__ = ["Calibration", "CompressionSpec", "LayerReport", "calibrate", "compress", "load_batches", "parse_spec"]
