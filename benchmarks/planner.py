"""The planner (``compress='auto'``) against uniform and random plans, on MiniLM and the digits CNN, in one run.

    .venv/bin/python -m benchmarks.planner                 # results in benchmarks/results/planner.{json,md,png}
    .venv/bin/python -m benchmarks.planner --random 2 --no-digits   # quicker

Per model, one analysis (``sparsecc.planner.analyze``: Hessian traces, candidates, latencies measured on this
CPU with a fresh cache, so every number is from this run), then for each budget:

* the **Hessian plan** ``choose(analysis, budget)`` (the default: Hessian traces, damages refined by measuring
  each candidate alone), and the **Hessian-only** plan (damages from the HAWQ-form estimate alone);
* the **uniform plan** the budget is taken from: one spec on every layer that can take it, for every spec of the
  planner's ladder that some layer can take (MiniLM: latency budgets equal to the uniform plan's predicted
  latency; digits: size budgets equal to its bytes), so the uniform plan costs at least as much;
* **random plans** of equal cost: the same knapsack with each candidate's damage replaced by a random number.

Every plan is compressed with the pass, compiled, and evaluated through the deployed artifact (MiniLM: WordSim
rho, polarity accuracy (single 5-fold split, and the mean of 10 repeated splits), cosine to dense, as in
``benchmarks/quality.py``; digits: held-out accuracy) and its end-to-end latency measured at the planner's shapes
(batch 1; numpy in and out; median over 2 s of calls after 0.2 s of warm-up, as the planner times whole models),
in turns with the dense model, next to the plan's prediction (in ms, and as a fraction of dense). A plan whose
per-layer choice equals an earlier one's is built once and shares its numbers. Also timed: ``analyze`` with a cold
and a warm measurement cache (MiniLM, default settings), and the
layer ranking from two Hessian seeds (Spearman).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sparsecc.bench import host_cpu

from .quality import CALIB_IMAGES, CALIB_SENTENCES, SEQ, MinilmScore, code_version, load_calibration_sentences, \
    run_batched
from .run import RESULTS

JUDGED = {"minilm": ("wordsim", "polarity_acc_10x5", "cos_to_dense"), "digits": ("accuracy",)}
"""Metrics a verdict is judged on. MiniLM's polarity accuracy is judged as the mean over 10 repeats of stratified
5-fold logistic regression: a single 5-fold split of these 200 sentences (one sentence is 0.005) moved by up to
0.05 between plans of near-identical embeddings in an earlier run; the single-split number is reported too."""
RANDOM_PLANS = 5
TOLERANCE = 0.15
"""Predicted vs measured end-to-end latency."""


def say(msg: str) -> None:
    print(f"[planner] {msg}", flush=True)


def round_up(fraction: float) -> float:
    """A budget fraction to 4 decimals, rounded up so that the uniform plan it comes from still fits."""
    return math.ceil(fraction * 1e4) / 1e4


def uniform_choice(analysis: Any, spec: str) -> dict[str, str]:
    """``spec`` on every layer that has it as a candidate, dense elsewhere."""
    return {node: spec for node, cands in analysis.candidates.items() if any(c.spec == spec for c in cands)}


def totals(analysis: Any, choice: dict[str, str]) -> dict[str, float]:
    """Predicted damage, bytes and latency of a per-layer choice."""
    from sparsecc.planner.candidates import DENSE

    damage = bytes_ = 0.0
    for node, cands in analysis.candidates.items():
        c = next(c for c in cands if c.spec == choice.get(node, DENSE))
        damage, bytes_ = damage + c.damage, bytes_ + c.bytes
    lat = analysis.latencies
    return {"damage": damage, "bytes": bytes_, "predicted_ms": lat.predict(choice) if lat else None}


def uniform_budgets(name: str, analysis: Any, cost: str, dense: float, least: float,
                    budget: Callable[[float], Any]) -> tuple[list[tuple[str, Any]], list[str]]:
    """A budget from every uniform plan: each non-dense spec some layer has as a candidate, its ``cost``
    (``totals`` key) as a fraction of ``dense``. A uniform plan that costs the ``least`` any plan can is skipped
    (returned second): its budget admits that one plan only, and every planner would return it."""
    from sparsecc.planner.candidates import DENSE

    specs = dict.fromkeys(c.spec for cands in analysis.candidates.values() for c in cands if c.spec != DENSE)
    budgets, skipped = [], []
    for spec in specs:
        value = totals(analysis, uniform_choice(analysis, spec))[cost]
        if value <= least * 1.001:
            skipped.append(spec)
            say(f"{name}: uniform {spec} is the cheapest plan ({cost} {value:.4g}): no budget from it")
        else:
            budgets.append((spec, budget(round_up(value / dense))))
    return budgets, skipped


def layer_names(analysis: Any) -> list[list[str]]:
    """[node, weight] of every planned layer, in graph order."""
    from sparsecc.passes.compress.calibration import compressible_weight

    nodes = {n.name: n for n in analysis.graph.nodes}
    return [[node, compressible_weight(analysis.graph, nodes[node])] for node in analysis.candidates]


def random_analysis(analysis: Any, seed: int) -> Any:
    """A copy of ``analysis`` whose candidates' damages are random (dense stays 0): its optimum is a random plan
    that still fills the same budget."""
    rng = np.random.default_rng(seed)
    shuffled = copy.copy(analysis)
    shuffled.candidates = {node: [dataclasses.replace(c, damage=float(rng.uniform()) if c.spec != "dense" else 0.0)
                                  for c in cands] for node, cands in analysis.candidates.items()}
    return shuffled


def hessian_only(analysis: Any) -> Any:
    """A copy of ``analysis`` whose candidates' damages are the Hessian estimates alone (no measured refinement)."""
    unrefined = copy.copy(analysis)
    unrefined.candidates = {node: [dataclasses.replace(c, damage=c.predicted) for c in cands]
                            for node, cands in analysis.candidates.items()}
    return unrefined


