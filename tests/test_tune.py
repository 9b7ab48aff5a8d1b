"""``sparsecc tune``: MetaSchedule records in a per-target database, applied by ``compile`` only for that target.

Tuning costs seconds per trial (a build and a timed run each), so the tuning test is slow; the fast tests check the
database keying and lookup, and that compiling without a database marks no function as tuned.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from sparsecc.interpreter import run_graph
from sparsecc.ir.graph import Graph, TensorType

tvm_backend = pytest.importorskip("sparsecc.backends.tvm")


def linear_layer_norm_graph() -> Graph:
    """x[4, 64] -> linear (packed-GEMM template) -> layer_norm (reductions: dlight's CPU rule / default loops)."""
    rng = np.random.default_rng(0)
    g = Graph(name="linear_ln")
    x = g.add_input("x", TensorType((4, 64), "float32"))
    w = g.add_param("w", rng.standard_normal((64, 64)).astype("float32"))
    b = g.add_param("b", rng.standard_normal(64).astype("float32"))
    (h,) = g.add_node("linear", [x, w, b], [TensorType((4, 64), "float32")])
    (y,) = g.add_node("layer_norm", [h], [TensorType((4, 64), "float32")], {"axis": 1, "epsilon": 1e-5})
    g.outputs = [y]
    return g


def test_target_key_separates_cpus_cores_and_arches():
    from sparsecc.backends.tvm.tuning import target_key

    base = {"kind": "llvm", "mcpu": "znver4", "num-cores": 2}
    keys = {target_key(base), target_key(dict(base, mcpu="skylake-avx512")), target_key(dict(base, **{"num-cores": 4})),
            target_key("arm64")}
    assert len(keys) == 4
    assert target_key(dict(base)) == target_key(base)  # deterministic
    assert target_key(base).startswith("x86-znver4-") and target_key("arm64").startswith("arm64-")


def test_find_database_needs_records_for_this_target(tmp_path, monkeypatch):
    from sparsecc.backends.tvm.tuning import ENV_VAR, RECORDS_FILE, database_dir, find_database

    target = {"kind": "llvm", "mcpu": "znver4", "num-cores": 2}
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert find_database(target) is None  # nothing tuned yet
    db = database_dir(target)
    db.mkdir(parents=True)
    (db / RECORDS_FILE).write_text("")
    assert find_database(target) == db == tmp_path / db.name
    assert find_database(target, False) is None
    assert find_database(dict(target, mcpu="skylake-avx512")) is None
    assert find_database(target, tmp_path / "elsewhere") is None


def test_compile_without_database_reports_no_tuned_functions(tmp_path):
    import sparsecc

    graph = linear_layer_norm_graph()
    cm = sparsecc.compile(None, graph=graph, tuning_db=tmp_path)
    assert cm.manifest["metrics"]["tuned_functions"] == 0
    assert cm.manifest["tuning"] == {"database": None, "functions": []}
    x = np.random.default_rng(1).standard_normal((4, 64)).astype("float32")
    np.testing.assert_allclose(cm(x), run_graph(graph, x)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_tune_then_compile_applies_records_only_for_that_target(tmp_path):
    """A few trials (minutes on 2 cores): records are kept only where they beat the template, compile applies
    exactly those, the output still matches the interpreter, and another target's compile ignores them."""
    import sparsecc
    from sparsecc.backends.tvm import prepare_graph, resolve_target
    from sparsecc.backends.tvm.tuning import tune_graph

    target = resolve_target("x86")
    graph = linear_layer_norm_graph()
    lines: list[str] = []
    report = tune_graph(prepare_graph(graph, target), target, trials=4, db_root=tmp_path, cost_model="random",
                        log=lines.append)
    assert any(line.startswith("[tune] task ") and "trials, best" in line for line in lines)
    assert sum(r.trials for r in report.tasks) >= 1
    for r in report.tasks:
        assert not r.kept or (r.template_ms is not None and r.tuned_ms is not None and r.tuned_ms < r.template_ms)
    if report.kept == 0:
        pytest.skip(f"no tuned schedule beat the templates in 4 trials: {[r.describe() for r in report.tasks]}")

    x = np.random.default_rng(2).standard_normal((4, 64)).astype("float32")
    cm = sparsecc.compile(None, graph=graph, target=target, tuning_db=tmp_path)
    kept = sorted(r.name for r in report.tasks if r.kept)
    assert cm.manifest["metrics"]["tuned_functions"] == len(kept)
    assert sorted(cm.manifest["tuning"]["functions"]) == kept
    np.testing.assert_allclose(cm(x), run_graph(graph, x)[0], rtol=1e-4, atol=1e-4)

    other = dict(json.loads(str(target)), **{"num-cores": int(target.attrs["num-cores"]) + 1})  # another key
    cm_other = sparsecc.compile(None, graph=graph, target=other, tuning_db=tmp_path)
    assert cm_other.manifest["metrics"]["tuned_functions"] == 0
