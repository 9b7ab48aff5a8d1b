"""Reading an ONNX model: from a path or a ModelProto, validated, then simplified for import.

``load_model`` turns every way a file can be unreadable into a one-line ``ModelLoadError`` naming the path.
``simplify`` is the pre-pass real exported models need: the onnxscript optimizer folds constants and the
Shape->Gather->Concat chains it can, and ONNX shape inference annotates value types. If the optimizer fails on a
model, the model is imported as it was (never lost).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx

from sparsecc.errors import ModelLoadError, UnsupportedOpError

MIN_OPSET, MAX_OPSET = 11, 23
NEWER_VERSIONS = {"Cast": 28, "CastLike": 28, "BitShift": 28, "Mod": 28, "Swish": 24, "QuantizeLinear": 28}
"""Ops whose versions after MAX_OPSET the converters implement (up to this version): Cast/CastLike-25..28 only change
float8 rounding (no IR dtype); BitShift-28 adds signed types (refused); Mod-28 defines fmod=0 on floats;
Swish-24 is new; QuantizeLinear-28 adds 2-bit types."""
OLDER_VERSIONS = {"AveragePool": 7, "Concat": 4, "Conv": 1, "Dropout": 7, "Gemm": 7, "MaxPool": 8, "Softmax": 1,
                  "LogSoftmax": 1, "Unsqueeze": 1, "Squeeze": 1, "Split": 2, "Upsample": 9}
"""Ops whose versions before MIN_OPSET (from this version on) the converters implement: each only lacks
attributes or inputs a later version added (ceil_mode, dilations, optional C, negative axes), so the opset-11
converter reads it correctly (the light model zoo is opset 9)."""


def load_model(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-ish errors, ValueError, ...
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(e).__name__}: {_one_line(e)})") from None
    # No onnx.checker here: exporters write models it rejects that are still well defined (torch.onnx reuses a
    # value name for two producers; the importer, walking in order, resolves each use to the latest one).
    if not proto.graph.output or not proto.opset_import:
        raise ModelLoadError(f"{path}: not a readable ONNX model (no graph outputs or no opset)")
    return proto


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def default_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain (ai.onnx) opset version."""
    versions = {o.domain: o.version for o in model.opset_import}
    version = versions.get("", versions.get("ai.onnx"))
    if version is None:
        raise UnsupportedOpError("opset", detail="the model imports no default-domain (ai.onnx) opset")
    return version


def converter_opset(op_type: str, opset: int) -> int:
    """The opset (within MIN_OPSET..MAX_OPSET) whose version of ``op_type`` the converters implement for a model
    of ``opset``: the opset itself when in range; outside it, the nearest supported opset, allowed only when the
    op's definition is the same there: the same version, or a version that only widened the type constraints
    (identical attributes with defaults, inputs, outputs and documentation; e.g. Reshape-25 vs Reshape-23).

    Raises UnsupportedOpError when the op's definition at ``opset`` is not one the converters know."""
    if MIN_OPSET <= opset <= MAX_OPSET:
        return opset
    try:
        version = onnx.defs.get_schema(op_type, opset, "").since_version
    except onnx.defs.SchemaError:
        version = None
    if version is not None and opset > MAX_OPSET and version <= NEWER_VERSIONS.get(op_type, 0):
        return opset
    if version is not None and opset < MIN_OPSET and version >= OLDER_VERSIONS.get(op_type, MIN_OPSET + 1):
        return MIN_OPSET
    edge = min(max(opset, MIN_OPSET), MAX_OPSET)
    try:
        here, there = onnx.defs.get_schema(op_type, opset, ""), onnx.defs.get_schema(op_type, edge, "")
    except onnx.defs.SchemaError:
        here = there = None
    if here is None or (here.since_version != there.since_version and _signature(here) != _signature(there)):
        version = here.since_version if here is not None else "unknown"
        raise UnsupportedOpError(op_type, detail=f"{op_type} as defined in opset {opset} (version {version}) "
                                 f"differs from its versions in opsets {MIN_OPSET}..{MAX_OPSET}")
    return edge


def _signature(schema: onnx.defs.OpSchema) -> tuple:
    return (sorted((k, str(v.default_value)) for k, v in schema.attributes.items()),
            [(i.name, i.option) for i in schema.inputs], [(o.name, o.option) for o in schema.outputs], schema.doc)


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding (onnxscript optimizer) + shape inference; the model unchanged where either fails."""
    try:
        import onnxscript.optimizer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = onnxscript.optimizer.optimize(model)
    except Exception:  # the optimizer is best effort: the importer handles the un-optimized graph too
        pass
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        pass
    return model
