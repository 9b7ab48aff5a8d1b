"""The TVM backend against the torch interpreter: every canonical op, symbolic dims, CUDA/arm64 builds, input checks.

The op cases (one single-node graph per case, shared with the ONNX backend's tests) live in ``op_cases.py``.
"""
from __future__ import annotations

import math
import shutil
import time

import numpy as np
import pytest
from conftest import assert_cuda_compiles
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

from sparsecc.errors import InputError, UnsupportedOpError
from sparsecc.interpreter import run_graph
from sparsecc.ir.graph import Encoding, Graph, TensorType
from sparsecc.ir.ops import OPS

tvm_backend = pytest.importorskip("sparsecc.backends.tvm")


def test_every_canonical_op_has_cases_and_a_lowering():
    from sparsecc.backends.tvm import missing_lowerings

    assert missing_lowerings() == []
    assert sorted(set(OPS) - {c.op for c in CASES}) == []


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_op_matches_interpreter(case: Case):
    from sparsecc.backends.tvm import compile_graph

    graph = single_node_graph(case)
    inputs = graph_inputs(case)
    assert_matches_reference(compile_graph(graph)(*inputs), run_graph(graph, *inputs), case.rtol, case.atol)


# ---- whole graphs ---------------------------------------------------------------------------------------------
def test_symbolic_batch_runs_at_two_batch_sizes():
    from sparsecc.backends.tvm import compile_graph

    graph = mlp_graph("batch")
    run = compile_graph(graph)
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 6)).astype("float32")
        got, want = run(x), run_graph(graph, x)
        assert [o.shape for o in got] == [(batch * 2, 2), (batch,)]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_symbol_shared_across_inputs_and_in_slices():
    """Two inputs share "n"; slices, a pad and a reverse on the symbolic axis."""
    from sparsecc.backends.tvm import compile_graph

    g = Graph()
    a = g.add_input("a", TensorType(("n", 3), "float32"))
    b = g.add_input("b", TensorType(("n", 3), "float32"))
    (s,) = g.add_node("add", [a, b], [TensorType(("n", 3), "float32")])
    (t,) = g.add_node("slice", [s], [TensorType(("n", 2), "float32")],
                      {"starts": [1], "ends": [2**62], "axes": [1], "steps": [1]})
    (u,) = g.add_node("slice", [s], [TensorType(("m", 1), "float32")],  # a data-dependent size: "m"
                      {"starts": [-2, 0], "ends": [2**62, 1], "axes": [0, 1], "steps": [1, 1]})
    (v,) = g.add_node("slice", [s], [TensorType(("n", 3), "float32")],
                      {"starts": [-1], "ends": [-2**62], "axes": [0], "steps": [-1]})
    (w,) = g.add_node("pad", [t], [TensorType(("n+1", 4), "float32")], {"pads": [1, 1, 0, 1], "mode": "edge"})
    g.outputs = [t, u, v, w]
    run = compile_graph(g)
    for n in (1, 4):
        x, y = np.ones((n, 3), "float32"), np.arange(3 * n, dtype="float32").reshape(n, 3)
        for got, want in zip(run(x, y), run_graph(g, x, y)):
            np.testing.assert_allclose(got, want)
    with pytest.raises(InputError, match="'n'"):
        run(np.ones((2, 3), "float32"), np.ones((3, 3), "float32"))


def test_compile_time_is_small():
    from sparsecc.backends.tvm import build

    graph = single_node_graph(Case("add", [f(3, 4), f(4)]))
    build(graph)  # warm up
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    for _ in range(3):
        build(graph, timings=timings)
    per_graph = (time.perf_counter() - t0) / 3
    assert per_graph < 0.5, f"{per_graph:.3f}s per single-op graph; stages: {timings}"
    from sparsecc.backends.tvm import STAGE_NAMES

    assert set(timings) == set(STAGE_NAMES)


def test_outputs_that_are_inputs_or_params():
    from sparsecc.backends.tvm import compile_graph

    g = Graph()
    x = g.add_input("x", TensorType((2,), "float32"))
    p = g.add_param("p", np.array([1.0, 2.0, 3.0], "float32"))
    g.outputs = [x, p]
    out = compile_graph(g)(np.array([5.0, 6.0], "float32"))
    np.testing.assert_array_equal(out[0], [5.0, 6.0])
    np.testing.assert_array_equal(out[1], [1.0, 2.0, 3.0])


# ---- bad inputs and unsupported things ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp_runner():
    from sparsecc.backends.tvm import compile_graph

    return compile_graph(mlp_graph("batch"))


@pytest.mark.parametrize("inputs, match", [
    ((), r"expected 1 inputs \(x\), got 0"),
    ((np.ones((2, 6), "float32"), np.ones((2, 6), "float32")), "expected 1 inputs"),
    ((np.ones((2, 6), "float64"),), "input 'x': expected dtype float32, got float64"),
    ((np.ones((2, 6), "int64"),), "input 'x': expected dtype float32, got int64"),
    ((np.ones((2, 6, 1), "float32"),), r"input 'x': expected shape \[batch, 6\] \(rank 2\), got \[2, 6, 1\]"),
    ((np.ones((2, 5), "float32"),), r"input 'x'.*batch.*6.*\[2, 5\]"),
])
def test_bad_inputs_raise_input_error(mlp_runner, inputs, match):
    with pytest.raises(InputError, match=match) as e:
        mlp_runner(*inputs)
    assert "\n" not in str(e.value)


