"""Exact message-passing simulator == KAN forward; learned simulator plumbing."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples

from wskan_ext.equivariance_tests import strategies as kst
from wskan_ext import KAN, kan_to_graph, permute_hidden
from wskan_ext.graph import NODE_EXTRA_FEATURES
from wskan_ext.simulate import (
    LearnedSimulator,
    evaluate_learned_simulator,
    random_kans,
    simulate_forward,
    train_learned_simulator,
)

TOL = 1e-10
BASES = ["silu", "identity", "tanh", "relu2", "zero"]


def rand_kan(widths, G, k, B, seed, base="silu", dtype=torch.float64, mask_prob=0.2):
    """Random KANWeights (random non-uniform per-neuron grids, 20 % masked edges, random node
    affines) from the library's public test strategies."""
    arch = {"widths": widths, "grid_sizes": G, "k": k, "base_fun": base}
    return kst.random_kan(arch, seed, num_models=B, dtype=dtype, mask_prob=mask_prob)


def rel_err(a, b):
    return ((a - b).abs() / b.abs().clamp_min(1.0)).max().item()


@st.composite
def mixed_batches(draw, mask_prob=0.2):
    G, k = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    items = []
    for _ in range(draw(st.integers(1, 3))):
        depth = draw(st.integers(1, 3))
        widths = draw(st.lists(st.integers(1, 4), min_size=depth + 1, max_size=depth + 1))
        B = draw(st.integers(1, 3))
        items.append(rand_kan(widths, G, k, B, draw(st.integers(0, 2**16)), draw(st.sampled_from(BASES)),
                              mask_prob=mask_prob))
    return items


def _inputs(widths0, seed, S=9):
    g = torch.Generator().manual_seed(seed)
    return [3 * torch.rand(S, n, generator=g, dtype=torch.float64) - 1.5 for n in widths0]


@given(mixed_batches())
def test_exact_simulator_equals_forward(items):
    singles = [v for w in items for v in w.unbind()]
    xs = _inputs([w.widths[0] for w in singles], 0)
    out = simulate_forward(kan_to_graph(items), xs)
    for o, w, x in zip(out, singles, xs):
        assert rel_err(o, w(x)) <= TOL


def test_exact_simulator_batched_tensor_inputs_and_states():
    w = rand_kan([3, 4, 2], 5, 3, 6, 0)
    x = 3 * torch.rand(6, 11, 3, dtype=torch.float64) - 1.5
    g = kan_to_graph(w)
    out, states = simulate_forward(g, x, return_states=True)
    ref, acts = w(x, return_hidden=True)
    assert out.shape == (6, 11, 2) and rel_err(out, ref) <= TOL
    hidden = states[g.node_layer == 1].reshape(6, 4, 11).transpose(1, 2)
    assert rel_err(hidden, acts[1]) <= TOL
    shared = torch.rand(5, 3, dtype=torch.float64)
    assert rel_err(simulate_forward(g, shared), w(shared)) <= TOL


