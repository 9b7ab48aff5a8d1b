"""Frontends: capture torch (torch.export / dynamo fx) and ONNX models into the sparsecc IR."""
