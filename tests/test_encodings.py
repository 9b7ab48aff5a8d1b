"""Compressed weight encodings (sparsecc.ir.encodings): storage round trips, re-layout, serialization, the graph
passes that must keep companion params, and the TVM kernels that read compressed weights (x86 output vs the
interpreter on the same compressed graph; arm64 and CUDA builds).

Weights here are random codes / random N:M masks on purpose: every encoding and every odd shape is covered
exactly, independently of the compression passes (tests/test_compress.py runs those on real models).
"""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from sparsecc.errors import VerificationError
from sparsecc.fidelity import relative_diff as rel
from sparsecc.interpreter import run_graph
from sparsecc.ir import encodings as E
from sparsecc.ir.encodings import EncodedWeight, QuantSpec
from sparsecc.ir.graph import Graph, TensorType
from sparsecc.ir.layouts import blocked_layout, unpack
from sparsecc.ir.serialize import graph_from_json, graph_to_json, load_graph, save_graph
from sparsecc.ir.verify import verify

Q = QuantSpec
KINDS = {
    "int8": (None, Q(8)),
    "int8-asym": (None, Q(8, symmetric=False)),
    "int4": (None, Q(4)),
    "int4-g32": (None, Q(4, 32)),
    "int4-g32-asym": (None, Q(4, 32, False)),
    "2:4": ((2, 4), None),
    "1:4": ((1, 4), None),
    "4:8": ((4, 8), None),
    "2:16": ((2, 16), None),       # 4-bit indices, select chain of 16
    "4:32": ((4, 32), None),       # 8-bit indices, indexed load
    "2:4+int8": ((2, 4), Q(8)),
    "2:4+int8-asym": ((2, 4), Q(8, symmetric=False)),
    "2:4+int4-g16": ((2, 4), Q(4, 16)),
    "2:4+int4-g16-asym": ((2, 4), Q(4, 16, False)),
    "4:8+int4": ((4, 8), Q(4)),
    "4:32+int8": ((4, 32), Q(8)),
}


def make_encoding(o, k, nm=None, quant=None, shape=None, seed=0):
    """An ``EncodedWeight`` of a random ``[o, k]`` weight: random N:M mask, random codes over the whole grid
    (qmin..qmax), random positive scales and integer zero points."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((o, k)).astype(np.float32)
    values, indices = w, None
    if nm:
        n, m = nm
        keep = np.argsort(rng.random((o, k // m, m)), axis=2)[:, :, :n]
        mask = np.zeros((o, k // m, m), bool)
        np.put_along_axis(mask, keep, True, 2)
        values, indices = E.nm_compress(w, mask.reshape(o, k), n, m)
    scales = zeros = None
    if quant:
        j = values.shape[1]
        groups = quant.groups(j)
        values = rng.integers(quant.qmin, quant.qmax + 1, size=(o, j)).astype(np.int32)
        scales = (rng.random((o, groups)) * 0.1 + 0.01).astype(np.float32)
        if not quant.symmetric:
            zeros = rng.integers(0, quant.qmax + 1, size=(o, groups)).astype(np.float32)
    return EncodedWeight(tuple(shape or (o, k)), values, nm, indices, quant, scales, zeros)


def stored_graph(enc, name="w"):
    """A graph holding ``enc`` as param ``name`` read by one linear (or conv for a 4-D shape)."""
    g = Graph()
    o = enc.shape[0]
    if len(enc.shape) == 2:
        g.add_input("x", TensorType((3, enc.shape[1]), "float32"))
        g.add_param(name, np.zeros(enc.shape, np.float32))
        (y,) = g.add_node("linear", ["x", name], [TensorType((3, o), "float32")])
    else:
        g.add_input("x", TensorType((1, enc.shape[1], 5, 5), "float32"))
        g.add_param(name, np.zeros(enc.shape, np.float32))
        (y,) = g.add_node("conv", ["x", name], [TensorType((1, o, 5, 5), "float32")],
                          dict(strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1]))
    g.outputs = [y]
    E.store(g, name, enc)
    return g


def assert_same_encoding(got, want):
    assert got.shape == want.shape and got.nm == want.nm and got.quant == want.quant and got.kind == want.kind
    np.testing.assert_array_equal(got.values, want.values)
    for a, b in ((got.indices, want.indices), (got.scales, want.scales), (got.zeros, want.zeros)):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)
    dense = got.dense()
    assert dense.dtype == np.float32 and dense.shape == tuple(want.shape)
    np.testing.assert_array_equal(dense, want.dense())  # exact: same float32 operations


# ---- storage ----------------------------------------------------------------------------------------------------
def test_int7_codes_take_a_byte_each():
    """W7A8's int7 codes are stored as int8: ``nbytes`` (the plan's bytes, the planner's size budgets) counts a
    byte per code, as for W8A8, plus the scales and column sums."""
    enc = make_encoding(16, 32, None, QuantSpec(7))
    enc.activation = (0.01, 128)
    g = stored_graph(enc)
    assert g.params["w"].data.dtype == np.int8 and enc.nbytes() == 16 * 32 + 16 * 4 + 16 * 4
    assert enc.nbytes() == sum(g.params[n].data.nbytes for n in ("w", "w.scales", "w.colsums"))


def test_store_rejects_codes_outside_their_bits():
    """Codes that do not fit the encoding's bits are an error naming the weight, not a silent overflow: an int7
    (W7A8) weight's kernel on AVX2 saturates beyond +-63."""
    enc = make_encoding(16, 32, None, QuantSpec(7))
    enc.values[0, 0] = 100
    with pytest.raises(ValueError, match=r"int7 codes of w span \[.*100\], outside \[-63, 63\]"):
        stored_graph(enc)


