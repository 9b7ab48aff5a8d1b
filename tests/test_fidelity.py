"""sparsecc.fidelity: the layer-by-layer check of deployed kernels against the interpreter (the real-model checks,
digits and MiniLM W8A8/W7A8, are in test_compress.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import sparsecc
from sparsecc.fidelity import check_fidelity, relative_diff
from sparsecc.interpreter.interpreter import Interpreter
from sparsecc.ir.graph import Graph, TensorType


def two_linears() -> tuple[Graph, np.ndarray]:
    """x -> linear -> gelu -> linear, float32 weights, and 64 rows of inputs to calibrate and check with."""
    rng = np.random.default_rng(3)
    g = Graph()
    g.add_input("x", TensorType(("batch", 64), "float32"))
    w1 = g.add_param("w1", rng.standard_normal((96, 64)).astype(np.float32) / 8)
    w2 = g.add_param("w2", rng.standard_normal((32, 96)).astype(np.float32) / 8)
    (h,) = g.add_node("linear", ["x", w1], [TensorType(("batch", 96), "float32")])
    (a,) = g.add_node("gelu", [h], [TensorType(("batch", 96), "float32")])
    (y,) = g.add_node("linear", [a, w2], [TensorType(("batch", 32), "float32")])
    g.outputs = [y]
    return g, rng.standard_normal((64, 64)).astype(np.float32)


def linears_off_by_a_thousandth(monkeypatch) -> None:
    """Makes the interpreter's ``linear`` compute 0.1% more than the kernels do (a kernel that is wrong)."""
    run_node = Interpreter.run_node

    def off(self, node, args, symbols):
        out = run_node(self, node, args, symbols)
        return out * 1.001 if node.op == "linear" else out

    monkeypatch.setattr(Interpreter, "run_node", off)


def test_w8a8_build_differs_from_the_interpreter_by_float_rounding_only():
    g, x = two_linears()
    cm = sparsecc.compile(None, graph=g, compress="w8a8", calibration=(x,))
    report = check_fidelity(cm, x[:16])
    assert [layer.node for layer in report.layers] == ["linear", "linear_1"]
    assert [layer.encoding for layer in report.layers] == ["w8a8", "w8a8"]
    assert [layer.codes for layer in report.layers] == [16 * 64, 16 * 96]
    assert report.layers[0].input_diff == 0.0 and report.layers[0].code_flips == 0  # the graph input itself
    assert report.instrumented_vs_deployed == 0.0 and report.kernel_diff <= 1e-6
    assert report.end_to_end <= 1e-4 or report.code_flips > 0
    assert "every layer's kernel on the deployed input within" in report.summary()


def test_a_kernel_that_computes_something_else_is_reported(monkeypatch):
    """If the interpreter's linear computed 0.1% more than the kernels, every layer's kernel_diff says so (and
    not only the end-to-end difference), with no code flip to blame on the first layer."""
    g, x = two_linears()
    linears_off_by_a_thousandth(monkeypatch)
    report = check_fidelity(g, x[:4])
    assert report.instrumented_vs_deployed is None  # a graph, not a CompiledModel
    assert all(9e-4 < layer.kernel_diff < 1.1e-3 for layer in report.layers)
    assert report.layers[0].input_diff == 0.0 and report.code_flips == 0  # float weights: no codes
    assert report.end_to_end > 1e-3


def test_relative_diff_refuses_different_shapes():
    assert relative_diff(np.ones(3), np.ones(3) * 2) == 0.5
    with pytest.raises(ValueError, match=r"shapes differ: \(3,\) vs \(4,\)"):
        relative_diff(np.ones(3), np.ones(4))


def test_check_command_passes_a_faithful_artifact_and_fails_a_wrong_kernel(tmp_path, monkeypatch, capsys):
    from sparsecc.cli import main

    g, x = two_linears()
    sparsecc.compile(None, graph=g, compress="w8a8", calibration=(x,)).save(tmp_path / "m.scc")
    np.save(tmp_path / "x.npy", x[:8])
    args = ["check", str(tmp_path / "m.scc"), "--input", f"x={tmp_path}/x.npy", "--json", str(tmp_path / "r.json")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "linear_1" in out and "w8a8" in out and "ok: every kernel within 0.0001" in out
    assert json.loads((tmp_path / "r.json").read_text())["layers"][1]["codes"] == 8 * 96

    linears_off_by_a_thousandth(monkeypatch)
    assert main(args) == 1
    assert "FAILED: 2 kernels differ from the interpreter by more than 0.0001 on their deployed input: linear, " \
           "linear_1" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "m.scc"), "--input", f"y={tmp_path}/x.npy"]) == 2
