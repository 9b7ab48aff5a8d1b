"""The ``sparsecc`` command line: compile, run, inspect, bench, demo.

Errors sparsecc raises on purpose (bad model file, unsupported op, wrong inputs, tampered
artifact) print one line and exit with status 2; anything else is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

from sparsecc.errors import SparseccError
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


def cmd_compile(args: argparse.Namespace) -> None:
    import sparsecc

    shapes = {}
    for spec in args.input:
        name, dims, dtype = parse_input_spec(spec)
        if dtype:
            raise SparseccError(f"--input {spec!r}: dtypes come from the model; give NAME=SHAPE only")
        shapes[name] = dims
    cm = sparsecc.compile(args.model, target=args.target, compress=args.compress, budget=args.budget,
                          calibration=args.calib, input_shapes=shapes or None)
    cm.save(args.output)
    print(f"compiled {args.model} for {cm.target}: {len(cm.graph.nodes)} ops, "
          f"{cm.manifest['metrics']['param_bytes'] / 1e6:.1f} MB of weights, "
          f"{cm.manifest['metrics']['compile_seconds']:.1f} s -> {args.output}")


def cmd_run(args: argparse.Namespace) -> None:
    import sparsecc
    from sparsecc.compiler import check_inputs

    cm = sparsecc.load(args.artifact)
    given = {}
    for spec in args.input:
        name, _, path = spec.partition("=")
        try:
            given[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise SparseccError(f"--input {name}: cannot read {path} as .npy ({e})") from None
    outs = cm(*check_inputs(cm.input_names, given))
    outs = outs if isinstance(outs, tuple) else (outs,)
    np.savez(args.output, **dict(zip(cm.output_names, outs)))
    for name, o in zip(cm.output_names, outs):
        print(f"{name}: {o.dtype}{list(o.shape)}")
    print(f"wrote {args.output}")


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
    print("layers (compressible weights):")
    for node in g.nodes:
        w = OPS[node.op].compressible_weight
        if w is not None and node.inputs[w] in g.params:
            p = g.params[node.inputs[w]]
            print(f"  {node.name:40} {node.op:7} {str(list(p.logical_shape)):16} {p.encoding.kind:8} "
                  f"{p.data.nbytes / 1e3:9.1f} kB")
    for k, v in m.get("metrics", {}).items():
        print(f"metric {k}: {v}")


def cmd_bench(args: argparse.Namespace) -> None:
    import sparsecc
    from sparsecc.bench import bench_compiled, example_arrays

    cm = sparsecc.load(args.artifact)
    stats = bench_compiled(cm, example_arrays(cm.graph, args.dim), repeat=args.repeat, warmup=args.warmup)
    print(f"{args.artifact} on {cm.target} (local): median {stats['median_ms']:.3f} ms, "
          f"p90 {stats['p90_ms']:.3f} ms, stdev {stats['stdev_ms']:.3f} ms over {stats['repeat']} runs")
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=1))


def cmd_demo(args: argparse.Namespace) -> None:
    from sparsecc.demo import run_demo

    run_demo(seq=args.seq, batch=args.batch, repeat=args.repeat)


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
    p.add_argument("--compress", default=None, help="compression scheme (not available in this version)")
    p.add_argument("--budget", default=None, help="compression budget (not available in this version)")
    p.add_argument("--calib", default=None, help="calibration .npz (not available in this version)")
    p.set_defaults(fn=cmd_compile)

    p = sub.add_parser("run", help="run a .scc artifact on .npy inputs", epilog=EPILOG)
    p.add_argument("artifact")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", help="one per model input")
    p.add_argument("-o", "--output", default="outputs.npz", help="where to write the outputs (.npz)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("inspect", help="show an artifact's inputs, outputs, target, layers and sizes", epilog=EPILOG)
    p.add_argument("artifact")
    p.add_argument("--json", action="store_true", help="print the raw manifest")
    p.set_defaults(fn=cmd_inspect)

    p = sub.add_parser("bench", help="measure an artifact's latency on this machine", epilog=EPILOG)
    p.add_argument("artifact")
    p.add_argument("--repeat", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--dim", action="append", default=[], metavar="SYMBOL=N",
                   help="size for a symbolic dim, e.g. batch=1 (default 1)")
    p.add_argument("--json", default=None, help="also write the statistics to this JSON file")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("demo", help="the main job: compile the bundled all-MiniLM-L6-v2, print fidelity and speed",
                       epilog=EPILOG)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeat", type=int, default=30)
    p.set_defaults(fn=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except SparseccError as e:
        print(f"sparsecc: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
