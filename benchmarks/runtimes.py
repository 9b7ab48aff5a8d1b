"""The runtimes a benchmark compares, each as ``prepare(workload, workdir) -> callable`` running one inference.

All run on this machine's CPU with every core: PyTorch eager, torch.compile (inductor), ONNX Runtime (CPU EP),
TVM's own ONNX frontend + default pipeline, and sparsecc.
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .models import Workload

Run = Callable[[], object]


def torch_eager(w: Workload, workdir: Path) -> Run:
    args = tuple(torch.from_numpy(a) for a in w.inputs)

    def run() -> object:
        with torch.inference_mode():
            return w.model(*args)
    return run


def torch_compile(w: Workload, workdir: Path) -> Run:
    args = tuple(torch.from_numpy(a) for a in w.inputs)
    compiled = torch.compile(w.model)

    def run() -> object:
        with torch.inference_mode():
            return compiled(*args)
    return run


def export_onnx(w: Workload, workdir: Path) -> Path:
    path = workdir / f"{w.name}.onnx"
    if not path.exists():
        torch.onnx.export(w.model, tuple(torch.from_numpy(a) for a in w.inputs), str(path),
                          input_names=list(w.input_names), dynamo=True, optimize=True)
    return path


def onnxruntime(w: Workload, workdir: Path) -> Run:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    sess = ort.InferenceSession(str(export_onnx(w, workdir)), opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(sess.get_inputs(), w.inputs)}
    return lambda: sess.run(None, feeds)


def onnxruntime_int8(w: Workload, workdir: Path) -> Run:
    """ONNX Runtime on its own dynamic int8 quantization of the model (``quantize_dynamic``, int8 weights)."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = workdir / f"{w.name}.int8.onnx"
    if not path.exists():
        quantize_dynamic(str(export_onnx(w, workdir)), str(path), weight_type=QuantType.QInt8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(sess.get_inputs(), w.inputs)}
    return lambda: sess.run(None, feeds)


def tvm_default(w: Workload, workdir: Path) -> Run:
    """TVM 0.27 as it comes: its ONNX frontend and ``tvm.compile``'s default Relax pipeline."""
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from sparsecc.backends.tvm import resolve_target

    model = onnx.load(str(export_onnx(w, workdir)))
    mod = from_onnx(model, shape_dict={n: a.shape for n, a in zip(w.input_names, w.inputs)}, keep_params_in_input=False)
    vm = relax.VirtualMachine(tvm.compile(mod, resolve_target("x86")), tvm.cpu())
    args = [tvm.runtime.tensor(a) for a in w.inputs]
    return lambda: vm["main"](*args)


def sparsecc_x86(w: Workload, workdir: Path, compress: str | None = None) -> Run:
    """sparsecc for this host; with ``compress``, calibrated on the workload's own inputs (speed only: quality is
    measured by ``benchmarks.quality`` on held-out data)."""
    import sparsecc

    calibration = None if compress is None else [tuple(w.inputs)]
    cm = sparsecc.compile(w.model, tuple(torch.from_numpy(a) for a in w.inputs), target="x86", compress=compress,
                          calibration=calibration)
    runner = cm.runner()
    return lambda: runner(*w.inputs)


RUNTIMES: dict[str, Callable[[Workload, Path], Run]] = {
    "pytorch_eager": torch_eager,
    "torch_compile": torch_compile,
    "onnxruntime": onnxruntime,
    "onnxruntime_int8": onnxruntime_int8,
    "tvm_default": tvm_default,
    "sparsecc": sparsecc_x86,
    **{f"sparsecc_{spec}": partial(sparsecc_x86, compress=spec)
       for spec in ("int8", "2:4+int8", "w8a8", "w7a8", "w4a8", "2:4+w7a8", "2:4+w4a8")},
}


def first_output(out: object) -> np.ndarray:
    """The first output of any runtime's result, as numpy (for the fidelity column)."""
    while isinstance(out, (list, tuple)):
        out = out[0]
    if isinstance(out, torch.Tensor):
        return out.detach().numpy()
    return out.numpy() if hasattr(out, "numpy") else np.asarray(out)
