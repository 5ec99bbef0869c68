"""Probe features (wskan_ext.tasks.probes): exact statistics, equivariance of the probe-enabled
WS-KAN in float64 through the equivariance suite (with a negative twin), and the ``probe``
option of the ``wskan`` meta-model end to end."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples
from wskan_ext.equivariance_tests import assert_equivariant
from wskan_ext.equivariance_tests import examples as E
from wskan_ext.equivariance_tests import strategies as kst
from wskan_ext.graph import kan_to_graph
from wskan_ext.nn.model import WSKAN
from wskan_ext.tasks import TrainConfig, fit, load_split
from wskan_ext.tasks.probes import EDGE_STATS, NODE_STATS, probe_features, probe_inputs
from wskan_ext.tasks.testing import assert_trained_symmetry, tiny_zoo
from wskan_ext.zoo import edge_attribution

G, K, P = 3, 2, 12
MIXED = dict(min_size=1, max_size=3, min_depth=2, max_depth=3, max_width=4, min_hidden_width=2, grid_sizes=G, k=K)


def _probes(n0):
    return torch.rand(P, n0, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2.4 - 1.2


def _sorted_hidden(w, pn):
    """The bug of the negative twin: 'canonicalise' the probe statistics by sorting each hidden
    layer's neurons by their mean activation, detaching them from their neurons."""
    out, off = pn.clone(), w.widths[0]
    for n in w.widths[1:-1]:
        blk = pn[:, off:off + n]
        out[:, off:off + n] = torch.gather(blk, 1, blk[..., :1].argsort(1).expand_as(blk))
        off += n
    return out


class ProbeWSKAN:
    """A float64 WS-KAN on the KAN-graph with probe statistics appended to node and edge features."""

    def __init__(self, sort_bug=False):
        self.model = E.init_from_seed(
            WSKAN(G + 2 * K + 1 + 5 + len(NODE_STATS), G + K + 1 + len(EDGE_STATS), hidden_channels=8,
                  num_layers=2, graph_out_channels=2, edge_out_channels=2), 0, scale=1.0).double().eval()
        self.sort_bug = sort_bug

    def __call__(self, w):
        w = w if w.batched else w.unsqueeze()
        g = kan_to_graph(w)
        pn, pe = probe_features(w, _probes(w.widths[0]))
        if self.sort_bug:
            pn = _sorted_hidden(w, pn)
        g.x = torch.cat([g.x, pn.flatten(0, 1)], -1)
        g.edge_attr = torch.cat([g.edge_attr, pe.flatten(0, 1)], -1)
        return self.model(g)


@settings(max_examples=examples(8))
@given(kst.batches_and_permutations(num_models=st.one_of(st.none(), st.just(2)), per_model=True, **MIXED))
def test_probe_wskan_is_invariant_and_equivariant_float64(case):
    kans, perms = case
    f = ProbeWSKAN()
    res = assert_equivariant(lambda w: f(w).graph, kans, perms, input_format="weights", output="invariant")
    assert res.error < 1e-12
    res = assert_equivariant(lambda w: f(w).edge, kans, perms, input_format="weights", output="edge")
    assert res.error < 1e-12


@pytest.mark.parametrize("head,out", [("graph", "invariant"), ("edge", "edge")])
def test_negative_twin_sorted_probe_statistics_break_symmetry(head, out):
    arch = {"widths": [2, 3, 2], "grid_sizes": [G] * 2, "k": [K] * 2, "base_fun": ["silu"] * 2}
    kans = [kst.random_kan(arch, 1)]
    bad, good = ProbeWSKAN(sort_bug=True), ProbeWSKAN()
    perm = [[torch.tensor([2, 0, 1])]]
    assert_equivariant(lambda w: getattr(good(w), head), kans, perm, input_format="weights", output=out)
    with pytest.raises(AssertionError):
        assert_equivariant(lambda w: getattr(bad(w), head), kans, perm, input_format="weights", output=out)


