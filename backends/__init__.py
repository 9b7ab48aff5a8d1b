"""Backends: lower the IR to TVM (x86/arm64/cuda) or ONNX."""
