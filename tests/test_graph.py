"""KAN-graph: layout contract, exact round trip, values encoding, errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples
from torch_geometric.data import Batch, Data

from wskan_ext.equivariance_tests import strategies as kst
from wskan_ext import KAN, KANWeights, graph_to_kan, kan_to_graph
from wskan_ext.graph import edge_output_to_kan, make_batch, node_output_to_kan
from wskan_ext.kan.spline import base_function, spline_eval

BASES = ["silu", "identity", "tanh", "relu2"]


def rand_kan(widths, G, k, B, seed, base="silu", dtype=torch.float64):
    """Random KANWeights (random non-uniform per-neuron grids, 20 % masked edges, random node
    affines) from the library's public test strategies."""
    arch = {"widths": widths, "grid_sizes": G, "k": k, "base_fun": base}
    return kst.random_kan(arch, seed, num_models=B, dtype=dtype, mask_prob=0.2)


@st.composite
def kan_lists(draw, same_basis=True, max_items=3):
    G, k = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    items = []
    for _ in range(draw(st.integers(1, max_items))):
        depth = draw(st.integers(1, 3))
        widths = draw(st.lists(st.integers(1, 4), min_size=depth + 1, max_size=depth + 1))
        if not same_basis:
            G, k = draw(st.integers(1, 4)), draw(st.integers(1, 3))
        B = draw(st.sampled_from([None, 1, 2, 3]))
        w = rand_kan(widths, G, k, B or 1, draw(st.integers(0, 2**16)), draw(st.sampled_from(BASES)))
        items.append(w if B else w[0])
    return items


def flat(items):
    """The list of single KANs the graphs of ``items`` stand for, in graph order."""
    return [v for w in items for v in (w.unbind() if w.batched else [w])]


def as_list(res, n):
    return res.unbind() if isinstance(res, KANWeights) else res


@given(kan_lists())
def test_round_trip_is_exact(items):
    singles = flat(items)
    g = kan_to_graph(items)
    assert g.num_graphs == len(singles)
    back = as_list(graph_to_kan(g), len(singles))
    assert len(back) == len(singles)
    for a, b in zip(back, singles):
        assert a.equal(b)
    # and through PyG's own (un)batching
    back2 = as_list(graph_to_kan(Batch.from_data_list(g.to_data_list())), len(singles))
    assert all(a.equal(b) for a, b in zip(back2, singles))


@given(kan_lists(max_items=2))
@settings(max_examples=examples(10))
def test_round_trip_negative_twin(items):
    g = kan_to_graph(items)
    g.edge_coef = g.edge_coef.clone()
    g.edge_coef[-1, 0] += 1.0
    back = as_list(graph_to_kan(g), None)
    assert not all(a.equal(b) for a, b in zip(back, flat(items)))


@given(kan_lists())
@settings(max_examples=examples(10))
def test_layout_contract(items):
    g = kan_to_graph(items)
    node_ptr, e0 = g.ptr.tolist(), 0
    for b, w in enumerate(flat(items)):
        widths, n0 = w.widths, node_ptr[b]
        offs = [0]
        for v in widths:
            offs.append(offs[-1] + v)
        feats = w.edge_features()
        for l in range(w.depth):
            n, m = widths[l], widths[l + 1]
            ij = torch.cartesian_prod(torch.arange(n), torch.arange(m))
            e = e0 + ij[:, 0] * m + ij[:, 1]
            assert torch.equal(g.edge_index[0, e], n0 + offs[l] + ij[:, 0])
            assert torch.equal(g.edge_index[1, e], n0 + offs[l + 1] + ij[:, 1])
            assert torch.equal(g.edge_attr[e], feats[l].reshape(-1, feats[l].shape[-1]))
            assert bool((g.edge_layer[e] == l).all())
            e0 += n * m
        nodes = torch.arange(n0, n0 + offs[-1])
        assert torch.equal(g.node_layer[nodes], torch.repeat_interleave(torch.arange(len(widths)), torch.tensor(widths)))
        assert torch.equal(g.node_pos[nodes], torch.cat([torch.arange(v) for v in widths]))
        assert bool((g.batch[nodes] == b).all())
    assert e0 == g.edge_index.shape[1]


def test_vectorised_batch_and_float32():
    w = rand_kan([5, 3, 2], 3, 2, 7, 0, dtype=torch.float32)
    g = kan_to_graph(w)
    assert g.x.dtype == torch.float32 and g.edge_attr.dtype == torch.float32
    assert graph_to_kan(g).equal(w)
    assert graph_to_kan(g[3]).equal(w[3])  # a single Data gives an unbatched KAN


def test_native_module_and_pykan_inputs():
    kan_mod = pytest.importorskip("kan")
    from wskan_ext.adapters.pykan import from_pykan, preserve_global_rng

    with preserve_global_rng():
        pk = kan_mod.KAN(width=[2, 3, 1], grid=4, k=3, auto_save=False, seed=1)
    native = KAN([3, 2], 4, 3, generator=torch.Generator().manual_seed(0))
    g = kan_to_graph([pk, native])
    back = graph_to_kan(g)
    assert back[0].equal(from_pykan(pk)) and back[1].equal(native.weights(detach=True))


