"""Runs a .scc artifact with only the TVM runtime and numpy: no sparsecc, no torch.

This file imports nothing from sparsecc on purpose. Every artifact carries a copy as the member
``run_scc.py``, so on a device::

    unzip -p model.scc run_scc.py > run_scc.py
    python run_scc.py model.scc --input input_ids=ids.npy --input attention_mask=mask.npy -o out.npz

or from Python: ``from run_scc import load; outputs = load("model.scc")(ids, mask)``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "sparsecc-artifact/1"


class ArtifactCheckError(Exception):
    pass


def read_members(path: str) -> tuple[dict, zipfile.ZipFile]:
    """Opens the artifact and checks the format and every member's SHA-256 against the manifest."""
    try:
        z = zipfile.ZipFile(path)
        manifest = json.loads(z.read("manifest.json"))
    except (OSError, zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
        raise ArtifactCheckError(f"{path}: not a readable .scc artifact ({e})") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactCheckError(f"{path}: artifact format {manifest.get('format')!r}, this runner reads {FORMAT!r}")
    for member, digest in manifest["sha256"].items():
        try:
            data = z.read(member)
        except (KeyError, zipfile.BadZipFile, OSError) as e:
            raise ArtifactCheckError(f"{path}: member {member} is missing or unreadable ({e})") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactCheckError(f"{path}: member {member} fails its SHA-256 check (tampered or corrupted)")
    return manifest, z


def load(path: str, device: str = "cpu"):
    """A callable: numpy arrays in (manifest input order), list of numpy arrays out."""
    # TVM's runtime starts workers for half the logical CPUs on x86 (it assumes SMT pairs): use every core instead,
    # unless TVM_NUM_THREADS says otherwise
    os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
    import tvm
    from tvm.runtime.vm import VirtualMachine  # not tvm.relax: that needs the compiler library (libtvm_compiler)

    manifest, z = read_members(path)
    libdir = tempfile.mkdtemp(prefix="scc-")
    lib_path = os.path.join(libdir, "lib.so")
    with open(lib_path, "wb") as f:
        f.write(z.read("lib.so"))
    dev = tvm.device(device)
    vm = VirtualMachine(tvm.runtime.load_module(lib_path), dev)
    with np.load(io.BytesIO(z.read("weights.npz")), allow_pickle=False) as npz:
        params = [tvm.runtime.tensor(npz[name], dev) for name in manifest["params"]]

    def run(*inputs: np.ndarray) -> list[np.ndarray]:
        args = [tvm.runtime.tensor(np.ascontiguousarray(x), dev) for x in inputs]
        out = vm["main"](*args, *params)
        return [o.numpy() for o in out] if not hasattr(out, "numpy") else [out.numpy()]

    return run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifact")
    ap.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    ap.add_argument("-o", "--output", default="outputs.npz")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    manifest, _ = read_members(args.artifact)
    given = dict(kv.split("=", 1) for kv in args.input)
    inputs = [np.load(given[i["name"]]) for i in manifest["inputs"]]
    outs = load(args.artifact, args.device)(*inputs)
    np.savez(args.output, **{o["name"]: v for o, v in zip(manifest["outputs"], outs)})
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
