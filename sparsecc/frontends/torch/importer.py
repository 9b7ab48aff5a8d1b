"""Walks a core-aten fx graph (from torch.export) in order and builds the sparsecc IR.

Every fx value maps to one importer value:

* ``Tensor``: an IR value (graph input or node output);
* ``Const``: a compile-time tensor (parameter, buffer, lifted constant, or an op whose inputs are all
  constants, evaluated by torch itself at import). It becomes an IR param only when a node reads it, so
  e.g. ``permute(weight)`` feeding ``linear`` never stores a transposed copy;
* a Python value: ints, floats, lists, dtypes, and sizes (a SymInt becomes an IR dim, ``"128*batch"``);
* a tuple of those for multi-output ops, where an output sparsecc does not compute is ``Unavailable``.

Converters (``converters/``, one registry keyed by aten overload name) see a ``Call``: the node's
arguments bound by schema name, its output types from ``node.meta["val"]``, and ``emit``.
"""
from __future__ import annotations

import operator
import os
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import fx

from sparsecc.errors import UnsupportedOpError
from sparsecc.ir.graph import DTYPES, Graph, TensorType, dtype_name

from .symbols import SymbolError, SymbolTable

FOLD_LIMIT = 1 << 16
"""Ops on constants fold at import when the result has at most this many bytes, or at most
``FOLD_GROWTH`` times the bytes of its inputs (an ``expand`` of a scalar to a big mask stays a node)."""
FOLD_GROWTH = 4

IGNORED = {"aten._assert_tensor_metadata.default", "aten._assert_scalar.default",
           "aten.sym_constrain_range_for_size.default", "aten.sym_constrain_range.default"}
"""Ops that only check things at trace time and produce nothing."""


@dataclass(frozen=True)
class Tensor:
    """An IR value."""
    name: str


class Const:
    """A compile-time tensor; ``name`` is the param name it gets if a node reads it."""

    def __init__(self, data: torch.Tensor, name: str):
        self.data, self.name = data.detach(), name


@dataclass(frozen=True)
class Unavailable:
    """An output of a multi-output op that sparsecc does not compute (e.g. max_pool's indices)."""
    what: str


_TORCH_DIR = os.path.dirname(torch.__file__)


def source_of(node: fx.Node) -> str:
    """``aten.addmm.default at model.py:42``: the aten op and the user code line fx recorded."""
    where = ""
    frames = re.findall(r'File "([^"]+)", line (\d+)', node.meta.get("stack_trace") or "")
    user = [f for f in frames if not f[0].startswith(_TORCH_DIR)] or frames  # the innermost user frame
    if user:
        path, line = user[-1]
        where = f" at {os.path.basename(path)}:{line}"
    return f"{node.target}{where}"


