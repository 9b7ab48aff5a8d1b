"""MetaSchedule tuning of a model's fused TIR functions, kept in a per-target JSON database that ``compile`` applies.

    report = tune_graph(prepared_graph, "x86", trials=64)   # writes <root>/<target key>/database_*.json
    db = find_database("x86", None)                           # what compile uses: SPARSECC_TUNING_DB or the default
    mod = lower_graph(graph, "x86", tuning_db=db)             # tuned PrimFuncs carry the attribute TUNED_ATTR

**What is tuned.** The tasks are the PrimFuncs of the module after the pipeline's ``fuse`` stage, i.e. exactly the
functions the ``schedule`` stage sees, so a record's workload (the PrimFunc's structural hash) matches at compile time.
Every static-shape task is tuned, including the ones a hand-written template covers: for each task the template's
schedule (or TVM's default loops where no template matches) is built and timed with the *same* MetaSchedule builder
and runner as the candidates, and the best tuned schedule is written to the database only if it is at least
``MIN_SPEEDUP`` times faster. So a database never makes a function slower than ``compile`` without one would (up to
measurement noise, which the margin absorbs), and tuning can still win where a template is weak, e.g. a shape the
template's fixed tiling fits badly. Tuning only the functions no template covers would be cheaper but would leave
those wins on the table and still need a baseline: the "uncovered" functions already have TVM's default loops.
Functions with symbolic dims are skipped: MetaSchedule measures concrete shapes (fix them with ``--input``).

**Where records live.** ``<root>/<target key>/`` with ``root`` = ``--db`` / ``tuning_db=``, else
``$SPARSECC_TUNING_DB``, else ``~/.cache/sparsecc/tuning``. The key hashes the full TVM target description (CPU
model, features, core count, triple; CUDA arch) and the TVM version, so a record measured on one CPU is never
applied to arm64, another CPU, or a TVM whose schedule primitives may replay differently.

**Where it runs.** Candidates are always built here. Without a tracker they are timed here by MetaSchedule's
local runner: x86 on this machine, CUDA where a GPU is present. With ``tracker="HOST:PORT", key=KEY`` (``sparsecc
tune --tracker --key``) they are timed on the devices registered with that TVM RPC tracker under KEY, by
MetaSchedule's ``RPCRunner`` with one worker per device, so a pool of boards shares the measurements; each
candidate is uploaded as a shared library linked by the target's compiler (the aarch64 cross compiler for arm64),
so the boards need no compiler. The templates' baselines are timed the same way, on the same devices.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from sparsecc.errors import SparseccError
from sparsecc.ir.graph import Graph

from .targets import TargetLike, physical_cores, resolve_target, target_name

ENV_VAR = "SPARSECC_TUNING_DB"
DEFAULT_ROOT = Path("~/.cache/sparsecc/tuning")
RECORDS_FILE = "database_tuning_record.json"
WORKLOADS_FILE = "database_workload.json"
TUNED_ATTR = "sparsecc.tuning_record"
"""PrimFunc attribute marking a function whose schedule came from a tuning record (counted in the manifest)."""
MIN_SPEEDUP = 1.03
"""A tuned schedule replaces the template only if template_latency / tuned_latency >= this: two timings of the same
kernel differ by a few percent between runs here, and a record that merely ties the template is not worth keeping."""
TEMPLATE_TRIES = 3
"""Runs of a template baseline before it counts as failed (``_measure_templates``): without a baseline no candidate
of that task can be kept."""


def target_key(target: TargetLike) -> str:
    """The database directory name for ``target``: ``<name>-<cpu or arch>-<12 hex of sha256(target JSON, TVM)>``."""
    import tvm

    t = resolve_target(target)
    desc = json.dumps({"target": json.loads(str(t)), "tvm": tvm.__version__}, sort_keys=True)
    model = str(t.attrs.get("mcpu", "") or t.attrs.get("arch", "") or t.kind.name)
    return f"{target_name(t)}-{model}-{hashlib.sha256(desc.encode()).hexdigest()[:12]}"


def database_dir(target: TargetLike, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<target key>``; ``root`` None means ``$SPARSECC_TUNING_DB`` or ``~/.cache/sparsecc/tuning``."""
    if root is None:
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(root).expanduser() / target_key(target)


