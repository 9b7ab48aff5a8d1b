"""Per-layer latency measured on the target: the planner's cost model (DESIGN.md §1 "Planner").

    keys = layer_keys(graph, {"batch": 1})              # node name -> LayerKey, every compressible layer
    table = LatencyTable("x86")                          # cached in $SPARSECC_CACHE/latency (~/.cache/sparsecc/latency)
    ms = table.measure_many(keys.values())               # LayerKey -> median ms; identical layers measured once
    per_node = {name: ms[key] for name, key in keys.items()}

Why measure single layers: the planner picks one encoding per layer under a latency budget, so it needs each
candidate's cost in isolation, and the cost depends on things a FLOP count misses (whether the weight fits in
cache, how the kernel template tiles that shape, the fused epilogue). A layer is timed as a one-layer graph built
through the normal backend path (``prepare_graph`` + ``build``), so it runs exactly the kernel the whole model runs.

What a number means: the median wall time of one call of the compiled function with its inputs and weights
already on the device (no host copies: inside a whole model a layer's input never crosses to the host either),
minus the median time of an empty call (a graph that returns its input), so that a sum of layer latencies
estimates the time those layers take inside one model call. The empty call is measured once per table and
cached like a layer. A whole model (``measure_model``) is timed as a user calls it, numpy in and out, so that
the planner's end-to-end prediction includes the call's host copies (most of a 30 us model's cost).

Where numbers can come from: ``LocalMeasurer`` runs on this machine (x86 here; cuda where a GPU is present).
Any other device plugs in through ``measure_fn``: a callable ``(graph, arrays) -> milliseconds per call``
that builds the one-layer graph for the target and times it there (e.g. over TVM RPC with
``backends/tvm/remote.py``'s ``RemoteRunner.time``). Cache files are keyed by the target, the device, the TVM
and sparsecc versions and a hash of this backend's sources, so numbers from another CPU or an older kernel are
never reused.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from sparsecc import __version__
from sparsecc.bench import host_arch, summarize, wall_times
from sparsecc.caches import cache_root
from sparsecc.errors import SparseccError
from sparsecc.ir.dims import eval_dim
from sparsecc.ir.graph import Encoding, Graph, TensorType
from sparsecc.ir.ops import OPS

from .targets import TargetLike, target_info, target_name

MeasureFn = Callable[[Graph, Sequence[np.ndarray]], Sequence[float]]
"""Builds a one-layer graph (not yet ``prepare_graph``-ed) for the table's target, runs it on the device with
the given inputs and returns the milliseconds of each timed call (warm-up excluded)."""

EPILOGUES = ("none", "relu", "gelu", "gelu_tanh")
"""Elementwise ops that FuseOps folds into a linear/conv kernel's write-back; they change the kernel's cost.
(A residual ``add`` also fuses in real models but needs a second input; it is not modelled: it reads one more
activation tensor, small next to streaming the weight.)"""

CONV_ATTRS = ("strides", "pads", "dilations", "groups")
SPEED_IRRELEVANT_META = frozenset({"layout"})
"""Encoding meta left out of a key: ``layout`` is chosen by ``prepare_graph`` for the target, which the
measurement runs too, so a key is the same before and after that stage."""

SEED = 0
MODEL_BUDGET_S = 2.0
"""Timed seconds for a whole model (a layer gets ``budget_s``): about 100 calls of a 20 ms model, since the
planner's budget is a fraction of this number."""
MODEL_WINDOWS = 5
"""Windows a whole model's timing is split into; the quietest one counts (``quietest_windows``)."""
LAYER_WINDOWS = 3
"""The same for a layer (``budget_s`` in all)."""
LAYERS_IN_TURN, BYTES_IN_TURN = 48, 1 << 29
"""At most this many layers, and weight bytes, are built and held at once to be timed in turns (``measure_many``)."""
BACKEND_DIR = Path(__file__).resolve().parent

Frozen = tuple[tuple[str, Any], ...]


