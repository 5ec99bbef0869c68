"""The results tables: every task the zoos support x every model x several seeds, under one
fair protocol (``docs/tutorials/tasks.rst``, "Protocol").

* **Main table: pure weight space.** No model sees data or probe inputs (the runner refuses a
  probe setting, see :func:`check_pure_weight_space`). Every model gets the same splits, the
  same training budget and early-stopping rule (``BUDGET``) and the same hyperparameter
  search budget: ``--configs N`` candidate configurations per model (``candidates``), each
  trained with seed 0 and judged on the *validation* split only (the test split is not
  predicted); the best one is then trained with every seed and evaluated on test once.
* **Probe table** (``--probes P``): every model that can take probe features gets the same
  ``P`` probe inputs (WS-KAN: node/edge activation statistics; DeepSets-style per-edge probe
  MLP), next to two probe-only baselines (an MLP on the KAN's outputs at the probes /
  per-edge probe statistics, and pykan's attribution score thresholded per layer).

Examples::

    # build (or reuse) the default zoos under benchmarks/out/zoos, 3 seeds, 2 worker processes
    python benchmarks/results.py --build --seeds 0 1 2 --jobs 2

    # your own zoos (wskan zoo build ...), any subset of models
    python benchmarks/results.py --zoo mnist=path/to/zoo --models wskan mlp nfn

    # designs chosen beforehand on validation replace a model's defaults (same search count)
    python benchmarks/results.py --zoo sine=path/to/zoo --base 'nfn={"hidden": 128}' --base 'wskan={"aggr": "pna"}'

Writes ``--out`` (JSON: every run, the command, the machine, the wall time) and the Markdown
tables ``--md`` (main) and ``--md-probes``, which ``docs/tutorials/tasks.rst`` includes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time

import torch

from wskan_ext.tasks import TASKS, TrainConfig, fit, get_task
from wskan_ext.tasks.models import DEFAULTS, LEVELS, MODELS, PROBE_ONLY
from wskan_ext.tasks.train import AUGMENT_TASKS, validate_model_config
from wskan_ext.zoo import Zoo

#: Zoos ``--build`` creates: a preset name of ``wskan zoo build`` (see ``wskan_ext.zoo.build.PRESETS``).
DEFAULT_ZOOS = {
    "mnist5k-classifiers": "mnist5k",
    "mnist5k-inr": "mnist5k_inr",
    "digits-classifiers": "demo",
    "digits-inr": "digits_inr",
    "sine": "sine",
}
#: The training budget and early-stopping rule: the same for every model. ``precision``
#: ``"bf16"`` (``--precision``) runs every model's forward passes under bf16 autocast.
BUDGET = dict(epochs=30, batch_size=64, patience=10, precision="float32")
#: Weight-space models of the main table.
MAIN_MODELS = tuple(m for m in MODELS if m not in PROBE_ONLY)


def check_pure_weight_space(model: str, config: dict) -> None:
    """Refuse anything that is not pure weight space for the main table: probe-only models
    and any probe setting."""
    if model in PROBE_ONLY:
        raise ValueError(f"main table is pure weight space: model {model!r} sees the KAN only through probes")
    if int({**DEFAULTS[model], **config}.get("probe", 0) or 0):
        raise ValueError(f"main table is pure weight space: model {model!r} was given probe features "
                         f"(probe={config.get('probe')}); probes belong in the probe table")


def candidates(model: str, n: int, base: dict = None):
    """The first ``n`` configurations of ``model``'s search space (the defaults first, then
    learning rate x 0.5, x 2, then weight decay x 10): the same count for every model. With
    ``base`` (``--base MODEL=JSON``) the steps are taken from the base's values (a base with
    ``lr`` 1e-3 gets 5e-4 as its second configuration, not a copy of itself)."""
    base = {**DEFAULTS[model], **(base or {})}
    out = [{}]
    if "lr" in base:
        out += [{"lr": base["lr"] * 0.5}, {"lr": base["lr"] * 2}]
    if "weight_decay" in base:
        out += [{"weight_decay": base["weight_decay"] * 10}]
    return out[:max(1, n)]


def zoo_tasks(zoo: Zoo, with_pruning: bool = True):
    labels = {k for r in zoo.metadata for k in (r.get("labels") or {})}
    tasks = [t for t, spec in TASKS.items() if spec.level == "graph" and set(spec.labels) <= labels]
    return tasks + (["pruning"] if with_pruning else [])


def build_default(cache: str, names):
    from wskan_ext.zoo.build import PRESETS, BuildConfig, build_zoo

    out = {}
    for name in names:
        cfg = BuildConfig.from_dict(dict(PRESETS[DEFAULT_ZOOS[name]]))
        path = os.path.join(cache, name)
        t = time.perf_counter()
        build_zoo(cfg, path, progress=False)
        print(f"zoo {name}: {path} ready ({time.perf_counter() - t:.1f}s)", flush=True)
        out[name] = path
    return out


def fmt(vals, digits=4):
    if not vals:
        return "n/a"
    m = statistics.fmean(vals)
    s = statistics.pstdev(vals) if len(vals) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _better(met: str) -> int:
    return -1 if met == "mse" else 1


def verdict(sel, spec):
    """WS-KAN vs the best other model on the primary metric: ahead by more than the larger
    of the two stds across seeds?"""
    met = spec.primary
    by = {}
    for r in sel:
        by.setdefault(r["label"], []).append(r["test"][met])
    ws = [k for k in by if k.startswith("wskan")]
    if not ws or len(by) < 2:
        return ""
    w = by[ws[0]]
    others = {k: v for k, v in by.items() if k not in ws}
    sign = _better(met)
    best = max(others, key=lambda k: sign * statistics.fmean(others[k]))
    b = others[best]
    sd = max(statistics.pstdev(w) if len(w) > 1 else 0.0, statistics.pstdev(b) if len(b) > 1 else 0.0)
    gap = sign * (statistics.fmean(w) - statistics.fmean(b))
    word = "ahead of" if gap > sd else ("behind" if gap < -sd else "within one std of")
    return (f"WS-KAN is **{word}** the best other model ({best}) on {met}: "
            f"{statistics.fmean(w):.4f} vs {statistics.fmean(b):.4f} (gap {gap:+.4f}, larger std {sd:.4f}).")


def tables(runs, table: str):
    """Markdown: one table per (zoo, task); rows = models, columns = test metrics."""
    runs = [r for r in runs if r["table"] == table and r.get("test")]
    out = []
    keys = sorted({(r["zoo"], r["task"]) for r in runs}, key=lambda k: (k[0], list(TASKS).index(k[1])))
    for zoo, task in keys:
        spec = TASKS[task]
        sel = [r for r in runs if r["zoo"] == zoo and r["task"] == task]
        labels = list(dict.fromkeys(r["label"] for r in sel))
        n_seeds = len({r["seed"] for r in sel})
        means = {}
        for m in labels:
            for met in spec.metrics:
                v = [r["test"][met] for r in sel if r["label"] == m]
                if v:
                    means[(m, met)] = statistics.fmean(v)
        best = {}
        for met in spec.metrics:
            vals = [v for (m, k), v in means.items() if k == met]
            if vals:
                best[met] = min(vals) if met == "mse" else max(vals)
        out.append(f"**{zoo} / {task}** ({spec.description}; test split, mean ± std over {n_seeds} seeds)\n")
        out.append("| model | " + " | ".join(spec.metrics) + " | config | train s |")
        out.append("|---|" + "---|" * (len(spec.metrics) + 2))
        for m in labels:
            mine = [r for r in sel if r["label"] == m]
            cells = []
            for met in spec.metrics:
                c = fmt([r["test"][met] for r in mine])
                cells.append(f"**{c}**" if means.get((m, met)) == best.get(met) else c)
            cfg = json.dumps(mine[0]["config"], sort_keys=True) if mine[0]["config"] else "defaults"
            cells.append(cfg.replace("|", "/"))
            cells.append(f"{statistics.fmean(r['train_time_s'] for r in mine):.1f}")
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        v = verdict(sel, spec)
        out.append("")
        if v:
            out.append(v)
            out.append("")
    return "\n".join(out)


def summary(runs) -> str:
    """Compact Markdown for the README: per (zoo, task) of the main table, WS-KAN's primary
    test metric, the best other model's, and the verdict."""
    runs = [r for r in runs if r["table"] == "main" and r.get("test")]
    lines = ["| zoo / task | metric | WS-KAN | best other model | verdict |", "|---|---|---|---|---|"]
    keys = sorted({(r["zoo"], r["task"]) for r in runs}, key=lambda k: (k[0], list(TASKS).index(k[1])))
    for zoo, task in keys:
        spec = TASKS[task]
        sel = [r for r in runs if r["zoo"] == zoo and r["task"] == task]
        by = {}
        for r in sel:
            by.setdefault(r["label"], []).append(r["test"][spec.primary])
        if "wskan" not in by or len(by) < 2:
            continue
        sign = _better(spec.primary)
        best = max((k for k in by if k != "wskan"), key=lambda k: sign * statistics.fmean(by[k]))
        v = verdict(sel, spec)
        word = v.split("**")[1] if "**" in v else ""
        lines.append(f"| {zoo} / {task} | {spec.primary} | {fmt(by['wskan'])} | {best}: {fmt(by[best])} | {word} |")
    return "\n".join(lines)


