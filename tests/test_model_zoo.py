"""The onnx package's light model zoo (real architectures, constant weights) through sparsecc -> x86,
compared with onnxruntime on the same seeded input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import sparsecc
from sparsecc.fidelity import relative_diff as relative_error

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = ["resnet50", "densenet121", "inception_v1", "inception_v2", "vgg19", "shufflenet", "squeezenet",
          "bvlc_alexnet", "zfnet512"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_light_model_matches_onnxruntime(name):
    import onnxruntime as ort

    path = LIGHT / f"light_{name}.onnx"
    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in model.graph.input:
        if inp.name not in inits:
            shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    refs = sess.run(None, feeds)
    cm = sparsecc.compile(str(path), target="x86")
    outs = cm(*[feeds[n] for n in cm.input_names])
    outs = outs if isinstance(outs, tuple) else (outs,)
    assert len(outs) == len(refs)
    for out, ref in zip(outs, refs):
        assert out.shape == ref.shape
        assert relative_error(out, ref) <= 1e-4, f"{name}: relative error {relative_error(out, ref):.2e}"
