"""Target names -> TVM targets, and what the artifact manifest records about a target.

    resolve_target("x86")          # llvm for this machine's CPU (mcpu detected, num-cores = physical cores)
    resolve_target("arm64")        # llvm aarch64-linux-gnu with NEON, cross-compiled with aarch64-linux-gnu-gcc
    resolve_target("cuda")         # CUDA sm_80 (host code: llvm); "cuda:sm_90" picks the arch
    resolve_target({"kind": ...})  # a TVM target dict, passed through; a tvm.target.Target is returned as is

TVM 0.27 has no target strings any more: every target here is built from a dict.
"""
from __future__ import annotations

import os
import shutil
from typing import Any, Union

TargetLike = Union[str, dict, "tvm.target.Target"]  # noqa: F821

TARGET_NAMES = ("x86", "arm64", "cuda", "cuda:sm_XX")
DEFAULT_CUDA_ARCH = "sm_80"
ARM64_CC = "aarch64-linux-gnu-gcc"


def physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:  # psutil is a dependency, but a bare TVM runtime box may lack it
        return os.cpu_count() or 1


def use_physical_cores() -> None:
    """TVM's runtime assumes x86 CPUs are SMT pairs and starts workers for half the logical CPUs: one worker on a
    2-core machine without SMT, which made every parallel kernel single-threaded. Default ``TVM_NUM_THREADS`` to the
    physical core count (a value the user set wins). Must run before the first kernel launches the thread pool."""
    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))


def target_dict(target: str) -> dict[str, Any]:
    """The TVM target dict of a target name (see the module doc); ValueError for an unknown name."""
    if target == "x86":
        from tvm.target import codegen

        return {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": physical_cores()}
    if target == "arm64":
        return {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
    if target == "cuda" or target.startswith("cuda:"):
        arch = target.partition(":")[2] or DEFAULT_CUDA_ARCH
        if not (arch.startswith("sm_") and arch[3:].rstrip("a").isdigit()):
            raise ValueError(f"unknown CUDA arch {arch!r} in target {target!r}; expected e.g. 'cuda:sm_90'")
        return {"kind": "cuda", "arch": arch}
    raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGET_NAMES)}, "
                     "a TVM target dict or a tvm.target.Target")


def resolve_target(target: TargetLike) -> "tvm.target.Target":  # noqa: F821
    """A ``tvm.target.Target`` for a target name, dict or Target (GPU targets get an llvm host)."""
    import tvm

    if isinstance(target, tvm.target.Target):
        return target
    if isinstance(target, str):
        target = target_dict(target)
    if not isinstance(target, dict):
        raise ValueError(f"target must be a name ({', '.join(TARGET_NAMES)}), a dict or a tvm.target.Target, "
                         f"not {type(target).__name__}")
    if target.get("kind") in ("cuda", "rocm", "vulkan", "metal", "opencl") and "host" not in target:
        return tvm.target.Target(target, host={"kind": "llvm"})
    return tvm.target.Target(target)


def target_name(target: TargetLike) -> str:
    """The short name of a target: ``x86``, ``arm64``, ``cuda`` (or the TVM kind for anything else)."""
    if isinstance(target, str):
        target_dict(target)  # validates
        return target.partition(":")[0]
    t = resolve_target(target)
    kind = t.kind.name
    if kind == "llvm":
        triple = str(t.attrs.get("mtriple", "") or "")
        if triple.startswith(("aarch64", "arm64")):
            return "arm64"
        if triple == "" or triple.startswith(("x86_64", "i686", "i386")):
            return "x86"
        return triple.split("-")[0]
    return kind


def export_cc(target: TargetLike) -> str | None:
    """The C compiler ``export_library`` must use for this target (None: TVM's default, the host compiler)."""
    return ARM64_CC if target_name(target) == "arm64" else None


def have_compiler(cc: str | None) -> bool:
    return cc is None or shutil.which(cc) is not None


def target_info(target: TargetLike) -> dict[str, Any]:
    """A small JSON-able description of the target for the artifact manifest.

    Keys: ``name`` (x86 | arm64 | cuda | other kind), ``kind`` (TVM target kind), ``mcpu`` / ``arch``,
    ``triple``, ``cc`` (compiler for ``export_library``; None = host default) and ``tvm_target`` (the full dict).
    """
    import json

    t = resolve_target(target)
    attrs = t.attrs
    info: dict[str, Any] = {"name": target_name(target), "kind": t.kind.name}
    if "mcpu" in attrs:
        info["mcpu"] = str(attrs["mcpu"])
    if "arch" in attrs:
        info["arch"] = str(attrs["arch"])
    host = t.host if t.host is not None else t
    if host.kind.name == "llvm":
        from tvm.target import codegen

        info["triple"] = str(host.attrs.get("mtriple", "") or codegen.llvm_get_system_triple())
    info["cc"] = export_cc(target)
    info["tvm_target"] = json.loads(str(t))
    return info
