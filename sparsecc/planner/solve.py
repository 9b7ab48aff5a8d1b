"""The multiple-choice knapsack: one option per layer, linear costs, as a 0/1 ILP solved by
``scipy.optimize.milp`` (HiGHS)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from sparsecc.errors import SparseccError


def solve(options: Sequence[Sequence[Mapping[str, float]]], objective: str,
          caps: Mapping[str, float]) -> list[int]:
    """Per layer, the index of the chosen option: minimize the sum of ``objective`` over the chosen options
    subject to, for every ``metric: cap`` in ``caps``, the sum of ``metric`` being at most ``cap``. Each option
    is a mapping metric -> value. Infeasible caps raise with the smallest sum each metric can reach."""
    sizes = [len(layer) for layer in options]
    if not sizes or min(sizes) == 0:
        raise SparseccError("the planner has no layer, or a layer with no option, to choose from")
    flat = [opt for layer in options for opt in layer]
    n = len(flat)
    rows = np.zeros((len(sizes), n))
    start = 0
    for i, size in enumerate(sizes):
        rows[i, start:start + size] = 1
        start += size
    constraints = [LinearConstraint(rows, 1, 1)]
    for metric, cap in caps.items():
        constraints.append(LinearConstraint(np.array([[opt[metric] for opt in flat]]), -np.inf, cap))
    c = np.array([opt[objective] for opt in flat])
    result = milp(c, constraints=constraints, integrality=np.ones(n), bounds=Bounds(0, 1))
    if result.status != 0 or result.x is None:
        floors = {m: sum(min(opt[m] for opt in layer) for layer in options) for m in caps}
        detail = "; ".join(f"{m} at most {caps[m]:.6g} asked, at least {floors[m]:.6g} reachable" for m in caps)
        raise SparseccError(f"no plan fits the budget ({detail}): {result.message}")
    x = np.rint(result.x).astype(int)
    choice, start = [], 0
    for size in sizes:
        choice.append(int(np.argmax(x[start:start + size])))
        start += size
    return choice
