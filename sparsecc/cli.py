"""The ``sparsecc`` command line: compile, export, run, check, inspect, bench, demo, tune.

Errors sparsecc raises on purpose (bad model file, unsupported op, wrong inputs, tampered
artifact) print one line and exit with status 2; anything else is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from sparsecc.errors import SparseccError
from sparsecc.ir.graph import Graph
from sparsecc.ir.ops import OPS

EPILOG = "Docs: README.md. Every command has --help."


def parse_input_spec(spec: str) -> tuple[str, list[int | str], str | None]:
    """``NAME=SHAPE[:DTYPE]`` with SHAPE like ``1x128`` or ``batch,128`` -> (name, dims, dtype)."""
    if "=" not in spec:
        raise SparseccError(f"--input {spec!r}: expected NAME=SHAPE[:DTYPE], e.g. input_ids=1x128:int64")
    name, rest = spec.split("=", 1)
    shape, _, dtype = rest.partition(":")
    dims = [int(d) if d.strip().isdigit() else d.strip() for d in shape.replace("x", ",").split(",") if d.strip()]
    return name, dims, dtype or None


def input_shapes(specs: list[str]) -> dict[str, list[int | str]]:
    """``--input NAME=SHAPE`` options -> {name: dims} (dtypes come from the model)."""
    shapes = {}
    for spec in specs:
        name, dims, dtype = parse_input_spec(spec)
        if dtype:
            raise SparseccError(f"--input {spec!r}: dtypes come from the model; give NAME=SHAPE only")
        shapes[name] = dims
    return shapes


def cmd_compile(args: argparse.Namespace) -> None:
    import sparsecc

    shapes = input_shapes(args.input)
    if (args.rpc or args.tracker) and args.compress != "auto":
        raise SparseccError("--rpc/--tracker are where --compress auto measures latencies; without it compile "
                            "measures nothing (time the artifact with `sparsecc bench --rpc`)")
    session = remote_session(args)
    table = None
    if session is not None:
        from sparsecc.backends.tvm.layer_latency import LatencyTable
        from sparsecc.backends.tvm.remote import RemoteMeasurer, remote_triple

        device = f"{'key ' + args.key if args.key else 'rpc ' + args.rpc} ({remote_triple(session) or 'remote'})"
        table = LatencyTable(args.target, measure_fn=RemoteMeasurer(session, args.target), device=device)
    cm = sparsecc.compile(args.model, target=args.target, compress=args.compress, budget=args.budget,
                          max_drop=args.max_drop, calibration=args.calib, input_shapes=shapes or None,
                          latency_table=table)
    cm.save(args.output)
    if "auto_plan" in cm.manifest:
        print_auto_plan(cm.manifest["auto_plan"])
    if cm.manifest["plan"]:
        print_compression(cm.manifest["plan"])
    print(f"compiled {args.model} for {cm.target}: {len(cm.graph.nodes)} ops, "
          f"{cm.manifest['metrics']['param_bytes'] / 1e6:.1f} MB of weights, "
          f"{cm.manifest['metrics']['compile_seconds']:.1f} s -> {args.output}")


def cmd_export(args: argparse.Namespace) -> None:
    from sparsecc.backends.onnx import save_onnx
    from sparsecc.passes.pipeline import canonicalize

    shapes = input_shapes(args.input)
    if Path(args.model).suffix == ".scc":
        from sparsecc.artifact import read_artifact

        if shapes:
            raise SparseccError("--input: an artifact's input shapes are fixed when it is compiled")
        graph = read_artifact(args.model).graph
    else:
        from sparsecc.compiler import capture

        graph = capture(args.model, input_shapes=shapes or None)
    graph = canonicalize()(graph)
    save_onnx(graph, args.output, opset=args.opset)
    print(f"exported {args.model}: {len(graph.nodes)} ops, opset {args.opset} -> {args.output}")


def read_inputs(names: list[str], specs: list[str]) -> list[np.ndarray]:
    """``--input NAME=FILE.npy`` options -> the arrays in the model's input order (every input named once)."""
    from sparsecc.compiler import check_inputs

    given = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        try:
            given[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise SparseccError(f"--input {name}: cannot read {path} as .npy ({e})") from None
    return check_inputs(names, given)


def cmd_run(args: argparse.Namespace) -> None:
    import sparsecc

    cm = sparsecc.load(args.artifact)
    outs = cm(*read_inputs(cm.input_names, args.input))
    outs = outs if isinstance(outs, tuple) else (outs,)
    np.savez(args.output, **dict(zip(cm.output_names, outs)))
    for name, o in zip(cm.output_names, outs):
        print(f"{name}: {o.dtype}{list(o.shape)}")
    print(f"wrote {args.output}")


def cmd_check(args: argparse.Namespace) -> int:
    import sparsecc
    from sparsecc.fidelity import check_fidelity

    cm = sparsecc.load(args.artifact)
    report = check_fidelity(cm, *read_inputs(cm.input_names, args.input))
    print(f"{'layer':24} {'encoding':18} {'input diff':>10} {'kernel diff':>11} {'codes apart':>14}")
    for layer in report.layers:
        codes = "-" if layer.codes is None else f"{layer.code_flips}/{layer.codes}"
        print(f"{layer.node:24} {layer.encoding:18} {layer.input_diff:10.1e} {layer.kernel_diff:11.1e} {codes:>14}")
    print(report.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=1))
    bad = [layer.node for layer in report.layers if layer.kernel_diff > args.tolerance]
    if bad:
        print(f"FAILED: {len(bad)} kernels differ from the interpreter by more than {args.tolerance:g} on their "
              f"deployed input: {', '.join(bad)}")
        return 1
    print(f"ok: every kernel within {args.tolerance:g} of the interpreter on its deployed input"
          + (" (the end-to-end difference comes from activation codes rounded apart)"
             if report.end_to_end > args.tolerance else ""))
    return 0


