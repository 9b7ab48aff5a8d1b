"""The shared table of single-node op cases: every canonical op, compared by each backend with the torch interpreter.

Each case is a single-node graph with small random inputs (odd shapes, batch 1 and > 1, broadcasting, several
attribute variants); weights of conv/linear/norm ops are params, so the param path is covered too. Backend tests
(``test_tvm_backend.py``, ``test_onnx_backend.py``) parametrize over ``CASES`` and compare with
``assert_matches_reference``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sparsecc.interpreter.torch_ops import TORCH_OPS
from sparsecc.ir.graph import Graph, TensorType, dtype_name

RNG = np.random.default_rng(0)


def f(*shape, dtype="float32"):
    return RNG.standard_normal(shape).astype(dtype)


def pos(*shape, dtype="float32"):
    return (RNG.random(shape) * 3 + 0.1).astype(dtype)


def uni(lo, hi, *shape, dtype="float32"):
    return RNG.uniform(lo, hi, shape).astype(dtype)


def ints(lo, hi, *shape, dtype="int32"):
    return RNG.integers(lo, hi, shape).astype(dtype)


def nonzero_ints(lo, hi, *shape, dtype="int32"):
    a = ints(lo, hi, *shape, dtype=dtype)
    a[a == 0] = 1
    return a


def bools(*shape):
    return RNG.random(shape) < 0.5


def ties(*shape):
    """Small integer-valued floats: equalities and ties happen."""
    return RNG.integers(-2, 3, shape).astype("float32")


@dataclass
class Case:
    op: str
    inputs: list  # np.ndarray or None (absent optional input)
    attrs: dict = field(default_factory=dict)
    params: tuple = ()  # indices of inputs that are graph params instead of graph inputs
    id: str = ""
    rtol: float = 1e-5
    atol: float = 1e-6


def single_node_graph(case: Case) -> Graph:
    """A graph with one node: inputs (or params) -> op -> outputs, output types from the torch reference."""
    g = Graph(name=case.op)
    names = []
    for i, a in enumerate(case.inputs):
        if a is None:
            names.append("")
        elif i in case.params:
            names.append(g.add_param(f"p{i}", a))
        else:
            names.append(g.add_input(f"x{i}", TensorType(a.shape, dtype_name(a.dtype))))
    with torch.no_grad():
        outs = TORCH_OPS[case.op](*[None if a is None else torch.from_numpy(np.array(a)) for a in case.inputs],
                                  **case.attrs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    g.outputs = g.add_node(case.op, names, [TensorType(tuple(o.shape), dtype_name(o.dtype)) for o in outs],
                           case.attrs, name=case.op)
    return g


def graph_inputs(case: Case) -> list[np.ndarray]:
    return [a for i, a in enumerate(case.inputs) if a is not None and i not in case.params]


# ---- the cases ----------------------------------------------------------------------------------------------
CASES: list[Case] = []


def add(op, inputs, attrs=None, params=(), id="", **tol):
    CASES.append(Case(op, list(inputs), dict(attrs or {}), tuple(params), id, **tol))


# unary float math (each on a batch>1 odd shape and a batch-1 shape)
_DOMAIN = {"log": pos, "sqrt": pos, "rsqrt": pos, "reciprocal": pos, "asin": lambda *s: uni(-0.95, 0.95, *s),
           "acos": lambda *s: uni(-0.95, 0.95, *s), "atanh": lambda *s: uni(-0.95, 0.95, *s),
           "acosh": lambda *s: uni(1.05, 4.0, *s), "tan": lambda *s: uni(-1.4, 1.4, *s)}
for _op in ("neg", "abs", "exp", "log", "sqrt", "rsqrt", "reciprocal", "sin", "cos", "tan", "asin", "acos", "atan",
            "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "sigmoid", "relu", "erf", "floor", "ceil", "sign",
            "silu", "mish", "softplus", "softsign", "hard_swish"):
    gen = _DOMAIN.get(_op, lambda *s: f(*s) * 3)
    add(_op, [gen(2, 3, 5)], id="f32")
    add(_op, [gen(1, 7)], id="batch1")
add("softplus", [np.array([-30, -5, 0, 5, 19.9, 20.1, 40, 100], "float32")], id="threshold")
add("mish", [np.array([-30, -5, 0, 5, 19.9, 20.1, 40, 100], "float32")], id="threshold")
add("exp", [f(3, 4, dtype="float64")], id="f64")
add("sqrt", [ints(0, 50, 3, 4)], id="int_promotes")
add("tanh", [f(3, 5, dtype="float16")], id="f16", rtol=1e-3, atol=1e-3)
add("add", [f(3, 5, dtype="float16"), f(5, dtype="float16")], id="f16")
add("softmax", [f(3, 5, dtype="float16")], {"axis": 1}, id="f16", rtol=1e-3, atol=1e-3)
add("reduce_sum", [f(3, 5, dtype="float16")], {"axes": [1]}, id="f16", rtol=1e-3, atol=1e-3)
add("layer_norm", [f(3, 5, dtype="float16")], {"axis": 1}, id="f16", rtol=2e-3, atol=2e-3)
add("sigmoid", [f(2, 5) * 40], id="saturating")
add("relu", [np.array([-1.0, np.nan, 0.0, 2.0, -np.inf], "float32")], id="nan")
for _op in ("neg", "abs", "relu", "sign", "floor", "ceil", "round"):
    add(_op, [ints(-9, 9, 3, 5)], id="int32")
add("abs", [ints(-9, 9, 4, dtype="int64")], id="int64")
add("sign", [np.array([-2.0, -0.0, 0.0, 3.0, np.nan], "float32")], id="zeros_nan")
add("round", [np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49, 3.7, -3.7, 1e7 + 0.5], "float32")], id="half_even")
add("round", [f(2, 3, 5) * 4], id="random")
add("round", [np.array([0.5, 1.5, 2.5, -2.5], "float64")], id="f64")
add("logical_not", [bools(3, 4)], id="bool")
add("logical_not", [ints(-2, 3, 3, 4)], id="int")
add("bitwise_not", [ints(-100, 100, 3, 4)], id="int32")
add("bitwise_not", [ints(0, 255, 3, 4, dtype="uint8")], id="uint8")
add("bitwise_not", [bools(5)], id="bool")
add("isnan", [np.array([[1.0, np.nan, np.inf], [-np.inf, 0.0, np.nan]], "float32")], id="f32")
add("isnan", [ints(0, 5, 2, 3)], id="int")
_INF = np.array([[1.0, np.inf, -np.inf], [np.nan, -0.0, np.inf]], "float32")
for _pos_flag in (True, False):
    for _neg_flag in (True, False):
        add("isinf", [_INF], {"detect_positive": _pos_flag, "detect_negative": _neg_flag},
            id=f"pos{int(_pos_flag)}neg{int(_neg_flag)}")
add("gelu", [f(2, 3, 5) * 3], id="erf")
add("gelu", [f(2, 3, 5) * 3], {"approximate": "tanh"}, id="tanh")
add("leaky_relu", [f(2, 3, 5)], {"alpha": 0.1})
add("leaky_relu", [f(1, 4)], id="default")
add("elu", [f(2, 3, 5)], {"alpha": 0.5})
add("celu", [f(2, 3, 5)], {"alpha": 2.0})
add("celu", [f(2, 3, 5)], id="default")
add("selu", [f(2, 3, 5)], {"alpha": 1.6732632423543772, "gamma": 1.0507009873554805})
add("hard_sigmoid", [f(2, 3, 5) * 4], {"alpha": 0.2, "beta": 0.5})
add("hard_sigmoid", [f(2, 3, 5) * 4], {"alpha": 0.5, "beta": 0.6}, id="onnx_alpha")
add("thresholded_relu", [f(2, 3, 5) * 2], {"alpha": 0.3})
add("clip", [f(2, 3, 5)], {"min": -0.5, "max": 0.7}, id="both")
add("clip", [f(2, 3, 5)], {"min": -0.2}, id="min")
add("clip", [f(1, 5)], {"max": 0.1}, id="max")
add("clip", [f(2, 5)], {"min": 0.5, "max": -0.5}, id="min_gt_max")
add("clip", [np.array([np.nan, -3.0, 3.0], "float32")], {"min": -1.0, "max": 1.0}, id="nan")
add("clip", [ints(-20, 20, 3, 4)], {"min": -5, "max": 6}, id="int")

# binary with broadcasting
_BCAST = [((2, 3, 4), (3, 1)), ((1, 4), (5, 1, 4)), ((3, 5), ())]
for _op in ("add", "sub", "mul", "div", "maximum", "minimum"):
    for _sa, _sb in _BCAST:
        _b = f(*_sb) if _op != "div" else pos(*_sb)
        add(_op, [f(*_sa), _b], id=f"{_sa}x{_sb}")
    add(_op, [ints(-20, 20, 3, 4), nonzero_ints(-5, 6, 4)], id="int32")
add("add", [ints(-20, 20, 3, 4, dtype="int64"), ints(-20, 20, 3, 1, dtype="int64")], id="int64")
add("add", [bools(3, 4), bools(4)], id="bool")
add("mul", [bools(3, 4), bools(4)], id="bool")
add("add", [f(3, 4), ints(-3, 3, 4)], id="mixed_int_float")
add("div", [np.array([7, -7, 7, -7, 0, -9], "int32"), np.array([2, 2, -2, -2, 3, 4], "int32")], id="int_trunc")
add("div", [ints(-100, 100, 3, 4, dtype="int64"), nonzero_ints(-7, 7, 3, 4, dtype="int64")], id="int64")
add("div", [ints(0, 255, 3, 4, dtype="uint8"), nonzero_ints(1, 9, 3, 4, dtype="uint8")], id="uint8")
add("maximum", [np.array([1.0, np.nan, 3.0, np.nan], "float32"), np.array([np.nan, 2.0, 1.0, 5.0], "float32")],
    id="nan")
add("minimum", [np.array([1.0, np.nan, 3.0, np.nan], "float32"), np.array([np.nan, 2.0, 1.0, 5.0], "float32")],
    id="nan")
add("pow", [pos(2, 3, 4), f(3, 1)], id="float")
add("pow", [f(3, 4), np.array([0.0, 1.0, 2.0, 3.0], "float32")], id="neg_base_int_exp")
add("pow", [f(3, 4), ints(0, 4, 4)], id="float_int_exp")
add("pow", [ints(-5, 6, 3, 4), ints(0, 5, 4)], id="int")
add("pow", [ints(-5, 6, 3, 4, dtype="int64"), ints(0, 9, 3, 4, dtype="int64")], id="int64")
for _op in ("equal", "less", "less_equal", "greater", "greater_equal"):
    add(_op, [ties(2, 3, 4), ties(3, 1)], id="f32")
    add(_op, [ints(-2, 3, 5, 4), ints(-2, 3, 4)], id="int32")
add("equal", [bools(3, 4), bools(4)], id="bool")
for _op in ("logical_and", "logical_or", "logical_xor"):
    add(_op, [bools(2, 3, 4), bools(3, 1)], id="bool")
add("logical_and", [ints(-1, 2, 3, 4), ints(-1, 2, 4)], id="int")
for _op in ("bitwise_and", "bitwise_or", "bitwise_xor"):
    add(_op, [ints(-100, 100, 3, 4), ints(-100, 100, 4)], id="int32")
    add(_op, [ints(0, 255, 3, 4, dtype="uint8"), ints(0, 255, 3, 4, dtype="uint8")], id="uint8")
    add(_op, [bools(3, 4), bools(3, 4)], id="bool")
for _op in ("bitshift_left", "bitshift_right"):
    add(_op, [ints(0, 255, 3, 4, dtype="uint8"), ints(0, 10, 3, 4, dtype="uint8")], id="uint8")
    add(_op, [ints(-1000, 1000, 3, 4), ints(0, 34, 3, 4)], id="int32")
    add(_op, [ints(0, 2**40, 5, dtype="int64"), np.array([0, 1, 63, 64, 70], "int64")], id="int64_overshift")
add("prelu", [f(2, 3, 4, 5), f(3, 1, 1)], id="per_channel")
add("prelu", [f(1, 3, 5), f(1)], params=(1,), id="scalar_slope_param")
for _fmod in (False, True):
    add("mod", [f(3, 4) * 5, f(4) * 2], {"fmod": _fmod}, id=f"float_fmod{int(_fmod)}")
    add("mod", [ints(-20, 20, 3, 4), nonzero_ints(-6, 7, 3, 4)], {"fmod": _fmod}, id=f"int_fmod{int(_fmod)}")
    add("mod", [np.array([5.0, -5.0, 5.0, -5.0, 6.0, -0.0], "float32"),
                np.array([3.0, 3.0, -3.0, -3.0, 3.0, 3.0], "float32")], {"fmod": _fmod}, id=f"signs_fmod{int(_fmod)}")
add("mod", [ints(0, 200, 3, 4, dtype="uint8"), nonzero_ints(1, 9, 4, dtype="uint8")], id="uint8")
add("where", [bools(2, 3, 4), f(3, 4), f(2, 1, 4)], id="bcast")
add("where", [bools(3, 1), ints(-5, 5, 3, 4), ints(-5, 5, 4)], id="int")
add("where", [ints(0, 2, 4, dtype="uint8"), f(4), f(4)], id="uint8_cond")
add("cast", [f(3, 5) * 5], {"to": "int32"}, id="f2i_trunc")
add("cast", [f(3, 5) * 5], {"to": "int64"}, id="f2i64")
add("cast", [np.array([0.0, 0.3, -0.0, -2.0, np.nan], "float32")], {"to": "bool"}, id="f2bool")
add("cast", [ints(-3, 3, 3, 4)], {"to": "bool"}, id="i2bool")
add("cast", [ints(-30, 30, 3, 4)], {"to": "float32"}, id="i2f")
add("cast", [bools(3, 4)], {"to": "float32"}, id="bool2f")
add("cast", [bools(3, 4)], {"to": "int64"}, id="bool2i")
add("cast", [f(3, 4)], {"to": "float16"}, id="f2half")
add("cast", [f(3, 4)], {"to": "float64"}, id="f2double")
add("cast", [pos(3, 4) * 50], {"to": "uint8"}, id="f2u8")
add("cast", [ints(-300, 300, 3, 4)], {"to": "int8"}, id="i32_to_i8_wraps")

# reductions
for _op in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod"):
    _x = f(2, 3, 5) if _op != "reduce_prod" else uni(0.5, 1.5, 2, 3, 5)
    add(_op, [_x], {"axes": None}, id="all")
    add(_op, [_x], {"axes": [1]}, id="axis1")
    add(_op, [_x], {"axes": [0, 2], "keepdims": False}, id="axes02_nokeep")
    add(_op, [_x[:1]], {"axes": [2], "keepdims": True}, id="batch1")
    add(_op, [_x], {"axes": []}, id="empty_axes")
add("reduce_sum", [ints(-5, 5, 3, 4, dtype="int64")], {"axes": [1]}, id="int64")
add("reduce_max", [ints(-5, 5, 3, 4)], {"axes": [0], "keepdims": False}, id="int32")
add("reduce_max", [np.array([[1.0, np.nan, 2.0], [-np.inf, -np.inf, -np.inf]], "float32")], {"axes": [1]}, id="nan_inf")
add("reduce_min", [np.array([[1.0, np.nan, 2.0], [np.inf, np.inf, np.inf]], "float32")], {"axes": [1]}, id="nan_inf")
add("max_pool", [np.array([[[[1.0, np.nan], [0.0, 2.0]]]], "float32")],
    dict(kernel=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1], dilations=[1, 1]), id="nan")
add("reduce_sum", [np.array(3.5, "float32")], {"axes": None}, id="scalar")
for _op in ("argmax", "argmin"):
    add(_op, [ties(3, 4, 5)], {"axis": 1}, id="ties_first")
    add(_op, [ties(3, 4, 5)], {"axis": 2, "keepdims": False}, id="nokeep")
    add(_op, [ties(3, 4, 5)], {"axis": 1, "select_last_index": True}, id="ties_last")
    add(_op, [f(1, 7)], {"axis": 0, "keepdims": False}, id="batch1")
    add(_op, [ints(-3, 3, 4, 6)], {"axis": 1, "select_last_index": True, "keepdims": False}, id="int")
for _exclusive in (False, True):
    for _reverse in (False, True):
        add("cumsum", [f(3, 4, 5)], {"axis": 1, "exclusive": _exclusive, "reverse": _reverse},
            id=f"ex{int(_exclusive)}rev{int(_reverse)}")
add("cumsum", [ints(-5, 5, 3, 4)], {"axis": 0, "exclusive": True, "reverse": True}, id="int32")
add("cumsum", [f(1, 6)], {"axis": 1}, id="batch1")

# linear algebra
add("matmul", [f(2, 3, 4), f(4, 5)], id="batched_2d")
add("matmul", [f(3, 4), f(2, 4, 5)], id="bcast_left")
add("matmul", [f(2, 1, 3, 4), f(5, 4, 6)], id="bcast_both")
add("matmul", [f(4), f(4, 5)], id="vec_mat")
add("matmul", [f(2, 3, 4), f(4)], id="mat_vec")
add("matmul", [f(7), f(7)], id="dot")
add("matmul", [ints(-5, 5, 3, 4), ints(-5, 5, 4, 2)], id="int32")
add("matmul", [f(3, 8, dtype="float16"), f(8, 5, dtype="float16")], id="f16", rtol=2e-3, atol=2e-3)
add("linear", [f(3, 7), f(5, 7), f(5)], params=(1, 2), id="bias")
add("linear", [f(2, 3, 7), f(5, 7)], params=(1,), id="nobias_3d")
add("linear", [f(1, 7), f(5, 7), f(5)], params=(1, 2), id="batch1")
add("linear", [f(7), f(5, 7), f(5)], params=(1, 2), id="vector")
add("linear", [f(40), f(48, 40), f(48)], params=(1, 2), id="vector-packed")  # x86 packs a 48-row weight
add("linear", [f(3, 7), f(5, 7), f(5)], id="weights_as_inputs")
add("einsum", [f(3, 4), f(4, 5)], {"equation": "ij,jk->ik"}, id="matmul")
add("einsum", [f(2, 3, 4), f(2, 4, 5)], {"equation": "bij,bjk->bik"}, id="bmm")
add("einsum", [f(6), f(6)], {"equation": "i,i->"}, id="dot")
add("einsum", [f(2, 3, 5, 4), f(2, 3, 6, 4)], {"equation": "bhqd,bhkd->bhqk"}, id="attention")
add("einsum", [f(3, 4)], {"equation": "ij->ji"}, id="transpose")
add("einsum", [f(3, 4), f(5)], {"equation": "ij,k->ijk"}, id="outer")
add("einsum", [f(2, 3, 4), f(4, 5)], {"equation": "...j,jk->...k"}, id="ellipsis")
add("einsum", [f(3, 4)], {"equation": "ij->i"}, id="sum")

# convolution and pooling
_conv = dict(strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1])
add("conv", [f(2, 3, 7, 6), f(4, 3, 3, 3), f(4)], _conv, params=(1, 2), id="2d_bias")
add("conv", [f(1, 3, 9, 8), f(4, 3, 3, 2)], dict(strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2]), params=(1,),
    id="2d_stride_asym_pad_dilation")
add("conv", [f(2, 4, 7, 7), f(6, 2, 3, 3), f(6)], dict(_conv, pads=[1, 1, 1, 1], groups=2), params=(1, 2),
    id="2d_groups")
add("conv", [f(2, 4, 7, 7), f(4, 1, 3, 3)], dict(_conv, groups=4), params=(1,), id="depthwise")
add("conv", [f(2, 3, 11), f(5, 3, 4), f(5)], dict(strides=[2], pads=[2, 1], dilations=[2]), params=(1, 2), id="1d")
add("conv", [f(1, 2, 5, 6, 4), f(3, 2, 2, 3, 2)], dict(strides=[1, 2, 1], pads=[1, 0, 1, 0, 1, 0],
                                                           dilations=[1, 1, 2]), params=(1,), id="3d")
add("conv", [f(2, 3, 7, 6), f(4, 3, 3, 3)], _conv, id="weight_input")
_convt = dict(strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], output_padding=[0, 0])
add("conv_transpose", [f(2, 3, 5, 4), f(3, 4, 3, 3), f(4)], _convt, params=(1, 2), id="2d_bias")
add("conv_transpose", [f(1, 3, 5, 4), f(3, 2, 3, 3)], dict(_convt, strides=[2, 2], output_padding=[1, 0]),
    params=(1,), id="2d_stride2_outpad")
add("conv_transpose", [f(2, 4, 5, 6), f(4, 3, 3, 2), f(6)],
    dict(strides=[2, 3], pads=[1, 0, 0, 2], dilations=[2, 1], output_padding=[1, 2], groups=2), params=(1, 2),
    id="2d_groups_dilation_asym")
add("conv_transpose", [f(1, 2, 5, 5), f(2, 2, 3, 3)], dict(_convt, strides=[2, 2], pads=[3, 3, 3, 3]),
    params=(1,), id="2d_pads_beyond_kernel")
add("conv_transpose", [f(2, 3, 7), f(3, 2, 4)], dict(strides=[3], pads=[1, 2], dilations=[1], output_padding=[2]),
    params=(1,), id="1d")
add("conv_transpose", [f(1, 2, 3, 4, 3), f(2, 2, 2, 2, 3)], dict(strides=[2, 1, 2], pads=[0, 1, 0, 0, 0, 1],
                                                                dilations=[1, 1, 1], output_padding=[1, 0, 0]),
    params=(1,), id="3d")
_pool = dict(kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1])
add("max_pool", [f(2, 3, 7, 8)], _pool, id="k3s2p1")
add("max_pool", [f(2, 3, 7, 8)], dict(_pool, ceil_mode=True), id="ceil")
add("max_pool", [f(1, 2, 8, 9)], dict(_pool, pads=[0, 1, 2, 1]), id="asym_pads")
add("max_pool", [f(1, 2, 8, 9)], dict(_pool, pads=[0, 1, 2, 1], ceil_mode=True), id="asym_pads_ceil")
add("max_pool", [f(2, 2, 9, 9)], dict(kernel=[2, 3], strides=[1, 2], pads=[0, 0, 0, 0], dilations=[2, 2]),
    id="dilation")
add("max_pool", [f(1, 2, 6, 6)], dict(kernel=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1],
                                      ceil_mode=True), id="ceil_last_window_in_pad")
add("max_pool", [f(1, 2, 5, 5)], dict(kernel=[1, 1], strides=[3, 3], pads=[0, 0, 0, 0], dilations=[1, 1],
                                      ceil_mode=True), id="ceil_k_lt_s")
add("max_pool", [f(1, 2, 5, 7)], dict(kernel=[2, 2], strides=[1, 2], pads=[2, 1, 2, 1], dilations=[1, 1]),
    id="pad_gt_half_kernel")
add("max_pool", [f(2, 3, 11)], dict(kernel=[3], strides=[2], pads=[1, 0], dilations=[1], ceil_mode=True), id="1d")
add("max_pool", [f(1, 2, 5, 6, 5)], dict(kernel=[2, 3, 2], strides=[2, 1, 2], pads=[0, 1, 0, 1, 1, 0],
                                         dilations=[1, 1, 1]), id="3d")
add("max_pool", [ints(-50, 50, 1, 2, 5, 5)], dict(_pool), id="int32")
_apool = dict(kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
for _cip in (False, True):
    for _ceil in (False, True):
        add("avg_pool", [f(2, 3, 7, 8)], dict(_apool, ceil_mode=_ceil, count_include_pad=_cip),
            id=f"cip{int(_cip)}ceil{int(_ceil)}")
        add("avg_pool", [f(1, 2, 8, 9)], dict(_apool, pads=[0, 1, 2, 1], ceil_mode=_ceil, count_include_pad=_cip),
            id=f"asym_cip{int(_cip)}ceil{int(_ceil)}")
add("avg_pool", [f(2, 3, 11)], dict(kernel=[4], strides=[3], pads=[2, 1], ceil_mode=True), id="1d")
add("avg_pool", [f(1, 2, 5, 6, 5)], dict(kernel=[2, 3, 2], strides=[2, 1, 2], pads=[0, 1, 0, 1, 1, 0],
                                         count_include_pad=True), id="3d")
add("avg_pool", [f(2, 3, 6, 6)], dict(kernel=[6, 6], strides=[1, 1], pads=[0, 0, 0, 0]), id="global")

# normalization
add("batch_norm", [f(2, 3, 4, 5), f(3), f(3), f(3), pos(3)], {"epsilon": 1e-3}, params=(1, 2, 3, 4), id="4d")
add("batch_norm", [f(1, 4, 6), f(4), f(4), f(4), pos(4)], params=(1, 2, 3, 4), id="3d_batch1")
add("layer_norm", [f(2, 5, 8), f(8), f(8)], {"axis": 2}, params=(1, 2), id="last")
add("layer_norm", [f(2, 3, 4, 5), f(4, 5), f(4, 5)], {"axis": 2, "epsilon": 1e-3}, params=(1, 2), id="two_axes")
add("layer_norm", [f(3, 7)], {"axis": 1}, id="no_affine")
add("layer_norm", [f(2, 5, 8), f(8)], {"axis": 2}, params=(1,), id="weight_only")
add("layer_norm", [f(2, 3, 4), f(3, 1), None], {"axis": 1}, params=(1,), id="broadcast_weight")
add("group_norm", [f(2, 6, 3, 3), f(6), f(6)], {"num_groups": 3}, params=(1, 2), id="g3")
add("group_norm", [f(1, 4, 5), f(4), f(4)], {"num_groups": 1, "epsilon": 1e-3}, params=(1, 2), id="g1")
add("group_norm", [f(2, 4, 3, 2), f(4), f(4)], {"num_groups": 4}, params=(1, 2), id="per_channel")
for _op in ("softmax", "log_softmax"):
    add(_op, [f(2, 3, 5) * 3], {"axis": 2}, id="last")
    add(_op, [f(2, 3, 5) * 3], {"axis": 1}, id="middle")
    add(_op, [f(1, 9) * 30], {"axis": 1}, id="large")
    add(_op, [f(2, 3, 32) * 3], {"axis": -1}, id="negative_axis_partial_lanes")

# indexing and data movement
add("gather", [f(5, 4), np.array([0, -1, 3, -5, 2], "int64")], {"axis": 0}, id="negative")
add("gather", [f(2, 5, 3), np.array([[1, -2], [0, 4]], "int64")], {"axis": 1}, id="2d_indices")
add("gather", [f(4, 3), np.array(-2, "int64")], {"axis": 0}, id="scalar_index")
add("gather", [f(3, 6), np.array([5, 0, -6], "int32")], {"axis": 1}, id="int32_indices")
add("gather_elements", [f(3, 4), np.array([[0, -1, 2, 3], [1, 1, -4, 0]], "int64")], {"axis": 1}, id="axis1")
add("gather_elements", [f(3, 4), np.array([[2, -1, 0, 1]], "int64")], {"axis": 0}, id="axis0")
_sx = f(5, 7, 6)
add("slice", [_sx], {"starts": [1], "ends": [4], "axes": [1], "steps": [1]}, id="basic")
add("slice", [_sx], {"starts": [-4, 0], "ends": [2**62, -1], "axes": [1, 2], "steps": [2, 1]}, id="neg_start_clamp")
add("slice", [_sx], {"starts": [-1], "ends": [-2**62], "axes": [2], "steps": [-1]}, id="reverse")
add("slice", [_sx], {"starts": [5], "ends": [0], "axes": [1], "steps": [-2]}, id="neg_step")
add("slice", [_sx], {"starts": [100], "ends": [-100], "axes": [0], "steps": [-3]}, id="neg_step_clamped")
add("slice", [_sx], {"starts": [3], "ends": [1], "axes": [1], "steps": [1]}, id="empty")
add("slice", [_sx], {"starts": [0, 2], "ends": [5, 6], "axes": [0, 0], "steps": [1, 1]}, id="same_axis_twice")
add("concat", [f(2, 3, 4), f(2, 1, 4), f(2, 5, 4)], {"axis": 1}, id="three")
add("concat", [f(1, 3), f(4, 3)], {"axis": 0}, id="axis0")
add("split", [f(2, 6, 3)], {"axis": 1, "sizes": [2, 3, 1]}, id="three")
add("split", [f(5, 4)], {"axis": 0, "sizes": [5]}, id="one")
add("reshape", [f(2, 3, 4)], {"shape": [6, 4]}, id="merge")
add("reshape", [f(2, 12)], {"shape": [2, 3, 1, 4]}, id="split")
add("reshape", [f(1, 5)], {"shape": [5]}, id="squeeze")
add("transpose", [f(2, 3, 4)], {"perm": [2, 0, 1]}, id="3d")
add("transpose", [f(1, 3, 4, 5)], {"perm": [0, 2, 3, 1]}, id="nhwc")
add("expand", [f(3, 1)], {"shape": [2, 3, 4]}, id="bcast")
add("expand", [f(1, 1, 5)], {"shape": [2, 3, 5]}, id="ones")
add("tile", [f(2, 3)], {"repeats": [2, 3]}, id="2d")
add("tile", [f(3, 1)], {"repeats": [2, 1, 4]}, id="more_repeats")
add("pad", [f(2, 3, 4)], {"pads": [0, 1, 2, 0, 2, 1], "value": 1.5}, id="constant")
add("pad", [f(2, 3, 4)], {"pads": [0, -1, 1, 0, 2, -2]}, id="negative")
add("pad", [f(3, 5, 4)], {"pads": [0, 2, 1, 0, 1, 3], "mode": "reflect"}, id="reflect")
add("pad", [f(3, 5, 4)], {"pads": [0, 2, 1, 0, 1, 3], "mode": "edge"}, id="edge")
add("pad", [f(3, 6)], {"pads": [0, 5, 0, 5], "mode": "reflect"}, id="reflect_max")
add("pad", [f(2, 5)], {"pads": [0, 3, 0, 4], "mode": "edge"}, id="edge_2d")
add("pad", [ints(-5, 5, 2, 3)], {"pads": [1, 0, 0, 2], "value": 7.0}, id="int")
for _mode, _ctm, _nm in (("nearest", "asymmetric", "floor"), ("nearest", "half_pixel", "round_prefer_ceil"),
                         ("linear", "half_pixel", "floor"), ("linear", "pytorch_half_pixel", "floor"),
                         ("linear", "align_corners", "floor")):
    _attrs = {"mode": _mode, "coordinate_transformation_mode": _ctm, "nearest_mode": _nm}
    add("resize", [f(2, 3, 4, 5)], dict(_attrs, sizes=[7, 9]), id=f"{_mode}_{_ctm}_up")
    add("resize", [f(1, 2, 9, 7)], dict(_attrs, sizes=[4, 3]), id=f"{_mode}_{_ctm}_down")
add("resize", [f(2, 3, 7)], {"sizes": [11], "mode": "linear", "coordinate_transformation_mode": "half_pixel"},
    id="1d_linear")
add("resize", [f(1, 2, 3, 4, 2)], {"sizes": [5, 3, 4], "mode": "linear",
                                   "coordinate_transformation_mode": "align_corners"}, id="3d_linear")
add("resize", [f(1, 1, 5, 5)], {"sizes": [1, 1], "mode": "linear", "coordinate_transformation_mode": "align_corners"},
    id="align_corners_size1")


# ---- small whole graphs ----------------------------------------------------------------------------------------
def mlp_graph(batch: Any = "batch") -> Graph:
    """x[batch, 6] -> linear -> gelu -> linear -> reshape[batch*2, 2] -> softmax; plus a second output."""
    rng = np.random.default_rng(1)
    g = Graph(name="mlp")
    x = g.add_input("x", TensorType((batch, 6), "float32"))
    w1 = g.add_param("w1", rng.standard_normal((8, 6)).astype("float32"))
    b1 = g.add_param("b1", rng.standard_normal(8).astype("float32"))
    w2 = g.add_param("w2", rng.standard_normal((4, 8)).astype("float32"))
    (h,) = g.add_node("linear", [x, w1, b1], [TensorType((batch, 8), "float32")])
    (h,) = g.add_node("gelu", [h], [TensorType((batch, 8), "float32")])
    (y,) = g.add_node("linear", [h, w2], [TensorType((batch, 4), "float32")])
    flat = f"{batch}*2" if isinstance(batch, str) else batch * 2
    (r,) = g.add_node("reshape", [y], [TensorType((flat, 2), "float32")], {"shape": [flat, 2]})
    (s,) = g.add_node("softmax", [r], [TensorType((flat, 2), "float32")], {"axis": 1})
    (m,) = g.add_node("reduce_max", [y], [TensorType((batch,), "float32")], {"axes": [1], "keepdims": False})
    g.outputs = [s, m]
    return g


def conv_net_graph() -> Graph:
    """conv -> relu -> max_pool -> avg_pool -> flatten -> linear -> softmax, cumsum, layer_norm: typical GPU work."""
    rng = np.random.default_rng(2)
    g = Graph(name="convnet")
    x = g.add_input("x", TensorType(("batch", 3, 8, 8), "float32"))
    w = g.add_param("w", rng.standard_normal((4, 3, 3, 3)).astype("float32"))
    (c,) = g.add_node("conv", [x, w], [TensorType(("batch", 4, 8, 8), "float32")],
                      dict(strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1]))
    (c,) = g.add_node("relu", [c], [TensorType(("batch", 4, 8, 8), "float32")])
    (c,) = g.add_node("max_pool", [c], [TensorType(("batch", 4, 4, 4), "float32")],
                      dict(kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1]))
    (c,) = g.add_node("avg_pool", [c], [TensorType(("batch", 4, 2, 2), "float32")],
                      dict(kernel=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0]))
    (c,) = g.add_node("reshape", [c], [TensorType(("batch", 16), "float32")], {"shape": ["batch", 16]})
    wl = g.add_param("wl", rng.standard_normal((10, 16)).astype("float32"))
    (y,) = g.add_node("linear", [c, wl], [TensorType(("batch", 10), "float32")])
    (y,) = g.add_node("layer_norm", [y], [TensorType(("batch", 10), "float32")], {"axis": 1})
    (s,) = g.add_node("softmax", [y], [TensorType(("batch", 10), "float32")], {"axis": 1})
    (k,) = g.add_node("cumsum", [s], [TensorType(("batch", 10), "float32")], {"axis": 1})
    g.outputs = [k]
    return g

def case_id(case: Case) -> str:
    return f"{case.op}-{case.id}" if case.id else case.op


def assert_matches_reference(got: list[np.ndarray], want: list[np.ndarray], rtol: float, atol: float) -> None:
    """Same count, dtypes and shapes as the reference; floats within tolerance (NaN where it has NaN), others exact."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype, f"dtype {g.dtype} != reference {w.dtype}"
        assert g.shape == w.shape, f"shape {g.shape} != reference {w.shape}"
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
        else:
            np.testing.assert_array_equal(g, w)
