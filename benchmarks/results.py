"""Full comparison: every task the given zoos support x every model x several seeds.

Tasks are picked from each zoo's labels: ``test_acc`` -> accuracy + pruning (classifier
zoos), ``class`` -> inr_class (+ pruning), ``a``/``b`` -> sine (+ pruning). Every model
trains with the same splits, budget, seeds and early stopping on validation; the table
reports test metrics as mean ± std over seeds, the best mean of each column in bold.

Examples::

    # build the default zoos under benchmarks/out/zoos (digits classifiers, digits INRs,
    # sine INRs), then run 3 seeds of everything
    python benchmarks/results.py --build --seeds 0 1 2

    # your own zoos (wskan zoo build ...), any subset of models
    python benchmarks/results.py --zoo mnist=path/to/zoo --models wskan mlp nfn

Writes ``--out`` (JSON: every run's metrics, the command, the machine) and ``--md``
(the Markdown tables, included by ``docs/tasks.rst``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from wskan_ext.tasks import TASKS, TrainConfig, fit
from wskan_ext.tasks.models import LEVELS, MODELS
from wskan_ext.zoo import Zoo

#: Zoos ``--build`` creates (BuildConfig fields); ``classifiers`` is the zoo ``demo`` preset.
DEFAULT_ZOOS = {
    "digits-classifiers": "demo",
    "digits-inr": dict(dataset="digits_inr", hidden=[8], size=600, shard_size=300, steps=300, checkpoints=[300],
                       lr=[5e-3, 3e-2]),
    "sine-inr": dict(dataset="sine", hidden=[4], size=400, shard_size=400, steps=150, checkpoints=[150],
                     lr=[5e-3, 3e-2]),
}
BUDGET = {"*": dict(epochs=40, batch_size=32, patience=10), "wskan": dict(epochs=40, batch_size=32, patience=15)}


def zoo_tasks(zoo: Zoo, with_pruning: bool = True):
    labels = {k for r in zoo.metadata for k in (r.get("labels") or {})}
    tasks = [t for t, spec in TASKS.items() if spec.level == "graph" and set(spec.labels) <= labels]
    return tasks + (["pruning"] if with_pruning else [])


def build_default(cache: str, names):
    from wskan_ext.zoo.build import PRESETS, BuildConfig, build_zoo

    out = {}
    for name in names:
        spec = DEFAULT_ZOOS[name]
        cfg = BuildConfig.from_dict(dict(PRESETS[spec]) if isinstance(spec, str) else dict(spec))
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


def tables(runs, models):
    """Markdown: one table per (zoo, task); rows = models, columns = test metrics."""
    out = []
    keys = sorted({(r["zoo"], r["task"]) for r in runs}, key=lambda k: (k[0], list(TASKS).index(k[1])))
    for zoo, task in keys:
        spec = TASKS[task]
        sel = [r for r in runs if r["zoo"] == zoo and r["task"] == task]
        n_seeds = len({r["seed"] for r in sel})
        means = {}
        for m in models:
            for met in spec.metrics:
                v = [r["test"][met] for r in sel if r["model"] == m]
                if v:
                    means[(m, met)] = statistics.fmean(v)
        best = {}
        for met in spec.metrics:
            vals = [v for (m, k), v in means.items() if k == met]
            if vals:
                best[met] = min(vals) if met == "mse" else max(vals)
        out.append(f"**{zoo} / {task}** ({spec.description}; test split, mean ± std over {n_seeds} seeds)\n")
        out.append("| model | " + " | ".join(spec.metrics) + " | train s |")
        out.append("|---|" + "---|" * (len(spec.metrics) + 1))
        for m in models:
            mine = [r for r in sel if r["model"] == m]
            if not mine:
                continue
            cells = []
            for met in spec.metrics:
                c = fmt([r["test"][met] for r in mine])
                cells.append(f"**{c}**" if means.get((m, met)) == best.get(met) else c)
            cells.append(f"{statistics.fmean(r['train_time_s'] for r in mine):.1f}")
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", action="append", default=[], metavar="NAME=DIR", help="a zoo to include (repeatable)")
    p.add_argument("--build", action="store_true", help="build (or reuse) the default zoos under --cache")
    p.add_argument("--only", nargs="+", choices=sorted(DEFAULT_ZOOS), help="with --build: a subset of zoos")
    p.add_argument("--cache", default="benchmarks/out/zoos")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--inr-pruning", action="store_true",
                   help="also run pruning-mask prediction on INR zoos (their masks keep ~99%% of edges)")
    p.add_argument("--out", default="benchmarks/out/results.json")
    p.add_argument("--md", default="benchmarks/out/results.md")
    p.add_argument("--resume", action="store_true", help="skip runs already recorded in --out")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
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
    runs = []
    if a.resume and os.path.exists(a.out):
        with open(a.out) as f:
            runs = json.load(f)["runs"]
        print(f"resuming: {len(runs)} runs already in {a.out}", flush=True)
    done = {(r["zoo"], r["task"], r["model"], r["seed"]) for r in runs}
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
               f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}")
    cmd = "python benchmarks/results.py " + " ".join(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()

    def write():
        md = tables(runs, a.models)
        footer = f"Command: ``{cmd}``; machine: {machine}; {len(runs)} runs, last session {time.perf_counter() - t0:.0f}s."
        for path, data in ((a.out, json.dumps({"command": cmd, "machine": machine, "zoos": zoos, "runs": runs}, indent=1)),
                           (a.md, md + "\n" + footer + "\n")):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
        return md, footer

    for zname, path in zoos.items():
        zoo = Zoo(path)
        pruning = a.inr_pruning or zoo.manifest.get("task") == "classification"
        for task in zoo_tasks(zoo, pruning):
            spec = TASKS[task]
            for m in a.models:
                if spec.level not in LEVELS[m] or (m == "magnitude" and spec.kind != "binary"):
                    continue
                for seed in a.seeds:
                    if (zname, task, m, seed) in done:
                        continue
                    kw = {**BUDGET["*"], **BUDGET.get(m, {})}
                    res = fit(zoo, task, m, TrainConfig(seed=seed, progress=not a.quiet, **kw))
                    runs.append({"zoo": zname, "task": task, "model": m, "seed": seed, "test": res["metrics"]["test"],
                                 "val": res["metrics"]["val"], "train_time_s": res["train_time_s"],
                                 "best_epoch": res["best_epoch"], "sizes": res["sizes"]})
                    print(f"{zname:20s} {task:9s} {m:12s} seed {seed}: "
                          + "  ".join(f"{k}={v:.4f}" for k, v in res["metrics"]["test"].items())
                          + f"  ({res['train_time_s']:.1f}s)", flush=True)
                    write()  # results so far (an interrupted run resumes with --resume)
    md, footer = write()
    print("\n" + md + "\n" + footer)
    print(f"wrote {a.out} and {a.md}")


if __name__ == "__main__":
    main()