def test_probe_statistics_are_exact():
    w = kst.random_kan({"widths": [3, 4, 2], "grid_sizes": [G] * 2, "k": [K] * 2, "base_fun": ["silu"] * 2}, 2,
                       num_models=2)
    x = _probes(3)
    pn, pe = probe_features(w, x, chunk=1)
    assert pn.shape == (2, 9, len(NODE_STATS)) and pe.shape == (2, 3 * 4 + 4 * 2, len(EDGE_STATS))
    _, acts = w.forward(x, return_hidden=True)
    h = acts[1][1]  # model 1, hidden layer: (P, 4)
    torch.testing.assert_close(pn[1, 3:7, :4], torch.stack([h.mean(0), h.std(0, unbiased=False), h.amin(0),
                                                            h.amax(0)], -1), rtol=1e-12, atol=1e-12)
    hs = h.sort(0).values
    torch.testing.assert_close(pn[1, 3:7, 5], (hs[P // 2 - 1] + hs[P // 2]) / 2, rtol=1e-12, atol=1e-12)
    # edges vs the forward pass: node_scale * sum_i mean_s phi_ij + node_bias = mean_s x_{l+1, j}
    for l, (eo, no) in enumerate(((0, 3), (12, 7))):
        n, m = w.widths[l], w.widths[l + 1]
        mean_phi = pe[:, eo:eo + n * m, 2].reshape(2, n, m).sum(1)
        torch.testing.assert_close(w.node_scale[l] * mean_phi + w.node_bias[l], pn[:, no:no + m, 0],
                                   rtol=1e-10, atol=1e-12)
    # edge std equals pykan's attribution statistic up to Bessel's correction (last layer: e = A / n_out / (sigma + 1e-4))
    A_last = pe[:, 12:, 0].reshape(2, 4, 2) * (P / (P - 1)) ** 0.5
    z = (acts[2] - w.node_bias[1].unsqueeze(-2)) / w.node_scale[1].unsqueeze(-2)
    e = edge_attribution(w, x)[1]
    torch.testing.assert_close(e, A_last * (0.5 / (z.std(1) + 1e-4)).unsqueeze(-2), rtol=1e-8, atol=1e-12)


def test_probe_statistics_negative_twin_wrong_neuron():
    w = kst.random_kan({"widths": [3, 4, 2], "grid_sizes": [G] * 2, "k": [K] * 2, "base_fun": ["silu"] * 2}, 2)
    x = _probes(3)
    pn, _ = probe_features(w, x)
    _, acts = w.forward(x, return_hidden=True)
    assert not torch.allclose(pn[0, 3:7, 0], acts[1].mean(0).flip(0))


def test_probe_option_end_to_end(tmp_path):
    zoo = tiny_zoo(str(tmp_path), "digits")
    px = probe_inputs(zoo, 16)
    assert px.shape == (16, 16) and torch.equal(px, probe_inputs(zoo, 16))  # seeded, no labels
    for task in ("accuracy", "pruning"):
        res = fit(zoo, task, "wskan", TrainConfig(epochs=1, batch_size=4, progress=False, model={"probe": 16}))
        mm, net = res["meta_model"], res["net"].eval()
        base = fit(zoo, task, "wskan", TrainConfig(epochs=1, batch_size=4, progress=False))["meta_model"]
        assert mm.dims == (base.dims[0] + len(NODE_STATS), base.dims[1] + len(EDGE_STATS))
        assert_trained_symmetry(mm, net, load_split(zoo, task, "test"), task)


def test_probe_option_errors(tmp_path):
    zoo = tiny_zoo(str(tmp_path), "digits")
    with pytest.raises(ValueError, match="at least 2 probe inputs"):
        probe_inputs(zoo, 1)
    train = load_split(zoo, "accuracy", "train")
    from wskan_ext.tasks.models import build_meta_model
    from wskan_ext.tasks import get_task

    nosrc = type(train)(train.weights, train.targets, train.ids, "train")
    with pytest.raises(ValueError, match="SplitData.source"):
        build_meta_model("wskan", get_task("accuracy"), nosrc, {"probe": 8})