def cmd_inspect(args: argparse.Namespace) -> None:
    from sparsecc.artifact import read_artifact

    art = read_artifact(args.artifact)
    m, g = art.manifest, art.graph
    if args.json:
        print(json.dumps(m, indent=1))
        return
    print(f"{args.artifact}: sparsecc {m['sparsecc_version']}, TVM {m['tvm_version']}, format {m['format']}")
    print(f"target: {m['target']['name']}  {json.dumps(m['target'].get('tvm', m['target']))}")
    for kind in ("inputs", "outputs"):
        for io in m[kind]:
            print(f"  {kind[:-1]:6} {io['name']}: {io['dtype']}[{', '.join(map(str, io['shape']))}]")
    counts = collections.Counter(n.op for n in g.nodes)
    print(f"ops: {len(g.nodes)} (" + ", ".join(f"{k} {v}" for k, v in counts.most_common()) + ")")
    print(f"weights: {sum(p.data.nbytes for p in g.params.values()) / 1e6:.2f} MB in {len(g.params)} params")
    if "auto_plan" in m:
        print_auto_plan(m["auto_plan"])
    print_layers(g, m.get("plan", []))
    for k, v in m.get("metrics", {}).items():
        print(f"metric {k}: {v}")


def print_layers(g: Graph, plan: list[dict]) -> None:
    """One line per compressible layer: shape, encoding, stored bytes; with a compression plan, also its method,
    the dense bytes and the weight / calibration output errors (or why the layer stayed dense)."""
    from sparsecc.ir import encodings

    by_node = {p["node"]: p for p in plan}
    print("layers (compressible weights):" + ("  [errors: |W-W'|/|W|, output err on calibration]" if plan else ""))
    for node in g.nodes:
        w = OPS[node.op].compressible_weight
        if w is None or node.inputs[w] not in g.params:
            continue
        name = node.inputs[w]
        p = g.params[name]
        shape = p.encoding.meta.get("shape", list(p.logical_shape))
        stored = p.data.nbytes + sum(g.params[p.encoding.meta[k]].data.nbytes for k in encodings.COMPANIONS
                                     if k in p.encoding.meta)
        line = f"  {node.name:36} {node.op:6} {str(list(shape)):18} {p.encoding.kind:14} {stored / 1e3:9.1f} kB"
        entry = by_node.get(node.name)
        if entry is not None:
            if entry["skipped"]:
                line += f"  dense: {entry['skipped']}"
            else:
                out = "" if entry["output_error"] is None else f" out {entry['output_error']:.2e}"
                line += (f"  [{entry['encoding']} via {entry['method']}: layer {entry['dense_bytes'] / 1e3:.0f} -> "
                         f"{entry['bytes'] / 1e3:.0f} kB, w {entry['weight_error']:.2e}{out}]")
        print(line)


