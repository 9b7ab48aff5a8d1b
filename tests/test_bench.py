"""``sparsecc bench``: local statistics and profile, and timing on real TVM RPC servers and a tracker pool.

Servers and the tracker run on 127.0.0.1 only, are started once per module (each is a Python process that imports
TVM: about 4 s) and terminated by the fixtures. TVM's Python server serves one session at a time, so every test
drops its sessions before returning.
"""
from __future__ import annotations

import gc
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import sparsecc
from sparsecc.backends.tvm.remote import RemoteError, RemoteRunner, connect, registered_keys
from sparsecc.bench import EMULATED_NOTE, emulated_on_loopback, host_arch, summarize
from sparsecc.cli import main
from sparsecc.ir.graph import Graph, TensorType

from conftest import POOL_KEY

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


def tiny_graph() -> Graph:
    g = Graph()
    g.add_input("x", TensorType(("batch", 64), "float32"))
    w = g.add_param("w", RNG.standard_normal((32, 64)).astype("float32"))
    b = g.add_param("b", RNG.standard_normal(32).astype("float32"))
    (y,) = g.add_node("linear", ["x", w, b], [TensorType(("batch", 32), "float32")])
    (y,) = g.add_node("relu", [y], [TensorType(("batch", 32), "float32")])
    g.outputs = [y]
    return g


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bench") / "tiny.scc"
    sparsecc.compile(None, graph=tiny_graph(), target="x86").save(path)
    return str(path)


@pytest.fixture(scope="module")
def rpc_server():
    from tvm import rpc

    server = rpc.Server(host="127.0.0.1", port=9400, port_end=9500, silent=True)
    yield f"127.0.0.1:{server.port}"
    server.terminate()


def dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # nobody listens once the socket is closed