def find_database(target: TargetLike, tuning_db: str | os.PathLike | bool | None = None) -> Path | None:
    """The database ``compile`` should apply for ``target``, or None when there is none.

    ``tuning_db``: a root directory (its ``<target key>`` subdirectory is used), None for the default root
    (``$SPARSECC_TUNING_DB`` or ``~/.cache/sparsecc/tuning``), False to apply no records.
    """
    if tuning_db is False:
        return None
    path = database_dir(target, None if tuning_db in (None, True) else tuning_db)
    return path if (path / RECORDS_FILE).is_file() else None


def apply_records_pass(db_dir: str | os.PathLike) -> "tvm.transform.Pass":  # noqa: F821
    """A module pass: PrimFuncs with a record in ``db_dir`` get the tuned schedule and the ``TUNED_ATTR`` mark;
    the rest are left for the templates. Runs under the pipeline's target (records are looked up for it)."""
    import tvm
    from tvm import relax, tirx
    from tvm.s_tir import meta_schedule as ms

    @tvm.transform.module_pass(opt_level=0, name="sparsecc.ApplyTuningRecords")
    def apply(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        database = ms.database.JSONDatabase(work_dir=str(db_dir), allow_missing=False)
        with database:
            tuned = relax.transform.MetaScheduleApplyDatabase()(mod)
        for gv, func in tuned.functions.items():
            if isinstance(func, tirx.PrimFunc) and _is_scheduled(func) and not _is_scheduled(mod[gv]):
                tuned.update_func(gv, func.with_attr(TUNED_ATTR, True))
        return tuned

    return apply


def tuned_functions(mod: Any) -> list[str]:
    """Names of the PrimFuncs in ``mod`` whose schedule came from a tuning record."""
    from tvm import tirx

    return sorted(gv.name_hint for gv, f in mod.functions.items()
                  if isinstance(f, tirx.PrimFunc) and TUNED_ATTR in (f.attrs or {}))


def _is_scheduled(func: Any) -> bool:
    return bool(func.attrs is not None and func.attrs.get("tirx.is_scheduled", False))


@dataclass
class TaskResult:
    """One tuning task: latencies in ms (None: could not be measured), trials spent, whether its record was kept."""

    name: str
    template_ms: float | None
    tuned_ms: float | None
    trials: int
    kept: bool

    def describe(self) -> str:
        verdict = "kept" if self.kept else "template stays"
        return (f"{self.name}: template {_fmt(self.template_ms)}, tuned {_fmt(self.tuned_ms)} after {self.trials} "
                f"trials -> {verdict}")


def _fmt(latency_ms: float | None) -> str:
    return "n/a" if latency_ms is None else f"{latency_ms * 1e3:.2f} us"


@dataclass
class TuneReport:
    database: Path
    tasks: list[TaskResult]
    skipped: list[str]
    seconds: float

    @property
    def kept(self) -> int:
        return sum(t.kept for t in self.tasks)


def fused_module(graph: Graph, target: TargetLike) -> Any:
    """``graph`` (already through ``prepare_graph``) lowered through the stages before ``schedule``."""
    import tvm

    from .lower import to_relax
    from .pipeline import STAGES

    t = resolve_target(target)
    mod = to_relax(graph)
    with t:
        for name, passes in STAGES:
            if name == "schedule":
                break
            mod = tvm.transform.Sequential(passes(t), name=name)(mod)
    return mod


def tune_graph(graph: Graph, target: TargetLike = "x86", *, trials: int = 64,
               db_root: str | os.PathLike | None = None, cost_model: str = "auto", seed: int = 0,
               tracker: str | None = None, key: str | None = None, timeout: float = 10.0,
               log: Callable[[str], None] = print) -> TuneReport:
    """Tunes the fused TIR functions of ``graph`` (already through ``prepare_graph``) with MetaSchedule, at most
    ``trials`` measured candidates over all tasks, and adds the winners to ``database_dir(target, db_root)``.

    ``cost_model``: "xgb", "random", or "auto" (xgb when xgboost is installed). ``tracker`` ("HOST:PORT") and
    ``key``: time on the tracker's devices registered under ``key`` instead of here (``timeout``: seconds for each
    step of reaching the tracker). Progress goes to ``log``.
    """
    from tvm.s_tir import meta_schedule as ms

    if trials < 1:
        raise SparseccError(f"trials must be >= 1, not {trials}")
    t = resolve_target(target)
    register_tensor_intrinsics(t)
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=50)
    runner, where = _runner(t, evaluator, tracker, key, timeout)
    if cost_model == "auto":
        cost_model = "xgb" if _have_xgboost() else "random"
    t0 = time.perf_counter()
    db_dir = database_dir(t, db_root)

    extracted = ms.relax_integration.extract_tasks(fused_module(graph, t), t)
    static = [task for task in extracted if _static_shapes(task.dispatched[0])]
    skipped = [task.task_name for task in extracted if not _static_shapes(task.dispatched[0])]
    if not static:
        raise SparseccError("nothing to tune: every fused function has symbolic dims; fix them with --input "
                            "NAME=SHAPE")
    log(f"[tune] {len(static)} tasks ({len(skipped)} with symbolic dims skipped), {trials} trials, "
        f"cost model {cost_model}, target key {db_dir.name}, timed on {where}")

    # One build worker: the builds share the cores with the runner's timing. MetaSchedule starts it anew for
    # every batch, which pays for the worker's TVM import each time: over 30 s (the default timeout) on a busy
    # 2-core machine here.
    builder = ms.builder.LocalBuilder(max_workers=1, timeout_sec=120, f_build=build_candidate,
                                      f_export=None if tracker is None else partial(export_shared,
                                                                                    target=target_name(t)))
    measured = _measure_templates([task.dispatched[0] for task in static], t, builder, runner)
    for task, ms_ in zip(static, measured):
        log(f"[tune] template {task.task_name}: " + (ms_ if isinstance(ms_, str) else _fmt(ms_)))
    templates = [None if isinstance(ms_, str) else ms_ for ms_ in measured]

    progress = _Progress([task.task_name for task in static], templates, log)
    with tempfile.TemporaryDirectory(prefix="sparsecc-tune-") as work_dir, _quiet_meta_schedule():
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            static, work_dir, num_threads=physical_cores(), seed=seed)
        # Candidates go to a scratch database; only those that beat their template reach db_dir. Batches of
        # ceil(trials / tasks) let a small budget reach every task instead of spending it all on the first.
        scratch = ms.database.MemoryDatabase()
        ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work_dir, max_trials_global=trials,
                      num_trials_per_iter=max(1, min(64, math.ceil(trials / len(contexts)))),
                      builder=builder, runner=runner, database=scratch, cost_model=cost_model,
                      measure_callbacks=ms.measure_callback.MeasureCallback.create("default") + [progress.callback()])
        results = _commit_winners(static, templates, progress.trials, scratch, t, db_dir)
    report = TuneReport(db_dir, results, skipped, time.perf_counter() - t0)
    for r in results:
        log(f"[tune] {r.describe()}")
    log(f"[tune] {report.kept}/{len(results)} records kept in {db_dir} ({report.seconds:.1f} s)")
    return report


