"""Runs the ONNX node test suite through sparsecc -> x86 and writes benchmarks/results/onnx_conformance.{json,md}.

    python -m benchmarks.onnx_conformance [--workers 2] [--every N] [--no-tvm]

Modes (see ``sparsecc.frontends.onnx.conformance``): ``as_is`` runs every case; ``frozen`` re-runs only the
cases with integer-typed inputs (the others are the same model, so they keep their as-is result). ``tvm_as_is`` /
``tvm_frozen`` do the same through TVM 0.27's own ONNX frontend: the baseline, measured in the same run by the
same rule.
"""
from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

from sparsecc.frontends.onnx.conformance import (MODES, CaseResult, has_integer_inputs, load_cases, op_label,
                                                 run_suite)

RESULTS = Path(__file__).parent / "results"
STATUSES = ("pass", "unsupported", "mismatch", "crash")


def run(workers: int, every: int, modes: tuple[str, ...]) -> dict:
    cases = load_cases()
    indices = list(range(0, len(cases), every))
    report: dict = {"cases": len(indices), "suite_size": len(cases), "workers": workers,
                    "machine": f"{platform.machine()}, {platform.python_version()}", "modes": {}}
    as_is: dict[str, list[CaseResult]] = {}  # per frontend ("" = sparsecc, "tvm_")
    for mode in modes:
        frontend = mode.removesuffix("as_is").removesuffix("frozen")
        frozen = mode.endswith("frozen")
        todo = [i for i in indices if has_integer_inputs(cases[i])] if frozen else indices
        t0 = time.perf_counter()
        done = run_suite(todo, mode, workers, progress=_progress(len(todo), mode))
        wall = time.perf_counter() - t0
        if frozen:
            rerun = {r.index: r for r in done}
            done = [rerun.get(r.index, r) for r in as_is[frontend]]
        else:
            as_is[frontend] = done
        totals = collections.Counter(r.status for r in done)
        report["modes"][mode] = {"totals": {s: totals.get(s, 0) for s in STATUSES}, "cases_run": len(todo),
                                 "wall_seconds": round(wall, 1),
                                 "mean_case_seconds": round(sum(r.seconds for r in done) / max(len(done), 1), 3),
                                 "results": [asdict(r) for r in done]}
    for r in as_is[""]:  # names for worker-death records
        r.op_type = r.op_type if r.op_type != "?" else op_label(cases[r.index])
    return report


def _progress(total: int, mode: str):
    count = collections.Counter()

    def show(r: CaseResult) -> None:
        count[r.status] += 1
        n = sum(count.values())
        if r.status in ("mismatch", "crash"):
            print(f"[{mode}] {r.status.upper()} {r.name}: {r.detail[:200]}", file=sys.stderr, flush=True)
        if n % 100 == 0 or n == total:
            print(f"[{mode}] {n}/{total} {dict(count)}", file=sys.stderr, flush=True)
    return show


def markdown(report: dict) -> str:
    lines = ["# ONNX node-conformance of sparsecc (x86)", "",
             f"`onnx.backend.test.case.node.collect_testcases()`: {report['suite_size']} cases "
             f"({report['cases']} run), each compiled with `sparsecc.compile(model, target='x86')`, run on its data "
             "set and compared with onnx.backend.test's rule (shape, dtype, allclose with the case's rtol/atol). "
             "`frozen`: integer-typed inputs made initializers (only cases with such inputs are re-run). "
             "`tvm_*`: the same cases through TVM 0.27's own ONNX frontend (`from_onnx` + `tvm.compile`), same rule, "
             "same run; for it any exception counts as unsupported, since it has no refusal type. "
             f"{report['workers']} worker processes; {report['machine']}.", "",
             "| mode | pass | unsupported | mismatch | crash | cases run | wall s | mean s/case |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, m in report["modes"].items():
        t = m["totals"]
        lines.append(f"| {mode} | {t['pass']} | {t['unsupported']} | {t['mismatch']} | {t['crash']} | "
                     f"{m['cases_run']} | {m['wall_seconds']} | {m['mean_case_seconds']} |")
    tvm = {r["index"]: r for r in report["modes"].get("tvm_as_is", {}).get("results", [])}
    lines += ["", "## Per op type", "", "| op | cases | pass (as is) | pass (frozen) | TVM frontend pass (as is) | "
              "unsupported (as is): a reason |", "|---|---|---|---|---|---|"]
    frozen = {r["index"]: r for r in report["modes"]["frozen"]["results"]}
    groups: dict[str, list[dict]] = collections.defaultdict(list)
    for r in report["modes"]["as_is"]["results"]:
        groups[r["op_type"]].append(r)
    for op in sorted(groups):
        rs = groups[op]
        unsupported = [r for r in rs if r["status"] == "unsupported"]
        reasons = collections.Counter(_reason(r["detail"]) for r in unsupported)
        reason = f"{len(unsupported)}: {reasons.most_common(1)[0][0]}" if unsupported else ""
        bad = [r for r in rs if r["status"] in ("mismatch", "crash")]
        if bad:
            reason += f" **{len(bad)} {bad[0]['status']}**"
        tvm_pass = sum(tvm[r["index"]]["status"] == "pass" for r in rs) if tvm else "-"
        lines.append(f"| {op} | {len(rs)} | {sum(r['status'] == 'pass' for r in rs)} | "
                     f"{sum(frozen[r['index']]['status'] == 'pass' for r in rs)} | {tvm_pass} | "
                     f"{reason.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _reason(detail: str) -> str:
    return (detail.split("): ", 1)[-1] if "): " in detail else detail)[:110]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--every", type=int, default=1, help="run every N-th case only")
    parser.add_argument("--no-tvm", action="store_true", help="skip the TVM-frontend baseline modes")
    args = parser.parse_args()
    report = run(args.workers, args.every, MODES[:2] if args.no_tvm else MODES)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "onnx_conformance.json").write_text(json.dumps(report, indent=1))
    (RESULTS / "onnx_conformance.md").write_text(markdown(report))
    for mode, m in report["modes"].items():
        print(mode, m["totals"], f"{m['wall_seconds']} s")


if __name__ == "__main__":
    main()
