#!/usr/bin/env bash
# The test command. Installs what is missing (scripts/setup.sh), then runs pytest on both cores.
#   scripts/test.sh            default suite (what CI gates on first; well under 20 minutes)
#   scripts/test.sh --slow     heavy tests: the light ONNX model zoo, MiniLM on arm64 under qemu, ...
#   scripts/test.sh --all      both
# Extra arguments go to pytest, e.g. scripts/test.sh -k onnx -x
set -euo pipefail
cd "$(dirname "$0")/.."
marker=(-m "not slow")
case "${1:-}" in
  --slow) marker=(-m "slow"); shift ;;
  --all) marker=(-m "slow or not slow"); shift ;;
esac
scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 --dist loadgroup -p no:cacheprovider "${marker[@]}" "$@"
