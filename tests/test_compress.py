"""The compression pass (sparsecc.passes.compress) end to end: the spec grammar, calibration statistics, the
pass on the real digits CNN (every stage, with layers it must skip) and on all-MiniLM-L6-v2 with real sentences
through ``sparsecc.compile``; every compressed graph's compiled x86 artifact must compute what the interpreter
computes on that graph, so the accuracy measured by the interpreter is the deployed accuracy.

The math of each method (RTN, GPTQ, SparseGPT, SVD, ...) is in tests/test_compress_math.py.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import sparsecc
from sparsecc.compiler import capture, compress_graph
from sparsecc.errors import InputError, SparseccError
from sparsecc.fidelity import check_fidelity, relative_diff as rel
from sparsecc.interpreter import run_graph
from sparsecc.ir import encodings as E
from sparsecc.ir.encodings import QuantSpec
from sparsecc.ir.graph import Graph, TensorType
from sparsecc.ir.verify import verify
from sparsecc.models.digits import accuracy, digits_data
from sparsecc.passes.compress import calibrate, compress, load_batches, parse_spec
from sparsecc.passes.compress.calibration import compressible_weight
from sparsecc.passes.pipeline import canonicalize

from conftest import w8a8_tie_samples

pytestmark = pytest.mark.xdist_group("compress")


# ---- the spec grammar -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,quant,nm,lowrank,lrc,methods", [
    ("int8", QuantSpec(8), None, None, None, ()),
    ("int4", QuantSpec(4), None, None, None, ()),
    ("int4-g128", QuantSpec(4, 128), None, None, None, ()),
    ("int8-asym", QuantSpec(8, None, False), None, None, None, ()),
    ("int4-g64-asym", QuantSpec(4, 64, False), None, None, None, ()),
    ("2:4", None, (2, 4), None, None, ()),
    ("1:4", None, (1, 4), None, None, ()),
    ("4:8", None, (4, 8), None, None, ()),
    ("lowrank", None, None, 0.5, None, ()),
    ("lowrank:0.4", None, None, 0.4, None, ()),
    ("2:4+int4-g128", QuantSpec(4, 128), (2, 4), None, None, ()),
    ("2:4@sparsegpt+int8", QuantSpec(8), (2, 4), None, None, (("nm", "sparsegpt"),)),
    ("lowrank:0.4+int8", QuantSpec(8), None, 0.4, None, ()),
    ("int4-g128@rtn+lrc:32", QuantSpec(4, 128), None, None, 32, (("quant", "rtn"),)),
    (" 2:4@wanda + int8-asym@gptq ", QuantSpec(8, None, False), (2, 4), None, None,
     (("nm", "wanda"), ("quant", "gptq"))),
    ("lowrank@asvd+lrc:8@svd", None, None, 0.5, 8, (("lowrank", "asvd"), ("lrc", "svd"))),
    ("w8a8", QuantSpec(8), None, None, None, ()),
    ("w7a8@rtn", QuantSpec(7), None, None, None, (("quant", "rtn"),)),
    ("w4a8@gptq", QuantSpec(4), None, None, None, (("quant", "gptq"),)),
    ("2:4+w7a8", QuantSpec(7), (2, 4), None, None, ()),
    ("2:4@sparsegpt+w4a8@gptq", QuantSpec(4), (2, 4), None, None, (("nm", "sparsegpt"), ("quant", "gptq"))),
    ("4:8@sparsegpt+w8a8", QuantSpec(8), (4, 8), None, None, (("nm", "sparsegpt"),)),
])
def test_parse_spec_accepts_grammar(text, quant, nm, lowrank, lrc, methods):
    """Every form of the documented grammar parses into the stages it names."""
    spec = parse_spec(text)
    assert (spec.quant, spec.nm, spec.lowrank, spec.compensation, spec.methods) == (quant, nm, lowrank, lrc, methods)
    assert spec.text == text
    assert spec.activations == ("a8" in text)


def test_spec_method_defaults():
    """Without @method a stage is data-aware when calibrated, data-free otherwise; an explicit data-aware method
    is what needs_calibration reports."""
    spec = parse_spec("2:4+int8")
    assert (spec.method("nm", True), spec.method("quant", True)) == ("sparsegpt", "gptq")
    assert (spec.method("nm", False), spec.method("quant", False)) == ("magnitude", "rtn")
    assert parse_spec("lowrank+lrc:4").method("lowrank", True) == "asvd"
    assert parse_spec("lowrank+lrc:4").method("lrc", False) == "svd"
    assert parse_spec("int8@rtn").method("quant", True) == "rtn"
    assert not parse_spec("2:4+int8").needs_calibration() and not parse_spec("int8@rtn").needs_calibration()
    assert parse_spec("2:4@sparsegpt").needs_calibration() and parse_spec("int4@gptq").needs_calibration()


@pytest.mark.parametrize("text,match", [
    ("int3", "unknown stage 'int3'"),
    ("5:4", "0 < N < M, got 5:4"),
    ("0:4", "0 < N < M, got 0:4"),
    ("lowrank:1.5", "lowrank keeps a fraction in \\(0, 1\\).*1.5"),
    ("2:4+lowrank", "N:M sparsity of low-rank factors"),
    ("int8@gptqq", "unknown method 'gptqq' for int8"),
    ("2:4@gptq", "unknown method 'gptq' for 2:4"),
    ("int8+int4", "two quant stages"),
    ("2:4+1:4", "two nm stages"),
    ("lrc:4+lrc:8", "two lrc stages"),
    ("int8+", "unknown stage ''"),
    ("", "expected a string"),
    ("int4-g0", "group"),
    ("lowrank:1.2.3", "1.2.3"),
    ("lrc:0", "rank"),
    ("int8@", "names no method"),
    ("w8a8+lowrank", "w8a8 composes with N:M sparsity only"),
    ("w7a8+lrc:4", "w7a8 composes with N:M sparsity only"),
    ("w4a8+lowrank:0.5", "w4a8 composes with N:M sparsity only"),
])
def test_parse_spec_rejects_bad_strings(text, match):
    """A bad spec is a SparseccError whose message quotes the spec and names the offending stage."""
    with pytest.raises(SparseccError, match=match) as info:
        parse_spec(text)
    if text:
        assert repr(text) in str(info.value)


def test_compensation_alone_is_rejected_or_works():
    """'lrc:N' with no other stage is either refused by parse_spec (naming lrc) or compresses (nothing to
    compensate: the layer stays exact)."""
    g = Graph()
    g.add_input("x", TensorType((2, 64), "float32"))
    g.add_param("w", np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32))
    (y,) = g.add_node("linear", ["x", "w"], [TensorType((2, 32), "float32")])
    g.outputs = [y]
    try:
        spec = parse_spec("lrc:16")
    except SparseccError as e:
        assert "lrc" in str(e)
        return
    _, reports = compress(g, spec)
    assert reports[0].weight_error < 1e-6


# ---- calibration ----------------------------------------------------------------------------------------------------
def patches(x, kh, kw, strides, pads, dilations):
    """Conv input rows written out by hand: one row per (image, output position), columns ordered like a
    flattened [Cout, Cin, kh, kw] weight (input channel slowest)."""
    top, left, bottom, right = pads
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    (sh, sw), (dh, dw) = strides, dilations
    n, c, h, w = x.shape
    oh, ow = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1
    rows = [x[:, :, i * sh:i * sh + (kh - 1) * dh + 1:dh, j * sw:j * sw + (kw - 1) * dw + 1:dw].reshape(n, -1)
            for i in range(oh) for j in range(ow)]
    return np.stack(rows, 1).reshape(-1, c * kh * kw), (oh, ow)


@pytest.fixture(scope="module")
def digit_images():
    """Real 8x8 digits: (train images, test images) as float32 numpy [n, 1, 8, 8]."""
    x_tr, _, x_te, _ = digits_data(0)
    return x_tr.numpy(), x_te.numpy()


def conv_linear_graph():
    """digits image -> conv(1->4, stride (2,1), pads (1,0,0,2), dilation (1,2)) -> relu -> conv(4->5, 2x3, pads
    (0,1,1,0)) -> reshape -> linear(->7): asymmetric pads, strides and dilations on purpose."""
    rng = np.random.default_rng(0)
    g = Graph()
    g.add_input("x", TensorType(("batch", 1, 8, 8), "float32"))
    w1 = g.add_param("w1", rng.standard_normal((4, 1, 3, 3)).astype(np.float32))
    w2 = g.add_param("w2", rng.standard_normal((5, 4, 2, 3)).astype(np.float32))
    wl = g.add_param("wl", rng.standard_normal((7, 5 * 4 * 5)).astype(np.float32))
    a1 = dict(strides=[2, 1], pads=[1, 0, 0, 2], dilations=[1, 2])
    a2 = dict(strides=[1, 1], pads=[0, 1, 1, 0], dilations=[1, 1])
    (c1,) = g.add_node("conv", ["x", w1], [TensorType(("batch", 4, 4, 6), "float32")], a1)
    (r1,) = g.add_node("relu", [c1], [TensorType(("batch", 4, 4, 6), "float32")])
    (c2,) = g.add_node("conv", [r1, w2], [TensorType(("batch", 5, 4, 5), "float32")], a2)
    (f,) = g.add_node("reshape", [c2], [TensorType(("batch", 100), "float32")], dict(shape=["batch", 100]))
    (y,) = g.add_node("linear", [f, wl], [TensorType(("batch", 7), "float32")])
    g.outputs = [y]
    verify(g)
    return g, (a1, a2)


def test_calibrate_grams_match_independent_computation(digit_images):
    """calibrate's per-layer grams (linear: x rows; conv: unfolded patches) equal X^T X computed by hand on real
    digits, summed over batches; the patch order is the weight's (patches @ W^T is the conv output)."""
    g, (a1, a2) = conv_linear_graph()
    x = digit_images[0][:40]
    batches = load_batches(g, (x,), batch_size=16)
    assert [len(b[0]) for b in batches] == [16, 16, 8]
    calib = calibrate(g, batches)
    assert calib.batches == 3 and set(calib.layers) == {"w1", "w2", "wl"}

    w1, w2, wl = (g.params[n].data for n in ("w1", "w2", "wl"))
    p1, (oh, ow) = patches(x, 3, 3, a1["strides"], a1["pads"], a1["dilations"])
    h1 = np.maximum(p1 @ w1.reshape(4, -1).T, 0).reshape(40, oh, ow, 4).transpose(0, 3, 1, 2)
    p2, (oh2, ow2) = patches(h1, 2, 3, a2["strides"], a2["pads"], a2["dilations"])
    h2 = (p2 @ w2.reshape(5, -1).T).reshape(40, oh2, ow2, 5).transpose(0, 3, 1, 2).reshape(40, -1)
    np.testing.assert_allclose(run_graph(g, x)[0], h2 @ wl.T, rtol=1e-4, atol=1e-4)  # same conv convention
    for name, rows in (("w1", p1), ("w2", p2), ("wl", h2)):
        want = rows.astype(np.float64).T @ rows.astype(np.float64)
        stats = calib[name]
        assert stats.gram.shape == (rows.shape[1],) * 2 and stats.gram.dtype == np.float64
        assert stats.rows == rows.shape[0]
        np.testing.assert_allclose(stats.gram, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    assert set(calibrate(g, batches, weights={"w2"}).layers) == {"w2"}


def test_calibrate_digits_cnn_matches_torch_hooks(digits, digits_graph, digit_images):
    """On the real trained digits CNN, the grams of every (non-grouped) conv and linear equal those of the
    inputs torch's own modules see; the depthwise conv gets no gram."""
    model = digits[0]
    graph = canonicalize()(digits_graph.copy())
    x = digit_images[0][:24]
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0].detach().numpy())))
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    calib = calibrate(graph, [(x,)])
    weights = [compressible_weight(graph, n) for n in graph.nodes if compressible_weight(graph, n)]
    assert len(weights) == len(seen) == 6
    for name, (mod, inp) in zip(weights, seen):
        assert graph.params[name].data.shape == tuple(mod.weight.shape)
        if isinstance(mod, torch.nn.Conv2d) and mod.groups != 1:
            assert name not in calib
            continue
        if isinstance(mod, torch.nn.Conv2d):
            p = mod.padding[0]
            rows, _ = patches(inp, *mod.kernel_size, mod.stride, [p] * 4, mod.dilation)
        else:
            rows = inp
        want = rows.astype(np.float64).T @ rows.astype(np.float64)
        np.testing.assert_allclose(calib[name].gram, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_load_batches_sources(digit_images, tmp_path):
    """Batches from an .npz (by input name), from one tuple split along a symbolic batch dim, from a list of
    tuples as given, and from torch tensors; a static batch is not split."""
    g, _ = conv_linear_graph()
    x = digit_images[0][:20]
    path = tmp_path / "calib.npz"
    np.savez(path, x=x, unused=np.zeros(3))
    for source in (path, str(path), (x,), (torch.from_numpy(x),)):
        batches = load_batches(g, source, batch_size=8)
        assert [b[0].shape[0] for b in batches] == [8, 8, 4]
        assert all(isinstance(b[0], np.ndarray) and len(b) == 1 for b in batches)
        np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    given = load_batches(g, [(x[:3],), (torch.from_numpy(x[3:5]),)])
    assert [b[0].shape[0] for b in given] == [3, 2] and isinstance(given[1][0], np.ndarray)
    static = Graph()
    static.add_input("x", TensorType((20, 1, 8, 8), "float32"))
    static.outputs = ["x"]
    assert [b[0].shape for b in load_batches(static, (x,), batch_size=8)] == [(20, 1, 8, 8)]


def test_load_batches_errors(digit_images, tmp_path):
    """A missing input array, a missing file, a wrong number of arrays and no batches are InputErrors that say
    what is wrong."""
    g, _ = conv_linear_graph()
    x = digit_images[0][:4]
    path = tmp_path / "wrong.npz"
    np.savez(path, images=x)
    with pytest.raises(InputError, match=r"no array for inputs \['x'\].*images"):
        load_batches(g, path)
    with pytest.raises(InputError, match="no such file"):
        load_batches(g, tmp_path / "missing.npz")
    with pytest.raises(InputError, match="2 arrays for 1 inputs"):
        load_batches(g, (x, x))
    with pytest.raises(InputError, match="no batches"):
        calibrate(g, [])


# ---- the pass on the digits CNN --------------------------------------------------------------------------------------
DIGITS_DYN = {"x": {0: torch.export.Dim("batch", max=4096)}}
DIGITS_SPECS = {  # spec: (calibrated, {weight: expected skip reason}); other layers must be compressed
    "int8": (False, {}),
    "2:4": (True, {"p_features_0_weight_bn": "reduction 9 is not a multiple of M=4",
                   "p_features_3_weight": "reduction 9 is not a multiple of M=4"}),
    "lowrank:0.5": (True, {"p_features_3_weight": "grouped convolution"}),
    "int4-g32": (True, {"p_features_0_weight_bn": "not a multiple of the group 32",
                        "p_features_3_weight": "not a multiple of the group 32",
                        "p_features_4_weight_bn": "16 stored columns are not a multiple of the group 32"}),
    "2:4+int8-asym": (True, {"p_features_0_weight_bn": "M=4", "p_features_3_weight": "M=4"}),
    "w8a8": (True, {"p_features_0_weight_bn": "Cin*kh*kw a multiple of 4", "p_features_3_weight": "ungrouped"}),
    "w7a8": (True, {"p_features_0_weight_bn": "Cin*kh*kw a multiple of 4", "p_features_3_weight": "ungrouped"}),
    "w4a8": (True, dict.fromkeys(["p_features_0_weight_bn", "p_features_3_weight", "p_features_4_weight_bn",
                                  "p_features_8_weight"], "W4A8 is for linear layers only")),
}
ACCURACY_FLOOR = {"int8": 0.95, "2:4": 0.5, "lowrank:0.5": 0.2, "int4-g32": 0.9, "2:4+int8-asym": 0.5, "w8a8": 0.95,
                  "w7a8": 0.95, "w4a8": 0.9}
"""Held-out accuracy the compressed CNN must keep (dense: ~0.98; chance: 0.1). 2:4 and low rank at 0.5 on a
CNN this small are lossy: these floors only catch a broken pass."""


@pytest.fixture(scope="module")
def digits_graph(digits):
    """The trained digits CNN captured once with a dynamic batch."""
    return capture(digits[0], (digits[1][:4],), dynamic_shapes=DIGITS_DYN)


@pytest.fixture(scope="module")
def digits_compiled(digits, digits_graph, digit_images):
    """spec -> CompiledModel, compiled on first use (int8 from the nn.Module itself, the others from the
    captured graph); calibration: 256 real training images."""
    cache = {}

    def get(spec):
        if spec not in cache:
            calibrated = DIGITS_SPECS[spec][0]
            calib = (digit_images[0][:256],) if calibrated else None
            if spec == "int8":
                cache[spec] = sparsecc.compile(digits[0], (digits[1][:4],), compress=spec, calibration=calib,
                                               dynamic_shapes=DIGITS_DYN)
            else:
                cache[spec] = sparsecc.compile(None, graph=digits_graph.copy(), compress=spec, calibration=calib)
        return cache[spec]

    return get


@pytest.mark.parametrize("spec", list(DIGITS_SPECS))
def test_digits_cnn_compression(spec, digits, digits_graph, digits_compiled):
    """The compressed CNN verifies; its plan lists every compressible layer, compressed or skipped with the
    reason; bytes shrink; the x86 artifact computes what the interpreter computes on the compressed graph, so
    interpreter accuracy on held-out digits is the deployed accuracy."""
    _, x, y = digits
    calibrated, skips = DIGITS_SPECS[spec]
    dense = canonicalize()(digits_graph.copy())
    cm = digits_compiled(spec)
    verify(cm.graph)
    plan = {r["weight"]: r for r in cm.manifest["plan"]}
    dense_weights = [compressible_weight(dense, n) for n in dense.nodes if compressible_weight(dense, n)]
    assert sorted(plan) == sorted(dense_weights) and len(plan) == 6
    for name, r in plan.items():
        assert r["dense_bytes"] == dense.params[name].data.nbytes
        if name in skips:
            assert skips[name] in r["skipped"] and r["encoding"] == "dense" and r["bytes"] == r["dense_bytes"]
            assert not E.is_compressed(cm.graph, name)
            continue
        assert not r["skipped"] and r["encoding"] == spec and r["bytes"] < r["dense_bytes"]
        assert 0 < r["weight_error"] < 1
        grouped = name == "p_features_3_weight"  # the depthwise conv has no gram
        assert (r["output_error"] is not None) == (calibrated and not grouped)
        if spec.startswith("lowrank"):
            continue
        enc = E.load(cm.graph, name)
        assert enc.kind == spec and enc.nbytes() == r["bytes"] and enc.shape == dense.params[name].data.shape
        if enc.nm:
            kept = (enc.dense().reshape(enc.rows, -1, 4) != 0).sum(-1)
            assert kept.max() <= 2
    assert sum(r["bytes"] for r in plan.values()) < sum(r["dense_bytes"] for r in plan.values())
    assert cm.manifest["metrics"]["param_bytes"] < sum(p.data.nbytes for p in dense.params.values())

    if spec.startswith("lowrank"):  # conv k x k -> conv to r channels (k x k), then conv 1 x 1; linear -> two
        factored = [n for n, r in plan.items() if not r["skipped"]]
        assert len(cm.graph.nodes) == len(dense.nodes) + len(factored)
        for name in factored:
            rank = int(plan[name]["method"].split("rank ")[1])
            shape = dense.params[name].data.shape
            v, u = cm.graph.params[f"{name}.v"], cm.graph.params[f"{name}.u"]
            assert tuple(v.logical_shape) == (rank,) + shape[1:]
            assert tuple(u.logical_shape) == (shape[0], rank) + (1,) * (len(shape) - 2)
            assert name not in cm.graph.params
        convs = [n for n in cm.graph.nodes if n.op == "conv" and n.inputs[1].endswith(".u")]
        assert convs and all(n.attrs["pads"] == [0, 0, 0, 0] and n.attrs["strides"] == [1, 1] for n in convs)
    else:
        assert len(cm.graph.nodes) == len(dense.nodes)

    interp = run_graph(cm.graph, x.numpy())[0]
    deployed = cm(x.numpy())
    # W8A8: an image whose quantized input sits on a rounding tie (within float32 reassociation) may round the
    # other way in the kernel; every other image must match
    ties = w8a8_tie_samples(cm.graph, x.numpy()) if spec in ("w8a8", "w7a8", "w4a8") else np.zeros(len(x), bool)
    assert ties.mean() < 0.1
    assert rel(deployed[~ties], interp[~ties]) <= 1e-4
    acc = accuracy(interp, y)
    print(f"\n[digits {spec}] held-out accuracy: interpreter {acc:.4f}, deployed {accuracy(deployed, y):.4f}, "
          f"bytes {sum(r['bytes'] for r in plan.values())}/{sum(r['dense_bytes'] for r in plan.values())}, "
          f"{ties.sum()} images on a rounding tie")
    assert abs(accuracy(deployed, y) - acc) <= ties.mean() and acc >= ACCURACY_FLOOR[spec]
    assert accuracy(deployed[~ties], y[~ties]) == accuracy(interp[~ties], y[~ties])
    if spec in ("int8", "w8a8", "w7a8", "w4a8"):  # layer by layer: every kernel on the deployed input
        report = check_fidelity(cm, x.numpy()[:64])
        print(f"[digits {spec}] deployed vs interpreter: {report.summary()}")
        assert report.instrumented_vs_deployed == 0.0 and report.kernel_diff <= 1e-5
        assert report.end_to_end <= 1e-4 or (report.code_flips > 0 and report.first_flip.input_diff <= 1e-5)


def test_pass_skips_shared_weights_and_keeps_input_graph():
    """A weight read by two ops stays dense (reported 'shared'); the pass works on a copy."""
    rng = np.random.default_rng(0)
    g = Graph()
    g.add_input("x", TensorType((2, 32), "float32"))
    w = g.add_param("w", rng.standard_normal((32, 32)).astype(np.float32))
    w2 = g.add_param("w2", rng.standard_normal((16, 32)).astype(np.float32))
    (a,) = g.add_node("linear", ["x", w], [TensorType((2, 32), "float32")])
    (b,) = g.add_node("linear", [a, w], [TensorType((2, 32), "float32")])
    (c,) = g.add_node("linear", [b, w2], [TensorType((2, 16), "float32")])
    g.outputs = [c]
    before = {k: (p.data.copy(), p.encoding.kind) for k, p in g.params.items()}
    out, reports = compress(g, parse_spec("int8"))
    assert [r.weight for r in reports] == ["w", "w", "w2"]
    assert all("shared" in r.skipped for r in reports[:2]) and not reports[2].skipped
    assert E.is_compressed(out, "w2") and not E.is_compressed(out, "w")
    assert {k: p.encoding.kind for k, p in g.params.items()} == {k: v[1] for k, v in before.items()}
    assert all(np.array_equal(g.params[k].data, v[0]) for k, v in before.items())


# ---- errors ---------------------------------------------------------------------------------------------------------
def test_compile_errors_about_calibration(digits_graph, digit_images):
    """Calibration without compress, and a data-aware method without calibration, are SparseccErrors that say
    so (before any work is done); the pass itself refuses a data-aware method with no gram."""
    with pytest.raises(SparseccError, match="calibration data was given without compress"):
        sparsecc.compile(None, graph=digits_graph.copy(), calibration=(digit_images[0][:8],), compress=None)
    for spec in ("2:4@sparsegpt", "int8@gptq", "2:4@wanda+int8", "w8a8"):
        with pytest.raises(SparseccError, match="calibration"):
            sparsecc.compile(None, graph=digits_graph.copy(), compress=spec)
    with pytest.raises(SparseccError, match="'sparsegpt' needs calibration"):
        compress(canonicalize()(digits_graph.copy()), parse_spec("2:4@sparsegpt"), None)
    with pytest.raises(SparseccError, match="unknown stage 'int3'"):
        compress_graph(canonicalize()(digits_graph.copy()), "int3")


# ---- MiniLM ---------------------------------------------------------------------------------------------------------
MINILM_DYN = {"input_ids": {0: torch.export.Dim("batch", max=1024)},
              "attention_mask": {0: torch.export.Dim("batch", max=1024)}}
N_LINEARS = 36  # 6 layers x (query, key, value, attention out, intermediate, output)


def polarity_sentences(n):
    """Real sentences (gensim's polarity corpus), disjoint from SAMPLE_SENTENCES the outputs are checked on."""
    import gensim

    path = os.path.join(os.path.dirname(gensim.__file__), "test", "test_data", "pang_lee_polarity.cor")
    with open(path, encoding="latin-1") as f:  # "__label__pos text" per line
        return [line.split(" ", 1)[1].strip() for line in f if line.strip()][:n]


@pytest.fixture(scope="module")
def minilm_graph(minilm, minilm_inputs):
    """MiniLM captured once by torch.export with a dynamic batch (every compile below starts from a copy)."""
    ids, mask = minilm_inputs
    return capture(minilm, (ids[:2], mask[:2]), dynamic_shapes=MINILM_DYN)


@pytest.fixture(scope="module")
def minilm_dense(minilm_graph):
    """The canonical dense graph: what the pass sees, and what a dense artifact would hold."""
    return canonicalize()(minilm_graph.copy())


@pytest.fixture(scope="module")
def minilm_calibration():
    """16 real sentences as one (ids, mask) tuple: the pass splits it into batches along the dynamic batch."""
    from sparsecc.models.minilm import Tokenizer

    return Tokenizer(128)(polarity_sentences(16))


@pytest.fixture(scope="module")
def minilm_reference(minilm, minilm_inputs):
    with torch.no_grad():
        return minilm(*minilm_inputs).numpy()


@pytest.fixture(scope="module")
def minilm_int8(minilm_graph):
    return sparsecc.compile(None, graph=minilm_graph.copy(), compress="int8")


@pytest.fixture
def one_math_thread():
    """GPTQ/SparseGPT/EoRA on MiniLM with one torch/OpenBLAS thread: on a shared 2-core machine the default two
    spinning threads made these compressions 3-15x slower (measured), which says nothing about correctness."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


def cosines(out, ref):
    return (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)


def test_minilm_int8_rtn(minilm_int8, minilm_inputs, minilm_reference):
    """Data-free int8 on every linear of MiniLM: deployed = interpreter on cm.graph, cosine to the dense model
    >= 0.99 on real sentences, and every linear reported and stored as int8 (packed for the CPU kernel)."""
    ids, mask = (t.numpy() for t in minilm_inputs)
    cm = minilm_int8
    verify(cm.graph)
    assert cm.graph.types["input_ids"].shape[0] == "batch"
    out = cm(ids, mask)
    assert rel(out, run_graph(cm.graph, ids, mask)[0]) <= 1e-4
    assert rel(cm(ids[:3], mask[:3]), out[:3]) <= 1e-5  # another batch size, same compiled model
    cos = cosines(out, minilm_reference)
    print(f"\n[minilm int8] min cosine to dense {cos.min():.5f}")
    assert cos.min() >= 0.99
    plan = cm.manifest["plan"]
    assert len(plan) == N_LINEARS and all(r["op"] == "linear" and r["encoding"] == "int8" and r["method"] == "rtn"
                                          and r["output_error"] is None and not r["skipped"] for r in plan)
    assert all(E.load(cm.graph, r["weight"]).kind == "int8" for r in plan)
    assert all("layout" in cm.graph.params[r["weight"]].encoding.meta for r in plan)


def test_minilm_artifact_carries_compressed_weights(minilm_int8, minilm_dense, minilm_inputs, tmp_path):
    """save -> load gives the same outputs; the artifact holds the int8 codes, so its params are smaller than
    those of the dense model's artifact (the dense canonical graph's params) by what the plan says."""
    ids, mask = (t.numpy() for t in minilm_inputs)
    path = tmp_path / "minilm_int8.scc"
    minilm_int8.save(path)
    loaded = sparsecc.load(path)
    np.testing.assert_array_equal(loaded(ids, mask), minilm_int8(ids, mask))
    compressed = [n for n in loaded.graph.params if E.is_compressed(loaded.graph, n)]
    assert len(compressed) == N_LINEARS
    assert all(loaded.graph.params[n].data.dtype == np.int8 for n in compressed)
    dense_bytes = sum(p.data.nbytes for p in minilm_dense.params.values())
    param_bytes = sum(p.data.nbytes for p in loaded.graph.params.values())
    assert param_bytes == loaded.manifest["metrics"]["param_bytes"]
    linear_dense = sum(r["dense_bytes"] for r in loaded.manifest["plan"])
    linear_bytes = sum(r["bytes"] for r in loaded.manifest["plan"])
    assert dense_bytes - param_bytes == linear_dense - linear_bytes > 0.7 * linear_dense
    assert path.stat().st_size < dense_bytes


def test_minilm_sparsegpt_2_4_int8(minilm_graph, minilm_dense, minilm_calibration, minilm_inputs,
                                   minilm_reference, one_math_thread):
    """2:4+int8 calibrated on real sentences (SparseGPT jointly with GPTQ): every linear is 2:4-sparse int8 with
    an output error reported; the deployed model computes what the interpreter computes; on sentences outside
    the calibration it is closer to the dense model than data-free magnitude pruning + RTN.
    (2:4 without fine-tuning is lossy on a 22M-parameter model: cosines are ~0.6-0.8, not ~0.99.)"""
    ids, mask = (t.numpy() for t in minilm_inputs)
    cm = sparsecc.compile(None, graph=minilm_graph.copy(), compress="2:4+int8", calibration=minilm_calibration)
    verify(cm.graph)
    plan = cm.manifest["plan"]
    assert len(plan) == N_LINEARS
    assert all(r["encoding"] == "2:4+int8" and r["method"] == "sparsegpt+gptq (joint)"
               and r["output_error"] is not None and r["bytes"] < r["dense_bytes"] / 3 for r in plan)
    for r in plan[:6]:
        enc = E.load(cm.graph, r["weight"])
        assert enc.kind == "2:4+int8"
        assert ((enc.dense().reshape(enc.rows, -1, 4) != 0).sum(-1) <= 2).all()
    out = cm(ids, mask)
    assert rel(out, run_graph(cm.graph, ids, mask)[0]) <= 1e-4
    magnitude, magnitude_plan, _ = compress_graph(minilm_dense.copy(), "2:4+int8")
    assert {r["method"] for r in magnitude_plan} == {"magnitude+rtn"}
    baseline = cosines(run_graph(magnitude, ids, mask)[0], minilm_reference)
    cos = cosines(out, minilm_reference)
    print(f"\n[minilm 2:4+int8] cosine to dense: sparsegpt mean {cos.mean():.4f} min {cos.min():.4f}; "
          f"magnitude+rtn mean {baseline.mean():.4f} min {baseline.min():.4f}")
    assert cos.mean() > baseline.mean() and cos.min() > 0.5


def test_minilm_w7a8_kernels_compute_what_the_interpreter_computes(minilm_graph, minilm_calibration, minilm_inputs,
                                                                    one_math_thread):
    """W7A8 (static activation scales): every kernel, fed the deployed input of its layer, is within float32
    rounding of the interpreter. Where the end-to-end outputs differ by more, activation codes rounded apart, and
    the first layer where they did has an input that differs only by float32 rounding (the compiled layer norms
    and attention sum in another order): a tie, not a kernel computing something else."""
    ids, mask = (t.numpy() for t in minilm_inputs)
    cm = sparsecc.compile(None, graph=minilm_graph.copy(), compress="w7a8@rtn", calibration=minilm_calibration)
    report = check_fidelity(cm, ids, mask)
    print(f"\n[minilm w7a8] deployed vs interpreter: {report.summary()}")
    assert len(report.layers) == N_LINEARS and all(layer.codes for layer in report.layers)
    assert report.instrumented_vs_deployed == 0.0 and report.kernel_diff <= 1e-5
    if report.end_to_end > 1e-4:
        assert report.code_flips > 0 and report.first_flip.input_diff <= 1e-5


def test_minilm_int4_lrc_compensation(minilm_graph, minilm_dense, minilm_calibration, minilm_inputs,
                                      minilm_reference, one_math_thread):
    """int4-g128+lrc:16 (GPTQ, then EoRA on the remaining error) adds lrc_v, lrc_u and lrc_add after every linear;
    each layer's reported output error is tr(E G E^T) / tr(W G W^T) of W_q + U V recomputed here, and is below
    that of the int4-g128 weight alone (the same GPTQ codes int4-g128 gives with the same calibration); the
    deployed model computes what the interpreter computes."""
    from sparsecc.interpreter.interpreter import graph_param_tensor
    from sparsecc.passes.compress.quantize import gptq

    ids, mask = (t.numpy() for t in minilm_inputs)
    cm = sparsecc.compile(None, graph=minilm_graph.copy(), compress="int4-g128+lrc:16",
                          calibration=minilm_calibration)
    verify(cm.graph)
    dense = minilm_dense
    assert len(cm.graph.nodes) == len(dense.nodes) + 3 * N_LINEARS
    names = {n.name for n in cm.graph.nodes}
    linears = [n.name for n in dense.nodes if n.op == "linear"]
    assert len(linears) == N_LINEARS
    assert all({f"{n}.lrc_v", f"{n}.lrc_u", f"{n}.lrc_add"} <= names for n in linears)

    calib = calibrate(dense, load_batches(dense, minilm_calibration))
    plan = cm.manifest["plan"]
    assert len(plan) == N_LINEARS
    for i, r in enumerate(plan):
        name = r["weight"]
        assert r["method"] == "gptq, eora compensation rank 16"
        w = dense.params[name].data.astype(np.float64)
        gram = calib[name].gram
        enc = E.load(cm.graph, name)
        assert enc.kind == "int4-g128"
        if i == 0:  # the codes are those int4-g128 alone gives with this calibration
            np.testing.assert_array_equal(gptq(dense.params[name].data, QuantSpec(4, 128), gram).values, enc.values)
        w_q = enc.dense().astype(np.float64)
        u = graph_param_tensor(cm.graph, f"{name}.lrc_u").numpy().astype(np.float64)
        v = graph_param_tensor(cm.graph, f"{name}.lrc_v").numpy().astype(np.float64)
        assert u.shape == (w.shape[0], 16) and v.shape == (16, w.shape[1])

        def output_error(w_hat):
            e = w - w_hat
            return np.sum((e @ gram) * e) / np.sum((w @ gram) * w)

        without, with_lrc = output_error(w_q), output_error(w_q + u @ v)
        assert r["output_error"] == pytest.approx(with_lrc, rel=1e-3)
        assert with_lrc < without, name
    out = cm(ids, mask)
    assert rel(out, run_graph(cm.graph, ids, mask)[0]) <= 1e-4
    print(f"\n[minilm int4-g128+lrc:16] min cosine to dense {cosines(out, minilm_reference).min():.5f}")
