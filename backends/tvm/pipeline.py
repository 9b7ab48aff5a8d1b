"""The TVM build pipeline: sparsecc IR -> Relax -> TIR -> an executable for x86 / arm64 / cuda.

Read top to bottom (cf. ``tvm/relax/backend/cpu_generic/pipeline.py``)::

    relayout_weights    sparsecc IR -> IR (``prepare_graph``): CPU linear weights packed OI16o for their kernel
    to_relax            sparsecc.backends.tvm.lower: one Relax function, inputs then params as arguments
    library_dispatch    sort/scan/sampling ops -> target libraries or scheduled TIR (cumsum on GPU)
    legalize            Relax ops -> TIR PrimFuncs (LegalizeOps), op patterns annotated
    fuse                FuseOps, FuseTIR: elementwise chains become one kernel (no FoldConstant: weights
                        are arguments, not constants, and a folded empty constant breaks VM serialization)
    schedule            tuning records (``sparsecc tune``) where a database is given, then
                        CPU: sparsecc's kernel templates (``kernels/``: packed dense GEMM/GEMV with fused
                        epilogue); CUDA: dlight's default GPU rules (thread binding)
    lower_dataflow      Relax dataflow -> VM-ready calls
    finalize            memory planning, VM shape lowering, global symbols
    codegen             tvm.compile(..., relax_pipeline=None): TIR -> LLVM / CUDA, VM bytecode; on CPU, TVM's TIR
                        pipeline plus ``kernels/window_gather.py`` (N:M input picks as ``vpermps``)

``prepare_graph(graph, target)`` runs the IR stage and returns the graph whose params the executable takes (the
artifact stores that graph); ``build(prepared, target)`` runs the rest; ``lower_graph`` stops before codegen.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

from sparsecc.ir.graph import Graph

from .relayout import relayout_weights
from .targets import TargetLike, export_cc, resolve_target


def library_dispatch_passes(target: Any) -> list:
    from tvm import relax

    return [relax.backend.DispatchSampling(), relax.backend.DispatchSortScan()]


def legalize_passes(target: Any) -> list:
    from tvm import relax

    return [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern()]


def fuse_passes(target: Any) -> list:
    from tvm import relax

    return [relax.transform.FuseOps(), relax.transform.FuseTIR()]


def schedule_passes(target: Any, tuning_db: str | os.PathLike | None = None) -> list:
    """Schedules for the fused TIR functions. First, with ``tuning_db`` (a directory ``sparsecc tune`` wrote for
    this target), PrimFuncs that have a MetaSchedule record get the tuned schedule (``tuning.py`` keeps a record only
    if it beat the template). Then CPU: the kernel templates; PrimFuncs none matches keep TVM's default loops
    (correct, not fast). GPU code must bind threads, so CUDA gets dlight's default rules. The dlight rules skip
    functions already scheduled from a record."""
    from tvm.s_tir import dlight as dl

    tuned = []
    if tuning_db is not None:
        from .tuning import apply_records_pass

        tuned = [apply_records_pass(tuning_db)]
    if "gpu" not in target.keys:
        from .kernels import CPU_RULES

        return tuned + [dl.ApplyDefaultSchedule(*CPU_RULES)]

    return tuned + [dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                            dl.gpu.GeneralReduction(), dl.gpu.Fallback())]


def dataflow_lower_passes(target: Any) -> list:
    from tvm import relax

    return [relax.transform.RewriteDataflowReshape(), relax.transform.ToNonDataflow(),
            relax.transform.RemovePurityChecking(), relax.transform.CallTIRRewrite()]


def finalize_passes(target: Any) -> list:
    from tvm import relax

    passes = [relax.transform.StaticPlanBlockMemory()]
    if "gpu" in target.keys:
        passes.append(relax.transform.RewriteCUDAGraph())
    return passes + [relax.transform.LowerAllocTensor(), relax.transform.KillAfterLastUse(),
                     relax.transform.LowerRuntimeBuiltin(), relax.transform.ComputePrimValue(),
                     relax.transform.VMShapeLower(), relax.transform.AttachGlobalSymbol()]


STAGES: list[tuple[str, Callable[[Any], list]]] = [
    ("library_dispatch", library_dispatch_passes),
    ("legalize", legalize_passes),
    ("fuse", fuse_passes),
    ("schedule", schedule_passes),
    ("lower_dataflow", dataflow_lower_passes),
    ("finalize", finalize_passes),
]
"""The Relax-level stages between ``to_relax`` and codegen, in order: (name, passes for a target)."""

STAGE_NAMES = ("to_relax",) + tuple(name for name, _ in STAGES) + ("codegen",)


def prepare_graph(graph: Graph, target: TargetLike = "x86") -> Graph:
    """The IR-level stage: ``graph`` with its weights in the layouts the target's kernels read."""
    return relayout_weights(graph, target)


def lower_graph(graph: Graph, target: TargetLike = "x86", timings: dict[str, float] | None = None, *,
                tuning_db: str | os.PathLike | None = None, tuned: list[str] | None = None):
    """``graph`` through every stage but codegen: the IRModule ``tvm.compile`` will turn into code.
    ``tuning_db``: a tuning database directory for this target (see ``schedule_passes``); ``tuned``, if given,
    receives the names of the PrimFuncs scheduled from its records."""
    import tvm

    from .lower import to_relax

    t = resolve_target(target)
    clock = _Clock(timings)
    with clock("to_relax"):
        mod = to_relax(graph)
    with t:
        for name, passes in STAGES:
            with clock(name):
                stage = passes(t, tuning_db) if name == "schedule" else passes(t)
                mod = tvm.transform.Sequential(stage, name=name)(mod)
    if tuned is not None and tuning_db is not None:
        from .tuning import tuned_functions

        tuned.extend(tuned_functions(mod))
    return mod


def build(graph: Graph, target: TargetLike = "x86", timings: dict[str, float] | None = None, *,
          tuning_db: str | os.PathLike | None = None, tuned: list[str] | None = None):
    """Compiles ``graph`` for ``target`` into a Relax VM executable (``.export_library(path, cc=...)`` saves it;
    ``relax.VirtualMachine(ex, dev)`` runs it). ``timings``, if given, receives seconds per stage;
    ``tuning_db`` and ``tuned`` as in ``lower_graph``."""
    import tvm

    t = resolve_target(target)
    mod = lower_graph(graph, t, timings, tuning_db=tuning_db, tuned=tuned)
    with _Clock(timings)("codegen"):
        return tvm.compile(mod, t, relax_pipeline=None, tir_pipeline=tir_pipeline(t))


def tir_pipeline(target: Any) -> str:
    """TVM's default TIR pipeline; on CPU followed by ``kernels.window_gather`` (an N:M kernel's per-lane input pick
    as ``vpermps`` on AVX-512, as a select chain elsewhere)."""
    if "gpu" in target.keys:
        return "default"
    from .kernels import window_gather

    window_gather.register()
    return window_gather.PIPELINE


def export_library(executable: Any, path: str | os.PathLike, target: TargetLike) -> None:
    """Saves ``build``'s executable as a shared library, linked by the target's cross compiler where it needs one
    (``targets.export_cc``)."""
    cc = export_cc(target)
    executable.export_library(os.fspath(path), **({"cc": cc} if cc else {}))


class _Clock:
    def __init__(self, timings: dict[str, float] | None):
        self.timings = timings

    def __call__(self, name: str) -> "_Clock":
        self.name = name
        return self

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        if self.timings is not None:
            self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.t0
