"""The ONNX backend against the torch interpreter: every op case in onnxruntime, symbolic dims, whole models, CLI.

The op cases (one single-node graph per case, shared with the TVM backend's tests) live in ``op_cases.py``.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from op_cases import (
    CASES,
    Case,
    assert_matches_reference,
    case_id,
    conv_net_graph,
    f,
    graph_inputs,
    mlp_graph,
    single_node_graph,
)

from sparsecc.backends.onnx import missing_emitters, save_onnx, to_onnx
from sparsecc.errors import UnsupportedOpError
from sparsecc.interpreter import run_graph
from sparsecc.ir.graph import Encoding, Graph, Param, TensorType
from sparsecc.ir.ops import OPS

ort = pytest.importorskip("onnxruntime")


def run_onnx(model: onnx.ModelProto, graph: Graph, *inputs: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == graph.inputs
    return session.run(None, {name: np.asarray(x) for name, x in zip(graph.inputs, inputs)})


def test_every_canonical_op_has_cases_and_an_emitter():
    assert missing_emitters() == []
    assert sorted(set(OPS) - {c.op for c in CASES}) == []


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_op_matches_interpreter(case: Case):
    graph = single_node_graph(case)
    inputs = graph_inputs(case)
    got = run_onnx(to_onnx(graph), graph, *inputs)
    assert_matches_reference(got, run_graph(graph, *inputs), case.rtol, case.atol)


# ---- symbolic dims and graph structure ------------------------------------------------------------------------
def test_symbolic_batch_runs_at_two_batch_sizes():
    """reshape to [batch*2, 2] needs a run-time shape tensor built from x's batch dim."""
    graph = mlp_graph("batch")
    model = to_onnx(graph)
    x_dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in x_dims] == ["batch", 6]
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 6)).astype("float32")
        got, want = run_onnx(model, graph, x), run_graph(graph, x)
        assert [o.shape for o in got] == [(batch * 2, 2), (batch,)]
        assert_matches_reference(got, want, 1e-5, 1e-6)


def test_conv_net_with_symbolic_batch():
    graph = conv_net_graph()
    model = to_onnx(graph)
    for batch in (1, 3):
        x = f(batch, 3, 8, 8)
        assert_matches_reference(run_onnx(model, graph, x), run_graph(graph, x), 1e-5, 1e-5)


def test_symbol_shared_across_inputs_slices_and_expand():
    """Two inputs share "n"; slices and a pad on the symbolic axis; expand to a shape computed from "n"."""
    g = Graph()
    a = g.add_input("a", TensorType(("n", 3), "float32"))
    b = g.add_input("b", TensorType((1, "n"), "float32"))
    (bt,) = g.add_node("reshape", [b], [TensorType(("n", 1), "float32")], {"shape": ["n", 1]})
    (s,) = g.add_node("add", [a, bt], [TensorType(("n", 3), "float32")])
    (u,) = g.add_node("slice", [s], [TensorType(("m", 1), "float32")],  # a data-dependent size: "m"
                      {"starts": [-2, 0], "ends": [2**62, 1], "axes": [0, 1], "steps": [1, 1]})
    (v,) = g.add_node("slice", [s], [TensorType(("n", 3), "float32")],
                      {"starts": [-1], "ends": [-2**62], "axes": [0], "steps": [-1]})
    (w,) = g.add_node("pad", [v], [TensorType(("n+1", 4), "float32")], {"pads": [1, 1, 0, 0], "mode": "edge"})
    (e,) = g.add_node("expand", [b], [TensorType((2, "n"), "float32")], {"shape": [2, "n"]})
    (r,) = g.add_node("reshape", [w], [TensorType(("(n+1)*4",), "float32")], {"shape": ["(n+1)*4"]})
    g.outputs = [u, w, e, r]
    model = to_onnx(g)
    for n in (1, 4):
        x, y = np.ones((n, 3), "float32"), np.arange(n, dtype="float32").reshape(1, n)
        assert_matches_reference(run_onnx(model, g, x, y), run_graph(g, x, y), 0, 0)


def test_symbol_without_a_source_is_unsupported():
    g = Graph()
    x = g.add_input("x", TensorType(("n",), "float32"))
    (y,) = g.add_node("reshape", [x], [TensorType(("k", 2), "float32")], {"shape": ["k", 2]}, name="fold")
    g.outputs = [y]
    with pytest.raises(UnsupportedOpError, match="reshape.*'fold'.*symbol 'k'"):
        to_onnx(g)


