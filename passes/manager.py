"""Composes named Graph -> Graph passes, timing each and (optionally) verifying after each."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from sparsecc.ir.graph import Graph
from sparsecc.ir.verify import verify

Pass = Callable[[Graph], Graph]


@dataclass
class PassManager:
    passes: list[tuple[str, Pass]]
    verify_each: bool = True
    timings: dict[str, float] = field(default_factory=dict)

    def __call__(self, graph: Graph) -> Graph:
        for name, fn in self.passes:
            t0 = time.perf_counter()
            graph = fn(graph)
            self.timings[name] = time.perf_counter() - t0
            if self.verify_each:
                verify(graph)
        return graph