def _freeze(value: Any) -> Any:
    """JSON-like data -> a hashable, canonical form (dicts as sorted item tuples, lists as tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def _thaw(items: Frozen) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in items}


@dataclass(frozen=True)
class LayerKey:
    """One layer instance as far as its speed is concerned: two layers with equal keys cost the same.

    ``attrs`` (conv: strides, pads, dilations, groups) and ``encoding_meta`` accept mappings and are stored
    frozen (sorted item tuples), so keys hash, compare and serialise canonically. ``weight_shape`` is the
    logical ``[out, in, ...]`` shape whatever layout the weight is stored in.
    """

    op: str
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    dtype: str = "float32"
    attrs: Frozen = ()
    encoding: str = "dense"
    encoding_meta: Frozen = ()
    bias: bool = False
    epilogue: str = "none"

    def __post_init__(self) -> None:
        if self.op not in ("linear", "conv"):
            raise ValueError(f"LayerKey op must be 'linear' or 'conv', not {self.op!r}")
        if self.epilogue not in EPILOGUES:
            raise ValueError(f"LayerKey epilogue must be one of {EPILOGUES}, not {self.epilogue!r}")
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "weight_shape", tuple(int(d) for d in self.weight_shape))
        object.__setattr__(self, "attrs", _freeze(dict(self.attrs)))
        object.__setattr__(self, "encoding_meta", _freeze(dict(self.encoding_meta)))

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "input_shape": list(self.input_shape), "weight_shape": list(self.weight_shape),
                "dtype": self.dtype, "attrs": _thaw(self.attrs),
                "encoding": {"kind": self.encoding, **_thaw(self.encoding_meta)},
                "bias": self.bias, "epilogue": self.epilogue}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "LayerKey":
        encoding = dict(doc["encoding"])
        kind = encoding.pop("kind")
        return cls(doc["op"], doc["input_shape"], doc["weight_shape"], doc["dtype"], doc["attrs"], kind,
                   encoding, doc["bias"], doc["epilogue"])

    @property
    def id(self) -> str:
        """Canonical JSON: the key's name in a cache file."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def __str__(self) -> str:
        shape = "x".join(map(str, self.weight_shape))
        extras = [e for e in (self.encoding, "bias" if self.bias else "",
                              "" if self.epilogue == "none" else self.epilogue) if e]
        return f"{self.op} {shape} on {list(self.input_shape)} {self.dtype} ({', '.join(extras)})"


# ---- keys from a graph --------------------------------------------------------------------------------------------
def _speed_meta(encoding: Encoding) -> dict[str, Any]:
    """The meta entries of a dense weight that can change a kernel's speed: scalars and lists of them. Arrays
    are per-layer data, not kernel choices, and would stop identical layers from sharing a key. A compressed
    weight's kind (``int4-g128``, ``2:4+int8``, ``w8a8``, ...) says everything about its speed: no meta."""
    if encoding.kind != "dense":
        return {}

    def plain(v: Any) -> bool:
        return isinstance(v, (str, int, float, bool)) or (
            isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float, bool)) for x in v))

    return {k: v for k, v in encoding.meta.items() if k not in SPEED_IRRELEVANT_META and plain(v)}


def _epilogue(graph: Graph, output: str, users: Mapping[str, list]) -> str:
    """The elementwise op FuseOps will fold into the layer's kernel: the single consumer of its output, if
    that is a relu or gelu (an output the graph also returns must be written unfused)."""
    consumers = users.get(output, [])
    if output in graph.outputs or len(consumers) != 1:
        return "none"
    node = consumers[0]
    if node.op == "relu":
        return "relu"
    if node.op == "gelu":
        return "gelu" if node.attrs.get("approximate", "none") == "none" else "gelu_tanh"
    return "none"


