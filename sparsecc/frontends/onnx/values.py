"""What the importer knows about an ONNX value: its IR value, its type, and (for constants and shape tensors)
its contents.

``Known`` holds compile-time contents: a numpy array, of dtype object when some elements are symbolic dims
(the result of ``Shape`` on a tensor with a symbolic batch, and everything computed from it). A known value
becomes an IR param only when a runtime op consumes it; one with symbolic elements cannot (it would need the
dims at run time), which is refused where it happens.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, numpy_helper

from sparsecc.ir.graph import Dim, TensorType

ONNX_DTYPES = {
    TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64", TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16", TensorProto.INT8: "int8", TensorProto.INT16: "int16",
    TensorProto.INT32: "int32", TensorProto.INT64: "int64", TensorProto.UINT8: "uint8", TensorProto.UINT16: "uint16",
    TensorProto.UINT32: "uint32", TensorProto.UINT64: "uint64", TensorProto.BOOL: "bool",
}


def ir_dtype(elem_type: int) -> str | None:
    """The IR dtype of an ONNX element type, None if the IR has no such dtype (string, complex, float8, int4...)."""
    return ONNX_DTYPES.get(elem_type)


def onnx_type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else str(elem_type)


@dataclass
class Known:
    data: np.ndarray
    dtype: str

    def __post_init__(self) -> None:
        if not isinstance(self.data, np.ndarray):  # numpy indexing of object arrays yields bare elements
            self.data = np.asarray(self.data, dtype=object if isinstance(self.data, str) else None)

    @property
    def symbolic(self) -> bool:
        return self.data.dtype == object and any(isinstance(v, str) for v in self.data.flat)

    @property
    def type(self) -> TensorType:
        return TensorType(tuple(self.data.shape), self.dtype)

    def ints(self) -> list[Dim]:
        """The contents as a flat list of ints / symbol names (for shape-like inputs)."""
        return [v if isinstance(v, str) else int(v) for v in self.data.reshape(-1).tolist()]

    def numeric(self) -> np.ndarray:
        """The contents as a plain numpy array of ``dtype`` (only when not symbolic)."""
        return np.asarray(self.data.astype(np_dtype(self.dtype)) if self.data.dtype == object else self.data)


def np_dtype(dtype: str) -> np.dtype:
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def known_from_tensor(tensor: TensorProto) -> Known | None:
    dtype = ir_dtype(tensor.data_type)
    if dtype is None:
        return None
    return Known(np.asarray(numpy_helper.to_array(tensor)), dtype)


def known_array(values, dtype: str) -> Known:
    """A Known from ints / symbols (object dtype if any symbol) or a numeric array."""
    arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if arr.dtype == object and not any(isinstance(v, str) for v in arr.flat):
        arr = arr.astype(np_dtype(dtype))
    return Known(arr, dtype)

