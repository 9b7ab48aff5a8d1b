"""Speed benchmarks: sparsecc against PyTorch eager, torch.compile, ONNX Runtime and TVM's default pipeline,
measured in one process and one run. ``python -m benchmarks.run --help``."""
