"""KANWeights: batched evaluation, the hidden-permutation symmetry, canonical edge
parameters, efficient-kan interop and validation of bad input."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wskan_ext import KAN, KANWeights, as_kan_weights, permute_hidden
from wskan_ext.adapters.efficient_kan import from_efficient_kan, to_efficient_kan
from wskan_ext.equivariance_tests import strategies as kst
from wskan_ext.kan import random_hidden_permutations

ARCH = dict(max_depth=4, max_width=8, grid_sizes=(1, 10), k=(1, 3), per_layer=True)


def kan_weights(min_depth=1, batched=None):
    """Random float64 KANs: depth min_depth..4, widths 1..8, per-layer G 1..10, k 1..3 and base
    function (silu/identity/tanh), unbatched or 3 models (``batched=None``: either), 20 % of
    the edges masked, non-uniform per-neuron (and per-model) grids."""
    nm = st.sampled_from([None, 3]) if batched is None else (3 if batched else None)
    return kst.kan_weights(min_depth=min_depth, base_funs=("silu", "identity", "tanh"), num_models=nm, mask_prob=0.2,
                           **ARCH)


def _x(w, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(40, w.widths[0], generator=g, dtype=w.dtype)


# ----------------------------------------------------------------- batching
@given(kan_weights(batched=True))
def test_batched_forward_equals_per_model(w):
    x = _x(w)
    y = w(x)
    assert y.shape == (w.num_models, 40, w.widths[-1])
    for i in range(w.num_models):
        assert torch.allclose(y[i], w[i](x), rtol=0, atol=1e-12)
    xb = torch.stack([_x(w, seed=i) for i in range(w.num_models)])
    yb = w(xb)
    for i in range(w.num_models):
        assert torch.allclose(yb[i], w[i](xb[i]), rtol=0, atol=1e-12)


def test_native_module_matches_weights_and_trains():
    model = KAN([3, 4, 2], grid=4, k=2, num_models=5, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 16, 3)
    assert torch.equal(model(x), model.weights()(x))
    loss = model(x).pow(2).sum()
    loss.backward()
    assert model.layers[0].coef.grad.shape == (5, 3, 4, 6)
    assert model.layers[0].coef.grad.abs().sum() > 0
    back = KAN.from_weights(model.weights(detach=True))
    assert back.weights().equal(model.weights(detach=True))


def test_stack_and_index_round_trip():
    ws = [KAN([2, 3, 1], generator=torch.Generator().manual_seed(i)).weights(detach=True) for i in range(4)]
    b = KANWeights.stack(ws)
    assert b.num_models == 4 and len(b) == 4
    assert all(b[i].equal(ws[i]) for i in range(4))
    assert KANWeights.stack([b[:2], b[2:]]).equal(b)


def test_stack_rejects_mixed_architectures():
    a = KAN([2, 3, 1]).weights(detach=True)
    b = KAN([2, 4, 1]).weights(detach=True)
    with pytest.raises(ValueError, match=r"stack: item 1 has architecture .*'widths': \[2, 4, 1\]"):
        KANWeights.stack([a, b])


def test_tensors_round_trip():
    w = KAN([2, 3, 1], grid=[3, 4], k=[1, 2]).weights(detach=True)
    back = KANWeights.from_tensors(w.tensors(), k=w.k, base_fun=w.base_fun)
    assert back.equal(w)


# ----------------------------------------------------------------- symmetry
@given(kan_weights(min_depth=2), st.integers(0, 2**31 - 1))
def test_hidden_permutation_is_a_symmetry(w, seed):
    perms = random_hidden_permutations(w, torch.Generator().manual_seed(seed), per_model=True)
    x = _x(w)
    assert torch.allclose(permute_hidden(w, perms)(x), w(x), rtol=0, atol=1e-12)


def _non_identity(n, g):
    p = torch.randperm(n, generator=g)
    while torch.equal(p, torch.arange(n)):
        p = torch.randperm(n, generator=g)
    return p


def kan_with_wide_layers():
    # the twins need at least two neurons where they permute and non-degenerate (unmasked) weights
    return kst.kan_weights(min_depth=2, min_width=2, **ARCH)


@given(kan_with_wide_layers(), st.integers(0, 1000))
def test_negative_twin_input_permutation_changes_function(w, seed):
    g = torch.Generator().manual_seed(seed)
    p = _non_identity(w.widths[0], g)
    x = _x(w)
    assert (w(x[:, p]) - w(x)).abs().max() > 1e-6


@given(kan_with_wide_layers(), st.integers(0, 1000))
def test_negative_twin_output_permutation_changes_function(w, seed):
    g = torch.Generator().manual_seed(seed)
    p = _non_identity(w.widths[-1], g)
    x = _x(w)
    y = w(x)
    assert (y[:, p] - y).abs().max() > 1e-6


@given(kan_with_wide_layers(), st.integers(0, 1000))
def test_negative_twin_permuting_edges_without_grid_rows_changes_function(w, seed):
    g = torch.Generator().manual_seed(seed)
    # distinct grids per neuron, so forgetting to move the grid rows is visible
    w = w._replace(grid=[gr * (1 + torch.arange(gr.shape[0], dtype=gr.dtype))[:, None] for gr in w.grid])
    perms = [_non_identity(n, g) for n in w.widths[1:-1]]
    x = _x(w)
    assert torch.allclose(permute_hidden(w, perms)(x), w(x), atol=1e-12)
    assert (permute_hidden(w, perms, permute_grid=False)(x) - w(x)).abs().max() > 1e-6


# ------------------------------------------------------ canonical parameters
@given(kan_weights())
def test_edge_functions_sum_to_the_layer(w):
    # one evaluator of phi_ij: summed over inputs and passed through the node affine it is
    # exactly the layer's forward pass, on every layer and for batched and single KANs
    _, acts = w.forward(_x(w), return_hidden=True)
    for l in range(w.depth):
        phi = w.edge_functions(l, acts[l])
        assert phi.shape == acts[l].shape + (w.widths[l + 1],)
        y = w.node_scale[l].unsqueeze(-2) * phi.sum(-2) + w.node_bias[l].unsqueeze(-2)
        assert torch.allclose(y, acts[l + 1], rtol=0, atol=1e-10 * (1 + acts[l + 1].abs().max()))


@given(kan_with_wide_layers(), st.integers(0, 1000))
def test_negative_twin_edge_functions_see_which_input_feeds_them(w, seed):
    x = _x(w, seed)
    p = _non_identity(w.widths[0], torch.Generator().manual_seed(seed))
    assert not torch.allclose(w.edge_functions(0, x), w.edge_functions(0, x[..., p]), atol=1e-6)


def test_edge_functions_errors_name_layer_and_shape():
    w = KAN([3, 4, 2], 5, 3).weights(detach=True)
    with pytest.raises(ValueError, match="layer 2 does not exist"):
        w.edge_functions(2, torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"layer 1 expects x of shape \(\.\.\., s, 4\)"):
        w.edge_functions(1, torch.zeros(5, 3))


@given(kan_weights(), st.integers(0, 1000))
def test_canonical_edge_features_remove_rescaling(w, seed):
    g = torch.Generator().manual_seed(seed)
    a = [torch.rand(t.shape, generator=g, dtype=t.dtype) * 4 + 0.25 for t in w.scale_sp]
    a = [torch.where(torch.rand(t.shape, generator=g) < 0.5, -t, t) for t in a]
    r = w._replace(
        scale_sp=[s * ai for s, ai in zip(w.scale_sp, a)],
        coef=[c / ai.unsqueeze(-1) for c, ai in zip(w.coef, a)],
    )
    x = _x(w)
    assert torch.allclose(r(x), w(x), atol=1e-10)
    for fa, fb in zip(r.edge_features(), w.edge_features()):
        assert torch.allclose(fa, fb, rtol=1e-12, atol=1e-12)
    # negative twin: the raw parameters do change
    assert any(not torch.allclose(c1, c2) for c1, c2 in zip(r.coef, w.coef))
    # canonicalize keeps the function
    assert torch.allclose(w.canonicalize()(x), w(x), atol=1e-10)


# ----------------------------------------------------------------- efficient-kan
def _ekan_state(widths=(3, 4, 2), G=5, k=3, seed=0, scaler=True):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for l, (n, m) in enumerate(zip(widths[:-1], widths[1:])):
        h = 2 / G
        grid = (torch.arange(-k, G + k + 1) * h - 1).expand(n, -1).contiguous()
        state[f"layers.{l}.grid"] = grid
        state[f"layers.{l}.base_weight"] = torch.randn(m, n, generator=g)
        state[f"layers.{l}.spline_weight"] = torch.randn(m, n, G + k, generator=g)
        if scaler:
            state[f"layers.{l}.spline_scaler"] = torch.randn(m, n, generator=g)
    return state


def _ekan_forward(state, x, depth):
    """efficient-kan's documented forward, written from its state_dict layout."""
    from wskan_ext.kan.spline import bspline_basis

    for l in range(depth):
        grid = state[f"layers.{l}.grid"]
        sw = state[f"layers.{l}.spline_weight"]
        k = grid.shape[1] - sw.shape[2] - 1
        scaled = sw * state.get(f"layers.{l}.spline_scaler", torch.ones(sw.shape[:2]))[..., None]
        base = torch.nn.functional.linear(torch.nn.functional.silu(x), state[f"layers.{l}.base_weight"])
        spl = torch.nn.functional.linear(bspline_basis(x, grid, k).reshape(x.shape[0], -1), scaled.reshape(sw.shape[0], -1))
        x = base + spl
    return x


