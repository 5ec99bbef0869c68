"""WSKANLayer / WSKAN: invariance, equivariance, batching, errors (float64)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples
from wskan_ext import KAN, WSKAN, WSKANLayer, kan_to_graph, permute_hidden
from wskan_ext.graph import edge_output_to_kan, node_output_to_kan
from wskan_ext.kan import random_hidden_permutations

TOL = 1e-9


def rand_kan(widths, G, k, B, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    w = KAN(widths, G, k, num_models=B, generator=g, dtype=dtype).weights(detach=True)
    grids = [gr + 0.3 * torch.rand(gr.shape[:-1] + (1,), generator=g, dtype=dtype) for gr in w.grid]  # distinct rows
    return w._replace(grid=grids, coef=[torch.randn(c.shape, generator=g, dtype=dtype) for c in w.coef],
                      node_bias=[0.3 * torch.randn(b.shape, generator=g, dtype=dtype) for b in w.node_bias])


def make_model(g, seed=0, **kw):
    kw.setdefault("graph_out_channels", 3)
    kw.setdefault("node_out_channels", 2)
    kw.setdefault("edge_out_channels", 2)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = WSKAN(g.x.shape[1], g.edge_attr.shape[1], 16, 3, **kw).double()
        if model.context:  # zero-initialised by design; non-zero here so the checks can fail
            for lin in (*model.node_context, *model.edge_context):
                torch.nn.init.normal_(lin.weight, std=0.3)
                torch.nn.init.normal_(lin.bias, std=0.3)
        return model


@st.composite
def batched_kans(draw):
    depth = draw(st.integers(2, 3))
    widths = draw(st.lists(st.integers(2, 4), min_size=depth + 1, max_size=depth + 1))
    return rand_kan(widths, draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(0, 999)))


def _perm_blocks(t, perms_in, perms_out):
    """Index (B, n, m, C) by per-model source / target permutations (None = identity)."""
    B = t.shape[0]
    ar = torch.arange(B)[:, None]
    if perms_in is not None:
        t = t[ar, perms_in]
    if perms_out is not None:
        t = t[ar[:, :, None], torch.arange(t.shape[1])[None, :, None], perms_out[:, None, :]]
    return t


CONFIGS = [dict(aggr="sum", backward=True, pool="mean"), dict(aggr="mean", backward=False, pool="sum"),
           dict(aggr="sum", backward=True, pool="sum"), dict(readout="layer", max_layers=3),
           dict(readout="layer", max_layers=3, io_readout=True, aggr=["sum", "max"]),
           dict(io_readout=True), dict(readout="layer", max_layers=3, io_readout=True, edge_hidden_channels=8),
           dict(context=True, max_layers=3), dict(readout="layer", max_layers=3, shared=True, context=True),
           dict(typed_edges=True, max_layers=3), dict(readout="layer", max_layers=3, io_readout=True, typed_edges=True),
           dict(product=True), dict(readout="layer", max_layers=3, product=True, aggr=["sum", "max"], backward=False),
           dict(bilinear=True), dict(readout="layer", max_layers=3, bilinear=True, shared=True, typed_edges=True),
           dict(lookup=4), dict(readout="layer", max_layers=3, io_readout=True, typed_edges=True, lookup=3)]


def graph_for(w, cfg, P=7):
    """``kan_to_graph(w)``, plus the sampled edge functions ``edge_values`` that ``lookup`` reads."""
    g = kan_to_graph(w)
    if cfg.get("lookup"):
        g.edge_values = kan_to_graph(w, encoding="values", num_points=P).edge_attr
    return g


@given(batched_kans(), st.sampled_from(CONFIGS))
@settings(max_examples=examples(12))
def test_invariance_and_equivariance(w, cfg):
    perms = random_hidden_permutations(w, torch.Generator().manual_seed(1), per_model=True)
    wp = permute_hidden(w, perms)
    g, gp = graph_for(w, cfg), graph_for(wp, cfg)
    model = make_model(g, **cfg)
    with torch.no_grad():
        o, op = model(g), model(gp)
    assert (o.graph - op.graph).abs().max() <= TOL
    nodes, nodes_p = node_output_to_kan(g, o.node), node_output_to_kan(gp, op.node)
    full = [None] + list(perms) + [None]
    for l, (a, b) in enumerate(zip(nodes, nodes_p)):
        ref = a if full[l] is None else a[torch.arange(a.shape[0])[:, None], full[l]]
        assert (ref - b).abs().max() <= TOL
    edges, edges_p = edge_output_to_kan(g, o.edge), edge_output_to_kan(gp, op.edge)
    for l, (a, b) in enumerate(zip(edges, edges_p)):
        assert (_perm_blocks(a, full[l], full[l + 1]) - b).abs().max() <= TOL


@given(batched_kans(), st.sampled_from([{}, dict(readout="layer", max_layers=3, io_readout=True),
                                       dict(context=True, shared=True, max_layers=3),
                                       dict(typed_edges=True, max_layers=3), dict(product=True),
                                       dict(bilinear=True), dict(lookup=4)]))
@settings(max_examples=examples(8))
def test_negative_twin_input_permutation_changes_output(w, cfg):
    p = torch.roll(torch.arange(w.widths[0]), 1)  # a non-identity permutation of the inputs
    kw = {f: list(getattr(w, f)) for f in ("grid", "coef", "scale_base", "scale_sp", "mask")}
    kw["grid"][0], kw["coef"][0] = w.grid[0][:, p], w.coef[0][:, p]
    for f in ("scale_base", "scale_sp", "mask"):
        kw[f][0] = getattr(w, f)[0][:, p]
    wp = w._replace(**kw)
    g, gp = graph_for(w, cfg), graph_for(wp, cfg)
    model = make_model(g, **cfg)
    with torch.no_grad():
        assert (model(g).graph - model(gp).graph).abs().max() > 1e-6
    # and hidden permutations that forget the grid rows are not symmetries either
    wbad = permute_hidden(w, [torch.roll(torch.arange(n), 1) for n in w.widths[1:-1]], permute_grid=False)
    with torch.no_grad():
        assert (model(g).graph - model(graph_for(wbad, cfg)).graph).abs().max() > 1e-9


@pytest.mark.parametrize("cfg", [{}, dict(readout="layer", max_layers=3, io_readout=True),
                                 dict(context=True, max_layers=3), dict(typed_edges=True, max_layers=3),
                                 dict(product=True), dict(bilinear=True), dict(lookup=4)])
def test_batch_equals_individual_mixed_architectures(cfg):
    items = [rand_kan([3, 4, 2], 2, 2, 2, 0), rand_kan([2, 5, 3, 1], 2, 2, 1, 1)[0], rand_kan([3, 2], 2, 2, 1, 2)[0]]
    g = graph_for(items, cfg)
    model = make_model(g, **cfg)
    with torch.no_grad():
        o = model(g)
        for b, d in enumerate(g.to_data_list()):
            single = graph_for(_single(items, b), cfg)
            s = model(single)
            assert (s.graph[0] - o.graph[b]).abs().max() <= 1e-12
            assert (s.node - o.node[g.ptr[b] : g.ptr[b + 1]]).abs().max() <= 1e-12
            eb = g.batch[g.edge_index[0]] == b
            assert (s.edge - o.edge[eb]).abs().max() <= 1e-12


def _single(items, b):
    flat = [v for w in items for v in (w.unbind() if w.batched else [w])]
    return flat[b]


def test_float32_and_gradients():
    w = rand_kan([3, 4, 2], 3, 3, 4, 0, dtype=torch.float32)
    g = kan_to_graph(w)
    model = WSKAN(g.x.shape[1], g.edge_attr.shape[1], 8, 2, graph_out_channels=1)
    out = model(g).graph
    assert out.shape == (4, 1) and out.dtype == torch.float32
    out.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.startswith(("output_", "node_head", "edge_head")))


def test_layer_api_and_errors():
    layer = WSKANLayer(8, 6, aggr="sum", backward=True)
    assert "WSKANLayer(node=8, edge=6" in repr(layer)
    x, e = torch.randn(5, 8), torch.randn(4, 6)
    ei = torch.tensor([[0, 0, 1, 1], [2, 3, 2, 4]])
    h, e2 = layer(x, ei, e)
    assert h.shape == (5, 8) and e2.shape == (4, 6)
    before = layer.node_proj.weight.clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.node_proj.weight)
    with pytest.raises(ValueError, match=r"node features must have shape \(N, 8\)"):
        layer(torch.randn(5, 7), ei, e)
    with pytest.raises(ValueError, match=r"edge features must have shape \(E, 6\)"):
        layer(x, ei, torch.randn(4, 5))
    with pytest.raises(ValueError, match="edge_index must have shape"):
        layer(x, ei[:, :3], e)
    # messages flow source -> target: a node with no incoming edge gets no forward message
    fwd_only = WSKANLayer(8, 6, backward=False, residual=False, norm=None)
    h1, _ = fwd_only(x, ei, e)
    h2, _ = fwd_only(x, ei, e + 1.0)
    assert torch.equal(h1[:2], h2[:2]) and not torch.equal(h1[2:], h2[2:])


def test_model_errors():
    w = rand_kan([3, 2], 2, 1, 2, 0)
    g = kan_to_graph(w)
    model = make_model(g)
    with pytest.raises(ValueError, match="edge_attr must have shape"):
        WSKAN(g.x.shape[1], g.edge_attr.shape[1] + 1, 8, 1).double()(g)
    bad = kan_to_graph(w)
    del bad.node_role
    with pytest.raises(ValueError, match="node_role"):
        model(bad)
    small = WSKAN(g.x.shape[1], g.edge_attr.shape[1], 8, 1, max_inputs=2).double()
    with pytest.raises(ValueError, match="max_inputs=2"):
        small(g)
    with pytest.raises(ValueError, match="node_extra"):
        WSKAN(g.x.shape[1], g.edge_attr.shape[1], 8, 1, extra_node_channels=1).double()(g)


def reference_layer(layer: WSKANLayer, x, edge_index, e, aggrs, bias_per_node=False, edge_type=None,
                    no_product=False, no_bilinear=False):
    """The class docstring's math with explicit concatenations ``[h_a, h_b, e]`` and
    per-edge messages (no fused projections, no aggregate-before-linear); with
    ``edge_type``, edge by edge with its own type's edge weight and bias."""
    H, Cn, k = layer.hidden_channels, layer.node_channels, layer.num_parts
    Wn, We_all, be_all = layer.node_proj.weight, layer.edge_proj.weight, layer.edge_proj.bias
    act = layer.edge_mlp[0]
    types = torch.zeros(e.shape[0], dtype=torch.long) if edge_type is None else edge_type

    def first(i, a, b):  # first linear map of part i on [h_a, h_b, e], one edge at a time
        rows = []
        for r in range(e.shape[0]):
            o = int(types[r]) * k * H  # the block of this edge's type
            We, be = We_all[o:o + k * H], be_all[o:o + k * H]
            W = torch.cat([Wn[i * H:(i + 1) * H], Wn[(k + i) * H:(k + i + 1) * H], We[i * H:(i + 1) * H]], 1)
            rows.append(torch.cat([a[r], b[r], e[r]]) @ W.T + be[i * H:(i + 1) * H])
        return torch.stack(rows) if rows else torch.zeros(0, H, dtype=e.dtype)

    src, dst = edge_index
    N = x.shape[0]

    def bil(i):  # part i's bilinear term (U e + c) * (V_a h_src + V_b h_dst), one edge at a time
        if not layer.bilinear or no_bilinear:  # no_bilinear: wrong on purpose (negative twin)
            return 0.0
        U, c, V = layer.bil_edge_proj.weight, layer.bil_edge_proj.bias, layer.bil_node_proj.weight
        rows = [(e[r] @ U[i * H:(i + 1) * H].T + c[i * H:(i + 1) * H])
                * (x[src[r]] @ V[i * H:(i + 1) * H].T + x[dst[r]] @ V[(k + i) * H:(k + i + 1) * H].T)
                for r in range(e.shape[0])]
        return torch.stack(rows) if rows else torch.zeros(0, H, dtype=e.dtype)

    def two_layer(mlp, z, i):  # Linear(act(z) + bilinear term)
        return mlp[1](mlp[0](z) + bil(i))

    def agg(msg, index):
        outs = []
        for a in aggrs:
            out = torch.zeros(N, msg.shape[1], dtype=msg.dtype)
            for v in range(N):
                m = msg[index == v]
                if len(m):
                    out[v] = {"sum": m.sum(0), "mean": m.mean(0), "max": m.max(0).values}[a]
            outs.append(out)
        return torch.cat(outs, 1)

    def message(mlp, z, index, i):
        if bias_per_node:  # wrong on purpose (negative twin)
            return mlp[1](agg(mlp[0](z) + bil(i), index))
        return agg(two_layer(mlp, z, i), index)

    parts = [x, message(layer.msg_fwd, first(0, x[src], x[dst]), dst, 0)]
    if layer.backward:
        parts.append(message(layer.msg_bwd, first(min(1, k - 1), x[src], x[dst]), src, min(1, k - 1)))
    if layer.product and not no_product:  # (P m) * (Q m) for every aggregated message m
        for m, lin in zip(parts[1:], layer.product_maps):
            M = m.shape[1]
            parts.append((m @ lin.weight[:M].T) * (m @ lin.weight[M:].T))
    if layer.product and no_product:  # wrong on purpose (negative twin): zeros in their place
        parts += [torch.zeros_like(m) for m in parts[1:]]
    h = layer.node_mlp(torch.cat(parts, 1))
    de = two_layer(layer.edge_mlp, first(k - 1, x[src], x[dst]), k - 1)
    h, e2 = (x + h, e + de) if layer.residual else (h, de)
    return layer.node_norm(h), layer.edge_norm(e2)


