"""The real all-MiniLM-L6-v2 through both frontends into x86 artifacts, compared with PyTorch (<= 1e-4 relative)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import sparsecc

pytestmark = pytest.mark.xdist_group("minilm")

DYN = {"input_ids": {0: torch.export.Dim("batch", max=64)}, "attention_mask": {0: torch.export.Dim("batch", max=64)}}


@pytest.fixture(scope="module")
def compiled(minilm, minilm_inputs):
    ids, mask = minilm_inputs
    return sparsecc.compile(minilm, (ids[:2], mask[:2]), target="x86", dynamic_shapes=DYN)


@pytest.fixture(scope="module")
def reference(minilm, minilm_inputs):
    with torch.no_grad():
        return minilm(*minilm_inputs).numpy()


def test_export_path_matches_pytorch(compiled, minilm_inputs, reference, rel_err):
    ids, mask = minilm_inputs
    out = compiled(ids.numpy(), mask.numpy())
    assert out.shape == (8, 384)
    assert rel_err(out, reference) <= 1e-4
    assert compiled.graph.types[compiled.input_names[0]].shape[0] == "batch"
    # the symbolic batch really is symbolic: another batch size runs and matches too
    assert rel_err(compiled(ids[:3].numpy(), mask[:3].numpy()), reference[:3]) <= 1e-4
    assert abs(float(out[0] @ out[1]) - 0.7553) < 1e-3


def test_linear_layers_are_canonical(compiled):
    linears = [n for n in compiled.graph.nodes if n.op == "linear"]
    assert len(linears) == 6 * 6  # q, k, v, attention out, intermediate, output per layer
    shapes = sorted({compiled.graph.params[n.inputs[1]].logical_shape for n in linears})
    assert shapes == [(384, 384), (384, 1536), (1536, 384)]


def test_onnx_path_matches_pytorch(minilm, minilm_inputs, reference, rel_err, tmp_path):
    ids, mask = minilm_inputs
    path = tmp_path / "minilm.onnx"
    torch.onnx.export(minilm, (ids[:2], mask[:2]), str(path), input_names=["input_ids", "attention_mask"],
                      output_names=["embedding"], dynamic_shapes=DYN, dynamo=True, optimize=True)
    cm = sparsecc.compile(str(path), target="x86")
    assert cm.input_names == ["input_ids", "attention_mask"]
    out = cm(ids.numpy(), mask.numpy())
    assert rel_err(out, reference) <= 1e-4


def test_artifact_round_trip_and_cli(compiled, minilm_inputs, reference, rel_err, tmp_path):
    ids, mask = minilm_inputs
    art = tmp_path / "minilm.scc"
    compiled.save(art)
    loaded = sparsecc.load(art)
    np.testing.assert_array_equal(loaded(ids.numpy(), mask.numpy()), compiled(ids.numpy(), mask.numpy()))
    # torch in -> torch out
    assert isinstance(loaded(ids, mask), torch.Tensor)

    np.save(tmp_path / "ids.npy", ids.numpy())
    np.save(tmp_path / "mask.npy", mask.numpy())
    run = subprocess.run([sys.executable, "-m", "sparsecc.cli", "run", str(art), "--input", f"input_ids={tmp_path}/ids.npy",
                          "--input", f"attention_mask={tmp_path}/mask.npy", "-o", str(tmp_path / "o.npz")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = np.load(tmp_path / "o.npz")
    assert rel_err(out[compiled.output_names[0]], reference) <= 1e-4

    info = subprocess.run([sys.executable, "-m", "sparsecc.cli", "inspect", str(art)], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "input_ids: int64[batch, 128]" in info.stdout and "linear" in info.stdout
    assert info.stdout.count("dense") == 36


def test_standalone_runner_needs_only_tvm_and_numpy(compiled, minilm_inputs, reference, rel_err, tmp_path):
    """The artifact's own run_scc.py runs it in a process that cannot import sparsecc or torch."""
    ids, mask = minilm_inputs
    art = tmp_path / "m.scc"
    compiled.save(art)
    import zipfile

    (tmp_path / "run_scc.py").write_bytes(zipfile.ZipFile(art).read("run_scc.py"))
    np.save(tmp_path / "ids.npy", ids.numpy())
    np.save(tmp_path / "mask.npy", mask.numpy())
    blocker = "import sys; sys.modules['torch'] = None; sys.modules['sparsecc'] = None\n"
    code = blocker + ("import runpy, sys; sys.argv = ['run_scc.py', 'm.scc', '--input', 'input_ids=ids.npy', "
                      "'--input', 'attention_mask=mask.npy', '-o', 'o.npz']; runpy.run_path('run_scc.py', run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = np.load(tmp_path / "o.npz")
    assert rel_err(out[compiled.output_names[0]], reference) <= 1e-4


def test_torch_compile_equals_eager(minilm, minilm_inputs, reference, rel_err):
    ids, mask = minilm_inputs
    fast = torch.compile(minilm, backend="sparsecc")
    with torch.no_grad():
        out = fast(ids, mask)
    assert rel_err(out.numpy(), reference) <= 1e-4