@pytest.mark.parametrize("scaler", [True, False])
def test_efficient_kan_round_trip_and_function(scaler):
    state = _ekan_state(scaler=scaler)
    w = from_efficient_kan(state)
    assert w.k == [3, 3] and w.widths == [3, 4, 2] and w.grid_sizes == [5, 5]
    assert as_kan_weights(state).equal(w)
    x = 2 * torch.randn(30, 3)
    assert torch.allclose(w(x), _ekan_forward(state, x, 2), atol=1e-5)
    back = to_efficient_kan(w)
    for key, val in state.items():
        assert torch.equal(back[key], val), key


def test_efficient_kan_errors_name_the_tensor():
    state = _ekan_state()
    del state["layers.1.spline_weight"]
    with pytest.raises(ValueError, match=r"layer 1: efficient-kan tensor 'spline_weight' is missing"):
        from_efficient_kan(state)
    state = _ekan_state()
    state["layers.0.base_weight"] = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"layer 0: base_weight must have shape \(4, 3\), got \(4, 2\)"):
        from_efficient_kan(state)
    w = from_efficient_kan(_ekan_state())
    w.node_bias[1] += 1
    with pytest.raises(ValueError, match="layer 1: node_scale/node_bias is not the identity"):
        to_efficient_kan(w)