class Importer:
    """Builds one ``Graph`` from one fx graph; ``env`` maps fx nodes to importer values."""

    def __init__(self, gm: fx.GraphModule, symbols: SymbolTable):
        self.gm, self.symbols = gm, symbols
        self.graph = Graph()
        self.env: dict[fx.Node, Any] = {}
        self._params: dict[int, str] = {}  # id(Const) -> its param
        self._scalars: dict[tuple[str, str], str] = {}

    # ---- setup ----------------------------------------------------------------------------------------
    def add_input(self, node: fx.Node) -> None:
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise UnsupportedOpError("placeholder", node.name, "",
                                     f"input of type {type(val).__name__}: only tensor inputs can be run-time inputs")
        ttype = TensorType(self.symbols.shape(val.shape), ir_dtype(val.dtype, node.name, "placeholder"))
        self.env[node] = Tensor(self.graph.add_input(node.name, ttype))

    def add_const(self, node: fx.Node, data: torch.Tensor) -> None:
        self.env[node] = Const(data, node.name)

    # ---- the walk -------------------------------------------------------------------------------------
    def run(self) -> Graph:
        from .converters import CONVERTERS

        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if node not in self.env:
                    raise AssertionError(f"placeholder {node.name} was not bound")
            elif node.op == "get_attr":
                self.add_const(node, getattr(self.gm, node.target))
            elif node.op == "call_function":
                self.env[node] = self._call(node, CONVERTERS)
            elif node.op == "output":
                self._outputs(node)
            else:
                raise UnsupportedOpError(node.op, node.name, source_of(node), "only aten calls are supported")
        return self.graph

    def _call(self, node: fx.Node, converters: dict) -> Any:
        op, source = str(node.target), source_of(node)
        if node.target is operator.getitem:
            whole, index = self.env[node.args[0]], node.args[1]
            value = whole[index]
            if isinstance(value, Unavailable):
                raise UnsupportedOpError(str(node.args[0].target), node.args[0].name, source_of(node.args[0]),
                                         f"output {index} ({value.what}) is not supported")
            return value
        if op in IGNORED:
            return None
        val = node.meta.get("val")
        if isinstance(val, (torch.SymInt, int)) and not isinstance(val, bool):
            try:  # size arithmetic (sym_size, mul of sizes): the traced value is the answer
                return self.symbols.dim(val)
            except SymbolError as e:
                raise UnsupportedOpError(op, node.name, source, str(e)) from None
        if not isinstance(node.target, torch._ops.OpOverload):
            raise UnsupportedOpError(op, node.name, source, "not an aten op")
        args = bind_arguments(node, self.env)
        folded = self._fold(node, args)
        if folded is not None:
            return folded
        convert = converters.get(op)
        if convert is None:
            raise UnsupportedOpError(op, node.name, source, "no converter for this aten op")
        try:
            result = convert(Call(self, node, args))
        except SymbolError as e:
            raise UnsupportedOpError(op, node.name, source, str(e)) from None
        return _wrap(result)

    def _fold(self, node: fx.Node, args: dict[str, Any]) -> Any:
        """Evaluates ``node`` with torch when all its tensor arguments are constants (and sizes static)."""
        if not _constant_arguments(node, args):
            return None
        if torch.Tag.nondeterministic_seeded in node.target.tags:
            return None
        consts = [v for v in torch.utils._pytree.tree_leaves(list(args.values())) if isinstance(v, Const)]
        in_bytes = sum(c.data.numel() * c.data.element_size() for c in consts)
        val = node.meta.get("val")
        outs = val if isinstance(val, (tuple, list)) else [val]
        if not all(isinstance(o, torch.Tensor) for o in outs):
            return None
        out_bytes = sum(o.numel() * o.element_size() for o in outs)
        if out_bytes > max(FOLD_LIMIT, FOLD_GROWTH * in_bytes):
            return None
        real = _replace_nodes(node.args, self.env)
        kwargs = _replace_nodes(node.kwargs, self.env)
        with torch.no_grad():
            result = node.target(*real, **kwargs)
        if isinstance(result, torch.Tensor):
            return Const(result, node.name)
        return tuple(Const(r, f"{node.name}_{i}") for i, r in enumerate(result))

    def _outputs(self, node: fx.Node) -> None:
        for i, arg in enumerate(torch.utils._pytree.tree_leaves(node.args[0])):
            value = self.env.get(arg) if isinstance(arg, fx.Node) else arg
            if isinstance(value, Const):
                value = Tensor(self.param(value))
            if not isinstance(value, Tensor):
                raise UnsupportedOpError("output", f"output {i}", "",
                                         f"a model output of type {type(value).__name__} (only tensors)")
            self.graph.outputs.append(value.name)

    # ---- params ---------------------------------------------------------------------------------------
    def param(self, const: Const) -> str:
        """The IR param holding ``const`` (created on first use; a copy, so later in-place updates of the
        model's tensors never reach the graph)."""
        key = id(const)
        if key not in self._params:
            data = const.data.detach().cpu().contiguous()
            self._params[key] = self.graph.add_param(const.name, np.array(data.numpy(), copy=True))
        return self._params[key]

    def scalar(self, value: bool | int | float, dtype: str) -> str:
        """A shared 0-d param holding ``value`` as ``dtype``."""
        key = (repr(value), dtype)
        if key not in self._scalars:
            from sparsecc.interpreter.torch_ops import torch_dtype

            data = torch.tensor(value, dtype=torch_dtype(dtype))
            self._scalars[key] = self.graph.add_param(f"c_{dtype}", data.numpy())
        return self._scalars[key]


def _constant_arguments(node: fx.Node, args: dict[str, Any]) -> bool:
    """True if no argument is a run-time tensor or a symbolic size (strings are fine where the schema takes
    a string option, like ``approximate="tanh"``)."""
    schema = {a.name: a for a in node.target._schema.arguments}
    for name, value in args.items():
        leaves = torch.utils._pytree.tree_leaves(value)
        if any(isinstance(v, (Tensor, Unavailable)) for v in leaves):
            return False
        if any(isinstance(v, str) for v in leaves) and "str" not in str(schema[name].type):
            return False  # a symbolic size
    return True


