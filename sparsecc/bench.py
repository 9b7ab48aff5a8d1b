"""Latency measurement shared by ``sparsecc bench``, the demo and ``benchmarks/``: warm-up, then ``repeat`` timed
calls; median, p90, stdev, min and a 95% confidence interval of the median, here or on a remote device; and a
per-operator profile from the Relax VM's instrument hook.

Local timings wrap the runner call (numpy in, numpy out: host copies included); remote timings come from the VM's
``time_evaluator`` on the device with inputs already there (the network is not timed). The ``timed`` field of a
result says which.
"""
from __future__ import annotations

import collections
import ipaddress
import platform
import socket
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np

from sparsecc.ir.dims import eval_dim
from sparsecc.ir.graph import Graph

EMULATED_NOTE = "(emulated: not device timings)"


def median_ci95(sorted_ms: Sequence[float]) -> list[float]:
    """Distribution-free 95% CI of the median: the order statistics at n/2 -+ 1.96 sqrt(n)/2."""
    n = len(sorted_ms)
    half = 0.98 * n ** 0.5
    return [sorted_ms[max(0, int(n / 2 - half))], sorted_ms[min(n - 1, int(np.ceil(n / 2 + half)))]]


def summarize(times_ms: Sequence[float], warmup: int) -> dict[str, Any]:
    """Statistics of per-call times (ms): median, p90, stdev, min, ci95 of the median, counts."""
    times = sorted(times_ms)
    n = len(times)
    return {"median_ms": statistics.median(times), "p90_ms": times[min(n - 1, int(0.9 * n))],
            "stdev_ms": statistics.stdev(times) if n > 1 else 0.0, "min_ms": times[0],
            "ci95_ms": median_ci95(times), "repeat": n, "warmup": warmup}


def wall_times(fn: Callable[[], Any], repeat: int = 50, warmup: int = 5) -> list[float]:
    """Wall-clock milliseconds of ``repeat`` calls of ``fn()`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def time_fn(fn: Callable[[], Any], repeat: int = 50, warmup: int = 5) -> dict[str, Any]:
    """Wall-clock statistics of ``fn()`` (see ``summarize``) after ``warmup`` untimed calls."""
    return summarize(wall_times(fn, repeat, warmup), warmup)


def example_arrays(graph: Graph, dims: Sequence[str] = (), seed: int = 0) -> list[np.ndarray]:
    """Inputs for timing: standard normal floats, ones for integers/bools; symbolic dims from ``dims``
    (``["batch=4"]``), default 1."""
    env = {k: int(v) for k, v in (d.split("=", 1) for d in dims)}
    rng = np.random.default_rng(seed)
    arrays = []
    for name in graph.inputs:
        t = graph.types[name]
        shape = []
        for d in t.shape:
            if isinstance(d, str):
                for sym in [s for s in (d,) if s.isidentifier()]:
                    env.setdefault(sym, 1)
            shape.append(eval_dim(d, env))
        if t.dtype.startswith("float"):
            arrays.append(rng.standard_normal(shape).astype(t.dtype))
        else:
            arrays.append(np.ones(shape, dtype=t.dtype))
    return arrays


def _device(cm: Any) -> str:
    return "cuda" if cm.target == "cuda" else "cpu"


def _result(cm: Any, arrays: Sequence[np.ndarray], where: str, timed: str, times_ms: Sequence[float],
            warmup: int, emulated: bool) -> dict[str, Any]:
    return {"where": where, "artifact_target": cm.target, "device": _device(cm), "emulated": emulated,
            "timed": timed, "inputs": [list(a.shape) for a in arrays], **summarize(times_ms, warmup),
            "times_ms": list(times_ms)}


def bench_compiled(cm: Any, arrays: Sequence[np.ndarray], repeat: int = 50, warmup: int = 5,
                   profile: bool = False) -> dict[str, Any]:
    """Times ``cm`` on this machine; with ``profile``, adds ``profile_runner``'s per-operator table."""
    runner = cm.runner()
    times = wall_times(lambda: runner(*arrays), repeat, warmup)
    result = _result(cm, arrays, "local", "runner call with numpy in/out, wall clock", times, warmup, emulated=False)
    if profile:
        result["profile"] = profile_runner(runner, arrays, runs=min(repeat, 20))
    return result


def bench_remote(cm: Any, arrays: Sequence[np.ndarray], session: Any, where: str, repeat: int = 50,
                 warmup: int = 5, emulated: bool = False) -> dict[str, Any]:
    """Times ``cm`` on the device behind an RPC ``session`` (see ``backends.tvm.remote``)."""
    from sparsecc.backends.tvm.remote import RemoteRunner

    runner = RemoteRunner(session, cm.lib_path, [cm.graph.types[i] for i in cm.input_names],
                          {k: p.data for k, p in cm.graph.params.items()}, device=_device(cm),
                          input_names=cm.input_names, built_for=cm.manifest["target"].get("triple", ""))
    times = runner.time(arrays, repeat=repeat, warmup=warmup)
    return _result(cm, arrays, where, "VM main on the device, time_evaluator", times, warmup, emulated)


