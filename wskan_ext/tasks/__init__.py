"""Meta-learning tasks on KAN zoos: definitions, metrics, meta-models, training, the demo.

Typical use::

    from wskan_ext.tasks import fit, TrainConfig

    res = fit("demo_zoo", "accuracy", "wskan", TrainConfig(epochs=50), out_dir="runs/acc")
    res["metrics"]["test"]   # {"mse": ..., "r2": ..., "kendall_tau": ...}
"""

from .definitions import (TASKS, SplitData, TaskSpec, edge_targets, get_task, load_split, load_splits,
                          load_training_split)
from .metrics import METRICS, compute_metrics
from .models import DEFAULTS, MODELS, MetaModel, build_meta_model, check_compatible
from .train import TrainConfig, fit, predict

__all__ = [
    "TASKS", "TaskSpec", "SplitData", "get_task", "load_split", "load_splits", "load_training_split", "edge_targets",
    "METRICS", "compute_metrics",
    "MODELS", "DEFAULTS", "MetaModel", "build_meta_model", "check_compatible",
    "TrainConfig", "fit", "predict",
]
