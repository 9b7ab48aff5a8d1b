"""Graph <-> (JSON-able dict, dict of numpy arrays): the IR's on-disk form, with no pickle anywhere.

Param arrays (and any numpy arrays inside an encoding's ``meta``) go to the array dict under
``"<param>"`` and ``"<param>::<meta key>"``; everything else is plain JSON.
"""
from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from sparsecc.errors import ModelLoadError
from sparsecc.ir.graph import Encoding, Graph, Node, Param, TensorType

FORMAT = "sparsecc-ir/1"


def graph_to_json(graph: Graph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    arrays: dict[str, np.ndarray] = {}
    params = {}
    for name, p in graph.params.items():
        arrays[name] = p.data
        meta = {}
        for k, v in p.encoding.meta.items():
            if isinstance(v, np.ndarray):
                arrays[f"{name}::{k}"] = v
                meta[k] = {"__array__": f"{name}::{k}"}
            else:
                meta[k] = v
        params[name] = {"encoding": p.encoding.kind, "meta": meta}
    doc = {
        "format": FORMAT,
        "name": graph.name,
        "inputs": graph.inputs,
        "outputs": graph.outputs,
        "types": {k: {"shape": list(t.shape), "dtype": t.dtype} for k, t in graph.types.items()},
        "params": params,
        "nodes": [{"op": n.op, "inputs": n.inputs, "outputs": n.outputs, "attrs": n.attrs, "name": n.name,
                   "source": n.source} for n in graph.nodes],
    }
    return doc, arrays


def graph_from_json(doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> Graph:
    if doc.get("format") != FORMAT:
        raise ModelLoadError(f"not a sparsecc IR document (format {doc.get('format')!r}, expected {FORMAT!r})")
    g = Graph(list(doc["inputs"]), list(doc["outputs"]), name=doc.get("name", "main"))
    g.types = {k: TensorType(tuple(t["shape"]), t["dtype"]) for k, t in doc["types"].items()}
    for name, p in doc["params"].items():
        meta = {k: arrays[v["__array__"]] if isinstance(v, dict) and "__array__" in v else v
                for k, v in p["meta"].items()}
        g.params[name] = Param(arrays[name], Encoding(p["encoding"], meta))
    g.nodes = [Node(n["op"], list(n["inputs"]), list(n["outputs"]), _tuple_free(n["attrs"]), n["name"], n["source"])
               for n in doc["nodes"]]
    return g


def _tuple_free(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()}


def save_graph(graph: Graph, path: str) -> None:
    """One zip file: ``graph.json`` + ``params.npz``."""
    doc, arrays = graph_to_json(graph)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("graph.json", json.dumps(doc))
        z.writestr("params.npz", buf.getvalue())


def load_graph(path: str) -> Graph:
    try:
        with zipfile.ZipFile(path) as z:
            doc = json.loads(z.read("graph.json"))
            with np.load(io.BytesIO(z.read("params.npz")), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as e:
        raise ModelLoadError(f"{path}: not a readable sparsecc graph file ({e})") from None
    return graph_from_json(doc, arrays)
