"""Figures of meta-learning results (matplotlib, Agg backend, written to files).

* :func:`scatter_figure` -- predicted vs true values (one panel per regression target).
* :func:`pruning_mask_figure` -- one KAN drawn as its graph, true pruning mask next to the
  predicted one (wrong edges in red).
* :func:`comparison_figure` -- a bar chart of one metric over models.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

__all__ = ["scatter_figure", "pruning_mask_figure", "comparison_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _np(t) -> np.ndarray:
    from .metrics import to_numpy

    return to_numpy(t)


def scatter_figure(y_true, y_pred, path: str, title: str = "", names: Optional[Sequence[str]] = None,
                   metrics: Optional[Dict[str, float]] = None) -> str:
    """Scatter of predicted against true values with the identity line.

    Shapes: ``y_true, y_pred: (B, C)`` (one panel per column).
    """
    plt = _plt()
    y, p = _np(y_true).reshape(len(y_true), -1), _np(y_pred).reshape(len(y_pred), -1)
    C = y.shape[1]
    fig, axes = plt.subplots(1, C, figsize=(4 * C, 3.8), squeeze=False)
    for c, ax in enumerate(axes[0]):
        ax.scatter(y[:, c], p[:, c], s=10, alpha=0.7)
        lo, hi = float(min(y[:, c].min(), p[:, c].min())), float(max(y[:, c].max(), p[:, c].max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        name = names[c] if names else f"output {c}"
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
    if metrics:
        axes[0][0].text(0.02, 0.98, "\n".join(f"{k} = {v:.4g}" for k, v in metrics.items()),
                        transform=axes[0][0].transAxes, va="top", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_kan(ax, widths, mask, ref=None, title=""):
    pos, L = {}, len(widths) - 1
    for l, n in enumerate(widths):
        for i in range(n):
            pos[(l, i)] = (l, (i - (n - 1) / 2) / max(widths))
    e = 0
    for l in range(L):
        for i in range(widths[l]):
            for j in range(widths[l + 1]):
                (x0, y0), (x1, y1) = pos[(l, i)], pos[(l + 1, j)]
                keep = mask[e] > 0.5
                wrong = ref is not None and (ref[e] > 0.5) != keep
                color = "tab:red" if wrong else ("k" if keep else "0.85")
                ax.plot([x0, x1], [y0, y1], color=color, lw=1.2 if keep or wrong else 0.4,
                        ls="-" if keep else ":", zorder=2 if wrong else 1)
                e += 1
    xs, ys = zip(*pos.values())
    ax.scatter(xs, ys, s=14, c="tab:blue", zorder=3)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def pruning_mask_figure(widths, true_masks, pred_logits, path: str, title: str = "", member_id: int = 0,
                        index: int = 0) -> str:
    """Draw KAN ``index`` of the test set twice: its true pruning mask (kept edges black,
    pruned dotted grey) and the predicted one (``logit > 0``; edges that disagree red).

    Shapes: ``true_masks (B, E)`` 0/1 and ``pred_logits (B, E)`` in KAN-graph edge order.
    """
    plt = _plt()
    y = _np(true_masks)[index]
    p = (_np(pred_logits)[index] > 0).astype(float)
    acc = float((y.round() == p).mean())
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    _draw_kan(axes[0], widths, y, title=f"true mask (zoo member {member_id}): {int(y.sum())}/{len(y)} kept")
    _draw_kan(axes[1], widths, p, ref=y, title=f"predicted: {int(p.sum())} kept, edge accuracy {acc:.3f} "
                                               f"(red = wrong)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def comparison_figure(values: Dict[str, float], errors: Optional[Dict[str, float]], path: str,
                      metric: str, title: str = "") -> str:
    """Horizontal bars of ``metric`` per model (``errors`` as error bars)."""
    plt = _plt()
    names = list(values)
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.2))
    ax.barh(names, [values[n] for n in names], xerr=[errors.get(n, 0) for n in names] if errors else None,
            color=["tab:orange" if n == "wskan" else "tab:gray" for n in names])
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
