r"""Pruning with margin-smoothed training labels: does telling the model *how far* each edge is
from pykan's threshold help it learn the mask? (seed 0 unless ``--seeds``; the budget of
``benchmarks/attempts.py``; the test split is not read.)

pykan keeps an edge iff its attribution score :math:`A` exceeds the threshold :math:`\theta`
(0.03). The zoo stores only the masks; this script recomputes the scores of every training
member from the zoo's own build data (:func:`wskan_ext.zoo.labels.edge_attribution` on the
same ``prune_samples`` images, checked to reproduce the stored masks exactly) and trains on
the soft targets :math:`\sigma(\ln(A/\theta)/\tau)` (edges the mask drops keep targets
:math:`\le 1/2`) with the usual binary cross-entropy. Validation keeps the hard masks, so the
printed accuracy is the task's metric. ``tau 0`` trains on the hard masks (the reference).

    python benchmarks/soft_labels.py ZOO MODEL[:JSON_CONFIG] [...] --tau TAU [--seeds S ...] [--out JSON]
    python benchmarks/soft_labels.py benchmarks/out/zoos/mnist5k-classifiers-fullprune 'wskan:{}' --tau 0.1
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch

from wskan_ext.tasks.definitions import SplitData, edge_targets
from wskan_ext.zoo import Zoo
from wskan_ext.zoo.build import BuildConfig, load_dataset
from wskan_ext.zoo.labels import edge_attribution

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attempts import fit_spec, spec_parser, write_json  # noqa: E402  (the same budget as attempts.py)


def edge_scores(split: SplitData, x: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """pykan's attribution score of every edge of every member, ``(B, E)`` in edge order."""
    return torch.cat([edge_targets(edge_attribution(split.weights[a:a + chunk], x))
                      for a in range(0, len(split), chunk)]).to(torch.float64)


def soft_targets(score: torch.Tensor, hard: torch.Tensor, threshold: float, tau: float) -> torch.Tensor:
    r""":math:`\sigma(\ln(A/\theta)/\tau)`, at most 1/2 where the mask drops the edge
    (already-pruned edges have score 0 and target 0); the hard masks for ``tau == 0``."""
    if tau == 0:
        return hard
    soft = torch.sigmoid(torch.log(score.clamp_min(1e-30) / threshold) / tau)
    return torch.where(hard > 0.5, soft, soft.clamp_max(0.5)).to(hard.dtype)


def run(zoo_dir: str, tau: float, spec: str, seed: int) -> dict:
    """Train ``spec`` on the pruning task with soft training targets of temperature ``tau``."""
    zoo = Zoo(zoo_dir)
    cfg = BuildConfig.from_dict(zoo.manifest["config"])
    x = load_dataset(cfg).x_train[: cfg.prune_samples]
    check = {}

    def with_soft_train(splits):
        tr = splits["train"]
        score = edge_scores(tr, x)
        agree = float(((score > cfg.prune_threshold).to(tr.targets.dtype) == tr.targets).double().mean())
        if agree != 1.0:
            raise RuntimeError(f"{zoo_dir}: recomputed scores reproduce only {agree:.5f} of the stored masks")
        soft = soft_targets(score, tr.targets, cfg.prune_threshold, tau)
        check["mean_abs_change"] = float((soft - tr.targets).abs().double().mean())
        splits["train"] = SplitData(tr.weights, soft, tr.ids, tr.split, tr.source)
        return splits

    t0 = time.perf_counter()
    res = fit_spec(zoo_dir, "pruning", spec, seed, splits_hook=with_soft_train)
    return {"zoo": zoo_dir, "tau": tau, "spec": spec, "seed": seed, "val": res["metrics"]["val"],
            "best_epoch": res["best_epoch"], "mean_abs_target_change": check["mean_abs_change"],
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None):
    ap = spec_parser(__doc__, "soft_labels")
    ap.add_argument("--tau", type=float, required=True, help="temperature of the soft targets (0: the hard masks)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = []
    for spec in a.specs:
        rows = [run(a.zoo, a.tau, spec, s) for s in a.seeds]
        accs = [r["val"]["accuracy"] for r in rows]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{spec} tau {a.tau}: validation accuracy {statistics.mean(accs):.4f} ± {sd:.4f} "
              f"(seeds {a.seeds}: {', '.join(f'{v:.4f}' for v in accs)}; best epochs "
              f"{[r['best_epoch'] for r in rows]}; mean |soft - hard| {rows[0]['mean_abs_target_change']:.4f})",
              flush=True)
        out += rows
    write_json(a.out, {"command": "python benchmarks/soft_labels.py " + " ".join(sys.argv[1:]), "runs": out})


if __name__ == "__main__":
    main()