@given(st.integers(1, 6), st.integers(1, 12), st.sampled_from([["sum"], ["mean"], ["max"], ["sum", "mean", "max"]]),
       st.booleans(), st.booleans(), st.integers(0, 999), st.booleans(), st.integers(1, 3), st.booleans(),
       st.booleans())
@settings(max_examples=examples(20))
def test_layer_matches_reference_formula(n_extra, E, aggrs, backward, residual, seed, shared, T, product, bilinear):
    """The fused / reordered forward (index_select gathers, sum and mean aggregated before
    the message MLP's last affine map, typed edge maps gathered from one wide map) is the
    documented function, in float64, including nodes that receive no message; the negative
    twins drop the bias count per message and give every edge the type-0 weights."""
    g = torch.Generator().manual_seed(seed)
    N = n_extra + 2
    edge_index = torch.randint(0, N, (2, E), generator=g)
    x, e = torch.randn(N, 5, generator=g, dtype=torch.float64), torch.randn(E, 3, generator=g, dtype=torch.float64)
    etype = torch.randint(0, T, (E,), generator=g) if T > 1 else None
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layer = WSKANLayer(5, 3, 7, aggr=aggrs if len(aggrs) > 1 else aggrs[0], backward=backward,
                           residual=residual, shared=shared, num_edge_types=T, product=product,
                           bilinear=bilinear).double()
    for p in layer.parameters():  # non-zero biases everywhere (the bias count matters)
        torch.nn.init.normal_(p, generator=g)
    h, e2 = layer(x, edge_index, e, etype)
    h_ref, e_ref = reference_layer(layer, x, edge_index, e, aggrs, edge_type=etype)
    assert torch.allclose(h, h_ref, atol=1e-10, rtol=1e-10) and torch.allclose(e2, e_ref, atol=1e-10, rtol=1e-10)
    if product and E > 0:  # negative twin: the second-order terms matter
        h_bad, _ = reference_layer(layer, x, edge_index, e, aggrs, edge_type=etype, no_product=True)
        assert not torch.allclose(h, h_bad, atol=1e-6)
    if bilinear and E > 0:  # negative twin: the bilinear terms matter
        h_bad, e_bad = reference_layer(layer, x, edge_index, e, aggrs, edge_type=etype, no_bilinear=True)
        assert not torch.allclose(e2, e_bad, atol=1e-6)
    if etype is not None and bool((etype > 0).any()):  # negative twin: the types matter
        _, e_bad = reference_layer(layer, x, edge_index, e, aggrs)
        assert not torch.allclose(e2, e_bad, atol=1e-6)
    if aggrs == ["sum"] and (torch.bincount(edge_index[1], minlength=N) != 1).any():
        # negative twin: applying the message MLP's last map after the sum (its bias once per
        # node instead of once per message) is a different function, and the check sees it
        h_bad, _ = reference_layer(layer, x, edge_index, e, aggrs, bias_per_node=True)
        assert not torch.allclose(h, h_bad, atol=1e-6)


