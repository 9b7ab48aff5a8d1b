"""The ONNX frontend against onnxruntime on small hand-built models (few TVM compiles, several ops each),
plus its error cases."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import sparsecc
from sparsecc.errors import ModelLoadError, UnsupportedOpError
from sparsecc.frontends.onnx import import_onnx
from sparsecc.interpreter import run_graph

RNG = np.random.default_rng(0)


def make_model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def ort_run(model, *arrays):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays)})


def assert_matches(outs, refs, rtol=1e-5, atol=1e-5):
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    assert len(outs) == len(refs)
    for out, ref in zip(outs, refs):
        assert out.shape == ref.shape and out.dtype == ref.dtype
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol)


def attention_model():
    """Shape->Gather->Unsqueeze->Concat->Reshape on a dim_param batch, then transformer ops."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
        helper.make_node("Unsqueeze", ["b", "axis0"], ["b1"]),
        helper.make_node("Concat", ["b1", "heads"], ["shape4"], axis=0),
        helper.make_node("Reshape", ["x", "shape4"], ["x4"]),
        helper.make_node("Transpose", ["x4"], ["xt"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["xt", "w"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
        helper.make_node("Transpose", ["p"], ["pt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["pt", "flat"], ["y0"]),
        helper.make_node("LayerNormalization", ["y0", "gamma", "beta"], ["ln"], axis=-1, epsilon=1e-6),
        helper.make_node("Erf", ["ln"], ["e"]),
        helper.make_node("Greater", ["e", "zero_f"], ["pos"]),
        helper.make_node("Where", ["pos", "e", "ln"], ["y"]),
    ]
    inits = [const("zero", np.array(0, np.int64)), const("axis0", np.array([0], np.int64)),
             const("heads", np.array([16, 4, 8], np.int64)), const("w", RNG.standard_normal((8, 8), np.float32)),
             const("flat", np.array([0, 16, -1], np.int64)), const("gamma", RNG.standard_normal(32, np.float32)),
             const("beta", RNG.standard_normal(32, np.float32)), const("zero_f", np.array(0.0, np.float32))]
    return make_model(nodes, [vi("x", TP.FLOAT, ["batch", 16, 32])], [vi("y", TP.FLOAT, None)], inits)


def test_shape_chain_becomes_a_symbolic_reshape_and_matches_onnxruntime():
    model = attention_model()
    graph = import_onnx(model)
    assert graph.types["x"].shape == ("batch", 16, 32)
    reshapes = [n.attrs["shape"] for n in graph.nodes if n.op == "reshape"]
    assert reshapes[0] == ["batch", 16, 4, 8] and reshapes[-1] == ["batch", 16, 32]
    assert all(n.source.startswith("onnx node ") for n in graph.nodes)
    x3 = RNG.standard_normal((3, 16, 32), np.float32)
    assert_matches(run_graph(graph, x3), ort_run(model, x3))
    cm = sparsecc.compile(model, target="x86")
    for batch in (2, 3):
        x = RNG.standard_normal((batch, 16, 32), np.float32)
        assert_matches(cm(x), ort_run(model, x))


def test_gemm_trans_flags_alpha_beta():
    nodes = [
        helper.make_node("Gemm", ["a", "wt", "c"], ["g1"], transA=1, transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Gemm", ["g1", "b"], ["g2"], alpha=1.5),
        helper.make_node("Gemm", ["g2", "w2", "c2"], ["y"]),
    ]
    inits = [const("wt", RNG.standard_normal((5, 4), np.float32)), const("c", RNG.standard_normal(5, np.float32)),
             const("w2", RNG.standard_normal((3, 2), np.float32)), const("c2", RNG.standard_normal((6, 2), np.float32))]
    model = make_model(nodes, [vi("a", TP.FLOAT, [4, 6]), vi("b", TP.FLOAT, [5, 3])], [vi("y", TP.FLOAT, [6, 2])],
                       inits)
    a, b = RNG.standard_normal((4, 6), np.float32), RNG.standard_normal((5, 3), np.float32)
    graph = import_onnx(model)
    assert "linear" in [n.op for n in graph.nodes]
    assert_matches(run_graph(graph, a, b), ort_run(model, a, b))
    assert_matches(sparsecc.compile(model, target="x86")(a, b), ort_run(model, a, b))


def slice_split_squeeze(opset):
    """The same computation with opset-11 attributes or opset-13 inputs for Split/Squeeze/Unsqueeze/ReduceSum."""
    old = opset < 13
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["s"]),
        helper.make_node("Split", ["s"] if old else ["s", "split"], ["p0", "p1"], axis=1,
                         **({"split": [1, 3]} if old else {})),
        helper.make_node("Squeeze", ["p0"] if old else ["p0", "ax1"], ["q"], **({"axes": [1]} if old else {})),
        helper.make_node("Unsqueeze", ["q"] if old else ["q", "ax1"], ["u"], **({"axes": [1]} if old else {})),
        helper.make_node("ReduceSum", ["p1"] if old else ["p1", "ax1"], ["r"], keepdims=1,
                         **({"axes": [1]} if old else {})),
        helper.make_node("Add", ["u", "r"], ["y"]),
    ]
    inits = [const("starts", np.array([1, 6], np.int64)), const("ends", np.array([5, -100], np.int64)),
             const("axes", np.array([1, 2], np.int64)), const("steps", np.array([1, -2], np.int64)),
             const("split", np.array([1, 3], np.int64)), const("ax1", np.array([1], np.int64))]
    return make_model(nodes, [vi("x", TP.FLOAT, ["n", 6, 7])], [vi("y", TP.FLOAT, None)], inits, opset=opset)


def test_opset11_attributes_and_opset13_inputs_agree():
    x = RNG.standard_normal((2, 6, 7), np.float32)
    ref = ort_run(slice_split_squeeze(13), x)
    assert ref[0].shape == (2, 1, 4)
    for opset in (11, 13, 18):
        model = slice_split_squeeze(opset)
        assert_matches(run_graph(import_onnx(model), x), ort_run(model, x))
        assert_matches(run_graph(import_onnx(model), x), ref)
    assert_matches(sparsecc.compile(slice_split_squeeze(11), target="x86")(x), ref)


def test_cnn_ops_lrn_resize_pools():
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], group=2),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("LRN", ["r"], ["l"], size=3, alpha=1e-2, beta=0.75, bias=2.0),
        helper.make_node("MaxPool", ["l"], ["m"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        helper.make_node("Resize", ["m", "", "scales"], ["up"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Resize", ["up", "", "", "sizes"], ["lin"], mode="linear"),
        helper.make_node("AveragePool", ["lin"], ["a"], kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("GlobalAveragePool", ["a"], ["ga"]),
        helper.make_node("Flatten", ["ga"], ["f"]),
        helper.make_node("Dropout", ["f"], ["y"]),
    ]
    c = 4
    inits = [const("w", RNG.standard_normal((c, 1, 3, 3), np.float32)), const("b", RNG.standard_normal(c, np.float32)),
             const("scale", RNG.uniform(0.5, 1.5, c).astype(np.float32)),
             const("bias", RNG.standard_normal(c, np.float32)), const("mean", RNG.standard_normal(c, np.float32)),
             const("var", RNG.uniform(0.5, 1.5, c).astype(np.float32)),
             const("scales", np.array([1, 1, 2, 2], np.float32)), const("sizes", np.array([1, c, 9, 11], np.int64))]
    model = make_model(nodes, [vi("x", TP.FLOAT, [1, 2, 10, 12])], [vi("y", TP.FLOAT, None)], inits)
    x = RNG.standard_normal((1, 2, 10, 12), np.float32)
    ref = ort_run(model, x)
    graph = import_onnx(model)
    assert {"avg_pool", "pow", "resize"} <= {n.op for n in graph.nodes}
    assert_matches(run_graph(graph, x), ref)
    assert_matches(sparsecc.compile(model, target="x86")(x), ref)


def test_input_shapes_and_unnamed_dims():
    x = helper.make_tensor_value_info("x", TP.FLOAT, ["batch size", None, 3])
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [x], [vi("y", TP.FLOAT, None)])
    assert import_onnx(model).types["x"].shape == ("batch_size", "x_dim1", 3)
    assert import_onnx(model, input_shapes={"x": [4, "seq", 3]}).types["x"].shape == (4, "seq", 3)


def test_initializer_that_is_also_an_input_is_a_param():
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"])],
                       [vi("x", TP.FLOAT, [2]), vi("w", TP.FLOAT, [2])], [vi("y", TP.FLOAT, [2])],
                       [const("w", np.array([1.0, 2.0], np.float32))])
    graph = import_onnx(model)
    assert graph.inputs == ["x"] and len(graph.params) == 1
    np.testing.assert_array_equal(run_graph(graph, np.zeros(2, np.float32))[0], [1.0, 2.0])


def test_unknown_op_in_custom_domain_names_op_and_node():
    node = helper.make_node("FooBarOp", ["x"], ["y"], name="my_node", domain="com.example")
    model = helper.make_model(helper.make_graph([node], "g", [vi("x", TP.FLOAT, [2])], [vi("y", TP.FLOAT, [2])]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(UnsupportedOpError, match="FooBarOp.*my_node"):
        import_onnx(model)


@pytest.mark.parametrize("op, detail", [("NonZero", "no converter"), ("Reshape", "compile-time constant")])
def test_data_dependent_shapes_are_refused(op, detail):
    inputs = ["x"] if op == "NonZero" else ["x", "shape"]
    model = make_model([helper.make_node(op, inputs, ["y"], name="n")],
                       [vi("x", TP.FLOAT, [2, 3]), vi("shape", TP.INT64, [2])], [vi("y", TP.FLOAT, None)])
    with pytest.raises(UnsupportedOpError, match=detail):
        import_onnx(model)


def test_unreadable_files(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        import_onnx(tmp_path / "missing.onnx")
    good = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", TP.FLOAT, [2])], [vi("y", TP.FLOAT, [2])])
    data = good.SerializeToString()
    for name, content in (("cut.onnx", data[: len(data) // 2]), ("junk.onnx", b"\x00\xffjunk" * 40)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelLoadError, match=name):
            import_onnx(tmp_path / name)
    onnx.save(good, str(tmp_path / "ok.onnx"))
    assert import_onnx(tmp_path / "ok.onnx").inputs == ["x"]


def test_torch_onnx_export_of_a_small_minilm(tmp_path):
    """The MiniLM architecture (random weights, 2 small layers) exported by torch.onnx with a dynamic batch: the
    exporter's Shape/Gather/Concat chains resolve to symbolic reshapes, and two batch sizes match PyTorch."""
    import torch

    from sparsecc.models.minilm import MiniLM

    torch.manual_seed(0)
    model = MiniLM(vocab=500, hidden=64, layers=2, heads=4, inter=128).eval()
    ids = torch.randint(0, 500, (3, 16))
    mask = torch.ones(3, 16, dtype=torch.int64)
    mask[:, 12:] = 0
    batch = torch.export.Dim("batch", max=64)
    path = tmp_path / "minilm.onnx"
    torch.onnx.export(model, (ids[:2], mask[:2]), str(path), input_names=["input_ids", "attention_mask"],
                      output_names=["embedding"],
                      dynamic_shapes={"input_ids": {0: batch}, "attention_mask": {0: batch}},
                      dynamo=True, optimize=True)
    cm = sparsecc.compile(str(path), target="x86")
    assert cm.input_names == ["input_ids", "attention_mask"]
    assert cm.graph.types["input_ids"].shape == ("batch", 16)
    with torch.no_grad():
        ref = model(ids, mask).numpy()
    for n in (3, 1):
        np.testing.assert_allclose(cm(ids[:n].numpy(), mask[:n].numpy()), ref[:n], rtol=1e-4, atol=1e-5)
