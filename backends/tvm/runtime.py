"""Runs a compiled module: numpy in, numpy out, params held on the device once.

    runner = Runner(executable_or_lib_path, input_types, output_names, params, device="cpu")
    outputs = runner(*arrays)        # list of numpy arrays, one per graph output

Inputs are checked against the compiled signature (count, dtype, rank, static dims, and symbolic dims bound
consistently across inputs) and a mismatch raises ``InputError`` with a one-line message naming the input.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from sparsecc.errors import InputError
from sparsecc.ir.dims import bind_symbols
from sparsecc.ir.graph import TensorType, dtype_name


def contiguous(a: np.ndarray) -> np.ndarray:
    return a if a.flags.c_contiguous else np.array(a, order="C")  # np.ascontiguousarray makes 0-d arrays 1-d


def to_numpy(t: Any) -> np.ndarray:
    shape = tuple(int(d) for d in t.shape)
    if 0 in shape:  # TVM cannot copy out an empty tensor
        return np.empty(shape, dtype=np.dtype(str(t.dtype)))
    return t.numpy()


def _fmt(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


class Runner:
    def __init__(self, module: Any, input_types: Sequence[TensorType], output_names: Sequence[str],
                 params: Mapping[str, np.ndarray], device: str = "cpu", input_names: Sequence[str] | None = None):
        """``module``: a Relax executable (``build``'s result), a loaded runtime module, or the path of an
        exported library. ``params`` in the order of the compiled function's param arguments (``graph.params``)."""
        import tvm
        from tvm import relax

        if isinstance(module, (str, os.PathLike)):
            module = tvm.runtime.load_module(os.fspath(module))
        self.device = tvm.device(device)
        self.vm = relax.VirtualMachine(module, self.device)
        self._main = self.vm["main"]
        self.input_types = list(input_types)
        self.input_names = list(input_names) if input_names is not None else [
            f"input{i}" for i in range(len(self.input_types))]
        if len(self.input_names) != len(self.input_types):
            raise ValueError("input_names and input_types differ in length")
        self.output_names = list(output_names)
        self.param_names = list(params)
        self._params = [tvm.runtime.tensor(contiguous(np.asarray(a)), self.device) for a in params.values()]

    def check_inputs(self, inputs: Sequence[Any]) -> list[np.ndarray]:
        """The inputs as contiguous numpy arrays; InputError on a count, dtype or shape mismatch."""
        if len(inputs) != len(self.input_types):
            raise InputError(f"expected {len(self.input_types)} inputs ({', '.join(self.input_names)}), "
                             f"got {len(inputs)}")
        symbols: dict[str, int] = {}
        arrays = []
        for name, want, value in zip(self.input_names, self.input_types, inputs):
            a = np.asarray(value)
            got = dtype_name(a.dtype) if a.dtype.kind in "biufc" else str(a.dtype)
            if got != want.dtype:
                raise InputError(f"input '{name}': expected dtype {want.dtype}, got {got}")
            if a.ndim != len(want.shape):
                raise InputError(f"input '{name}': expected shape {_fmt(want.shape)} (rank {len(want.shape)}), "
                                 f"got {_fmt(a.shape)}")
            try:
                bind_symbols(want.shape, a.shape, symbols, f"input '{name}'")
            except (ValueError, KeyError) as e:
                raise InputError(str(e).splitlines()[0]) from None
            arrays.append(contiguous(a))
        return arrays

    def __call__(self, *inputs: Any) -> list[np.ndarray]:
        import tvm

        arrays = self.check_inputs(inputs)
        args = [tvm.runtime.tensor(a, self.device) for a in arrays]
        out = self._main(*args, *self._params)
        outs = [out] if hasattr(out, "numpy") else list(out)
        return [to_numpy(o) for o in outs]

    def __repr__(self) -> str:
        ins = ", ".join(f"{n}: {t}" for n, t in zip(self.input_names, self.input_types))
        return f"Runner({ins}) -> {', '.join(self.output_names)} on {self.device}"
