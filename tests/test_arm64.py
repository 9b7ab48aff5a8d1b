"""arm64 artifacts run here under qemu user-mode emulation and compute what the x86 build computes.

Needs the aarch64 root from scripts/setup_arm64.sh (scripts/setup.sh runs it when root); skipped without it.
Emulated wall times are not device timings: these tests check correctness only.
"""
from __future__ import annotations

import numpy as np
import pytest

import sparsecc
from sparsecc.backends.tvm.emulation import arm64_dir, arm64_root, run_arm64
from sparsecc.errors import ArtifactError, InputError, SparseccError
from sparsecc.ir.graph import Graph, TensorType

pytestmark = [
    pytest.mark.xdist_group("arm64"),
    pytest.mark.skipif(arm64_root() is None,
                       reason=f"no aarch64 root in {arm64_dir()} (or no qemu-aarch64-static): "
                              "run scripts/setup_arm64.sh as root"),
]

def conv_linear_graph() -> Graph:
    """conv(stride 2, padded, bias) -> relu -> flatten -> linear(bias), batch 2; the same weights on every call."""
    rng = np.random.default_rng(0)
    g = Graph(name="conv_linear")
    x = g.add_input("x", TensorType((2, 3, 13, 11), "float32"))
    w = g.add_param("conv_w", rng.standard_normal((8, 3, 3, 3)).astype("float32") * 0.3)
    b = g.add_param("conv_b", rng.standard_normal(8).astype("float32"))
    conv = g.add_node("conv", [x, w, b], [TensorType((2, 8, 7, 6), "float32")],
                      dict(strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1]))[0]
    act = g.add_node("relu", [conv], [TensorType((2, 8, 7, 6), "float32")])[0]
    flat = g.add_node("reshape", [act], [TensorType((2, 336), "float32")], dict(shape=[2, 336]))[0]
    fw = g.add_param("fc_w", rng.standard_normal((10, 336)).astype("float32") * 0.05)
    fb = g.add_param("fc_b", rng.standard_normal(10).astype("float32"))
    g.outputs = g.add_node("linear", [flat, fw, fb], [TensorType((2, 10), "float32")])
    return g


@pytest.fixture(scope="module")
def conv_linear(tmp_path_factory):
    """(arm64 artifact path, x86 CompiledModel, input) for the conv+linear graph."""
    path = tmp_path_factory.mktemp("arm64") / "conv_linear.scc"
    sparsecc.compile(None, graph=conv_linear_graph(), target="arm64").save(path)
    x86 = sparsecc.compile(None, graph=conv_linear_graph(), target="x86")
    return path, x86, np.random.default_rng(1).standard_normal((2, 3, 13, 11)).astype("float32")


def test_conv_linear_matches_x86(conv_linear, rel_err):
    path, x86, x = conv_linear
    out = run_arm64(path, {"x": x})
    assert list(out) == x86.output_names
    got = out[x86.output_names[0]]
    assert got.shape == (2, 10) and got.dtype == np.float32
    assert rel_err(got, x86(x)) <= 1e-5


def test_errors_name_the_problem(conv_linear, tmp_path):
    path, x86, x = conv_linear
    with pytest.raises(InputError, match=r"missing \['x'\]"):
        run_arm64(path, {"y": x})
    x86.save(tmp_path / "x86.scc")
    with pytest.raises(ArtifactError, match="built for target 'x86'"):
        run_arm64(tmp_path / "x86.scc", {"x": x})
    # a failure inside the emulated process comes back with the tail of its stderr (here: TVM's shape check)
    with pytest.raises(SparseccError, match=r"(?s)emulated arm64 run failed.*mismatch"):
        run_arm64(path, {"x": x[:1]})


@pytest.mark.slow
def test_minilm_matches_x86(minilm, minilm_inputs, rel_err, tmp_path):
    """The real all-MiniLM-L6-v2 (batch 2, sequence 128): about 30 s of emulated run time."""
    ids, mask = (t[:2] for t in minilm_inputs)
    path = tmp_path / "minilm_arm64.scc"
    sparsecc.compile(minilm, (ids, mask), target="arm64").save(path)
    x86 = sparsecc.compile(minilm, (ids, mask), target="x86")
    out = run_arm64(path, dict(zip(x86.input_names, (ids.numpy(), mask.numpy()))))
    emb = out[x86.output_names[0]]
    assert emb.shape == (2, 384)
    assert rel_err(emb, x86(ids.numpy(), mask.numpy())) <= 1e-4
    assert abs(float(emb[0] @ emb[1]) - 0.7553) < 1e-3  # the published sentence-transformers similarity


@pytest.mark.slow
def test_digits_cnn_matches_x86(digits, rel_err, tmp_path):
    """The trained digits CNN (conv, depthwise, pointwise, pooling, linear) at batch 16, with its accuracy."""
    from sparsecc.models.digits import accuracy

    model, x, y = digits
    path = tmp_path / "digits_arm64.scc"
    sparsecc.compile(model, (x[:16],), target="arm64").save(path)
    x86 = sparsecc.compile(model, (x[:16],), target="x86")
    got = run_arm64(path, {x86.input_names[0]: x[:16].numpy()})[x86.output_names[0]]
    ref = x86(x[:16].numpy())
    assert rel_err(got, ref) <= 1e-5
    assert accuracy(got, y[:16]) == accuracy(ref, y[:16])


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["int8", "2:4+int4-g64"])
def test_compressed_minilm_matches_x86(minilm, minilm_inputs, rel_err, tmp_path, spec):
    """MiniLM with compressed weights (calibrated on real sentences): the arm64 build under qemu computes what the
    x86 build computes (both read the same packed encodings)."""
    ids, mask = (t[:2] for t in minilm_inputs)
    calib = [(ids.numpy(), mask.numpy())]
    path = tmp_path / "minilm_arm64.scc"
    sparsecc.compile(minilm, (ids, mask), target="arm64", compress=spec, calibration=calib).save(path)
    x86 = sparsecc.compile(minilm, (ids, mask), target="x86", compress=spec, calibration=calib)
    out = run_arm64(path, dict(zip(x86.input_names, (ids.numpy(), mask.numpy()))))
    assert rel_err(out[x86.output_names[0]], x86(ids.numpy(), mask.numpy())) <= 1e-4