def plans_for(analysis: Any, budgets: list[tuple[str, Any]], randoms: int) -> list[dict]:
    """(budget name, Budget) -> the Hessian (default: refined; and Hessian estimate only), uniform and random
    plans to evaluate."""
    from sparsecc.planner import choose

    out = []
    for uniform, budget in budgets:
        hessian = {c.node: c.spec for c in choose(analysis, budget).layers if c.spec != "dense"}
        out.append({"budget": str(budget), "kind": "hessian", "choice": hessian})
        pure = {c.node: c.spec for c in choose(hessian_only(analysis), budget).layers if c.spec != "dense"}
        out.append({"budget": str(budget), "kind": "hessian-only", "choice": pure})
        out.append({"budget": str(budget), "kind": f"uniform {uniform}", "choice": uniform_choice(analysis, uniform)})
        for seed in range(randoms):
            pick = choose(random_analysis(analysis, seed), budget)
            out.append({"budget": str(budget), "kind": f"random {seed}",
                        "choice": {c.node: c.spec for c in pick.layers if c.spec != "dense"}})
    for plan in out:
        plan.update(totals(analysis, plan["choice"]))
    return out


def evaluate_plans(name: str, graph: Any, calib: Any, plans: list[dict], score: Callable[[Any], dict],
                   example: list[np.ndarray]) -> None:
    """Compresses, compiles, scores and times every plan in place, each timed in turns with the dense model
    (``models_call_ms``): ``measured_ms`` and ``dense_now_ms``."""
    import sparsecc
    from sparsecc.backends.tvm.layer_latency import models_call_ms
    from sparsecc.passes.compress import compress, parse_spec

    dense = sparsecc.compile(None, graph=graph, target="x86").runner()
    seen: dict[frozenset, tuple[str, dict]] = {}  # choice -> (which plan, its measurements and scores)
    for plan in plans:
        t0 = time.perf_counter()
        key = frozenset(plan["choice"].items())
        if key in seen:  # the same per-layer choice as an earlier plan: the same artifact, not built twice
            plan["same_as"], results = seen[key]
        else:
            compressed, _ = compress(graph, {n: parse_spec(s) for n, s in plan["choice"].items()}, calib)
            cm = sparsecc.compile(None, graph=compressed, target="x86")
            runner = cm.runner()
            ms, dense_ms = models_call_ms([lambda: runner(*example), lambda: dense(*example)])
            results = {"measured_ms": ms, "dense_now_ms": dense_ms, **score(cm)}
            seen[key] = (f"{plan['budget']} {plan['kind']}", results)
        plan.update(results)
        plan["seconds"] = round(time.perf_counter() - t0, 1)
        pred = plan["predicted_ms"]
        shown = {k: plan[k] for k in ("wordsim", "polarity_acc", "polarity_acc_10x5", "cos_to_dense", "accuracy")
                 if k in plan}
        say(f"{name} {plan['budget']:16} {plan['kind']:18} " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
            + f"; {plan['bytes'] / 1e6:.2f} MB; latency {plan['measured_ms']:.2f} ms, dense in turn "
            f"{plan['dense_now_ms']:.2f}" + ("" if pred is None else f" (predicted {pred:.2f})")
            + f" [{plan['seconds']} s" + (f", same plan as {plan['same_as']}]" if "same_as" in plan else "]"))


