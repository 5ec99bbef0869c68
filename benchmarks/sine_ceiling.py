"""How much of (a, b) does a sine KAN's *function* still determine?  A ceiling for the sine task.

Each member of a sine zoo is a KAN fitted to :math:`a \\sin(b x)` on the dataset's points. The
fit is not exact, so part of the label is not in the KAN at all. This script reads the KAN's
function on the dataset's own points (a probe that no weight-space model gets) and fits
:math:`\\hat a \\sin(\\hat b x)` to it by least squares: a grid over ``b`` with the optimal ``a``
in closed form for each, then :func:`scipy.optimize.minimize_scalar` around the best grid
point. The error of :math:`(\\hat a, \\hat b)` against the label, in the task's own metrics
(:data:`wskan_ext.tasks.metrics.METRICS`, mse and R² averaged over ``a`` and ``b``), is what an
oracle that decodes the function perfectly reaches. Compared with the validation figures of the
models in ``--results`` (the best epoch's, as recorded by ``benchmarks/results.py``), it shows
whether the models are near that ceiling. Labels and KAN outputs only; the default split is
validation, so no test figure is read.

    python benchmarks/sine_ceiling.py --zoo benchmarks/out/zoos/sine-xlarge \\
        --results benchmarks/out/results_sine_xlarge.json --md docs/sine_ceiling.inc
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from wskan_ext.tasks.metrics import METRICS
from wskan_ext.zoo import BuildConfig, Zoo
from wskan_ext.zoo.build import load_dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import output_args, write_report  # noqa: E402


def _residual(b: float, x: np.ndarray, y: np.ndarray) -> tuple:
    """Least-squares ``a`` for a fixed ``b`` and the squared residual.  ``x, y: (points,)``."""
    s = np.sin(b * x)
    ss = float(s @ s)
    a = float(s @ y) / ss if ss > 0 else 0.0
    r = y - a * s
    return a, float(r @ r)


def fit_sines(x: torch.Tensor, y: torch.Tensor, b_range, step: float = 1e-3) -> np.ndarray:
    """Fit ``a sin(b x)`` to each row of ``y``.

    Shapes: ``x (points,)``, ``y (n, points)`` -> ``(n, 2)`` columns ``(a, b)``.
    """
    lo, hi = b_range[0] - 0.5, b_range[1] + 0.5
    bs = torch.arange(lo, hi + step, step, dtype=torch.float64)
    s = torch.sin(bs[:, None] * x[None, :])                        # (nb, points)
    ss = (s * s).sum(1)                                           # (nb,)
    out = np.empty((len(y), 2))
    xn = x.numpy()
    for start in range(0, len(y), 256):
        yy = y[start:start + 256]                                 # (c, points)
        proj = yy @ s.T                                           # (c, nb)
        err = (yy * yy).sum(1, keepdim=True) - proj ** 2 / ss     # residual for the best a per b
        best = bs[err.argmin(1)].numpy()
        for i, b0 in enumerate(best):
            yi = yy[i].numpy()
            res = minimize_scalar(lambda b: _residual(b, xn, yi)[1], bounds=(b0 - step, b0 + step),
                                  method="bounded", options={"xatol": 1e-10})
            out[start + i] = (_residual(res.x, xn, yi)[0], res.x)
    return out


def model_rows(path: str) -> dict:
    """Validation mse / R² per model (mean ± std over the recorded seeds) from a results JSON."""
    runs = json.load(open(path))["runs"]
    rows = {}
    for m in dict.fromkeys(r["model"] for r in runs):
        v = [r["val"] for r in runs if r["model"] == m]
        rows[m] = {k: (statistics.mean(x[k] for x in v), statistics.pstdev(x[k] for x in v)) for k in ("mse", "r2")}
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--results", help="a results JSON of benchmarks/results.py on this zoo (validation figures)")
    output_args(ap, "sine_ceiling")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    zoo = Zoo(a.zoo)
    cfg = BuildConfig(**zoo.manifest["config"])
    if cfg.dataset != "sine":
        raise SystemExit(f"{a.zoo} is a {cfg.dataset!r} zoo; this ceiling is for sine zoos")
    data = load_dataset(cfg)
    x = data.coords[:, 0].double()
    w = zoo.weights(split=a.split).map(lambda t: t.double())
    labels = zoo.labels(split=a.split)
    y_true = torch.stack([labels["a"], labels["b"]], 1).double().numpy()
    with torch.no_grad():
        f = w(x[:, None])[..., 0]                                  # (n, points)
    fitted = fit_sines(x, f, cfg.sine_b)
    oracle = {k: METRICS[k](y_true, fitted) for k in ("mse", "r2")}
    per_label = {nm: {k: METRICS[k](y_true[:, i], fitted[:, i]) for k in ("mse", "r2")} for i, nm in enumerate("ab")}
    name = os.path.basename(os.path.normpath(a.zoo))
    cmd = "python benchmarks/sine_ceiling.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"command: {cmd.strip()}", f"zoo: {name}, split {a.split!r}: {len(y_true)} members, "
             f"{len(x)} points", "",
             f"{'':<44s} {'mse':>9s} {'r2':>8s}",
             f"{'oracle: least-squares fit to the KAN function':<44s} {oracle['mse']:9.5f} {oracle['r2']:8.4f}"]
    lines += [f"{'  of which ' + nm:<44s} {v['mse']:9.5f} {v['r2']:8.4f}" for nm, v in per_label.items()]
    models = model_rows(a.results) if a.results else {}
    if models:
        lines += ["", f"validation figures from {a.results} (mean ± std over seeds):"]
        lines += [f"  {m:<42s} {v['mse'][0]:9.5f} {v['r2'][0]:8.4f}   (± {v['mse'][1]:.5f}, ± {v['r2'][1]:.4f})"
                  for m, v in models.items()]
    lines += ["", f"wall time {time.time() - t0:.0f} s, {a.threads} thread(s)"]
    write_report(a, "\n".join(lines), {"zoo": name, "split": a.split, "oracle": oracle, "per_label": per_label,
                                       "models": models})
    return 0


if __name__ == "__main__":
    sys.exit(main())
