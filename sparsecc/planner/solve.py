"""The multiple-choice knapsack: one option per layer, linear costs, as a 0/1 ILP solved by
``scipy.optimize.milp`` (HiGHS)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from sparsecc.errors import SparseccError


OBJECTIVE_SCALE = 1e6
"""The largest objective coefficient after scaling. HiGHS stops within an absolute gap of 1e-6 of the optimum:
with the largest at 1.0, a plan 1e-7 (an int8 layer's damage) worse than the best one passed as optimal; at 1e6,
objectives down to 1e-12 of the largest still count."""


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
    costs = {metric: np.array([opt[metric] for opt in flat], dtype=np.float64) for metric in caps}
    upper = np.ones(n)
    for metric, cap in caps.items():
        upper[costs[metric] > cap] = 0  # an option that alone exceeds a cap can never be part of a plan
    c = np.array([opt[objective] for opt in flat], dtype=np.float64)
    c = c * (OBJECTIVE_SCALE / max(float(np.abs(c).max()), 1e-300))
    margin = dict.fromkeys(caps, 0.0)
    for _ in range(4):  # HiGHS allows ~1e-6 of violation: rows are scaled to order 1, and re-checked below
        constraints = [LinearConstraint(rows, 1, 1)]
        for metric, cap in caps.items():
            scale = max(float(np.abs(costs[metric]).max()), abs(cap), 1e-300)
            constraints.append(LinearConstraint(costs[metric][None] / scale, -np.inf, (cap - margin[metric]) / scale))
        result = milp(c, constraints=constraints, integrality=np.ones(n), bounds=Bounds(0, upper))
        if result.status != 0 or result.x is None:
            break
        x = np.rint(result.x)
        over = {m: float(costs[m] @ x) - cap for m, cap in caps.items() if float(costs[m] @ x) > cap}
        if not over:
            break
        for m, excess in over.items():
            margin[m] += 2 * excess
    if result.status != 0 or result.x is None or any(float(costs[m] @ np.rint(result.x)) > cap
                                                    for m, cap in caps.items()):
        floors = {m: sum(min(opt[m] for opt in layer) for layer in options) for m in caps}
        detail = "; ".join(f"{m} at most {caps[m]:.6g} asked, at least {floors[m]:.6g} reachable" for m in caps)
        raise SparseccError(f"no plan fits the budget ({detail}): {result.message}")
    x = np.rint(result.x).astype(int)
    choice, start = [], 0
    for size in sizes:
        choice.append(int(np.argmax(x[start:start + size])))
        start += size
    return choice