def bench_json(tmp_path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    assert main(["bench", *args, "--repeat", "10", "--warmup", "2", "--json", str(out)]) == 0
    return json.loads(out.read_text()), str(out)


def check_stats(result: dict, repeat: int = 10) -> None:
    assert result["median_ms"] > 0
    assert result["p90_ms"] >= result["median_ms"] >= result["min_ms"] > 0
    lo, hi = result["ci95_ms"]
    assert lo <= result["median_ms"] <= hi
    assert len(result["times_ms"]) == result["repeat"] == repeat


def test_summary_statistics_and_median_ci():
    s = summarize([float(v) for v in range(100, 0, -1)], warmup=3)
    assert s["median_ms"] == 50.5 and s["p90_ms"] == 91.0 and s["min_ms"] == 1.0
    assert s["ci95_ms"] == [41.0, 61.0]  # order statistics 50 -+ 0.98 sqrt(100), 1-based values
    assert s["stdev_ms"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert (s["repeat"], s["warmup"]) == (100, 3)


def test_local_bench_cli_writes_statistics(artifact, tmp_path):
    out = tmp_path / "local.json"
    proc = subprocess.run([sys.executable, "-m", "sparsecc.cli", "bench", artifact, "--repeat", "10",
                           "--warmup", "2", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    check_stats(result)
    assert (result["where"], result["artifact_target"], result["emulated"]) == ("local", "x86", False)
    assert "on x86 (local): median" in proc.stdout and EMULATED_NOTE not in proc.stdout


def test_profile_lists_kernels_with_shares_summing_to_one(artifact, tmp_path, capsys):
    result, _ = bench_json(tmp_path, artifact, "--profile")
    profile = result["profile"]
    names = [op["name"] for op in profile["ops"]]
    assert "fused_dense_packed_relu" in names
    assert sum(op["share"] for op in profile["ops"]) == pytest.approx(1.0)
    assert sum(op["ms_per_run"] for op in profile["ops"]) == pytest.approx(profile["instrumented_ms_per_run"])
    assert [op["ms_per_run"] for op in profile["ops"]] == sorted((op["ms_per_run"] for op in profile["ops"]),
                                                                 reverse=True)
    kernel = profile["ops"][names.index("fused_dense_packed_relu")]
    assert kernel["calls_per_run"] == 1.0 and kernel["us_per_call"] > 0
    assert "fused_dense_packed_relu" in capsys.readouterr().out


def test_remote_outputs_equal_local_and_times_come_from_the_device(artifact, rpc_server):
    cm = sparsecc.load(artifact)
    x = RNG.standard_normal((3, 64)).astype("float32")
    session = connect(rpc=rpc_server)
    runner = RemoteRunner(session, cm.lib_path, [cm.graph.types["x"]], {k: p.data for k, p in cm.graph.params.items()},
                          input_names=["x"])
    np.testing.assert_allclose(runner(x)[0], cm(x), rtol=1e-6, atol=1e-6)
    times = runner.time([x], repeat=5, warmup=1)
    assert len(times) == 5 and all(t > 0 for t in times)
    with pytest.raises(sparsecc.errors.InputError, match="input 'x'"):
        runner(x[:, :10])
    del runner, session
    gc.collect()  # frees the single-session server for the next test


def test_bench_over_rpc(artifact, rpc_server, tmp_path, capsys):
    result, _ = bench_json(tmp_path, artifact, "--rpc", rpc_server)
    check_stats(result)
    assert result["where"] == f"rpc {rpc_server}" and "time_evaluator" in result["timed"]
    assert not result["emulated"]
    assert f"on x86 (rpc {rpc_server}): median" in capsys.readouterr().out


def test_bench_over_tracker_pool_uses_a_free_device(artifact, tracker_pool, tmp_path):
    held = connect(tracker=tracker_pool, key=POOL_KEY)  # one device of the two stays busy
    result, _ = bench_json(tmp_path, artifact, "--tracker", tracker_pool, "--key", POOL_KEY)
    check_stats(result)
    assert result["where"] == f"tracker {POOL_KEY}"
    del held
    gc.collect()


def test_tracker_pool_all_busy_times_out(artifact, tracker_pool, capsys):
    held = [connect(tracker=tracker_pool, key=POOL_KEY) for _ in range(2)]
    assert main(["bench", artifact, "--tracker", tracker_pool, "--key", POOL_KEY, "--timeout", "1"]) == 2
    assert f"(every '{POOL_KEY}' device busy?) did not answer within 1 s" in capsys.readouterr().err
    del held
    gc.collect()


def test_emulated_label(artifact, tmp_path, capsys):
    result, _ = bench_json(tmp_path, artifact, "--emulated")
    assert result["emulated"] and capsys.readouterr().out.rstrip().endswith(EMULATED_NOTE)
    foreign = "arm64" if host_arch() == "x86" else "x86"
    assert emulated_on_loopback(foreign, "127.0.0.1") and not emulated_on_loopback(host_arch(), "127.0.0.1")
    assert not emulated_on_loopback(foreign, "192.0.2.1")  # TEST-NET: not this machine


@pytest.mark.parametrize("args,message", [
    (["--tracker", "{tracker}", "--key", "no-such-key"], "has no device registered under key 'no-such-key' "
                                                         f"(registered: {POOL_KEY})"),
    (["--tracker", "{dead}", "--key", POOL_KEY], "cannot reach RPC tracker at 127.0.0.1:"),
    (["--rpc", "{dead}"], "cannot reach RPC server at 127.0.0.1:"),
    (["--rpc", "{server}", "--key", "wrong"], "refused key 'wrong'"),
    (["--tracker", "{tracker}"], "--tracker needs --key"),
    (["--rpc", "localhost"], "expected HOST:PORT"),
    (["--rpc", "{server}", "--profile"], "--profile runs locally only"),
])
def test_bad_remote_gives_one_line_error(artifact, rpc_server, tracker_pool, capsys, args, message):
    argv = [a.format(tracker=tracker_pool, server=rpc_server, dead=dead_address()) for a in args]
    assert main(["bench", artifact, "--timeout", "5", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sparsecc: error: ") and message in err


def test_busy_server_times_out_instead_of_hanging(artifact, rpc_server, capsys):
    held = connect(rpc=rpc_server)  # TVM's Python server serves one session at a time
    t0 = time.monotonic()
    assert main(["bench", artifact, "--rpc", rpc_server, "--timeout", "1"]) == 2
    assert time.monotonic() - t0 < 10
    assert "did not answer within 1 s" in capsys.readouterr().err
    del held
    gc.collect()


@pytest.mark.skipif(host_arch() != "x86" or not shutil.which("aarch64-linux-gnu-gcc"),
                    reason="needs an x86 host and the aarch64 cross compiler")
def test_artifact_for_another_cpu_is_refused_by_the_remote(tmp_path, rpc_server, capsys):
    path = tmp_path / "arm.scc"
    sparsecc.compile(None, graph=tiny_graph(), target="arm64").save(path)
    assert main(["bench", str(path), "--rpc", rpc_server, "--repeat", "3"]) == 2
    assert "this artifact is built for aarch64-linux-gnu, the remote is x86_64" in capsys.readouterr().err
    gc.collect()


def test_registered_keys_reads_the_tracker_summary():
    summary = {"server_info": [{"key": "server:a"}, {"key": "server:b"}, {"key": "server:a"}, {"key": "client"}]}
    assert registered_keys(summary) == ["a", "b"]
    with pytest.raises(RemoteError, match="exactly one"):
        connect()


# ---- compile --compress auto, with the planner's latencies measured on the remote ----------------------------------
def mlp_onnx(path: Path) -> Path:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    torch.onnx.export(model, (torch.randn(4, 64),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    return path


def test_compile_auto_measures_on_the_rpc_device(rpc_server, tmp_path, monkeypatch, capsys):
    """The planner's layer and model latencies, and the compiled plan's measured latency, come from the RPC server:
    the cache is keyed by that device, and the manifest records the plan timed there."""
    monkeypatch.setenv("SPARSECC_CACHE", str(tmp_path / "cache"))
    model = mlp_onnx(tmp_path / "mlp.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=RNG.standard_normal((32, 64)).astype("float32"))
    out = tmp_path / "mlp.scc"
    assert main(["compile", str(model), "--compress", "auto", "--budget", "size=0.5", "--calib", str(calib),
                 "--rpc", rpc_server, "-o", str(out)]) == 0
    gc.collect()  # the server serves one session at a time: drop ours
    printed = capsys.readouterr().out
    assert "compiled: measured" in printed
    auto = sparsecc.load(out).manifest["auto_plan"]
    assert auto["measured_ms"] > 0 and auto["predicted_ms"] > 0 and auto["dense_ms"] > 0
    assert all(c["ms"] is not None and c["dense_ms"] > 0 for c in auto["layers"])
    (cache,) = (tmp_path / "cache" / "latency").glob("*.json")
    doc = json.loads(cache.read_text())
    assert doc["context"]["device"].startswith(f"rpc {rpc_server} (x86_64")
    assert any(k.startswith("model:") for k in doc["entries"]) and len(doc["entries"]) > 3


@pytest.mark.parametrize("argv,message", [
    (["--compress", "int8", "--rpc", "127.0.0.1:1"], "--rpc/--tracker are where --compress auto measures"),
    (["--key", "board"], "--key is for --rpc/--tracker"),
])
def test_compile_remote_flag_errors(tmp_path, capsys, argv, message):
    model = mlp_onnx(tmp_path / "mlp.onnx")
    assert main(["compile", str(model), "-o", str(tmp_path / "m.scc"), *argv]) == 2
    assert message in capsys.readouterr().err