def print_auto_plan(auto: dict) -> None:
    """``--compress auto``'s choice: the budget, predicted latency, and per layer its sensitivity, the chosen spec
    and its latency next to the dense layer's."""
    counts = collections.Counter(c["spec"] for c in auto["layers"])
    head = f"plan for budget {auto['budget']} (minimizing {auto['objective']}): " + ", ".join(
        f"{k} x{v}" for k, v in counts.most_common())
    if auto["predicted_ms"] is not None:
        head += (f"; predicted latency {auto['predicted_ms']:.2f} ms vs dense {auto['dense_ms']:.2f} ms "
                 f"at inputs {auto['latency_shapes']}")
    print(head + f"; predicted damage {auto['damage']:.3g} ({auto['probes']} Hessian probes)")
    if auto.get("measured_ms") is not None:
        measured, dense = auto["measured_ms"], auto["dense_ms"]
        print(f"  compiled: measured {measured:.2f} ms (predicted {auto['predicted_ms']:.2f}, dense "
              f"{dense:.2f}){'  WARNING: not faster than dense on the target' if measured >= dense else ''}")
    if auto["predicted_ms"] is not None and auto["predicted_ms"] > auto["dense_ms"]:
        print(f"  note: this size-budgeted plan is predicted SLOWER than the dense model on this target "
              f"({auto['predicted_ms']:.2f} vs {auto['dense_ms']:.2f} ms); add latency=1 to the budget to forbid that")
    print(f"  {'layer':36} {'Tr(H)/n':>9}  {'choice':18} {'ms':>7} {'dense ms':>8}")
    for c in auto["layers"]:
        ms = "" if c["ms"] is None else f"{c['ms']:7.3f} {c['dense_ms']:8.3f}"
        print(f"  {c['node']:36} {c['sensitivity']:9.2e}  {c['spec']:18} {ms}")


def print_compression(plan: list[dict]) -> None:
    """The compile-time summary of a compression plan."""
    done = [p for p in plan if p["encoding"] != "dense"]
    dense = sum(p["dense_bytes"] for p in plan)
    now = sum(p["bytes"] for p in plan)
    print(f"compressed {len(done)} of {len(plan)} layers: their weights {dense / 1e6:.2f} -> {now / 1e6:.2f} MB "
          f"({dense / max(now, 1):.1f}x smaller)")
    for p in plan:
        if p["encoding"] == "dense":
            print(f"  kept dense: {p['node']} ({p['skipped'] or p['method']})")


def cmd_bench(args: argparse.Namespace) -> None:
    import sparsecc
    from sparsecc.bench import (bench_compiled, bench_remote, emulated_on_loopback, example_arrays, format_profile,
                                format_result)

    if args.profile and (args.rpc or args.tracker):
        raise SparseccError("--profile runs locally only (the VM's instrument hook calls Python around every "
                            "kernel); drop --rpc/--tracker to profile")
    if args.repeat < 1 or args.warmup < 0:
        raise SparseccError(f"--repeat {args.repeat} --warmup {args.warmup}: need repeat >= 1 and warmup >= 0")
    cm = sparsecc.load(args.artifact)
    arrays = example_arrays(cm.graph, args.dim)
    session = remote_session(args)
    if session is not None:
        from sparsecc.backends.tvm.remote import parse_address

        where = f"rpc {args.rpc}" if args.rpc else f"tracker {args.key}"
        host = parse_address(args.rpc, "--rpc")[0] if args.rpc else None
        emulated = args.emulated or (host is not None and emulated_on_loopback(cm.target, host))
        stats = bench_remote(cm, arrays, session, where, repeat=args.repeat, warmup=args.warmup, emulated=emulated)
    else:
        stats = bench_compiled(cm, arrays, repeat=args.repeat, warmup=args.warmup, profile=args.profile)
        stats["emulated"] = args.emulated
    print(format_result(args.artifact, stats))
    if "profile" in stats:
        print(format_profile(stats["profile"]))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(stats, artifact=str(args.artifact)), indent=1))


def cmd_demo(args: argparse.Namespace) -> None:
    from sparsecc.demo import run_demo

    run_demo(seq=args.seq, batch=args.batch, repeat=args.repeat,
             compress=None if args.compress.lower() == "none" else args.compress)


def cmd_tune(args: argparse.Namespace) -> None:
    from sparsecc.backends.tvm import prepare_graph
    from sparsecc.backends.tvm.remote import pool_size
    from sparsecc.backends.tvm.tuning import tune_graph
    from sparsecc.compiler import capture
    from sparsecc.passes.pipeline import canonicalize

    if args.key and not args.tracker:
        raise SparseccError("--key is for --tracker")
    if args.tracker:  # before the model is loaded: a wrong address or key fails in seconds
        pool_size(args.tracker, args.key, args.timeout)

    shapes = {}
    for spec in args.input:
        name, dims, dtype = parse_input_spec(spec)
        if dtype:
            raise SparseccError(f"--input {spec!r}: dtypes come from the model; give NAME=SHAPE only")
        shapes[name] = dims
    graph = prepare_graph(canonicalize()(capture(args.model, input_shapes=shapes or None)), args.target)
    report = tune_graph(graph, args.target, trials=args.trials, db_root=args.db, cost_model=args.cost_model,
                        tracker=args.tracker, key=args.key, timeout=args.timeout)
    print(f"tuned {args.model} for {args.target}: {report.kept} of {len(report.tasks)} kernels beat their "
          f"template; `sparsecc compile` applies them from {report.database}")


