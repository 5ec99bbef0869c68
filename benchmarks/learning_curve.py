"""Learning curve: validation metric against the number of training KANs, for one or more
meta-models (seed 0 unless ``--seeds``; the budget of ``benchmarks/attempts.py``; the test split is
not read).

Each fraction ``f`` keeps the training members of the first ``round(f R)`` training *runs*
(a run's checkpoints stay together; runs in zoo order, which the builder draws at random),
and the whole validation split, so every point is judged on the same members. With
``--val-from SMALL_ZOO`` the validation split is cut to the members of ``SMALL_ZOO``'s
validation split: for a zoo built with the same preset and ``--seed`` but more runs (such as
``mnist5k_xlarge`` over ``mnist5k_large``), whose first runs are exactly the smaller zoo's,
so its points and the smaller zoo's are judged on the same validation members.

    python benchmarks/learning_curve.py ZOO TASK MODEL[:JSON_CONFIG] [...] [--fractions F ...] [--seeds S ...]
    python benchmarks/learning_curve.py benchmarks/out/zoos/mnist5k-large pruning 'wskan:{}' nfn --fractions 0.125 0.25 0.5 1
    python benchmarks/learning_curve.py benchmarks/out/zoos/mnist5k-xlarge pruning 'wskan:{}' --fractions 1 --val-from benchmarks/out/zoos/mnist5k-large

Prints one line per (model, fraction); writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from wskan_ext.tasks.definitions import SplitData
from wskan_ext.zoo import Zoo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attempts import fit_spec, write_json  # noqa: E402  (the same budget as attempts.py)


def first_runs(split: SplitData, fraction: float, per_run: int) -> SplitData:
    """The members of the first ``round(fraction * runs)`` runs of ``split`` (member id
    ``run * per_run + checkpoint``)."""
    runs = split.ids // per_run
    keep_runs = torch.unique(runs)[: max(1, round(fraction * len(torch.unique(runs))))]
    keep = torch.isin(runs, keep_runs)
    w = split.weights[torch.nonzero(keep).flatten()]
    return SplitData(w, split.targets[keep], split.ids[keep], split.split, split.source)


def same_recipe(big: str, small: str) -> list:
    """The validation member ids of zoo ``small``, after checking that zoo ``big`` has the same
    build config except a larger ``size`` (so member ids name the same runs) and holds those
    members bit for bit (weights and pruning masks)."""
    zb, zs = Zoo(big), Zoo(small)
    cb, cs = dict(zb.manifest["config"]), dict(zs.manifest["config"])
    if cb.pop("size") < cs.pop("size") or cb != cs:
        raise ValueError(f"--val-from {small}: not the same build config (preset and seed) as {big} with fewer runs")
    ids = zs.ids("val")
    (wb, lb, _), (ws, ls, _) = zb.load(ids=ids), zs.load(ids=ids)
    same = all(torch.equal(a, b) for a, b in zip(wb.tensors().values(), ws.tensors().values()))
    same = same and all(torch.equal(a, b) for a, b in zip(lb["prune_mask"], ls["prune_mask"]))
    if not same:
        raise ValueError(f"--val-from {small}: its validation members differ from the same ids in {big}")
    print(f"--val-from: {len(ids)} validation members of {small} are identical in {big}", flush=True)
    return ids


def run(zoo_dir: str, task: str, spec: str, fraction: float, seed: int, val_ids=None) -> dict:
    """Train ``spec`` on ``task`` with the training runs cut to ``fraction`` (and the
    validation split to the members ``val_ids``, if given)."""
    per_run = len(Zoo(zoo_dir).manifest["config"]["checkpoints"])
    sizes = {}

    def cut(splits):
        splits["train"] = first_runs(splits["train"], fraction, per_run)
        if val_ids is not None:
            v = splits["val"]
            keep = torch.isin(v.ids, torch.as_tensor(val_ids))
            if int(keep.sum()) != len(val_ids):
                raise ValueError(f"--val-from: {len(val_ids) - int(keep.sum())} of its validation members are not in "
                                 f"the validation split of {zoo_dir}")
            splits["val"] = SplitData(v.weights[torch.nonzero(keep).flatten()], v.targets[keep], v.ids[keep],
                                      v.split, v.source)
        sizes.update({s: len(d) for s, d in splits.items() if s != "test"})
        return splits

    t0 = time.perf_counter()
    res = fit_spec(zoo_dir, task, spec, seed, splits_hook=cut)
    return {"zoo": zoo_dir, "task": task, "spec": spec, "fraction": fraction, "seed": seed, "sizes": sizes,
            "val": res["metrics"]["val"], "train": res["metrics"]["train"], "best_epoch": res["best_epoch"],
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("zoo")
    ap.add_argument("task")
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--val-from", default=None, metavar="SMALL_ZOO",
                    help="validate on the validation members of this smaller zoo of the same recipe")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out",
                                                  "learning_curve.json"))
    args = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(args)
    if not all(0 < f <= 1 for f in a.fractions):
        ap.error(f"--fractions must lie in (0, 1], got {a.fractions}")
    torch.set_num_threads(1)
    val_ids = same_recipe(a.zoo, a.val_from) if a.val_from else None
    rows = []
    for spec in a.specs:
        for f in a.fractions:
            rs = [run(a.zoo, a.task, spec, f, s, val_ids) for s in a.seeds]
            primary = next(iter(rs[0]["val"]))
            vals = [r["val"][primary] for r in rs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            print(f"{spec} fraction {f}: {rs[0]['sizes']['train']} training KANs, validation {primary} "
                  f"{statistics.mean(vals):.4f} ± {sd:.4f} (train {rs[0]['train'][primary]:.4f}, best epochs "
                  f"{[r['best_epoch'] for r in rs]}, {rs[0]['seconds']:.0f} s)", flush=True)
            rows += rs
    write_json(a.out, {"command": "python benchmarks/learning_curve.py " + " ".join(args), "runs": rows})


if __name__ == "__main__":
    main()
