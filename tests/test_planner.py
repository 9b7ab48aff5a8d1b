"""The planner behind ``compress='auto'`` (sparsecc.planner): the budget grammar, the knapsack ILP, Hutchinson
Hessian traces against exact Hessians, candidate damage, plans under latency/size/max-drop budgets with a
deterministic fake latency table, ``sparsecc.compile(compress='auto')`` on the real digits CNN, and the same
sensitivities from a torch.export capture and an ONNX import of one model."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

import sparsecc
from sparsecc.compiler import capture
from sparsecc.errors import SparseccError
from sparsecc.interpreter import run_graph
from sparsecc.ir.graph import Graph, TensorType
from sparsecc.ir.verify import verify
from sparsecc.models.digits import accuracy, digits_data
from sparsecc.passes.compress import CompressionSpec, calibrate, compress, load_batches, parse_spec
from sparsecc.passes.compress.calibration import compressible_weight
from sparsecc.passes.pipeline import canonicalize
from sparsecc.planner import Analysis, Budget, analyze, choose, make_plan, parse_budget
from sparsecc.planner.candidates import DENSE, Candidate, eligible, evaluate, layer_graph, refine_top
from sparsecc.planner.costs import Latencies
from sparsecc.planner.sensitivity import Trace, hessian_traces, layer_weights, problem_digest
from sparsecc.planner.solve import solve

pytest.importorskip("tvm")

from sparsecc.backends.tvm import layer_latency  # noqa: E402
from sparsecc.backends.tvm.layer_latency import LatencyTable  # noqa: E402

pytestmark = pytest.mark.xdist_group("compress")

DIGITS_DYN = {"x": {0: torch.export.Dim("batch", max=4096)}}


# ---- budget ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,max_drop,want", [
    ("latency=0.5", None, Budget(0.5, None, None)),
    ("size=0.25", None, Budget(None, 0.25, None)),
    ("latency=0.6,size=0.3", None, Budget(0.6, 0.3, None)),
    (" size = 0.3 , latency=0.6 ", None, Budget(0.6, 0.3, None)),
    ("size=1", 0.01, Budget(None, 1.0, 0.01)),
    (None, 0.02, Budget(None, None, 0.02)),
    ("", 0.0, Budget(None, None, 0.0)),
])
def test_parse_budget_valid(text, max_drop, want):
    budget = parse_budget(text, max_drop)
    assert budget == want
    # only a size-only budget may pick encodings slower than dense
    assert budget.latency_bound == (want.latency is not None or want.size is None)
    assert parse_budget(str(budget).split(",max-drop=")[0].split("max-drop=")[0] or None, want.max_drop) == want


def test_budget_str():
    assert str(parse_budget("size=0.3,latency=0.6", 0.01)) == "latency=0.6,size=0.3,max-drop=0.01"
    assert str(parse_budget(None, 0.5)) == "max-drop=0.5"


@pytest.mark.parametrize("text,max_drop,match", [
    ("speed=0.5", None, r"expected latency=FRACTION and/or size=FRACTION, got 'speed=0.5'"),
    ("latency", None, "expected latency=FRACTION"),
    ("latency=0", None, r"in \(0, 1\]; got 0"),
    ("size=1.5", None, r"in \(0, 1\]; got 1.5"),
    ("latency=-0.2", None, r"in \(0, 1\]"),
    ("latency=nan", None, r"in \(0, 1\]"),
    ("size=abc", None, "size='abc' is not a number"),
    ("latency=0.5,latency=0.4", None, "latency given twice"),
    (None, None, "needs a budget"),
    (" , ", None, "needs a budget"),
    ("latency=0.5", -1.0, "max_drop must be a non-negative"),
])
def test_parse_budget_errors(text, max_drop, match):
    with pytest.raises(SparseccError, match=match):
        parse_budget(text, max_drop)


# ---- the knapsack ---------------------------------------------------------------------------------------------------
def brute_force(options, objective, caps):
    best = None
    for combo in itertools.product(*[range(len(layer)) for layer in options]):
        chosen = [options[i][j] for i, j in enumerate(combo)]
        if all(sum(o[m] for o in chosen) <= cap + 1e-9 for m, cap in caps.items()):
            value = sum(o[objective] for o in chosen)
            if best is None or value < best[0] - 1e-12:
                best = (value, list(combo))
    return best


KNAPSACK = [  # per layer: (damage, bytes, ms)
    [dict(damage=0.0, bytes=10, ms=5), dict(damage=1.0, bytes=5, ms=3), dict(damage=4.0, bytes=2, ms=1)],
    [dict(damage=0.0, bytes=20, ms=9), dict(damage=2.0, bytes=8, ms=4), dict(damage=10.0, bytes=4, ms=2)],
    [dict(damage=0.0, bytes=6, ms=4), dict(damage=0.5, bytes=3, ms=2)],
]


def test_solve_minimizes_damage_under_a_size_cap():
    # dense everywhere: 36 bytes. At 20 bytes the cheapest damage is layer 0 at 5 (1.0), layer 1 at 8 (2.0),
    # layer 2 at 6 (0.0): 19 bytes, damage 3.0 (layer 2 squeezed instead of layer 0 costs 4.0 + ... more)
    assert solve(KNAPSACK, "damage", {"bytes": 20}) == [1, 1, 0]
    assert solve(KNAPSACK, "damage", {"bytes": 36}) == [0, 0, 0]
    assert solve(KNAPSACK, "damage", {"bytes": 9}) == [2, 2, 1]  # the only plan that fits
    for cap in range(9, 37):
        value, combo = brute_force(KNAPSACK, "damage", {"bytes": cap})
        choice = solve(KNAPSACK, "damage", {"bytes": cap})
        assert sum(KNAPSACK[i][j]["damage"] for i, j in enumerate(choice)) == pytest.approx(value), cap
        assert sum(KNAPSACK[i][j]["bytes"] for i, j in enumerate(choice)) <= cap


def test_solve_minimizes_latency_under_a_damage_cap():
    # max-drop form: fastest plan whose damage stays at most the cap
    assert solve(KNAPSACK, "ms", {"damage": 0.0}) == [0, 0, 0]
    assert solve(KNAPSACK, "ms", {"damage": 3.5}) == [1, 1, 1]  # 3 + 4 + 2 = 9 ms, damage 3.5
    assert solve(KNAPSACK, "ms", {"damage": 100}) == [2, 2, 1]
    for cap in (0.0, 0.5, 1.0, 2.5, 3.0, 4.5, 6.5, 12, 14.5):
        value, _ = brute_force(KNAPSACK, "ms", {"damage": cap})
        choice = solve(KNAPSACK, "ms", {"damage": cap})
        assert sum(KNAPSACK[i][j]["ms"] for i, j in enumerate(choice)) == pytest.approx(value), cap
        assert sum(KNAPSACK[i][j]["damage"] for i, j in enumerate(choice)) <= cap + 1e-9
    # two caps at once
    value, combo = brute_force(KNAPSACK, "damage", {"bytes": 25, "ms": 10})
    assert solve(KNAPSACK, "damage", {"bytes": 25, "ms": 10}) == combo


def test_solve_infeasible_names_the_reachable_floor():
    with pytest.raises(SparseccError, match=r"bytes at most 8 asked, at least 9 reachable"):
        solve(KNAPSACK, "damage", {"bytes": 8})
    with pytest.raises(SparseccError, match=r"ms at most 4 asked, at least 5 reachable"):
        solve(KNAPSACK, "damage", {"bytes": 100, "ms": 4})
    with pytest.raises(SparseccError, match="no layer, or a layer with no option"):
        solve([KNAPSACK[0], []], "damage", {})
    with pytest.raises(SparseccError, match="no layer"):
        solve([], "damage", {})


# ---- Hutchinson traces ----------------------------------------------------------------------------------------------
def tiny_graph() -> Graph:
    """x[batch, 6] -> linear(5, +bias) -> gelu -> linear(3): two layers of very different curvature."""
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", TensorType(("batch", 6), "float32"))
    w1 = g.add_param("w1", rng.standard_normal((5, 6)).astype("float32"))
    b1 = g.add_param("b1", rng.standard_normal(5).astype("float32"))
    (h,) = g.add_node("linear", [x, w1, b1], [TensorType(("batch", 5), "float32")], name="fc1")
    (h,) = g.add_node("gelu", [h], [TensorType(("batch", 5), "float32")])
    w2 = g.add_param("w2", (3 * rng.standard_normal((3, 5))).astype("float32"))
    (h,) = g.add_node("linear", [h, w2], [TensorType(("batch", 3), "float32")], name="fc2")
    g.outputs = [h]
    verify(g)
    return g


def tiny_batches(n=4, rows=4):
    rng = np.random.default_rng(1)
    return [[rng.standard_normal((rows, 6)).astype("float32")] for _ in range(n)]


def tiny_labels(n=4, rows=4):
    rng = np.random.default_rng(2)
    return [rng.integers(0, 3, rows) for _ in range(n)]


def exact_traces(graph, batches, loss, labels=None):
    """Tr of the exact (float64, torch.autograd.functional.hessian) Hessian of the same loss wrt each weight,
    averaged over batches (the probes cycle through the batches evenly)."""
    w1, b1, w2 = (torch.tensor(graph.params[k].data, dtype=torch.float64) for k in ("w1", "b1", "w2"))

    def forward(a, b, x):
        return torch.nn.functional.gelu(x @ a.T + b1) @ b.T

    out = {"w1": 0.0, "w2": 0.0}
    for i, (x,) in enumerate(batches):
        x = torch.tensor(x, dtype=torch.float64)
        ref = forward(w1, w2, x)

        def value(y):
            if loss == "mse":
                return ((y - ref) ** 2).mean() / (ref ** 2).mean()
            if loss == "kl":
                p = ref.softmax(-1)
                return (p * (p.log() - y.log_softmax(-1))).sum() / y.shape[0]
            return torch.nn.functional.cross_entropy(y, torch.as_tensor(labels[i]).long())

        h1 = torch.autograd.functional.hessian(lambda a: value(forward(a, w2, x)), w1)
        h2 = torch.autograd.functional.hessian(lambda b: value(forward(w1, b, x)), w2)
        out["w1"] += float(h1.reshape(w1.numel(), -1).trace()) / len(batches)
        out["w2"] += float(h2.reshape(w2.numel(), -1).trace()) / len(batches)
    return out


@pytest.mark.parametrize("loss,probes", [("mse", 400), ("kl", 160), ("ce", 160)])
def test_hutchinson_matches_exact_hessian_trace(loss, probes):
    g, batches = tiny_graph(), tiny_batches()
    labels = tiny_labels() if loss == "ce" else None
    seen = []
    traces = hessian_traces(g, batches, loss=loss, labels=labels, seed=0, max_probes=probes, tolerance=0,
                            progress=lambda n, err: seen.append(n))
    assert seen == list(range(1, probes + 1))
    exact = exact_traces(g, batches, loss, labels)
    assert set(traces) == {"w1", "w2"} == set(layer_weights(g))
    for name, trace in traces.items():
        assert (trace.probes, trace.size) == (probes, g.params[name].data.size)
        assert abs(trace.mean - exact[name]) <= 4 * trace.stderr, (name, trace, exact[name])
        if loss != "ce":  # at the dense weights the label-free losses sit at their minimum: a PSD Hessian
            assert exact[name] > 0 and trace.per_weight == pytest.approx(trace.mean / trace.size)
            assert 0 < trace.stderr < 0.25 * trace.mean
        if loss == "mse":  # 400 probes: a tight estimate
            assert trace.stderr < 0.1 * trace.mean and trace.mean == pytest.approx(exact[name], rel=0.1)


def test_hutchinson_ranking_is_seed_independent_and_stops_early():
    g, batches = tiny_graph(), tiny_batches()
    exact = exact_traces(g, batches, "mse")
    assert exact["w1"] > 5 * exact["w2"]  # layers whose traces differ a lot
    rankings = []
    for seed in (0, 1, 7):
        traces = hessian_traces(g, batches, seed=seed, max_probes=24, tolerance=0)
        rankings.append(sorted(traces, key=lambda k: traces[k].mean))
    assert rankings == [["w2", "w1"]] * 3
    # same seed, same estimate; another seed, another estimate
    a, b = (hessian_traces(g, batches, seed=3, max_probes=8) for _ in range(2))
    assert a == b and hessian_traces(g, batches, seed=4, max_probes=8) != a
    # stops once every layer's relative stderr is under the tolerance (never before min_probes)
    loose = hessian_traces(g, batches, min_probes=6, max_probes=300, tolerance=0.3)
    assert all(6 <= t.probes < 300 for t in loose.values())
    assert all(t.stderr <= 0.3 * abs(t.mean) for t in loose.values())
    only = hessian_traces(g, batches, weights=["w2"], max_probes=4)
    assert set(only) == {"w2"} and only["w2"].probes == 4


def test_problem_digest_names_what_it_is_computed_from():
    """The key of the remembered traces and damages changes with any param, batch, label or the loss."""
    g, batches = tiny_graph(), tiny_batches()
    key = problem_digest(g, batches, "mse")
    assert key == problem_digest(tiny_graph(), tiny_batches(), "mse")
    nudged = tiny_graph()
    nudged.params["w2"].data[0, 0] += 1e-3
    others = [problem_digest(nudged, batches, "mse"), problem_digest(g, tiny_batches(rows=3), "mse"),
              problem_digest(g, batches, "kl"), problem_digest(g, batches, "ce", tiny_labels())]
    assert len({key, *others}) == 5


def test_measured_damage_is_remembered(tmp_path, monkeypatch):
    """A layer's measured damage is remembered on disk under the problem and the compressed layer's contents: a
    new process measures it once more only for another compressed weight."""
    import collections

    from sparsecc.passes.compress import memo
    from sparsecc.planner.refine import OutputDamage

    monkeypatch.setenv("SPARSECC_CACHE", str(tmp_path))
    monkeypatch.setattr(memo, "_CACHE", collections.OrderedDict())
    g, batches = tiny_graph(), tiny_batches()
    node = g.nodes[0]
    int4, _ = compress(layer_graph(g, node), parse_spec("int4"), None)
    first = OutputDamage(g, batches)(node.name, int4)
    memo._CACHE.clear()
    monkeypatch.setattr(OutputDamage, "_measure", lambda *_: pytest.fail("measured again"))
    assert OutputDamage(g, batches)(node.name, int4) == first > 0
    int8, _ = compress(layer_graph(g, node), parse_spec("int8"), None)
    with pytest.raises(pytest.fail.Exception, match="measured again"):
        OutputDamage(g, batches)(node.name, int8)


def test_hutchinson_errors():
    g, batches = tiny_graph(), tiny_batches()
    with pytest.raises(SparseccError, match="'ce' needs labels"):
        hessian_traces(g, batches, loss="ce")
    with pytest.raises(SparseccError, match="'ce' needs labels"):
        hessian_traces(g, batches, loss="ce", labels=tiny_labels()[:2])
    with pytest.raises(SparseccError, match="sensitivity loss 'l1': expected one of mse, kl, ce"):
        hessian_traces(g, batches, loss="l1")
    with pytest.raises(SparseccError, match="at least one calibration batch"):
        hessian_traces(g, [])


# ---- the digits CNN: graph, calibration, a fake latency table -------------------------------------------------------
@pytest.fixture(scope="module")
def digits_graph(digits):
    """The trained digits CNN (conftest's session fixture) captured with a dynamic batch, canonicalized."""
    return canonicalize()(capture(digits[0], (digits[1][:4],), dynamic_shapes=DIGITS_DYN))


@pytest.fixture(scope="module")
def train_images():
    return digits_data(0)[0].numpy()


@pytest.fixture(scope="module")
def digits_batches(digits_graph, train_images):
    return load_batches(digits_graph, (train_images[:64],), batch_size=16)


@pytest.fixture(scope="module")
def digits_calibration(digits_graph, digits_batches):
    return calibrate(digits_graph, digits_batches)


SLOW_FACTOR = 8.0
"""The fake device runs any 2:4 weight this many times slower than its bytes say: those layers end up slower
than dense (2:4 alone keeps ~53% of the bytes, 2:4+int8 ~16%)."""


class FakeDevice:
    """A deterministic ``measure_fn``: 10 us per KB of params (x SLOW_FACTOR with a 2:4 weight) plus 10 us per
    call; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, graph, arrays):
        self.calls += 1
        nbytes = sum(p.data.nbytes for p in graph.params.values())
        slow = any("2:4" in p.encoding.kind for p in graph.params.values())
        ms = 1e-5 * nbytes * (SLOW_FACTOR if slow else 1.0) + 0.01
        return [ms, ms, ms]


def fake_table(tmp_path, device=None):
    return LatencyTable("x86", cache_dir=tmp_path, measure_fn=device or FakeDevice(), device="fake")


@pytest.fixture(scope="module")
def digits_analysis(digits_graph, digits_batches, digits_calibration, tmp_path_factory):
    """Every candidate evaluated (slower-than-dense ones too, as for a size budget)."""
    table = fake_table(tmp_path_factory.mktemp("latency"))
    return analyze(digits_graph, digits_batches, "x86", calibration=digits_calibration, table=table, max_probes=8,
                   only_faster=False, progress=False)


def layer_nodes(graph):
    return {n.name: n for n in graph.nodes if compressible_weight(graph, n) is not None}


# ---- candidates -----------------------------------------------------------------------------------------------------
def test_eligible_specs_need_calibration_for_w8a8(digits_graph, digits_calibration):
    weights = set(layer_weights(digits_graph))
    with_stats = eligible(digits_graph, weights, digits_calibration)
    without = eligible(digits_graph, weights, None)
    assert list(with_stats) == list(layer_nodes(digits_graph))
    assert all(specs[0] == DENSE for specs in with_stats.values())
    integer = ("w8a8", "w7a8", "2:4+w7a8")  # the specs that quantize inputs: they need a layer's statistics
    assert all(s in with_stats[n] for s in integer for n in ("linear", "linear_1"))
    assert not any(s in specs for s in integer for specs in without.values())
    assert {n: [s for s in specs if s not in integer] for n, specs in with_stats.items()} == without
    # the depthwise conv has no statistics (and no 2:4: its reduction is 9), the first conv no 2:4 either
    assert not any(s.startswith("2:4") for s in with_stats["convolution"] + with_stats["convolution_1"])
    assert "2:4" in with_stats["linear"]
    assert eligible(digits_graph, {"p_classifier_3_weight"}, None, ("int8", "2:4")) == {
        "linear_1": [DENSE, "int8", "2:4"]}


@pytest.mark.parametrize("target,kept", [({"kind": "llvm", "mcpu": "znver3"}, True),
                                         ({"kind": "llvm", "mcpu": "znver4"}, False), ("arm64", False)],
                         ids=["avx2", "avx512-vnni", "arm64"])
def test_w7a8_is_a_candidate_only_where_it_is_faster(target, kept):
    """W7A8 and 2:4 W7A8 enter the ladder only for x86 without VNNI, where vpmaddubsw runs them faster than W8A8
    (and the N:M kernel skips the pruned weights); elsewhere they cost what W8A8 costs and damage more."""
    from sparsecc.planner.candidates import LADDER
    from sparsecc.planner.plan import for_target

    ladder = for_target(LADDER, target)
    assert ("w7a8" in ladder) == kept and ("2:4+w7a8" in ladder) == kept
    assert set(LADDER) - set(ladder) <= {"w7a8", "2:4+w7a8"} and "w8a8" in ladder and "2:4+int8" in ladder


def test_candidate_damage(digits_graph, digits_batches, digits_calibration):
    g = digits_graph
    traces = hessian_traces(g, digits_batches[:2], max_probes=4)
    specs = {"linear": [DENSE, "int8", "int4-g32", "w8a8"], "convolution_3": [DENSE, "int8", "int4-g32"]}
    cands = evaluate(g, traces, digits_calibration, specs)
    assert {n: [c.spec for c in cs] for n, cs in cands.items()} == specs
    for node, cs in cands.items():
        weight = compressible_weight(g, layer_nodes(g)[node])
        dense, int8, int4 = cs[:3]
        assert (dense.damage, dense.sq_error, dense.bytes) == (0.0, 0.0, g.params[weight].data.nbytes)
        assert 0 < int8.damage < int4.damage and int8.bytes > int4.bytes
        assert 0 < int4.bytes < dense.bytes
        for c in cs[1:]:
            assert c.damage == pytest.approx(0.5 * traces[weight].per_weight * c.sq_error, rel=1e-12)
            assert c.method  # gptq etc.: calibrated
    assert cands["linear"][3].spec == "w8a8" and cands["linear"][3].damage > cands["linear"][1].damage

    # damage is linear in the trace; the squared error does not depend on it
    doubled = {k: Trace(2 * t.mean, t.stderr, t.probes, t.size) for k, t in traces.items()}
    again = evaluate(g, doubled, digits_calibration, specs)
    for node in specs:
        for a, b in zip(cands[node], again[node]):
            assert b.damage == pytest.approx(2 * a.damage, rel=1e-9, abs=0)
            assert (b.sq_error, b.bytes) == (a.sq_error, a.bytes)
    # a negative trace estimate (noise) predicts no damage, never a gain
    negative = {k: Trace(-t.mean, t.stderr, t.probes, t.size) for k, t in traces.items()}
    assert all(c.damage == 0 for cs in evaluate(g, negative, digits_calibration, specs).values() for c in cs)


def test_data_free_squared_error_is_the_weight_error(digits_graph):
    """Without calibration the squared error is ‖W − Ŵ‖², Ŵ read back from the compressed one-layer graph run
    on the identity (linear(I, Ŵ) + b = Ŵᵀ + b)."""
    g = digits_graph
    node = layer_nodes(g)["linear"]
    weight = compressible_weight(g, node)
    trace = {weight: Trace(3.0, 0.1, 8, g.params[weight].data.size)}
    (int8,) = evaluate(g, trace, None, {"linear": ["int8"]})["linear"]
    assert int8.method == "rtn"
    one = layer_graph(g, node)
    assert list(one.params) == [n for n in node.inputs[1:] if n]
    packed, _ = compress(one, parse_spec("int8"), None)
    k = g.params[weight].data.shape[1]
    w_hat = (run_graph(packed, np.eye(k, dtype=np.float32))[0] - run_graph(packed, np.zeros((1, k), np.float32))[0]).T
    w = g.params[weight].data.astype(np.float64)
    sq = float(np.sum((w - w_hat) ** 2))
    assert 0 < sq < 1e-3 * float(np.sum(w * w))
    assert int8.sq_error == pytest.approx(sq, rel=1e-3)
    assert int8.damage == pytest.approx(0.5 * 3.0 / w.size * sq, rel=1e-3)


# ---- latency and plans ----------------------------------------------------------------------------------------------
def test_latencies_predict():
    lat = Latencies({"a": {DENSE: 2.0, "int8": 1.0}, "b": {DENSE: 3.0, "int8": 0.5}}, model_ms=10.0)
    assert lat.rest_ms == 5.0
    assert lat.predict({}) == 10.0
    assert lat.predict({"a": "int8"}) == 9.0
    assert lat.predict({"a": "int8", "b": "int8"}) == 6.5


def test_fake_latencies_follow_bytes(digits_analysis, digits_graph):
    lat = digits_analysis.latencies
    assert list(lat.layers) == list(layer_nodes(digits_graph))
    for node, options in lat.layers.items():
        params = [n for n in layer_nodes(digits_graph)[node].inputs[1:] if n]  # weight (and bias)
        assert options[DENSE] == pytest.approx(1e-5 * sum(digits_graph.params[n].data.nbytes for n in params))
        for spec, ms in options.items():
            assert (ms > options[DENSE]) == spec.startswith("2:4"), (node, spec)
    total = sum(p.data.nbytes for p in digits_graph.params.values())
    assert lat.model_ms == pytest.approx(1e-5 * total + 0.01)
    assert lat.rest_ms > 0


def test_dominated_candidates_are_not_refined_nor_chosen():
    """refine_top measures only the candidates no other one beats on both cost and predicted damage."""
    cands = {"fc1": [Candidate(DENSE, 100, 0.0, 0.0, predicted=0.0), Candidate("a", 50, 1.0, 0.0, predicted=1.0),
                     Candidate("b", 60, 2.0, 0.0, predicted=2.0), Candidate("c", 10, 5.0, 0.0, predicted=5.0)]}
    measured = []

    def measure(node, layer):
        measured.append(node)
        return 7.0

    refine_top(cands, lambda node, c: c.bytes, measure)
    assert [c.dominated for c in cands["fc1"]] == [False, False, True, False]  # b: a is smaller and damages less
    assert [c.measured for c in cands["fc1"]] == [None, 7.0, None, 7.0] and len(measured) == 2
    assert [c.damage for c in cands["fc1"]] == [0.0, 7.0, 2.0, 7.0]


def test_two_point_latency_model_and_its_budget():
    """Layers alone (weights in cache) vs inside the model (weights streamed): what the two measured models' gap
    leaves unexplained by the layers alone is charged per weight byte, so the prediction is exact at both; a
    latency budget caps that prediction (not the raw sum of layer times)."""
    layers = {"fc1": {DENSE: 2.0, "int8": 1.0}, "fc2": {DENSE: 2.0, "int8": 0.5}}
    nbytes = {"fc1": {DENSE: 400.0, "int8": 100.0}, "fc2": {DENSE: 200.0, "int8": 100.0}}
    fastest = {"fc1": "int8", "fc2": "int8"}
    lat = Latencies(layers, model_ms=10.0, fastest_ms=4.5, fastest=fastest, bytes=nbytes)
    # the gap 5.5 ms, the layers alone 2.5 ms of it: 3 ms over the 400 bytes saved
    assert lat.per_byte_ms == pytest.approx(3.0 / 400)
    assert lat.cost("fc1", DENSE) == pytest.approx(2.0 + 3.0) and lat.cost("fc2", "int8") == pytest.approx(1.25)
    assert lat.rest_ms == pytest.approx(10.0 - 5.0 - 3.5)
    assert lat.predict({}) == pytest.approx(10.0) and lat.predict(fastest) == pytest.approx(4.5)
    assert lat.predict({"fc1": "int8"}) == pytest.approx(6.75) and lat.predict({"fc2": "int8"}) == pytest.approx(
        7.75)
    g = tiny_graph()
    cands = {"fc1": [Candidate(DENSE, 400, 0.0, 0.0), Candidate("int8", 100, 1.0, 0.0)],
             "fc2": [Candidate(DENSE, 200, 0.0, 0.0), Candidate("int8", 100, 2.0, 0.0)]}
    an = Analysis(g, {"w1": Trace(1.0, 0.0, 1, 30), "w2": Trace(1.0, 0.0, 1, 15)},
                  {n: [c.spec for c in cs] for n, cs in cands.items()}, lat, cands, [[1, 6]], {})
    plan = choose(an, Budget(latency=0.7))  # 7 ms: fc1 alone (6.75 ms) fits, fc2 alone (7.75 ms) does not
    assert {c.node: c.spec for c in plan.layers} == {"fc1": "int8", "fc2": DENSE}
    assert plan.predicted_ms == pytest.approx(6.75)
    # no fit, no byte term: the gap is explained by the layers alone, or is within timing noise, or negative
    for fastest_ms in (7.5, 7.3, 12.0):
        flat = Latencies(layers, model_ms=10.0, fastest_ms=fastest_ms, fastest=fastest, bytes=nbytes)
        assert flat.per_byte_ms == 0.0 and flat.predict({"fc1": "int8"}) == pytest.approx(9.0)
    assert Latencies(layers, model_ms=10.0, fastest_ms=4.5, fastest=fastest).per_byte_ms == 0.0  # no bytes
    # a fit that would charge the dense weights more than the model spends outside its layers (1 ms of 5) is
    # capped there: nothing is left for the rest, and no plan is predicted below 0
    noisy = Latencies(layers, model_ms=5.0, fastest_ms=1.0, fastest=fastest, bytes=nbytes)
    assert noisy.per_byte_ms == pytest.approx(1.0 / 600) and noisy.rest_ms == pytest.approx(0.0, abs=1e-12)
    assert noisy.predict({}) == pytest.approx(5.0) and noisy.predict(fastest) == pytest.approx(1.5 + 200 / 600)


def test_latency_budgets(digits_analysis):
    an, lat = digits_analysis, digits_analysis.latencies
    floor = lat.rest_ms + sum(min(ms for spec, ms in options.items() if ms <= options[DENSE])
                              for options in lat.layers.values())
    lowest = floor / lat.model_ms
    assert lowest < 0.5
    damages = []
    fractions = [lowest * 1.02, (lowest + 1) / 2, 0.8, 1.0]
    for fraction in fractions:
        plan = choose(an, Budget(latency=fraction))
        assert plan.objective == "damage" and plan.dense_ms == lat.model_ms
        assert plan.predicted_ms <= fraction * lat.model_ms + 1e-9
        assert plan.predicted_ms == pytest.approx(lat.predict({c.node: c.spec for c in plan.layers}))
        assert plan.damage == pytest.approx(sum(c.damage for c in plan.layers))
        for c in plan.layers:
            assert not c.spec.startswith("2:4")  # slower than dense on this device: never a choice
            assert c.ms <= c.dense_ms and c.ms == lat.layers[c.node][c.spec]
            kept = {o["spec"]: o["kept"] for o in c.options}
            assert [o["spec"] for o in c.options] == an.specs[c.node]
            dominated = {o["spec"]: o["dominated"] for o in c.options}
            assert kept == {s: not s.startswith("2:4") and not dominated[s] for s in an.specs[c.node]}
            assert c.spec in kept and kept[c.spec]
        damages.append(plan.damage)
        json.dumps(plan.as_dict())
    assert all(a >= b - 1e-15 for a, b in zip(damages, damages[1:])), damages  # a looser budget never hurts
    assert damages[-1] == 0.0 and damages[0] > damages[-1]
    with pytest.raises(SparseccError, match=r"no plan fits the budget \(ms at most .* reachable"):
        choose(an, Budget(latency=lowest * 0.9))


def test_size_budgets(digits_analysis):
    an = digits_analysis
    dense_bytes = sum(cs[0].bytes for cs in an.candidates.values())
    damages = []
    for fraction in (0.15, 0.25, 0.5, 1.0):
        plan = choose(an, parse_budget(f"size={fraction}"))
        total = sum(c.bytes for c in plan.layers)
        assert total <= fraction * dense_bytes
        assert sum(c.dense_bytes for c in plan.layers) == dense_bytes
        # a size-only budget may take slower-than-dense encodings: all stay options
        assert all(o["kept"] or o["dominated"] for c in plan.layers for o in c.options)
        assert plan.predicted_ms == pytest.approx(an.latencies.predict({c.node: c.spec for c in plan.layers}))
        specs = plan.specs()
        assert set(specs) == {c.node for c in plan.layers if c.spec != DENSE}
        assert all(isinstance(s, CompressionSpec) and s.text == next(c.spec for c in plan.layers if c.node == n)
                   for n, s in specs.items())
        damages.append(plan.damage)
    assert all(a >= b - 1e-15 for a, b in zip(damages, damages[1:])), damages
    assert damages[0] > 0 and damages[-1] == 0.0
    both = choose(an, parse_budget("latency=0.5,size=0.3"))
    assert sum(c.bytes for c in both.layers) <= 0.3 * dense_bytes
    assert both.predicted_ms <= 0.5 * an.latencies.model_ms + 1e-9
    assert not any(c.spec.startswith("2:4") for c in both.layers)
    with pytest.raises(SparseccError, match="bytes at most .* reachable"):
        choose(an, parse_budget("size=0.01"))


def test_max_drop_minimizes_latency(digits_analysis):
    an = digits_analysis
    ms = []
    for drop in (0.0, 1e-4, 1e-2, 10.0):
        plan = choose(an, parse_budget(None, drop))
        assert plan.objective == "ms" and plan.damage <= drop
        ms.append(plan.predicted_ms)
    assert all(a >= b - 1e-12 for a, b in zip(ms, ms[1:])) and ms[-1] < ms[0] <= an.latencies.model_ms
    # with latency and a drop cap: at most the drop, within the latency
    plan = choose(an, parse_budget("latency=0.6", 1e-3))
    assert plan.damage <= 1e-3 and plan.predicted_ms <= 0.6 * an.latencies.model_ms + 1e-9


def test_solve_respects_a_tiny_damage_cap():
    """HiGHS allows ~1e-6 of absolute violation; damages are often that small, so solve() scales its rows and
    re-checks the choice against the caps."""
    layer = [dict(damage=0.0, ms=1.0), dict(damage=5e-7, ms=0.1)]
    assert solve([layer], "ms", {"damage": 0.0}) == [0]
    layers = [[dict(damage=0.0, ms=1.0), dict(damage=4e-7, ms=0.2), dict(damage=9e-7, ms=0.1)] for _ in range(3)]
    choice = solve(layers, "ms", {"damage": 1e-6})
    assert sum(layers[i][c]["damage"] for i, c in enumerate(choice)) <= 1e-6
    assert sorted(choice) == [0, 1, 1] or sorted(choice) == [0, 0, 2]


def test_solve_tells_a_tiny_damage_from_none():
    """Objectives are scaled so that HiGHS's absolute gap (1e-6) does not swallow a damage of 1e-7 next to one of
    9: with room for every layer dense, every layer stays dense (before: 4 of 6 took the 1.2e-7 option)."""
    layers = [[dict(damage=0.0, ms=1.0), dict(damage=1.2e-7, ms=0.5), dict(damage=9.0, ms=0.2)] for _ in range(6)]
    assert solve(layers, "damage", {"ms": 6.0}) == [0] * 6
    assert sorted(solve(layers, "damage", {"ms": 5.5})) == [0] * 5 + [1]  # one layer must give 0.5 ms


def test_plan_without_latencies_is_by_bytes(tmp_path):
    """A target this machine cannot time: a size budget or max-drop plans by bytes; a latency budget asks for a
    device (or a table)."""
    g = tiny_graph()
    batches = tiny_batches()
    with pytest.raises(SparseccError, match="latency budget needs layer latencies measured on the target"):
        make_plan(g, batches, parse_budget("latency=0.5"), "arm64", progress=False, max_probes=4)
    an = analyze(g, batches, "arm64", max_probes=4, progress=False)
    from sparsecc.planner.candidates import LADDER
    from sparsecc.planner.plan import for_target

    # arm64 has no W7A8 kernel faster than W8A8's: the ladder there leaves it out
    assert an.latencies is None and an.specs == eligible(g, {"w1", "w2"}, calibrate(g, batches),
                                                         for_target(LADDER, "arm64"))
    assert all(specs[0] == DENSE and "int8" in specs and "w8a8" in specs for specs in an.specs.values())
    plan = choose(an, parse_budget("size=0.5"))
    assert plan.predicted_ms is None and all(c.ms is None for c in plan.layers)
    assert sum(c.bytes for c in plan.layers) <= 0.5 * 4 * (30 + 15)
    drop = choose(an, parse_budget(None, 1.0))
    assert drop.objective == "bytes"
    assert sum(c.bytes for c in drop.layers) == min(sum(c.bytes for c in combo) for combo in itertools.product(
        *an.candidates.values()) if sum(c.damage for c in combo) <= 1.0)
    with pytest.raises(SparseccError, match="this analysis has none"):
        choose(an, parse_budget("latency=0.5"))


def test_make_plan_with_a_latency_table(digits_graph, digits_batches, digits_calibration, tmp_path):
    device = FakeDevice()
    table = fake_table(tmp_path, device)
    plan = make_plan(digits_graph, digits_batches, parse_budget("latency=0.5"), "x86", calibration=digits_calibration,
                     table=table, max_probes=8, progress=False)
    assert device.calls > 0
    assert plan.predicted_ms <= 0.5 * plan.dense_ms
    assert plan.latency_shapes == [[1, 1, 8, 8]]  # batch 1
    assert plan.probes == 8 and set(plan.seconds) == {"sensitivity", "latency", "candidates", "solve"}
    # only faster-than-dense specs were evaluated (kept); the slower 2:4 ones were measured, not compressed
    for c in plan.layers:
        for o in c.options:
            assert o["kept"] == (not o["spec"].startswith("2:4") and not o["dominated"]) and o["ms"] is not None
            assert ("damage" in o) == o["kept"]
    calls = device.calls
    again = make_plan(digits_graph, digits_batches, parse_budget("latency=0.5"), "x86",
                      calibration=digits_calibration, table=fake_table(tmp_path, device), max_probes=8,
                      progress=False)
    assert device.calls == calls  # every latency came from the cache
    assert [c.spec for c in again.layers] == [c.spec for c in plan.layers]


# ---- sparsecc.compile ------------------------------------------------------------------------------------------------
@pytest.fixture
def fake_latency(monkeypatch, tmp_path):
    """compile's planner times layers on the fake device (not real TVM builds on this machine)."""
    device = FakeDevice()
    monkeypatch.setattr(layer_latency, "LatencyTable", lambda target, **kw: fake_table(tmp_path, device))
    return device


def test_compile_auto_size_budget(digits, train_images, fake_latency):
    model, x_te, y_te = digits
    cm = sparsecc.compile(model, (x_te[:4],), compress="auto", budget="size=0.5", calibration=(train_images[:64],),
                          dynamic_shapes=DIGITS_DYN)
    assert fake_latency.calls > 0
    auto = cm.manifest["auto_plan"]
    json.dumps(cm.manifest)
    assert auto["budget"] == "size=0.5" and auto["objective"] == "damage"
    assert "measured_ms" not in auto  # planned on the fake device, which cannot time the compiled artifact
    layers = auto["layers"]
    assert len(layers) == 6
    dense_bytes = sum(c["dense_bytes"] for c in layers)
    assert sum(c["bytes"] for c in layers) <= 0.5 * dense_bytes
    assert any(c["spec"] != DENSE for c in layers)
    # the pass did what the plan says, with the bytes the planner predicted
    plan = {r["node"]: r for r in cm.manifest["plan"]}
    assert set(plan) == {c["node"] for c in layers}
    for c in layers:
        report = plan[c["node"]]
        if c["spec"] == DENSE:
            assert report["encoding"] == "dense" and report["method"] == "kept dense by the plan"
        else:
            assert report["encoding"] == c["spec"] and report["bytes"] == c["bytes"]
    with torch.no_grad():
        ref = model(x_te).numpy()
    out = cm(x_te.numpy())
    assert np.isfinite(out).all()
    assert float(np.mean(out.argmax(1) == ref.argmax(1))) >= 0.95
    assert accuracy(ref, y_te) > 0.9 and accuracy(out, y_te) >= accuracy(ref, y_te) - 0.02


def test_compile_with_a_per_layer_plan(digits, digits_graph):
    model, x_te, _ = digits
    cm = sparsecc.compile(None, graph=digits_graph.copy(), compress={"linear": "int8"})
    assert "auto_plan" not in cm.manifest
    plan = {r["node"]: r for r in cm.manifest["plan"]}
    assert plan["linear"]["encoding"] == "int8" and plan["linear"]["bytes"] < plan["linear"]["dense_bytes"]
    others = [r for n, r in plan.items() if n != "linear"]
    assert len(others) == 5
    assert all(r["encoding"] == "dense" and r["method"] == "kept dense by the plan" for r in others)
    with torch.no_grad():
        ref = model(x_te[:64]).numpy()
    out = cm(x_te[:64].numpy())
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    with pytest.raises(SparseccError, match=r"names \['nope'\], which are not compressible layers"):
        sparsecc.compile(None, graph=digits_graph.copy(), compress={"nope": "int8"})


def test_compile_auto_errors(digits_graph, train_images, fake_latency):
    with pytest.raises(SparseccError, match="compress auto needs calibration data"):
        sparsecc.compile(None, graph=digits_graph.copy(), compress="auto", budget="size=0.5")
    with pytest.raises(SparseccError, match="nothing to budget"):
        sparsecc.compile(None, graph=digits_graph.copy(), compress="int8", budget="size=0.5")
    with pytest.raises(SparseccError, match="nothing to budget"):
        sparsecc.compile(None, graph=digits_graph.copy(), max_drop=0.1)
    with pytest.raises(SparseccError, match="needs a budget"):
        sparsecc.compile(None, graph=digits_graph.copy(), compress="auto", calibration=(train_images[:16],))
    with pytest.raises(SparseccError, match="size=2"):
        sparsecc.compile(None, graph=digits_graph.copy(), compress="auto", budget="size=2",
                         calibration=(train_images[:16],))
    assert fake_latency.calls == 0  # every error came before any planning work


# ---- ONNX and torch.export see the same sensitivities ---------------------------------------------------------------
def test_onnx_and_torch_capture_give_the_same_traces(digits, digits_graph, train_images, tmp_path):
    model, x_te, _ = digits
    path = tmp_path / "digits.onnx"
    torch.onnx.export(model, (x_te[:4],), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    from_onnx = canonicalize()(capture(str(path)))
    torch_weights, onnx_weights = layer_weights(digits_graph), layer_weights(from_onnx)
    assert [digits_graph.params[w].data.shape for w in torch_weights] == [
        from_onnx.params[w].data.shape for w in onnx_weights]
    batches = [[train_images[i:i + 4]] for i in range(0, 16, 4)]
    a = hessian_traces(digits_graph, batches, seed=5, max_probes=8)
    b = hessian_traces(from_onnx, batches, seed=5, max_probes=8)
    ta, tb = [a[w].mean for w in torch_weights], [b[w].mean for w in onnx_weights]
    assert np.argsort(ta).tolist() == np.argsort(tb).tolist()
    np.testing.assert_allclose(ta, tb, rtol=1e-3)


@pytest.mark.slow
def test_plan_with_real_x86_latencies(digits_graph, digits_batches, digits_calibration, tmp_path):
    """The planner's latencies measured for real on this machine (one TVM build per layer and candidate)."""
    table = LatencyTable("x86", cache_dir=tmp_path, budget_s=0.02)
    an = analyze(digits_graph, digits_batches, "x86", calibration=digits_calibration, table=table, max_probes=8,
                 only_faster=False, progress=False)
    lat = an.latencies
    assert lat.model_ms > 0 and all(ms >= 0 for options in lat.layers.values() for ms in options.values())
    assert set(lat.layers) == set(an.specs) and all(set(o) == set(an.specs[n]) for n, o in lat.layers.items())
    plan = choose(an, parse_budget("size=0.5"))
    assert sum(c.bytes for c in plan.layers) <= 0.5 * sum(c.dense_bytes for c in plan.layers)
    assert plan.predicted_ms == pytest.approx(lat.predict({c.node: c.spec for c in plan.layers}))
    fastest = choose(an, parse_budget(None, 1e-3))
    assert fastest.predicted_ms <= lat.model_ms + 1e-9
    assert all(c.ms <= c.dense_ms for c in fastest.layers)  # latency-bound: only faster-than-dense choices


def test_torch_compile_backend_takes_auto(fake_latency):
    """torch.compile(..., backend="sparsecc", options={"compress": "auto", "budget": ..., "calibration": ...})."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32)).eval()
    calibration = [(torch.randn(8, 64),) for _ in range(4)]
    torch._dynamo.reset()  # other tests compiled Sequential.forward: dynamo would mark the batch dim dynamic
    compiled = torch.compile(model, backend="sparsecc", dynamic=False,
                             options={"compress": "auto", "budget": "size=0.5", "calibration": calibration})
    x = torch.randn(8, 64)
    with torch.no_grad():
        out, ref = compiled(x), model(x)
    assert fake_latency.calls > 0
    assert out.shape == ref.shape and not torch.equal(out, ref)  # compressed: close, not identical
    assert float((out - ref).norm() / ref.norm()) < 0.05
