"""CPU kernel templates (backends/tvm/kernels) against numpy, and the weight re-layout they rely on.

Odd shapes on purpose: rows not a multiple of the register tile, K not a multiple of anything, batch 1 (GEMV) and
batch > 1, symbolic leading dims, fused epilogues; plus the cases where packing must not happen.
"""
from __future__ import annotations

import numpy as np
import pytest
import tvm

from sparsecc.backends.tvm import compile_graph, lower_graph, prepare_graph
from sparsecc.interpreter import run_graph
from sparsecc.ir.graph import Graph, TensorType
from sparsecc.ir.layouts import logical_shape, pack, unpack

RNG = np.random.default_rng(0)


def linear_graph(shape, k, n, *, bias=True, act=None):
    g = Graph()
    g.add_input("x", TensorType(tuple(shape) + (k,), "float32"))
    w = g.add_param("w", RNG.standard_normal((n, k)).astype("float32"))
    ins = ["x", w] + ([g.add_param("b", RNG.standard_normal(n).astype("float32"))] if bias else [])
    out = TensorType(tuple(shape) + (n,), "float32")
    (y,) = g.add_node("linear", ins, [out])
    if act:
        (y,) = g.add_node(act, [y], [out])
    g.outputs = [y]
    return g


def reference(g, x):
    w = g.params["w"].data.astype(np.float64)
    y = x.astype(np.float64) @ w.T + (g.params["b"].data if "b" in g.params else 0)
    return y


@pytest.mark.parametrize("shape,k,n,bias", [
    ((1,), 4096, 1024, True),      # GEMV, K larger than one tile of anything
    ((1,), 37, 48, False),         # GEMV, odd K
    ((5,), 129, 32, True),         # rows not a multiple of the 6/8/4-row tile
    ((128,), 384, 64, True),       # rows divisible by 8
    ((2, 7), 33, 16, True),        # two leading dims, odd rows and K
    (("batch", 9), 65, 80, False),  # symbolic leading dim
])
def test_packed_dense_matches_numpy(shape, k, n, bias):
    g = linear_graph(shape, k, n, bias=bias)
    run = compile_graph(g)
    concrete = tuple(3 if d == "batch" else d for d in shape)
    x = RNG.standard_normal(concrete + (k,)).astype("float32")
    out = run(x)[0]
    ref = reference(g, x)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_fused_gelu_epilogue_and_schedule_applied():
    g = linear_graph(("batch", 16), 64, 96, act="gelu")
    prepared = prepare_graph(g, "x86")
    mod = lower_graph(prepared, "x86")
    dense_funcs = [f for gv, f in mod.functions.items() if "dense" in gv.name_hint]
    assert len(dense_funcs) == 1 and dense_funcs[0].attrs["tirx.is_scheduled"]
    assert "gelu" in [gv.name_hint for gv in mod.functions if "dense" in gv.name_hint][0]  # the epilogue is fused
    x = RNG.standard_normal((2, 16, 64)).astype("float32")
    out = compile_graph(g)(x)[0]
    np.testing.assert_allclose(out, run_graph(g, x)[0], rtol=1e-5, atol=1e-5)


AVX2, AVX512 = {"kind": "llvm", "mcpu": "haswell"}, {"kind": "llvm", "mcpu": "znver4"}


@pytest.mark.parametrize("target,budget,shape", [(AVX2, 6, (4, 1)), (AVX512, 15, (4, 3)), ("arm64", 6, (4, 1))],
                         ids=["avx2", "avx512", "arm64"])