def layer_keys(graph: Graph, symbols: Mapping[str, int]) -> dict[str, LayerKey]:
    """Node name -> ``LayerKey`` for every compressible layer of ``graph`` (a ``linear``/``conv`` whose weight
    is a param), with the symbolic dims of its input bound by ``symbols`` (e.g. ``{"batch": 1}``)."""
    users = graph.users()
    keys: dict[str, LayerKey] = {}
    for node in graph.nodes:
        schema = OPS[node.op]
        if schema.compressible_weight is None:
            continue
        weight = graph.params.get(node.inputs[schema.compressible_weight])
        if weight is None:
            continue
        try:
            input_shape = [eval_dim(d, symbols) for d in graph.types[node.inputs[0]].shape]
        except KeyError as e:
            raise SparseccError(f"layer '{node.name}': {e.args[0]}; pass its value in symbols") from None
        attrs = {a: node.attrs.get(a, schema.attrs[a]) for a in CONV_ATTRS} if node.op == "conv" else {}
        has_bias = len(node.inputs) > 2 and bool(node.inputs[2])
        shape = weight.encoding.meta["shape"] if weight.encoding.kind != "dense" else weight.logical_shape
        keys[node.name] = LayerKey(node.op, input_shape, shape, graph.types[node.inputs[0]].dtype,
                                   attrs, weight.encoding.kind, _speed_meta(weight.encoding), has_bias,
                                   _epilogue(graph, node.outputs[0], users))
    return keys


# ---- one-layer graphs -----------------------------------------------------------------------------------------------
def _dense_weight(key: LayerKey, rng: np.random.Generator) -> np.ndarray:
    scale = 1.0 / np.sqrt(np.prod(key.weight_shape[1:]))
    return rng.standard_normal(key.weight_shape).astype(key.dtype) * np.asarray(scale, key.dtype)


def _output_shape(key: LayerKey) -> tuple[int, ...]:
    if key.op == "linear":
        return (*key.input_shape[:-1], key.weight_shape[0])
    attrs = _thaw(key.attrs)
    spatial = key.input_shape[2:]
    pads, strides, dilations = attrs["pads"], attrs["strides"], attrs["dilations"]
    out = [(size + pads[i] + pads[i + len(spatial)] - dilations[i] * (k - 1) - 1) // strides[i] + 1
           for i, (size, k) in enumerate(zip(spatial, key.weight_shape[2:]))]
    return (key.input_shape[0], key.weight_shape[0], *out)


def layer_graph(key: LayerKey, seed: int = SEED) -> tuple[Graph, list[np.ndarray]]:
    """The one-layer graph ``key`` describes (random weights of its shapes, from ``seed``) and an input for it.

    A key whose encoding is not ``dense`` names a compression spec (``int8``, ``2:4+int4-g64``, ``lowrank:0.25``,
    ``w8a8``, ...: an encoded weight's kind is one): the dense layer is compressed by the compression pass with
    that spec, so a low-rank key times both factors. Values do not matter for speed, storage does; W8A8's input
    grid comes from the random input."""
    rng = np.random.default_rng(seed)
    g = Graph(name=f"layer_{key.op}")
    x = g.add_input("x", TensorType(key.input_shape, key.dtype))
    inputs = [x, g.add_param("weight", _dense_weight(key, rng))]
    if key.bias:
        inputs.append(g.add_param("bias", rng.standard_normal(key.weight_shape[0]).astype(key.dtype)))
    out_type = TensorType(_output_shape(key), key.dtype)
    (y,) = g.add_node(key.op, inputs, [out_type], _thaw(key.attrs), name=key.op)
    if key.epilogue != "none":
        attrs = {"approximate": "tanh"} if key.epilogue == "gelu_tanh" else {}
        (y,) = g.add_node("relu" if key.epilogue == "relu" else "gelu", [y], [out_type], attrs)
    g.outputs = [y]
    arrays = [rng.standard_normal(key.input_shape).astype(key.dtype)]
    if key.encoding != "dense":
        g = _compressed(g, key, arrays)
    return g, arrays


def _compressed(graph: Graph, key: LayerKey, arrays: list[np.ndarray]) -> Graph:
    from sparsecc.passes.compress import calibrate, compress, parse_spec

    try:
        spec = parse_spec(key.encoding)
    except SparseccError as e:
        raise SparseccError(f"cannot measure a layer with encoding '{key.encoding}': {e}") from None
    calib = calibrate(graph, [arrays]) if spec.activations else None
    compressed, (report,) = compress(graph, spec, calib)
    if report.skipped:
        raise SparseccError(f"cannot measure {key}: {report.skipped}")
    return compressed