@given(kan_lists(same_basis=False))
@settings(max_examples=examples(10))
def test_values_encoding_mixes_grids(items):
    P = 5
    g = kan_to_graph(items, encoding="values", num_points=P)
    assert g.edge_attr.shape[1] == P and g.x.shape[1] == 7
    e0 = 0
    for w in flat(items):
        for l in range(w.depth):
            grid, k = w.grid[l], w.k[l]
            pts = grid[:, k : k + 1] + (grid[:, -1 - k : -k] - grid[:, k : k + 1]) * torch.linspace(0, 1, P, dtype=w.dtype)
            sp = spline_eval(pts.t(), grid, w.effective_coef()[l], k)  # (P, n, m)
            ref = sp + base_function(w.base_fun[l])(pts.t()).unsqueeze(-1) * w.effective_base()[l]
            n, m = w.widths[l], w.widths[l + 1]
            got = g.edge_attr[e0 : e0 + n * m].reshape(n, m, P)
            torch.testing.assert_close(got, ref.permute(1, 2, 0), rtol=0, atol=1e-12)
            e0 += n * m


def test_coef_encoding_rejects_mixed_grids():
    a, b = rand_kan([2, 2], 3, 3, 1, 0)[0], rand_kan([2, 2], 4, 3, 1, 1)[0]
    with pytest.raises(ValueError, match=r"item 1 layer 0 has \(G=4, k=3\)"):
        kan_to_graph([a, b])
    with pytest.raises(ValueError, match="encoding"):
        kan_to_graph(a, encoding="spline")


def test_bad_graphs_raise_named_errors():
    w = rand_kan([3, 2, 2], 3, 2, 2, 0)
    g = kan_to_graph(w)
    del g.edge_coef
    with pytest.raises(ValueError, match="edge_coef"):
        graph_to_kan(g)
    g = kan_to_graph(w)
    g.x = g.x[:, 1:]
    with pytest.raises(ValueError, match="node features"):
        graph_to_kan(g)
    with pytest.raises(ValueError, match="not invertible"):
        graph_to_kan(kan_to_graph(w, encoding="values"))
    g = kan_to_graph(w)
    g.x = g.x.clone()
    g.x[0, 1] = g.x[0, 0] - 1  # knots no longer increasing
    with pytest.raises(ValueError, match="grid knots"):
        graph_to_kan(g)
    with pytest.raises(TypeError, match="no registered KAN family"):
        kan_to_graph([w, "not a KAN"])
    with pytest.raises(ValueError, match="expected a"):
        edge_output_to_kan(kan_to_graph(w), torch.zeros(3, 1))


def test_output_mapping_to_kan_layout():
    w = rand_kan([3, 4, 2], 2, 1, 3, 0)
    g = kan_to_graph(w)
    out = edge_output_to_kan(g, g.edge_attr)
    feats = w.edge_features()
    assert all(torch.equal(a, b) for a, b in zip(out, feats))
    nodes = node_output_to_kan(g, g.node_pos.unsqueeze(-1))
    assert [t.shape for t in nodes] == [(3, 3, 1), (3, 4, 1), (3, 2, 1)]
    assert torch.equal(nodes[1][2, :, 0], torch.arange(4))
    mixed = kan_to_graph([w[0], rand_kan([2, 1], 2, 1, 1, 1)[0]])
    per_graph = edge_output_to_kan(mixed, mixed.edge_attr)
    assert torch.equal(per_graph[0][1], feats[1][0]) and per_graph[1][0].shape == (2, 1, 4)


def test_invalid_kan_is_rejected():
    w = rand_kan([2, 3], 2, 1, 2, 0)
    bad = w._replace(coef=[w.coef[0].clone()])
    bad.coef[0][1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="item 0: layer 0: coef contains NaN"):
        kan_to_graph(bad)


def _assert_same_batch(ours, ref):
    assert ours.num_graphs == ref.num_graphs
    assert sorted(ours.keys()) == sorted(ref.keys())
    for key in ref.keys():
        a, b = ours[key], ref[key]
        assert a.dtype == b.dtype and torch.equal(a, b), key
    assert set(ours._slice_dict) == set(ref._slice_dict)
    for key in ref._slice_dict:
        assert torch.equal(ours._slice_dict[key], ref._slice_dict[key]), key
        assert torch.equal(torch.as_tensor(ours._inc_dict[key]), torch.as_tensor(ref._inc_dict[key])), key


@given(kan_lists())
@settings(max_examples=examples(10))
def test_make_batch_is_what_pyg_builds(items):
    # kan_to_graph assembles its Batch with make_batch (no per-graph Data); PyG's own
    # from_data_list over the same graphs must give the same fields and bookkeeping
    g = kan_to_graph(items)
    ref = Batch.from_data_list(g.to_data_list())
    _assert_same_batch(g, ref)
    # and re-batching a slice works through PyG
    _assert_same_batch(Batch.from_data_list(g.index_select([0])), Batch.from_data_list([ref.get_example(0)]))


def test_make_batch_negative_twin_detects_wrong_bookkeeping():
    g = kan_to_graph([KAN([2, 3, 1], 3, 2, num_models=2).weights(detach=True)])
    bad = make_batch({"x": g.x}, {"edge_attr": g.edge_attr}, g.edge_index, g.ptr, g.ptr)  # edge offsets wrong
    ref = Batch.from_data_list([Data(x=d.x, edge_attr=d.edge_attr, edge_index=d.edge_index) for d in g.to_data_list()])
    with pytest.raises(AssertionError):
        _assert_same_batch(bad, ref)