def test_context_starts_as_the_plain_model_and_needs_layers():
    """``context=True`` is zero-initialised: the fresh model computes what the model without
    it computes (same seed); it needs the graph's layer indices and enough ``max_layers``."""
    g = kan_to_graph(rand_kan([3, 4, 2], 2, 2, 2, 0))
    plain = WSKAN(g.x.shape[1], g.edge_attr.shape[1], 8, 2, graph_out_channels=1, max_layers=3).double()
    torch.manual_seed(0)
    plain.reset_parameters()
    ctx = WSKAN(g.x.shape[1], g.edge_attr.shape[1], 8, 2, graph_out_channels=1, max_layers=3, context=True).double()
    torch.manual_seed(0)
    ctx.reset_parameters()
    plain_state = plain.state_dict()
    ctx.load_state_dict({**ctx.state_dict(), **plain_state})
    with torch.no_grad():
        assert torch.equal(plain(g).graph, ctx(g).graph)
    bad = kan_to_graph(rand_kan([3, 4, 2], 2, 2, 2, 0))
    del bad.edge_layer
    with pytest.raises(ValueError, match=r"context=True.*edge_layer"):
        ctx(bad)
    short = WSKAN(g.x.shape[1], g.edge_attr.shape[1], 8, 1, max_layers=1, context=True).double()
    with pytest.raises(ValueError, match="max_layers=1"):
        short(g)


