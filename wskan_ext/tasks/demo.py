r"""``wskan demo``: the main job, end to end in one command.

1. Build (or reuse, if already cached) a zoo of small digits-classifier KANs under
   ``CACHE/zoo`` (:data:`DEMO_ZOO`; ``--quick``: :data:`QUICK_ZOO` under ``CACHE/zoo-quick``).
2. Train WS-KAN (with :data:`DEMO_PROBES` probe inputs, see :mod:`wskan_ext.tasks.probes`)
   and every baseline on **accuracy prediction** (graph level) and
   **pruning-mask prediction** (edge level) with the same splits, seed, budget and early
   stopping on validation; the magnitude heuristic is fitted on the training split.
3. Print one comparison table, write ``CACHE/results.md``, ``CACHE/results.json``, per-run
   outputs under ``CACHE/runs/TASK/MODEL/`` (metrics, predicted-vs-true scatter, pruning-mask
   figure) and the bar charts ``CACHE/accuracy_tau.png`` / ``CACHE/pruning_accuracy.png``.

Every number printed is measured in the run (the zoo is the only cached artefact; delete
``CACHE`` to rebuild it).
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Dict, Optional

import torch

from .figures import comparison_figure
from .models import LEVELS, MODELS
from .train import TrainConfig, fit

__all__ = ["DEMO_ZOO", "QUICK_ZOO", "DEMO_PROBES", "DEMO_BUDGET", "QUICK_BUDGET", "run_demo", "format_table"]

#: The demo zoo: 4x4-pooled digits, KANs ``[16, 6, 10]`` (the zoo's ``demo`` preset).
DEMO_ZOO = "demo"
#: The ``--quick`` zoo (seconds): 24 runs x 2 checkpoints of ``[16, 4, 10]``, 10 steps each.
QUICK_ZOO = dict(dataset="digits", downsample=4, hidden=[4], size=24, shard_size=24, steps=10,
                 checkpoints=[5, 10], prune_samples=128, split_fractions=[0.6, 0.2, 0.2],
                 lr=[2e-3, 5e-2], subset_fraction=[0.05, 1.0], label_noise=[0.0, 0.5])

#: Probe inputs WS-KAN gets in the demo (``wskan_ext.tasks.probes``; measured on the demo zoo,
#: seed 0, without -> with 128 probes: pruning-mask accuracy 0.939 -> 0.975, accuracy-prediction
#: Kendall tau 0.768 -> 0.793, MSE 0.0041 -> 0.0033).
DEMO_PROBES = 128
#: Meta-training budgets: ``{model: TrainConfig kwargs}`` (``"*"`` = every model).
DEMO_BUDGET: Dict[str, dict] = {
    "*": dict(epochs=60, batch_size=32, patience=15),
    "wskan": dict(epochs=60, batch_size=32, patience=20, model={"probe": DEMO_PROBES}),
}
QUICK_BUDGET: Dict[str, dict] = {"*": dict(epochs=1, batch_size=16, patience=1),
                                 "wskan": dict(model={"probe": DEMO_PROBES})}

TASKS_SHOWN = ("accuracy", "pruning")
COLUMNS = (("accuracy", "mse", "MSE", False), ("accuracy", "r2", "R²", True), ("accuracy", "kendall_tau", "τ", True),
           ("pruning", "accuracy", "mask acc", True), ("pruning", "f1", "mask F1", True))


def _zoo_config(quick: bool, seed: int):
    from ..zoo.build import PRESETS, BuildConfig

    d = dict(QUICK_ZOO) if quick else dict(PRESETS[DEMO_ZOO])
    d["seed"] = seed
    return BuildConfig.from_dict(d)


def _fmt(v: Optional[float], digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def format_table(results: Dict[str, Dict[str, dict]], times: Dict[str, float]) -> str:
    """Markdown table: one row per model, test metrics of both tasks, training seconds;
    the best value of each column in bold."""
    models = [m for m in MODELS if any(m in results.get(t, {}) for t in TASKS_SHOWN)]
    best = {}
    for task, key, _, hib in COLUMNS:
        vals = [results[task][m]["metrics"]["test"][key] for m in models if m in results.get(task, {})]
        if vals:
            best[(task, key)] = max(vals) if hib else min(vals)
    head = "| model | " + " | ".join(f"{t[:3]}. {lab}" for t, _, lab, _ in COLUMNS) + " | train s |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for m in models:
        cells = []
        for task, key, _, _ in COLUMNS:
            r = results.get(task, {}).get(m)
            v = None if r is None else r["metrics"]["test"][key]
            s = _fmt(v)
            cells.append(f"**{s}**" if v is not None and v == best[(task, key)] else s)
        cells.append(f"{times.get(m, 0.0):.1f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(cache: str = "wskan-demo", quick: bool = False, seed: int = 0, progress: bool = True,
             models=None) -> dict:
    """Run the demo (see the module docstring); returns the results dict that is also
    written to ``CACHE/results.json``."""
    from ..zoo.build import build_zoo
    from ..zoo.store import Zoo, atomic_write

    t_start = time.perf_counter()
    cfg = _zoo_config(quick, seed)
    zoo_dir = os.path.join(cache, "zoo-quick" if quick else "zoo")
    print(f"[1/3] zoo: {cfg.size} digits-classifier KANs x {len(cfg.checkpoints)} checkpoints, widths "
          f"[{16}, {', '.join(map(str, cfg.hidden))}, 10] -> {zoo_dir}", flush=True)
    t0 = time.perf_counter()
    cached = os.path.exists(os.path.join(zoo_dir, "metadata.jsonl"))
    build_zoo(cfg, zoo_dir, progress=progress)
    zoo_s = time.perf_counter() - t0
    zoo = Zoo(zoo_dir)
    print(f"      {'reused cached zoo' if cached else 'built'} in {zoo_s:.1f}s: "
          + ", ".join(f"{s} {len(zoo.ids(s))}" for s in zoo.SPLITS), flush=True)
    budget = QUICK_BUDGET if quick else DEMO_BUDGET
    models = list(models or MODELS)
    results: Dict[str, Dict[str, dict]] = {}
    times: Dict[str, float] = {}
    print("[2/3] meta-training (same splits, seed and early stopping for every model)", flush=True)
    for task in TASKS_SHOWN:
        results[task] = {}
        for m in models:
            if task == "accuracy" and m == "magnitude":
                continue
            if ("edge" if task == "pruning" else "graph") not in LEVELS[m]:
                continue
            kw = {**budget["*"], **budget.get(m, {})}
            t1 = time.perf_counter()
            res = fit(zoo, task, m, TrainConfig(seed=seed, progress=progress, **kw),
                      out_dir=os.path.join(cache, "runs", task, m))
            dt = time.perf_counter() - t1
            times[m] = times.get(m, 0.0) + dt
            test = res["metrics"]["test"]
            print(f"      {task:8s} {m:12s} " + "  ".join(f"{k}={v:.4f}" for k, v in test.items())
                  + f"  ({dt:.1f}s, best epoch {res['best_epoch']})", flush=True)
            results[task][m] = {k: res[k] for k in ("metrics", "epochs_run", "best_epoch", "train_time_s", "sizes")}
    total = time.perf_counter() - t_start
    table = format_table(results, times)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, " \
              f"{torch.get_num_threads()} threads"
    header = (f"WS-KAN demo ({'quick' if quick else 'full'}), seed {seed}, zoo {zoo_dir} "
              f"({', '.join(f'{s} {len(zoo.ids(s))}' for s in zoo.SPLITS)} KANs); test-split metrics")
    footer = (f"zoo {'reused' if cached else 'built'} in {zoo_s:.1f}s; total {total:.1f}s on {machine}. "
              f"acc. = accuracy prediction (graph level), pru. = pruning-mask prediction (edge level).")
    print(f"[3/3] results\n\n{header}\n\n{table}\n\n{footer}", flush=True)
    verdict = _verdict(results)
    for line in verdict:
        print(f"  - {line}")
    out = {"quick": quick, "seed": seed, "zoo": os.path.abspath(zoo_dir), "zoo_seconds": zoo_s,
           "zoo_cached": cached, "total_seconds": total, "machine": machine, "results": results,
           "train_seconds": times, "table": table, "verdict": verdict}
    atomic_write(os.path.join(cache, "results.json"), (json.dumps(out, indent=1) + "\n").encode())
    atomic_write(os.path.join(cache, "results.md"),
                 f"{header}\n\n{table}\n\n{footer}\n\n".encode() + "".join(f"- {v}\n" for v in verdict).encode())
    for task, key, fname in (("accuracy", "kendall_tau", "accuracy_tau.png"), ("pruning", "accuracy", "pruning_accuracy.png")):
        vals = {m: r["metrics"]["test"][key] for m, r in results[task].items()}
        if vals:
            comparison_figure(vals, None, os.path.join(cache, fname), f"test {key}", f"{task} prediction")
    print(f"figures and tables in {cache}/ (runs/TASK/MODEL/*.png, results.md, results.json)", flush=True)
    return out


def _verdict(results) -> list:
    """Quality-bar checks, stated as measured (not asserted)."""
    lines = []
    acc, pru = results.get("accuracy", {}), results.get("pruning", {})
    if "wskan" in acc:
        tau = acc["wskan"]["metrics"]["test"]["kendall_tau"]
        others = {m: r["metrics"]["test"]["kendall_tau"] for m, r in acc.items() if m != "wskan"}
        best_o = max(others, key=others.get) if others else None
        lines.append(f"accuracy prediction: WS-KAN Kendall tau {tau:.4f} (bar 0.85: {'met' if tau >= 0.85 else 'NOT met'})"
                     + (f"; best baseline {best_o} {others[best_o]:.4f} -> WS-KAN "
                        f"{'ahead' if tau > others[best_o] else 'NOT ahead'}" if best_o else ""))
    if "wskan" in pru:
        a = pru["wskan"]["metrics"]["test"]["accuracy"]
        others = {m: r["metrics"]["test"]["accuracy"] for m, r in pru.items() if m != "wskan"}
        best_o = max(others, key=others.get) if others else None
        mag = others.get("magnitude")
        lines.append(f"pruning masks: WS-KAN edge accuracy {a:.4f} (bar 0.98: {'met' if a >= 0.98 else 'NOT met'})"
                     + (f"; magnitude heuristic {mag:.4f}" if mag is not None else "")
                     + (f"; best baseline {best_o} {others[best_o]:.4f} -> WS-KAN "
                        f"{'ahead' if a > others[best_o] else 'NOT ahead'}" if best_o else ""))
    return lines
