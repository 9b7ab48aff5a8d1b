"""The Apache TVM backend: sparsecc IR -> Relax -> compiled executable for x86, arm64 or CUDA.

    from sparsecc.backends.tvm import build, compile_graph, target_info
    graph = prepare_graph(graph, "x86")          # weights in the layouts the target's kernels read
    ex = build(graph, "x86")                     # a Relax VM executable
    export_library(ex, "lib.so", "x86")          # a shared library (cross-linked for arm64)
    run = compile_graph(graph)                   # build + Runner with the graph's params: numpy in, numpy out
    outputs = run(*arrays)

Modules: ``targets`` (names -> TVM targets), ``lower`` (IR -> Relax, one function per canonical op),
``pipeline`` (the stages from Relax to code), ``runtime`` (``Runner``). Importing this package does not import
TVM (about 4 s); the first build or run does.
"""
from __future__ import annotations

from typing import Any

from sparsecc.ir.graph import Graph

from .pipeline import STAGE_NAMES, build, export_library, lower_graph, prepare_graph
from .runtime import Runner
from .targets import TARGET_NAMES, export_cc, resolve_target, target_info, target_name, use_physical_cores

use_physical_cores()


def compile_graph(graph: Graph, target: Any = "x86", device: str | None = None) -> Runner:
    """Builds ``graph`` for ``target`` and returns a ``Runner`` holding its params (for tests and quick use)."""
    graph = prepare_graph(graph, target)
    ex = build(graph, target)
    if device is None:
        device = "cuda" if target_name(target) == "cuda" else "cpu"
    return Runner(ex, [graph.types[i] for i in graph.inputs], list(graph.outputs),
                  {k: p.data for k, p in graph.params.items()}, device=device, input_names=list(graph.inputs))


def __getattr__(name: str) -> Any:
    if name in ("to_relax", "LOWERINGS", "missing_lowerings"):  # imports TVM
        from . import lower as _lower_module

        return getattr(_lower_module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LOWERINGS", "Runner", "STAGE_NAMES", "TARGET_NAMES", "build", "compile_graph", "export_cc",
           "export_library",
           "lower_graph", "missing_lowerings", "prepare_graph", "resolve_target", "target_info", "target_name",
           "to_relax"]