def test_typed_edges_bad_input_is_refused():
    """``num_edge_types > 1`` needs an in-range integer ``edge_type`` of one entry per edge; an
    untyped layer refuses one; ``WSKAN(typed_edges=True)`` needs the graph's ``edge_layer``
    and enough ``max_layers``."""
    layer = WSKANLayer(4, 3, 5, num_edge_types=2)
    x, e, ei = torch.randn(3, 4), torch.randn(2, 3), torch.tensor([[0, 1], [1, 2]])
    for bad, msg in ((None, "edge_type must be an integer tensor of shape \\(2,\\)"),
                     (torch.zeros(3, dtype=torch.long), "shape \\(2,\\)"),
                     (torch.zeros(2), "integer tensor"),
                     (torch.tensor([0, 2]), r"values must lie in \[0, 2\)")):
        with pytest.raises(ValueError, match=msg):
            layer(x, ei, e, bad)
    with pytest.raises(ValueError, match="num_edge_types=1"):
        WSKANLayer(4, 3, 5)(x, ei, e, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_edge_types must be >= 1"):
        WSKANLayer(4, 3, 5, num_edge_types=0)
    assert "num_edge_types=2" in repr(layer)
    g = kan_to_graph(rand_kan([3, 4, 2], 2, 2, 2, 0))
    model = WSKAN(g.x.shape[1], g.edge_attr.shape[1], 8, 1, graph_out_channels=1, max_layers=3,
                  typed_edges=True).double()
    model(g)
    bad = kan_to_graph(rand_kan([3, 4, 2], 2, 2, 2, 0))
    del bad.edge_layer
    with pytest.raises(ValueError, match=r"typed_edges=True.*edge_layer"):
        model(bad)
    with pytest.raises(ValueError, match="max_layers=1"):
        WSKAN(g.x.shape[1], g.edge_attr.shape[1], 8, 1, max_layers=1, typed_edges=True).double()(g)


@given(P=st.integers(2, 12), Q=st.integers(1, 5), a=st.floats(-3, 3), b=st.floats(-3, 3),
       seed=st.integers(0, 2 ** 16))
@settings(max_examples=examples(30))
def test_lookup_interpolates_the_samples_exactly(P, Q, a, b, seed):
    """``WSKANLayer._lookup``: at the sample positions it returns the samples; a linear function
    is interpolated exactly anywhere in [0, 1]; outside, the position is clamped to the ends."""
    g = torch.Generator().manual_seed(seed)
    s = torch.linspace(0, 1, P, dtype=torch.float64)
    lin = (a + b * s).expand(3, P)
    r = torch.rand(3, Q, generator=g, dtype=torch.float64)
    torch.testing.assert_close(WSKANLayer._lookup(r - 0.5, lin), a + b * r, rtol=0, atol=1e-12)
    v = torch.randn(3, P, generator=g, dtype=torch.float64)
    idx = torch.randint(0, P, (3, Q), generator=g)
    torch.testing.assert_close(WSKANLayer._lookup(idx.double() / (P - 1) - 0.5, v), v.gather(1, idx), rtol=0, atol=1e-12)
    out = WSKANLayer._lookup(torch.tensor([[-5.0, 5.0]] * 3, dtype=torch.float64), v)
    torch.testing.assert_close(out, v[:, [0, -1]], rtol=0, atol=1e-12)
    if P > 2:  # negative twin: a curved function is not linear between samples
        sq = (s ** 2).expand(3, P)
        mid = torch.full((3, 1), 0.5 / (P - 1) - 0.5, dtype=torch.float64)
        assert (WSKANLayer._lookup(mid, sq) - (0.5 / (P - 1)) ** 2).abs().max() > 1e-6


def test_lookup_reads_the_edge_values_and_refuses_bad_input():
    w = rand_kan([3, 4, 2], 3, 2, 2, 0)
    g = graph_for(w, {"lookup": 4})
    model = make_model(g, lookup=4)
    assert "lookup=4" in repr(model.layers[0])
    with torch.no_grad():
        o = model(g)
        g2 = graph_for(w, {"lookup": 4})
        g2.edge_values = g2.edge_values.flip(1)  # negative twin: other functions, same coefficients
        assert (model(g2).graph - o.graph).abs().max() > 1e-6
    bad = kan_to_graph(w)
    with pytest.raises(ValueError, match=r"WSKAN\(lookup=4\): the graph needs edge_values"):
        model(bad)
    layer = WSKANLayer(4, 3, 5, lookup=2)
    x, e, ei = torch.randn(3, 4), torch.randn(2, 3), torch.tensor([[0, 1], [1, 2]])
    for vals in (None, torch.randn(2, 1), torch.randn(3, 5), torch.randn(2)):
        with pytest.raises(ValueError, match=r"edge_values must have shape \(2, P\) with P >= 2"):
            layer(x, ei, e, None, vals)
    layer(x, ei, e, None, torch.randn(2, 5))
    with pytest.raises(ValueError, match="built with lookup=0"):
        WSKANLayer(4, 3, 5)(x, ei, e, None, torch.randn(2, 5))
    with pytest.raises(ValueError, match="lookup must be >= 0"):
        WSKANLayer(4, 3, 5, lookup=-1)


def test_lookup_positions_keep_float32_under_bf16_autocast():
    """Under ``torch.autocast`` the query map runs in bfloat16 (8 mantissa bits); the lookup
    positions are taken in float32, so a sample is read at the position asked for."""
    v = torch.linspace(0, 1, 33).expand(2, 33)  # the identity function, 33 samples
    q = torch.tensor([[0.2371, -0.4123]] * 2, dtype=torch.bfloat16)
    out = WSKANLayer._lookup(q, v)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, 0.5 + q.float(), rtol=0, atol=1e-6)
    layer = WSKANLayer(4, 3, 8, lookup=2)
    x, e, ei = torch.randn(3, 4), torch.randn(2, 3), torch.tensor([[0, 1], [1, 2]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, e2 = layer(x, ei, e, None, torch.randn(2, 5))
    assert torch.isfinite(h.float()).all() and torch.isfinite(e2.float()).all()
