"""Latency of sparsecc vs PyTorch eager, torch.compile, ONNX Runtime and TVM's default pipeline, in one run.

    .venv/bin/python -m benchmarks.run                      # every workload, results in benchmarks/results/
    .venv/bin/python -m benchmarks.run -w minilm_b1 -r sparsecc -r pytorch_eager

All runtimes of a workload are prepared, then timed in interleaved rounds (in each, every runtime in turn runs an
untimed call, then about 0.3 s of timed ones; about ``--seconds`` per runtime in all, at least ``--min-repeat``
calls), so a shared machine's slow spells fall on all of them alike. The table reports the median and p90 (ms), the
median's 95% confidence interval, the ratio to PyTorch eager measured in the same rounds (lower is faster), and
each output's max relative difference to eager. A runtime that fails is reported with its error, not dropped.
Machines here are shared: trust ratios, not absolute times.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from sparsecc.bench import host_cpu, summarize, time_fn

from .models import WORKLOADS
from .runtimes import RUNTIMES, first_output

RESULTS = Path(__file__).parent / "results"


def measure(fn, seconds: float, min_repeat: int) -> dict:
    """Back to back: warm-up, then about ``seconds`` of timed calls (at least ``min_repeat``); the GEMV section's
    *warm* timing, where a weight that fits in L3 stays there."""
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    for _ in range(2):
        fn()
    repeat = int(min(500, max(min_repeat, seconds / max(once, 1e-6))))
    return time_fn(fn, repeat=repeat, warmup=0)


def interleaved(fns: dict, rounds: int) -> dict:
    """Median ms of each of ``fns`` called in turn, one call each per round: every call finds the caches as the
    others left them (after a 64 MiB dense GEMV, a compressed weight that fits in L3 is no longer there), and all
    of them see the same moments of a shared machine's memory bandwidth."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


BLOCK_S = 0.3
"""Timed calls of one runtime in a row, within a round: a runtime's first call after another's is not timed, for the
other's worker threads (OpenMP, ONNX Runtime and TVM pools) go on spinning for a while after their work, on the
same two cores; timed single calls in turn made the runtime after ONNX Runtime 2.4x slower."""


