"""The ONNX node test suite (``onnx.backend.test.case.node.collect_testcases()``) through ``sparsecc.compile``.

Shared by ``benchmarks/onnx_conformance.py`` and ``tests/test_onnx_conformance.py``. Every case is compiled for
x86, run on its data set and compared with onnx.backend.test's rule (same shape, same dtype, ``assert_allclose``
with the case's rtol/atol). A case is classified as

* ``pass``;
* ``unsupported``: ``UnsupportedOpError`` at import or compile (the honest refusal);
* ``mismatch``: it ran and gave a different answer (a bug: must never happen);
* ``crash``: any other exception, a timeout, or the worker process dying (a bug too).

Two modes: ``as_is``, and ``frozen``, where integer-typed graph inputs become initializers holding the data
set's values (how TVM's own ONNX frontend was measured). ``tvm_as_is`` / ``tvm_frozen`` run the same cases through
TVM 0.27's own ONNX frontend (``tvm.relax.frontend.onnx.from_onnx`` + ``tvm.compile``) as the baseline, measured by
the same rule in the same run; for it every exception counts as ``unsupported``. Cases run in worker subprocesses
so a native crash is recorded, not fatal.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

MODES = ("as_is", "frozen", "tvm_as_is", "tvm_frozen")
CASE_TIMEOUT_S = 300
INTEGER_KINDS = "iu"


@dataclass
class CaseResult:
    index: int
    name: str
    op_type: str
    status: str
    detail: str = ""
    seconds: float = 0.0


def load_cases() -> list:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.seterr(all="ignore")
        return list(collect_testcases())


def op_label(case) -> str:
    """The op a case tests: its node's op type, or 'OpType (expanded)' for function-body expansions."""
    nodes = case.model.graph.node
    if len(nodes) == 1:
        return nodes[0].op_type
    return f"{case.name.removeprefix('test_').split('_')[0]} (multi-node)"


def _as_array(value):
    """Data-set entries are arrays, lists (sequences) or TensorProtos (for dtypes numpy lacks)."""
    import onnx
    from onnx import numpy_helper

    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def has_integer_inputs(case) -> bool:
    return any(isinstance(a, np.ndarray) and a.dtype.kind in INTEGER_KINDS for a in case.data_sets[0][0])


def freeze_integer_inputs(model, inputs: Sequence[np.ndarray]):
    """A copy of ``model`` whose integer-typed graph inputs are initializers holding ``inputs``' values, and the
    remaining inputs."""
    import onnx
    from onnx import numpy_helper

    frozen = onnx.ModelProto()
    frozen.CopyFrom(model)
    inits = {i.name for i in frozen.graph.initializer}
    graph_inputs = [i for i in frozen.graph.input if i.name not in inits]
    remaining = []
    for vi, value in zip(graph_inputs, inputs):
        if isinstance(value, np.ndarray) and value.dtype.kind in INTEGER_KINDS:
            frozen.graph.initializer.append(numpy_helper.from_array(value, vi.name))
        else:
            remaining.append(value)
    return frozen, remaining


def assert_similar(refs: Sequence[np.ndarray], outs: Sequence[np.ndarray], rtol: float, atol: float) -> None:
    """onnx.backend.test's ``assert_similar_outputs`` for tensor outputs."""
    np.testing.assert_equal(len(outs), len(refs))
    for out, ref in zip(outs, refs):
        out, ref = np.asarray(out), np.asarray(ref)
        np.testing.assert_array_equal(out.shape, ref.shape, err_msg="incorrect shape")
        np.testing.assert_equal(out.dtype, ref.dtype)
        if out.dtype.name == "bfloat16":
            np.testing.assert_allclose(out.astype(np.float32), ref.astype(np.float32), rtol=max(rtol, 2 ** -6),
                                       atol=atol)
        else:
            np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol)


