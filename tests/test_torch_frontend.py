"""The torch frontend: small modules covering the aten ops it converts, compiled for x86 and compared with
eager PyTorch (<= 1e-5 relative) at two batch sizes, plus the errors it must raise."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsecc
from sparsecc.errors import UnsupportedOpError
from sparsecc.frontends.torch import import_module

BATCH = torch.export.Dim("batch", max=64)


class ConvNet(nn.Module):
    """Convolution variants, batch norm, pooling and resampling, each returned so every one is checked."""

    def __init__(self):
        super().__init__()
        self.strided = nn.Conv2d(3, 8, 3, stride=2, padding=(1, 2))
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
        self.conv1d = nn.Conv1d(3, 4, 3, padding=1)
        with torch.no_grad():  # non-trivial running statistics
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        y = F.relu(self.bn(self.depthwise(self.dilated(self.strided(x)))))
        return (
            self.up(y),
            F.max_pool2d(y, 3, stride=2, ceil_mode=True),
            F.avg_pool2d(y, 3, stride=1, padding=1, count_include_pad=False),
            F.adaptive_avg_pool2d(y, (3, 7)),
            F.adaptive_avg_pool2d(y, 1),
            F.interpolate(y, scale_factor=2, mode="nearest"),
            F.interpolate(y, size=(7, 9), mode="bilinear", align_corners=False),
            self.conv1d(x[:, :, 0]),
        )


class TransformerBits(nn.Module):
    """Embedding, layer norm, attention pieces, masks, slicing, cat/split, expand, reductions, folded constants."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.norm = nn.LayerNorm(8)
        self.proj = nn.Linear(8, 24)

    def forward(self, ids, x):
        h = self.norm(self.emb(ids) + x + torch.arange(8.0) * torch.full((8,), 0.5))
        q, k, v = self.proj(h).view(h.shape[0], 6, 3, 8).transpose(1, 2).split([1, 1, 1], dim=1)
        keep = (ids > 2)[:, None, None, :]
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=keep.expand(-1, 1, 6, 6))
        scores = (q @ k.transpose(-1, -2)).masked_fill(~keep, float("-inf")).softmax(-1)
        mixed = torch.cat([attn, scores @ v], dim=-1).squeeze(1)
        return (
            F.gelu(mixed, approximate="tanh") + F.silu(mixed),
            h[:, ::2, -3:],
            h[:, -1],
            h.sum(1) + h.mean(1) + h.amax(1) - h.var(1),
            h * h.amin(-1, keepdim=True),
            F.normalize(h, dim=-1),
            torch.where(h > 0, h, torch.zeros_like(h)).expand(2, -1, -1, -1),
            h.argmax(-1),
            F.log_softmax(h, dim=1),
        )


def _check(model, inputs, more_inputs, rel_err):
    model.eval()
    shapes = tuple({0: BATCH} for _ in inputs)
    cm = sparsecc.compile(model, inputs, target="x86", dynamic_shapes=shapes)
    for args in (inputs, more_inputs):
        with torch.no_grad():
            ref = model(*args)
        outs = cm(*[a.numpy() for a in args])
        assert len(outs) == len(ref)
        for i, (out, want) in enumerate(zip(outs, ref)):
            assert out.shape == tuple(want.shape), i
            assert rel_err(out, want.numpy()) <= 1e-5, i
    return cm


def test_convolutions_pools_and_resampling(rel_err):
    torch.manual_seed(0)
    cm = _check(ConvNet(), (torch.randn(2, 3, 12, 11),), (torch.randn(3, 3, 12, 11),), rel_err)
    ops = [n.op for n in cm.graph.nodes]
    assert "batch_norm" not in ops and ops.count("conv_transpose") == 1 and "resize" in ops


def test_transformer_ops(rel_err):
    torch.manual_seed(0)
    ids = torch.randint(0, 20, (2, 6))
    ids2 = torch.randint(0, 20, (5, 6))
    ids[:, 0] = ids2[:, 0] = 5  # every attention row keeps at least one key
    _check(TransformerBits(), (ids, torch.randn(2, 6, 8)), (ids2, torch.randn(5, 6, 8)), rel_err)


def test_symbolic_dims_names_and_sources():
    graph = import_module(TransformerBits().eval(), (torch.randint(0, 20, (2, 6)), torch.randn(2, 6, 8)),
                          dynamic_shapes={"ids": {0: BATCH}, "x": {0: BATCH}})
    assert graph.inputs == ["ids", "x"]
    assert graph.types["x"].shape == ("batch", 6, 8)
    shapes = [n.attrs["shape"] for n in graph.nodes if n.op == "reshape"]
    assert ["batch", 6, 3, 8] in shapes
    # arange * full(0.5) folds to one constant at import; zeros_like of a batch-sized tensor stays an expand
    assert not any(n.source.startswith(("aten.arange", "aten.full.default")) for n in graph.nodes)
    assert any(n.op == "expand" and n.attrs["shape"] == ["batch", 6, 8] for n in graph.nodes)
    linear = next(n for n in graph.nodes if n.op == "linear")
    assert linear.source.startswith("aten.linear.default at test_torch_frontend.py:")
    assert graph.params[linear.inputs[1]].data.shape == (24, 8)


class WithFFT(nn.Module):
    def forward(self, x):
        return torch.fft.rfft(x).abs()


class WithBadScale(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=1.7, mode="nearest")


@pytest.mark.parametrize("model, op", [(WithFFT(), "aten._fft_r2c.default"),
                                       (WithBadScale(), "aten.upsample_nearest2d.vec")])
def test_unsupported_is_named(model, op):
    with pytest.raises(UnsupportedOpError) as info:
        import_module(model, (torch.randn(1, 2, 5, 6),))
    assert info.value.op_type == op
    assert info.value.node and "test_torch_frontend.py:" in info.value.source
    assert "\n" not in str(info.value)
