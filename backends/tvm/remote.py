"""Everything that talks to TVM RPC: reach a device (one server, or a pool behind a tracker) and run or time an
artifact's library there.

    session = connect(rpc="board:9090")                         # or connect(tracker="host:9190", key="rk3588")
    runner = RemoteRunner(session, lib_path, input_types, params, device="cpu")
    outputs = runner(*arrays)                                   # numpy in, numpy out, computed on the remote
    times_ms = runner.time(arrays, repeat=50, warmup=5)         # timed on the remote by the VM's time_evaluator

Why the timeouts: TVM's Python RPC server serves one session at a time and its clients wait without limit, so
asking a busy server, or a tracker for a key whose devices are all taken, would hang. Every network step here runs
with a deadline and fails with a one-line ``RemoteError`` instead.
"""
from __future__ import annotations

import socket
import threading
import uuid
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from sparsecc.errors import SparseccError
from sparsecc.ir.graph import TensorType

from .runtime import Runner, contiguous, to_numpy
from .targets import target_info, target_name

DEFAULT_TIMEOUT_S = 10.0
T = TypeVar("T")


class RemoteError(SparseccError):
    """A remote device that cannot be reached, refuses the key, is busy, or cannot run the artifact."""


def parse_address(address: str, flag: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); RemoteError naming ``flag`` otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RemoteError(f"{flag} {address!r}: expected HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


def _message(error: BaseException) -> str:
    """The informative line of a TVM error: after a traceback or an ``RPCError`` header, the last one."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if lines[0].startswith(("Traceback", "RPCError")) else lines[0]


def _arch(triple: str) -> str:
    arch = triple.split("-")[0]
    return "aarch64" if arch == "arm64" else arch


def remote_triple(session: Any) -> str | None:
    """The remote's LLVM host triple, where its TVM has LLVM (a runtime-only remote cannot say)."""
    try:
        return str(session.get_function("target.llvm_get_system_triple")())
    except (AttributeError, RuntimeError):
        return None


def _bounded(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Runs ``fn`` with a deadline. TVM's RPC clients block in C++ without one, so ``fn`` runs in a daemon
    thread; on timeout that thread is left waiting on its socket (it ends when the peer closes or the process
    exits), and a session it gets late is dropped, which frees the server again."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except Exception as e:  # handed to the caller's thread below
            result["error"] = e

    thread = threading.Thread(target=target, name=f"sparsecc-rpc: {what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise RemoteError(f"{what} did not answer within {timeout:g} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def _probe(host: str, port: int, timeout: float, what: str) -> None:
    """Fails fast on a dead address (TVM's tracker client retries a refused connection for 60 s)."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e))
        raise RemoteError(f"cannot reach {what} at {host}:{port} ({reason})") from None


def _connect_server(host: str, port: int, key: str, timeout: float) -> Any:
    from tvm import rpc

    where = f"RPC server at {host}:{port}"
    try:
        return _bounded(lambda: rpc.connect(host, port, key), timeout, f"{where} (busy with another session?)")
    except RemoteError:
        raise
    except RuntimeError as e:
        message = str(e)
        if "cannot find server that matches key" in message:
            raise RemoteError(f"{where} refused key {key!r}") from None
        if "cannot obtain address" in message:
            raise RemoteError(f"cannot resolve the host name {host!r}") from None
        if "Connect to" in message and "failed" in message:
            raise RemoteError(f"cannot reach {where} (connection refused or unreachable)") from None
        raise RemoteError(f"{where}: {_message(e)}") from None


def registered_keys(summary: Mapping[str, Any]) -> list[str]:
    """The device keys that servers registered with a tracker (from ``TrackerSession.summary()``)."""
    keys = {info["key"].partition(":")[2] for info in summary.get("server_info", [])
            if info.get("key", "").startswith("server:")}
    return sorted(keys)


def _pool(host: str, port: int, key: str, timeout: float) -> tuple[Any, int]:
    """A session with the tracker and how many servers are registered with it under ``key`` (at least one)."""
    from tvm import rpc

    where = f"RPC tracker at {host}:{port}"
    _probe(host, port, timeout, "RPC tracker")
    try:
        tracker = _bounded(lambda: rpc.connect_tracker(host, port), timeout, f"{where} (is it a tracker?)")
        summary = _bounded(tracker.summary, timeout, where)
    except RemoteError:
        raise
    except (RuntimeError, OSError) as e:
        raise RemoteError(f"{where} does not answer as a TVM RPC tracker ({_message(e)})") from None
    keys = registered_keys(summary)
    if key not in keys:
        tracker.close()
        raise RemoteError(f"{where} has no device registered under key {key!r} "
                          f"(registered: {', '.join(keys) or 'none'})")
    return tracker, sum(info.get("key") == f"server:{key}" for info in summary.get("server_info", []))


def pool_size(tracker: str, key: str | None, timeout: float = DEFAULT_TIMEOUT_S) -> int:
    """How many devices are registered with the tracker at ``tracker`` ("HOST:PORT") under ``key``; a
    ``RemoteError`` that says why when the tracker cannot be reached or has none."""
    if not key:
        raise RemoteError("--tracker needs --key: the device key the servers registered with")
    session, count = _pool(*parse_address(tracker, "--tracker"), key, timeout)
    session.close()
    return count


def _request_from_tracker(host: str, port: int, key: str, timeout: float) -> Any:
    where = f"RPC tracker at {host}:{port}"
    tracker, _ = _pool(host, port, key, timeout)
    try:
        return _bounded(lambda: tracker.request(key, max_retry=1), timeout,
                        f"{where} (every {key!r} device busy?)")
    except RemoteError:
        raise
    except (RuntimeError, OSError) as e:
        raise RemoteError(f"{where}: could not get a {key!r} device: {_message(e)}") from None
    finally:
        tracker.close()


def connect(rpc: str | None = None, tracker: str | None = None, key: str | None = None,
            timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """A ``tvm.rpc.RPCSession`` to one server (``rpc="HOST:PORT"``, optional server ``key``) or to a device of
    the pool ``key`` behind a tracker (``tracker="HOST:PORT"``). Each step waits at most ``timeout`` seconds."""
    if (rpc is None) == (tracker is None):
        raise RemoteError("give exactly one of an RPC server address (--rpc) or a tracker address (--tracker)")
    if rpc is not None:
        host, port = parse_address(rpc, "--rpc")
        return _connect_server(host, port, key or "", timeout)
    if not key:
        raise RemoteError("--tracker needs --key: the device key the servers registered with")
    host, port = parse_address(tracker, "--tracker")
    return _request_from_tracker(host, port, key, timeout)


def _flatten(value: Any) -> list[Any]:
    return [x for v in value for x in _flatten(v)] if isinstance(value, (tuple, list)) else [value]


class RemoteRunner:
    """An artifact's library running on a remote device: the Relax VM is built there and inputs and params are
    copied there once, so ``time`` measures the model on the device, not the network.

    ``params`` in the order of the compiled function's param arguments (``graph.params``), as for ``Runner``.
    """

    # The signature checks of the local Runner: they read only ``input_names`` and ``input_types``.
    check_inputs = Runner.check_inputs

    def __init__(self, session: Any, lib_path: str, input_types: Sequence[TensorType],
                 params: Mapping[str, np.ndarray], device: str = "cpu", input_names: Sequence[str] | None = None,
                 built_for: str = "", timeout: float = 60.0):
        """``built_for``: the artifact's host triple (the manifest's ``target.triple``), checked against the
        remote's where it can say, and named in the error when the remote cannot load the library.
        ``timeout``: deadline for uploading the library and the params."""
        import tvm
        from tvm import relax

        self.input_types = list(input_types)
        self.input_names = list(input_names) if input_names is not None else [
            f"input{i}" for i in range(len(self.input_types))]
        self.device = session.cuda(0) if device == "cuda" else session.cpu(0)
        if device == "cuda" and not self.device.exist:
            raise RemoteError("the remote has no CUDA device, and this artifact is built for cuda")
        theirs = remote_triple(session)
        if built_for and theirs and _arch(built_for) != _arch(theirs):
            raise RemoteError(f"this artifact is built for {built_for}, the remote is {theirs}: compile it for "
                              "the remote's target")
        # a fresh name per library: the remote's dlopen hands back the library first loaded under a path, so a
        # second one uploaded under the same name in a session would run the first one's code
        name = f"lib-{uuid.uuid4().hex[:12]}.so"
        _bounded(lambda: session.upload(lib_path, name), timeout, f"uploading {name} to the remote")
        try:
            module = session.load_module(name)
        except RuntimeError as e:
            raise RemoteError(f"the remote cannot load the artifact's library (built for "
                              f"{built_for or 'another target'}): {_message(e)}") from None
        self.session = session
        self.vm = relax.VirtualMachine(module, self.device)
        self._params = _bounded(lambda: [tvm.runtime.tensor(contiguous(np.asarray(a)), self.device)
                                         for a in params.values()], timeout, "copying the params to the remote")

    def _set_inputs(self, inputs: Sequence[Any]) -> None:
        import tvm

        args = [tvm.runtime.tensor(a, self.device) for a in self.check_inputs(inputs)]
        # set_input + invoke_stateful is the VM's calling convention that works over RPC
        self.vm.set_input("main", *args, *self._params)

    def __call__(self, *inputs: Any) -> list[np.ndarray]:
        self._set_inputs(inputs)
        self.vm.invoke_stateful("main")
        return [to_numpy(o) for o in _flatten(self.vm.get_outputs("main"))]

    def time(self, inputs: Sequence[Any], repeat: int = 50, warmup: int = 5) -> list[float]:
        """Milliseconds per call, one entry per repeat, measured on the remote by the VM's ``time_evaluator``
        (which also syncs a GPU) after ``warmup`` untimed calls."""
        self._set_inputs(inputs)
        for _ in range(warmup):
            self.vm.invoke_stateful("main")
        timer = self.vm.time_evaluator("invoke_stateful", self.device, number=1, repeat=repeat)
        return [t * 1e3 for t in timer("main").results]

    def __repr__(self) -> str:
        ins = ", ".join(f"{n}: {t}" for n, t in zip(self.input_names, self.input_types))
        return f"RemoteRunner({ins}) on {self.device}"


class RemoteMeasurer:
    """A ``LatencyTable`` ``measure_fn`` that times on the device behind an RPC ``session``: each graph is built
    for ``target`` here (cross-compiled where the target needs it), uploaded, and timed there by
    ``RemoteRunner.time``, so the planner's costs are the board's own.

        table = LatencyTable("arm64", measure_fn=RemoteMeasurer(session, "arm64"), device="rk3588 (tracker)")

    ``budget_s``: about how long the timed calls of one graph take on the device (at least ``MIN_REPEAT`` calls).
    """

    MIN_REPEAT, MAX_REPEAT, WARMUP = 10, 500, 3

    def __init__(self, session: Any, target: Any, budget_s: float = 0.25):
        self.session, self.target, self.budget_s = session, target, budget_s

    def __call__(self, graph: Any, arrays: Sequence[np.ndarray]) -> list[float]:
        import tempfile
        from pathlib import Path

        from .pipeline import build, export_library, prepare_graph

        graph = prepare_graph(graph, self.target)
        with tempfile.TemporaryDirectory(prefix="sparsecc-rpc-") as tmp:
            lib_path = str(Path(tmp) / "lib.so")
            export_library(build(graph, self.target), lib_path, self.target)
            return self.time_library(lib_path, graph, arrays, built_for=target_info(self.target).get("triple", ""))

    def time_library(self, lib_path: str, graph: Any, arrays: Sequence[np.ndarray],
                     built_for: str = "") -> list[float]:
        """Milliseconds per call of a built library (``graph``: the prepared graph it was built from, for its
        inputs and params), on the remote; the number of calls fills about ``budget_s``."""
        runner = RemoteRunner(self.session, lib_path, [graph.types[i] for i in graph.inputs],
                              {k: p.data for k, p in graph.params.items()},
                              device="cuda" if target_name(self.target) == "cuda" else "cpu",
                              input_names=graph.inputs, built_for=built_for)
        probe = runner.time(arrays, repeat=3, warmup=self.WARMUP)
        per_call_s = max(float(np.median(probe)), 1e-6) / 1e3
        repeat = int(min(self.MAX_REPEAT, max(self.MIN_REPEAT, self.budget_s / per_call_s)))
        return runner.time(arrays, repeat=repeat, warmup=0)
