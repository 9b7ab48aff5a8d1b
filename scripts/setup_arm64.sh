#!/usr/bin/env bash
# Builds an aarch64 Debian root under .cache/arm64/ so that arm64 artifacts run here under qemu user-mode emulation
# (backends/tvm/emulation.py, tests/test_arm64.py). Idempotent: once built, a re-run only checks a stamp and files.
#
#   .cache/arm64/root/   debootstrap --variant=minbase --include=python3 (arm64), unpacked by hand: the second stage
#                        would need binfmt_misc, which this machine (and CI containers) lack
#   .cache/arm64/site/   aarch64 wheels (TVM runtime + numpy) unpacked, used as PYTHONPATH
#
# Runs as root on Debian (debootstrap must own files as root). Needs qemu-user-static and debootstrap
# (scripts/setup.sh installs them). Environment overrides: SPARSECC_ARM64_SUITE (default bookworm: its python3.11
# matches the cp311 wheels of apache-tvm-ffi), SPARSECC_DEBIAN_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=${SPARSECC_ARM64_SUITE:-bookworm}
MIRROR=${SPARSECC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=.cache/arm64
ROOT=$BASE/root
SITE=$BASE/site
# The wheels the artifact's run_scc.py needs under emulation: the TVM runtime and numpy, nothing else.
WHEELS=(apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post0 numpy==2.4.6 ml_dtypes==0.6.0
        typing_extensions==4.16.0 cloudpickle==3.1.2)

say() { echo "[setup-arm64] $*"; }
die() { echo "[setup-arm64] error: $*" >&2; exit 1; }

stamp="$BASE/.stamp-$( { echo "$SUITE ${WHEELS[*]}"; cat scripts/setup_arm64.sh; } | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ -x "$ROOT/usr/bin/python3" ] && [ -d "$SITE/tvm" ] && [ -d "$SITE/numpy" ]; then
  say "ok ($ROOT, $(cat "$stamp"))"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap creates root-owned files); run: sudo scripts/setup_arm64.sh"
command -v qemu-aarch64-static >/dev/null || die "qemu-aarch64-static not found: apt-get install qemu-user-static"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found: this script needs a Debian-based host"
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -m pip --version >/dev/null 2>&1 || die "no pip for $PY (run scripts/setup.sh first, it creates .venv)"

start=$SECONDS
mkdir -p "$BASE"
rm -f "$BASE"/.stamp-*

# 1. The Debian root (rebuilt when missing or of another suite). Built in a scratch directory and renamed at the
#    end, so an interrupted run starts over cleanly.
if [ ! -x "$ROOT/usr/bin/python3" ] || [ "$(cat "$ROOT/.sparsecc-suite" 2>/dev/null)" != "$SUITE" ]; then
  rm -rf "$ROOT" "$ROOT.partial"
  say "debootstrap --foreign $SUITE arm64 (minbase + python3) from $MIRROR"
  debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 "$SUITE" "$ROOT.partial" "$MIRROR" \
    >"$BASE/debootstrap.log" 2>&1 || die "debootstrap failed; last lines of $BASE/debootstrap.log:
$(tail -n 15 "$BASE/debootstrap.log")"
  # The first stage only unpacks the essential packages; python3 and its dependencies are merely downloaded.
  # Unpack every downloaded .deb (no maintainer scripts: python3 needs none to run a script).
  # --keep-directory-symlink keeps the merged-/usr links (/lib -> usr/lib) that debootstrap created.
  debs=("$ROOT.partial"/var/cache/apt/archives/*.deb)
  [ -e "${debs[0]}" ] || die "debootstrap downloaded no .deb files into $ROOT.partial/var/cache/apt/archives"
  say "unpacking ${#debs[@]} packages"
  for deb in "${debs[@]}"; do
    dpkg-deb --fsys-tarfile "$deb" | tar -C "$ROOT.partial" --keep-directory-symlink -xf - \
      || die "could not unpack $deb"
  done
  # Lean: the .debs, docs, manuals and translations are not needed to run Python.
  rm -rf "$ROOT.partial"/var/cache/apt/archives/*.deb "$ROOT.partial"/var/lib/apt/lists/* \
    "$ROOT.partial"/usr/share/{doc,man,info,locale}/*
  [ -x "$ROOT.partial/usr/bin/python3" ] || die "python3 missing from the unpacked root $ROOT.partial"
  echo "$SUITE" >"$ROOT.partial/.sparsecc-suite"
  mv "$ROOT.partial" "$ROOT"
fi

py=$(basename "$(readlink -f "$ROOT/usr/bin/python3")")  # e.g. python3.11
pyver=${py#python}
[[ $pyver =~ ^3\.[0-9]+$ ]] || die "cannot tell the root's Python version from $ROOT/usr/bin/python3 -> $py"

# 2. aarch64 wheels for the root's Python, unpacked onto one PYTHONPATH directory.
say "downloading aarch64 wheels for Python $pyver: ${WHEELS[*]}"
rm -rf "$BASE/wheels" "$SITE" "$SITE.partial"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
  --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64 \
  -d "$BASE/wheels" "${WHEELS[@]}" \
  || die "pip download of the aarch64 wheels failed (no cp${pyver/./} aarch64 wheel? try another SPARSECC_ARM64_SUITE)"
mkdir -p "$SITE.partial"
for whl in "$BASE"/wheels/*.whl; do
  "$PY" -m zipfile -e "$whl" "$SITE.partial" || die "could not unpack $whl"
done
# Runtime only, as on a device: without libtvm_compiler.so (240 MB; loading it under qemu costs ~10 s per run)
# `import tvm` falls back to libtvm_runtime.so, which is all run_scc.py needs. Sources and cutlass go too.
rm -rf "$BASE/wheels" "$SITE.partial"/tvm/lib/libtvm_compiler.so "$SITE.partial"/tvm/{3rdparty,src,include}
mv "$SITE.partial" "$SITE"

# 3. Smoke test: the emulated Python imports the TVM runtime and its Relax VM.
say "checking: qemu-aarch64-static $ROOT/usr/bin/$py -c 'import tvm'"
got=$(PYTHONPATH="$PWD/$SITE" qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/$py" -c \
      'import platform, numpy, tvm; from tvm.runtime.vm import VirtualMachine
print(platform.machine(), "tvm", tvm.__version__, "numpy", numpy.__version__)' 2>&1) \
  || die "the emulated Python cannot import tvm:
$got"
echo "$got" | tail -n 1 >"$stamp"
say "built in $((SECONDS - start)) s: $(du -sh "$BASE" | cut -f1) in $BASE ($(cat "$stamp"))"