def minilm(randoms: int) -> dict:
    from scipy.stats import spearmanr

    from sparsecc.compiler import capture
    from sparsecc.models.minilm import Tokenizer, load_minilm
    from sparsecc.passes.compress import calibrate, load_batches
    from sparsecc.passes.pipeline import canonicalize
    from sparsecc.planner import Budget, analyze
    from sparsecc.planner.sensitivity import hessian_traces
    from sparsecc.planner.plan import HESSIAN_ROWS, _rebatch

    model, tok, score = load_minilm(), Tokenizer(SEQ), MinilmScore()
    batch = torch.export.Dim("batch", max=1024)
    ids, mask = (torch.from_numpy(a[:2]) for a in score.pol_in)
    graph = canonicalize()(capture(model, (ids, mask), dynamic_shapes={"input_ids": {0: batch},
                                                                      "attention_mask": {0: batch}}))
    calib_data = tuple(t.numpy() for t in tok(load_calibration_sentences(CALIB_SENTENCES)))
    batches = load_batches(graph, calib_data)
    t0 = time.perf_counter()
    calib = calibrate(graph, batches)
    calib_s = time.perf_counter() - t0
    timings = {"calibration_s": round(calib_s, 1)}
    t0 = time.perf_counter()
    analysis = analyze(graph, batches, "x86", calibration=calib)
    timings["analyze_cold_s"] = round(time.perf_counter() - t0, 1)
    timings["analyze_cold_phases"] = analysis.seconds
    t0 = time.perf_counter()
    analyze(graph, batches, "x86", calibration=calib)
    timings["analyze_warm_s"] = round(time.perf_counter() - t0, 1)
    say(f"minilm: calibration {calib_s:.1f} s, analyze cold {timings['analyze_cold_s']} s "
        f"{analysis.seconds}, warm {timings['analyze_warm_s']} s")
    other = hessian_traces(graph, _rebatch(graph, batches, HESSIAN_ROWS), seed=1)
    names = list(analysis.traces)
    rho = float(spearmanr([analysis.traces[n].per_weight for n in names],
                          [other[n].per_weight for n in names]).correlation)
    say(f"minilm: Hessian layer ranking, seed 0 vs seed 1: Spearman {rho:.4f}")
    lat = analysis.latencies
    fastest = lat.rest_ms + sum(min(lat.cost(node, c.spec) for c in cands)
                                for node, cands in analysis.candidates.items())  # the lowest predicted plan
    budgets, skipped = uniform_budgets("minilm", analysis, "predicted_ms", lat.model_ms, fastest,
                                       lambda f: Budget(latency=f))
    plans = [{"budget": "none", "kind": "dense", "choice": {}, **totals(analysis, {})}] + plans_for(
        analysis, budgets, randoms)
    evaluate_plans("minilm", graph, calib, plans, score, [a[:1] for a in score.pol_in])
    sens = {n: analysis.traces[n].per_weight for n in names}
    return {"plans": plans, "timings": timings, "layers": layer_names(analysis), "seed_spearman": rho,
            "model_ms": lat.model_ms, "rest_ms": lat.rest_ms, "sensitivity": sens, "uniform_skipped": skipped,
            "metrics": ["wordsim", "polarity_acc", "polarity_acc_10x5", "cos_to_dense"],
            "data": {"calibration_sentences": CALIB_SENTENCES, "seq": SEQ}}


