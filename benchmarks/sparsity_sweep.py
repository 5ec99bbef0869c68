"""What pykan's sparsity penalty (``fit(lamb=...)``) does to classifier KANs of the ``mnist5k``
preset. The same ``--runs`` runs (hyperparameters drawn from the preset's ranges: learning
rate, weight decay, init scale, data subset, label noise) are trained once per ``lamb``, so
``lamb`` is the only difference between the rows. Per ``lamb``: median test accuracy, the
fraction of runs that collapsed to chance (test accuracy < 0.15), the median fraction of
edges pykan's ``prune_edge`` keeps, and the fraction of edges whose attribution score lies
within 10 % / 20 % of the 0.03 threshold (how clear-cut the pruning label is). The
``mnist5k_sparse`` preset's range comes from this table.

    python benchmarks/sparsity_sweep.py [--lambs 0 2e-4 5e-4 1e-3 2e-3 5e-3] [--runs 16] [--md docs/sparsity_sweep.inc]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from wskan_ext.zoo import PRESETS, BuildConfig, edge_attribution, evaluate, run_hparams
from wskan_ext.zoo.build import load_dataset
from wskan_ext.zoo.trainer import RunHParams, train_batched

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import output_args, write_report  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lambs", type=float, nargs="+", default=[0.0, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3])
    ap.add_argument("--runs", type=int, default=16, help="runs per lamb (the same runs for every lamb)")
    output_args(ap, "sparsity_sweep")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = BuildConfig(**PRESETS["mnist5k"])
    data = load_dataset(cfg)
    base = run_hparams(cfg, range(a.runs))
    lambs = [lb for lb in a.lambs for _ in range(a.runs)]
    rep = len(a.lambs)
    hp = RunHParams(**{f: getattr(base, f).repeat(rep) for f in ("lr", "seed", "weight_decay", "init_scale",
                                                                 "subset_fraction", "label_noise")}, lamb=lambs)
    t0 = time.perf_counter()
    w = train_batched([data.num_inputs, *cfg.hidden, data.num_classes], data.x_train, data.y_train, hp,
                      steps=cfg.steps, grid=cfg.grid, k=cfg.k, batch_size=cfg.batch_size).checkpoints[-1]
    wall = time.perf_counter() - t0
    acc = evaluate(w, data.x_test, data.y_test)["acc"]
    scores = torch.cat([e.flatten(1) for e in edge_attribution(w, data.x_train[:cfg.prune_samples])], 1)
    thr = cfg.prune_threshold
    ratio = (scores / thr).log().abs()
    rows = []
    for lb in a.lambs:
        sel = torch.tensor([v == lb for v in lambs])
        rows.append({"lamb": lb, "test_acc": acc[sel].tolist(), "kept": (scores[sel] > thr).double().mean(1).tolist(),
                     "collapsed": (acc[sel] < 0.15).double().mean().item(),
                     "near10": (ratio[sel] < torch.log1p(torch.tensor(0.1))).double().mean().item(),
                     "near20": (ratio[sel] < torch.log1p(torch.tensor(0.2))).double().mean().item()})
    cost = {}  # what the penalty costs: the same runs, 100 steps, without and with it
    for lb in (0.0, 1e-3):
        hq = RunHParams(**{f: getattr(base, f) for f in ("lr", "seed", "weight_decay", "init_scale",
                                                          "subset_fraction", "label_noise")}, lamb=[lb] * a.runs)
        t = time.perf_counter()
        train_batched([data.num_inputs, *cfg.hidden, data.num_classes], data.x_train, data.y_train, hq, steps=100,
                      grid=cfg.grid, k=cfg.k, batch_size=cfg.batch_size)
        cost[lb] = time.perf_counter() - t
    cmd = "python benchmarks/sparsity_sweep.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"command: {cmd.strip()}",
             f"mnist5k preset: [{data.num_inputs}, {cfg.hidden[0]}, {data.num_classes}], {cfg.steps} steps, batch "
             f"{cfg.batch_size}, the same {a.runs} runs (preset hyperparameter draws) per lamb; training "
             f"{wall:.0f} s, {a.threads} thread(s)", "",
             f"{'lamb':>8s}  {'median test acc':>15s}  {'collapsed':>9s}  {'median kept':>11s}  near thr ±10%  ±20%"]
    for r in rows:
        lines.append(f"{r['lamb']:8.0e}  {statistics.median(r['test_acc']):15.3f}  {r['collapsed']:9.2f}  "
                     f"{statistics.median(r['kept']):11.3f}  {r['near10']:12.3f}  {r['near20']:.3f}")
    lines += ["", f"cost of the penalty: {a.runs} runs x 100 steps take {cost[0.0]:.2f} s without it and "
                  f"{cost[1e-3]:.2f} s with it ({cost[1e-3] / cost[0.0]:.1f}x)"]
    text = "\n".join(lines)
    write_report(a, text, {"command": cmd, "rows": rows, "wall_s": wall, "penalty_cost_s": cost})
    return 0


if __name__ == "__main__":
    sys.exit(main())
