"""The planner behind ``compress='auto'``: Hessian sensitivity per layer, candidate encodings with their predicted
damage, their latency measured on the target, and a multiple-choice knapsack solved as an ILP.

    budget.py       the ``--budget`` string (latency=, size=) and ``--max-drop``
    sensitivity.py  Hutchinson traces of the loss Hessian per layer weight (torch.func HVPs via the interpreter)
    candidates.py   the ladder of specs per layer, each compressed for real, and its damage
    costs.py        per-(layer, candidate) latency on the target, the dense model end to end, the prediction
    solve.py        the 0/1 ILP (scipy.optimize.milp)
    plan.py         the sequence above: ``analyze`` (once) then ``choose`` (per budget); ``make_plan`` does both
"""
from .budget import Budget, parse_budget
from .plan import Analysis, LayerChoice, Plan, analyze, choose, make_plan

__all__ = ["Analysis", "Budget", "LayerChoice", "Plan", "analyze", "choose", "make_plan", "parse_budget"]