def add_remote_args(p: argparse.ArgumentParser, verb: str) -> None:
    """--rpc / --tracker (+ --key, --timeout): where a command ``verb``s on a remote device."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--rpc", metavar="HOST:PORT", help=f"{verb} on the device of this TVM RPC server")
    where.add_argument("--tracker", metavar="HOST:PORT", help=f"{verb} on a device requested from this TVM RPC "
                       "tracker (needs --key)")
    p.add_argument("--key", default=None, help="device key: the tracker pool to draw from, or the RPC server's key")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each RPC step (default 10)")


def remote_session(args: argparse.Namespace) -> Any:
    """The RPC session ``--rpc``/``--tracker`` name, or None when neither is given."""
    if args.key and not (args.rpc or args.tracker):
        raise SparseccError("--key is for --rpc/--tracker")
    if not (args.rpc or args.tracker):
        return None
    from sparsecc.backends.tvm.remote import connect

    return connect(rpc=args.rpc, tracker=args.tracker, key=args.key, timeout=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sparsecc", description="Compile torch/ONNX models with TVM for x86, arm64 "
                                 "and cuda.", epilog=EPILOG)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile a model (.onnx or .pt2) into a .scc artifact", epilog=EPILOG)
    p.add_argument("model", help="path to a .onnx file or a torch.export .pt2 archive")
    p.add_argument("--target", default="x86", help="x86 (this host's CPU features), arm64, cuda or cuda:sm_XX")
    p.add_argument("-o", "--output", required=True, help="output .scc path")
    p.add_argument("--input", action="append", default=[], metavar="NAME=SHAPE",
                   help="fix an input's shape, e.g. input_ids=1x128 or input_ids=batch,128 (repeatable)")
    p.add_argument("--compress", default=None, metavar="SCHEME",
                   help="compress the linear/conv weights: int8, int4, int4-g128 (group size), int8-asym, N:M "
                        "sparsity (2:4, 1:4, 4:8), lowrank[:RATIO] (fraction of params kept), lrc:RANK (low-rank "
                        "compensation), joined by + (2:4+int8, lowrank:0.5+int8, int4-g128+lrc:16); w8a8 (int8 "
                        "weights, inputs quantized statically to uint8 from --calib: integer dot products), w7a8 "
                        "(the same with int7 weights, whose integer GEMMs run 1.4x faster on x86 without VNNI) or "
                        "w4a8 (int4 weights, half the bytes, linear layers only: for memory-bound batch-1 linears), "
                        "N:M with w7a8, w4a8 or w8a8 (2:4+w7a8: linears multiply their kept int7 codes only, fast "
                        "on x86 with AVX2; 2:4+w4a8: the same at W4A8's bytes, for memory-bound linears); a stage "
                        "may name its method with @: int4@gptq, 2:4@wanda, lowrank@asvd, lrc:16@eora. Without "
                        "--calib the data-free methods are used (rtn, magnitude, svd). 'auto': a plan per layer under "
                        "--budget, from Hessian sensitivity and latency measured on the target (needs --calib)")
    p.add_argument("--budget", default=None, metavar="latency=F|size=F",
                   help="for --compress auto: latency=0.5 (end-to-end latency at most half the dense model's, "
                        "measured on the target at batch 1), size=0.25 (compressible weights at most a quarter of "
                        "their fp32 bytes), or both joined by a comma")
    p.add_argument("--max-drop", type=float, default=None, metavar="X",
                   help="for --compress auto: bound on the predicted loss increase (relative output MSE to the "
                        "dense model); alone, the planner minimizes latency under it")
    p.add_argument("--calib", default=None, metavar="FILE.npz",
                   help="calibration inputs, one array per model input (by name; a symbolic first dim is split "
                        "into batches of 8): enables GPTQ, SparseGPT, activation-aware SVD and EoRA")
    add_remote_args(p, "for --compress auto: measure the layer latencies (and the compiled plan)")
    p.set_defaults(fn=cmd_compile)

    p = sub.add_parser("export", help="export a model (.onnx, .pt2 or .scc) as ONNX for onnxruntime", epilog=EPILOG)
    p.add_argument("model", help="path to a .onnx file, a torch.export .pt2 archive or a .scc artifact")
    p.add_argument("-o", "--output", required=True, help="output .onnx path")
    p.add_argument("--input", action="append", default=[], metavar="NAME=SHAPE",
                   help="fix an input's shape, e.g. input_ids=1x128 or input_ids=batch,128 (repeatable)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset to emit (default 18, the lowest supported)")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("run", help="run a .scc artifact on .npy inputs", epilog=EPILOG)
    p.add_argument("artifact")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", help="one per model input")
    p.add_argument("-o", "--output", default="outputs.npz", help="where to write the outputs (.npz)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("check", help="run an artifact and the interpreter on .npy inputs and compare them layer by "
                       "layer (exit 1 if a kernel computes something else)", epilog=EPILOG,
                       description="Builds the artifact's graph once more with every linear/conv input and output "
                       "returned, runs it and the interpreter, and per layer prints: the input difference (what "
                       "upstream float order did), the kernel's difference on the deployed input (the kernel "
                       "against its specification) and, for input-quantizing layers, the activation codes that "
                       "rounded apart. Runs where the artifact runs (x86 here).")
    p.add_argument("artifact")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", help="one per model input")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest relative kernel difference accepted "
                   "(default 1e-4)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the per-layer report as JSON")
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("inspect", help="show an artifact's inputs, outputs, target, layers and sizes", epilog=EPILOG)
    p.add_argument("artifact")
    p.add_argument("--json", action="store_true", help="print the raw manifest")
    p.set_defaults(fn=cmd_inspect)

    p = sub.add_parser("bench", help="measure an artifact's latency here, on a TVM RPC server or on a tracker's "
                       "device pool", epilog=EPILOG)
    p.add_argument("artifact")
    p.add_argument("--repeat", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--dim", action="append", default=[], metavar="SYMBOL=N",
                   help="size for a symbolic dim, e.g. batch=1 (default 1)")
    p.add_argument("--json", default=None, help="also write the statistics (and per-run times) to this JSON file")
    add_remote_args(p, "time")
    p.add_argument("--emulated", action="store_true", help="the device is an emulator (e.g. qemu): label the "
                   "timings as not device timings (automatic for a loopback server and a foreign-CPU artifact)")
    p.add_argument("--profile", action="store_true", help="per-operator table from the VM's instrument hook "
                   "(local only)")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("demo", help="the main job: compile the bundled all-MiniLM-L6-v2, print fidelity and speed",
                       epilog=EPILOG)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--compress", default="integer", metavar="SCHEME",
                   help="also compile a compressed copy (calibrated on built-in sentences) and report its size, "
                        "fidelity and speed; 'none' to skip (default: 'integer', this CPU's fastest integer "
                        "scheme: w8a8, or w7a8 on x86 without VNNI)")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("tune", help="MetaSchedule-tune a model's kernels into a database that compile applies",
                       description="Tunes every fused kernel of the model with MetaSchedule and keeps a kernel's "
                       "best schedule only if it beats the hand-written template. Candidates are built here and "
                       "timed here (x86, or cuda on a local GPU) or, with --tracker/--key, on the devices "
                       "registered with a TVM RPC tracker under that key (one measuring worker per device; "
                       "arm64 boards included). Records go to DB/<target key>/; `sparsecc compile` for the same "
                       "target and TVM version applies them automatically.", epilog=EPILOG)
    p.add_argument("model", help="path to a .onnx file or a torch.export .pt2 archive")
    p.add_argument("--target", default="x86", help="x86 (this host's CPU), cuda / cuda:sm_XX (a local GPU), or "
                   "any target (arm64, ...) with --tracker")
    p.add_argument("--trials", type=int, default=64, help="measured candidates over all kernels (default 64; "
                   "about 3 s each on 2 cores)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=SHAPE",
                   help="fix an input's shape, e.g. input_ids=1x128 (kernels with symbolic dims are not tuned)")
    p.add_argument("--db", default=None, metavar="DIR", help="database root (default: $SPARSECC_TUNING_DB or "
                   "~/.cache/sparsecc/tuning)")
    p.add_argument("--cost-model", default="auto", choices=("auto", "xgb", "random"),
                   help="MetaSchedule cost model (auto: xgb if xgboost is installed, else random)")
    p.add_argument("--tracker", metavar="HOST:PORT", help="time the candidates on the devices of this TVM RPC "
                   "tracker's pool (needs --key)")
    p.add_argument("--key", default=None, help="device key: the tracker pool to measure on")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each step of reaching the "
                   "tracker (default 10)")
    p.set_defaults(fn=cmd_tune)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0  # a command that checks something returns 1 when it fails
    except SparseccError as e:
        print(f"sparsecc: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
