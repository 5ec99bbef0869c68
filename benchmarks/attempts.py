"""One model configuration on one zoo task, seed 0: validation (and training) metrics and
time (the test split is not predicted: attempts are judged on validation only). With
``--seeds S [S ...]`` (after the specs) each configuration is trained once per seed and the
validation metrics are printed per seed and as mean ± std.

The design attempts for WS-KAN in ``docs/tutorials/tasks.rst`` ("Attempts") were measured with this
script, one command per row; every model gets the same budget (30 epochs, batch 64,
patience 10 unless given).

    python benchmarks/attempts.py ZOO TASK MODEL[:JSON_CONFIG] [MODEL[:JSON_CONFIG] ...]
    python benchmarks/attempts.py benchmarks/out/zoos/mnist5k-inr inr_class nfn 'wskan:{"layers": 4, "dropout": 0.1}'
    python benchmarks/attempts.py benchmarks/out/zoos/sine sine nfn 'wskan:{}' --seeds 0 1 2

Keys ``epochs``, ``batch_size``, ``patience``, ``lr``, ``weight_decay``, ``schedule``, ``precision``, ``augment``, ``rank_weight``, ``rank_temperature``, ``ema``, ``aux_points``, ``aux_weight``, ``loss_units``, ``aux_task``, ``aux_task_weight``, ``warmup`` of the
JSON go to :class:`~wskan_ext.tasks.TrainConfig`, the others to the model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from unittest import mock

import torch

import wskan_ext.tasks.train as train_mod
from wskan_ext.tasks import TrainConfig, fit

TRAIN_KEYS = ("epochs", "batch_size", "patience", "lr", "weight_decay", "schedule", "precision", "augment", "rank_weight",
              "rank_temperature", "ema", "aux_points", "aux_weight", "loss_units",
              "aux_task", "aux_task_weight", "warmup")


def fit_spec(zoo: str, task: str, spec: str, seed: int = 0, splits_hook=None) -> dict:
    """Train one ``MODEL[:JSON_CONFIG]`` spec on ``task`` with this script's budget (30 epochs,
    batch 64, patience 10 unless the JSON says otherwise; its ``TRAIN_KEYS`` go to
    :class:`TrainConfig`, the rest to the model) without reading the test split; returns
    :func:`fit`'s result. ``splits_hook(splits) -> splits``, if given, rewrites the loaded
    ``{"train", "val", "test"}`` splits before training (the diagnosis scripts' variations:
    fewer training runs, soft targets)."""
    model, _, cfg = spec.partition(":")
    kw = json.loads(cfg) if cfg else {}
    tc = {"epochs": 30, "patience": 10, "batch_size": 64, **{k: kw.pop(k) for k in list(kw) if k in TRAIN_KEYS}}
    config = TrainConfig(seed=seed, progress=False, model=kw, **tc)
    if splits_hook is None:
        return fit(zoo, task, model, config, read_test=False)
    load_splits = train_mod.load_splits
    with mock.patch.object(train_mod, "load_splits", lambda z, t: splits_hook(load_splits(z, t))):
        return fit(zoo, task, model, config, read_test=False)


def spec_parser(doc: str, name: str) -> argparse.ArgumentParser:
    """The command line of the diagnosis scripts: ``ZOO MODEL[:JSON] [...] [--out JSON]``
    (default ``benchmarks/out/<name>.json``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("zoo")
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", f"{name}.json"))
    return ap


def write_json(path: str, obj: dict) -> None:
    """Write ``obj`` to ``path`` (folders created) and say so."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
    print(f"written {path}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    torch.set_num_threads(1)
    seeds = [0]
    if "--seeds" in argv:
        i = argv.index("--seeds")
        try:
            argv, seeds = argv[:i], [int(v) for v in argv[i + 1:]]
        except ValueError:
            print(f"--seeds takes integers and comes last, got {argv[i + 1:]}")
            return 2
        if not seeds:
            print("--seeds needs at least one seed")
            return 2
    zoo, task = argv[0], argv[1]
    options = [v for v in argv[2:] if v.startswith("--")]
    if options:
        print(f"unknown option {options[0]!r}: attempts.py takes ZOO TASK MODEL[:JSON] ... [--seeds S ...] "
              f"(--seeds last; results are printed, not written)")
        return 2
    fmt = lambda d: {k: round(v, 4) for k, v in d.items()}  # noqa: E731
    for spec in argv[2:]:
        vals = []
        for seed in seeds:
            t = time.time()
            r = fit_spec(zoo, task, spec, seed)
            vals.append(r["metrics"]["val"])
            print(spec, f"seed {seed}" if len(seeds) > 1 else "", "val", fmt(r["metrics"]["val"]), "train",
                  fmt(r["metrics"]["train"]), f"{time.time() - t:.0f}s best_epoch {r['best_epoch']}",
                  *(["aux mse", fmt(r["aux_mse"])] if "aux_mse" in r else []), flush=True)
        if len(seeds) > 1:
            print(spec, f"val over seeds {seeds}:", "  ".join(
                f"{k} {statistics.mean(v[k] for v in vals):.4f} ± {statistics.stdev(v[k] for v in vals):.4f}"
                for k in vals[0]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