def profile_runner(runner: Any, arrays: Sequence[np.ndarray], runs: int = 20) -> dict[str, Any]:
    """Time per function the Relax VM calls (fused kernels such as ``fused_dense_packed_relu`` and the VM's
    builtins), from its ``set_instrument`` hook over ``runs`` calls of a warmed-up local ``Runner``.

    The hook runs Python around every call, so the instrumented total exceeds the plain latency; the shares are
    of the instrumented total and sum to 1. Sorted by time, most first.
    """
    import tvm

    sync = runner.device.sync if runner.device.dlpack_device_type() != tvm.cpu().dlpack_device_type() else None
    totals: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter[str] = collections.Counter()
    started: list[float] = []

    def hook(func: Any, symbol: str, before_run: bool, ret_value: Any, *args: Any) -> int:
        if sync is not None:
            sync()
        if before_run:
            started.append(time.perf_counter())
        else:
            totals[symbol] += (time.perf_counter() - started.pop()) * 1e3
            calls[symbol] += 1
        return 0  # VMInstrumentReturnKind.NO_OP: run the call

    runner(*arrays)
    runner.vm.set_instrument(hook)
    try:
        for _ in range(runs):
            runner(*arrays)
    finally:
        runner.vm.set_instrument(None)
    total = sum(totals.values())
    ops = [{"name": name, "ms_per_run": ms / runs, "calls_per_run": calls[name] / runs,
            "us_per_call": ms * 1e3 / calls[name], "share": ms / total if total else 0.0}
           for name, ms in sorted(totals.items(), key=lambda kv: -kv[1])]
    return {"runs": runs, "instrumented_ms_per_run": total / runs, "ops": ops}


def host_arch() -> str:
    """This machine's CPU as a sparsecc target name (``x86``, ``arm64``) or its raw ``platform.machine()``."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        return "x86"
    return "arm64" if machine in ("aarch64", "arm64") else machine


def host_cpu() -> str:
    """This machine's CPU as benchmark tables name it: architecture, the core LLVM detects and, on x86, its widest
    vector extension (the templates' tiles and W8A8's dot product depend on it), e.g. ``x86_64 znver3 (AVX2)``."""
    from tvm.target import Target, codegen

    cpu = codegen.llvm_get_system_cpu()
    name = f"{platform.machine()} {cpu}"
    if host_arch() == "x86":
        target = Target({"kind": "llvm", "mcpu": cpu})
        isa = next((label for feature, label in (("avx512vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"),
                                                 ("avx2", "AVX2")) if codegen.target_has_features(feature, target)),
                   "no AVX2")
        name += f" ({isa})"
    return name


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def emulated_on_loopback(target: str, host: str) -> bool:
    """A server on this machine running a CPU artifact for another architecture can only be an emulator
    (qemu-user): its timings are not the device's."""
    return target in ("x86", "arm64") and target != host_arch() and is_loopback(host)


def format_result(artifact: str, result: dict[str, Any]) -> str:
    """The one-line summary ``sparsecc bench`` prints."""
    lo, hi = result["ci95_ms"]
    line = (f"{artifact} on {result['artifact_target']} ({result['where']}): median {result['median_ms']:.3f} ms "
            f"[95% CI {lo:.3f}-{hi:.3f}], p90 {result['p90_ms']:.3f} ms, stdev {result['stdev_ms']:.3f} ms, "
            f"min {result['min_ms']:.3f} ms over {result['repeat']} runs (timed: {result['timed']})")
    return f"{line} {EMULATED_NOTE}" if result["emulated"] else line


def format_profile(profile: dict[str, Any], top: int = 10) -> str:
    """The profile's ``top`` entries as a table (all of them are in the JSON)."""
    lines = [f"per-operator profile over {profile['runs']} runs (instrumented: "
             f"{profile['instrumented_ms_per_run']:.3f} ms/run)",
             f"  {'share':>6}  {'ms/run':>9}  {'calls/run':>9}  {'us/call':>9}  function"]
    for op in profile["ops"][:top]:
        lines.append(f"  {op['share'] * 100:5.1f}%  {op['ms_per_run']:9.4f}  {op['calls_per_run']:9.1f}  "
                     f"{op['us_per_call']:9.2f}  {op['name']}")
    if len(profile["ops"]) > top:
        lines.append(f"  ... {len(profile['ops']) - top} more (see --json)")
    return "\n".join(lines)