def structure_id(graph: Graph, arrays: Sequence[np.ndarray]) -> str:
    """A hash of everything about ``graph`` run on ``arrays`` that its speed depends on: ops, attributes, value
    types, param shapes/dtypes/encodings and the inputs' shapes (weight values are left out)."""
    doc = {"nodes": [[n.op, repr(sorted(n.attrs.items())), [str(graph.types.get(i)) for i in n.inputs],
                      [str(graph.types[o]) for o in n.outputs]] for n in graph.nodes],
           "params": sorted([k, list(p.data.shape), str(p.data.dtype), p.encoding.kind]
                            for k, p in graph.params.items()),
           "inputs": [[list(a.shape), str(a.dtype)] for a in arrays]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]


def empty_graph() -> tuple[Graph, list[np.ndarray]]:
    """A graph that returns its input: one call of it is the fixed cost of calling a compiled function."""
    g = Graph(name="empty_call")
    g.outputs = [g.add_input("x", TensorType((1,), "float32"))]
    return g, [np.zeros((1,), np.float32)]


# ---- timing ---------------------------------------------------------------------------------------------------------
def adaptive_times(fn: Callable[[], Any], budget_s: float = 0.25, warmup_s: float | None = None,
                   min_repeat: int = 10, max_repeat: int = 2000) -> list[float]:
    """Milliseconds of each of N calls of ``fn()``, N chosen so the timed calls take about ``budget_s``.

    Warm-up (at least 3 calls, about ``warmup_s``, default a tenth of ``budget_s``) fills caches and wakes the
    thread pool, and its mean call time sets N: a 10 us layer gets ``max_repeat`` samples, a 100 ms one
    ``min_repeat``. (A 70 us model warmed for 10 calls was seen to run its next 200 calls 40% slower.)"""
    warmup_s = budget_s / 10 if warmup_s is None else warmup_s
    calls, t0 = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - t0 < warmup_s:
        fn()
        calls += 1
    per_call = (time.perf_counter() - t0) / calls
    repeat = int(min(max_repeat, max(min_repeat, budget_s / per_call)))
    return wall_times(fn, repeat=repeat, warmup=0)


def quietest_windows(fns: Sequence[Callable[[], Any]], budget_s: float = MODEL_BUDGET_S,
                     windows: int = MODEL_WINDOWS) -> list[list[float]]:
    """Milliseconds of each call of each ``fn()`` in its quietest of ``windows`` windows (``budget_s`` per
    function in all, after a warm-up of a tenth of it): the window with the lowest median. On a shared machine
    another process's burst makes a window slower, never faster; a 60 us model was seen to read 60 or 90 us from
    one 2 s window to the next. Several functions take their windows in turns (a, b, a, b, ...), each re-warmed
    briefly, so that numbers that are compared (a plan and the dense model it is a fraction of) come from the
    same spells: timed one after the other, minutes apart, they were seen to differ by 1.5x."""
    runs: list[list[list[float]]] = [[] for _ in fns]
    for i in range(windows):
        for fn, times in zip(fns, runs):
            times.append(adaptive_times(fn, budget_s / windows, warmup_s=budget_s / 10 if i == 0 else None))
    return [min(times, key=lambda t: float(np.median(t))) for times in runs]


def model_call_ms(fn: Callable[[], Any]) -> float:
    """Median ms of ``fn()``, a whole compiled model's call, timed as ``measure_model`` times one (for comparing
    a plan's prediction with its compiled artifact)."""
    return models_call_ms([fn])[0]


def models_call_ms(fns: Sequence[Callable[[], Any]]) -> list[float]:
    """``model_call_ms`` of each of several models, timed in turns (``quietest_windows``)."""
    return [summarize(times, warmup=0)["median_ms"] for times in quietest_windows(fns)]


def runs_here(target: TargetLike) -> bool:
    """Whether code built for ``target`` can run (and be timed) on this machine."""
    name = target_name(target)
    if name == "cuda":
        import tvm

        return tvm.cuda(0).exist
    return name == host_arch()


