"""Per-layer latency measurement (the planner's cost): keys from graphs, deduplication, the on-disk cache and its
separation by target and device, the error for a target this machine cannot run, and real timings that order."""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import pytest

from sparsecc.errors import SparseccError
from sparsecc.ir.graph import Graph, TensorType
from sparsecc.ir.verify import verify

pytest.importorskip("tvm")

from sparsecc.backends.tvm import prepare_graph  # noqa: E402
from sparsecc.backends.tvm.layer_latency import (  # noqa: E402
    LatencyTable,
    LayerKey,
    LocalMeasurer,
    default_cache_dir,
    layer_graph,
    layer_keys,
)

ZNVER = {"kind": "llvm", "mcpu": "znver4", "num-cores": 2}
GENERIC_X86 = {"kind": "llvm", "mcpu": "x86-64", "num-cores": 2}


def small_net() -> Graph:
    """conv(+bias) -> relu -> flatten -> linear(+bias) -> gelu -> linear -> linear, batch symbolic.
    The last two linears are the same layer as far as speed goes."""
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", TensorType(("batch", 3, 8, 8), "float32"))
    cw = g.add_param("conv_w", rng.standard_normal((8, 3, 3, 3)).astype("float32"))
    cb = g.add_param("conv_b", rng.standard_normal(8).astype("float32"))
    (h,) = g.add_node("conv", [x, cw, cb], [TensorType(("batch", 8, 8, 8), "float32")],
                      {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1]}, name="conv")
    (h,) = g.add_node("relu", [h], [TensorType(("batch", 8, 8, 8), "float32")])
    (h,) = g.add_node("reshape", [h], [TensorType(("batch", 512), "float32")], {"shape": ["batch", 512]})
    w1 = g.add_param("w1", rng.standard_normal((64, 512)).astype("float32"))
    b1 = g.add_param("b1", rng.standard_normal(64).astype("float32"))
    (h,) = g.add_node("linear", [h, w1, b1], [TensorType(("batch", 64), "float32")], name="fc1")
    (h,) = g.add_node("gelu", [h], [TensorType(("batch", 64), "float32")])
    for name in ("fc2", "fc3"):
        w = g.add_param(f"{name}_w", rng.standard_normal((64, 64)).astype("float32"))
        (h,) = g.add_node("linear", [h, w], [TensorType(("batch", 64), "float32")], name=name)
    g.outputs = [h]
    verify(g)
    return g


def test_keys_of_a_small_graph_with_symbolic_batch():
    keys = layer_keys(small_net(), {"batch": 2})
    assert list(keys) == ["conv", "fc1", "fc2", "fc3"]
    conv = keys["conv"]
    assert (conv.op, conv.input_shape, conv.weight_shape, conv.bias, conv.epilogue) == (
        "conv", (2, 3, 8, 8), (8, 3, 3, 3), True, "relu")
    assert conv.to_json()["attrs"] == {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "groups": 1}
    fc1 = keys["fc1"]
    assert (fc1.input_shape, fc1.weight_shape, fc1.bias, fc1.epilogue) == ((2, 512), (64, 512), True, "gelu")
    assert fc1.to_json()["encoding"] == {"kind": "dense"}
    assert keys["fc2"] == keys["fc3"] and hash(keys["fc2"]) == hash(keys["fc3"])
    assert keys["fc2"].epilogue == "none" and not keys["fc2"].bias
    for key in keys.values():
        assert LayerKey.from_json(json.loads(json.dumps(key.to_json()))) == key
    # the backend's weight re-layout (packed OI16o) does not change what a layer is
    assert layer_keys(prepare_graph(small_net(), "x86"), {"batch": 2}) == keys
    assert layer_keys(small_net(), {"batch": 1})["fc1"] != fc1


def test_unbound_symbol_names_the_layer():
    with pytest.raises(SparseccError, match="layer 'conv'.*batch"):
        layer_keys(small_net(), {})


def test_layer_graph_matches_its_key():
    key = layer_keys(small_net(), {"batch": 2})["conv"]
    graph, arrays = layer_graph(key)
    verify(graph)
    assert [n.op for n in graph.nodes] == ["conv", "relu"]
    assert graph.types[graph.outputs[0]].shape == (2, 8, 8, 8)
    assert layer_keys(graph, {}) == {"conv": key}
    assert arrays[0].shape == (2, 3, 8, 8)


