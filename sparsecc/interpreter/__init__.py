"""The torch interpreter: reference semantics of the IR, differentiable for calibration and Hessians."""
from sparsecc.interpreter.interpreter import Interpreter, graph_param_tensor, param_tensor, run_graph
from sparsecc.interpreter.torch_ops import TORCH_OPS, torch_dtype

__all__ = ["Interpreter", "TORCH_OPS", "graph_param_tensor", "param_tensor", "run_graph", "torch_dtype"]