def test_register_tile_fits_the_target_registers(target, budget, shape):
    """A tile row of 16 float32 lanes costs one AVX-512 register, two AVX2 ones, four NEON ones. The accumulators
    take at most 3/4 of the register file and stay under TVM's 1 KiB stack allocation (15 of 16 lanes); beside them
    the registers must hold a weight vector per block and the broadcast input. MiniLM's 128 x 384 -> 1536 GEMM:
    AVX-512 takes 4 rows x 3 blocks (12 accumulators, 7 loads per 12 FMAs), AVX2 and NEON 4 rows x 1 block (2 x 3
    would need 19 ymm registers). GEMV takes 4 blocks of one row."""
    from sparsecc.backends.tvm import resolve_target
    from sparsecc.backends.tvm.kernels.matmul import tile_shape
    from sparsecc.backends.tvm.kernels.tiling import accumulator_budget, vector_registers

    t = resolve_target(target)
    assert accumulator_budget(t, 16) == budget
    vector_lanes, registers = vector_registers(t)
    rows = tvm.tirx.IntImm("int32", 128)
    assert tile_shape(rows, 1536 // 16, budget, 16 // vector_lanes, registers) == shape
    assert tile_shape(tvm.tirx.IntImm("int32", 1), 1536 // 16, budget, 16 // vector_lanes, registers) == (1, 4)


def test_gemm_tile_shape_picks_rows_that_divide_and_blocks_that_divide():
    """4096 outputs are 256 blocks of 16, which 3 does not divide: AVX-512 takes 4 rows x 2 blocks (as few loads per
    FMA as 2 x 4, more rows); a symbolic ``batch * 128`` rows still tile by 4 without a bounds check; a quantized
    weight's two tiles (group sums and outputs) share the registers."""
    from sparsecc.backends.tvm.kernels.matmul import tile_shape

    rows = tvm.tirx.IntImm("int32", 128)
    assert tile_shape(rows, 256, 15) == (4, 2)
    batch = tvm.tirx.Var("batch", "int64")
    assert tile_shape(batch * 128, 96, 15) == (4, 3)
    assert tile_shape(rows, 96, 12, tiles=2) == (4, 3)  # 24 accumulators + 3 weight vectors + 1 broadcast <= 32


@pytest.mark.skipif(not tvm.target.codegen.target_has_features("avx2", tvm.target.Target(
    {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})), reason="this CPU has no AVX2")
def test_avx2_tile_matches_numpy():
    """The AVX2 register tile (4 rows x 16 lanes) with a fused epilogue, run here (any AVX-512 CPU runs it too)."""
    g = linear_graph((128,), 384, 96, act="gelu")
    x = RNG.standard_normal((128, 384)).astype("float32")
    out, ref = compile_graph(g, AVX2)(x)[0], run_graph(g, x)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())  # sums of 384 products


@pytest.mark.parametrize("op,attrs,hw", [
    ("max_pool", dict(kernel=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1]), (112, 112)),  # ResNet
    ("avg_pool", dict(kernel=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0], count_include_pad=False), (48, 48)),
])
def test_pooling_is_scheduled_and_matches_the_interpreter(op, attrs, hw):
    """Pooling is scheduled, not left to TVM's scalar single-core loops: a max pool whose output rows are whole
    vectors by ``WindowReduction`` (rows in parallel, each window element updating a vector of outputs), an average
    pool (a sum, then a divide) by the reduction rules; NaN and padding as the interpreter has them."""
    import torch

    x = RNG.standard_normal((1, 4) + hw).astype("float32")
    x[0, 1, 5, 7] = np.nan
    ref = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1) if op == "max_pool" else \
        torch.nn.functional.avg_pool2d(torch.from_numpy(x), 2, 2)
    g = Graph()
    g.add_input("x", TensorType(x.shape, "float32"))
    (y,) = g.add_node(op, ["x"], [TensorType(tuple(ref.shape), "float32")], attrs)
    g.outputs = [y]
    funcs = lower_graph(prepare_graph(g, "x86"), "x86").functions.items()
    assert any("pool" in gv.name_hint and "tirx.is_scheduled" in f.attrs for gv, f in funcs
               if isinstance(f, tvm.tirx.PrimFunc))
    out = compile_graph(g)(x)[0]
    np.testing.assert_allclose(out, run_graph(g, x)[0], rtol=1e-6, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-6, atol=1e-6, equal_nan=True)