class LocalMeasurer:
    """The default ``MeasureFn``: builds the graph for ``target`` through the normal path (``prepare_graph``,
    ``build``) and times it on this machine, in the quietest of ``LAYER_WINDOWS`` windows. By default the VM's
    ``main`` is timed with inputs and weights already on the device (a layer inside a model never crosses to the
    host); with ``host_io``, a ``Runner`` call with numpy in and out is timed instead, as a user calls a whole
    compiled model (``sparsecc bench``), in the quietest of ``MODEL_WINDOWS`` windows. ``time_many`` times
    several graphs with their windows in turns."""

    def __init__(self, target: TargetLike, budget_s: float = 0.25, host_io: bool = False):
        self.target, self.budget_s, self.host_io = target, budget_s, host_io

    def __call__(self, graph: Graph, arrays: Sequence[np.ndarray]) -> list[float]:
        return self.time_many([(graph, arrays)])[0]

    def time_many(self, items: Sequence[tuple[Graph, Sequence[np.ndarray]]],
                  built: Callable[[], Any] | None = None) -> list[list[float]]:
        """Each ``(graph, arrays)``'s call times in its quietest window, the graphs' windows taken in turns
        (``quietest_windows``); ``built()`` is called as each graph is built (the slow part)."""
        calls = []
        for graph, arrays in items:
            calls.append(self._call(graph, arrays))
            if built is not None:
                built()
        return quietest_windows(calls, self.budget_s, MODEL_WINDOWS if self.host_io else LAYER_WINDOWS)

    def _call(self, graph: Graph, arrays: Sequence[np.ndarray]) -> Callable[[], Any]:
        """One call of ``graph`` built for the target, on ``arrays``."""
        import tvm
        from tvm import relax

        from .pipeline import build, prepare_graph
        from .runtime import Runner

        graph = prepare_graph(graph, self.target)
        gpu = target_name(self.target) == "cuda"
        if self.host_io:
            runner = Runner(build(graph, self.target), [graph.types[i] for i in graph.inputs], graph.outputs,
                            {k: p.data for k, p in graph.params.items()}, device="cuda" if gpu else "cpu")
            return lambda: runner(*arrays)
        device = tvm.cuda(0) if gpu else tvm.cpu(0)
        main = relax.VirtualMachine(build(graph, self.target), device)["main"]
        args = [tvm.runtime.tensor(np.ascontiguousarray(a), device) for a in arrays]
        args += [tvm.runtime.tensor(p.data, device) for p in graph.params.values()]
        if not gpu:
            return lambda: main(*args)

        def call_and_sync() -> None:  # GPU launches are asynchronous
            main(*args)
            device.sync()

        return call_and_sync


def _groups_in_turn(keys: Sequence[LayerKey]) -> Iterable[list[tuple[LayerKey, tuple[Graph, list[np.ndarray]]]]]:
    """``keys`` with their one-layer graphs, in groups of at most ``LAYERS_IN_TURN`` layers and ``BYTES_IN_TURN``
    weight bytes (one group's layers are held built at once)."""
    group: list[tuple[LayerKey, tuple[Graph, list[np.ndarray]]]] = []
    held = 0
    for key in keys:
        graph = layer_graph(key)
        size = sum(p.data.nbytes for p in graph[0].params.values())
        if group and (len(group) == LAYERS_IN_TURN or held + size > BYTES_IN_TURN):
            yield group
            group, held = [], 0
        group.append((key, graph))
        held += size
    if group:
        yield group


def _stats(times: Sequence[float]) -> dict[str, Any]:
    stats = summarize(times, warmup=0)
    return {k: stats[k] for k in ("median_ms", "ci95_ms", "min_ms", "repeat")}


def _layer_entry(stats: dict[str, Any], overhead_ms: float) -> dict[str, Any]:
    """A layer's cache entry: its call's statistics and ``ms``, the median less the empty call (floored at 0)."""
    return {**stats, "ms": max(stats["median_ms"] - overhead_ms, 0.0)}


