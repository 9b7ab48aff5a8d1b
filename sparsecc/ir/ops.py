"""The canonical op set: every op the IR may contain, with its inputs, attributes and meaning.

Frontends normalize aten/ONNX variety into these ops (e.g. Gemm with trans flags, MatMul+Add on a
constant weight -> ``linear``; Flatten/Squeeze/Unsqueeze -> ``reshape``); backends and the
interpreter implement exactly these. This file is the one place that documents them.

Conventions (all ops):
* Broadcasting follows numpy/ONNX multidirectional broadcasting.
* Axes are non-negative (frontends normalize negative axes).
* Shapes in attributes (``reshape.shape``, ``expand.shape``) are fully resolved: no ``-1`` or ``0``
  placeholders; a dim may be a symbol name such as ``"batch"``.
* ``pads`` lists begin pads for every spatial axis, then end pads (ONNX layout).
* Integer ``div`` truncates toward zero (C/ONNX); float ``div`` is true division.
* Dtype names are those of ``sparsecc.ir.graph.DTYPES``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REQUIRED = object()  # marks an attribute without a default


@dataclass(frozen=True)
class OpSchema:
    name: str
    inputs: tuple[str, ...]
    """Input names; a trailing ``?`` marks an optional input, ``*`` a variadic one (last only)."""
    attrs: dict[str, Any] = field(default_factory=dict)
    """Attribute name -> default (``REQUIRED`` if none)."""
    outputs: int | str = 1
    """Number of outputs, or the name of a list attribute whose length gives it."""
    doc: str = ""
    compressible_weight: int | None = None
    """Index of the input that holds a weight compression passes may re-encode."""

    def num_outputs(self, attrs: dict[str, Any]) -> int:
        return self.outputs if isinstance(self.outputs, int) else len(attrs[self.outputs])

    def min_inputs(self) -> int:
        return sum(1 for i in self.inputs if not i.endswith(("?", "*")))

    def max_inputs(self) -> float:
        return float("inf") if self.inputs and self.inputs[-1].endswith("*") else len(self.inputs)


OPS: dict[str, OpSchema] = {}


def _op(name: str, inputs: tuple[str, ...], doc: str, outputs: int | str = 1, compressible_weight: int | None = None,
        **attrs: Any) -> None:
    OPS[name] = OpSchema(name, inputs, attrs, outputs, doc, compressible_weight)


# ---- elementwise unary: y = f(x), same shape and dtype (predicates give bool) ------------------------
UNARY = {
    "neg": "-x", "abs": "|x|", "exp": "e^x", "log": "ln x", "sqrt": "sqrt x", "rsqrt": "1/sqrt x",
    "reciprocal": "1/x", "sin": "sin", "cos": "cos", "tan": "tan", "asin": "asin", "acos": "acos", "atan": "atan",
    "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "asinh": "asinh", "acosh": "acosh", "atanh": "atanh",
    "sigmoid": "1/(1+e^-x)", "relu": "max(x, 0)", "erf": "error function", "floor": "floor", "ceil": "ceil",
    "round": "round half to even", "sign": "sign (-1, 0, 1)", "logical_not": "not (bool)",
    "bitwise_not": "~x (integers)", "isnan": "x is NaN (bool)", "silu": "x*sigmoid(x)", "mish": "x*tanh(softplus(x))",
    "softplus": "ln(1+e^x)", "softsign": "x/(1+|x|)", "hard_swish": "x*relu6(x+3)/6",
}
for _name, _doc in UNARY.items():
    _op(_name, ("x",), _doc)
_op("isinf", ("x",), "x is +-inf (bool), filtered by detect_positive/detect_negative", detect_positive=True,
    detect_negative=True)
_op("gelu", ("x",), "x*Phi(x); approximate='tanh' uses the tanh formula", approximate="none")
_op("leaky_relu", ("x",), "x if x>=0 else alpha*x", alpha=0.01)
_op("elu", ("x",), "x if x>0 else alpha*(e^x-1)", alpha=1.0)
_op("celu", ("x",), "max(0,x) + min(0, alpha*(e^(x/alpha)-1))", alpha=1.0)
_op("selu", ("x",), "gamma*(x if x>0 else alpha*(e^x-1))", alpha=1.6732632423543772, gamma=1.0507009873554805)
_op("hard_sigmoid", ("x",), "max(0, min(1, alpha*x+beta))", alpha=0.2, beta=0.5)
_op("thresholded_relu", ("x",), "x if x>alpha else 0", alpha=1.0)
_op("clip", ("x",), "min(max(x, min), max); a None bound is absent", min=None, max=None)

# ---- elementwise binary with broadcasting ------------------------------------------------------------
BINARY = {
    "add": "a+b", "sub": "a-b", "mul": "a*b", "div": "a/b (integers: truncate toward zero)", "pow": "a^b",
    "maximum": "max(a,b)", "minimum": "min(a,b)", "equal": "a==b", "less": "a<b", "less_equal": "a<=b",
    "greater": "a>b", "greater_equal": "a>=b", "logical_and": "a and b", "logical_or": "a or b",
    "logical_xor": "a xor b", "bitwise_and": "a&b", "bitwise_or": "a|b", "bitwise_xor": "a^b",
    "bitshift_left": "a<<b (unsigned)", "bitshift_right": "a>>b (unsigned)",
    "prelu": "a if a>=0 else b*a (b broadcast to a)",
}
for _name, _doc in BINARY.items():
    _op(_name, ("a", "b"), _doc)
_op("mod", ("a", "b"), "fmod=False: remainder with the sign of b (Python %); fmod=True: sign of a (C fmod)", fmod=False)
_op("where", ("cond", "a", "b"), "a where cond else b, broadcasting all three")
_op("cast", ("x",), "convert to dtype `to` (float->int truncates toward zero, like C)", to=REQUIRED)

# ---- reductions ---------------------------------------------------------------------------------------
for _name in ("sum", "mean", "max", "min", "prod"):
    _op(f"reduce_{_name}", ("x",), f"{_name} over `axes` (None: all axes)", axes=None, keepdims=True)
for _name in ("argmax", "argmin"):
    _op(_name, ("x",), f"int64 index of the {_name[3:]} along `axis`; ties pick the first unless select_last_index",
        axis=0, keepdims=True, select_last_index=False)
_op("cumsum", ("x",), "cumulative sum along `axis`", axis=REQUIRED, exclusive=False, reverse=False)

# ---- linear algebra -----------------------------------------------------------------------------------
_op("matmul", ("a", "b"), "numpy matmul with batch broadcasting")
_op("linear", ("x", "weight", "bias?"), "x @ weight^T + bias; weight is [out, in]", compressible_weight=1)
_op("einsum", ("operands*",), "numpy einsum with `equation`", equation=REQUIRED)

# ---- convolution and pooling (NC + spatial layout, 1-3 spatial dims) -------------------------------
_op("conv", ("x", "weight", "bias?"), "cross-correlation; weight [Cout, Cin/groups, *kernel]",
    compressible_weight=1, strides=REQUIRED, pads=REQUIRED, dilations=REQUIRED, groups=1)
_op("conv_transpose", ("x", "weight", "bias?"),
    "transposed convolution; weight [Cin, Cout/groups, *kernel]; pads remove output border",
    strides=REQUIRED, pads=REQUIRED, dilations=REQUIRED, output_padding=REQUIRED, groups=1)
_op("max_pool", ("x",), "max over windows; padding never wins", kernel=REQUIRED, strides=REQUIRED, pads=REQUIRED,
    dilations=REQUIRED, ceil_mode=False)
_op("avg_pool", ("x",), "mean over windows; count_include_pad counts zero padding in the divisor",
    kernel=REQUIRED, strides=REQUIRED, pads=REQUIRED, ceil_mode=False, count_include_pad=False)

# ---- normalization ------------------------------------------------------------------------------------
_op("batch_norm", ("x", "scale", "bias", "mean", "var"), "inference batch norm over channel axis 1", epsilon=1e-5)
_op("layer_norm", ("x", "weight?", "bias?"), "normalize over axes [axis, rank); weight/bias span those axes",
    axis=REQUIRED, epsilon=1e-5)
_op("group_norm", ("x", "weight", "bias"), "normalize over groups of channels (axis 1); weight/bias per channel",
    num_groups=REQUIRED, epsilon=1e-5)
_op("softmax", ("x",), "softmax along `axis`", axis=REQUIRED)
_op("log_softmax", ("x",), "log of softmax along `axis`", axis=REQUIRED)

# ---- indexing and data movement -----------------------------------------------------------------------
_op("gather", ("data", "indices"), "take along `axis` (ONNX Gather; negative indices count from the end)", axis=0)
_op("gather_elements", ("data", "indices"), "ONNX GatherElements / torch.gather along `axis`", axis=0)
_op("slice", ("x",), "x[start:end:step] on each of `axes`; ends are clamped like Python slicing",
    starts=REQUIRED, ends=REQUIRED, axes=REQUIRED, steps=REQUIRED)
_op("concat", ("inputs*",), "concatenate along `axis`", axis=REQUIRED)
_op("split", ("x",), "split along `axis` into pieces of `sizes`", outputs="sizes", axis=REQUIRED, sizes=REQUIRED)
_op("reshape", ("x",), "same data, resolved `shape`", shape=REQUIRED)
_op("transpose", ("x",), "permute axes by `perm`", perm=REQUIRED)
_op("expand", ("x",), "broadcast x to `shape`", shape=REQUIRED)
_op("tile", ("x",), "repeat x `repeats` times along each axis", repeats=REQUIRED)
_op("pad", ("x",), "pad with mode constant (value) | reflect | edge; negative pads crop", pads=REQUIRED,
    mode="constant", value=0.0)
_op("resize", ("x",), "resample spatial axes to `sizes` (mode nearest|linear; coordinate modes as in ONNX Resize)",
    sizes=REQUIRED, mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")

OP_NAMES = tuple(sorted(OPS))
