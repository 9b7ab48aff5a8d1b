"""Shared fixtures: the real models are loaded/trained once per test worker."""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import pytest
import torch


POOL_KEY = "sparsecc-test"
"""Device key of the loopback ``tracker_pool``."""


@pytest.fixture(scope="module")
def tracker_pool():
    """A TVM RPC tracker on 127.0.0.1 with two servers registered under ``POOL_KEY`` (each a Python process that
    imports TVM: about 4 s); yields the tracker's address."""
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    tracker = Tracker(host="127.0.0.1", port=9500, port_end=9600, silent=True)
    servers = [rpc.Server(host="127.0.0.1", port=9600, port_end=9700, tracker_addr=("127.0.0.1", tracker.port),
                          key=POOL_KEY, silent=True) for _ in range(2)]
    client = rpc.connect_tracker("127.0.0.1", tracker.port)
    deadline = time.monotonic() + 30
    while sum(i["key"] == f"server:{POOL_KEY}" for i in client.summary()["server_info"]) < 2:
        assert time.monotonic() < deadline, "the two servers did not register with the tracker"
        time.sleep(0.2)
    client.close()
    yield f"127.0.0.1:{tracker.port}"
    for server in servers:
        server.terminate()
    tracker.terminate()


@pytest.fixture(scope="session")
def minilm():
    from sparsecc.models.minilm import load_minilm

    return load_minilm()


@pytest.fixture(scope="session")
def minilm_inputs():
    from sparsecc.models.minilm import SAMPLE_SENTENCES, Tokenizer

    return Tokenizer(128)(SAMPLE_SENTENCES)


@pytest.fixture(scope="session")
def digits():
    from sparsecc.models.digits import train_digits_cnn

    return train_digits_cnn()


def w8a8_tie_samples(graph, *inputs, ulps: int = 8) -> np.ndarray:
    """Per sample (axis 0 of the inputs): whether one of its W8A8 layer inputs, as the interpreter computes it,
    lies within ``ulps`` float32 ulps of a rounding tie (``x / scale`` at k + 0.5, the code not clamped). A
    compiled model reassociates the float32 sums before the quantization, so there, and only there, its code may
    round the other way: one code step on that sample's outputs (the integer arithmetic after it is exact)."""
    import torch

    from sparsecc.interpreter import run_graph
    from sparsecc.ir import encodings

    margins = []
    quantize = encodings.W8A8.quantize

    def recording(self, x):
        v = x.detach() / self.scale
        code = torch.round(v) + self.zero
        ulp = torch.from_numpy(np.spacing(np.abs(v.numpy()))).to(torch.float64)
        distance = ((v.to(torch.float64) - torch.floor(v).to(torch.float64)) - 0.5).abs() / ulp
        distance = torch.where((code >= 0) & (code <= 255), distance, torch.full_like(distance, np.inf))
        margins.append(distance.reshape(distance.shape[0], -1).min(1).values)
        return quantize(self, x)

    encodings.W8A8.quantize = recording
    try:
        run_graph(graph, *inputs)
    finally:
        encodings.W8A8.quantize = quantize
    return (torch.stack(margins).min(0).values < ulps).numpy()


@pytest.fixture
def rel_err():
    from sparsecc.fidelity import relative_diff

    return relative_diff


def pytest_configure(config):
    torch.manual_seed(0)
    # compiles in the suite must not pick up tuning records a user made with `sparsecc tune` on this machine
    os.environ["SPARSECC_TUNING_DB"] = tempfile.mkdtemp(prefix="sparsecc-tests-tuning-")
    # nor measured latencies or remembered decompositions from the user's cache (and they write none there)
    os.environ["SPARSECC_CACHE"] = tempfile.mkdtemp(prefix="sparsecc-tests-cache-")
    # xdist runs one test process per core: one TVM worker thread each, or the two processes' spinning thread
    # pools preempt each other and a kernel stalls for whole scheduler time slices (a 256x256 linear took 4 ms)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["TVM_NUM_THREADS"] = "1"


def assert_cuda_compiles(executable, arch: str) -> None:
    """The CUDA kernels inside a built executable really compile with nvcc for ``arch`` (no GPU needed)."""
    import tvm
    from tvm.support import nvcc

    def modules(m):
        yield m
        for i in m.imports:
            yield from modules(i)

    sources = [m.inspect_source() for m in modules(executable.mod) if m.kind == "cuda"]
    assert sources and "__global__" in sources[0]
    with tvm.target.Target({"kind": "cuda", "arch": arch}):
        assert len(nvcc.compile_cuda(sources[0], target_format="fatbin", arch=arch, compiler="nvcc")) > 0