def digits(randoms: int) -> dict:
    from sparsecc.compiler import capture
    from sparsecc.models.digits import accuracy, digits_data, train_digits_cnn
    from sparsecc.passes.compress import calibrate, load_batches
    from sparsecc.passes.pipeline import canonicalize
    from sparsecc.planner import Budget, analyze

    model, x_te, y_te = train_digits_cnn(seed=0)
    x_tr = digits_data(0)[0]
    graph = canonicalize()(capture(model, (x_te[:4],), dynamic_shapes={"x": {0: torch.export.Dim("batch",
                                                                                                  max=4096)}}))
    batches = load_batches(graph, (x_tr[:CALIB_IMAGES].numpy(),), batch_size=32)
    calib = calibrate(graph, batches)
    analysis = analyze(graph, batches, "x86", calibration=calib, loss="kl", only_faster=False)
    smallest = sum(min(c.bytes for c in cands) for cands in analysis.candidates.values())
    budgets, skipped = uniform_budgets("digits", analysis, "bytes", totals(analysis, {})["bytes"], smallest,
                                       lambda f: Budget(size=f))
    plans = [{"budget": "none", "kind": "dense", "choice": {}, **totals(analysis, {})}] + plans_for(
        analysis, budgets, randoms)
    test = (x_te.numpy(),)

    def score(cm: Any) -> dict:
        return {"accuracy": accuracy(run_batched(cm, test, batch=512), y_te)}

    evaluate_plans("digits", graph, calib, plans, score, [x_te[:1].numpy()])
    return {"plans": plans, "model_ms": analysis.latencies.model_ms, "metrics": ["accuracy"],
            "uniform_skipped": skipped, "layers": layer_names(analysis),
            "sensitivity": {n: t.per_weight for n, t in analysis.traces.items()},
            "data": {"calibration_images": CALIB_IMAGES, "loss": "kl"}}


def verdicts(doc: dict) -> list[dict]:
    """Per model and budget: Hessian plan vs its uniform plan and vs the mean of the random plans, strictly
    better on each ``JUDGED`` metric (all metrics are kept in the record), the metrics on which the uniform plan
    scores above the dense model itself (a plan faithful to dense cannot beat it there), whether the uniform plan
    measured at least the Hessian plan's cost (latency budgets: measured fraction of the dense model timed in
    turn; size budgets: bytes); predicted vs measured latency."""
    out = []
    for model in ("minilm", "digits"):
        if model not in doc:
            continue
        plans, metrics = doc[model]["plans"], doc[model]["metrics"]
        dense = next(p for p in plans if p["kind"] == "dense")
        for budget in dict.fromkeys(p["budget"] for p in plans if p["kind"] != "dense"):
            group = [p for p in plans if p["budget"] == budget]
            hess = next(p for p in group if p["kind"] == "hessian")
            uni = next(p for p in group if p["kind"].startswith("uniform"))
            rand = [p for p in group if p["kind"].startswith("random")]
            mean = {m: float(np.mean([p[m] for p in rand])) for m in metrics} if rand else {}
            judged = JUDGED[model]
            cost = (lambda p: p["measured_ms"] / p["dense_now_ms"]) if budget.startswith("latency") else \
                (lambda p: p["bytes"])
            out.append({"model": model, "budget": budget, "uniform": uni["kind"], "judged_on": list(judged),
                        "vs_uniform": all(hess[m] > uni[m] for m in judged),
                        "vs_random_mean": all(hess[m] > mean[m] for m in judged) if rand else None,
                        "hessian": {m: hess[m] for m in metrics}, "uniform_values": {m: uni[m] for m in metrics},
                        "random_mean": mean, "hessian_ms": hess["measured_ms"], "uniform_ms": uni["measured_ms"],
                        "hessian_cost": cost(hess), "uniform_cost": cost(uni),
                        "uniform_costs_no_less": cost(uni) >= cost(hess),
                        "not_better_on": [m for m in judged if not hess[m] > uni[m]],
                        "uniform_above_dense": [m for m in judged if uni[m] > dense[m]]})
        for p in plans:
            if p.get("predicted_ms") is not None:
                p["prediction_error"] = p["predicted_ms"] / p["measured_ms"] - 1
                p["fraction_error"] = ((p["predicted_ms"] / doc[model]["model_ms"])
                                       / (p["measured_ms"] / p["dense_now_ms"]) - 1)
    return out