class CountingMeasure:
    """A ``measure_fn`` that records each graph it is asked to time; fakes the timing unless given a real one."""

    def __init__(self, real: LocalMeasurer | None = None):
        self.real = real
        self.graphs: list[Graph] = []

    def __call__(self, graph: Graph, arrays: Sequence[np.ndarray]) -> list[float]:
        self.graphs.append(graph)
        if self.real is not None:
            return self.real(graph, arrays)
        return [0.001] * 5 if not graph.nodes else [1.0, 1.2, 1.1]


def test_dedup_and_cache_round_trip(tmp_path):
    keys = layer_keys(small_net(), {"batch": 2})
    first = CountingMeasure(LocalMeasurer("x86", budget_s=0.02))
    table = LatencyTable("x86", cache_dir=tmp_path, measure_fn=first, device="this cpu")
    ms = table.measure_many(keys.values(), progress=False)
    assert len(ms) == 3  # fc2 and fc3 are one key
    assert all(v > 0 for v in ms.values())
    assert len(first.graphs) == 4  # the empty call, then three layers
    assert len(first.graphs[0].nodes) == 0

    again = CountingMeasure(LocalMeasurer("x86", budget_s=0.02))
    reloaded = LatencyTable("x86", cache_dir=tmp_path, measure_fn=again, device="this cpu")
    assert reloaded.measure_graph(small_net(), {"batch": 2}, progress=False) == {
        name: ms[key] for name, key in keys.items()}
    assert again.graphs == []


def test_cache_is_separate_per_target_and_device(tmp_path):
    key = LayerKey("linear", (1, 64), (32, 64))
    measured = CountingMeasure()
    znver = LatencyTable(ZNVER, cache_dir=tmp_path, measure_fn=measured, device="cpu A")
    assert znver.measure(key) == pytest.approx(1.1 - 0.001)
    assert len(measured.graphs) == 2

    generic = LatencyTable(GENERIC_X86, cache_dir=tmp_path, measure_fn=measured, device="cpu A")
    generic.measure(key)
    other_cpu = LatencyTable(ZNVER, cache_dir=tmp_path, measure_fn=measured, device="cpu B")
    other_cpu.measure(key)
    assert len(measured.graphs) == 6  # each measured the empty call and the layer itself
    assert len({znver.path, generic.path, other_cpu.path}) == 3

    LatencyTable(ZNVER, cache_dir=tmp_path, measure_fn=measured, device="cpu A").measure(key)
    assert len(measured.graphs) == 6


def test_default_cache_dir_follows_sparsecc_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSECC_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "latency"
    assert LatencyTable("x86").path.parent == tmp_path / "latency"


def test_target_this_machine_cannot_run_asks_for_a_device(tmp_path):
    table = LatencyTable("arm64", cache_dir=tmp_path)
    with pytest.raises(SparseccError, match="needs an arm64 device.*measure_fn"):
        table.measure(LayerKey("linear", (1, 64), (32, 64)))
    with pytest.raises(ValueError, match="device="):
        LatencyTable("arm64", cache_dir=tmp_path, measure_fn=CountingMeasure())


def test_cuda_without_gpu_asks_for_a_device(tmp_path):
    import tvm

    if tvm.cuda(0).exist:
        pytest.skip("a GPU is present: cuda layers can be measured here")
    with pytest.raises(SparseccError, match="needs a cuda device"):
        LatencyTable("cuda", cache_dir=tmp_path).measure(LayerKey("linear", (1, 64), (32, 64)))


def test_measured_latency_is_positive_and_grows_with_the_weight(tmp_path):
    table = LatencyTable("x86", cache_dir=tmp_path, budget_s=0.1)
    small = table.measure(LayerKey("linear", (1, 256), (256, 256)))
    big = table.measure(LayerKey("linear", (1, 2048), (2048, 2048)))  # 64x the weight bytes
    assert 0 < small
    assert big > 2 * small
    assert 0 < table.overhead_ms() < small


