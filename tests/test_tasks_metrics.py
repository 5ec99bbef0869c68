"""Metrics equal scikit-learn / SciPy; edge-label permutation and the magnitude heuristic."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import kendalltau
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, r2_score

from wskan_ext.equivariance_tests.profiles import examples
from wskan_ext import KAN, permute_hidden
from wskan_ext.kan import random_hidden_permutations
from wskan_ext.nn.baselines import MagnitudeHeuristic, edge_magnitudes, permute_edge_labels, weight_statistics
from wskan_ext.tasks import compute_metrics, edge_targets

Y = np.array([[0.1], [0.5], [0.3], [0.9], [0.7], [0.2]])
P = np.array([[0.15], [0.4], [0.35], [0.8], [0.75], [0.1]])


def test_regression_metrics_match_sklearn_scipy():
    m = compute_metrics(("mse", "r2", "kendall_tau"), "regression", torch.tensor(Y), torch.tensor(P))
    assert m["mse"] == pytest.approx(mean_squared_error(Y, P), rel=1e-12)
    assert m["r2"] == pytest.approx(r2_score(Y, P), rel=1e-12)
    assert m["kendall_tau"] == pytest.approx(kendalltau(Y[:, 0], P[:, 0]).statistic, rel=1e-12)
    # negative twin: negated predictions flip tau exactly and worsen MSE
    r = compute_metrics(("mse", "kendall_tau"), "regression", torch.tensor(Y), torch.tensor(-P))
    assert r["kendall_tau"] == pytest.approx(-m["kendall_tau"]) and m["kendall_tau"] > 0.5
    assert r["mse"] > m["mse"]


def test_two_output_regression_averages_outputs():
    y = np.stack([Y[:, 0], 2 * Y[:, 0] + 1], 1)
    p = np.stack([P[:, 0], 2 * P[:, 0] + 0.9], 1)
    m = compute_metrics(("mse", "r2"), "regression", torch.tensor(y), torch.tensor(p))
    assert m["mse"] == pytest.approx(mean_squared_error(y, p), rel=1e-12)
    assert m["r2"] == pytest.approx(r2_score(y, p), rel=1e-12)


def test_binary_and_classification_metrics_match_sklearn():
    y = torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0]], dtype=torch.float32)
    logits = torch.tensor([[2.0, -1.0, -0.5, 3.0], [0.5, -2.0, 1.0, -1.0]])
    m = compute_metrics(("accuracy", "f1"), "binary", y, logits)
    yp = (logits.numpy().ravel() > 0).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(y.numpy().ravel(), yp))
    assert m["f1"] == pytest.approx(f1_score(y.numpy().ravel(), yp))
    assert m["accuracy"] == pytest.approx(6 / 8)  # negative twin of a trivial metric: not 1
    yc = torch.tensor([0, 2, 1, 2, 0])
    out = torch.tensor([[3.0, 0, 0], [0, 1, 2], [0, 5, 1], [1, 0, 0], [2, 1, 0]])
    mc = compute_metrics(("accuracy", "f1_macro"), "classification", yc, out)
    pc = out.argmax(1).numpy()
    assert mc["accuracy"] == pytest.approx(accuracy_score(yc.numpy(), pc))
    assert mc["f1_macro"] == pytest.approx(f1_score(yc.numpy(), pc, average="macro"))


def test_unknown_metric_and_length_mismatch_raise():
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(("auc",), "regression", torch.tensor(Y), torch.tensor(P))
    with pytest.raises(ValueError, match="6 targets but 5 predictions"):
        compute_metrics(("mse",), "regression", torch.tensor(Y), torch.tensor(P[:5]))


@st.composite
def kans_and_perms(draw):
    widths = draw(st.lists(st.integers(1, 4), min_size=3, max_size=4))
    B = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    w = KAN(widths, grid=3, k=2, num_models=B, generator=torch.Generator().manual_seed(seed)).weights(detach=True)
    g = torch.Generator().manual_seed(seed + 1)
    labels = [(torch.rand(m.shape, generator=g) > 0.5).float() for m in w.mask]
    return w, labels, random_hidden_permutations(w, g, per_model=True)


@settings(max_examples=examples(10))
@given(kans_and_perms())
def test_permute_edge_labels_moves_labels_like_permute_hidden(case):
    w, labels, perms = case
    # carry the labels in the mask field: permute_hidden moves it as an edge tensor
    carried = w.map(lambda t: t)
    carried.mask = [lab.clone() for lab in labels]
    moved = permute_hidden(carried, perms)
    got = permute_edge_labels(edge_targets(labels), w.widths, perms)
    assert torch.equal(got, edge_targets(moved.mask))


def test_permute_edge_labels_negative_twin():
    w = KAN([2, 3, 2], grid=3, k=2, num_models=1, generator=torch.Generator().manual_seed(0)).weights(detach=True)
    y = torch.arange(w.widths[0] * 3 + 3 * 2, dtype=torch.float32).unsqueeze(0)
    perm = [torch.tensor([[1, 2, 0]])]
    assert not torch.equal(permute_edge_labels(y, w.widths, perm), y)  # a non-identity perm moves labels
    inv = [torch.argsort(perm[0], dim=1)]
    assert torch.equal(permute_edge_labels(permute_edge_labels(y, w.widths, perm), w.widths, inv), y)


def test_magnitude_threshold_is_optimal_on_train():
    g = torch.Generator().manual_seed(0)
    mags = torch.rand(20, 6, generator=g)
    labels = ((mags + 0.2 * torch.randn(20, 6, generator=g)) > 0.5).float()
    h = MagnitudeHeuristic([2, 3]).fit(mags, labels)
    acc = float(((h.logits(mags) > 0).float() == labels).float().mean())
    best = max(float(((mags > t).float() == labels).float().mean()) for t in torch.cat([mags.flatten(), torch.tensor([-1.0])]))
    assert acc == pytest.approx(best)
    h.thresholds[:] = 10.0  # negative twin: a bad threshold is worse
    assert float(((h.logits(mags) > 0).float() == labels).float().mean()) < acc


def test_statistics_and_magnitudes_are_hidden_permutation_invariant():
    w = KAN([3, 4, 2], grid=3, k=2, num_models=2, generator=torch.Generator().manual_seed(1)).weights(detach=True).double()
    perms = random_hidden_permutations(w, torch.Generator().manual_seed(2), per_model=True)
    p = permute_hidden(w, perms)
    torch.testing.assert_close(weight_statistics(p), weight_statistics(w), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(permute_edge_labels(edge_magnitudes(w), w.widths, perms), edge_magnitudes(p),
                               rtol=1e-12, atol=1e-12)
    assert not torch.allclose(edge_magnitudes(p), edge_magnitudes(w))  # negative twin: order changes


def test_nan_pruning_mask_gets_a_clear_error_not_sklearns():
    """Issue 14.5: a NaN pruning mask gave scikit-learn's 'Input contains NaN'."""
    from wskan_ext.tasks.metrics import compute_metrics

    y = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"target value\(s\) are NaN/Inf .*pruning mask"):
        compute_metrics(["accuracy", "f1"], "binary", y, torch.zeros(2, 2))
    assert compute_metrics(["accuracy"], "binary", torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, -1.0]]))["accuracy"] == 1.0


