"""The suite on real models and formats: WSKAN and the exact simulator on PyG graphs, nfn
layers on WeightSpaceFeatures, DWS tuples, real pykan models -- and expected failures
(WS-KAN with positional embeddings on hidden neurons, NP-mode NFNs, broken tuple maps)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples
from torch import nn

from wskan_ext import KANWeights
from wskan_ext.equivariance_tests import (
    assert_equivariant,
    assert_invariant,
    assert_sensitive,
    equivariance_error,
)
from wskan_ext.equivariance_tests import examples as E
from wskan_ext.equivariance_tests import strategies as kst
from wskan_ext.graph import ROLE_HIDDEN, kan_to_graph
from wskan_ext.nn.model import WSKAN
from wskan_ext.simulate import simulate_forward

G, K = 3, 2
MIXED = dict(min_size=1, max_size=3, min_depth=2, max_depth=3, max_width=4, min_hidden_width=2, grid_sizes=G, k=K)
HEADS = [("graph", "invariant"), ("node", "node"), ("edge", "edge")]


def make_wskan(cls=WSKAN, node_in=G + 2 * K + 1 + 5, edge_in=G + K + 1, seed=0, **kw):
    model = cls(node_in, edge_in, hidden_channels=8, num_layers=2, graph_out_channels=2, node_out_channels=2,
                edge_out_channels=2, **kw)
    return E.init_from_seed(model, seed, scale=1.0).double().eval()


class HiddenPositionalWSKAN(WSKAN):
    """The deliberate bug: a positional embedding on *hidden* neurons too."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.hidden_embedding = nn.Embedding(64, self.hidden_channels)

    def encode(self, data, node_extra=None):
        h, e = super().encode(data, node_extra)
        hidden = (data.node_role == ROLE_HIDDEN).unsqueeze(-1).to(h.dtype)
        return h + hidden * self.hidden_embedding(data.node_pos), e


# ------------------------------------------------------------------ WSKAN on PyG graphs
@settings(max_examples=examples(8))
@given(kst.batches_and_permutations(num_models=st.one_of(st.none(), st.just(2)), per_model=True, **MIXED))
def test_wskan_passes_on_mixed_graph_batches(case):
    kans, perms = case
    model = make_wskan()
    for head, out in HEADS:
        res = assert_equivariant(lambda g: getattr(model(g), head), kans, perms, input_format="graph", output=out)
        assert res.error < 1e-12


@settings(max_examples=examples(5))
@given(kst.batches_and_permutations(min_size=1, max_size=3, min_depth=2, max_depth=3, max_width=3, min_hidden_width=2,
                                   per_layer=True))
def test_wskan_values_encoding_mixes_grids_and_orders(case):
    kans, perms = case
    model = make_wskan(node_in=7, edge_in=16)
    for head, out in HEADS:
        assert_equivariant(lambda g: getattr(model(g), head), kans, perms, input_format="graph-values", output=out)


def test_wskan_is_sensitive_to_input_neurons():
    kans = [kst.random_kan({"widths": [3, 4, 2], "grid_sizes": [G] * 2, "k": [K] * 2, "base_fun": ["silu"] * 2}, 1)]
    assert_sensitive(lambda g: make_wskan()(g).graph, kans, input_format="graph")


@pytest.mark.parametrize("head,out", HEADS)
def test_wskan_with_hidden_positional_embeddings_fails(head, out):
    kans = [kst.random_kan({"widths": [2, 3, 2], "grid_sizes": [G] * 2, "k": [K] * 2, "base_fun": ["silu"] * 2}, 0)]
    bad = make_wskan(HiddenPositionalWSKAN)
    with pytest.raises(AssertionError) as exc:
        assert_equivariant(lambda g: getattr(bad(g), head), kans, [[torch.tensor([2, 0, 1])]], input_format="graph",
                           output=out)
    msg = str(exc.value)
    assert "violated" in msg and "input format : graph" in msg and "layer 1: [2, 0, 1]" in msg
    if out == "node":
        assert "[hidden]" in msg or "[output]" in msg  # the row where the damage is largest


# ------------------------------------------------------------------ the exact simulator
@settings(max_examples=examples(8))
@given(st.data())
def test_exact_simulator_passes(data):
    kans, perms = data.draw(kst.batches_and_permutations(**MIXED))
    xs = [data.draw(kst.kan_inputs(w, min_samples=4, max_samples=4)) for w in kans]
    sim_out = lambda g, xs: simulate_forward(g, xs)  # noqa: E731
    sim_states = lambda g, xs: simulate_forward(g, xs, return_states=True)[1]  # noqa: E731
    assert_invariant(sim_out, kans, perms, input_format="graph", args=(xs,))
    assert_equivariant(sim_states, kans, perms, input_format="graph", output="node", args=(xs,))
    # the simulator computes each KAN's own function (outside the grid too)
    got = sim_out(kan_to_graph(kans), xs)
    want = [w(x) for w, x in zip(kans, xs)]
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