def rounds_of_calls(fns: dict, seconds: float, min_repeat: int) -> dict[str, list[float]]:
    """Per runtime, the ms of its timed calls over rounds in which every runtime runs, in turn, one untimed call
    and then timed ones for about ``BLOCK_S``: about ``seconds`` per runtime in all, at least ``min_repeat`` calls.
    A shared machine's slow spells then fall on every runtime alike; timed one after the other instead, a runtime
    measured in a slow minute looked 1.8x slower than in the run before."""
    rounds = max(1, round(seconds / BLOCK_S))
    per_block = -(-min_repeat // rounds)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            start, calls = time.perf_counter(), 0
            while calls < per_block or time.perf_counter() - start < BLOCK_S:
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
                calls += 1
    return times


def bench_workload(name: str, runtimes: list[str], seconds: float, min_repeat: int, workdir: Path) -> dict:
    """Prepares every runtime (its output checked against eager's), then times them together
    (``rounds_of_calls``); a runtime whose single call exceeds ``seconds`` (TVM's unscheduled default: seconds per
    call) gets 3 timed calls of its own instead."""
    w = WORKLOADS[name]()
    print(f"[bench] {w.name}: inputs {[list(a.shape) for a in w.inputs]}", flush=True)
    rows, fns, slow, reference = {}, {}, {}, None
    for rt in runtimes:
        try:
            t0 = time.perf_counter()
            fn = RUNTIMES[rt](w, workdir)
            out = first_output(fn())
            prepare_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            fn()
            (slow if time.perf_counter() - t0 > seconds else fns)[rt] = fn
        except Exception as e:  # a runtime that cannot run this model is a result too
            rows[rt] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
            print(f"[bench]   {rt:14} FAILED {rows[rt]['error']}", flush=True)
            traceback.print_exc(limit=1)
            continue
        if rt == "pytorch_eager":
            reference = out
        rel = (float(np.abs(out.astype(np.float64) - reference).max() / max(np.abs(reference).max(), 1e-30))
               if reference is not None and out.shape == reference.shape else None)
        rows[rt] = {"prepare_s": round(prepare_s, 2), "max_rel_diff_vs_eager": rel}
    stats = {rt: summarize(t, warmup=1) for rt, t in rounds_of_calls(fns, seconds, min_repeat).items()}
    stats |= {rt: time_fn(fn, repeat=3, warmup=0) for rt, fn in slow.items()}
    for rt in runtimes:
        if rt in stats:
            rows[rt] |= stats[rt] | {"timed": "alone (one call exceeds the budget)" if rt in slow else "interleaved"}
            print(f"[bench]   {rt:14} median {stats[rt]['median_ms']:9.3f} ms  p90 {stats[rt]['p90_ms']:9.3f} ms  "
                  f"(n={stats[rt]['repeat']}, prepare {rows[rt]['prepare_s']:.1f} s)", flush=True)
    base = rows.get("pytorch_eager", {}).get("median_ms")
    for r in rows.values():
        if base and "median_ms" in r:
            r["ratio_vs_eager"] = r["median_ms"] / base
    return {"workload": w.name, "inputs": [list(a.shape) for a in w.inputs], "runtimes": rows}


def gemv_bandwidth(seconds: float, min_repeat: int) -> dict:
    """Batch-1 linear on a 4096x4096 fp32 weight (64 MiB, bigger than L3) vs the machine's streaming-read
    bandwidth measured the same way (a parallel sum over a 256 MiB array), both in GB/s."""
    import sparsecc
    from sparsecc.ir.graph import Graph, TensorType

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4096, 4096)).astype(np.float32)
    g = Graph(name="gemv")
    g.add_input("x", TensorType((1, 4096), "float32"))
    p = g.add_param("w", w)
    (y,) = g.add_node("linear", ["x", p], [TensorType((1, 4096), "float32")])
    g.outputs = [y]
    runner = sparsecc.compile(None, graph=g, target="x86").runner()
    x = rng.standard_normal((1, 4096)).astype(np.float32)
    ours = measure(lambda: runner(x), seconds, min_repeat)
    encoded, runs = {}, {"dense": lambda: runner(x)}
    for spec in GEMV_ENCODINGS:
        cm = sparsecc.compile(None, graph=g, target="x86", compress=spec, calibration=[(x,)])
        run = cm.runner()
        runs[spec] = lambda run=run: run(x)
        dense = measure(runs["dense"], seconds, min_repeat)  # just before: a slow spell then hits both
        stats = measure(runs[spec], seconds, min_repeat)
        encoded[spec] = {"ms": stats["median_ms"], "dense_ms": dense["median_ms"],
                         "speedup_vs_dense": dense["median_ms"] / stats["median_ms"],
                         "weight_bytes": cm.manifest["plan"][0]["bytes"]}
        print(f"[bench]   GEMV {spec:18} {stats['median_ms']:.3f} ms  {encoded[spec]['speedup_vs_dense']:.2f}x "
              "vs dense", flush=True)
    cold = interleaved(runs, rounds=max(min_repeat, int(seconds / 3e-3)))
    for spec in GEMV_ENCODINGS:
        encoded[spec].update(cold_ms=cold[spec], cold_speedup_vs_dense=cold["dense"] / cold[spec])
    wt, xt = torch.from_numpy(w), torch.from_numpy(x)
    eager = measure(lambda: torch.nn.functional.linear(xt, wt), seconds, min_repeat)
    big = torch.ones(64 * 1024 * 1024)  # 256 MiB
    read = measure(lambda: big.sum(), seconds, min_repeat)
    gbs = lambda nbytes, s: nbytes / (s["median_ms"] / 1e3) / 1e9  # noqa: E731
    return {"weight_bytes": w.nbytes, "sparsecc_ms": ours["median_ms"], "pytorch_ms": eager["median_ms"],
            "sparsecc_GBps": gbs(w.nbytes, ours), "pytorch_GBps": gbs(w.nbytes, eager),
            "stream_read_GBps": gbs(big.numel() * 4, read),
            "fraction_of_stream": gbs(w.nbytes, ours) / gbs(big.numel() * 4, read), "encodings": encoded}


GEMV_ENCODINGS = ("int8@rtn", "int4-g128@rtn", "int4@rtn", "2:4@magnitude", "2:4@magnitude+int8@rtn",
                  "2:4@magnitude+int4-g64@rtn", "w8a8@rtn", "w7a8@rtn", "w4a8@rtn", "2:4@magnitude+w7a8@rtn",
                  "2:4@magnitude+w4a8@rtn")
"""Encodings timed on the 4096x4096 GEMV (data-free methods: the values do not change the speed; w8a8 takes its
input grid from the one calibration vector)."""


def l3_mib() -> int | None:
    """This machine's last-level cache in MiB (Linux sysfs), or None where it cannot be read: the GEMV's warm
    timings read a compressed weight that fits in it from there."""
    caches = sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"))
    for index in reversed(caches):
        try:
            if (index / "level").read_text().strip() == "3":
                size = (index / "size").read_text().strip()
                return int(size[:-1]) // 1024 if size.endswith("K") else int(size) // (1 << 20)
        except (OSError, ValueError):
            return None
    return None