def test_relayout_packs_only_what_its_kernel_reads():
    g = linear_graph((4,), 32, 48)
    # a second, non-linear user of a weight (tied embedding) keeps it unpacked
    tied = Graph()
    tied.add_input("ids", TensorType((4,), "int64"))
    w = tied.add_param("w", RNG.standard_normal((48, 32)).astype("float32"))
    (e,) = tied.add_node("gather", [w, "ids"], [TensorType((4, 32), "float32")])
    (y,) = tied.add_node("linear", [e, w], [TensorType((4, 48), "float32")])
    tied.outputs = [y]
    odd = linear_graph((4,), 32, 100)  # 100 outputs: not a multiple of the 16-lane block
    odd_no_bias = linear_graph((4,), 32, 100, bias=False)
    small = linear_graph((4,), 32, 10)  # padding 10 outputs to 16 would mostly compute zeros

    packed = prepare_graph(g, "x86")
    assert packed.params["w"].encoding.meta == {"layout": "OI16o"}
    assert packed.params["w"].data.shape == (3, 32, 16) and g.params["w"].data.shape == (48, 32)  # input untouched
    assert prepare_graph(tied, "x86").params["w"].encoding.meta == {}
    assert prepare_graph(small, "x86").params["w"].encoding.meta == {}
    assert prepare_graph(g, "cuda").params["w"].encoding.meta == {}  # GPU kernels read [O, I]
    x = RNG.standard_normal((4, 32)).astype("float32")
    np.testing.assert_array_equal(run_graph(packed, x)[0], run_graph(g, x)[0])  # the interpreter unpacks
    for graph in (odd, odd_no_bias):
        # padded with zero rows to the block, the padded outputs sliced off: the same function, interpreted or
        # built (torch's BLAS may sum a 16-row weight in another order than a 10-row one: rounding only)
        padded = prepare_graph(graph, "x86")
        assert padded.params["w"].data.shape == (7, 32, 16) and graph.params["w"].data.shape == (100, 32)
        assert [n.op for n in padded.nodes] == ["linear", "slice"] and padded.types[padded.outputs[0]].shape == (4, 100)
        np.testing.assert_allclose(run_graph(padded, x)[0], run_graph(graph, x)[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(compile_graph(graph)(x)[0], run_graph(graph, x)[0], rtol=1e-5, atol=1e-5)


def test_layout_round_trip():
    w = RNG.standard_normal((64, 7)).astype("float32")
    p = pack(w, "OI16o")
    assert p.shape == (4, 7, 16) and logical_shape(p.shape, "OI16o") == (64, 7)
    np.testing.assert_array_equal(unpack(p, "OI16o"), w)
    assert p[1, 3, 5] == w[16 + 5, 3]
    with pytest.raises(ValueError, match="multiple of 16"):
        pack(w[:10], "OI16o")
    with pytest.raises(ValueError, match="unknown weight layout"):
        pack(w, "NCHW")


@pytest.mark.parametrize("a_shape,b_shape,out_shape", [
    ((5, 33), (33, 16), (5, 16)),                        # plain 2-D, odd rows and K
    ((3, 7, 40), (40, 32), (3, 7, 32)),                  # batched left, shared right (broadcast)
    ((2, 1, 9, 17), (3, 17, 48), (2, 3, 9, 48)),         # broadcast on both sides
    (("batch", 4, 128, 32), ("batch", 4, 32, 128), ("batch", 4, 128, 128)),  # attention scores
])
def test_batch_matmul_matches_numpy(a_shape, b_shape, out_shape):
    g = Graph()
    g.add_input("a", TensorType(a_shape, "float32"))
    g.add_input("b", TensorType(b_shape, "float32"))
    (y,) = g.add_node("matmul", ["a", "b"], [TensorType(out_shape, "float32")])
    g.outputs = [y]
    scheduled = [gv.name_hint for gv, f in lower_graph(g, "x86").functions.items()
                 if isinstance(f, tvm.tirx.PrimFunc) and "tirx.is_scheduled" in f.attrs]
    assert any("matmul" in name for name in scheduled)
    concrete = [tuple(2 if d == "batch" else d for d in s) for s in (a_shape, b_shape)]
    a, b = (RNG.standard_normal(s).astype("float32") for s in concrete)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(compile_graph(g)(a, b)[0], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("n,c,hw,o,k,stride,pads,dil,groups", [
    (1, 8, (56, 56), 12, 3, 1, [1, 1, 1, 1], 1, 1),    # width 56: 14-pixel vectors, 6-channel rows
    (2, 6, (9, 7), 10, 3, 2, [0, 1, 2, 1], 1, 2),     # batch 2, stride 2, asymmetric pads, groups, odd sizes
    (1, 16, (20, 40), 16, 3, 1, [2, 2, 2, 2], 2, 16),  # depthwise, dilation 2
    (1, 32, (7, 7), 64, 1, 1, [0, 0, 0, 0], 1, 1),     # 1x1 on a 7x7 map (ResNet's last stage)
    (1, 16, (28, 28), 24, 1, 1, [0, 0, 0, 0], 1, 1),   # 1x1 on 28x28: one row of 784 pixels, 16-pixel vectors
    (1, 24, (15, 14), 32, 1, 2, [0, 0, 0, 0], 1, 1),   # strided 1x1: reads one stride phase of the input
    (1, 3, (23, 30), 8, 7, 2, [3, 3, 3, 3], 1, 1),     # a ResNet stem: 7x7 stride 2, both phases
    (1, 4, (17, 19), 6, 3, 3, [1, 2, 0, 1], 2, 1),     # stride 3, dilation 2: kernel rows hit 3 phases
])
def test_direct_conv_matches_torch(n, c, hw, o, k, stride, pads, dil, groups):
    import torch

    g = Graph()
    g.add_input("x", TensorType((n, c) + hw, "float32"))
    w = g.add_param("w", RNG.standard_normal((o, c // groups, k, k)).astype("float32"))
    b = g.add_param("b", RNG.standard_normal(o).astype("float32"))
    xt = torch.from_numpy(RNG.standard_normal((n, c) + hw).astype("float32"))
    padded = torch.nn.functional.pad(xt, [pads[1], pads[3], pads[0], pads[2]])
    ref = torch.relu(torch.nn.functional.conv2d(padded, torch.from_numpy(g.params[w].data),
                                                torch.from_numpy(g.params[b].data), stride, 0, dil, groups))
    out_t = TensorType(tuple(ref.shape), "float32")
    (y,) = g.add_node("conv", ["x", w, b], [out_t], {"strides": [stride] * 2, "pads": pads, "dilations": [dil] * 2,
                                                      "groups": groups})
    (y,) = g.add_node("relu", [y], [out_t])
    g.outputs = [y]
    scheduled = [gv.name_hint for gv, f in lower_graph(g, "x86").functions.items()
                 if isinstance(f, tvm.tirx.PrimFunc) and "tirx.is_scheduled" in f.attrs]
    assert any("conv2d" in name and "relu" in name for name in scheduled), scheduled  # bias and relu fused in
    np.testing.assert_allclose(compile_graph(g)(xt.numpy())[0], ref.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("n,c,hw,o,k,stride,pads,dil", [
    (1, 128, (7, 7), 64, 1, 1, [0, 0, 0, 0], 1),    # ResNet's last stage: 1x1 on 7x7, two channel blocks per tile
    (2, 16, (14, 14), 32, 3, 2, [1, 1, 1, 1], 1),   # batch 2, stride 2 down to 7x7
    (1, 16, (9, 10), 48, 3, 1, [1, 0, 1, 2], 2),    # dilation 2, asymmetric pads, 3 channel blocks (one per tile)
    (1, 16, (14, 14), 32, 3, 1, [1, 1, 1, 1], 1),   # 14-pixel rows: one channel block per tile (1 KiB)
    (1, 128, (14, 14), 32, 1, 2, [0, 0, 0, 0], 1),  # strided 1x1 (ResNet's downsample): every other pixel first
])
def test_narrow_conv_packs_its_weight_and_matches_torch(n, c, hw, o, k, stride, pads, dil):
    """Outputs under 16 pixels wide, sums of at least 128 products: relayout packs the weight OIHW16o, the
    channel-vectorised kernel runs it (bias and relu fused) and matches torch; the interpreter unpacks to the same
    weight. A short reduction keeps the direct kernel."""
    import torch

    from sparsecc.backends.tvm import prepare_graph

    g = Graph()
    g.add_input("x", TensorType((n, c) + hw, "float32"))
    w = g.add_param("w", RNG.standard_normal((o, c, k, k)).astype("float32"))
    b = g.add_param("b", RNG.standard_normal(o).astype("float32"))
    xt = torch.from_numpy(RNG.standard_normal((n, c) + hw).astype("float32"))
    padded = torch.nn.functional.pad(xt, [pads[1], pads[3], pads[0], pads[2]])
    ref = torch.relu(torch.nn.functional.conv2d(padded, torch.from_numpy(g.params[w].data),
                                                torch.from_numpy(g.params[b].data), stride, 0, dil))
    out_t = TensorType(tuple(ref.shape), "float32")
    (y,) = g.add_node("conv", ["x", w, b], [out_t], {"strides": [stride] * 2, "pads": pads, "dilations": [dil] * 2})
    (y,) = g.add_node("relu", [y], [out_t])
    g.outputs = [y]
    assert ref.shape[-1] < 16
    packed = prepare_graph(g, "x86")
    assert packed.params[w].encoding.meta == {"layout": "OIHW16o"} and packed.params[w].data.shape == (o // 16, c, k,
                                                                                                        k, 16)
    np.testing.assert_allclose(run_graph(packed, xt.numpy())[0], run_graph(g, xt.numpy())[0], rtol=1e-6, atol=1e-5)
    funcs = lower_graph(packed, "x86").functions.items()
    scheduled = [gv.name_hint for gv, f in funcs if isinstance(f, tvm.tirx.PrimFunc) and "tirx.is_scheduled" in f.attrs
                 and "sparsecc_conv2d_packed" in f.script()]
    assert any("relu" in name for name in scheduled), scheduled
    np.testing.assert_allclose(compile_graph(g)(xt.numpy())[0], ref.numpy(), rtol=1e-5, atol=1e-4)

    short = Graph()
    short.add_input("x", TensorType((1, 16, 7, 7), "float32"))
    sw = short.add_param("w", RNG.standard_normal((32, 16, 1, 1)).astype("float32"))
    (y,) = short.add_node("conv", ["x", sw], [TensorType((1, 32, 7, 7), "float32")],
                          {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1]})
    short.outputs = [y]
    assert prepare_graph(short, "x86").params[sw].encoding.meta == {}


def test_softmax_exp_is_16_lanes_wide_and_keeps_nan():
    """TVM 0.27 does not mark ``isnan`` vectorizable, so the exp's NaN check scalarised the softmax's exp loop and
    LLVM re-vectorised it 8 lanes wide (MiniLM's attention softmax: 131 us against 97). ``vecmath`` registers it:
    the AVX-512 code compares 16 lanes at once. A row holding NaN stays NaN; the rest match torch."""
    import torch
    from tvm import te
    from tvm.s_tir import dlight as dl

    from sparsecc.backends.tvm import resolve_target
    from sparsecc.backends.tvm.kernels import CPU_RULES
    from sparsecc.backends.tvm.kernels.vecmath import softmax
    from sparsecc.backends.tvm.pipeline import tir_pipeline

    def build(target):
        x = te.placeholder((4, 128), "float32")
        mod = tvm.IRModule({"main": te.create_prim_func([x, softmax(x, 1)])})
        t = resolve_target(target)
        with t:
            mod = dl.ApplyDefaultSchedule(*CPU_RULES)(mod)
        return tvm.compile(mod, t, tir_pipeline=tir_pipeline(t))

    llvm_ir = build(AVX512).mod.inspect_source("ll")
    assert "fcmp uno <16 x float>" in llvm_ir
    a = RNG.standard_normal((4, 128)).astype("float32") * 4
    a[1, 7] = np.nan
    a[2, 64:] = np.finfo(np.float32).min  # masked positions
    out = tvm.runtime.tensor(np.zeros_like(a))
    build("x86")["main"](tvm.runtime.tensor(a), out)
    ref = torch.softmax(torch.from_numpy(a), -1).numpy()
    assert np.isnan(out.numpy()[1]).all()
    np.testing.assert_allclose(np.delete(out.numpy(), 1, 0), np.delete(ref, 1, 0), rtol=1e-6, atol=1e-7)


def test_vectorisable_exp_is_within_an_ulp():
    from tvm import te

    from sparsecc.backends.tvm.kernels.vecmath import exp

    x = te.placeholder((1 << 20,), "float32")
    fn = tvm.compile(te.create_prim_func([x, exp(x)]), {"kind": "llvm"})
    a = np.concatenate([np.linspace(-110, 90, 1 << 19), RNG.standard_normal(1 << 19) * 5]).astype("float32")
    a[:5] = [np.nan, np.inf, -np.inf, 0.0, np.finfo(np.float32).min]  # the last: a masked attention score
    out = tvm.runtime.tensor(np.zeros_like(a))
    fn(tvm.runtime.tensor(a), out)
    out = out.numpy()
    with np.errstate(invalid="ignore"):  # the NaN/inf inputs
        exact = np.exp(a.astype(np.float64))
        err = np.abs(out - exact)
    normal = (exact > np.finfo(np.float32).tiny) & (exact < np.finfo(np.float32).max)
    assert (err / exact)[normal].max() < 1.5e-7  # 1 ulp is 1.19e-7
    assert err[(exact > 0) & ~normal & (exact < 1)].max() < 2e-45  # subnormals exact to 1 ulp
    assert np.isnan(out[0]) and out[1] == np.inf and out[2] == 0.0 and out[3] == 1.0 and out[4] == 0.0
    assert np.isinf(out[a > 88.73]).all() and (out[a < -103.98] == 0).all()
