"""Where sparsecc keeps what it may reuse between runs: ``$SPARSECC_CACHE``, else ``~/.cache/sparsecc``.

Under it: ``latency/`` (measured layer latencies, per target), ``memo/`` (the compression pass's decompositions),
``libs/`` (loaded artifacts' libraries). Everything there is derived and may be deleted at any time."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("SPARSECC_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "sparsecc"
