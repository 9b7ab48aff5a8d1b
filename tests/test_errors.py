"""Bad input gets a clear one-line error that names the problem, through the API and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import sparsecc
from sparsecc.errors import ArtifactError, InputError, ModelLoadError, UnsupportedOpError


def small_onnx(path, op="Relu", domain=""):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    node = helper.make_node(op, ["x"], ["y"], name="my_node", domain=domain)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=opsets)
    onnx.save(model, str(path))
    return path


def cli(*args):
    return subprocess.run([sys.executable, "-m", "sparsecc.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("art")
    cm = sparsecc.compile(str(small_onnx(d / "relu.onnx")), target="x86")
    cm.save(d / "relu.scc")
    return d / "relu.scc"


def test_truncated_onnx_file(tmp_path):
    good = small_onnx(tmp_path / "m.onnx").read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelLoadError, match="truncated.onnx"):
        sparsecc.compile(str(bad))
    run = cli("compile", bad, "-o", tmp_path / "o.scc")
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "truncated.onnx" in run.stderr and "Traceback" not in run.stderr


def test_garbage_and_missing_and_unknown_files(tmp_path):
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\xffnot a model at all" * 50)
    with pytest.raises(ModelLoadError, match="garbage.onnx"):
        sparsecc.compile(str(tmp_path / "garbage.onnx"))
    with pytest.raises(ModelLoadError, match="no such file"):
        sparsecc.compile(str(tmp_path / "missing.onnx"))
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="tflite"):
        sparsecc.compile(str(tmp_path / "model.tflite"))
    (tmp_path / "bad.pt2").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ModelLoadError, match="bad.pt2"):
        sparsecc.compile(str(tmp_path / "bad.pt2"))


def test_unknown_op_names_op_and_node(tmp_path):
    path = small_onnx(tmp_path / "custom.onnx", op="FooBarOp", domain="com.example")
    with pytest.raises(UnsupportedOpError) as info:
        sparsecc.compile(str(path))
    assert "FooBarOp" in str(info.value) and "my_node" in str(info.value)
    run = cli("compile", path, "-o", tmp_path / "o.scc")
    assert run.returncode == 2 and "FooBarOp" in run.stderr and "Traceback" not in run.stderr


def test_wrong_inputs_at_run_time(artifact):
    cm = sparsecc.load(artifact)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(cm(x), x)
    with pytest.raises(InputError, match="expected 1 input"):
        cm(x, x)
    with pytest.raises(InputError, match=r"\[2, 3\]"):
        cm(np.ones((3, 3), np.float32))
    with pytest.raises(InputError, match="float32"):
        cm(np.ones((2, 3), np.float64))


def test_cli_run_with_missing_input(artifact, tmp_path):
    run = cli("run", artifact, "-o", tmp_path / "o.npz")
    assert run.returncode == 2 and "missing ['x']" in run.stderr


def rewrite_member(src, dst, member, fn):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            zout.writestr(item, fn(data) if item == member else data)


def test_tampered_artifact(artifact, tmp_path):
    bad = tmp_path / "tampered.scc"
    rewrite_member(artifact, bad, "weights.npz", lambda b: b[:-8] + b"12345678")
    with pytest.raises(ArtifactError, match="weights.npz.*SHA-256"):
        sparsecc.load(bad)
    run = cli("inspect", bad)
    assert run.returncode == 2 and "SHA-256" in run.stderr and "Traceback" not in run.stderr


def test_foreign_version_artifact(artifact, tmp_path):
    for key, value, expect in (("format", "sparsecc-artifact/99", "format"), ("tvm_version", "0.1.0", "TVM 0.1.0")):
        bad = tmp_path / f"foreign_{key}.scc"

        def edit(b, key=key, value=value):
            m = json.loads(b)
            m[key] = value
            return json.dumps(m).encode()

        rewrite_member(artifact, bad, "manifest.json", edit)
        with pytest.raises(ArtifactError, match=expect):
            sparsecc.load(bad)


def test_truncated_artifact(artifact, tmp_path):
    bad = tmp_path / "cut.scc"
    bad.write_bytes(artifact.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="cut.scc"):
        sparsecc.load(bad)


def test_budget_errors_name_the_problem(tmp_path):
    """compress='auto' needs calibration and a budget; a budget with an explicit scheme is refused, never ignored;
    a malformed budget names its field."""
    model = str(small_onnx(tmp_path / "m.onnx"))
    cases = [({"compress": "auto"}, "needs calibration data"),
             ({"compress": "int8", "budget": "latency=0.5"}, "nothing to budget"),
             ({"compress": "auto", "calibration": [(np.ones((2, 3), np.float32),)]}, "needs a budget"),
             ({"compress": "auto", "budget": "speed=2", "calibration": [(np.ones((2, 3), np.float32),)]},
              "expected latency=FRACTION")]
    for kwargs, message in cases:
        with pytest.raises(sparsecc.SparseccError, match=message):
            sparsecc.compile(model, **kwargs)


def test_bad_compress_spec_names_the_stage(tmp_path):
    with pytest.raises(sparsecc.SparseccError, match="unknown stage 'int3'"):
        sparsecc.compile(str(small_onnx(tmp_path / "m.onnx")), compress="2:4+int3")
