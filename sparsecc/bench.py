"""Latency measurement shared by ``sparsecc bench``, the demo and ``benchmarks/``: warm-up, then
``repeat`` timed calls; median, p90, stdev and a 95% confidence interval of the median."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np

from sparsecc.ir.dims import eval_dim
from sparsecc.ir.graph import Graph


def time_fn(fn: Callable[[], Any], repeat: int = 50, warmup: int = 5) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    n = len(times)
    # distribution-free CI of the median: order statistics at n/2 -+ 1.96 sqrt(n)/2
    half = 0.98 * n ** 0.5
    lo, hi = times[max(0, int(n / 2 - half))], times[min(n - 1, int(np.ceil(n / 2 + half)))]
    return {"median_ms": statistics.median(times), "p90_ms": times[min(n - 1, int(0.9 * n))],
            "stdev_ms": statistics.stdev(times) if n > 1 else 0.0, "min_ms": times[0],
            "ci95_ms": [lo, hi], "repeat": n, "warmup": warmup}


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


def bench_compiled(cm: Any, arrays: Sequence[np.ndarray], repeat: int = 50, warmup: int = 5) -> dict[str, Any]:
    runner = cm.runner()
    stats = time_fn(lambda: runner(*arrays), repeat, warmup)
    return {"artifact_target": cm.target, "inputs": [list(a.shape) for a in arrays], **stats}
