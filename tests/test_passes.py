"""Canonicalization passes keep the numbers and produce the canonical forms compression relies on."""
from __future__ import annotations

import numpy as np
import pytest

from sparsecc.interpreter import run_graph
from sparsecc.ir import Graph, TensorType, verify
from sparsecc.passes.canonicalize import (eliminate_dead_code, fold_batch_norm, fold_constants, fuse_linear_bias,
                                          matmul_to_linear)
from sparsecc.passes.pipeline import canonicalize

rng = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def ops(g: Graph) -> list[str]:
    return [n.op for n in g.nodes]


def test_matmul_add_becomes_linear_with_bias():
    g = Graph()
    x = g.add_input("x", TensorType(("batch", 7), "float32"))
    w = g.add_param("w", f32(7, 5))
    b = g.add_param("b", f32(5))
    (mm,) = g.add_node("matmul", [x, w], [TensorType(("batch", 5), "float32")])
    (y,) = g.add_node("add", [mm, b], [TensorType(("batch", 5), "float32")])
    g.outputs = [y]
    xs = f32(3, 7)
    before = run_graph(g, xs)[0]
    g2 = canonicalize()(g.copy())
    assert ops(g2) == ["linear"]
    lin = g2.nodes[0]
    assert g2.params[lin.inputs[1]].data.shape == (5, 7) and lin.inputs[2] == "b"
    assert set(g2.params) == {lin.inputs[1], "b"}  # the transposed-away weight is gone
    np.testing.assert_allclose(run_graph(g2, xs)[0], before, rtol=1e-6, atol=1e-6)


def test_bias_not_fused_when_linear_output_has_other_users():
    g = Graph()
    x = g.add_input("x", TensorType((2, 4), "float32"))
    w, b = g.add_param("w", f32(3, 4)), g.add_param("b", f32(3))
    t = TensorType((2, 3), "float32")
    (lin,) = g.add_node("linear", [x, w], [t])
    (y,) = g.add_node("add", [lin, b], [t])
    g.outputs = [y, lin]
    assert ops(fuse_linear_bias(g.copy())) == ["linear", "add"]


def test_batch_norm_folds_into_conv():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 9, 9), "float32"))
    w = g.add_param("w", f32(4, 3, 3, 3))
    bn = [g.add_param(n, a) for n, a in (("s", f32(4)), ("t", f32(4)), ("m", f32(4)),
                                         ("v", np.abs(f32(4)) + 0.5))]
    t = TensorType((2, 4, 7, 7), "float32")
    (c,) = g.add_node("conv", [x, w], [t], {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1]})
    (y,) = g.add_node("batch_norm", [c, *bn], [t], {"epsilon": 1e-3})
    (z,) = g.add_node("relu", [y], [t])
    g.outputs = [z]
    xs = f32(2, 3, 9, 9)
    before = run_graph(g, xs)[0]
    g2 = eliminate_dead_code(fold_batch_norm(g.copy()))
    verify(g2)
    assert ops(g2) == ["conv", "relu"]
    np.testing.assert_allclose(run_graph(g2, xs)[0], before, rtol=1e-5, atol=1e-5)


def test_constants_fold_and_dead_code_goes():
    g = Graph()
    x = g.add_input("x", TensorType((4,), "float32"))
    a, b = g.add_param("a", np.arange(4, dtype=np.float32)), g.add_param("b", np.full(4, 2, np.float32))
    t = TensorType((4,), "float32")
    (ab,) = g.add_node("mul", [a, b], [t])
    (dead,) = g.add_node("exp", [x], [t])
    (y,) = g.add_node("add", [x, ab], [t])
    g.outputs = [y]
    xs = f32(4)
    g2 = eliminate_dead_code(fold_constants(g.copy()))
    verify(g2)
    assert ops(g2) == ["add"] and dead not in g2.types
    np.testing.assert_array_equal(g2.params[ab].data, np.arange(4) * 2)
    np.testing.assert_allclose(run_graph(g2, xs)[0], xs + np.arange(4) * 2)


def test_constant_folding_skips_big_expansions():
    g = Graph()
    x = g.add_input("x", TensorType((512, 512), "float32"))
    s = g.add_param("s", np.ones((1, 1), np.float32))
    t = TensorType((512, 512), "float32")
    (e,) = g.add_node("expand", [s], [t], {"shape": [512, 512]})
    (y,) = g.add_node("add", [x, e], [t])
    g.outputs = [y]
    assert ops(fold_constants(g.copy())) == ["expand", "add"]


def test_matmul_with_integer_param_is_left_alone():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3), "int64"))
    w = g.add_param("w", np.ones((3, 2), np.int64))
    (y,) = g.add_node("matmul", [x, w], [TensorType((2, 2), "int64")])
    g.outputs = [y]
    assert ops(matmul_to_linear(g.copy())) == ["matmul"]


@pytest.mark.parametrize("bad", ["conv_output_is_graph_output", "bn_stats_not_params"])
def test_batch_norm_left_when_unsafe(bad):
    g = Graph()
    x = g.add_input("x", TensorType((1, 2, 5, 5), "float32"))
    w = g.add_param("w", f32(2, 2, 1, 1))
    stats = [g.add_param(n, np.ones(2, np.float32)) for n in "stmv"]
    if bad == "bn_stats_not_params":
        stats[0] = g.add_input("scale", TensorType((2,), "float32"))
    t = TensorType((1, 2, 5, 5), "float32")
    (c,) = g.add_node("conv", [x, w], [t], {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1]})
    (y,) = g.add_node("batch_norm", [c, *stats], [t])
    g.outputs = [y, c] if bad == "conv_output_is_graph_output" else [y]
    assert ops(fold_batch_norm(g.copy())) == ["conv", "batch_norm"]
