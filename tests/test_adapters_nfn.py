"""KANs through the real ``nfn`` package (wskan_ext.adapters.nfn)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples

from wskan_ext import permute_hidden
from wskan_ext.equivariance_tests import strategies as kst
from wskan_ext.kan import random_hidden_permutations

nfn = pytest.importorskip("nfn")
from nfn.common import WeightSpaceFeatures, network_spec_from_wsfeat  # noqa: E402
from nfn.layers import HNPLinear, HNPPool, NPLinear, NPPool  # noqa: E402

from wskan_ext.adapters.nfn import KANInvariantNFN, from_wsfeat, network_spec, to_wsfeat, wsfeat_layout  # noqa: E402

F64 = torch.float64


def kans(min_depth=2):
    """Batches of 3 random float64 KANs (depth min_depth..4, widths 1..5, per-layer G 1..4
    and k 1..3, 15 % of the edges masked, jittered per-neuron grids)."""
    return kst.kan_weights(min_depth=min_depth, max_depth=4, max_width=5, grid_sizes=(1, 4), k=(1, 3),
                           per_layer=True, num_models=3, mask_prob=0.15)


def kan(widths, grid_sizes, k, B):
    return kst.random_kan({"widths": widths, "grid_sizes": grid_sizes, "k": k}, 0, num_models=B, mask_prob=0.15)


def permute_wsfeat(ws, perms):
    """Act with hidden permutations on nfn features: rows of weights[h] and biases[h],
    columns of weights[h+1]."""
    W, Bs = list(ws.weights), list(ws.biases)
    for h, p in enumerate(perms):
        W[h], Bs[h] = W[h][:, :, p], Bs[h][:, :, p]
        W[h + 1] = W[h + 1][..., p]
    return WeightSpaceFeatures(W, Bs)


def _close(a, b, tol=1e-10):
    return all(torch.allclose(x, y, rtol=tol, atol=tol) for x, y in zip(a, b))


@given(kans(min_depth=1))
def test_layout_spec_and_round_trip(w):
    ws, lay = to_wsfeat(w, features="raw", return_layout=True)
    for l, (W, b) in enumerate(ws):
        assert W.shape == (3, lay.channels, w.widths[l + 1], w.widths[l])
        assert b.shape == (3, lay.channels, w.widths[l + 1])
    assert network_spec(w) == network_spec_from_wsfeat(ws)  # nfn's own spec of these tensors
    assert network_spec(w.widths) == network_spec(w)
    assert from_wsfeat(ws, lay).equal(w)
    assert wsfeat_layout(w).channels == max(G + 2 * k + 1 + G + k + 1 for G, k in zip(w.grid_sizes, w.k))
    # canonical = edge_features() channels, rearranged "i j c -> c j i"
    ws_c = to_wsfeat(w)
    ef = w.edge_features()
    for l in range(w.depth):
        assert torch.equal(ws_c.weights[l][:, : ef[l].shape[-1]], ef[l].permute(0, 3, 2, 1))


@settings(max_examples=examples(10))
@given(kans(), st.sampled_from(["canonical", "values"]))
def test_hnp_layer_equivariant_to_hidden_permutations(w, features):
    torch.manual_seed(0)  # test-only: nfn layer initialisation
    ws = to_wsfeat(w, features=features)
    C = ws.weights[0].shape[1]
    spec = network_spec(w)
    layer = HNPLinear(spec, C, 4).double()
    p = random_hidden_permutations(w, torch.Generator().manual_seed(2))
    out_p = layer(to_wsfeat(permute_hidden(w, p), features=features))
    assert _close(out_p.weights, permute_wsfeat(layer(ws), p).weights)
    assert _close(out_p.biases, permute_wsfeat(layer(ws), p).biases)
    pool = HNPPool(spec)
    assert torch.allclose(pool(out_p), pool(layer(ws)), rtol=1e-10, atol=1e-10)


@settings(max_examples=examples(10))
@given(kans())
def test_grid_channels_must_move_with_neurons(w):
    """Negative twin: permuting hidden neurons *without* their grid rows changes the
    features, and the invariant model notices (when there is anything to permute)."""
    if all(n == 1 for n in w.widths[1:-1]):
        return
    torch.manual_seed(0)
    moved = [torch.roll(torch.arange(n), 1) for n in w.widths[1:-1]]
    model = KANInvariantNFN(network_spec(w), wsfeat_layout(w).channels).double()
    good = model(permute_hidden(w, moved))
    bad = model(permute_hidden(w, moved, permute_grid=False))
    assert torch.allclose(good, model(w), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(bad, good, rtol=1e-10, atol=1e-10)


@settings(max_examples=examples(10))
@given(kans())
def test_invariant_models(w):
    torch.manual_seed(0)
    spec, C = network_spec(w), wsfeat_layout(w).channels
    hnp = KANInvariantNFN(spec, C, hidden_channels=8, out_dim=2).double()
    np_ = KANInvariantNFN(spec, C, hidden_channels=8, out_dim=2, mode="NP").double()
    p = random_hidden_permutations(w, torch.Generator().manual_seed(3), per_model=True)
    wp = permute_hidden(w, p)
    for m in (hnp, np_):
        y = m(w)
        assert y.shape == (3, 2)
        assert torch.allclose(m(wp), y, rtol=1e-10, atol=1e-10)
        assert torch.allclose(m(to_wsfeat(wp)), y, rtol=1e-10, atol=1e-10)  # wsfeat input too
    # input neurons: NP treats them as exchangeable, HNP does not (negative twin)
    if w.widths[0] > 1:
        q = torch.roll(torch.arange(w.widths[0]), 1)
        ws = to_wsfeat(w)
        ws_in = WeightSpaceFeatures((ws.weights[0][..., q],) + ws.weights[1:], ws.biases)
        assert torch.allclose(np_(ws_in), np_(ws), rtol=1e-10, atol=1e-10)
        assert not torch.allclose(hnp(ws_in), hnp(ws), rtol=1e-6, atol=1e-6)


def test_np_layer_and_pool_run_on_kans_any_depth():
    w = kan([4, 3], [5], [3], 2)
    ws = to_wsfeat(w)
    spec = network_spec(w)
    out = NPLinear(spec, ws.weights[0].shape[1], 5).double()(ws)
    assert out.weights[0].shape == (2, 5, 3, 4)
    assert NPPool(spec)(out).shape == (2, 5, NPPool.get_num_outs(spec))
    with pytest.raises(ValueError, match="at least 2 layers"):
        KANInvariantNFN(spec, 3)


def test_invariant_model_trains():
    """The ready model learns a simple invariant target (mean node bias of layer 0)."""
    w = kan([2, 4, 1], [3, 3], [2, 2], 64)
    y = w.node_bias[0].mean(-1, keepdim=True).float()
    ws = to_wsfeat(w.float())
    torch.manual_seed(0)
    model = KANInvariantNFN(network_spec(w), ws.weights[0].shape[1], hidden_channels=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(model(ws), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])


def test_values_not_invertible_and_bad_input():
    w = kan([2, 3, 1], [3, 3], [1, 1], 2)
    ws, lay = to_wsfeat(w, features="values", return_layout=True)
    with pytest.raises(ValueError, match="cannot be inverted"):
        from_wsfeat(ws, lay)
    with pytest.raises(TypeError, match="WeightSpaceFeatures"):
        from_wsfeat((ws.weights, ws.biases), lay)


@settings(max_examples=examples(6))
@given(kans())
def test_nfn_layers_pass_the_equivariance_suite(w):
    """The project's equivariance suite on nfn layers fed with adapted KANs: HNP and NP
    layers are equivariant, the invariant models invariant; the HNP model sees input
    neurons, the NP model (negative twin) does not."""
    suite = pytest.importorskip("wskan_ext.equivariance_tests")
    if all(n == 1 for n in w.widths[1:-1]):
        return
    torch.manual_seed(0)
    spec, C = network_spec(w), wsfeat_layout(w).channels
    for Layer in (HNPLinear, NPLinear):
        suite.assert_equivariant(Layer(spec, C, 4).double(), w, input_format="nfn", output="wsfeat", ntrials=2)
    hnp = KANInvariantNFN(spec, C).double()
    np_ = KANInvariantNFN(spec, C, mode="NP").double()
    suite.assert_invariant(hnp, w, input_format="nfn", ntrials=2)
    suite.assert_invariant(np_, w, input_format="nfn", ntrials=2)
    if w.widths[0] > 1:
        suite.assert_sensitive(hnp, w, input_format="nfn")
        with pytest.raises(AssertionError, match="input"):
            suite.assert_sensitive(np_, w, input_format="nfn")


def test_nfn_on_device(device):
    w = kan([3, 5, 4, 2], [4, 3, 5], [3, 2, 1], 2).to(device)
    ws, lay = to_wsfeat(w, features="raw", return_layout=True)
    assert from_wsfeat(ws, lay).equal(w)
    torch.manual_seed(0)
    model = KANInvariantNFN(network_spec(w), lay.channels, features="raw").double().to(device)
    p = [q.to(device) for q in random_hidden_permutations(w, torch.Generator().manual_seed(1))]
    assert torch.allclose(model(permute_hidden(w, p)), model(w), rtol=1e-10, atol=1e-10)
