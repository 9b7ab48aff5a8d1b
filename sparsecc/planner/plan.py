"""``compress='auto'``: one budget, one plan. Sensitivity -> candidates -> costs on the target -> ILP.

    plan = make_plan(graph, batches, parse_budget("latency=0.5"), target="x86")
    graph, reports = compress(graph, plan.specs(), calibration)       # passes/compress, per layer

1. ``sensitivity.hessian_traces``: Tr(H) per layer weight (Hutchinson, through the interpreter);
2. ``candidates.eligible``: every ladder spec each layer can take;
3. ``costs.measure_latencies``: each (layer, spec) timed on the target, plus the dense model end to end; a spec
   slower than the dense layer on that target is dropped (compression only where it is faster); the rest are
   compressed for real by ``candidates.evaluate``: damage ``½ Tr(H)/n ‖W − Ŵ‖²_G`` and bytes, refined by default
   into the measured loss increase of that layer alone compressed (``refine.py``);
4. ``solve.solve``: minimize total damage under the budget (or latency under ``max_drop``).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from sparsecc.errors import SparseccError
from sparsecc.ir.graph import Graph
from sparsecc.passes.compress import Calibration, CompressionSpec, calibrate, load_batches, parse_spec
from sparsecc.passes.compress.calibration import compressible_weight
from sparsecc.passes.compress.memo import remembered

from .budget import Budget
from .candidates import DENSE, LADDER, Candidate, eligible, evaluate, refine_top
from .costs import Latencies, measure_latencies
from .refine import OutputDamage
from .sensitivity import Trace, hessian_traces, problem_digest
from .solve import solve

HESSIAN_ROWS = 4
"""Calibration rows per Hessian probe (MiniLM seq 128: about 0.4 s each on 2 cores)."""
REFINE_ROWS = 4
"""Calibration rows the measured damage of every candidate is computed on (``refine.py``)."""


@dataclass
class LayerChoice:
    node: str
    weight: str
    spec: str
    sensitivity: float
    """Tr(H)/n: the layer's mean curvature."""
    damage: float
    bytes: int
    dense_bytes: int
    ms: float | None
    dense_ms: float | None
    options: list[dict[str, Any]] = field(default_factory=list)
    """Every spec the layer could take: spec, ms (None: not measured), kept (False: slower than dense on the
    target under a latency-bound budget, so not a choice), and for kept ones method, damage, bytes."""


