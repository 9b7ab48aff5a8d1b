"""The torch frontend: torch.export programs and dynamo fx graphs -> sparsecc IR.

    graph = import_module(model, example_inputs, dynamic_shapes=None)   # torch.export, eval mode, no grad
    graph = import_exported_program(ep)                                 # an ExportedProgram (e.g. from .pt2)
    graph, runtime_idx = import_dynamo_graph(gm, example_inputs)        # a torch.compile backend's graph

Modules: ``export`` (entry points, decomposition table), ``dynamo``, ``importer`` (the fx walk),
``symbols`` (SymInt -> IR dims), ``converters/`` (one converter per aten op, one registry).
"""
from .dynamo import import_dynamo_graph
from .export import import_exported_program, import_module

__all__ = ["import_dynamo_graph", "import_exported_program", "import_module"]