def _runner(t: Any, evaluator: Any, tracker: str | None, key: str | None, timeout: float) -> tuple[Any, str]:
    """MetaSchedule's runner for ``t`` and where it times: here, or one worker per device of the tracker's pool."""
    from tvm.s_tir import meta_schedule as ms

    if tracker is None:
        _check_runs_here(t)
        return ms.runner.LocalRunner(evaluator_config=evaluator), "this machine"
    from .remote import parse_address, pool_size

    devices = pool_size(tracker, key, timeout)
    host, port = parse_address(tracker, "--tracker")
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key,
                                 session_timeout_sec=max(int(timeout), 60))
    return (ms.runner.RPCRunner(config, evaluator, max_workers=devices),
            f"{devices} '{key}' device{'s' * (devices > 1)} of tracker {tracker}")


def build_candidate(mod: Any, target: Any, _params: Any) -> Any:
    """MetaSchedule's build step (``LocalBuilder``'s ``f_build``), as ``compile`` builds: the record's weight-layout
    blocks removed as in MetaSchedule's ``default_build``, then sparsecc's TIR pipeline (``pipeline.tir_pipeline``:
    an N:M kernel's window gathers), so a template and its candidates are timed as they would be deployed. Unlike
    ``default_build`` it does not import ``tvm.s_tir.tensor_intrin`` (every target's tensor intrinsics: 79 s on this
    2-core machine), which the builder's process, restarted for every batch, paid each time."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from .pipeline import tir_pipeline

    return tvm.tirx.build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target,
                          pipeline=tir_pipeline(target))


INTRINSIC_MODULES = {"cuda": ("cuda",), "llvm": ("x86", "arm_cpu")}
"""The modules of ``tvm.s_tir.tensor_intrin`` whose intrinsics MetaSchedule's rules may use, per target kind
(sparsecc's targets: x86, arm64, CUDA)."""
PARTIAL_MARK = "_sparsecc_partial"


def register_tensor_intrinsics(t: Any) -> None:
    """Registers the tensor intrinsics MetaSchedule's rules may use for ``t`` (``INTRINSIC_MODULES``), and only
    those. ``TuneContext`` imports ``tvm.s_tir.tensor_intrin`` for that side effect, which registers every target's:
    79 s on this 2-core machine, 54 of them CUDA's, before an x86 tuning run could start (x86 and ARM's take 6 s).
    So the package is entered in ``sys.modules`` without running its ``__init__`` (its submodules still import by
    name), and that import finds it done. A process that imported the whole package already keeps it; another
    target kind runs the package's own ``__init__``."""
    import importlib
    import importlib.util
    import sys

    import tvm.s_tir

    name = "tvm.s_tir.tensor_intrin"
    package = sys.modules.get(name)
    if package is None:
        package = importlib.util.module_from_spec(importlib.util.find_spec(name))
        setattr(package, PARTIAL_MARK, True)  # entered here, its __init__ not run
        sys.modules[name] = tvm.s_tir.tensor_intrin = package
    if not getattr(package, PARTIAL_MARK, False):
        return  # imported whole
    modules = INTRINSIC_MODULES.get(t.kind.name)
    if modules is None:  # not a sparsecc target kind: every target's, as TVM would
        package.__spec__.loader.exec_module(package)
        delattr(package, PARTIAL_MARK)
        return
    for module in modules:
        importlib.import_module(f"{name}.{module}")


def export_shared(module: Any, target: str) -> str:
    """MetaSchedule's export step for a remote runner: a shared library linked here by ``target``'s compiler
    (``pipeline.export_library``), which a device loads without a compiler of its own (MetaSchedule's default, a
    tar of objects, is linked by the device). ``target`` is a short name: the function is pickled to a worker."""
    from .pipeline import export_library

    path = os.path.join(tempfile.mkdtemp(prefix="sparsecc-tune-"), "candidate.so")
    export_library(module, path, target)
    return path


def _check_runs_here(t: Any) -> None:
    """The local runner measures on this machine: only a target of this machine's kind can be tuned."""
    import tvm
    from tvm.target import codegen

    name = target_name(t)
    if name == "cuda":
        if not tvm.cuda(0).exist:
            raise SparseccError("tuning for cuda measures on a local GPU, and there is none here")
        return
    if t.kind.name != "llvm" or name != "x86" or not codegen.llvm_get_system_triple().startswith("x86_64"):
        raise SparseccError(f"tuning for {name} needs that device to measure on: give the TVM RPC tracker its "
                            "servers registered with (--tracker HOST:PORT --key KEY); here, only x86 (this machine) "
                            "and a local cuda GPU can be timed")


@contextlib.contextmanager
def _quiet_meta_schedule() -> Iterator[None]:
    """MetaSchedule prints its whole task table to stdout after every batch at INFO; ``_Progress`` prints one line
    instead. Its loggers take their level from this parent logger when the tuning starts.

    MetaSchedule also builds its logging config from the names of the handlers already on that logger, and
    crashes on an unnamed one (pytest's log capture, or a user's own, left there by an earlier tuning in the same
    process): those are set aside while it runs."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    level, unnamed = logger.level, [h for h in logger.handlers if h.get_name() is None]
    logger.setLevel(logging.WARNING)
    for handler in unnamed:
        logger.removeHandler(handler)
    try:
        yield
    finally:
        logger.setLevel(level)
        for handler in unnamed:
            logger.addHandler(handler)


def _have_xgboost() -> bool:
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return False
    return True


def _static_shapes(mod: Any) -> bool:
    """Whether MetaSchedule can make concrete arguments for the task (it raises TypeError on a symbolic dim)."""
    from tvm.s_tir import meta_schedule as ms

    try:
        ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    except TypeError:
        return False
    return True


def _mean_ms(run_secs: Any) -> float:
    return 1e3 * sum(float(s) for s in run_secs) / len(run_secs)


def _measure_templates(mods: list[Any], t: Any, builder: Any, runner: Any) -> list[float | str]:
    """What ``compile`` without a database would run for each task (templates, else TVM's default loops), timed
    by the tuning runner so the comparison with the candidates is like for like: per task its ms, or why it has
    none (the builder's or the last run's error, first line)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from .pipeline import schedule_passes

    with t:  # dlight's ApplyDefaultSchedule updates the module it is given in place: schedule copies
        scheduled = [tvm.transform.Sequential(schedule_passes(t))(mod.clone()) for mod in mods]
    built = builder.build([ms.builder.BuilderInput(mod, t) for mod in scheduled])
    out: list[float | str] = [f"build failed: {_first_line(b.error_msg)}" if b.error_msg else "not run"
                              for b in built]
    inputs = {i: ms.runner.RunnerInput(b.artifact_path, "cpu" if t.kind.name == "llvm" else t.kind.name,
                                       ms.arg_info.ArgInfo.from_prim_func(mod["main"]))
              for i, (mod, b) in enumerate(zip(scheduled, built)) if b.error_msg is None}
    for attempt in range(1, TEMPLATE_TRIES + 1):  # a run that failed is tried again: on a busy machine an RPC
        todo = [i for i in inputs if isinstance(out[i], str)]  # run can time out
        if not todo:
            break
        for i, future in zip(todo, runner.run([inputs[i] for i in todo])):
            res = future.result()
            out[i] = (_mean_ms(res.run_secs) if res.error_msg is None
                      else f"run failed ({attempt} of {TEMPLATE_TRIES} tries): {_first_line(res.error_msg)}")
    return out


def _first_line(message: str) -> str:
    return next((line.strip() for line in message.splitlines() if line.strip()), "no message")[:300]


class _Progress:
    """Counts trials and the best latency per task and prints one line per measured batch."""

    def __init__(self, names: list[str], templates: list[float | None], log: Callable[[str], None]):
        self.names, self.templates, self.log = names, templates, log
        self.trials = [0] * len(names)
        self.best: list[float | None] = [None] * len(names)

    def callback(self) -> Any:
        from tvm.ir.utils import derived_object
        from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

        progress = self

        @derived_object
        class ProgressCallback(PyMeasureCallback):
            def apply(self, task_scheduler: Any, task_id: int, measure_candidates: Any, builder_results: Any,
                      runner_results: Any) -> None:
                progress.update(task_id, runner_results)

        return ProgressCallback()

    def update(self, task_id: int, runner_results: Any) -> None:
        self.trials[task_id] += len(runner_results)
        for res in runner_results:
            if res.error_msg is None and res.run_secs:
                latency = _mean_ms(res.run_secs)
                if self.best[task_id] is None or latency < self.best[task_id]:
                    self.best[task_id] = latency
        best, base = self.best[task_id], self.templates[task_id]
        self.log(f"[tune] task {task_id + 1}/{len(self.names)} {self.names[task_id]}: {self.trials[task_id]} trials, "
                 f"best {_fmt(best)} (template {_fmt(base)})")


def _commit_winners(tasks: list[Any], templates: list[float | None], trials: list[int], scratch: Any, t: Any,
                    db_dir: Path) -> list[TaskResult]:
    """Copies each task's best record from ``scratch`` to the database in ``db_dir`` if it beats the template."""
    from tvm.s_tir import meta_schedule as ms

    db_dir.mkdir(parents=True, exist_ok=True)
    (db_dir / "target.json").write_text(json.dumps({"key": db_dir.name, "target": json.loads(str(t))}, indent=1))
    database = ms.database.JSONDatabase(work_dir=str(db_dir))
    results = []
    for task, base, n in zip(tasks, templates, trials):
        mod = task.dispatched[0]
        best = scratch.get_top_k(scratch.commit_workload(mod), 1)
        tuned = _mean_ms(best[0].run_secs) if best and best[0].run_secs else None
        kept = tuned is not None and base is not None and base / tuned >= MIN_SPEEDUP  # unmeasured: no proof
        if kept:
            database.commit_tuning_record(ms.database.TuningRecord(
                best[0].trace, database.commit_workload(mod), best[0].run_secs, t, best[0].args_info))
        results.append(TaskResult(task.task_name, base, tuned, n, kept))
    return results