def test_exact_simulator_is_sensitive_to_input_neurons():
    kans = [kst.random_kan({"widths": [3, 4, 2], "grid_sizes": [G] * 2, "k": [K] * 2, "base_fun": ["silu"] * 2}, 2)]
    x = [torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3)]
    assert_sensitive(lambda g: simulate_forward(g, x), kans, input_format="graph")


# ------------------------------------------------------------------ nfn and dws formats
nfn_adapter = pytest.importorskip("wskan_ext.adapters.nfn")


@settings(max_examples=examples(6))
@given(kst.kans_and_permutations(num_models=2, per_model=True, min_depth=2, max_depth=3, max_width=4,
                                 min_hidden_width=2, grid_sizes=G, k=K))
def test_nfn_hnp_layers_pass(wp):
    from nfn.layers import HNPLinear

    w, perms = wp
    spec, C = nfn_adapter.network_spec(w), nfn_adapter.wsfeat_layout(w).channels
    layer = E.init_from_seed(HNPLinear(spec, C, 3), 0).double()
    assert_equivariant(layer, w, perms, input_format="nfn", output="wsfeat")
    inv = E.init_from_seed(nfn_adapter.KANInvariantNFN(spec, C, out_dim=2), 0).double()
    assert_invariant(inv, w, perms, input_format="nfn")


def test_nfn_negative_twins():
    w = kst.random_kan({"widths": [3, 4, 2], "grid_sizes": [G] * 2, "k": [K] * 2, "base_fun": ["silu"] * 2}, 4)
    spec, C = nfn_adapter.network_spec(w), nfn_adapter.wsfeat_layout(w).channels
    # a readout that looks at hidden neuron 0 only
    with pytest.raises(AssertionError, match="violated: output='invariant'"):
        assert_invariant(lambda f: f.weights[0][:, :, 0].sum(), w, [torch.tensor([1, 2, 3, 0])], input_format="nfn")
    # NP mode treats input neurons as exchangeable: invariant, but blind to input identity
    np_model = E.init_from_seed(nfn_adapter.KANInvariantNFN(spec, C, out_dim=2, mode="NP"), 0).double()
    assert_invariant(np_model, w, input_format="nfn")
    with pytest.raises(AssertionError, match="insensitive to a non-symmetry"):
        assert_sensitive(np_model, w, input_format="nfn")
    hnp = E.init_from_seed(nfn_adapter.KANInvariantNFN(spec, C, out_dim=2, mode="HNP"), 0).double()
    assert_sensitive(hnp, w, input_format="nfn")


@settings(max_examples=examples(8))
@given(kst.kans_and_permutations(min_depth=2, max_depth=3, max_width=4, min_hidden_width=2, per_layer=True))
def test_dws_tuples(wp):
    w, perms = wp
    pool = lambda t: sum(x.sum((1, 2)) for x in t[0]) + sum(b.sum(1) for b in t[1])  # noqa: E731
    assert_invariant(pool, w, perms, input_format="dws")
    elementwise = lambda t: (tuple(torch.tanh(x) for x in t[0]), tuple(2 * b for b in t[1]))  # noqa: E731
    assert_equivariant(elementwise, w, perms, input_format="dws", output="dws")
    moved = any(not torch.equal(p, torch.arange(p.numel())) for p in perms)
    mixes_rows = lambda t: (tuple(x.cumsum(2) for x in t[0]), t[1])  # noqa: E731  (not equivariant)
    assert (equivariance_error(mixes_rows, w, perms, input_format="dws", output="dws") > 1e-9) == moved


# ------------------------------------------------------------------ real pykan models
@settings(max_examples=examples(4))
@given(st.data())
def test_pykan_models_and_format(data):
    from wskan_ext.adapters.pykan import from_pykan

    model = data.draw(kst.pykan_models(min_depth=2, max_depth=3, max_width=3, min_hidden_width=2, grid_sizes=(2, 4),
                                       k=(1, 3)))
    w = from_pykan(model)
    assert isinstance(w, KANWeights) and w.dtype == torch.float64
    x = data.draw(kst.kan_inputs(w, min_samples=5, max_samples=5))
    assert torch.allclose(model(x), w(x), atol=1e-10, rtol=0)
    perms = data.draw(kst.hidden_permutations(w))
    # a KAN's own function is invariant to its hidden permutations ...
    assert_invariant(lambda m: m(x), w, perms, input_format="pykan")
    # ... and changes when its input neurons are permuted
    if w.widths[0] > 1:
        assert_sensitive(lambda m: m(x), w, input_format="pykan")