def _replace_nodes(tree: Any, env: dict[fx.Node, Any]) -> Any:
    def value(v: Any) -> Any:
        if isinstance(v, fx.Node):
            v = env[v]
        return v.data if isinstance(v, Const) else v
    return torch.utils._pytree.tree_map(value, tree)


def _wrap(result: Any) -> Any:
    if isinstance(result, str):
        return Tensor(result)
    if isinstance(result, (tuple, list)):
        return tuple(_wrap(r) for r in result)
    return result


def bind_arguments(node: fx.Node, env: dict[fx.Node, Any]) -> dict[str, Any]:
    """The node's arguments by schema name (defaults filled in), fx nodes replaced by importer values."""
    out: dict[str, Any] = {}
    args, kwargs = node.args, node.kwargs
    for i, a in enumerate(node.target._schema.arguments):
        if i < len(args) and not a.kwarg_only:
            v = args[i]
        elif a.name in kwargs:
            v = kwargs[a.name]
        elif a.has_default_value():
            v = a.default_value
        else:
            v = None
        out[a.name] = torch.utils._pytree.tree_map(lambda x: env[x] if isinstance(x, fx.Node) else x, v)
    return out


def ir_dtype(dtype: torch.dtype, node: str, op: str) -> str:
    name = dtype_name(dtype)
    if name not in DTYPES:
        raise UnsupportedOpError(op, node, "", f"dtype {dtype} has no IR equivalent")
    return name


class Call:
    """One aten call as a converter sees it."""

    def __init__(self, imp: Importer, node: fx.Node, args: dict[str, Any]):
        self.imp, self.node, self.args = imp, node, args
        self.op, self.name, self.source = str(node.target), node.name, source_of(node)

    def __getitem__(self, key: str) -> Any:
        return self.args[key]

    def unsupported(self, detail: str) -> UnsupportedOpError:
        return UnsupportedOpError(self.op, self.name, self.source, detail)

    # -- types
    def out_type(self, i: int = 0) -> TensorType:
        val = self.node.meta["val"]
        if isinstance(val, (tuple, list)):
            val = val[i]
        return TensorType(self.imp.symbols.shape(val.shape), ir_dtype(val.dtype, self.name, self.op))

    def type(self, value: Any) -> TensorType:
        if isinstance(value, Tensor):
            return self.imp.graph.types[value.name]
        if isinstance(value, Const):
            return TensorType(tuple(value.data.shape), ir_dtype(value.data.dtype, self.name, self.op))
        raise self.unsupported(f"expected a tensor, got {type(value).__name__}")

    def dtype(self, value: Any) -> str:
        return self.type(value).dtype

    def rank(self, value: Any) -> int:
        return self.type(value).rank

    # -- values
    def ir(self, value: Any) -> str:
        """The IR value name of a tensor argument (a constant becomes a param)."""
        if isinstance(value, Tensor):
            return value.name
        if isinstance(value, Const):
            return self.imp.param(value)
        raise self.unsupported(f"expected a tensor, got {type(value).__name__}")

    def operand(self, value: Any, dtype: str) -> str:
        """A tensor argument or Python scalar as an IR value of ``dtype`` (cast if needed)."""
        if isinstance(value, (bool, int, float)):
            return self.imp.scalar(value, dtype)
        if isinstance(value, str):
            raise self.unsupported(f"a symbolic size ({value}) used as a tensor value")
        return self.cast(self.ir(value), dtype)

    def cast(self, name: str, dtype: str) -> str:
        t = self.imp.graph.types[name]
        if t.dtype == dtype:
            return name
        return self.emit("cast", [name], TensorType(t.shape, dtype), to=dtype)

    def scalar(self, value: bool | int | float, dtype: str) -> str:
        return self.imp.scalar(value, dtype)

    def const(self, data: np.ndarray, name: str) -> str:
        return self.imp.param(Const(torch.from_numpy(np.ascontiguousarray(data)), name))

    def emit(self, op: str, inputs: Sequence[str], out_type: TensorType | Sequence[TensorType], **attrs: Any) -> Any:
        """Adds a node; returns its output name (or names, for a list of types)."""
        types = [out_type] if isinstance(out_type, TensorType) else list(out_type)
        outs = self.imp.graph.add_node(op, inputs, types, attrs, name=self.imp.graph.fresh_name(self.name),
                                       source=self.source)
        return outs[0] if isinstance(out_type, TensorType) else outs

    def axis(self, axis: int, rank: int) -> int:
        if not -max(rank, 1) <= axis < max(rank, 1):
            raise self.unsupported(f"axis {axis} is out of range for rank {rank}")
        return axis + rank if axis < 0 else axis