def write_results(doc: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps(doc, indent=1))
    runtimes = list(RUNTIMES)
    lines = ["# Latency: sparsecc vs PyTorch eager, torch.compile, ONNX Runtime, TVM default", "",
             f"{doc['machine']}, {doc['date']}. Median ms (ratio to PyTorch eager in the same run; < 1 is faster); "
             "a workload's runtimes are timed in interleaved rounds (each in turn: one untimed call, then ~0.3 s "
             "of timed ones). "
             "`python -m benchmarks.run` regenerates this.", "",
             "| workload | " + " | ".join(runtimes) + " |", "|---" * (len(runtimes) + 1) + "|"]
    for wl in doc["workloads"]:
        cells = []
        for rt in runtimes:
            r = wl["runtimes"].get(rt)
            if r is None:
                cells.append("-")
            elif "error" in r:
                cells.append(f"failed ({r['error'][:60]})")
            else:
                cells.append(f"{r['median_ms']:.2f} ({r.get('ratio_vs_eager', float('nan')):.2f}x)")
        lines.append(f"| {wl['workload']} | " + " | ".join(cells) + " |")
    if "gemv" in doc:
        gv = doc["gemv"]
        l3 = f"{doc['l3_mib']} MiB" if doc.get("l3_mib") else "machine's"
        lines += ["", "## Batch-1 GEMV, 4096x4096 fp32 (64 MiB weight)", "",
                  f"sparsecc {gv['sparsecc_ms']:.3f} ms = {gv['sparsecc_GBps']:.1f} GB/s; PyTorch "
                  f"{gv['pytorch_ms']:.3f} ms = {gv['pytorch_GBps']:.1f} GB/s; streaming read "
                  f"{gv['stream_read_GBps']:.1f} GB/s -> sparsecc reaches {100 * gv['fraction_of_stream']:.0f}% of it.",
                  "", "Compressed encodings of the same weight, same run (speed-up over sparsecc's dense kernel; "
                  "< 1 would mean slower than dense). *warm*: each kernel timed back to back, right after the dense "
                  f"one (the speed-up is over that dense timing), so a compressed weight that fits in the {l3} L3 is "
                  "read from there; *cold*: all kernels called in turn, one call each per round, so the dense GEMV's "
                  "64 MiB have evicted it (what a model whose weights exceed L3 sees).",
                  "", "| encoding | weight MB | warm ms | warm speed-up | cold ms | cold speed-up |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {spec} | {e['weight_bytes'] / 1e6:.2f} | {e['ms']:.3f} | {e['speedup_vs_dense']:.2f}x | "
                  f"{e.get('cold_ms', float('nan')):.3f} | {e.get('cold_speedup_vs_dense', float('nan')):.2f}x |"
                  for spec, e in gv.get("encodings", {}).items()]
    (out / "latency.md").write_text("\n".join(lines) + "\n")
    plot(doc, out / "latency.png")


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runtimes = [rt for rt in RUNTIMES if rt != "pytorch_eager"]
    names = [wl["workload"] for wl in doc["workloads"]]
    fig, ax = plt.subplots(figsize=(11.5, 4.5))
    width = 0.8 / len(runtimes)
    colors = plt.get_cmap("tab20").colors  # one per runtime: tab10's ten repeat past ten runtimes
    for i, rt in enumerate(runtimes):
        vals = [wl["runtimes"].get(rt, {}).get("ratio_vs_eager", np.nan) for wl in doc["workloads"]]
        ax.bar(np.arange(len(names)) + i * width, vals, width, label=rt, color=colors[i % len(colors)])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=15)
    ax.set_ylabel("latency / PyTorch eager (log, lower is faster)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, not over them
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("-w", "--workload", action="append", choices=sorted(WORKLOADS), help="default: all")
    ap.add_argument("-r", "--runtime", action="append", choices=list(RUNTIMES), help="default: all")
    ap.add_argument("--seconds", type=float, default=3.0, help="timing budget per runtime and workload")
    ap.add_argument("--min-repeat", type=int, default=10)
    ap.add_argument("--no-gemv", action="store_true", help="skip the GEMV bandwidth section")
    ap.add_argument("-o", "--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    runtimes = args.runtime or list(RUNTIMES)
    if "pytorch_eager" not in runtimes:
        runtimes.insert(0, "pytorch_eager")  # the baseline every ratio is against
    doc = {"machine": f"{host_cpu()}, {torch.get_num_threads()} threads",
           "l3_mib": l3_mib(), "date": time.strftime("%Y-%m-%d"), "workloads": []}
    with tempfile.TemporaryDirectory(prefix="sparsecc-bench-") as tmp:
        for name in args.workload or list(WORKLOADS):
            doc["workloads"].append(bench_workload(name, runtimes, args.seconds, args.min_repeat, Path(tmp)))
    if not args.no_gemv:
        doc["gemv"] = gemv_bandwidth(args.seconds, args.min_repeat)
    write_results(doc, args.out)
    print(f"[bench] wrote {args.out}/latency.json, latency.md, latency.png")
    return doc


if __name__ == "__main__":
    main()