def test_compressed_encoding_is_unsupported_not_wrong():
    from sparsecc.backends.tvm import build

    case = Case("linear", [f(3, 7), f(5, 7)], params=(1,))
    graph = single_node_graph(case)
    graph.params["p1"].encoding = Encoding("int8", {"scale": 0.1})
    with pytest.raises(UnsupportedOpError, match="encoding 'int8'"):
        build(graph)


def test_unsupported_attribute_raises():
    from sparsecc.backends.tvm import build

    graph = single_node_graph(Case("resize", [f(1, 1, 4, 4)], {"sizes": [8, 8]}))
    graph.nodes[0].attrs["coordinate_transformation_mode"] = "tf_crop_and_resize"
    with pytest.raises(UnsupportedOpError, match="resize"):
        build(graph)


# ---- targets ----------------------------------------------------------------------------------------------------
def test_target_resolution():
    from sparsecc.backends.tvm import resolve_target, target_info

    x86 = resolve_target("x86")
    assert x86.kind.name == "llvm" and str(x86.attrs["mcpu"])
    assert int(x86.attrs["num-cores"]) >= 1
    assert resolve_target("cuda").attrs["arch"] == "sm_80"
    assert resolve_target("cuda:sm_90").attrs["arch"] == "sm_90"
    assert resolve_target("cuda").host.kind.name == "llvm"
    assert resolve_target({"kind": "llvm", "mcpu": "skylake-avx512"}).attrs["mcpu"] == "skylake-avx512"
    with pytest.raises(ValueError, match="x86, arm64, cuda"):
        resolve_target("riscv")
    info = target_info("arm64")
    assert info["name"] == "arm64" and info["triple"] == "aarch64-linux-gnu" and info["cc"] == "aarch64-linux-gnu-gcc"
    assert target_info("x86")["name"] == "x86" and target_info("x86")["cc"] is None
    assert target_info("cuda:sm_90")["arch"] == "sm_90"
    assert target_info({"kind": "llvm", "mtriple": "aarch64-linux-gnu"})["name"] == "arm64"
    import json

    json.dumps(target_info("cuda"))


def test_conv_net_on_x86():
    from sparsecc.backends.tvm import compile_graph

    graph = conv_net_graph()
    x = f(3, 3, 8, 8)
    np.testing.assert_allclose(compile_graph(graph)(x)[0], run_graph(graph, x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", ["cuda", "cuda:sm_90"])
def test_cuda_build_without_gpu(target, tmp_path):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed: CUDA code cannot be built here")
    from sparsecc.backends.tvm import build, export_library

    ex = build(conv_net_graph(), target)
    path = tmp_path / "lib.so"
    export_library(ex, path, target)
    assert path.stat().st_size > 0
    # the library carries CUDA source (compiled when loaded on a GPU): check that nvcc really compiles it
    assert_cuda_compiles(ex, "sm_90" if target.endswith("sm_90") else "sm_80")


def test_arm64_cross_compile(tmp_path):
    from sparsecc.backends.tvm import build, export_cc

    cc = export_cc("arm64")
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed (Debian: apt-get install gcc-aarch64-linux-gnu)")
    ex = build(mlp_graph("batch"), "arm64")
    path = tmp_path / "lib.so"
    ex.export_library(str(path), cc=cc)
    assert path.read_bytes()[:4] == b"\x7fELF" and path.read_bytes()[18] == 183  # e_machine = EM_AARCH64


def test_runner_stages_each_input_signature(mlp_runner):
    """A runner copies each call's arrays into the staging tensors of their signature: calls alternating between
    shapes, with non-contiguous and empty inputs, each get their own inputs' result (nothing of an earlier call
    stays in a buffer), and a signature is checked before it is staged (a bad one raises, stages nothing)."""
    graph = mlp_graph("batch")
    xs = [f(3, 6), f(5, 6), np.asfortranarray(f(5, 6)), f(12, 6)[::4], np.zeros((0, 6), np.float32), f(3, 6) + 1]
    for x in xs + xs[::-1]:
        for got, want in zip(mlp_runner(x), run_graph(graph, x)):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    staged = len(mlp_runner._staged)
    with pytest.raises(InputError, match="expected dtype float32, got float64"):
        mlp_runner(f(3, 6).astype(np.float64))
    assert len(mlp_runner._staged) == staged
    out = mlp_runner(xs[0])[0]
    kept = out.copy()
    out += 1  # outputs are the caller's own copies
    np.testing.assert_array_equal(mlp_runner(xs[0])[0], kept)


def test_exported_library_round_trip(tmp_path):
    """build -> export_library -> Runner(path) gives the same results as the in-memory executable."""
    from sparsecc.backends.tvm import Runner, build

    graph = mlp_graph("batch")
    path = tmp_path / "lib.so"
    build(graph).export_library(str(path))
    run = Runner(str(path), [graph.types["x"]], graph.outputs, {k: p.data for k, p in graph.params.items()},
                 input_names=["x"])
    x = f(3, 6)
    for g, w in zip(run(x), run_graph(graph, x)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert math.isfinite(float(run(x)[1].sum()))
