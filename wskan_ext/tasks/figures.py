"""Figures of meta-learning results (matplotlib, Agg backend, written to files).

* :func:`scatter_figure` -- predicted vs true values of one model (one panel per regression
  target; ``limits`` fixes the axes, e.g. to compare figures of several models).
* :func:`scatter_models_figure` -- the same for several models in one figure, one row per
  model, every panel of a target on the same axes (:func:`shared_limits`).
* :func:`pruning_mask_figure` -- one KAN drawn as its graph, true pruning mask next to the
  predicted one, with a legend (kept, pruned, wrong in both directions) and layer labels.
* :func:`comparison_figure` -- a bar chart of one metric over models.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = ["scatter_figure", "scatter_models_figure", "shared_limits", "pruning_mask_figure", "comparison_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _np(t) -> np.ndarray:
    from .metrics import to_numpy

    return to_numpy(t)


def _columns(t) -> np.ndarray:
    a = _np(t)
    return a.reshape(len(a), -1)


def shared_limits(*arrays, pad: float = 0.05) -> Tuple[float, float]:
    """One ``(lo, hi)`` range covering every finite value of ``arrays`` (true and predicted
    values alike, so the identity line is the diagonal), widened by ``pad`` of its span."""
    vals = np.concatenate([np.asarray(_np(a), dtype=float).ravel() for a in arrays])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return (0.0, 1.0)
    lo, hi = float(vals.min()), float(vals.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return (lo - pad * span, hi + pad * span)


def _limits_for(limits, c: int):
    if limits is None:
        return None
    if len(limits) == 2 and np.isscalar(limits[0]):
        return (float(limits[0]), float(limits[1]))
    return tuple(map(float, limits[c]))


def _scatter_panel(ax, y, p, lims, name: str, xlabel: bool = True, ylabel: bool = True):
    ax.scatter(y, p, s=10, alpha=0.7)
    lo, hi = lims
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    if xlabel:
        ax.set_xlabel(f"true {name}")
    if ylabel:
        ax.set_ylabel(f"predicted {name}")


def scatter_figure(y_true, y_pred, path: str, title: str = "", names: Optional[Sequence[str]] = None,
                   metrics: Optional[Dict[str, float]] = None, limits=None) -> str:
    """Scatter of predicted against true values with the identity line.

    Shapes: ``y_true, y_pred: (B, C)`` (one panel per column). Each panel has the same range
    on both axes: ``limits`` -- one ``(lo, hi)`` for every panel or one per column, e.g.
    :func:`shared_limits` of several models' values so that their figures compare -- or,
    by default, the range of the panel's own values.
    """
    plt = _plt()
    y, p = _columns(y_true), _columns(y_pred)
    C = y.shape[1]
    fig, axes = plt.subplots(1, C, figsize=(4 * C, 3.8), squeeze=False)
    for c, ax in enumerate(axes[0]):
        lims = _limits_for(limits, c) or shared_limits(y[:, c], p[:, c])
        _scatter_panel(ax, y[:, c], p[:, c], lims, names[c] if names else f"output {c}")
    if metrics:
        axes[0][0].text(0.02, 0.98, "\n".join(f"{k} = {v:.4g}" for k, v in metrics.items()),
                        transform=axes[0][0].transAxes, va="top", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scatter_models_figure(results: Dict[str, Tuple[object, object]], path: str, title: str = "",
                          names: Optional[Sequence[str]] = None,
                          metrics: Optional[Dict[str, Dict[str, float]]] = None) -> str:
    """Predicted against true values of several models: one row per model, one column per
    target, every panel of a column on the **same axes** (the range of all models' true and
    predicted values of that target), so that the models compare at a glance.

    Args:
        results: model name -> ``(y_true, y_pred)``, each ``(B, C)`` (the same ``C`` for all).
        metrics: model name -> ``{metric: value}``, printed in the model's first panel.
    """
    if not results:
        raise ValueError("scatter_models_figure needs at least one model")
    plt = _plt()
    data = {m: (_columns(t), _columns(q)) for m, (t, q) in results.items()}
    C = {y.shape[1] for y, _ in data.values()}
    if len(C) != 1:
        raise ValueError(f"every model needs the same number of targets, got {sorted(C)}")
    C = C.pop()
    lims = [shared_limits(*[a[:, c] for y, p in data.values() for a in (y, p)]) for c in range(C)]
    R = len(data)
    fig, axes = plt.subplots(R, C, figsize=(3.6 * C, 3.3 * R), squeeze=False, sharex="col", sharey="col")
    for r, (model, (y, p)) in enumerate(data.items()):
        for c in range(C):
            name = names[c] if names else f"output {c}"
            _scatter_panel(axes[r][c], y[:, c], p[:, c], lims[c], name, xlabel=r == R - 1, ylabel=True)
            if c == 0:
                axes[r][c].set_ylabel(f"{model}\npredicted {name}")
        if metrics and model in metrics:
            axes[r][0].text(0.02, 0.98, "\n".join(f"{k} = {v:.4g}" for k, v in metrics[model].items()),
                            transform=axes[r][0].transAxes, va="top", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: how :func:`pruning_mask_figure` draws an edge: (colour, line width, line style)
_KEPT, _PRUNED = ("k", 1.2, "-"), ("0.65", 0.7, ":")
_WRONG_KEPT, _WRONG_PRUNED = ("tab:red", 1.4, "-"), ("tab:red", 1.4, ":")


def _layer_names(widths) -> list:
    L = len(widths) - 1
    return [f"{'input' if l == 0 else 'output' if l == L else f'hidden {l}'}\n({n})" for l, n in enumerate(widths)]


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
                color, lw, ls = (_WRONG_KEPT if keep else _WRONG_PRUNED) if wrong else (_KEPT if keep else _PRUNED)
                ax.plot([x0, x1], [y0, y1], color=color, lw=lw, ls=ls, zorder=2 if wrong else 1)
                e += 1
    xs, ys = zip(*pos.values())
    ax.scatter(xs, ys, s=14, c="tab:blue", zorder=3)
    half = (max(widths) - 1) / 2 / max(widths)
    for l, label in enumerate(_layer_names(widths)):  # layer labels under each column of neurons
        ax.text(l, -half - 0.06, label, ha="center", va="top", fontsize=8)
    ax.set_xlim(-0.3, L + 0.3)
    ax.set_ylim(-half - 0.22, half + 0.06)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def _legend_handles():
    from matplotlib.lines import Line2D

    def line(style, label):
        color, lw, ls = style
        return Line2D([], [], color=color, lw=max(lw, 1.2), ls=ls, label=label)

    return [line(_KEPT, "kept"), line(_PRUNED, "pruned"), line(_WRONG_KEPT, "wrong: predicted kept, truly pruned"),
            line(_WRONG_PRUNED, "wrong: predicted pruned, truly kept")]


def _pruning_mask_fig(widths, true_masks, pred_logits, title: str = "", member_id: int = 0, index: int = 0):
    plt = _plt()
    y = _np(true_masks)[index]
    p = (_np(pred_logits)[index] > 0).astype(float)
    expected = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    if len(y) != expected or len(p) != expected:
        raise ValueError(f"pruning_mask_figure: widths {list(widths)} have {expected} edges, but the masks have "
                         f"{len(y)} (true) and {len(p)} (predicted)")
    acc = float((y.round() == p).mean())
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.0))
    _draw_kan(axes[0], widths, y, title=f"true mask (zoo member {member_id}): {int(y.sum())}/{len(y)} kept")
    _draw_kan(axes[1], widths, p, ref=y, title=f"predicted: {int(p.sum())} kept, edge accuracy {acc:.3f}")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the legend below both panels
    fig.legend(handles=_legend_handles(), loc="lower center", ncol=4, fontsize=8, frameon=False)
    return fig


def pruning_mask_figure(widths, true_masks, pred_logits, path: str, title: str = "", member_id: int = 0,
                        index: int = 0) -> str:
    """Draw KAN ``index`` of the test set twice, neurons in the same order in both panels:
    its true pruning mask and the predicted one (``logit > 0``). Legend: kept edges solid
    black, pruned edges dotted grey; a wrong prediction is red -- solid red where an edge is
    predicted kept but truly pruned, **dotted red** where it is predicted pruned but truly
    kept. Each column of neurons is labelled with its layer (input, hidden l, output) and width.

    Shapes: ``true_masks (B, E)`` 0/1 and ``pred_logits (B, E)`` in KAN-graph edge order.
    """
    plt = _plt()
    fig = _pruning_mask_fig(widths, true_masks, pred_logits, title, member_id, index)
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