def run_case(case, index: int, mode: str) -> CaseResult:
    """Compiles and runs one case in this process."""
    import sparsecc
    from sparsecc.errors import UnsupportedOpError

    t0 = time.perf_counter()
    result = CaseResult(index, case.name, op_label(case), "pass")
    inputs, refs = ([_as_array(v) for v in vs] for vs in case.data_sets[0])
    model = case.model
    if mode.endswith("frozen"):
        model, inputs = freeze_integer_inputs(model, inputs)
    baseline = mode.startswith("tvm_")
    stage = "compile"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = tvm_frontend_runner(model) if baseline else sparsecc.compile(model, target="x86")
            stage = "run"
            outs = run(*inputs)
        outs = list(outs) if isinstance(outs, tuple) else [outs]
        stage = "compare"
        assert_similar(refs, outs, case.rtol, case.atol)
    except UnsupportedOpError as e:
        result.status, result.detail = "unsupported", str(e)
    except Exception as e:  # noqa: BLE001 - classified below, never lost
        result.status, result.detail = _failure(e, stage, baseline)
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def _failure(e: Exception, stage: str, baseline: bool) -> tuple[str, str]:
    """How a failed case counts: a wrong answer is a mismatch; any other error is a crash for sparsecc (it must
    refuse with UnsupportedOpError instead) and a refusal for TVM's frontend, which has no refusal type."""
    text = " ".join(str(e).split())[:300]
    if stage == "compare" and isinstance(e, AssertionError):
        return "mismatch", text
    if os.environ.get("SPARSECC_CONFORMANCE_TRACE"):
        traceback.print_exc()
    return ("unsupported" if baseline else "crash"), f"{stage}: {type(e).__name__}: {text}"


def tvm_frontend_runner(model):
    """TVM 0.27's own ONNX path, as a user of TVM alone would take it: ``from_onnx`` + ``tvm.compile``."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from sparsecc.backends.tvm import resolve_target
    from sparsecc.backends.tvm.runtime import to_numpy

    vm = relax.VirtualMachine(tvm.compile(from_onnx(model, keep_params_in_input=False), resolve_target("x86")),
                              tvm.cpu())

    def run(*inputs: np.ndarray) -> tuple[np.ndarray, ...]:  # a tuple, like a CompiledModel with several outputs
        out = vm["main"](*[tvm.runtime.tensor(np.asarray(a)) for a in inputs])
        return tuple(to_numpy(o) for o in (out if isinstance(out, (list, tuple, tvm.ir.Array)) else [out]))
    return run


def _worker(mode: str, indices: list[int]) -> None:
    """Runs cases, one JSON line each; 'start <i>' before each so the parent can blame a native crash."""
    cases = load_cases()

    def on_timeout(signum, frame):
        raise TimeoutError(f"case took more than {CASE_TIMEOUT_S} s")

    signal.signal(signal.SIGALRM, on_timeout)
    for i in indices:
        print(f"start {i}", flush=True)
        signal.alarm(CASE_TIMEOUT_S)
        result = run_case(cases[i], i, mode)
        signal.alarm(0)
        print("result " + json.dumps(asdict(result)), flush=True)


def run_suite(indices: Iterable[int], mode: str, workers: int = 2, progress=None) -> list[CaseResult]:
    """Runs the cases ``indices`` in ``workers`` subprocesses; a worker that dies marks its case 'crash' and is
    restarted on the rest of its share."""
    indices = list(indices)
    shares = [indices[w::workers] for w in range(workers)]
    procs = {}
    results: dict[int, CaseResult] = {}
    names = {}

    def start(share: list[int]) -> subprocess.Popen | None:
        if not share:
            return None
        return subprocess.Popen([sys.executable, "-m", "sparsecc.frontends.onnx.conformance", "--worker", mode,
                                 ",".join(map(str, share))], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)

    import selectors

    sel = selectors.DefaultSelector()
    for share in shares:
        p = start(share)
        if p is not None:
            procs[p] = {"todo": list(share), "current": None}
            sel.register(p.stdout, selectors.EVENT_READ, p)
    while procs:
        for key, _ in sel.select():
            p = key.data
            state = procs[p]
            line = p.stdout.readline()
            if line.startswith("start "):
                state["current"] = int(line.split()[1])
            elif line.startswith("result "):
                r = CaseResult(**json.loads(line[len("result "):]))
                results[r.index] = r
                state["todo"].remove(r.index)
                state["current"] = None
                if progress:
                    progress(r)
            elif line == "":  # the worker exited
                sel.unregister(p.stdout)
                p.wait()
                del procs[p]
                if state["current"] is not None:
                    i = state["current"]
                    r = CaseResult(i, names.get(i, f"case {i}"), "?", "crash",
                                   f"worker died (exit status {p.returncode})")
                    results[i] = r
                    state["todo"].remove(i)
                    if progress:
                        progress(r)
                q = start(state["todo"]) if state["todo"] else None
                if q is not None:
                    procs[q] = {"todo": list(state["todo"]), "current": None}
                    sel.register(q.stdout, selectors.EVENT_READ, q)
    return [results[i] for i in indices if i in results]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], [int(i) for i in sys.argv[3].split(",") if i])
    else:
        sys.exit("usage: python -m sparsecc.frontends.onnx.conformance --worker MODE I,J,K (see benchmarks/"
                 "onnx_conformance.py)")
