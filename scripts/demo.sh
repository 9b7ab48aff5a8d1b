#!/usr/bin/env bash
# The main job: installs what is missing, then compiles the bundled all-MiniLM-L6-v2 for this host
# and prints fidelity vs PyTorch and latency next to PyTorch's. Arguments go to `sparsecc demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/sparsecc demo "$@"