def local_device_name(target: TargetLike) -> str:
    """What runs ``target``'s code here: the GPU's name for cuda, else the CPU model."""
    if target_name(target) == "cuda":
        import tvm

        if tvm.cuda(0).exist:
            return str(tvm.cuda(0).device_name)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def backend_fingerprint() -> str:
    """A hash of this backend's Python sources (lowering, pipeline, kernel templates): any edit may change
    the generated code, so cached numbers from before it are not reused."""
    digest = hashlib.sha256()
    for path in sorted(BACKEND_DIR.rglob("*.py")):
        digest.update(path.relative_to(BACKEND_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    return cache_root() / "latency"


# ---- the table ------------------------------------------------------------------------------------------------------
EMPTY_CALL = "empty_call"


class LatencyTable:
    """Measured per-layer latencies for one target and device, cached on disk in one JSON file.

    ``measure_fn`` times on another device (see ``MeasureFn``); it needs a ``device`` label naming that device,
    which keys the cache with the target. Without it, layers are timed here with ``LocalMeasurer``, and a target
    this machine cannot run raises ``SparseccError`` when a layer is not cached yet.
    """

    def __init__(self, target: TargetLike = "x86", cache_dir: str | os.PathLike | None = None,
                 measure_fn: MeasureFn | None = None, device: str | None = None, budget_s: float = 0.25):
        import tvm

        if measure_fn is not None and not device:
            raise ValueError("a custom measure_fn needs device=: a name for the device it times on "
                             "(it keys the cache, so numbers from different devices never mix)")
        self.target = target
        self.measure_fn = measure_fn
        info = target_info(target)
        self.context = {"target": info["tvm_target"], "device": device or local_device_name(target),
                        "tvm": tvm.__version__, "sparsecc": __version__, "backend": backend_fingerprint()}
        digest = hashlib.sha256(json.dumps(self.context, sort_keys=True).encode()).hexdigest()[:16]
        self.path = Path(cache_dir or default_cache_dir()) / f"{info['name']}-{digest}.json"
        self.budget_s = budget_s
        self.entries: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):  # none yet, or torn: measure again and overwrite it
            return {}
        return dict(doc.get("entries", {})) if doc.get("context") == self.context else {}

    def _save(self) -> None:
        """Merges with what another process may have written since, then replaces the file atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries = {**self._load(), **self.entries}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.stem, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"context": self.context, "entries": self.entries}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def _time(self, graph: Graph, arrays: Sequence[np.ndarray], budget_s: float | None = None,
              host_io: bool = False) -> dict[str, Any]:
        if self.measure_fn is not None:
            times = list(self.measure_fn(graph, arrays))
        elif runs_here(self.target):
            times = LocalMeasurer(self.target, budget_s or self.budget_s, host_io)(graph, arrays)
        else:
            name = target_name(self.target)
            raise SparseccError(
                f"cannot measure {name} layer latencies on this {host_arch()} machine: timing them needs "
                f"{'an' if name[0] in 'aeiou' else 'a'} {name} device. Pass measure_fn= (e.g. timing over "
                f"TVM RPC with backends.tvm.remote) and device=")
        return _stats(times)

    def overhead_ms(self) -> float:
        """Median time of an empty call (a compiled graph that returns its input), measured once and cached: what
        ``measure`` subtracts (``measure_many`` times one with each group of layers instead)."""
        if EMPTY_CALL not in self.entries:
            self.entries[EMPTY_CALL] = self._time(*empty_graph())
            self._save()
        return self.entries[EMPTY_CALL]["median_ms"]

    def measure(self, key: LayerKey) -> float:
        """The layer's latency in ms: median of its calls minus the empty-call overhead (floored at 0)."""
        entry = self.entries.get(key.id)
        if entry is None:
            overhead = self.overhead_ms()
            self.entries[key.id] = entry = _layer_entry(self._time(*layer_graph(key)), overhead)
            self._save()
        return entry["ms"]

    def measure_model(self, graph: Graph | Callable[[], Graph], arrays: Sequence[np.ndarray],
                      key: str | None = None) -> float:
        """Median ms of one call of the whole ``graph`` on ``arrays`` as a user calls it (numpy in and out, not
        minus the empty call; a custom ``measure_fn`` times however it times), cached under its structure (ops,
        attrs, shapes, encodings; not the weights' values), or under ``key`` when given: then ``graph`` may be a
        function making it, called only if not cached."""
        return self.measure_models([(graph, key)], arrays)[0]

    def measure_models(self, models: Sequence[tuple[Graph | Callable[[], Graph], str | None]],
                       arrays: Sequence[np.ndarray]) -> list[float]:
        """``measure_model`` of each ``(graph, key)``. If any one is not cached, all are timed again, in turns
        where this machine times them (``quietest_windows``): the planner compares them (a plan's latency is
        predicted from the dense model's and the fastest plan's), so they must come from the same spells."""
        keys = []
        for graph, key in models:
            if key is None:
                if callable(graph):
                    raise ValueError("a model given as a function needs key=: the function is only called on "
                                     "a miss")
                key = structure_id(graph, arrays)
            keys.append("model:" + key)
        if any(k not in self.entries for k in keys):
            graphs = [graph() if callable(graph) else graph for graph, _ in models]
            if self.measure_fn is None and runs_here(self.target):
                timed = LocalMeasurer(self.target, MODEL_BUDGET_S, host_io=True).time_many(
                    [(g, arrays) for g in graphs])
                self.entries.update({k: _stats(times) for k, times in zip(keys, timed)})
            else:
                self.entries.update({k: self._time(g, arrays, MODEL_BUDGET_S, host_io=True)
                                     for k, g in zip(keys, graphs)})
            self._save()
        return [self.entries[k]["median_ms"] for k in keys]

    def time_compiled(self, compiled: Any, arrays: Sequence[np.ndarray]) -> float | None:
        """Median ms of a compiled model's call where this table times: here as ``measure_model`` times (numpy in
        and out), or on the remote of a ``RemoteMeasurer``; None for another custom ``measure_fn``, which only
        times graphs."""
        if self.measure_fn is None:
            runner = compiled.runner()
            return model_call_ms(lambda: runner(*arrays))
        time_library = getattr(self.measure_fn, "time_library", None)
        if time_library is None:
            return None
        times = time_library(compiled.lib_path, compiled.graph, arrays,
                             built_for=compiled.manifest["target"].get("triple", ""))
        return summarize(times, warmup=0)["median_ms"]

    def measure_many(self, keys: Iterable[LayerKey], progress: bool = True) -> dict[LayerKey, float]:
        """``measure`` for each distinct key (identical layers are timed once; here, those not cached yet are timed
        in turns), with a progress bar over the ones not cached yet."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        unique = list(dict.fromkeys(keys))
        todo = [k for k in unique if k.id not in self.entries]
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      disable=not progress or not todo, transient=True) as bar:
            task = bar.add_task("measuring layers", total=len(todo))
            if todo and self.measure_fn is None and runs_here(self.target):
                # built in groups, each group's layers timed in turns with an empty call: their ratios, and the
                # overhead each one less, come from the same spells (an empty call cached minutes earlier once
                # read about as long as a small CNN's compressed layers took, and they counted as free)
                measurer, empty = LocalMeasurer(self.target, self.budget_s), empty_graph()
                for group in _groups_in_turn(todo):
                    bar.update(task, description=f"building {len(group)} layers, then timing them in turns")
                    is_layer = iter([False] + [True] * len(group))
                    timed = measurer.time_many([empty, *(graph for _, graph in group)],
                                               built=lambda: next(is_layer) and bar.advance(task))
                    overhead = _stats(timed[0])["median_ms"]
                    self.entries.update({key.id: _layer_entry(_stats(times), overhead)
                                         for (key, _), times in zip(group, timed[1:])})
                    self._save()
            else:  # a custom measure_fn (RPC) times one layer at a time
                for key in todo:
                    bar.update(task, description=f"measuring {key}")
                    self.measure(key)
                    bar.advance(task)
        return {k: self.measure(k) for k in unique}

    def measure_graph(self, graph: Graph, symbols: Mapping[str, int],
                      progress: bool = True) -> dict[str, float]:
        """Node name -> latency (ms) for every compressible layer of ``graph`` (see ``layer_keys``)."""
        keys = layer_keys(graph, symbols)
        ms = self.measure_many(keys.values(), progress)
        return {name: ms[key] for name, key in keys.items()}

    def __repr__(self) -> str:
        return f"LatencyTable({target_name(self.target)} on {self.context['device']}, {len(self.entries)} cached)"