@dataclass
class Plan:
    budget: str
    objective: str
    layers: list[LayerChoice]
    damage: float
    """Loss increase of the whole plan: the sum of its layers' damages (measured one layer at a time when
    refined, else the Hessian estimate)."""
    predicted_ms: float | None
    dense_ms: float | None
    probes: int
    latency_shapes: list[list[int]]
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each phase (sensitivity, latency, candidates, solve)."""
    example: list[np.ndarray] | None = field(default=None, repr=False)
    """The inputs latency was measured at (not in ``as_dict``)."""

    def specs(self) -> dict[str, CompressionSpec]:
        """Node -> spec for the compression pass (dense layers left out)."""
        return {c.node: parse_spec(c.spec) for c in self.layers if c.spec != DENSE}

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "example"}


@dataclass
class Analysis:
    """Everything a plan is chosen from, for any number of budgets: sensitivities, the specs each layer can
    take, their latencies on the target (None: not measurable there), and the evaluated candidates with their
    damage (only those faster than dense when analysed with ``only_faster``)."""
    graph: Graph
    traces: dict[str, Trace]
    specs: dict[str, list[str]]
    latencies: Latencies | None
    candidates: dict[str, list[Candidate]]
    latency_shapes: list[list[int]]
    seconds: dict[str, float]
    example: list[np.ndarray] | None = None


def make_plan(graph: Graph, batches: Sequence[Sequence[np.ndarray]], budget: Budget, target: Any = "x86",
              **options: Any) -> Plan:
    """The plan for a canonical ``graph`` under ``budget``: ``choose(analyze(...), budget)`` (see ``analyze``
    for the options)."""
    return choose(analyze(graph, batches, target, need_latency=budget.latency is not None,
                          only_faster=budget.latency_bound, **options), budget)


def for_target(ladder: tuple[str, ...], target: Any) -> tuple[str, ...]:
    """``ladder`` without the W7A8 specs where they cannot pay: W7A8 is faster than W8A8 only on x86 without VNNI
    (``integer_scheme``), the one target whose N:M W7A8 kernel also skips the pruned weights; elsewhere they cost
    what W8A8 costs (or more), damage more, and would only add compressing time."""
    from sparsecc.backends.tvm import resolve_target
    from sparsecc.backends.tvm.kernels.w8a8 import integer_scheme

    if integer_scheme(resolve_target(target)) == "w7a8":
        return ladder
    return tuple(s for s in ladder if "w7a8" not in s.split("+"))


def analyze(graph: Graph, batches: Sequence[Sequence[np.ndarray]], target: Any = "x86",
            calibration: Calibration | None = None, loss: str = "mse", labels: Sequence[Any] | None = None,
            ladder: Sequence[str] = LADDER, table: Any = None, example: Sequence[np.ndarray] | None = None,
            seed: int = 0, max_probes: int = 16, need_latency: bool = False, only_faster: bool = True,
            refine: bool = True, progress: bool = True) -> Analysis:
    """Steps 1-3 of the module docstring for a canonical ``graph``. ``batches``: calibration batches (lists of
    input arrays); ``labels`` (``loss="ce"``): one class per calibration row; ``example``: the inputs latency
    is measured at (default: the first row of the first batch, i.e. batch 1). ``table``: a ``LatencyTable``
    (default: this machine's, for ``target``; a target this machine cannot run is planned by bytes unless
    ``need_latency``, which then raises). ``only_faster``: evaluate only the specs faster than the dense layer
    (all a latency-bound plan may use); False also evaluates slower ones, for size-only budgets. ``refine``:
    each candidate's damage is measured (``refine.py``: the loss with that layer alone compressed, on
    ``REFINE_ROWS`` calibration rows) rather than taken from the Hessian estimate, which stays in the plan."""
    from rich.progress import Progress

    calibration = calibration if calibration is not None else calibrate(graph, batches)
    hessian_batches = _rebatch(graph, batches, HESSIAN_ROWS)
    refine_batches = _rebatch(graph, batches, REFINE_ROWS)[:1]
    hessian_labels = refine_labels = None
    if labels is not None:  # one class per calibration row, cut like the inputs
        rows = np.concatenate([np.asarray(x).reshape(-1) for x in labels]) if not np.isscalar(labels[0]) \
            else np.asarray(labels)
        starts = np.cumsum([0] + [len(b[0]) for b in hessian_batches])
        hessian_labels = [rows[a:b] for a, b in zip(starts[:-1], starts[1:])]
        refine_labels = [rows[:len(refine_batches[0][0])]]
    example = list(example) if example is not None else _first_row(graph, batches)
    clock = _Clock()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("Hessian traces", total=max_probes)
        traces = remembered("hessian", (), lambda: hessian_traces(
            graph, hessian_batches, loss=loss, labels=hessian_labels, seed=seed, max_probes=max_probes,
            progress=lambda n, err: bar.update(task, completed=n, description=f"Hessian traces (rel. err {err:.2f})")),
            problem_digest(graph, batches, loss, labels), seed, max_probes, HESSIAN_ROWS)
    clock.lap("sensitivity")
    specs = eligible(graph, set(traces), calibration, for_target(tuple(ladder), target))
    latencies = _latencies(graph, specs, need_latency, target, table, example, calibration, progress)
    clock.lap("latency")
    wanted = {node: [s for s in texts if not only_faster or _faster(latencies, node, s)]
              for node, texts in specs.items()}
    measure = OutputDamage(graph, refine_batches, loss, refine_labels) if refine else None
    by_latency = only_faster and latencies is not None

    def cost(node: str, c: Candidate) -> float:
        return latencies.cost(node, c.spec) if by_latency else c.bytes

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("candidates", total=len(wanted))
        candidates = evaluate(graph, traces, calibration, wanted,
                              progress=lambda name: bar.update(task, advance=1, description=f"candidates: {name}"))
        if latencies is not None:  # the byte term of the latency prediction (costs.py)
            latencies.bytes = {node: {c.spec: float(c.bytes) for c in cands} for node, cands in candidates.items()}
        task = bar.add_task("measuring the top candidates", total=len(wanted))
        refine_top(candidates, cost, measure,
                   progress=lambda name: bar.update(task, advance=1, description=f"refining: {name}"))
    clock.lap("candidates")
    return Analysis(graph, traces, specs, latencies, candidates, [list(a.shape) for a in example], clock.laps,
                    example)


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.t0, 2)
        self.t0 = now


def _faster(latencies: Latencies | None, node: str, spec: str) -> bool:
    """Whether ``spec`` runs faster than the dense layer (True where nothing was measured)."""
    return latencies is None or spec == DENSE or latencies.layers[node][spec] < latencies.layers[node][DENSE]


def _latencies(graph: Graph, specs: dict[str, list[str]], need_latency: bool, target: Any, table: Any,
               example: Sequence[np.ndarray], calibration: Calibration | None, progress: bool) -> Latencies | None:
    from sparsecc.backends.tvm.layer_latency import LatencyTable, runs_here

    if table is None:
        if not runs_here(target):
            if need_latency:
                raise SparseccError("a latency budget needs layer latencies measured on the target, which this "
                                    "machine cannot run: plan on the device (or pass a LatencyTable measuring over "
                                    "RPC), or use a size= budget")
            return None
        table = LatencyTable(target)
    return measure_latencies(graph, specs, example, table, calibration, progress)


def choose(analysis: Analysis, budget: Budget) -> Plan:
    """Step 4: solves the knapsack over the analysis's candidates under ``budget`` and records every spec each
    layer could take. A latency-bound budget (``Budget.latency_bound``) only uses specs faster than the dense
    layer on the target; a size-only budget may use slower ones (the plan's predicted latency shows it)."""
    t0 = time.perf_counter()
    graph, specs, candidates = analysis.graph, analysis.specs, analysis.candidates
    traces, latencies = analysis.traces, analysis.latencies
    if budget.latency is None and budget.size is None and budget.max_drop is None:
        raise SparseccError("a plan needs a budget: latency=, size= and/or max_drop (see parse_budget)")
    if budget.latency is not None and latencies is None:
        raise SparseccError("a latency budget needs layer latencies measured on the target; this analysis has none")
    candidates = {node: [c for c in cands if not c.dominated
                         and (not budget.latency_bound or _faster(latencies, node, c.spec))]
                  for node, cands in candidates.items()}
    options = [[{"damage": c.damage, "bytes": float(c.bytes), "ms": latencies.cost(node, c.spec) if latencies
                 else 0.0} for c in cands] for node, cands in candidates.items()]
    caps: dict[str, float] = {}
    if budget.latency is not None:
        caps["ms"] = budget.latency * latencies.model_ms - latencies.rest_ms
    if budget.size is not None:
        caps["bytes"] = budget.size * sum(c[0].bytes for c in candidates.values())
    if budget.latency is None and budget.size is None:
        objective = "ms" if latencies else "bytes"
        caps["damage"] = budget.max_drop
    else:
        objective = "damage"
        if budget.max_drop is not None:
            caps["damage"] = budget.max_drop
    choice = solve(options, objective, caps)
    nodes = {n.name: n for n in graph.nodes}
    layers = []
    for (node, cands), pick in zip(candidates.items(), choice):
        weight = compressible_weight(graph, nodes[node])
        ms = latencies.layers[node] if latencies else None
        chosen, by_spec = cands[pick], {c.spec: c for c in cands}
        everything = {d.spec: d for d in analysis.candidates[node]}
        considered = []
        for spec in specs[node]:
            c = by_spec.get(spec)
            considered.append({"spec": spec, "ms": ms[spec] if ms else None, "kept": c is not None,
                               "dominated": spec in everything and everything[spec].dominated,
                               **({"method": c.method, "damage": c.damage, "predicted": c.predicted,
                                   "measured": c.measured, "bytes": c.bytes} if c else {})})
        layers.append(LayerChoice(node, weight, chosen.spec, traces[weight].per_weight, chosen.damage, chosen.bytes,
                                  cands[0].bytes, ms[chosen.spec] if ms else None, ms[DENSE] if ms else None,
                                  considered))
    predicted = latencies.predict({c.node: c.spec for c in layers}) if latencies else None
    seconds = {**analysis.seconds, "solve": round(time.perf_counter() - t0, 2)}
    return Plan(str(budget), objective, layers, sum(c.damage for c in layers), predicted,
                latencies.model_ms if latencies else None, next(iter(traces.values())).probes,
                analysis.latency_shapes, seconds, analysis.example)


def _first_row(graph: Graph, batches: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """The first batch cut to one row along every symbolic leading dim (deployment at batch 1)."""
    return [np.ascontiguousarray(a[:1]) if graph.types[n].rank and isinstance(graph.types[n].shape[0], str)
            else a for n, a in zip(graph.inputs, batches[0])]


def _rebatch(graph: Graph, batches: Sequence[Sequence[np.ndarray]], rows: int) -> list[list[np.ndarray]]:
    """The calibration data in batches of ``rows`` (inputs whose leading dim is symbolic; others as given)."""
    if not all(graph.types[n].rank and isinstance(graph.types[n].shape[0], str) for n in graph.inputs):
        return [list(b) for b in batches]
    return load_batches(graph, tuple(np.concatenate([b[i] for b in batches]) for i in range(len(graph.inputs))),
                        batch_size=rows)
