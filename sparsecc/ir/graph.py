"""The sparsecc graph IR: a tiny typed structure, in the spirit of torch.fx's Graph/Node.

* ``TensorType``: shape (ints, or symbol names such as ``"batch"``) and a dtype name.
* ``Param``: a constant (weights, small constants) as a numpy array plus an ``Encoding``
  that says how the array is stored (dense here; quantized / N:M / factored later).
* ``Node``: one canonical op (see ``sparsecc.ir.ops``), named inputs and outputs, attributes,
  and ``source``: where it came from (ONNX node, aten op + stack), for error messages.
* ``Graph``: inputs, nodes in topological order, outputs, the type of every value and the params.

Values are referred to by name. An empty input name means "optional input absent".
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable, Union

import numpy as np

from sparsecc.ir.layouts import logical_shape

Dim = Union[int, str]
"""A dimension: a static size, or a symbol / product of symbols like ``"batch"`` or ``"batch*seq"``."""

DTYPES = (
    "float32", "float64", "float16", "bfloat16",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool",
)


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; expected one of {DTYPES}")
        object.__setattr__(self, "shape", tuple(int(d) if not isinstance(d, str) else d for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"


@dataclass
class Encoding:
    """How a param's array is stored. ``kind='dense'`` is a plain array; other kinds add ``meta``."""

    kind: str = "dense"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Param:
    data: np.ndarray
    encoding: Encoding = field(default_factory=Encoding)

    @property
    def type(self) -> TensorType:
        return TensorType(tuple(self.data.shape), dtype_name(self.data.dtype))

    @property
    def logical_shape(self) -> tuple[int, ...]:
        """The shape the param stands for: its array may be stored packed (``sparsecc.ir.layouts``)."""
        return logical_shape(tuple(self.data.shape), self.encoding.meta.get("layout"))


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    source: str = ""

    def __str__(self) -> str:
        attrs = ", ".join(f"{k}={v!r}" for k, v in self.attrs.items())
        ins = ", ".join(f"%{i}" if i else "None" for i in self.inputs)
        outs = ", ".join(f"%{o}" for o in self.outputs)
        return f"{outs} = {self.op}({ins}{', ' if attrs and ins else ''}{attrs})"


@dataclass
class Graph:
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    types: dict[str, TensorType] = field(default_factory=dict)
    params: dict[str, Param] = field(default_factory=dict)
    name: str = "main"

    # ---- construction -------------------------------------------------------------------
    def fresh_name(self, base: str) -> str:
        """A value or param name not used yet, derived from ``base``."""
        base = base or "v"
        if base not in self.types:
            return base
        for i in itertools.count(1):
            name = f"{base}_{i}"
            if name not in self.types:
                return name
        raise AssertionError("unreachable")

    def add_input(self, name: str, ttype: TensorType) -> str:
        self.types[name] = ttype
        self.inputs.append(name)
        return name

    def add_param(self, name: str, data: np.ndarray, encoding: Encoding | None = None) -> str:
        name = self.fresh_name(name)
        # (np.ascontiguousarray would turn a 0-d array into a 1-d one)
        param = Param(np.asarray(data, order="C"), encoding or Encoding())
        self.params[name] = param
        self.types[name] = param.type
        return name

    def add_node(self, op: str, inputs: Iterable[str], out_types: Iterable[TensorType], attrs: dict | None = None,
                 name: str = "", source: str = "", out_names: Iterable[str] | None = None) -> list[str]:
        """Appends a node and returns its output value names (fresh ones unless ``out_names`` is given)."""
        out_types = list(out_types)
        base = name or op
        names = list(out_names) if out_names is not None else [
            self.fresh_name(base if len(out_types) == 1 else f"{base}_{i}") for i in range(len(out_types))]
        for n, t in zip(names, out_types):
            self.types[n] = t
        self.nodes.append(Node(op, list(inputs), names, dict(attrs or {}), name or names[0], source))
        return names

    # ---- queries ------------------------------------------------------------------------
    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs}

    def users(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def copy(self) -> "Graph":
        """A deep copy of the structure that shares the (immutable by convention) param arrays."""
        g = Graph(list(self.inputs), list(self.outputs), copy.deepcopy(self.nodes), dict(self.types), {}, self.name)
        g.params = {k: Param(p.data, copy.deepcopy(p.encoding)) for k, p in self.params.items()}
        return g

    def __str__(self) -> str:
        from sparsecc.ir.printer import format_graph

        return format_graph(self)


_NP_NAMES = {np.dtype(np.bool_): "bool"}


def dtype_name(dtype: Any) -> str:
    """The IR dtype name of a numpy or torch dtype (or a name already)."""
    if isinstance(dtype, str) and dtype in DTYPES:
        return dtype
    text = str(dtype)
    if text.startswith("torch."):
        text = text[len("torch."):]
        return {"bool": "bool", "float": "float32", "double": "float64", "half": "float16", "long": "int64",
                "int": "int32"}.get(text, text)
    dt = np.dtype(dtype)
    return _NP_NAMES.get(dt, dt.name)