def write_markdown(doc: dict, path: Path) -> None:
    lines = [f"# Planner: Hessian plans vs uniform and random plans ({doc['date']}, {doc['machine']})", "",
             "Generated by `python -m benchmarks.planner`; every plan compiled and evaluated through the deployed "
             "artifact; latency at batch 1, numpy in and out (median over 2 s of calls after 0.2 s of warm-up, as "
             "the planner times whole models), prediction from per-layer latencies measured in the "
             "same run. Each plan is timed in turns with the dense model (`dense now`). `pred. error`: predicted "
             "vs measured ms; `fraction error`: the predicted fraction of the dense model (predicted ms / the "
             "dense ms the planner measured, what a `latency=` budget bounds) vs the measured one (measured ms / "
             "dense now), which a slow or fast spell of this shared machine between planning and measuring "
             "does not move.", ""]
    for model in ("minilm", "digits"):
        if model not in doc:
            continue
        d = doc[model]
        metrics = d["metrics"]
        lines += [f"## {model}", "", "| budget | plan | " + " | ".join(metrics) + " | MB | predicted ms | measured ms "
                  "| dense now | pred. error | fraction error | predicted damage |", "|" + "---|" * (len(metrics) + 9)]
        for p in d["plans"]:
            pred = "" if p.get("predicted_ms") is None else f"{p['predicted_ms']:.2f}"
            err, frac = ("" if p.get(k) is None else f"{100 * p[k]:+.1f}%" for k in ("prediction_error",
                                                                                       "fraction_error"))
            kind = p["kind"] + (f" (same plan as {p['same_as']})" if "same_as" in p else "")
            lines.append(f"| {p['budget']} | {kind} | " + " | ".join(f"{p[m]:.4f}" for m in metrics)
                         + f" | {p['bytes'] / 1e6:.2f} | {pred} | {p['measured_ms']:.2f} | {p['dense_now_ms']:.2f} "
                         f"| {err} | {frac} | {p['damage']:.3g} |")
        lines += per_layer(d)
        if "timings" in d:
            t = d["timings"]
            lines += ["", f"analyze (Hessian + latency + candidates): cold cache {t['analyze_cold_s']} s "
                      f"{t['analyze_cold_phases']}, warm {t['analyze_warm_s']} s; calibration {t['calibration_s']} s. "
                      f"Hessian layer ranking seed 0 vs 1: Spearman {d['seed_spearman']:.4f}."]
        lines.append("")
    lines += ["## Verdicts", "",
              "| model | budget | judged on | vs uniform (strictly better) | uniform above dense on | uniform measured "
              "no cheaper | vs mean of random | Hessian / uniform / random mean |", "|" + "---|" * 8]
    for v in doc["verdicts"]:
        values = "; ".join(f"{m} {v['hessian'][m]:.4f} / {v['uniform_values'][m]:.4f} / {v['random_mean'][m]:.4f}"
                           for m in v["hessian"])
        costs = (f"{v['uniform_cost']:.3f} vs {v['hessian_cost']:.3f} of dense" if v["budget"].startswith("latency")
                 else f"{v['uniform_cost'] / 1e3:.1f} vs {v['hessian_cost'] / 1e3:.1f} kB")
        lines.append(f"| {v['model']} | {v['budget']} ({v['uniform']}) | {', '.join(v['judged_on'])} | "
                     f"{'holds' if v['vs_uniform'] else 'DOES NOT'} | {', '.join(v['uniform_above_dense']) or '-'} | "
                     f"{'yes' if v['uniform_costs_no_less'] else 'NO'} ({costs}) | "
                     f"{'holds' if v['vs_random_mean'] else 'DOES NOT'} | {values} |")
    for model in ("minilm", "digits"):
        mine = [v for v in doc["verdicts"] if v["model"] == model]
        if mine:
            both = sum(v["vs_uniform"] and v["uniform_costs_no_less"] for v in mine)
            above = sum(not v["vs_uniform"] and set(v["not_better_on"]) <= set(v["uniform_above_dense"]) for v in mine)
            lines += ["", f"{model}: strictly better than the uniform plan at {sum(v['vs_uniform'] for v in mine)} "
                      f"of {len(mine)} budgets ({both} with the uniform plan measured no cheaper; at {above} of the "
                      f"others, the uniform plan wins only on metrics where it scores above the dense model), than "
                      f"the mean of the random plans at {sum(bool(v['vs_random_mean']) for v in mine)}."]
    for model in ("minilm", "digits"):
        for key, what in (("prediction_error", "predicted vs measured end-to-end latency"),
                          ("fraction_error", "predicted vs measured fraction of the dense model")):
            errs = [abs(p[key]) for p in doc.get(model, {}).get("plans", []) if p.get(key) is not None]
            if errs:
                within = sum(e <= TOLERANCE for e in errs)
                lines += ["", f"{model}: {what}: max |error| {100 * max(errs):.1f}%, median "
                          f"{100 * float(np.median(errs)):.1f}%, {within} of {len(errs)} plans within "
                          f"{100 * TOLERANCE:.0f}%."]
    path.write_text("\n".join(lines) + "\n")


