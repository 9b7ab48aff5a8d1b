"""``sparsecc.compile`` / ``sparsecc.load``: capture -> canonicalize -> lower through TVM -> CompiledModel."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sparsecc import __version__
from sparsecc.artifact import read_artifact, write_artifact
from sparsecc.errors import InputError, ModelLoadError, SparseccError
from sparsecc.ir.graph import Dim, Graph

RUNNABLE_HERE = ("x86",)


def capture(model: Any, example_inputs: Sequence[Any] | None = None,
            input_shapes: Mapping[str, Sequence[Dim]] | None = None, dynamic_shapes: Any = None) -> Graph:
    """Any supported model form -> sparsecc IR (before canonicalization)."""
    import torch

    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise ModelLoadError(f"{path}: no such file")
        if path.suffix == ".onnx":
            from sparsecc.frontends.onnx import import_onnx

            return import_onnx(str(path), input_shapes=input_shapes)
        if path.suffix == ".pt2":
            try:
                ep = torch.export.load(str(path))
            except Exception as e:  # torch raises many types for a bad archive
                raise ModelLoadError(f"{path}: not a readable torch.export archive ({type(e).__name__}: {e})") \
                    from None
            model = ep
        else:
            raise ModelLoadError(f"{path}: unknown model format {path.suffix!r} (expected .onnx or .pt2)")
    if isinstance(model, torch.export.ExportedProgram):
        from sparsecc.frontends.torch import import_exported_program

        return import_exported_program(model, dynamic_shapes=dynamic_shapes)
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise SparseccError("compiling an nn.Module needs example_inputs (a tuple of tensors)")
        from sparsecc.frontends.torch import import_module

        return import_module(model, tuple(example_inputs), dynamic_shapes=dynamic_shapes)
    import onnx

    if isinstance(model, onnx.ModelProto):
        from sparsecc.frontends.onnx import import_onnx

        return import_onnx(model, input_shapes=input_shapes)
    raise SparseccError(f"cannot compile a {type(model).__name__}: expected nn.Module, ExportedProgram, "
                        "onnx.ModelProto or a path to .onnx/.pt2")


class CompiledModel:
    """A compiled model: call it, save it, inspect it.

    Numpy in -> numpy out; torch in -> torch out. Only targets of this machine's kind run here
    (x86; cuda where a GPU is present); an arm64 build is saved and run on the board.
    """

    def __init__(self, graph: Graph, lib_path: str, manifest: dict[str, Any]):
        self.graph, self.lib_path, self.manifest = graph, lib_path, manifest
        self._runner = None

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.outputs)

    @property
    def target(self) -> str:
        return self.manifest["target"]["name"]

    def runner(self):
        if self._runner is None:
            from sparsecc.backends.tvm.runtime import Runner

            if self.target not in RUNNABLE_HERE and not (self.target == "cuda" and _has_cuda()):
                raise SparseccError(f"this model is built for {self.target}; run it on such a device "
                                    "(sparsecc run / run_scc.py there), or compile with target='x86' to run here")
            self._runner = Runner(self.lib_path, [self.graph.types[i] for i in self.graph.inputs], self.output_names,
                                  {k: p.data for k, p in self.graph.params.items()},
                                  device="cuda" if self.target == "cuda" else "cpu", input_names=self.input_names)
        return self._runner

    def __call__(self, *inputs: Any) -> Any:
        import torch

        as_torch = any(isinstance(x, torch.Tensor) for x in inputs)
        arrays = [x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in inputs]
        outs = self.runner()(*arrays)
        if as_torch:
            outs = [torch.from_numpy(o) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def save(self, path: str | os.PathLike) -> None:
        write_artifact(path, self.graph, self.lib_path, self.manifest)

    def __repr__(self) -> str:
        ins = ", ".join(f"{i}: {self.graph.types[i]}" for i in self.input_names)
        return f"CompiledModel({ins}) for {self.target}, {len(self.graph.nodes)} ops"


def _has_cuda() -> bool:
    import tvm

    return tvm.cuda(0).exist


def compile(model: Any, example_inputs: Sequence[Any] | None = None, target: str | dict = "x86",
            compress: Any = None, budget: str | None = None, calibration: Any = None, *, max_drop: float | None = None,
            input_shapes: Mapping[str, Sequence[Dim]] | None = None, dynamic_shapes: Any = None,
            graph: Graph | None = None, tuning_db: str | os.PathLike | bool | None = None,
            latency_table: Any = None) -> CompiledModel:
    """Compiles ``model`` for ``target`` (see the README for every argument).

    ``tuning_db``: root of the ``sparsecc tune`` databases; records for this exact target (its key: CPU, features,
    cores, TVM version) are applied where they exist. None: ``$SPARSECC_TUNING_DB`` or ``~/.cache/sparsecc/tuning``;
    False: no records. The manifest's ``metrics.tuned_functions`` counts the kernels scheduled from records.

    ``compress``: a spec string (``sparsecc.passes.compress.spec``: "int8", "2:4+int4-g128", "lowrank:0.5", ...);
    ``calibration``: batches (a list of input tuples), one tuple of arrays split into batches, or an ``.npz`` path,
    used by the data-aware methods (GPTQ, SparseGPT, activation-aware SVD); the manifest's ``plan`` lists every
    compressible layer's encoding, bytes and error. ``compress`` may also be a per-layer plan ``{node name: spec}``
    or ``"auto"``: the planner (``sparsecc.planner``, needs calibration) chooses a spec per layer under
    ``budget`` ("latency=0.5": a fraction of the dense model's latency measured on the target; "size=0.25": of
    the compressible weights' bytes) and/or ``max_drop`` (bound on the predicted loss increase), and the
    manifest's ``auto_plan`` records its choice, sensitivities and predicted latency. ``latency_table``: where the
    planner measures (a ``backends.tvm.layer_latency.LatencyTable``; default: this machine's, for ``target``;
    ``LatencyTable(target, measure_fn=RemoteMeasurer(session, target), device=...)`` times on an RPC device)."""
    if latency_table is not None and not _is_auto(compress):
        raise SparseccError("latency_table= is where compress='auto' measures layer latencies; without 'auto' "
                            "nothing is measured")
    if (budget is not None or max_drop is not None) and not _is_auto(compress):
        raise SparseccError("budget= / max_drop= choose a plan for compress='auto'; an explicit compress spec "
                            f"({compress!r}) has nothing to budget")
    if calibration is not None and compress is None:
        raise SparseccError("calibration data was given without compress=...: nothing would use it")
    from sparsecc.backends.tvm import build, export_library, prepare_graph, target_info
    from sparsecc.backends.tvm.tuning import find_database
    from sparsecc.passes.pipeline import canonicalize

    t0 = time.perf_counter()
    if graph is None:
        graph = capture(model, example_inputs, input_shapes, dynamic_shapes)
    graph = canonicalize()(graph)
    plan: list[dict[str, Any]] = []
    chosen = None
    if compress is not None:
        graph, plan, chosen = compress_graph(graph, compress, calibration, budget, max_drop, target, latency_table)
    graph = prepare_graph(graph, target)
    db_dir = find_database(target, tuning_db)
    tuned: list[str] = []
    executable = build(graph, target, tuning_db=db_dir, tuned=tuned)
    info = target_info(target)
    lib_dir = Path(tempfile.mkdtemp(prefix="sparsecc-"))
    lib_path = str(lib_dir / "lib.so")
    export_library(executable, lib_path, target)
    import tvm

    manifest = {
        "sparsecc_version": __version__,
        "tvm_version": tvm.__version__,
        "target": info,
        "inputs": [_io(graph, i) for i in graph.inputs],
        "outputs": [_io(graph, o) for o in graph.outputs],
        "plan": plan,
        **({"auto_plan": chosen.as_dict()} if chosen is not None else {}),
        "metrics": {"compile_seconds": round(time.perf_counter() - t0, 3), "ops": len(graph.nodes),
                    "param_bytes": int(sum(p.data.nbytes for p in graph.params.values())),
                    "tuned_functions": len(tuned)},
        "tuning": {"database": None if db_dir is None else db_dir.name, "functions": tuned},
    }
    compiled = CompiledModel(graph, lib_path, manifest)
    if chosen is not None and chosen.predicted_ms is not None and chosen.example is not None:
        _measure_plan(compiled, chosen.example, manifest["auto_plan"], latency_table, target)
    return compiled


def _measure_plan(compiled: CompiledModel, example: Sequence[np.ndarray], auto_plan: dict[str, Any],
                  table: Any, target: Any) -> None:
    """The compiled plan's latency at the planner's inputs, next to its prediction: ``measured_ms`` in the
    manifest, timed where the planner timed (its ``table``; None: this machine's for ``target``). Left out where
    that table cannot time an artifact (a custom ``measure_fn``)."""
    from sparsecc.backends.tvm import layer_latency

    measured = (table if table is not None else layer_latency.LatencyTable(target)).time_compiled(compiled, example)
    if measured is not None:
        auto_plan["measured_ms"] = measured


def compress_graph(graph: Graph, compress: Any, calibration: Any = None, budget: str | None = None,
                   max_drop: float | None = None, target: Any = "x86",
                   latency_table: Any = None) -> tuple[Graph, list[dict[str, Any]], Any]:
    """Runs the compression pass (``passes/compress``) on a canonical graph: parses the spec (``"auto"``: the
    planner chooses one per layer under ``budget`` / ``max_drop``, ``sparsecc.planner``), collects the
    calibration statistics when data is given, and returns the compressed graph, the manifest's ``plan`` (every
    compressible layer's encoding, bytes and error) and, for ``auto``, the planner's ``Plan`` (the choice per
    layer, its sensitivity and candidates, the predicted latency; else None)."""
    from sparsecc.passes.compress import CompressionSpec, calibrate, compress as run_compress, load_batches, parse_spec
    from sparsecc.ir.verify import verify

    auto = _is_auto(compress)
    if isinstance(compress, Mapping):  # a plan: node name -> spec
        spec = {node: s if isinstance(s, CompressionSpec) else parse_spec(s) for node, s in compress.items()}
        _check_plan(graph, spec)
    else:
        spec = compress if isinstance(compress, CompressionSpec) or auto else parse_spec(compress)
    calib = batches = None
    if calibration is not None:
        batches = load_batches(graph, calibration)
        calib = calibrate(graph, batches)
    elif auto or any(s.needs_calibration() for s in (spec.values() if isinstance(spec, dict) else [spec])):
        raise SparseccError(f"compress {'auto' if auto else _describe(compress)} needs calibration data "
                            "(calibration=... / --calib): it names a data-aware method, quantizes inputs with static "
                            "scales, or plans from Hessian sensitivity")
    chosen = None
    if auto:
        from sparsecc.planner import make_plan, parse_budget

        chosen = make_plan(graph, batches, parse_budget(budget, max_drop), target, calibration=calib,
                           table=latency_table)
        spec = chosen.specs()
    graph, reports = run_compress(graph, spec, calib)
    verify(graph)
    return graph, [r.as_dict() for r in reports], chosen


def _is_auto(compress: Any) -> bool:
    return isinstance(compress, str) and compress.strip() == "auto"


def _describe(compress: Any) -> str:
    return f"plan of {len(compress)} layers" if isinstance(compress, Mapping) else repr(str(compress))


def _check_plan(graph: Graph, plan: Mapping[str, Any]) -> None:
    """A per-layer plan must name compressible layers of this graph."""
    from sparsecc.passes.compress.calibration import compressible_weight

    layers = {n.name for n in graph.nodes if compressible_weight(graph, n) is not None}
    unknown = sorted(set(plan) - layers)
    if unknown:
        raise SparseccError(f"compress plan names {unknown}, which are not compressible layers of this graph "
                            f"(its layers: {sorted(layers)[:8]}{' ...' if len(layers) > 8 else ''})")


def _io(graph: Graph, name: str) -> dict[str, Any]:
    t = graph.types[name]
    return {"name": name, "shape": list(t.shape), "dtype": t.dtype}


def load(path: str | os.PathLike) -> CompiledModel:
    """Loads a ``.scc`` artifact (every member's SHA-256 checked)."""
    art = read_artifact(path)
    return CompiledModel(art.graph, art.lib_path, art.manifest)


def check_inputs(names: Sequence[str], given: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Orders named arrays by ``names``; a missing or unknown name is an InputError."""
    missing = [n for n in names if n not in given]
    extra = [n for n in given if n not in names]
    if missing or extra:
        raise InputError(f"inputs: missing {missing}, unexpected {extra}; the model takes {list(names)}")
    return [given[n] for n in names]