def write_readme_block(path: str, text: str) -> None:
    """Replace the block between ``<!-- results:start -->`` and ``<!-- results:end -->``."""
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    body = open(path).read()
    if start not in body or end not in body:
        raise ValueError(f"{path}: no {start} ... {end} block to write the summary into")
    a, b = body.index(start) + len(start), body.index(end)
    with open(path + ".tmp", "w") as f:
        f.write(body[:a] + "\n" + text + "\n" + body[b:])
    os.replace(path + ".tmp", path)


_LOAD_LOCK = None  # in a worker: the lock file the pool shares, so that two runs never load at once


def _init_worker(lock_path):
    global _LOAD_LOCK
    from filelock import FileLock  # a dependency of torch

    _LOAD_LOCK = FileLock(lock_path)


def task_budget(budget: dict, task: str) -> dict:
    """``budget`` without the settings that do not apply to ``task``: ``aux_points`` /
    ``aux_weight`` (graph-level regression only) and ``loss_units`` (regression only); those
    tasks train as without them, every model alike."""
    spec = get_task(task)
    drop = set()
    if spec.kind != "regression" or spec.level != "graph":
        drop |= {"aux_points", "aux_weight"}
    if spec.kind != "regression":
        drop.add("loss_units")
    return {k: v for k, v in budget.items() if k not in drop}