def per_layer(d: dict) -> list[str]:
    """Per layer: its sensitivity and the spec each Hessian plan chose."""
    budgets = [p for p in d["plans"] if p["kind"] == "hessian"]
    lines = ["", "Per layer: Hessian trace per weight (Tr(H)/n) and the Hessian plan's choice at each budget.", "",
             "| layer | Tr(H)/n | " + " | ".join(p["budget"] for p in budgets) + " |",
             "|" + "---|" * (2 + len(budgets))]
    for node, weight in d["layers"]:
        lines.append(f"| {node} | {d['sensitivity'][weight]:.3g} | "
                     + " | ".join(p["choice"].get(node, "dense") for p in budgets) + " |")
    return lines + [""]


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in ("minilm", "digits") if m in doc]
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        d = doc[model]
        metric = d["metrics"][0]
        x_key = "measured_ms" if model == "minilm" else "bytes"
        for kind, style in (("hessian", "o"), ("hessian-only", "^"), ("uniform", "s"), ("random", "x"),
                            ("dense", "*")):
            pts = sorted((p[x_key], p[metric]) for p in d["plans"]
                         if p["kind"] == kind or p["kind"].startswith(kind + " "))
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, label=kind, linestyle="-" if kind == "hessian" else "none")
        ax.set_xlabel("measured latency, ms (batch 1)" if x_key == "measured_ms" else "weight bytes")
        ax.set_ylabel(metric)
        ax.set_title(f"{model}: quality vs {'latency' if x_key == 'measured_ms' else 'size'}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--random", type=int, default=RANDOM_PLANS, help="random plans per budget")
    ap.add_argument("--no-digits", action="store_true")
    ap.add_argument("--no-minilm", action="store_true")
    ap.add_argument("-o", "--output", default=str(RESULTS), help="results folder")
    args = ap.parse_args()
    torch.manual_seed(0)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    doc: dict[str, Any] = {"machine": f"{host_cpu()}, {torch.get_num_threads()} threads",
                           "date": time.strftime("%Y-%m-%d"), "code": code_version()}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SPARSECC_CACHE"] = cache  # cold measurement cache: every latency from this run
        if not args.no_minilm:
            doc["minilm"] = minilm(args.random)
        if not args.no_digits:
            doc["digits"] = digits(args.random)
    doc["verdicts"] = verdicts(doc)
    doc["total_s"] = round(time.perf_counter() - t0, 1)
    (out / "planner.json").write_text(json.dumps(doc, indent=1))
    write_markdown(doc, out / "planner.md")
    plot(doc, out / "planner.png")
    say(f"done in {doc['total_s']} s -> {out}/planner.{{json,md,png}}")
    for v in doc["verdicts"]:
        say(f"{v['model']} {v['budget']}: vs {v['uniform']} {'holds' if v['vs_uniform'] else 'DOES NOT hold'}; "
            f"vs random mean {'holds' if v['vs_random_mean'] else 'DOES NOT hold'}")


if __name__ == "__main__":
    main()
