"""The ``.scc`` artifact: one zip file with a manifest, the compiled library, the weights and the IR.

Members: ``manifest.json`` (format version, sparsecc/TVM versions, target, inputs/outputs, param
call order, per-layer plan, metrics, and a SHA-256 for every other member), ``lib.so`` (the TVM
Relax executable), ``weights.npz`` (no pickle), ``graph.json`` (the IR, for ``inspect`` and the
interpreter), ``run_scc.py`` (a runner needing only TVM + numpy). Checked on every load.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparsecc.caches import cache_root
from sparsecc.errors import ArtifactError
from sparsecc.ir.graph import Graph
from sparsecc.ir.serialize import graph_from_json, graph_to_json
from sparsecc.standalone_runner import FORMAT, ArtifactCheckError, read_members

@dataclass
class Artifact:
    manifest: dict[str, Any]
    lib_path: str
    graph: Graph

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {k: p.data for k, p in self.graph.params.items()}


def write_artifact(path: str | os.PathLike, graph: Graph, lib_path: str, manifest: dict[str, Any]) -> None:
    doc, arrays = graph_to_json(graph)
    weights = io.BytesIO()
    np.savez(weights, **{k: v for k, v in arrays.items() if k in graph.params})
    graph_arrays = {k: v for k, v in arrays.items() if k not in graph.params}
    members = {
        "lib.so": Path(lib_path).read_bytes(),
        "weights.npz": weights.getvalue(),
        "graph.json": json.dumps({"graph": doc, "extra_arrays": sorted(graph_arrays)}).encode(),
        "run_scc.py": Path(__file__).with_name("standalone_runner.py").read_bytes(),
    }
    if graph_arrays:
        extra = io.BytesIO()
        np.savez(extra, **graph_arrays)
        members["encoding_arrays.npz"] = extra.getvalue()
    manifest = dict(manifest, format=FORMAT, params=list(graph.params),
                    sha256={k: hashlib.sha256(v).hexdigest() for k, v in members.items()})
    tmp = f"{path}.tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
        for name, data in members.items():
            z.writestr(name, data)
    os.replace(tmp, path)


def read_artifact(path: str | os.PathLike) -> Artifact:
    if not os.path.exists(path):
        raise ArtifactError(f"{path}: no such file")
    try:
        manifest, z = read_members(str(path))
    except ArtifactCheckError as e:
        raise ArtifactError(str(e)) from None
    with z:
        import tvm

        if manifest.get("tvm_version") != tvm.__version__:
            raise ArtifactError(f"{path}: built with TVM {manifest.get('tvm_version')}, this is TVM {tvm.__version__}; "
                                "recompile it")
        arrays = _npz(z.read("weights.npz"))
        if "encoding_arrays.npz" in z.namelist():
            arrays.update(_npz(z.read("encoding_arrays.npz")))
        graph = graph_from_json(json.loads(z.read("graph.json"))["graph"], arrays)
        lib_path = cache_root() / "libs" / f"{manifest['sha256']['lib.so']}.so"
        if not lib_path.exists():
            lib_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = lib_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(z.read("lib.so"))
            os.replace(tmp, lib_path)
    return Artifact(manifest, str(lib_path), graph)


def _npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}