#: Settings ``--task-budget TASK=JSON`` may give one task (for every model on it).
TASK_BUDGET_KEYS = ("epochs", "batch_size", "patience", "precision", "ema", "aux_points", "aux_weight", "loss_units",
                    "augment", "warmup")


def json_object(text: str, where: str) -> dict:
    """The JSON object in ``text``; ``ValueError`` naming ``where`` otherwise."""
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{where}: not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {text!r}")
    return obj


def parse_task_budgets(items) -> dict:
    """``{task: settings}`` from ``--task-budget TASK=JSON`` items: the budget of every run on
    that task, for every model alike, on top of the global one. Raises ``ValueError`` naming
    the item for an unknown task or key, a value :class:`TrainConfig` refuses, or a setting
    that does not apply to the task (:func:`task_budget`)."""
    out = {}
    for item in items:
        task, _, js = item.partition("=")
        if task not in TASKS:
            raise ValueError(f"--task-budget {item!r}: unknown task {task!r}; choose from {sorted(TASKS)}")
        cfg = json_object(js, f"--task-budget {task}")
        bad = sorted(set(cfg) - set(TASK_BUDGET_KEYS))
        if bad:
            raise ValueError(f"--task-budget {task}: unknown setting(s) {bad}; allowed {list(TASK_BUDGET_KEYS)}")
        if cfg.get("augment") is not None and AUGMENT_TASKS.get(cfg["augment"]) != task:
            raise ValueError(f"--task-budget {task}: augment {cfg['augment']!r} keeps the labels of task "
                             f"{AUGMENT_TASKS.get(cfg['augment'])!r} only")
        dropped = sorted(set(cfg) - set(task_budget(cfg, task)))
        if dropped:
            raise ValueError(f"--task-budget {task}: {dropped} do(es) not apply to task {task!r}")
        try:
            TrainConfig(**cfg)
        except (TypeError, ValueError) as e:
            raise ValueError(f"--task-budget {task}: {e}") from None
        out[task] = cfg
    return out