def test_exact_simulator_native_module_and_permuted():
    module = KAN([2, 5, 3], grid=4, k=2, num_models=3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.rand(3, 7, 2, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        ref = module(x)
    w = module.weights(detach=True)
    assert rel_err(simulate_forward(kan_to_graph(w), x), ref) <= TOL
    wp = permute_hidden(w, [torch.randperm(5, generator=torch.Generator().manual_seed(1))])
    assert rel_err(simulate_forward(kan_to_graph(wp), x), ref) <= TOL


def test_exact_simulator_uses_the_local_kernel_on_uniform_grids(monkeypatch):
    """On uniform knot rows (a freshly initialised module) the simulator's messages take the
    local-support kernel and still equal the forward pass; on the non-uniform grids of the
    other tests, Cox--de Boor (``spline_eval``'s automatic choice)."""
    from wskan_ext.kan import local_spline

    calls = []
    real = local_spline.local_spline_eval
    monkeypatch.setattr(local_spline, "local_spline_eval", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    module = KAN([3, 4, 2], grid=5, k=3, num_models=2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = torch.rand(2, 11, 3, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        ref = module(x)
    assert rel_err(simulate_forward(kan_to_graph(module.weights(detach=True)), x), ref) <= TOL
    assert calls  # one call per KAN layer
    calls.clear()
    w = rand_kan([3, 4, 2], 4, 2, 1, 5)  # random non-uniform grids
    xs = _inputs([3], 1)
    assert rel_err(simulate_forward(kan_to_graph(w), xs)[0], w.unbind()[0](xs[0])) <= TOL
    assert not calls


def test_exact_simulator_pykan():
    kan_mod = pytest.importorskip("kan")
    from wskan_ext.adapters.pykan import preserve_global_rng

    models = []
    for seed, width in ((0, [2, 3, 1]), (1, [3, 2, 2, 2])):
        with preserve_global_rng():
            m = kan_mod.KAN(width=list(width), grid=5, k=3, auto_save=False, seed=seed).type(torch.float64)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in m.act_fun:
                layer.coef.copy_(torch.randn(layer.coef.shape, generator=g, dtype=torch.float64))
            for p in m.node_bias:
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
        m.update_grid_from_samples(2 * torch.randn(40, width[0], generator=g, dtype=torch.float64))
        models.append(m)
    xs = _inputs([2, 3], 3)
    out = simulate_forward(kan_to_graph(models), xs)
    for o, m, x in zip(out, models, xs):
        with torch.no_grad():
            assert rel_err(o, m(x)) <= TOL


@given(mixed_batches(mask_prob=0.0))  # no masked edges: a masked edge's neighbours may be dead
@settings(max_examples=examples(10))
def test_negative_twins(items):
    singles = [v for w in items for v in w.unbind()]
    xs = _inputs([w.widths[0] for w in singles], 1)
    ref = [w(x) for w, x in zip(singles, xs)]
    g = kan_to_graph(items)

    def err(graph):
        return max(rel_err(o, r) for o, r in zip(simulate_forward(graph, xs), ref))

    # flip the direction of one edge whose function is not identically zero
    live = (g.edge_attr.abs().sum(-1) > 0) & (g.edge_scales[:, 2] > 0)
    for into_hidden in (True, False):
        cand = (live & ((g.node_role[g.edge_index[1]] == 1) == into_hidden)).nonzero().squeeze(1)
        if not cand.numel():
            continue
        flipped = g.clone()
        flipped.edge_index = g.edge_index.clone()
        flipped.edge_index[:, cand[0]] = g.edge_index.flip(0)[:, cand[0]]
        if into_hidden:
            assert err(flipped) > 1e-8  # a hidden neuron now sends into the previous layer: wrong output
        else:
            with pytest.raises(ValueError, match="starts at an output neuron"):
                err(flipped)
    # swap the knot rows of the first two input neurons of the first graph that has two
    two = [b for b, w in enumerate(singles) if w.widths[0] >= 2]
    if two:
        a = int(g.ptr[two[0]])
        K = g.x.shape[1] - NODE_EXTRA_FEATURES
        swapped = g.clone()
        swapped.x = g.x.clone()
        swapped.x[[a, a + 1], :K] = g.x[[a + 1, a], :K]
        assert err(swapped) > 1e-8


def test_simulator_errors():
    w = rand_kan([2, 3], 2, 2, 2, 0)
    with pytest.raises(ValueError, match="encoding='coef'"):
        simulate_forward(kan_to_graph(w, encoding="values"), torch.zeros(2, 4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"inputs must have shape \(2, S, 2\)"):
        simulate_forward(kan_to_graph(w), torch.zeros(3, 4, 2, dtype=torch.float64))
    g = kan_to_graph(w)
    del g.edge_layer
    with pytest.raises(ValueError, match="edge_layer"):
        simulate_forward(g, torch.zeros(4, 2, dtype=torch.float64))


def test_learned_simulator_trains_and_batches():
    gen = torch.Generator().manual_seed(0)
    w = random_kans([2, 3, 1], 4, generator=gen)
    g = kan_to_graph(w)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LearnedSimulator(g.x.shape[1], g.edge_attr.shape[1], hidden_channels=16, num_layers=2)
    before = evaluate_learned_simulator(model, [2, 3, 1], num_models=256, generator=torch.Generator().manual_seed(5))
    losses = train_learned_simulator(model, [2, 3, 1], steps=60, batch_size=32, generator=gen)
    after = evaluate_learned_simulator(model, [2, 3, 1], num_models=256, generator=torch.Generator().manual_seed(5))
    assert len(losses) == 60 and all(torch.isfinite(torch.tensor(losses)))
    assert after["mse"] < before["mse"]
    x = torch.rand(4, 2) * 2 - 1
    with torch.no_grad():
        batch = model.predict(g, x)
        single = torch.cat([model.predict(kan_to_graph(w[b].unsqueeze()), x[b : b + 1]) for b in range(4)])
    assert batch.shape == (4, 1) and torch.allclose(batch, single, atol=1e-6)


def _sim(g, propagation="layered", num_layers=2):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return LearnedSimulator(g.x.shape[1], g.edge_attr.shape[1], hidden_channels=8, num_layers=num_layers,
                                propagation=propagation).double()


@pytest.mark.parametrize("propagation", ["layered", "all"])
def test_learned_simulator_hidden_permutation_invariant(propagation):
    w = rand_kan([2, 3, 4, 1], 3, 2, 3, 4)
    g = kan_to_graph(w)
    model = _sim(g, propagation, num_layers=3)
    x = torch.rand(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        ref = model.predict(g, x)
        perm = permute_hidden(w, [torch.tensor([2, 0, 1]), torch.tensor([3, 1, 0, 2])])
        assert (model.predict(kan_to_graph(perm), x) - ref).abs().max() <= 1e-9
        # negative twin: swapping the two input neurons (not a symmetry) changes the prediction
        swapped = w._replace(grid=[w.grid[0].flip(1), *w.grid[1:]], coef=[w.coef[0].flip(1), *w.coef[1:]],
                             scale_base=[w.scale_base[0].flip(1), *w.scale_base[1:]],
                             scale_sp=[w.scale_sp[0].flip(1), *w.scale_sp[1:]], mask=[w.mask[0].flip(1), *w.mask[1:]])
        assert (model.predict(kan_to_graph(swapped), x) - ref).abs().max() > 1e-8  # (untrained: ~1e-7)


def test_learned_simulator_layered_rounds_and_errors():
    w = rand_kan([2, 3, 1], 3, 2, 2, 5)
    g = kan_to_graph(w)
    x = torch.rand(2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # changing the last layer's edge functions must not change the predicted hidden values
    # (a neuron is final once its round is done) but does change the outputs (negative twin)
    other = kan_to_graph(w._replace(coef=[w.coef[0], w.coef[1] + 1.0]))
    hidden = g.node_layer == 1
    with torch.no_grad():
        lay = _sim(g)
        assert (lay(g, x)[hidden] - lay(other, x)[hidden]).abs().max() <= 1e-12
        assert (lay.predict(g, x) - lay.predict(other, x)).abs().max() > 1e-8
        # a shallower KAN leaves the extra rounds unused
        assert lay(kan_to_graph(rand_kan([2, 1], 3, 2, 2, 5)), x).shape == (6,)
    deep = kan_to_graph(rand_kan([2, 3, 3, 1], 3, 2, 2, 5))
    with pytest.raises(ValueError, match="num_layers >= 3"):
        lay(deep, x)
    with pytest.raises(ValueError, match="propagation"):
        _sim(g, "backward")
    with pytest.raises(ValueError, match="supervise"):
        train_learned_simulator(lay, [2, 3, 1], steps=1, supervise="hidden")


def test_device_round_trip_simulate_and_wskan(device):
    from wskan_ext import WSKAN, graph_to_kan

    items = [rand_kan([3, 4, 2], 3, 2, 2, 0).to(device), rand_kan([2, 3, 3, 1], 3, 2, 1, 1).to(device)]
    g = kan_to_graph(items)
    assert g.edge_index.device.type == device.type and g.x.device.type == device.type
    back = graph_to_kan(g)
    assert back[0].equal(items[0][0]) and back[2].equal(items[1][0])
    xs = [x.to(device) for x in _inputs([3, 3, 2], 4)]
    out = simulate_forward(g, xs)
    for o, w, x in zip(out, [items[0][0], items[0][1], items[1][0]], xs):
        assert rel_err(o, w(x)) <= TOL
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = WSKAN(g.x.shape[1], g.edge_attr.shape[1], 8, 2, graph_out_channels=1).double().to(device)
    assert model(g).graph.shape == (3, 1)
