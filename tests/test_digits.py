"""A CNN trained in-test on sklearn's real digits: torch.export and torch.compile paths vs eager."""
from __future__ import annotations

import pytest
import torch

import sparsecc
from sparsecc.models.digits import accuracy

pytestmark = pytest.mark.xdist_group("digits")


def test_export_path_keeps_accuracy(digits, rel_err):
    model, x, y = digits
    with torch.no_grad():
        ref = model(x)
    batch = torch.export.Dim("batch", max=4096)
    cm = sparsecc.compile(model, (x[:4],), target="x86", dynamic_shapes={"x": {0: batch}})
    out = cm(x.numpy())
    assert rel_err(out, ref.numpy()) <= 1e-4
    assert accuracy(out, y) == accuracy(ref, y) > 0.9
    ops = [n.op for n in cm.graph.nodes]
    assert "batch_norm" not in ops  # folded into the convolutions
    assert ops.count("conv") == 4 and ops.count("linear") == 2  # DigitsCNN: conv, depthwise, pointwise, conv


def test_torch_compile_equals_eager(digits, rel_err):
    model, x, _ = digits
    with torch.no_grad():
        ref = model(x[:32])
        out = torch.compile(model, backend="sparsecc")(x[:32])
    assert rel_err(out, ref) <= 1e-4
