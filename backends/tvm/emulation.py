"""Runs arm64 ``.scc`` artifacts on this x86 machine under qemu user-mode emulation.

    root = arm64_root()                     # None until scripts/setup_arm64.sh has built the aarch64 root
    outputs = run_arm64("model.scc", {"x": x})   # {output name: array}, computed by aarch64 code

The artifact runs exactly as it would on a device: its own ``run_scc.py`` (TVM runtime + numpy, no sparsecc) is
executed by an aarch64 Python from a minimal Debian root, with aarch64 wheels of the TVM runtime and numpy on
``PYTHONPATH``, through ``qemu-aarch64-static -L ROOT`` (no binfmt_misc needed). Inputs and outputs travel as
.npy/.npz files in a temporary directory. This checks that the cross-compiled code is *correct*; it says nothing
about speed: **timings under emulation are not device timings** (qemu translates every instruction, so it is
one to two orders of magnitude slower than real hardware, and not uniformly so), so never report them as such.

The root lives in ``<repo>/.cache/arm64`` (``root/`` and ``site/``), or wherever ``SPARSECC_ARM64_DIR`` points.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sparsecc.errors import ArtifactError, InputError, SparseccError
from sparsecc.standalone_runner import ArtifactCheckError, read_members

QEMU = "qemu-aarch64-static"
DEFAULT_TIMEOUT = 900.0
SETUP_HINT = "run scripts/setup_arm64.sh (as root) to build it"


def arm64_dir() -> Path:
    """Where scripts/setup_arm64.sh puts the aarch64 root (``root/``) and wheels (``site/``)."""
    env = os.environ.get("SPARSECC_ARM64_DIR")
    # backends/tvm/emulation.py -> the repository root (the package is installed from the source tree)
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".cache" / "arm64"


def arm64_root() -> Path | None:
    """The aarch64 root directory if emulated runs are possible here, else None.

    Possible means: setup_arm64.sh finished (it writes its ``.stamp-*`` last), the root has a python3, the TVM
    runtime wheel is unpacked next to it, and ``qemu-aarch64-static`` is on PATH.
    """
    base = arm64_dir()
    root = base / "root"
    if not (any(base.glob(".stamp-*")) and os.access(root / "usr/bin/python3", os.X_OK)
            and (base / "site" / "tvm").is_dir() and shutil.which(QEMU)):
        return None
    return root


def _root_python(root: Path) -> Path:
    """The root's versioned interpreter (``usr/bin/python3.11``): python3 is a symlink, resolved inside the root."""
    return root / "usr/bin" / os.path.basename(os.readlink(root / "usr/bin/python3"))


def run_arm64(artifact_path: str | os.PathLike, inputs: Mapping[str, np.ndarray],
              timeout: float = DEFAULT_TIMEOUT) -> dict[str, np.ndarray]:
    """Runs an arm64 artifact under qemu with ``inputs`` (by input name); returns ``{output name: array}``.

    Raises ``ArtifactError`` for an unreadable or non-arm64 artifact, ``InputError`` for missing or unknown
    input names, and ``SparseccError`` (with the tail of qemu's stderr) when the emulated run fails or takes
    longer than ``timeout`` seconds. Emulated wall time is not a device timing: do not measure speed with this.
    """
    root = arm64_root()
    if root is None:
        raise SparseccError(f"no aarch64 root for emulated arm64 runs in {arm64_dir()}; {SETUP_HINT}")
    artifact = Path(artifact_path).resolve()
    try:
        manifest, z = read_members(str(artifact))
    except ArtifactCheckError as e:
        raise ArtifactError(str(e)) from None
    with z:
        runner = z.read("run_scc.py")
    target = manifest.get("target", {}).get("name")
    if target != "arm64":
        raise ArtifactError(f"{artifact}: built for target {target!r}; only arm64 artifacts run under {QEMU}")
    names = [i["name"] for i in manifest["inputs"]]
    if set(inputs) != set(names):
        missing, unknown = sorted(set(names) - set(inputs)), sorted(set(inputs) - set(names))
        raise InputError(f"{artifact.name} takes inputs {names}" + (f"; missing {missing}" if missing else "")
                         + (f"; unknown {unknown}" if unknown else ""))

    with tempfile.TemporaryDirectory(prefix="scc-arm64-") as tmp:
        work = Path(tmp)
        (work / "run_scc.py").write_bytes(runner)
        # Relative paths from the working directory: qemu -L first looks up absolute paths inside the root,
        # and a relative path is never redirected. The symlink is followed by the host kernel.
        (work / "model.scc").symlink_to(artifact)
        args = []
        for k, name in enumerate(names):
            np.save(work / f"in{k}.npy", np.ascontiguousarray(inputs[name]))
            args += ["--input", f"{name}=in{k}.npy"]
        cmd = [QEMU, "-L", str(root), str(_root_python(root)), "run_scc.py", "model.scc", *args, "-o", "out.npz"]
        # A clean environment: the host's PYTHONHOME/virtualenv must not leak into the aarch64 Python.
        # TMPDIR keeps run_scc.py's extracted lib.so inside the directory we delete.
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "TMPDIR": tmp, "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": str(arm64_dir().resolve() / "site")}
        try:
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SparseccError(f"{artifact.name}: the emulated arm64 run took longer than {timeout:g} s") from None
        if proc.returncode != 0 or not (work / "out.npz").exists():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise SparseccError(f"{artifact.name}: the emulated arm64 run failed (exit {proc.returncode}):\n{tail}")
        with np.load(work / "out.npz", allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
