"""``sparsecc tune``: MetaSchedule records in a per-target database, applied by ``compile`` only for that target.

Tuning costs seconds per trial (a build and a timed run each), so the tuning test is slow; the fast tests check the
database keying and lookup, and that compiling without a database marks no function as tuned.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sparsecc.interpreter import run_graph
from sparsecc.ir.graph import Graph, TensorType

tvm_backend = pytest.importorskip("sparsecc.backends.tvm")


def conv1d_graph() -> Graph:
    """x[2, 16, 256] -> conv1d: no sparsecc template (dlight's generic CPU reduction rule at most), so a few trials
    often beat it; when none does, the slow test skips with the measured numbers."""
    rng = np.random.default_rng(0)
    g = Graph(name="conv1d")
    x = g.add_input("x", TensorType((2, 16, 256), "float32"))
    w = g.add_param("w", rng.standard_normal((32, 16, 3)).astype("float32"))
    (y,) = g.add_node("conv", [x, w], [TensorType((2, 32, 254), "float32")],
                      {"strides": [1], "pads": [0, 0], "dilations": [1]})
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

    graph = conv1d_graph()
    cm = sparsecc.compile(None, graph=graph, tuning_db=tmp_path)
    assert cm.manifest["metrics"]["tuned_functions"] == 0
    assert cm.manifest["tuning"] == {"database": None, "functions": []}
    x = np.random.default_rng(1).standard_normal((2, 16, 256)).astype("float32")
    np.testing.assert_allclose(cm(x), run_graph(graph, x)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_tune_then_compile_applies_records_only_for_that_target(tmp_path):
    """A few trials (minutes on 2 cores): records are kept only where they beat the template, compile applies
    exactly those, the output still matches the interpreter, and another target's compile ignores them."""
    import sparsecc
    from sparsecc.backends.tvm import prepare_graph, resolve_target
    from sparsecc.backends.tvm.tuning import tune_graph

    target = resolve_target("x86")
    graph = conv1d_graph()
    lines: list[str] = []
    report = tune_graph(prepare_graph(graph, target), target, trials=4, db_root=tmp_path, cost_model="random",
                        log=lines.append)
    assert any(line.startswith("[tune] task ") and "trials, best" in line for line in lines)
    assert sum(r.trials for r in report.tasks) >= 1
    for r in report.tasks:
        assert not r.kept or (r.template_ms is not None and r.tuned_ms is not None and r.tuned_ms < r.template_ms)
    if report.kept == 0:
        pytest.skip(f"no tuned schedule beat the templates in 4 trials: {[r.describe() for r in report.tasks]}")

    x = np.random.default_rng(2).standard_normal((2, 16, 256)).astype("float32")
    cm = sparsecc.compile(None, graph=graph, target=target, tuning_db=tmp_path)
    kept = sorted(r.name for r in report.tasks if r.kept)
    assert cm.manifest["metrics"]["tuned_functions"] == len(kept)
    assert sorted(cm.manifest["tuning"]["functions"]) == kept
    np.testing.assert_allclose(cm(x), run_graph(graph, x)[0], rtol=1e-4, atol=1e-4)

    other = dict(json.loads(str(target)), **{"num-cores": int(target.attrs["num-cores"]) + 1})  # another key
    cm_other = sparsecc.compile(None, graph=graph, target=other, tuning_db=tmp_path)
    assert cm_other.manifest["metrics"]["tuned_functions"] == 0


@pytest.mark.slow
def test_tune_over_tracker_times_on_the_pool(tmp_path, tracker_pool):
    """``--tracker/--key``: every template baseline and candidate is timed by MetaSchedule's RPC runner on the
    pool's devices (uploaded as shared libraries built here), and the winners land in the same database."""
    from conftest import POOL_KEY
    from sparsecc.backends.tvm import prepare_graph, resolve_target
    from sparsecc.backends.tvm.tuning import database_dir, tune_graph

    target = resolve_target("x86")
    lines: list[str] = []
    report = tune_graph(prepare_graph(conv1d_graph(), target), target, trials=2, db_root=tmp_path,
                        cost_model="random", tracker=tracker_pool, key=POOL_KEY, log=lines.append)
    assert f"timed on 2 '{POOL_KEY}' devices of tracker {tracker_pool}" in lines[0]
    assert report.tasks and all(r.template_ms is not None and r.template_ms > 0 for r in report.tasks), "\n".join(
        line for line in lines if "template" in line)
    assert any(r.tuned_ms is not None and r.tuned_ms > 0 for r in report.tasks)  # candidates ran on the pool
    assert sum(r.trials for r in report.tasks) >= 2
    assert report.database == database_dir(target, tmp_path) and (report.database / "target.json").exists()


def test_tune_over_tracker_names_a_missing_key(tracker_pool, capsys):
    """Checked before the model is even read."""
    from sparsecc.cli import main

    argv = ["tune", "model.onnx", "--tracker", tracker_pool, "--key", "no-such-key"]
    assert main(argv) == 2
    assert "has no device registered under key 'no-such-key'" in capsys.readouterr().err


def test_tuning_registers_only_its_targets_tensor_intrinsics():
    """MetaSchedule's ``TuneContext`` imports ``tvm.s_tir.tensor_intrin`` (every target's intrinsics, 79 s here);
    tuning for x86 registers x86's and ARM's only, and that import then finds the package entered. Run in a fresh
    process: this one may have imported the whole package already."""
    code = """
import sys, tvm
from tvm.s_tir import TensorIntrin
from sparsecc.backends.tvm import resolve_target
from sparsecc.backends.tvm.tuning import register_tensor_intrinsics
register_tensor_intrinsics(resolve_target("x86"))
import tvm.s_tir.tensor_intrin
from tvm.s_tir.meta_schedule import TuneContext
TuneContext()  # imports the package for its side effect
print(TensorIntrin.get("dot_16x4_vnni") is not None, TensorIntrin.get("mma_ldmatrix_f16_a", allow_missing=True),
      "tvm.s_tir.tensor_intrin.cuda" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "None", "False"]


def test_a_template_run_that_failed_is_tried_again():
    """A template baseline whose timed run failed (an RPC run timed out on a busy machine) is run once more before
    it counts as unmeasured (without a baseline no tuned candidate of that task could be kept); then the tune log
    says why."""
    from concurrent.futures import Future

    import tvm
    from tvm import te
    from tvm.s_tir import meta_schedule as ms

    from sparsecc.backends.tvm import resolve_target
    from sparsecc.backends.tvm.tuning import TEMPLATE_TRIES, _measure_templates

    a = te.placeholder((64,), "float32", name="a")
    mod = tvm.IRModule({"main": te.create_prim_func([a, te.compute((64,), lambda i: a[i] + 1.0, name="b")])})

    class Builder:
        def build(self, inputs):
            return [ms.builder.BuilderResult("unused.so", None) for _ in inputs]

    class FlakyRunner:
        def __init__(self, fails: int):
            self.calls, self.fails = 0, fails

        def run(self, inputs):
            self.calls += 1
            futures = []
            for _ in inputs:
                f: Future = Future()
                f.set_result(ms.runner.RunnerResult(None, "\nRPCRunner: session timed out\ntraceback")
                             if self.calls <= self.fails
                             else ms.runner.RunnerResult([tvm.tirx.FloatImm("float64", 2e-6)], None))
                futures.append(f)
            return futures

    once = FlakyRunner(fails=1)
    assert _measure_templates([mod], resolve_target("x86"), Builder(), once) == [pytest.approx(0.002)]
    assert once.calls == 2
    always = FlakyRunner(fails=TEMPLATE_TRIES)  # no timing: the reason, as the tune log will print it
    assert _measure_templates([mod], resolve_target("x86"), Builder(), always) == [
        f"run failed ({TEMPLATE_TRIES} of {TEMPLATE_TRIES} tries): RPCRunner: session timed out"]
    assert always.calls == TEMPLATE_TRIES
