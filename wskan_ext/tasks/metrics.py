r"""Task metrics, computed by scikit-learn and SciPy (no hand-written formulas).

===============  ===============================================  ==============================
name             definition                                       implementation
===============  ===============================================  ==============================
``mse``          :math:`\frac1{N}\sum (y - \hat y)^2` (all        ``sklearn.metrics.mean_squared_error``
                 outputs averaged)
``r2``           :math:`1 - \mathrm{SS_{res}}/\mathrm{SS_{tot}}`  ``sklearn.metrics.r2_score``
                 (uniform average over outputs)
``kendall_tau``  Kendall's :math:`\tau_b` of the first output     ``scipy.stats.kendalltau``
``accuracy``     fraction of correct labels                       ``sklearn.metrics.accuracy_score``
``f1``           F1 of the positive class (binary)                ``sklearn.metrics.f1_score``
``f1_macro``     unweighted mean of per-class F1                  ``sklearn.metrics.f1_score``
===============  ===============================================  ==============================

Binary predictions are ``logit > 0``; classification predictions are ``argmax``.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
import torch
from scipy.stats import kendalltau
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, r2_score

__all__ = ["METRICS", "compute_metrics", "predictions", "to_numpy"]


def to_numpy(t) -> np.ndarray:
    """A float64 / int64 NumPy copy of a tensor or array."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        t = t.double() if t.is_floating_point() else t.long()
        return t.numpy()
    return np.asarray(t)


def _kendall(y, p) -> float:
    y, p = np.asarray(y).reshape(len(y), -1)[:, 0], np.asarray(p).reshape(len(p), -1)[:, 0]
    if len(y) < 2:
        return float("nan")
    tau = kendalltau(y, p).statistic
    return float(tau) if tau is not None else float("nan")


METRICS = {
    "mse": lambda y, p: float(mean_squared_error(y, p)),
    "r2": lambda y, p: float(r2_score(y, p)) if len(y) >= 2 else float("nan"),
    "kendall_tau": _kendall,
    "accuracy": lambda y, p: float(accuracy_score(y, p)),
    "f1": lambda y, p: float(f1_score(y, p, zero_division=0)),
    "f1_macro": lambda y, p: float(f1_score(y, p, average="macro", zero_division=0)),
}


def predictions(kind: str, output: torch.Tensor) -> np.ndarray:
    """Model output -> predictions in label space.

    ``regression``: the output itself ``(B, C)``; ``binary``: ``(logit > 0)`` as int,
    flattened; ``classification``: ``argmax`` over the last axis ``(B,)``.
    """
    out = to_numpy(output)
    if kind == "regression":
        return out.reshape(out.shape[0], -1)
    if kind == "binary":
        return (out.reshape(-1) > 0).astype(np.int64)
    if kind == "classification":
        return out.argmax(-1).astype(np.int64)
    raise ValueError(f"unknown task kind {kind!r}")


def compute_metrics(names: Sequence[str], kind: str, targets, output) -> Dict[str, float]:
    """Metrics ``names`` of raw model ``output`` against ``targets``.

    Shapes: regression ``targets (B, C)``, ``output (B, C)``; binary ``targets (B, E)``
    (0/1), ``output (B, E)`` logits; classification ``targets (B,)``, ``output (B, K)``.
    """
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; available {sorted(METRICS)}")
    y = to_numpy(targets)
    if not np.isfinite(np.asarray(y, dtype=float)).all():
        bad = int((~np.isfinite(np.asarray(y, dtype=float))).sum())
        raise ValueError(f"compute_metrics: {bad} target value(s) are NaN/Inf (e.g. a NaN pruning mask or label "
                         "in the zoo); rebuild the zoo or exclude those members")
    if not torch.isfinite(torch.as_tensor(output)).all():
        raise ValueError("compute_metrics: the model's outputs contain NaN/Inf: training diverged "
                         "(lower the learning rate, e.g. --lr)")
    p = predictions(kind, output)
    if kind == "binary":
        y = y.reshape(-1).round().astype(np.int64)
    elif kind == "regression":
        y = y.reshape(y.shape[0], -1)
    if len(y) != len(p):
        raise ValueError(f"compute_metrics: {len(y)} targets but {len(p)} predictions")
    out = {}
    for n in names:
        v = METRICS[n](y, p)
        out[n] = v if math.isfinite(v) else float("nan")
    return out
