"""DWSNets / Neural Graphs / ScaleGMN tuple format (wskan_ext.adapters.dws)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples
from torch import nn

from wskan_ext import KANWeights, permute_hidden
from wskan_ext.adapters.dws import (
    from_dws,
    kans_from_dws_mlps,
    mlps_from_dws,
    mlps_to_dws,
    to_dws,
)
from wskan_ext.equivariance_tests import strategies as kst
from wskan_ext.kan import random_hidden_permutations
from wskan_ext.kan.weights import layer_forward

F64 = torch.float64


def kans(min_depth=1):
    """Random KANs (depth min_depth..3, widths 1..5, per-layer G 1..5 and k 1..3, unbatched
    or 1/3 models, 15 % of the edges masked, jittered per-neuron grids)."""
    return kst.kan_weights(min_depth=min_depth, max_depth=3, max_width=5, grid_sizes=(1, 5), k=(1, 3),
                           per_layer=True, num_models=st.sampled_from([None, 1, 3]), mask_prob=0.15)


@given(kans(), st.sampled_from([F64, torch.float32]))
def test_raw_round_trip_is_bitwise(w, dtype):
    w = w.to(dtype)
    d = to_dws(w, features="raw")
    assert d.layer_layout == w.widths
    C = d.layout.channels
    for l, (e, v) in enumerate(zip(d.weights, d.biases)):
        B = w.num_models or 1
        assert e.shape == (B, w.widths[l], w.widths[l + 1], C) and v.shape == (B, w.widths[l + 1], C)
        assert e.dtype == dtype
    back = from_dws(d.weights, d.biases, d.layout)
    assert back.equal(w.unsqueeze())


@given(kans())
def test_channel_meaning(w):
    d = to_dws(w, features="raw")
    wb = w.unsqueeze()
    for l in range(w.depth):
        nb, K = w.num_basis[l], w.grid[l].shape[-1]
        e = d.weights[l]
        names = d.layout.edge_channel_names(l)
        assert names[nb:nb + 3] == ["scale_base", "scale_sp", "mask"]
        assert torch.equal(e[..., :nb], wb.coef[l])
        assert torch.equal(e[..., nb], wb.scale_base[l]) and torch.equal(e[..., nb + 2], wb.mask[l])
        for j in range(w.widths[l + 1]):  # the source neuron's grid on each of its edges
            assert torch.equal(e[:, :, j, nb + 3:nb + 3 + K], wb.grid[l])
        assert torch.all(e[..., nb + 3 + K:] == 0)  # zero padding
        assert torch.equal(d.biases[l][..., 0], wb.node_scale[l])
        assert torch.equal(d.biases[l][..., 1], wb.node_bias[l])


@given(kans())
def test_canonical_round_trip_same_function(w):
    d = to_dws(w)  # canonical
    assert torch.equal(d.weights[0][..., : w.num_basis[0] + 1], w.unsqueeze().edge_features()[0])
    back = from_dws(d.weights, d.biases, d.layout)
    x = 3 * torch.randn(4, 17, w.widths[0], generator=torch.Generator().manual_seed(0), dtype=F64)
    x = x[: back.num_models]
    assert torch.equal(back(x), w.unsqueeze()(x))
    # negative twin: the weights themselves differ (scale_sp folded into coef)
    assert not back.equal(w.unsqueeze())


@settings(max_examples=examples(10))
@given(kans(min_depth=2), st.sampled_from(["raw", "canonical", "values"]))
def test_hidden_permutation_acts_on_axes(w, features):
    """to_dws(permute_hidden(w, p)) is to_dws(w) with rows/columns permuted; without
    the grid rows (permute_grid=False) it is not."""
    p = random_hidden_permutations(w, torch.Generator().manual_seed(1))
    d = to_dws(w, features=features)
    dp = to_dws(permute_hidden(w, p), features=features)
    for l in range(w.depth):
        e, v = d.weights[l], d.biases[l]
        if l > 0:
            e = e[:, p[l - 1]]
        if l < w.depth - 1:
            e, v = e[:, :, p[l]], v[:, p[l]]
        assert torch.allclose(dp.weights[l], e, rtol=0, atol=1e-13) and torch.equal(dp.biases[l], v)
    moved = [torch.roll(torch.arange(n), 1) for n in w.widths[1:-1]]
    if any(n > 1 for n in w.widths[1:-1]):
        bad = to_dws(permute_hidden(w, moved, permute_grid=False), features=features)
        good = to_dws(permute_hidden(w, moved), features=features)
        assert any(not torch.equal(a, b) for a, b in zip(bad.weights, good.weights))


def test_values_channels_match_layer_forward():
    w = kst.random_kan({"widths": [3, 4, 2], "grid_sizes": [5, 3], "k": [3, 2]}, 0, num_models=2, mask_prob=0.15,
                       random_grid=False, grid_range=(-1, 1))  # pykan's uniform grids on [-1, 1]
    d = to_dws(w, features="values", num_points=9)
    assert d.layout.edge_channel_names(0)[-2:] == ["lo", "hi"]
    pts = torch.linspace(-1, 1, 9, dtype=F64)
    y = layer_forward(w, 0, pts[:, None].expand(9, 3))  # (B, P, m)
    pre = d.weights[0][..., :9].sum(dim=1).transpose(-1, -2)  # sum_i phi_ij(x_p)
    assert torch.allclose(w.node_scale[0][:, None] * pre + w.node_bias[0][:, None], y, atol=1e-12)
    assert torch.equal(d.weights[0][..., 9], torch.full((2, 3, 4), -1.0, dtype=F64))
    with pytest.raises(ValueError, match="cannot be inverted"):
        from_dws(d.weights, d.biases, d.layout)


def test_errors_name_layer_and_shape():
    w = kst.random_kan({"widths": [2, 3, 1], "grid_sizes": 3, "k": 1}, 0, num_models=2, mask_prob=0.15)
    d = to_dws(w, features="raw")
    bad = (d.weights[0], d.weights[1][:, :2])
    with pytest.raises(ValueError, match=r"layer 1: weights must have shape \(B, 3, 1,"):
        from_dws(bad, d.biases, d.layout)
    with pytest.raises(ValueError, match="features must be one of"):
        to_dws(w, features="coefs")
    other = kst.random_kan({"widths": [2, 3, 1], "grid_sizes": [4, 3], "k": 1}, 0, num_models=2, mask_prob=0.15)
    from wskan_ext.adapters.dws import encode_channels

    with pytest.raises(ValueError, match="channel layout is for"):
        encode_channels(other, d.layout)
    with pytest.raises(TypeError, match="no registered KAN family"):
        to_dws(object())


# ------------------------------------------------------------------ MLP zoos
def _mlps(widths, B, seed, act=nn.ReLU):
    torch.manual_seed(seed)  # test-only: nn.Linear's own initialiser
    out = []
    for _ in range(B):
        mods = []
        for l in range(len(widths) - 1):
            mods.append(nn.Linear(widths[l], widths[l + 1], dtype=F64))
            if l < len(widths) - 2:
                mods.append(act())
        out.append(nn.Sequential(*mods))
    return out


def test_mlp_zoo_dws_round_trip():
    mlps = _mlps([3, 7, 5, 2], 4, 0)
    weights, biases, layout = mlps_to_dws(mlps)
    assert layout == [3, 7, 5, 2]
    assert weights[1].shape == (4, 7, 5, 1) and biases[1].shape == (4, 5, 1)
    assert torch.equal(weights[1][2, :, :, 0], mlps[2][2].weight.T)
    back = mlps_from_dws(weights, biases)
    x = torch.randn(10, 3, dtype=F64)
    for a, b in zip(mlps, back):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        assert torch.equal(a(x), b(x))
    with pytest.raises(ValueError, match="layer 0: biases must have shape"):
        mlps_from_dws(weights, (biases[1],) + biases[1:])


@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh])
def test_mlp_zoo_from_dws_to_kans(act):
    from wskan_ext.convert import mlp_to_kan

    mlps = _mlps([3, 6, 4, 2], 3, 1, act)
    weights, biases, _ = mlps_to_dws(mlps)
    name = {nn.ReLU: "relu", nn.Tanh: "tanh"}[act]
    kans_ = kans_from_dws_mlps(weights, biases, activation=name)
    direct = KANWeights.stack([mlp_to_kan(m, route="exact") for m in mlps])
    assert kans_.equal(direct)
    x = 3 * torch.randn(25, 3, dtype=F64)
    ref = torch.stack([m(x) for m in mlps])
    assert torch.allclose(kans_(x), ref, rtol=1e-12, atol=1e-12)


def test_mlp_zoo_in_dws_format_through_wskan():
    """An MLP zoo stored as DWS tuples -> KANs -> WS-KAN gives the same output as
    converting the nn.Sequential models directly (and through the registry)."""
    from wskan_ext import WSKAN, as_kan_weights, kan_to_graph, mlp_to_kan

    mlps = _mlps([4, 6, 3], 5, 2)
    weights, biases, _ = mlps_to_dws(mlps)
    from_zoo = kans_from_dws_mlps(weights, biases, activation="relu")
    direct = KANWeights.stack([as_kan_weights(m) for m in mlps])
    assert from_zoo.equal(direct) and from_zoo.equal(mlp_to_kan(mlps, route="exact"))
    g_zoo, g_direct = kan_to_graph(from_zoo), kan_to_graph(direct)
    torch.manual_seed(0)  # test-only: WS-KAN initialisation
    model = WSKAN(g_zoo.x.shape[1], g_zoo.edge_attr.shape[1], hidden_channels=16, num_layers=2,
                  graph_out_channels=3).double()
    y_zoo, y_direct = model(g_zoo).graph, model(g_direct).graph
    assert y_zoo.shape == (5, 3)
    assert torch.equal(y_zoo, y_direct)
    # negative twin: a different zoo (one weight changed) gives a different output
    weights2 = (weights[0].clone(),) + weights[1:]
    weights2[0][0, 0, 0, 0] += 1.0
    y2 = model(kan_to_graph(kans_from_dws_mlps(weights2, biases, activation="relu"))).graph
    assert not torch.allclose(y2[0], y_zoo[0]) and torch.equal(y2[1:], y_zoo[1:])


def test_round_trip_on_device(device):
    w = kst.random_kan({"widths": [3, 5, 2], "grid_sizes": [4, 3], "k": [3, 2]}, 0, num_models=2, mask_prob=0.15,
                       device=device)
    for features in ("raw", "canonical", "values"):
        d = to_dws(w, features=features)
        assert all(t.device == w.device for t in d.weights + d.biases)
    d = to_dws(w, features="raw")
    assert from_dws(d.weights, d.biases, d.layout).equal(w)
