"""torch.compile(backend="sparsecc"): entry-point registration, eager fallback, options."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

from sparsecc.errors import SparseccError


def test_backend_found_without_importing_sparsecc():
    code = textwrap.dedent("""
        import sys, torch
        m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
        x = torch.randn(3, 8)
        assert "sparsecc" not in sys.modules
        with torch.no_grad():
            out = torch.compile(m, backend="sparsecc")(x)
            ref = m(x)
        assert "sparsecc" in sys.modules
        err = float((out - ref).abs().max())
        assert err < 1e-5, err
        print("ok", err)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("ok")


class WithFFT(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.fft.fft(self.fc(x)).real


def test_unsupported_op_falls_back_to_eager_with_one_line_warning():
    torch._dynamo.reset()
    m, x = WithFFT().eval(), torch.randn(2, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            out = torch.compile(m, backend="sparsecc")(x)
    with torch.no_grad():
        torch.testing.assert_close(out, m(x))
    msgs = [str(w.message) for w in caught if "sparsecc" in str(w.message)]
    assert len(msgs) == 1 and "\n" not in msgs[0] and "fft" in msgs[0], msgs


def test_unknown_option_is_an_error():
    torch._dynamo.reset()
    m = nn.Linear(4, 4)
    with pytest.raises(Exception) as info:
        torch.compile(m, backend="sparsecc", options={"targett": "x86"})(torch.randn(1, 4))
    assert "targett" in str(info.value)
    assert isinstance(info.value, SparseccError) or isinstance(info.value.__cause__, SparseccError) or \
        "unknown sparsecc options" in str(info.value)


def test_in_place_weight_update_is_picked_up():
    torch._dynamo.reset()
    m, x = nn.Linear(4, 3).eval(), torch.randn(2, 4)
    fast = torch.compile(m, backend="sparsecc")
    with torch.no_grad():
        fast(x)
        m.weight.mul_(2.0)
        torch.testing.assert_close(fast(x), m(x))
