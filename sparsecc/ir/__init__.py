"""The sparsecc IR: typed graph, canonical op set, verifier, printer, serialization."""
from sparsecc.ir.graph import DTYPES, Dim, Encoding, Graph, Node, Param, TensorType, dtype_name
from sparsecc.ir.ops import OPS, OpSchema
from sparsecc.ir.verify import verify

__all__ = ["DTYPES", "Dim", "Encoding", "Graph", "Node", "OPS", "OpSchema", "Param", "TensorType", "dtype_name",
           "verify"]