def _job(args):
    """One training run (in a worker process with one torch thread)."""
    zoo_path, task, model, seed, config, read_test, budget, extra = args
    torch.set_num_threads(1)
    budget = task_budget(budget, task)
    res = fit(zoo_path, task, model, TrainConfig(seed=seed, progress=False, model=dict(config), **budget),
              read_test=read_test, extra_train=extra, load_lock=_LOAD_LOCK)
    return {"val": res["metrics"]["val"], "test": res["metrics"].get("test"), "train_time_s": res["train_time_s"],
            "best_epoch": res["best_epoch"], "sizes": res["sizes"]}


def _map(jobs, n):
    if n <= 1 or len(jobs) <= 1:
        return map(_job, jobs)
    import multiprocessing as mp
    import tempfile

    # one run per fresh worker; the workers take turns to load their splits, whose memory
    # peak is about twice a run's steady state (two peaks at once were killed for memory on
    # 24 GiB with 89,396 training KANs)
    lock_path = os.path.join(tempfile.gettempdir(), f"wskan-results-{os.getpid()}.lock")
    pool = mp.get_context("spawn").Pool(n, maxtasksperchild=1, initializer=_init_worker, initargs=(lock_path,))
    return pool.imap(_job, jobs)


def plan(zoos, models, probe_models, probes, with_inr_pruning, probe_zoos=None, bases=None):
    """``[(zoo_name, path, task, model, label, config, table)]``: what to run (the probe table
    only on ``probe_zoos``, default every zoo). ``bases``: ``{model: config}`` that replaces a
    model's defaults in the main table (its search candidates are built around it);
    a key ``"model@task"`` replaces it on that task only (``--base wskan@sine=...``)."""
    bases = bases or {}
    out = []
    for zname, path in zoos.items():
        zoo = Zoo(path)
        pruning = with_inr_pruning or zoo.manifest.get("task") == "classification"
        for task in zoo_tasks(zoo, pruning):
            spec = TASKS[task]
            for m in models:
                if spec.level in LEVELS[m] and not (m == "magnitude" and spec.kind != "binary"):
                    base = dict(bases.get(f"{m}@{task}", bases.get(m, {})))
                    check_pure_weight_space(m, base)
                    out.append((zname, path, task, m, m, base, "main"))
            if probes and (probe_zoos is None or zname in probe_zoos):
                for m in probe_models:
                    if spec.level in LEVELS[m] and not (m == "attribution" and spec.kind != "binary"):
                        label = m if m in PROBE_ONLY else f"{m} + probes"
                        out.append((zname, path, task, m, label, {"probe": probes}, "probes"))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", action="append", default=[], metavar="NAME=DIR", help="a zoo to include (repeatable)")
    p.add_argument("--build", action="store_true", help="build (or reuse) the default zoos under --cache")
    p.add_argument("--only", nargs="+", choices=sorted(DEFAULT_ZOOS), help="with --build: a subset of zoos")
    p.add_argument("--cache", default="benchmarks/out/zoos")
    p.add_argument("--models", nargs="+", default=list(MAIN_MODELS), choices=list(MAIN_MODELS))
    p.add_argument("--probes", type=int, default=0, help="probe table with this many probe inputs (0: no probe table)")
    p.add_argument("--probe-models", nargs="+", default=["wskan", "probe_mlp", "attribution"],
                   choices=["wskan", "probe_mlp", "attribution"])
    p.add_argument("--probe-zoos", nargs="+", metavar="NAME", help="zoos of the probe table (default: every zoo)")
    p.add_argument("--configs", type=int, default=1, help="hyperparameter configurations per model (same for all)")
    p.add_argument("--base", action="append", default=[], metavar="MODEL[@TASK]=JSON",
                   help="a model design chosen beforehand on validation, e.g. wskan='{\"aggr\": \"pna\"}': it "
                        "replaces the model's defaults in the main table (the search candidates are built "
                        "around it; the count stays --configs for every model); MODEL@TASK (e.g. wskan@sine) "
                        "on that task only; repeatable")
    p.add_argument("--task-budget", action="append", default=[], metavar="TASK=JSON",
                   help="budget settings of every run on one task, for every model alike, on top of the "
                        "global ones, e.g. sine='{\"batch_size\": 16, \"aux_points\": 32}' (keys: "
                        + ", ".join(TASK_BUDGET_KEYS) + "); repeatable")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one torch thread each)")
    p.add_argument("--inr-pruning", action="store_true",
                   help="also run pruning-mask prediction on INR zoos (their masks keep ~99%% of edges)")
    p.add_argument("--out", default="benchmarks/out/results.json")
    p.add_argument("--md", default="docs/tasks_results.inc")
    p.add_argument("--md-probes", default="docs/tasks_probe_results.inc")
    p.add_argument("--resume", action="store_true", help="skip runs already recorded in --out")
    p.add_argument("--epochs", type=int, default=BUDGET["epochs"],
                   help="epoch cap of every run (the same for every model; early stopping as in BUDGET)")
    p.add_argument("--batch-size", type=int, default=BUDGET["batch_size"],
                   help="batch size of every run (the same for every model)")
    p.add_argument("--precision", choices=["float32", "bf16"], default=BUDGET["precision"],
                   help="arithmetic of every run (the same for every model): bf16 runs the forward passes "
                        "under torch.autocast with bfloat16, parameters and optimiser state staying float32")
    p.add_argument("--ema", type=float, default=0.0,
                   help="decay of the moving average of the weights that every run validates, early-stops on "
                        "and tests (TrainConfig.ema; the same for every model; 0 = off)")
    p.add_argument("--warmup", type=float, default=0.0,
                   help="fraction of every run's steps of linear learning-rate warm-up before the cosine "
                        "schedule (TrainConfig.warmup; the same for every model; 0 = none)")
    p.add_argument("--aux-points", type=int, default=0,
                   help="every run also learns to predict each training KAN's outputs at this many fixed input "
                        "points, computed from its weights (TrainConfig.aux_points; graph-level regression "
                        "tasks; the same for every model; predictions and metrics use the weights only; 0 = off)")
    p.add_argument("--aux-weight", type=float, default=1.0, help="weight of the --aux-points loss (TrainConfig.aux_weight)")
    p.add_argument("--loss-units", choices=["standardised", "label"], default="standardised",
                   help="regression loss of every run (TrainConfig.loss_units; the same for every model)")
    p.add_argument("--extra-train", action="append", default=[], metavar="DIR",
                   help="another zoo (another build of the same kind, e.g. another seed) whose members, all of "
                        "them, join every run's training split, for every model alike; validation and test "
                        "stay each --zoo's own (wskan_ext.tasks.load_training_split; repeatable)")
    p.add_argument("--tasks", nargs="+", choices=sorted(TASKS), help="only these tasks (default: every task of each zoo)")
    p.add_argument("--readme", help="also write the compact summary into this file's results block (README.md)")
    a = p.parse_args(argv)
    if a.jobs < 1:
        p.error(f"--jobs must be >= 1, got {a.jobs}")
    if a.epochs < 1:
        p.error(f"--epochs must be >= 1, got {a.epochs}")
    if a.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {a.batch_size}")
    if not 0 <= a.ema < 1:
        p.error(f"--ema must be 0 (off) or a decay in (0, 1), got {a.ema}")
    if not 0 <= a.aux_points <= 4096 or not (a.aux_weight > 0 and math.isfinite(a.aux_weight)):
        p.error(f"--aux-points must be in [0, 4096] and --aux-weight a finite number > 0, got {a.aux_points} "
                f"and {a.aux_weight}")
    budget = dict(BUDGET, epochs=a.epochs, batch_size=a.batch_size, precision=a.precision)
    if a.ema:  # recorded only when on: tables written before --ema existed ran without it
        budget["ema"] = a.ema
    if not 0 <= a.warmup < 1:
        p.error(f"--warmup must be a fraction in [0, 1), got {a.warmup}")
    if a.warmup:  # likewise
        budget["warmup"] = a.warmup
    if a.aux_points:  # likewise
        budget.update(aux_points=a.aux_points, aux_weight=a.aux_weight)
    if a.loss_units != "standardised":  # likewise
        budget["loss_units"] = a.loss_units
    zoos = {}
    if a.build:
        zoos.update(build_default(a.cache, a.only or list(DEFAULT_ZOOS)))
    for item in a.zoo:
        name, _, path = item.partition("=")
        if not path:
            p.error(f"--zoo expects NAME=DIR, got {item!r}")
        zoos[name] = path
    if not zoos:
        p.error("give --zoo NAME=DIR and/or --build")
    try:
        task_budgets = parse_task_budgets(a.task_budget)
    except ValueError as e:
        p.error(str(e))
    bases = {}
    for item in a.base:
        key, _, js = item.partition("=")
        m, _, task = key.partition("@")
        if m not in MAIN_MODELS:
            p.error(f"--base: unknown model {m!r}; choose from {list(MAIN_MODELS)}")
        if task and task not in TASKS:
            p.error(f"--base {key}: unknown task {task!r}; choose from {sorted(TASKS)}")
        try:
            bases[key] = json_object(js, f"--base {key}")
            check_pure_weight_space(m, bases[key])
            validate_model_config(m, bases[key], where=f"--base {key}")
        except ValueError as e:
            p.error(str(e))
    runs, selection = [], []
    if a.resume and os.path.exists(a.out):
        with open(a.out) as f:
            old = json.load(f)
        runs, selection = old["runs"], old.get("selection", [])
        # tables written before --precision existed ran in float32
        if {"precision": "float32", **old.get("budget", BUDGET)} != budget:
            p.error(f"--resume: {a.out} was run with budget {old.get('budget')}, not {budget}; "
                    "one table has one budget (use another --out)")
        if old.get("task_budgets", {}) != task_budgets:
            p.error(f"--resume: {a.out} was run with per-task budgets {old.get('task_budgets', {})}, not "
                    f"{task_budgets}; one table has one budget (use another --out)")
        if old.get("extra_train", []) != a.extra_train:
            p.error(f"--resume: {a.out} was run with extra training zoos {old.get('extra_train', [])}, "
                    f"not {a.extra_train}; one table has one training set (use another --out)")
        print(f"resuming: {len(runs)} runs already in {a.out}", flush=True)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
               f"torch {torch.__version__}, {a.jobs} worker process(es) x 1 thread, Python {platform.python_version()}")
    cmd = "python benchmarks/results.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    new_runs = [0]  # runs added by this session

    def write():
        wall = time.perf_counter() - t0
        per_task = "".join(f"; on {t}: {dict(task_budget({**budget, **tb}, t))}" for t, tb in task_budgets.items())
        footer = (f"Command: ``{cmd}``; machine: {machine}; budget per run: {budget}{per_task} (every model), "
                  f"{a.configs} configuration(s) per model chosen on validation; "
                  + (f"extra training zoos {a.extra_train} (every model); " if a.extra_train else "")
                  + f"{len(runs)} test runs, "
                  f"their training times summed {sum(r['train_time_s'] for r in runs) / 3600:.1f} h"
                  + (f"; wall time of this session {wall / 60:.1f} min." if new_runs[0] else "."))
        data = json.dumps({"command": cmd, "machine": machine, "zoos": zoos, "budget": budget,
                           **({"task_budgets": task_budgets} if task_budgets else {}),
                           "extra_train": a.extra_train, "configs": a.configs, "selection": selection,
                           "runs": runs}, indent=1)
        outs = [(a.out, data), (a.md, tables(runs, "main") + "\n" + footer + "\n")]
        if a.probes:
            outs.append((a.md_probes, tables(runs, "probes") + "\n" + footer + "\n"))
        for path, text in outs:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)
        if a.readme:
            write_readme_block(a.readme, summary(runs) + "\n\n" + footer)

    if a.probe_zoos and set(a.probe_zoos) - set(zoos):
        p.error(f"--probe-zoos: unknown zoo(s) {sorted(set(a.probe_zoos) - set(zoos))}; given {sorted(zoos)}")
    todo_all = [t for t in plan(zoos, a.models, a.probe_models, a.probes, a.inr_pruning, a.probe_zoos, bases)
                if a.tasks is None or t[2] in a.tasks]
    sel_done = {(s["zoo"], s["task"], s["label"], json.dumps(s["config"], sort_keys=True)): s for s in selection}
    done = {(r["zoo"], r["task"], r["label"], r["seed"]) for r in runs}
    for zone in zoos:  # zoo by zoo: a finished zoo has complete tables even if a later one is cut short
        todo = [t for t in todo_all if t[0] == zone]
        # 1. model selection on validation (seed 0, test never predicted), same count per model
        sel_jobs, sel_keys = [], []
        for zname, path, task, m, label, base, table in todo:
            cands = candidates(m, a.configs, base) if m not in ("magnitude", "attribution") else [{}]
            for c in cands if len(cands) > 1 else []:
                cfg = {**base, **c}
                key = (zname, task, label, json.dumps(cfg, sort_keys=True))
                if key not in sel_done:
                    sel_jobs.append((path, task, m, 0, cfg, False, {**budget, **task_budgets.get(task, {})},
                                     a.extra_train))
                    sel_keys.append(key)
        for key, res in zip(sel_keys, _map(sel_jobs, a.jobs)):
            s = {"zoo": key[0], "task": key[1], "label": key[2], "config": json.loads(key[3]), "val": res["val"]}
            selection.append(s)
            sel_done[key] = s
            print(f"select {key[0]:20s} {key[1]:9s} {key[2]:18s} {key[3]}: val {res['val']}", flush=True)
            write()
        chosen = {}
        for zname, path, task, m, label, base, table in todo:
            spec = TASKS[task]
            cands = [s for s in selection if (s["zoo"], s["task"], s["label"]) == (zname, task, label)]
            sign = 1 if spec.higher_is_better else -1
            chosen[(zname, task, label)] = (max(cands, key=lambda s: sign * s["val"][spec.primary])["config"]
                                            if cands else dict(base))
        # 2. the chosen configuration, every seed, test read once per run
        jobs, keys = [], []
        for zname, path, task, m, label, base, table in todo:
            cfg = chosen[(zname, task, label)]
            if table == "main":
                check_pure_weight_space(m, cfg)
            for seed in a.seeds:
                if (zname, task, label, seed) not in done:
                    jobs.append((path, task, m, seed, cfg, True, {**budget, **task_budgets.get(task, {})},
                                 a.extra_train))
                    keys.append((zname, task, m, label, seed, cfg, table))
        for (zname, task, m, label, seed, cfg, table), res in zip(keys, _map(jobs, a.jobs)):
            runs.append({"zoo": zname, "task": task, "model": m, "label": label, "seed": seed, "config": cfg,
                         "table": table, **res})
            new_runs[0] += 1
            print(f"{table:6s} {zname:20s} {task:9s} {label:18s} seed {seed}: "
                  + "  ".join(f"{k}={v:.4f}" for k, v in res["test"].items()) + f"  ({res['train_time_s']:.1f}s)",
                  flush=True)
            write()
    write()
    print("\n" + tables(runs, "main"))
    if a.probes:
        print("\n" + tables(runs, "probes"))
    print(f"wrote {a.out}, {a.md}" + (f", {a.md_probes}" if a.probes else ""))


if __name__ == "__main__":
    main()