def test_outputs_that_are_inputs_or_params_keep_their_names():
    g = Graph()
    x = g.add_input("x", TensorType((2,), "float32"))
    p = g.add_param("p", np.array([1.0, 2.0, 3.0], "float32"))
    (y,) = g.add_node("neg", [x], [TensorType((2,), "float32")], name="y")
    g.outputs = [x, p, y]
    model = to_onnx(g)
    assert [o.name for o in model.graph.output] == ["x", "p", "y"]
    out = run_onnx(model, g, np.array([5.0, 6.0], "float32"))
    np.testing.assert_array_equal(out[0], [5.0, 6.0])
    np.testing.assert_array_equal(out[1], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(out[2], [-5.0, -6.0])


def test_params_become_initializers_under_their_names():
    graph = single_node_graph(Case("linear", [f(3, 7), f(5, 7), f(5)], params=(1, 2)))
    model = to_onnx(graph)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for name, param in graph.params.items():
        np.testing.assert_array_equal(inits[name], param.data)


def test_packed_weight_layout_is_exported_unpacked():
    """A backend's packed layout (``Encoding.meta["layout"]``, e.g. from a .scc artifact) only moves numbers."""
    from sparsecc.ir.layouts import blocked_layout, pack

    case = Case("linear", [f(3, 7), f(8, 7)], params=(1,))
    graph = single_node_graph(case)
    inputs = graph_inputs(case)
    want = run_graph(graph, *inputs)
    layout = blocked_layout(4)
    graph.params["p1"] = Param(pack(graph.params["p1"].data, layout), Encoding("dense", {"layout": layout}))
    assert_matches_reference(run_onnx(to_onnx(graph), graph, *inputs), want, 1e-5, 1e-6)


def test_save_onnx_writes_a_loadable_model(tmp_path):
    graph = mlp_graph("batch")
    path = tmp_path / "mlp.onnx"
    save_onnx(graph, path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    x = f(2, 6)
    assert_matches_reference(run_onnx(model, graph, x), run_graph(graph, x), 1e-5, 1e-6)


# ---- unsupported things raise, never export something wrong ----------------------------------------------------
def test_compressed_encoding_is_unsupported_not_wrong():
    graph = single_node_graph(Case("linear", [f(3, 7), f(5, 7)], params=(1,)))
    graph.params["p1"].encoding = Encoding("int8", {"scale": 0.1})
    with pytest.raises(UnsupportedOpError, match="encoding 'int8'.*'p1'.*dense weights only"):
        to_onnx(graph)


@pytest.mark.parametrize("attr, value", [("coordinate_transformation_mode", "tf_crop_and_resize"),
                                         ("mode", "cubic"), ("nearest_mode", "round_prefer_floor")])
def test_unsupported_resize_attribute_raises(attr, value):
    graph = single_node_graph(Case("resize", [f(1, 1, 4, 4)], {"sizes": [8, 8]}))
    graph.nodes[0].attrs[attr] = value
    with pytest.raises(UnsupportedOpError, match="resize"):
        to_onnx(graph)


def test_unknown_op_and_attribute_raise():
    graph = single_node_graph(Case("relu", [f(2, 3)]))
    graph.nodes[0].attrs["inplace"] = True
    with pytest.raises(UnsupportedOpError, match=r"relu.*unknown attribute\(s\) \['inplace'\]"):
        to_onnx(graph)
    graph.nodes[0].op = "fancy_op"
    with pytest.raises(UnsupportedOpError, match="fancy_op.*no emitter"):
        to_onnx(graph)


def test_ceil_mode_pool_with_symbolic_spatial_dims_is_unsupported():
    g = Graph()
    x = g.add_input("x", TensorType((1, 2, "h", 8), "float32"))
    (y,) = g.add_node("max_pool", [x], [TensorType((1, 2, "p", 4), "float32")],
                      {"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0], "dilations": [1, 1],
                       "ceil_mode": True})
    g.outputs = [y]
    with pytest.raises(UnsupportedOpError, match="max_pool.*ceil_mode with symbolic spatial dims"):
        to_onnx(g)


# ---- whole models through the torch frontend --------------------------------------------------------------------
def canonical_graph(model: torch.nn.Module, example_inputs: tuple, dynamic_shapes: dict) -> Graph:
    from sparsecc.frontends.torch import import_module
    from sparsecc.passes.pipeline import canonicalize

    return canonicalize()(import_module(model, example_inputs, dynamic_shapes=dynamic_shapes))


def test_digits_cnn_in_onnxruntime_at_two_batch_sizes(digits, rel_err):
    from sparsecc.models.digits import accuracy

    model, x, y = digits
    batch = torch.export.Dim("batch", max=4096)
    graph = canonical_graph(model, (x[:4],), {"x": {0: batch}})
    onnx_model = to_onnx(graph)
    with torch.no_grad():
        ref = model(x).numpy()
    for n in (1, len(x)):
        (out,) = run_onnx(onnx_model, graph, x[:n].numpy())
        assert out.shape == ref[:n].shape
        assert rel_err(out, ref[:n]) <= 1e-5
    assert accuracy(out, y) == accuracy(ref, y) > 0.9


def test_minilm_in_onnxruntime_at_two_batch_sizes(minilm, minilm_inputs, rel_err):
    ids, mask = minilm_inputs
    batch = torch.export.Dim("batch", max=64)
    graph = canonical_graph(minilm, (ids[:2], mask[:2]), {"input_ids": {0: batch}, "attention_mask": {0: batch}})
    onnx_model = to_onnx(graph)
    with torch.no_grad():
        ref = minilm(ids, mask).numpy()
    for n in (3, len(ids)):
        (out,) = run_onnx(onnx_model, graph, ids[:n].numpy(), mask[:n].numpy())
        assert out.shape == (n, 384)
        assert rel_err(out, ref[:n]) <= 1e-5
    assert abs(float(out[0] @ out[1]) - 0.7553) < 1e-3


# ---- CLI ---------------------------------------------------------------------------------------------------------
def test_cli_export_pt2_with_symbolic_batch(tmp_path, capsys):
    from sparsecc.cli import main

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(6, 4)

        def forward(self, x):
            return torch.softmax(self.fc(x).reshape(-1, 2), dim=1)

    net = Net().eval()
    ep = torch.export.export(net, (torch.randn(2, 6),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    pt2, out = tmp_path / "net.pt2", tmp_path / "net.onnx"
    torch.export.save(ep, str(pt2))
    assert main(["export", str(pt2), "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, 6)
        (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, net(x).numpy(), rtol=1e-5, atol=1e-6)


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    from sparsecc.cli import main

    assert main(["export", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparsecc: error:") and "missing.onnx" in err and err.count("\n") == 1