# ----------------------------------------------------------------- bad input
def _valid(**over):
    w = KAN([2, 3, 1], grid=[4, 4], k=[2, 2], dtype=torch.float64).weights(detach=True)
    kw = {f: list(getattr(w, f)) for f in ("grid", "coef", "scale_base", "scale_sp", "mask", "node_scale", "node_bias")}
    kw.update(k=[2, 2], base_fun="silu")
    kw.update(over)
    return kw


def _with(field, l, value, **extra):
    kw = _valid(**extra)
    kw[field] = list(kw[field])
    kw[field][l] = value
    return kw


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (_with("coef", 1, torch.zeros(4, 1, 6, dtype=torch.float64)), ValueError, r"layer 1: layers do not chain: coef has n_in=4 but layer 0 has n_out=3"),
        (_with("scale_base", 0, torch.zeros(2, 4, dtype=torch.float64)), ValueError, r"layer 0: scale_base must have shape \(2, 3\), got \(2, 4\)"),
        (_with("grid", 1, torch.linspace(-1, 1, 8, dtype=torch.float64).expand(3, 8)), ValueError, r"layer 1: grid must have shape \(3, 9\), got \(3, 8\) \(grid length must be G\+2k\+1"),
        (_with("coef", 0, torch.full((2, 3, 6), float("nan"), dtype=torch.float64)), ValueError, r"layer 0: coef contains NaN or Inf"),
        (_with("node_bias", 1, torch.tensor([float("inf")], dtype=torch.float64)), ValueError, r"layer 1: node_bias contains NaN or Inf"),
        (_with("grid", 0, torch.linspace(1, -1, 9, dtype=torch.float64).expand(2, 9)), ValueError, r"layer 0: grid knots must be non-decreasing; knot 1 of row \[0\]"),
        (_valid(k=[2, 0]), ValueError, r"layer 1: spline order k must be >= 1, got k=0"),
        (_valid(base_fun="swish"), ValueError, r"layer 0: unknown base function 'swish'"),
        (_with("coef", 0, torch.zeros(2, 3, 6, dtype=torch.float32)), TypeError, r"layer 0: grid has dtype torch.float64, expected torch.float32"),
        (_with("mask", 1, [[1.0]]), TypeError, r"layer 1: mask must be a torch.Tensor, got list"),
        (_valid(k=[2, 2, 2]), ValueError, r"k: expected 2 entries \(one per layer\), got 3"),
    ],
)
def test_bad_input_names_the_culprit(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        KANWeights(**kwargs)


def test_coef_shorter_than_spline_order():
    kw = _with("coef", 0, torch.zeros(2, 3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"layer 0: coef has 2 basis functions, fewer than k\+1=3"):
        KANWeights(**kw)


def test_bad_permutations():
    w = KAN([2, 3, 4, 1]).weights(detach=True)
    with pytest.raises(ValueError, match=r"expected 2 permutations \(one per hidden layer\), got 1"):
        permute_hidden(w, [torch.arange(3)])
    with pytest.raises(ValueError, match=r"hidden layer 2: \[0, 0, 1, 2\] is not a permutation of range\(4\)"):
        permute_hidden(w, [torch.arange(3), torch.tensor([0, 0, 1, 2])])
    with pytest.raises(ValueError, match=r"hidden layer 1: permutation must have shape \(3,\), got \(4,\)"):
        permute_hidden(w, [torch.arange(4), torch.arange(4)])


def test_bad_forward_input():
    w = KAN([2, 3, 1]).weights(detach=True)
    with pytest.raises(ValueError, match=r"input x must have shape \(..., samples, 2\), got \(5, 3\)"):
        w(torch.zeros(5, 3))


def test_registry_unknown_object():
    with pytest.raises(TypeError, match=r"no registered KAN family recognises .*builtins.int.*'native'"):
        as_kan_weights(3)
