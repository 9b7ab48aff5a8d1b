"""torch.export entry points: an ``ExportedProgram`` or an ``nn.Module`` -> sparsecc IR.

Programs are decomposed to core aten, except for ops that map one-to-one onto canonical ops and whose
decompositions would lose structure or precision (``linear`` stays a layer for compression,
``softplus`` would become ``log1p(exp)``, ``scaled_dot_product_attention`` a maze of masks).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from sparsecc.errors import ModelLoadError, UnsupportedOpError
from sparsecc.ir.graph import Graph
from sparsecc.ir.verify import verify

from .importer import Importer
from .symbols import SymbolTable, dim_spec_names

_A = torch.ops.aten
KEPT_OPS = (
    _A.linear.default, _A.matmul.default, _A.scaled_dot_product_attention.default, _A.silu.default,
    _A.hardswish.default, _A.hardsigmoid.default, _A.softplus.default, _A.mish.default, _A.relu6.default,
)
"""Composite ops kept whole: each has a canonical op (or an exact short expansion in a converter)."""


def decomposition_table() -> Any:
    table = torch.export.default_decompositions()
    for op in KEPT_OPS:
        table.pop(op, None)
    return table


def import_exported_program(ep: ExportedProgram, dynamic_shapes: Any = None,
                            frozen_inputs: Mapping[int, torch.Tensor] | None = None) -> Graph:
    """An ExportedProgram -> IR graph: parameters, buffers and constants become params, user inputs graph inputs.

    ``dynamic_shapes`` (the spec given to torch.export) names the symbolic dims; ``frozen_inputs`` maps user-input
    positions to tensors frozen as params instead (the dynamo path's parameters).
    """
    ep = ep.run_decompositions(decomposition_table())
    sig = ep.graph_signature
    for spec in sig.output_specs:
        if spec.kind != OutputKind.USER_OUTPUT:
            raise UnsupportedOpError(f"output kind {spec.kind.name}", spec.arg.name, "",
                                     "the program mutates its state (export the model in eval mode)")
    placeholders = [n for n in ep.graph.nodes if n.op == "placeholder"]
    user_names = [n.name for n, s in zip(placeholders, sig.input_specs) if s.kind == InputKind.USER_INPUT]
    spec_names = dim_spec_names(dynamic_shapes, user_names)
    symbols = SymbolTable()
    imp = Importer(ep.graph_module, symbols)
    frozen = dict(frozen_inputs or {})
    user_index = 0
    for node, spec in zip(placeholders, sig.input_specs):
        if spec.kind == InputKind.USER_INPUT:
            if user_index in frozen:
                imp.add_const(node, frozen[user_index])
            elif isinstance(node.meta.get("val"), torch.Tensor):
                symbols.bind_input(node.name, node.meta["val"].shape, spec_names)
                imp.add_input(node)
            else:
                imp.add_input(node)  # raises: a non-tensor run-time input
            user_index += 1
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            tensor = ep.state_dict.get(spec.target)
            imp.add_const(node, tensor if tensor is not None else ep.constants[spec.target])
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            imp.add_const(node, ep.constants[spec.target])
        else:
            raise UnsupportedOpError(f"input kind {spec.kind.name}", node.name, "", "only tensors are supported")
    graph = imp.run()
    verify(graph)
    return graph


def import_module(model: torch.nn.Module, example_inputs: tuple, dynamic_shapes: Any = None) -> Graph:
    """``torch.export`` of ``model`` in eval mode, without autograd, then ``import_exported_program``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ep = torch.export.export(model, tuple(example_inputs), dynamic_shapes=dynamic_shapes)
    except torch._dynamo.exc.UserError as e:  # bad dynamic_shapes / inputs: the user's problem, one line
        raise ModelLoadError(f"torch.export failed: {str(e).splitlines()[0]}") from None
    finally:
        model.train(was_training)
    return import_exported_program(ep, dynamic_shapes=dynamic_shapes)