@pytest.mark.parametrize("kind", list(KINDS))
def test_store_load_round_trip(kind):
    """store then load gives back the same encoding, and the stored arrays have the documented dtypes/shapes."""
    nm, quant = KINDS[kind]
    o, k = 24, 128
    enc = make_encoding(o, k, nm, quant)
    g = stored_graph(enc)
    verify(g)
    assert_same_encoding(E.load(g, "w"), enc)
    assert E.is_compressed(g, "w") and g.params["w"].encoding.kind == kind
    j = k * nm[0] // nm[1] if nm else k
    data = g.params["w"].data
    meta = g.params["w"].encoding.meta
    if quant is None:
        assert data.dtype == np.float32 and data.shape == (o, j)
    elif quant.bits == 8:
        assert data.dtype == (np.int8 if quant.symmetric else np.uint8) and data.shape == (o, j)
    else:
        assert data.dtype == np.uint8 and data.shape == (o, j // 2)
    if nm:
        idx = g.params[meta["indices"]].data
        assert idx.dtype == np.uint8 and idx.shape == (o, j * E.index_bits(nm[1]) // 8)
        assert meta["nm"] == list(nm)
    else:
        assert "indices" not in meta
    if quant:
        assert g.params[meta["scales"]].data.shape == (o, quant.groups(j))
        assert ("zeros" in meta) == (not quant.symmetric)
    assert g.types["w"] == g.params["w"].type and all(g.types[meta[c]] == g.params[meta[c]].type
                                                      for c in E.COMPANIONS if c in meta)


@pytest.mark.parametrize("nm", [(2, 4), (1, 4), (4, 8), (2, 16), (4, 32)])
def test_nm_dense_is_masked_weight(nm):
    """Without quantization an N:M encoding decodes to exactly the masked weight, n of every m kept."""
    n, m = nm
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    keep = np.argsort(rng.random((8, 64 // m, m)), axis=2)[:, :, :n]
    mask = np.zeros((8, 64 // m, m), bool)
    np.put_along_axis(mask, keep, True, 2)
    mask = mask.reshape(8, 64)
    values, indices = E.nm_compress(w, mask, n, m)
    assert values.shape == indices.shape == (8, 64 * n // m)
    enc = EncodedWeight((8, 64), values, nm, indices)
    np.testing.assert_array_equal(E.load(stored_graph(enc), "w").dense(), np.where(mask, w, 0))
    with pytest.raises(ValueError, match="not keep exactly"):
        E.nm_compress(w, np.ones_like(mask), n, m)


def test_conv_weight_round_trip():
    """A 4-D conv weight keeps its logical shape through store/load (reduction = Cin*kh*kw, input channel
    slowest)."""
    enc = make_encoding(16, 72, (2, 4), Q(4, 12), shape=(16, 8, 3, 3))
    g = stored_graph(enc)
    got = E.load(g, "w")
    assert got.shape == (16, 8, 3, 3) and got.reduction == 72
    assert_same_encoding(got, enc)


def test_pack_unpack_bits_inverse():
    """pack_bits/unpack_bits are inverse for 2, 4 and 8-bit fields, lowest bits first."""
    rng = np.random.default_rng(2)
    for bits in (2, 4, 8):
        a = rng.integers(0, 1 << bits, size=(5, 32)).astype(np.uint8)
        packed = E.pack_bits(a, bits)
        assert packed.dtype == np.uint8 and packed.shape == (5, 32 * bits // 8)
        np.testing.assert_array_equal(E.unpack_bits(packed, bits), a)
    assert E.pack_bits(np.array([1, 2, 3, 0]), 2).tolist() == [1 | 2 << 2 | 3 << 4]
    assert E.pack_bits(np.array([0xA, 0x5]), 4).tolist() == [0x5A]  # even field in the low nibble
    with pytest.raises(ValueError, match="whole bytes"):
        E.pack_bits(np.zeros((2, 3), np.uint8), 4)


def test_quant_spec_validation():
    """QuantSpec rejects unsupported bit widths, non-positive groups and groups that do not divide the columns."""
    with pytest.raises(ValueError, match="only 4 and 8"):
        Q(3)
    with pytest.raises(ValueError, match="positive"):
        Q(4, 0)
    with pytest.raises(ValueError, match="multiple of the group"):
        Q(4, 32).groups(48)
    assert (Q(8).qmin, Q(8).qmax, Q(4).qmin, Q(4).qmax) == (-127, 127, -7, 7)
    assert (Q(4, symmetric=False).qmin, Q(4, symmetric=False).qmax) == (0, 15)
    assert Q(4, 64, False).name == "int4-g64-asym"


def test_nbytes_known_values():
    """nbytes counts packed codes, packed indices and float32 scales/zeros, and matches the stored arrays."""
    enc = make_encoding(64, 128, (2, 4), Q(4))
    assert enc.nbytes() == 64 * 64 // 2 + 64 * 64 * 2 // 8 + 64 * 1 * 4 == 3328
    enc_g = make_encoding(64, 128, (2, 4), Q(4, 32))
    assert enc_g.nbytes() == 2048 + 1024 + 64 * 2 * 4
    assert make_encoding(64, 128, None, Q(8, symmetric=False)).nbytes() == 64 * 128 + 2 * 64 * 4
    assert make_encoding(64, 128, (4, 32), None).nbytes() == 64 * 16 * 4 + 64 * 16
    for kind, (nm, quant) in KINDS.items():
        enc = make_encoding(32, 128, nm, quant)
        g = stored_graph(enc)
        meta = g.params["w"].encoding.meta
        stored = g.params["w"].data.nbytes + sum(g.params[meta[c]].data.nbytes for c in E.COMPANIONS if c in meta)
        assert enc.nbytes() == stored, kind


# ---- re-layout ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(KINDS))
def test_relayout_then_load_is_identity(kind):
    """relayout to OI16o changes storage only: load gives the same encoding; bit-packed arrays become uint32
    little-endian words, the others keep their dtype; every array is [O/16, columns, 16]."""
    nm, quant = KINDS[kind]
    enc = make_encoding(32, 128, nm, quant)
    g = stored_graph(enc)
    before = {k: p.data for k, p in g.params.items()}
    layout = blocked_layout(16)
    assert E.can_relayout(g, "w", 16)
    E.relayout(g, "w", 16)
    verify(g)
    assert not E.can_relayout(g, "w", 16)  # already laid out
    meta = g.params["w"].encoding.meta
    assert meta["layout"] == layout
    packed = {"w": quant is not None and quant.bits == 4,
              meta.get("indices"): nm is not None and E.index_bits(nm[1]) < 8}
    for name in ["w"] + [meta[c] for c in E.COMPANIONS if c in meta]:
        arr, old = g.params[name].data, before[name]
        assert arr.ndim == 3 and arr.shape[0] == 2 and arr.shape[2] == 16
        if packed.get(name):
            assert arr.dtype == np.uint32 and arr.shape[1] * 4 == old.shape[1]
            words = unpack(arr, layout)
            np.testing.assert_array_equal(words & 0xFF, old[:, 0::4])  # little-endian: byte 0 lowest
            np.testing.assert_array_equal(words >> 24, old[:, 3::4])
        else:
            assert arr.dtype == old.dtype
            np.testing.assert_array_equal(unpack(arr, layout), old)
        if name != "w":
            assert g.params[name].encoding.meta == {"companion_of": "w"}
    assert_same_encoding(E.load(g, "w"), enc)


@pytest.mark.parametrize("o,k,kind,ok", [
    (32, 128, "2:4+int4-g16", True),
    (20, 128, "int8", False),          # rows not a multiple of the block
    (32, 36, "int4", False),           # 18 bytes of nibbles: not whole uint32 words
    (32, 40, "2:4", False),            # 20 kept values: 5 bytes of 2-bit indices
    (32, 40, "int8", True),            # nothing bit-packed: any K
    (32, 40, "4:8", False),            # 20 kept values: 10 bytes of 4-bit indices
    (32, 64, "4:32", True),            # 8-bit indices are not bit-packed
])
def test_can_relayout(o, k, kind, ok):
    """Relayout is refused when rows are not a multiple of the block or bit-packed arrays do not fill words;
    prepare_graph for x86 follows it, and never lays out for CUDA."""
    from sparsecc.backends.tvm import prepare_graph

    nm, quant = KINDS[kind]
    g = stored_graph(make_encoding(o, k, nm, quant))
    assert E.can_relayout(g, "w", 16) == ok
    assert ("layout" in prepare_graph(g, "x86").params["w"].encoding.meta) == ok
    assert "layout" not in prepare_graph(g, "cuda").params["w"].encoding.meta
    assert "layout" not in g.params["w"].encoding.meta  # prepare_graph copies


# ---- serialization and graph passes --------------------------------------------------------------------------------
@pytest.mark.parametrize("relaid", [False, True])
def test_serialization_keeps_encoding(relaid, tmp_path):
    """graph_to_json (through real JSON) / graph_from_json and save_graph/load_graph keep every encoding and
    its companions: the decoded weights and the interpreter's output are unchanged."""
    g = Graph()
    g.add_input("x", TensorType((2, 128), "float32"))
    encs = {"w1": make_encoding(32, 128, (2, 4), Q(4, 16, False), seed=3),
            "w2": make_encoding(16, 32, None, Q(8), seed=4)}
    g.add_param("w1", np.zeros((32, 128), np.float32))
    g.add_param("w2", np.zeros((16, 32), np.float32))
    (h,) = g.add_node("linear", ["x", "w1"], [TensorType((2, 32), "float32")])
    (y,) = g.add_node("linear", [h, "w2"], [TensorType((2, 16), "float32")])
    g.outputs = [y]
    for name, enc in encs.items():
        E.store(g, name, enc)
    if relaid:
        for name in encs:
            E.relayout(g, name, 16)
    x = np.random.default_rng(5).standard_normal((2, 128)).astype(np.float32)
    ref = run_graph(g, x)[0]
    doc, arrays = graph_to_json(g)
    back = graph_from_json(json.loads(json.dumps(doc)), arrays)
    path = str(tmp_path / "g.zip")
    save_graph(g, path)
    for g2 in (back, load_graph(path)):
        verify(g2)
        assert set(g2.params) == set(g.params)
        for name, enc in encs.items():
            assert g2.params[name].encoding.kind == enc.kind
            assert_same_encoding(E.load(g2, name), enc)
        np.testing.assert_array_equal(run_graph(g2, x)[0], ref)


def test_dead_code_keeps_companions_and_drops_dead_ones():
    """eliminate_dead_code keeps a live compressed weight's companions (no node reads them) and removes a
    dead compressed weight together with its companions."""
    from sparsecc.passes.canonicalize import eliminate_dead_code

    g = Graph()
    g.add_input("x", TensorType((2, 64), "float32"))
    g.add_param("w", np.zeros((16, 64), np.float32))
    g.add_param("dead", np.zeros((16, 64), np.float32))
    (y,) = g.add_node("linear", ["x", "w"], [TensorType((2, 16), "float32")])
    g.add_node("linear", ["x", "dead"], [TensorType((2, 16), "float32")])
    g.outputs = [y]
    E.store(g, "w", make_encoding(16, 64, (2, 4), Q(8, symmetric=False)))
    E.store(g, "dead", make_encoding(16, 64, (2, 4), Q(4)))
    assert {"w.scales", "w.zeros", "w.indices", "dead.scales", "dead.indices"} <= set(g.params)
    x = np.ones((2, 64), np.float32)
    ref = run_graph(g, x)[0]
    g = eliminate_dead_code(g)
    assert set(g.params) == {"w", "w.scales", "w.zeros", "w.indices"}
    assert len(g.nodes) == 1
    verify(g)
    np.testing.assert_array_equal(run_graph(g, x)[0], ref)


@pytest.mark.parametrize("missing", ["scales", "indices", "zeros"])
def test_verify_rejects_missing_companion(missing):
    """verify names the compressed weight and the companion that is not a param."""
    g = stored_graph(make_encoding(16, 64, (2, 4), Q(8, symmetric=False)))
    verify(g)
    name = g.params["w"].encoding.meta[missing]
    del g.params[name], g.types[name]
    with pytest.raises(VerificationError, match=f"'w'.*{missing}"):
        verify(g)


# ---- kernels: compiled x86 vs the interpreter -----------------------------------------------------------------------
KERNEL_KINDS = ["int8", "int8-asym", "int4", "int4-g32", "int4-g32-asym", "2:4", "1:4", "2:16", "4:32",
                "2:4+int8", "2:4+int4-g16", "2:4+int4-g16-asym", "4:8+int4", "4:32+int8"]
SHAPES = {  # id: (rows O, reduction K, leading dims, bias, epilogue)
    "gemv": (64, 128, (1,), True, None),
    "batch2x7": (48, 256, (2, 7), False, None),
    "rows20": (20, 128, (5,), True, None),           # rows not a multiple of 16: unpacked decode path
    "k40": (32, 40, (3,), True, None),                # K whose bit-packed arrays may not fill uint32 words
    "gelu": (32, 64, (2, 3), True, "gelu"),           # fused epilogue after the linear
    "symbolic": (32, 128, ("batch", 4), False, None),  # symbolic leading dim, run with batch 3
    "vector": (32, 64, (), True, None),               # a 1-D input: decode path even when packed
    "rows16": (32, 128, ("batch", 16), True, "gelu"),  # >= 16 rows: N:M decoded once per call, then dense GEMM
}


def _valid(kind, k):
    nm, quant = KINDS[kind]
    if nm and k % nm[1]:
        return False
    j = k * nm[0] // nm[1] if nm else k
    if nm and (j * E.index_bits(nm[1])) % 8:
        return False
    if quant and ((quant.group and j % quant.group) or (quant.bits == 4 and j % 2)):
        return False
    return True


KERNEL_CASES = [pytest.param(kind, shape, id=f"{kind}-{shape}") for kind in KERNEL_KINDS for shape in SHAPES
                if _valid(kind, SHAPES[shape][1])]


def linear_graph(enc, lead, bias, act, seed=0):
    rng = np.random.default_rng(seed)
    o, k = enc.shape
    g = Graph()
    g.add_input("x", TensorType(tuple(lead) + (k,), "float32"))
    g.add_param("w", np.zeros((o, k), np.float32))
    ins = ["x", "w"] + ([g.add_param("b", rng.standard_normal(o).astype(np.float32))] if bias else [])
    out = TensorType(tuple(lead) + (o,), "float32")
    (y,) = g.add_node("linear", ins, [out])
    if act:
        (y,) = g.add_node(act, [y], [out])
    g.outputs = [y]
    E.store(g, "w", enc)
    verify(g)
    return g


@pytest.mark.parametrize("kind,shape", KERNEL_CASES)
def test_linear_kernel_matches_interpreter(kind, shape):
    """The compiled x86 linear on a compressed weight (packed dense_encoded kernel where the weight re-lays out,
    decode + matmul otherwise) equals the interpreter on the same graph, and the interpreter equals x @ W^T
    with the decoded W."""
    from sparsecc.backends.tvm import compile_graph, prepare_graph

    nm, quant = KINDS[kind]
    o, k, lead, bias, act = SHAPES[shape]
    enc = make_encoding(o, k, nm, quant, seed=KERNEL_KINDS.index(kind) * 10 + list(SHAPES).index(shape))
    g = linear_graph(enc, lead, bias, act)
    concrete = tuple(3 if d == "batch" else d for d in lead)
    x = np.random.default_rng(7).standard_normal(concrete + (k,)).astype(np.float32)
    ref = run_graph(g, x)[0]
    expect = x.astype(np.float64) @ enc.dense().astype(np.float64).T + (g.params["b"].data if bias else 0)
    if act == "gelu":
        expect = torch.nn.functional.gelu(torch.from_numpy(expect)).numpy()
    assert rel(ref, expect) <= 1e-5
    out = compile_graph(g, "x86")(x)[0]
    assert out.shape == ref.shape
    assert rel(out, ref) <= 1e-5, f"{kind} {shape}: {rel(out, ref):.2e}"
    packed = "layout" in prepare_graph(g, "x86").params["w"].encoding.meta
    assert packed == E.can_relayout(g, "w", 16)
    if shape == "rows20":
        assert not packed


@pytest.mark.parametrize("kind", ["2:4", "2:4+int4-g16", "4:8+int4", "2:16"])
@pytest.mark.parametrize("mcpu,permute", [("znver4", "permvar.sf.512"), ("haswell", "avx2.permps"), ("x86-64", None)],
                         ids=["avx512", "avx2", "sse"])
def test_nm_input_pick_is_a_permute_or_a_select_chain(kind, mcpu, permute):
    """``kernels/window_gather.py``: the per-lane input an N:M weight picks compiles to one 16-lane ``vpermps``
    with AVX-512, to 8-lane ``vpermps`` on both halves of the block with AVX2, to a select chain without either,
    never to a per-lane gather; each computes what the interpreter computes where this CPU runs it."""
    from tvm.target.codegen import llvm_get_system_cpu, target_has_features

    from sparsecc.backends.tvm import Runner, build, prepare_graph, resolve_target

    target = {"kind": "llvm", "mcpu": mcpu}
    nm, quant = KINDS[kind]
    g = linear_graph(make_encoding(48, 128, nm, quant, seed=5), (1,), True, None)
    prepared = prepare_graph(g, target)
    executable = build(prepared, target)
    llvm = "".join(m.inspect_source("ll") for m in [executable.mod, *executable.mod.imports] if m.kind == "llvm")
    assert [p for p in ("permvar.sf.512", "avx2.permps") if p in llvm] == ([permute] if permute else [])
    # a per-lane gather fills its vector lane by lane, up to lane 15; a broadcast only ever writes lane 0
    assert not re.search(r"insertelement <16 x float> .*, i(32|64) 15\b", llvm)
    host = resolve_target({"kind": "llvm", "mcpu": llvm_get_system_cpu()})
    if mcpu == "znver4" and not target_has_features("avx512f", host):
        pytest.skip("this CPU has no AVX-512 to run the code")
    x = np.random.default_rng(2).standard_normal((1, 128)).astype(np.float32)
    params = {k: p.data for k, p in prepared.params.items()}
    out = Runner(executable, [TensorType((1, 128), "float32")], prepared.outputs, params)(x)[0]
    assert rel(out, run_graph(g, x)[0]) <= 1e-5


def test_packed_encoded_kernel_is_scheduled():
    """A CPU-packed compressed linear lowers to one dense_encoded PrimFunc scheduled by the register-tiled
    template, with the gelu epilogue fused into it; from 16 rows an N:M one decodes its weight once per call into a
    packed dense weight for the dense kernel; a refused one lowers to decode_weight instead."""
    import tvm

    from sparsecc.backends.tvm import lower_graph, prepare_graph

    def functions(graph):
        mod = lower_graph(prepare_graph(graph, "x86"), "x86")
        return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}

    enc = make_encoding(64, 128, (2, 4), Q(4, 16))
    funcs = functions(linear_graph(enc, ("batch", 4), True, "gelu"))
    encoded = [n for n in funcs if "dense_encoded" in n]
    assert len(encoded) == 1 and funcs[encoded[0]].attrs["tirx.is_scheduled"]
    assert "gelu" in encoded[0]
    assert not any("decode" in n for n in funcs)

    funcs = functions(linear_graph(enc, ("batch", 16), True, "gelu"))
    dense = [n for n in funcs if "dense_packed" in n]
    assert len(dense) == 1 and "gelu" in dense[0] and funcs[dense[0]].attrs["tirx.is_scheduled"]
    assert any("decode_packed" in n for n in funcs) and not any("dense_encoded" in n for n in funcs)

    refused = linear_graph(make_encoding(20, 128, (2, 4), Q(4, 16)), (4,), True, None)
    names = [gv.name_hint for gv, f in lower_graph(prepare_graph(refused, "x86"), "x86").functions.items()
             if isinstance(f, tvm.tirx.PrimFunc)]
    assert any("decode_weight" in n for n in names) and not any("dense_encoded" in n for n in names)


CONV_CASES = {  # id: (kind, x shape, weight shape, strides, pads (top, left, bottom, right), dilations, groups, bias)
    "int8": ("int8", (2, 8, 11, 9), (16, 8, 3, 3), [2, 1], [1, 0, 1, 2], [1, 1], 1, True),
    "int4-g8-asym": ("int4-g8-asym", (1, 8, 10, 10), (16, 8, 3, 3), [1, 1], [1, 1, 1, 1], [2, 2], 1, False),
    "2:4+int4": ("2:4+int4", (2, 8, 9, 9), (12, 8, 3, 3), [1, 1], [0, 0, 0, 0], [1, 1], 1, True),
    "2:4+int8": ("2:4+int8", (2, 16, 7, 7), (32, 16, 1, 1), [1, 1], [0, 0, 0, 0], [1, 1], 1, True),
    "4:8-grouped": ("4:8", (1, 16, 6, 6), (16, 8, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 2, True),
    "4:32-8bit-idx": ("4:32", (1, 32, 5, 5), (8, 32, 1, 1), [1, 1], [0, 0, 0, 0], [1, 1], 1, False),
}
CONV_KINDS = {"int4-g8-asym": (None, Q(4, 8, False)), "2:4+int4": ((2, 4), Q(4))}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_kernel_matches_interpreter(case):
    """A conv with a compressed weight (decoded in the kernel, then the conv template) equals the interpreter,
    which equals torch's conv2d with the decoded weight."""
    from sparsecc.backends.tvm import compile_graph

    kind, xs, ws, strides, pads, dil, groups, bias = CONV_CASES[case]
    nm, quant = CONV_KINDS.get(kind) or KINDS[kind]
    rng = np.random.default_rng(11)
    enc = make_encoding(ws[0], int(np.prod(ws[1:])), nm, quant, shape=ws, seed=12)
    x = rng.standard_normal(xs).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32) if bias else None
    top, left, bottom, right = pads
    expect = torch.nn.functional.conv2d(
        torch.nn.functional.pad(torch.from_numpy(x), (left, right, top, bottom)), torch.from_numpy(enc.dense()),
        None if b is None else torch.from_numpy(b), stride=strides, dilation=dil, groups=groups).numpy()
    g = Graph()
    g.add_input("x", TensorType(xs, "float32"))
    g.add_param("w", np.zeros(ws, np.float32))
    ins = ["x", "w"] + ([g.add_param("b", b)] if bias else [])
    (y,) = g.add_node("conv", ins, [TensorType(expect.shape, "float32")],
                      dict(strides=strides, pads=pads, dilations=dil, groups=groups))
    g.outputs = [y]
    E.store(g, "w", enc)
    verify(g)
    ref = run_graph(g, x)[0]
    assert rel(ref, expect) <= 1e-5
    out = compile_graph(g, "x86")(x)[0]
    assert rel(out, ref) <= 1e-5, f"{case}: {rel(out, ref):.2e}"


# ---- other targets ------------------------------------------------------------------------------------------------
TARGET_GRAPHS = {"int8": ("int8", 64, 128), "2:4+int4-g16": ("2:4+int4-g16", 64, 128)}


def _target_graph(kind):
    kind, o, k = TARGET_GRAPHS[kind]
    nm, quant = KINDS[kind]
    return linear_graph(make_encoding(o, k, nm, quant), ("batch", 8), True, "gelu")


@pytest.mark.parametrize("kind", list(TARGET_GRAPHS))
def test_arm64_build(kind, tmp_path):
    """Compressed linears build for arm64 (NEON, packed dense_encoded kernel) and export with the cross gcc."""
    from sparsecc.backends.tvm import build, export_cc, prepare_graph

    cc = export_cc("arm64")
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed (Debian: apt-get install gcc-aarch64-linux-gnu)")
    prepared = prepare_graph(_target_graph(kind), "arm64")
    assert "layout" in prepared.params["w"].encoding.meta
    path = tmp_path / "lib.so"
    build(prepared, "arm64").export_library(str(path), cc=cc)
    assert path.read_bytes()[:4] == b"\x7fELF" and path.read_bytes()[18] == 183  # e_machine = EM_AARCH64


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(TARGET_GRAPHS))
def test_arm64_emulated_run_matches_x86(kind, tmp_path):
    """Under qemu, the arm64 artifact of a compressed graph computes what the interpreter computes."""
    import sparsecc
    from sparsecc.backends.tvm.emulation import arm64_dir, arm64_root, run_arm64

    if arm64_root() is None:
        pytest.skip(f"no aarch64 root in {arm64_dir()} (or no qemu-aarch64-static): run scripts/setup_arm64.sh")
    g = _target_graph(kind)
    path = tmp_path / "m.scc"
    sparsecc.compile(None, graph=g, target="arm64").save(path)
    x = np.random.default_rng(3).standard_normal((3, 8, 128)).astype(np.float32)
    out = run_arm64(path, {"x": x})
    assert rel(out[g.outputs[0]], run_graph(g, x)[0]) <= 1e-5


@pytest.mark.parametrize("kind", list(TARGET_GRAPHS))
def test_cuda_build(kind):
    """Compressed linears build for CUDA (decode_weight + dense GPU matmul) and nvcc compiles the kernels."""
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed: CUDA code cannot be built here")
    from conftest import assert_cuda_compiles

    from sparsecc.backends.tvm import build, prepare_graph

    prepared = prepare_graph(_target_graph(kind), "cuda")
    assert "layout" not in prepared.params["w"].encoding.meta
    ex = build(prepared, "cuda")
    assert_cuda_compiles(ex, "sm_80")


# ---- W8A8 ---------------------------------------------------------------------------------------------------------
def w8a8_graph(o, k, lead, bias=True, act=None, bits=8):
    """One linear with int8 (or int7: W7A8) per-channel codes (RTN) and a static uint8 input grid of [-2, 2]."""
    from sparsecc.passes.compress import quantize

    rng = np.random.default_rng(7)
    g = Graph()
    g.add_input("x", TensorType(tuple(lead) + (k,), "float32"))
    w = rng.standard_normal((o, k)).astype(np.float32)
    name = g.add_param("w", w)
    ins = ["x", name] + ([g.add_param("b", rng.standard_normal(o).astype(np.float32))] if bias else [])
    (y,) = g.add_node("linear", ins, [TensorType(tuple(lead) + (o,), "float32")])
    if act:
        (y,) = g.add_node(act, [y], [TensorType(tuple(lead) + (o,), "float32")])
    g.outputs = [y]
    enc = quantize.rtn(w, QuantSpec(bits))
    enc.activation = (4.0 / 255, 128)
    E.store(g, name, enc)
    return g


@pytest.mark.parametrize("o,k,lead,bias,act", [
    (64, 128, (3,), True, None),        # GEMM rows not a multiple of the tile
    (48, 96, (1,), False, None),        # GEMV
    (32, 64, ("batch", 16), True, "gelu"),  # symbolic batch, fused epilogue
    (32, 64, ("batch",), True, "relu"),  # rows a bare symbol: no tile size provably divides them
    (20, 36, (5,), True, None),         # rows not a multiple of 16: unpacked, unscheduled path
])
@pytest.mark.parametrize("bits", [8, 4], ids=["w8a8", "w4a8"])
def test_w8a8_kernel_matches_interpreter(o, k, lead, bias, act, bits):
    """The host's integer kernel (or the plain integer compute) gives the interpreter's W8A8 (W4A8) result;
    packed shapes are scheduled by the VNNI rule where the host has AVX-512 VNNI."""
    from tvm.target.codegen import target_has_features

    from sparsecc.backends.tvm import compile_graph, lower_graph, prepare_graph, resolve_target

    g = w8a8_graph(o, k, lead, bias, act, bits=bits)
    assert g.params["w"].encoding.kind == f"w{bits}a8"
    assert g.params["w"].data.dtype == (np.int8 if bits == 8 else np.uint8)
    x = np.random.default_rng(1).standard_normal(tuple(2 if d == "batch" else d for d in lead) + (k,)) \
        .astype(np.float32)
    assert rel(compile_graph(g)(x)[0], run_graph(g, x)[0]) <= 1e-5
    if o % 16 == 0 and target_has_features("avx512vnni", resolve_target("x86")):
        mod = lower_graph(prepare_graph(g, "x86"), "x86")
        assert any(f"w{bits}a8" in gv.name_hint and f.attrs.get("tirx.is_scheduled")
                   for gv, f in mod.functions.items())


@pytest.mark.parametrize("target,bits,layout,instruction", [
    ({"kind": "llvm", "mcpu": "znver4"}, 8, "OI16o4i", "vpdpbusd"),
    ({"kind": "llvm", "mcpu": "haswell"}, 8, "OI16o2i", "vpmaddwd"),
    ({"kind": "llvm", "mcpu": "haswell"}, 7, "OI16o4i", "vpmaddubsw"),
    ({"kind": "llvm", "mcpu": "znver4"}, 7, "OI16o4i", "vpdpbusd"),
    ({"kind": "llvm", "mcpu": "haswell"}, 4, "OI16o4i", "vpmaddubsw"),
    ({"kind": "llvm", "mcpu": "znver4"}, 4, "OI16o4i", "vpdpbusd"),
], ids=["avx512-vnni", "avx2", "avx2-w7a8", "avx512-vnni-w7a8", "avx2-w4a8", "avx512-vnni-w4a8"])
@pytest.mark.parametrize("lead", [(128,), (1,)], ids=["gemm", "gemv"])
def test_w8a8_linear_uses_the_targets_dot_product(target, bits, layout, instruction, lead):
    """The W8A8 weight is packed for the target's integer dot product (VNNI: 16 outputs x 4 inputs; AVX2 without
    it: 16 x 2 for ``vpmaddwd``, inputs quantized to int16; W7A8 and W4A8 on AVX2: 16 x 4 for ``vpmaddubsw``),
    whose instruction the kernel's code holds; where this CPU can run the code, it computes the interpreter's
    result."""
    from tvm.target.codegen import llvm_get_system_cpu, target_has_features

    from sparsecc.backends.tvm import build, compile_graph, prepare_graph, resolve_target

    g = w8a8_graph(64, 96, lead, act="gelu", bits=bits)
    prepared = prepare_graph(g, target)
    assert prepared.params["w"].encoding.meta["layout"] == layout
    ex = build(prepared, target)
    asm = "".join(m.inspect_source("asm") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")
    assert instruction in asm
    if instruction != "vpdpbusd":  # the intrinsic's operands stay in registers (TVMScript locals were a runtime
        # workspace call per tile); VNNI's 8 x 32 int32 tile is 1 KB, at TVM's stack limit, so it has one anyway
        assert "AllocWorkspace@GOTPCREL" not in asm
    host = resolve_target({"kind": "llvm", "mcpu": llvm_get_system_cpu()})
    if not all(target_has_features(f, host) for f in ("avx2", *(["avx512vnni"] if instruction == "vpdpbusd" else []))):
        pytest.skip(f"this CPU cannot run {instruction}")
    x = np.random.default_rng(3).standard_normal(lead + (96,)).astype(np.float32)
    assert rel(compile_graph(g, target)(x)[0], run_graph(g, x)[0]) <= 1e-5


@pytest.mark.parametrize("bits", [7, 4], ids=["w7a8", "w4a8"])
@pytest.mark.parametrize("lead", [(32,), (1,)], ids=["gemm", "gemv"])
def test_narrow_codes_avx2_kernel_is_exact_at_the_extremes(lead, bits):
    """``vpmaddubsw`` sums two uint8 x int8 products in int16 and saturates beyond it: int7 codes keep every pair
    within it (int4 ones too, unpacked from their nibbles). Codes at their extremes (+-63, +-7) against inputs at
    the grid's ends (codes 0 and 255, the largest pair sums that can occur) give exactly the interpreter's integer
    result on the AVX2 kernel."""
    from tvm.target.codegen import llvm_get_system_cpu, target_has_features

    from sparsecc.backends.tvm import build, compile_graph, prepare_graph, resolve_target

    g = w8a8_graph(32, 64, lead, bits=bits, bias=False)
    rng = np.random.default_rng(5)
    enc = E.load(g, "w")
    top = QuantSpec(bits).qmax
    enc.values = np.where(rng.random(enc.values.shape) < 0.5, -top, top).astype(np.int32)
    E.store(g, "w", enc)
    target = {"kind": "llvm", "mcpu": "haswell"}
    ex = build(prepare_graph(g, target), target)
    assert "vpmaddubsw" in "".join(m.inspect_source("asm") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")
    if not target_has_features("avx2", resolve_target({"kind": "llvm", "mcpu": llvm_get_system_cpu()})):
        pytest.skip("this CPU has no AVX2")
    x = np.where(rng.random(lead + (64,)) < 0.5, -3.0, 3.0).astype(np.float32)  # codes 0 and 255 (grid [-2, 2])
    x[..., :2] = 3.0  # a pair of 255s: against codes (63, 63) or (-63, -63), 2 x 255 x 63 = 32130 (int7)
    want = run_graph(g, x)[0]
    np.testing.assert_allclose(compile_graph(g, target)(x)[0], want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_w4a8_weight_packs_each_block_in_halves():
    """A W4A8 weight is stored like any int4 one (``[O, K/2]``, two codes per byte); re-laid out for the CPU kernel
    each 16 x 4 block of codes becomes 32 bytes, the block's first 32 codes in their low nibbles and its last 32
    in the high ones, and ``load`` gives the same codes back."""
    from sparsecc.backends.tvm.relayout import relayout_weights

    g = w8a8_graph(32, 64, (1,), bits=4)
    codes = E.load(g, "w").values
    assert g.params["w"].encoding.kind == "w4a8" and g.params["w"].data.shape == (32, 32)
    assert codes.min() >= -7 and codes.max() <= 7 and codes.min() < 0 < codes.max()
    packed = relayout_weights(g, "x86")
    data = packed.params["w"].data
    assert packed.params["w"].encoding.meta["layout"] == "OI16o4i" and data.shape == (2, 16, 32)
    block = (codes[16:32, 8:12] + 8).reshape(-1)  # outputs 16-31, inputs 8-11: block (1, 2), output-major
    np.testing.assert_array_equal(data[1, 2], block[:32] | block[32:] << 4)
    np.testing.assert_array_equal(E.load(packed, "w").values, codes)
    np.testing.assert_array_equal(E.companion(packed, "w", "colsums"), codes.sum(1, keepdims=True))


def test_w4a8_is_for_linear_weights_only():
    """``store`` names the problem instead of writing a W4A8 convolution weight no kernel reads."""
    from sparsecc.passes.compress import quantize

    g = Graph()
    name = g.add_param("w", np.ones((16, 4, 3, 3), np.float32))
    enc = quantize.rtn(np.ones((16, 36), np.float32), QuantSpec(4))
    enc.shape, enc.activation = (16, 4, 3, 3), (4.0 / 255, 128)
    with pytest.raises(ValueError, match=r"W4A8 is for linear weights only, not a weight of shape \[16, 4, 3, 3\]"):
        E.store(g, name, enc)


@pytest.mark.parametrize("target", ["arm64", "cuda"])
def test_w4a8_linear_builds_for_other_targets(target):
    """Without AVX2 the W4A8 linear is the same integer compute on TVM's loops, nibbles unpacked in them (arm64:
    cross-compiled; CUDA: nvcc compiles the kernels)."""
    from sparsecc.backends.tvm import build, export_cc, prepare_graph

    tool = "nvcc" if target == "cuda" else export_cc("arm64")
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    ex = build(prepare_graph(w8a8_graph(64, 96, (4,), act="gelu", bits=4), target), target)
    if target == "cuda":
        from conftest import assert_cuda_compiles

        assert_cuda_compiles(ex, "sm_80")


def test_w8a8_interpreter_is_integer_arithmetic():
    """The interpreter's W8A8 linear is uint8 inputs times int8 codes, summed exactly, then scaled."""
    g = w8a8_graph(16, 32, (4,), bias=False)
    x = np.random.default_rng(2).standard_normal((4, 32)).astype(np.float32)
    enc = E.load(g, "w")
    scale, zero = enc.activation
    xq = np.clip(np.rint(x / np.float32(scale)) + zero, 0, 255) - zero
    acc = (xq.astype(np.int64) @ enc.values.astype(np.int64).T).astype(np.float32)
    want = acc * (np.float32(scale) * enc.scales.reshape(-1))
    np.testing.assert_array_equal(run_graph(g, x)[0], want)


def nm_w8a8_graph(o, k, lead, nm=(2, 4), bits=7, bias=True, act=None):
    """One linear whose weight is N:M pruned by magnitude, its kept values int7 (or int8) per-channel codes (RTN),
    with a static uint8 input grid of [-2, 2]: the N:M W8A8 encoding (``--compress 2:4+w7a8``)."""
    from sparsecc.passes.compress import sparsify

    g = w8a8_graph(o, k, lead, bias, act, bits)
    w = np.random.default_rng(7).standard_normal((o, k)).astype(np.float32)  # w8a8_graph's weight
    enc = sparsify.encode_nm(*sparsify.magnitude(w, *nm), *nm, QuantSpec(bits))
    enc.activation = (4.0 / 255, 128)
    E.store(g, "w", enc)
    return g


@pytest.mark.parametrize("o,k,lead,nm,bits,act", [
    (64, 128, (3,), (2, 4), 7, None),            # rows not a multiple of the tile
    (64, 96, (1,), (2, 4), 7, None),             # GEMV
    (32, 64, ("batch", 16), (2, 4), 7, "gelu"),  # symbolic batch, fused epilogue
    (32, 64, ("batch",), (1, 4), 7, "relu"),     # rows a bare symbol; 1:4, a window keeps 4
    (32, 128, (8,), (4, 8), 7, None),            # 4:8
    (32, 64, (8,), (1, 8), 7, None),             # a window would keep 2: not whole dot products, stays plain
    (32, 72, (8,), (2, 4), 7, None),             # reduction not whole windows: plain
    (20, 64, (5,), (2, 4), 7, None),             # rows not a multiple of 8: plain
    (32, 64, (4,), (2, 4), 8, "gelu"),           # int8 codes: no input-picking kernel, plain
    (64, 128, (3,), (2, 4), 4, None),            # int4 codes: picks and codes in one byte
    (64, 96, (1,), (2, 4), 4, "relu"),           # int4 GEMV
    (32, 64, ("batch", 16), (2, 4), 4, "gelu"),  # int4, symbolic batch
    (32, 128, (8,), (4, 8), 4, None),            # int4 4:8
    (20, 64, (5,), (2, 4), 4, None),             # int4, rows not a multiple of 8: plain (nibbles decoded)
    (40, 64, (1,), (2, 4), 7, None),             # GEMV, 5 blocks of 8 outputs: one per tile
    (48, 64, (1,), (2, 4), 4, None),             # GEMV, 6 blocks of 8 outputs: three per tile
])
def test_nm_w8a8_kernel_matches_interpreter(o, k, lead, nm, bits, act):
    """An N:M W8A8 linear gives the interpreter's result, packed for the kernel that picks each lane's inputs or
    plain where it cannot take it (TVM's loops over the kept codes)."""
    from tvm.target.codegen import llvm_get_system_cpu, target_has_features

    from sparsecc.backends.tvm import compile_graph, prepare_graph, resolve_target

    g = nm_w8a8_graph(o, k, lead, nm, bits, act=act)
    assert g.params["w"].encoding.kind == f"{nm[0]}:{nm[1]}+w{bits}a8"
    host = resolve_target({"kind": "llvm", "mcpu": llvm_get_system_cpu()})
    packed = (bits in (4, 7) and o % 8 == 0 and k % 16 == 0 and 16 * nm[0] // nm[1] % 4 == 0
              and target_has_features("avx2", host))
    prepared = prepare_graph(g, "x86")
    assert ("layout" in prepared.params["w"].encoding.meta) == packed
    x = np.random.default_rng(1).standard_normal(tuple(2 if d == "batch" else d for d in lead) + (k,)) \
        .astype(np.float32)
    assert rel(compile_graph(g)(x)[0], run_graph(g, x)[0]) <= 1e-5


@pytest.mark.parametrize("bits", [7, 4], ids=["w7a8", "w4a8"])
@pytest.mark.parametrize("lead,rows", [((128,), (128,)), ((1,), (1,)), (("batch", 16), (2, 16))],
                         ids=["gemm", "gemv", "dynamic-batch"])
def test_nm_w8a8_kernel_picks_inputs_with_vpshufb(lead, rows, bits):
    """On AVX2 the 2:4 W7A8 (W4A8) kernel multiplies the kept codes only: each row's window of 16 inputs is picked
    per output lane by one ``vpshufb`` (no byte-wise gather, also for a symbolic row count) and multiplied by
    ``vpmaddubsw``, in a scheduled PrimFunc; where this CPU can run it, exactly the interpreter's integers (inputs
    at the grid's ends, codes at their extremes: +-63, int4 +-7)."""
    from tvm.target.codegen import llvm_get_system_cpu, target_has_features

    from sparsecc.backends.tvm import build, compile_graph, lower_graph, prepare_graph, resolve_target

    g = nm_w8a8_graph(32, 64, lead, bits=bits, bias=False)
    enc = E.load(g, "w")
    top = QuantSpec(bits).qmax
    enc.values = np.where(np.random.default_rng(5).random(enc.values.shape) < 0.5, -top, top).astype(np.int32)
    E.store(g, "w", enc)
    target = {"kind": "llvm", "mcpu": "haswell"}
    prepared = prepare_graph(g, target)
    mod = lower_graph(prepared, target)
    assert any(f"nm_w{bits}a8" in gv.name_hint and f.attrs.get("tirx.is_scheduled")
               for gv, f in mod.functions.items())
    ex = build(prepared, target)
    asm = "".join(m.inspect_source("asm") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")
    assert "vpshufb" in asm and "vpmaddubsw" in asm and "vpinsrb" not in asm and "vpextrb" not in asm
    if not target_has_features("avx2", resolve_target({"kind": "llvm", "mcpu": llvm_get_system_cpu()})):
        pytest.skip("this CPU has no AVX2")
    x = np.where(np.random.default_rng(6).random(rows + (64,)) < 0.5, -3.0, 3.0).astype(np.float32)
    want = run_graph(g, x)[0]
    np.testing.assert_allclose(compile_graph(g, target)(x)[0], want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_nm_w8a8_weight_stores_window_picks():
    """Re-laid out for the CPU kernel, an N:M W8A8 weight keeps its codes ``OI8o4i`` over the kept columns (one
    register tile's 8 outputs x 4 codes per reduction step, contiguous) and stores, instead of in-group indices,
    each kept value's input within its window of 16, in the same layout; ``load`` gives the logical codes and
    indices back."""
    from sparsecc.backends.tvm.relayout import relayout_weights

    g = nm_w8a8_graph(32, 64, (1,))
    enc = E.load(g, "w")
    packed = relayout_weights(g, {"kind": "llvm", "mcpu": "haswell"})
    meta = packed.params["w"].encoding.meta
    picks = packed.params[meta["indices"]].data
    assert meta["layout"] == "OI8o4i" and packed.params["w"].data.shape == picks.shape == (4, 8, 8, 4)
    # output 17, kept values 4-7 (step 1): groups 2 and 3 of the first window, i.e. inputs 8-15
    np.testing.assert_array_equal(picks[2, 1, 1], [8, 8, 12, 12] + enc.indices[17, 4:8])
    np.testing.assert_array_equal(packed.params["w"].data[2, 1, 1], enc.values[17, 4:8])
    back = E.load(packed, "w")
    np.testing.assert_array_equal(back.values, enc.values)
    np.testing.assert_array_equal(back.indices, enc.indices)
    np.testing.assert_array_equal(E.companion(packed, "w", "colsums"), enc.values.sum(1, keepdims=True))


def test_nm_w4a8_weight_holds_code_and_pick_in_one_byte():
    """Re-laid out, an N:M W4A8 weight is one array, a byte per kept value: its window pick in the low nibble, its
    code plus 8 in the high one; the indices companion is gone, and ``load`` still gives the logical codes and
    indices back."""
    from sparsecc.backends.tvm.relayout import relayout_weights

    g = nm_w8a8_graph(32, 64, (1,), bits=4)
    enc = E.load(g, "w")
    assert g.params["w"].data.shape == (32, 16)  # 32 kept codes per row, two per byte
    packed = relayout_weights(g, {"kind": "llvm", "mcpu": "haswell"})
    meta = packed.params["w"].encoding.meta
    data = packed.params["w"].data
    assert meta["layout"] == "OI8o4i" and data.shape == (4, 8, 8, 4) and data.dtype == np.uint8
    assert "indices" not in meta and "w.indices" not in packed.params and E.codes_hold_picks(meta)
    np.testing.assert_array_equal(data[2, 1, 1] & 15, [8, 8, 12, 12] + enc.indices[17, 4:8])
    np.testing.assert_array_equal((data[2, 1, 1] >> 4).astype(int) - 8, enc.values[17, 4:8])
    back = E.load(packed, "w")
    np.testing.assert_array_equal(back.values, enc.values)
    np.testing.assert_array_equal(back.indices, enc.indices)
    x = np.random.default_rng(3).standard_normal((1, 64)).astype(np.float32)
    np.testing.assert_array_equal(run_graph(packed, x)[0], run_graph(g, x)[0])


def test_nm_w8a8_interpreter_is_integer_arithmetic_over_the_kept_codes():
    """The interpreter's N:M W8A8 linear is the W8A8 one on the codes scattered to their columns (zeros where
    pruned)."""
    g = nm_w8a8_graph(16, 32, (4,), bias=False)
    x = np.random.default_rng(2).standard_normal((4, 32)).astype(np.float32)
    enc = E.load(g, "w")
    codes = np.zeros((16, 8, 4), np.int64)
    np.put_along_axis(codes, enc.indices.reshape(16, 8, 2).astype(np.int64), enc.values.reshape(16, 8, 2), 2)
    scale, zero = enc.activation
    xq = np.clip(np.rint(x / np.float32(scale)) + zero, 0, 255) - zero
    acc = (xq.astype(np.int64) @ codes.reshape(16, 32).T).astype(np.float32)
    np.testing.assert_array_equal(run_graph(g, x)[0], acc * (np.float32(scale) * enc.scales.reshape(-1)))


def test_nm_w8a8_is_for_linear_weights_only():
    """``store`` names the problem instead of writing an N:M W8A8 weight no kernel reads (a convolution's)."""
    from sparsecc.passes.compress import sparsify

    g = Graph()
    name = g.add_param("w", np.ones((16, 4, 3, 3), np.float32))
    w = np.random.default_rng(0).standard_normal((16, 36)).astype(np.float32)
    enc = sparsify.encode_nm(*sparsify.magnitude(w, 2, 4), 2, 4, QuantSpec(7))
    enc.shape, enc.activation = (16, 4, 3, 3), (4.0 / 255, 128)
    with pytest.raises(ValueError, match=r"N:M W8A8 is for linear weights only, not 2:4\+w7a8 of shape "
                                         r"\[16, 4, 3, 3\]"):
        E.store(g, name, enc)


@pytest.mark.parametrize("bits", [7, 4], ids=["w7a8", "w4a8"])
@pytest.mark.parametrize("target", ["arm64", "cuda"])
def test_nm_w8a8_linear_builds_for_other_targets(target, bits):
    """Without AVX2 the 2:4 W7A8 (W4A8) linear is the same integer compute over the kept codes on TVM's loops, its
    weight plain (arm64: cross-compiled; CUDA: nvcc compiles the kernels)."""
    from sparsecc.backends.tvm import build, export_cc, prepare_graph

    tool = "nvcc" if target == "cuda" else export_cc("arm64")
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    prepared = prepare_graph(nm_w8a8_graph(64, 96, (4,), bits=bits, act="gelu"), target)
    assert "layout" not in prepared.params["w"].encoding.meta
    ex = build(prepared, target)
    if target == "cuda":
        from conftest import assert_cuda_compiles

        assert_cuda_compiles(ex, "sm_80")

@pytest.mark.slow
@pytest.mark.parametrize("bits", [7, 4], ids=["2:4+w7a8", "2:4+w4a8"])
def test_nm_w8a8_arm64_emulated_run_matches_interpreter(bits, tmp_path):
    """Under qemu, the arm64 artifact of an N:M W8A8 linear (its weight plain, its codes decoded to dense int8 ones
    for TVM's loops) computes the interpreter's integer sums."""
    import sparsecc
    from sparsecc.backends.tvm.emulation import arm64_dir, arm64_root, run_arm64

    if arm64_root() is None:
        pytest.skip(f"no aarch64 root in {arm64_dir()} (or no qemu-aarch64-static): run scripts/setup_arm64.sh")
    g = nm_w8a8_graph(64, 96, (3, 8), bits=bits, act="gelu")
    path = tmp_path / "m.scc"
    sparsecc.compile(None, graph=g, target="arm64").save(path)
    x = np.random.default_rng(3).standard_normal((3, 8, 96)).astype(np.float32)
    assert rel(run_arm64(path, {"x": x})[g.outputs[0]], run_graph(g, x)[0]) <= 1e-5


def w8a8_conv_graph(n, c, hw, o, k, stride, pads, dilation, bias=True, bits=8):
    """One 2-D convolution + ReLU with int8 (int7: W7A8) per-channel codes (RTN) and a static uint8 input grid of
    [-2, 2]."""
    from sparsecc.passes.compress import quantize

    rng = np.random.default_rng(11)
    g = Graph()
    g.add_input("x", TensorType((n, c, hw, hw), "float32"))
    w = rng.standard_normal((o, c, k, k)).astype(np.float32)
    ins = ["x", g.add_param("w", w)] + ([g.add_param("b", rng.standard_normal(o).astype(np.float32))] if bias else [])
    out = [(hw + pads[i] + pads[i + 2] - dilation * (k - 1) - 1) // stride + 1 for i in (0, 1)]
    out_t = TensorType((n, o, *out), "float32")
    (y,) = g.add_node("conv", ins, [out_t], {"strides": [stride, stride], "pads": pads, "dilations": [dilation] * 2,
                                             "groups": 1})
    (y,) = g.add_node("relu", [y], [out_t])
    g.outputs = [y]
    enc = quantize.rtn(w.reshape(o, -1), QuantSpec(bits))
    enc.shape, enc.activation = w.shape, (4.0 / 255, 128)
    E.store(g, "w", enc)
    verify(g)
    return g


@pytest.mark.parametrize("n,c,hw,o,k,stride,pads,dilation,bias", [
    (1, 8, 9, 16, 3, 1, [1, 1, 1, 1], 1, True),      # 3x3, rows narrower than a patch block
    (2, 4, 19, 24, 3, 2, [1, 0, 2, 1], 1, False),    # stride 2, asymmetric pads, batch 2, O not a multiple of 16
    (1, 16, 20, 32, 1, 1, [0, 0, 0, 0], 1, True),    # 1x1: patches are the input re-laid out; rows of 20: 2 blocks
    (1, 8, 12, 16, 3, 1, [2, 2, 2, 2], 2, True),     # dilation
    (2, 16, 7, 32, 3, 1, [1, 1, 1, 1], 1, True),     # rows of 7: positions blocked flat, a block spans rows
])
@pytest.mark.parametrize("bits", [8, 7], ids=["w8a8", "w7a8"])
def test_w8a8_conv_kernel_matches_interpreter(n, c, hw, o, k, stride, pads, dilation, bias, bits):
    """A W8A8 convolution (quantize, packed patches, integer GEMM, unpad) gives the interpreter's result, which is
    integer arithmetic on the quantized input; with AVX-512 VNNI its GEMM is the tensorized ``vpdpbusd`` one, and
    W7A8's on AVX2 the ``vpmaddubsw`` one (its patches position-major)."""
    from tvm.target.codegen import target_has_features

    from sparsecc.backends.tvm import compile_graph, lower_graph, prepare_graph, resolve_target

    g = w8a8_conv_graph(n, c, hw, o, k, stride, pads, dilation, bias, bits)
    x = np.random.default_rng(5).standard_normal((n, c, hw, hw)).astype(np.float32)
    ref = run_graph(g, x)[0]
    enc = E.load(g, "w")
    scale, zero = enc.activation
    xq = np.clip(np.rint(x / np.float32(scale)) + zero, 0, 255) - zero
    attrs = g.nodes[0].attrs
    acc = torch.nn.functional.conv2d(torch.nn.functional.pad(torch.from_numpy(xq).double(),
                                                             (pads[1], pads[3], pads[0], pads[2])),
                                     torch.from_numpy(enc.values.astype(np.float64)).reshape(enc.shape),
                                     stride=attrs["strides"], dilation=attrs["dilations"]).float().numpy()
    want = acc * (np.float32(scale) * enc.scales.reshape(1, -1, 1, 1))
    if bias:
        want = want + g.params["b"].data.reshape(1, -1, 1, 1)
    np.testing.assert_array_equal(ref, np.maximum(want, 0))
    assert rel(compile_graph(g)(x)[0], ref) <= 1e-6
    host = resolve_target("x86")
    instruction = "vpdpbusd" if target_has_features("avx512vnni", host) else "pmadd.ub.sw" if bits == 7 else None
    if instruction is not None and target_has_features("avx2", host):
        mod = lower_graph(prepare_graph(g, "x86"), "x86")
        gemm = [f for gv, f in mod.functions.items() if f"conv_w{bits}a8" in gv.name_hint]
        assert len(gemm) == 1 and instruction in gemm[0].script()


@pytest.mark.parametrize("target,instruction,absent", [
    ({"kind": "llvm", "mcpu": "znver4"}, "vpdpbusd", "vpermb"),
    ({"kind": "llvm", "mcpu": "haswell"}, "vpmaddubsw", "vpdpbusd"),
], ids=["avx512-vnni", "avx2"])
def test_w7a8_conv_uses_the_targets_dot_product(target, instruction, absent):
    """A W7A8 convolution's patches are position-major (each position's 4 reduction steps together): ``vpdpbusd``
    takes them without the byte shuffle W8A8's need, and AVX2's ``vpmaddubsw`` multiplies them (exact for int7).
    The patches are built a vector of 16 positions at a time (``PositionMajorPatches``), not 4 steps at a time."""
    from sparsecc.backends.tvm import build, lower_graph, prepare_graph

    prepared = prepare_graph(w8a8_conv_graph(1, 16, 20, 32, 3, 1, [1, 1, 1, 1], 1, bits=7), target)
    ex = build(prepared, target)
    asm = "".join(m.inspect_source("asm") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")
    assert instruction in asm and absent not in asm
    (patches,) = [f for gv, f in lower_graph(prepared, target).functions.items() if gv.name_hint == "conv_patches"]
    assert "T.parallel" in patches.script() and re.search(r"in T\.vectorized\(T\.int64\(16\)\)", patches.script())


@pytest.mark.parametrize("target", ["arm64", "cuda"])
def test_w8a8_conv_builds_for_other_targets(target):
    """Without VNNI the W8A8 convolution is the same integer compute on TVM's loops (arm64: cross-compiled; CUDA:
    nvcc compiles the kernels)."""
    from sparsecc.backends.tvm import build, export_cc, prepare_graph

    tool = "nvcc" if target == "cuda" else export_cc("arm64")
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    ex = build(prepare_graph(w8a8_conv_graph(1, 8, 9, 16, 3, 1, [1, 1, 1, 1], 1), target), target)
    if target == "cuda":
        from conftest import assert_cuda_compiles

        assert_cuda_compiles(ex, "sm_80")