def test_a_whole_model_is_timed_as_called_and_its_artifact_alike(tmp_path):
    """measure_model times numpy in and out (the empty call is not subtracted); time_compiled times a compiled
    artifact the same way, so a plan's prediction and its artifact's latency are comparable. Each is timed three
    times, in turns, and the medians compared: one 2 s timing of this 30 us call on the shared 2-core machine was
    seen to be off by over 2x."""
    import sparsecc

    table = LatencyTable("x86", cache_dir=tmp_path, budget_s=0.05)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype("float32")
    compiled = sparsecc.compile(None, graph=small_net(), target="x86")
    model_ms, artifact_ms = [], []
    for i in range(3):  # a fresh cache each time: measure_model times again
        model_ms.append(LatencyTable("x86", cache_dir=tmp_path / str(i), budget_s=0.05).measure_model(small_net(), [x]))
        artifact_ms.append(table.time_compiled(compiled, [x]))
    assert min(model_ms) > table.overhead_ms() > 0  # a numpy-in-out call costs more than an empty device call
    assert 0.5 * np.median(model_ms) < np.median(artifact_ms) < 2 * np.median(model_ms)
    assert LatencyTable("x86", cache_dir=tmp_path, measure_fn=lambda g, a: [1.0], device="fake").time_compiled(
        None, [x]) is None  # a custom measure_fn times graphs only


def test_models_compared_are_timed_together_and_again_together(tmp_path, monkeypatch):
    """measure_models times every model of the list in turns (one call of quietest_windows), caches each, and
    re-times all of them when any one is missing, so the dense model and the fastest plan the planner compares
    always come from the same spells of the machine."""
    from sparsecc.backends.tvm import layer_latency

    calls: list[int] = []
    real = layer_latency.quietest_windows

    def counted(fns, *_):
        calls.append(len(fns))
        return real(fns, budget_s=0.1)

    monkeypatch.setattr(layer_latency, "quietest_windows", counted)
    table = LatencyTable("x86", cache_dir=tmp_path)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype("float32")
    smaller = small_net()
    smaller.outputs = [smaller.nodes[1].outputs[0]]  # conv -> relu only
    verify(smaller)
    whole_ms, part_ms = table.measure_models([(small_net(), None), (lambda: smaller, "part")], [x])
    assert calls == [2] and whole_ms > 0 and part_ms > 0
    assert table.measure_model(small_net(), [x]) == whole_ms and calls == [2]  # cached
    del table.entries["model:part"]
    table.measure_models([(small_net(), None), (lambda: smaller, "part")], [x])
    assert calls == [2, 2]  # both again, together
    with pytest.raises(ValueError, match="needs key="):
        table.measure_models([(lambda: smaller, None)], [x])


def test_layers_timed_in_turns_are_held_in_bounded_groups(monkeypatch):
    """measure_many holds at most LAYERS_IN_TURN built layers, and BYTES_IN_TURN weight bytes, at once."""
    from sparsecc.backends.tvm import layer_latency

    keys = list(dict.fromkeys(layer_keys(small_net(), {"batch": 1}).values()))
    assert len(keys) == 3  # conv, the gelu linear, the two identical linears
    monkeypatch.setattr(layer_latency, "LAYERS_IN_TURN", 2)
    assert [[k for k, _ in g] for g in layer_latency._groups_in_turn(keys)] == [keys[:2], keys[2:]]
    monkeypatch.setattr(layer_latency, "BYTES_IN_TURN", 1)  # every layer alone, however small
    assert [len(g) for g in layer_latency._groups_in_turn(keys)] == [1, 1, 1]


def test_layers_are_less_the_empty_call_timed_in_turns_with_them(tmp_path, monkeypatch):
    """measure_many times an empty call in turns with each group of layers and subtracts that group's one: an
    empty call cached minutes earlier once read about as long as a small CNN's compressed layers took, and every
    plan of it was predicted as fast as dense."""
    from sparsecc.backends.tvm import layer_latency

    keys = list(dict.fromkeys(layer_keys(small_net(), {"batch": 1}).values()))
    monkeypatch.setattr(layer_latency, "LAYERS_IN_TURN", 2)
    spells = iter([0.010, 0.030])  # the empty call's ms in the first group's spell, then in the second's
    groups: list[int] = []

    def timed_in_turn(fns, *_):
        empty = next(spells)
        groups.append(len(fns))
        return [[empty] * 5] + [[empty + 0.001 * (i + 1)] * 5 for i in range(len(fns) - 1)]

    monkeypatch.setattr(layer_latency, "quietest_windows", timed_in_turn)
    table = LatencyTable("x86", cache_dir=tmp_path)
    table.entries[layer_latency.EMPTY_CALL] = {"median_ms": 1.0}  # cached from another spell: not subtracted
    ms = table.measure_many(keys, progress=False)
    assert groups == [3, 2]  # the empty call, then the group's layers
    assert [ms[k] for k in keys] == pytest.approx([0.001, 0.002, 0.001])
