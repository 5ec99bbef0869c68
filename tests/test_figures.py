"""Figures: the pruning-mask legend and layer labels, shared axes of pred-vs-true scatters."""

import numpy as np
import pytest
import torch

from wskan_ext.tasks import figures as F


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_pruning_mask_figure_has_a_legend_and_layer_labels(tmp_path):
    widths = [3, 4, 2]
    E = 3 * 4 + 4 * 2
    y = torch.zeros(2, E)
    y[0, ::2] = 1
    logits = torch.where(y > 0, 1.0, -1.0)
    logits[0, 0], logits[0, 1] = -1.0, 1.0  # one of each kind of mistake
    fig = F._pruning_mask_fig(widths, y, logits, title="t", member_id=7)
    try:
        (legend,) = fig.legends  # one legend for both panels
        assert [t.get_text() for t in legend.get_texts()] == [
            "kept", "pruned", "wrong: predicted kept, truly pruned", "wrong: predicted pruned, truly kept"]
        lines = legend.get_lines()
        assert lines[3].get_linestyle() == ":" and lines[3].get_color() == "tab:red"  # what dotted red means
        labels = _texts(fig)
        for label in ("input\n(3)", "hidden 1\n(4)", "output\n(2)"):
            assert labels.count(label) == 2  # under each panel
        # the drawn edges: the two mistakes are red, solid (predicted kept) and dotted (predicted pruned)
        red = [(ln.get_linestyle(), ln.get_xydata()[0, 0]) for ln in fig.axes[1].lines if ln.get_color() == "tab:red"]
        assert sorted(red) == [("-", 0.0), (":", 0.0)]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    path = F.pruning_mask_figure(widths, y, logits, str(tmp_path / "mask.png"), "title", 7)
    assert (tmp_path / "mask.png").stat().st_size > 0 and path.endswith("mask.png")


def test_pruning_mask_figure_names_a_size_mismatch(tmp_path):
    with pytest.raises(ValueError, match=r"widths \[3, 4, 2\] have 20 edges, but the masks have 19"):
        F.pruning_mask_figure([3, 4, 2], torch.zeros(1, 19), torch.zeros(1, 19), str(tmp_path / "m.png"))


def test_shared_limits_cover_every_model():
    lo, hi = F.shared_limits(np.array([0.0, 1.0]), np.array([[2.0], [np.nan]]), pad=0.0)
    assert (lo, hi) == (0.0, 2.0)
    lo, hi = F.shared_limits(np.array([0.5, 0.5]))
    assert lo < 0.5 < hi  # a constant still gets a range


def test_scatter_models_figure_shares_axes_across_models(tmp_path, monkeypatch):
    import matplotlib.figure

    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: saved.append(self))
    rng = np.random.default_rng(0)
    y = rng.normal(size=(20, 2))
    results = {"wskan": (y, y + 0.1 * rng.normal(size=y.shape)), "mlp": (y, 3 * y + 5)}
    F.scatter_models_figure(results, str(tmp_path / "s.png"), names=["a", "b"], metrics={"wskan": {"r2": 0.9}})
    (fig,) = saved
    axes = np.array(fig.axes).reshape(2, 2)
    for c in range(2):
        lims = {(ax.get_xlim(), ax.get_ylim()) for ax in axes[:, c]}
        assert len(lims) == 1, lims  # every model's panel of a target: the same axes
        (xl, yl), = lims
        assert xl == yl  # and the identity line is the diagonal
        assert xl[1] >= (3 * y[:, c] + 5).max()  # covering the worst model
    with pytest.raises(ValueError, match="same number of targets"):
        F.scatter_models_figure({"a": (y, y), "b": (y[:, :1], y[:, :1])}, str(tmp_path / "x.png"))


def test_scatter_figure_fixed_limits(tmp_path, monkeypatch):
    import matplotlib.figure

    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: saved.append(self))
    y = np.linspace(0, 1, 10)[:, None]
    F.scatter_figure(y, y, str(tmp_path / "s.png"), limits=(-2.0, 3.0))
    F.scatter_figure(y, y, str(tmp_path / "t.png"))
    assert saved[0].axes[0].get_xlim() == (-2.0, 3.0) == saved[0].axes[0].get_ylim()
    assert saved[1].axes[0].get_xlim() == saved[1].axes[0].get_ylim()
