"""MiniLM for CUDA: built here for sm_80 and sm_90 (nvcc compiles every kernel); run and compared with PyTorch
only where a GPU is present (none on the development and CI machines: those checks skip with the reason)."""
from __future__ import annotations

import shutil

import pytest
import torch

import sparsecc
from conftest import assert_cuda_compiles

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("minilm")]


def has_gpu() -> bool:
    import tvm

    return tvm.cuda(0).exist


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_minilm_builds_for_cuda(arch, minilm, minilm_inputs, rel_err, tmp_path):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed: CUDA code cannot be built here")
    from sparsecc.backends.tvm import build

    ids, mask = minilm_inputs
    cm = sparsecc.compile(minilm, (ids[:1], mask[:1]), target=f"cuda:{arch}")
    cm.save(tmp_path / "minilm_cuda.scc")
    loaded = sparsecc.load(tmp_path / "minilm_cuda.scc")
    assert loaded.manifest["target"]["name"] == "cuda" and loaded.manifest["target"]["arch"] == arch
    assert_cuda_compiles(build(cm.graph, f"cuda:{arch}"), arch)
    if not has_gpu():
        pytest.skip("built and nvcc-compiled; no GPU here to run it on")
    with torch.no_grad():
        ref = minilm(ids[:1], mask[:1]).numpy()
    assert rel_err(loaded(ids[:1].numpy(), mask[:1].numpy()), ref) <= 1e-4