def test_diverged_training_names_the_divergence():
    """Issue 14.5: `train --lr 1e6` ended in 'Input contains NaN.' without naming the divergence."""
    from wskan_ext.tasks.metrics import compute_metrics

    with pytest.raises(ValueError, match="training diverged .*lower the learning rate"):
        compute_metrics(["mse", "r2"], "regression", torch.ones(3, 1), torch.tensor([[1.0], [float("nan")], [0.0]]))


def test_group_standardizer_normalises_each_layer_on_its_own():
    from wskan_ext.tasks.models import _group_standardizer

    g = torch.Generator().manual_seed(0)
    group = torch.tensor([0, 0, 0, 1, 1])
    t = torch.randn(7, 5, 3, generator=g, dtype=torch.float64)
    t[:, 3:] = 100 + 10 * t[:, 3:]  # the second "layer" lives on another scale
    mean, std = _group_standardizer(t, group)
    z = (t - mean) / std
    for k in (0, 1):
        block = z[:, group == k]
        assert torch.allclose(block.mean((0, 1)), torch.zeros(3, dtype=t.dtype), atol=1e-12)
        assert torch.allclose(block.std((0, 1), unbiased=False), torch.ones(3, dtype=t.dtype), atol=1e-12)
    # negative twin: one statistic over both layers leaves each layer far from standard
    flat = (t - t.mean((0, 1))) / t.std((0, 1), unbiased=False)
    assert not torch.allclose(flat[:, group == 1].mean((0, 1)), torch.zeros(3, dtype=t.dtype), atol=0.1)
