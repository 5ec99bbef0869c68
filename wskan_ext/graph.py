r"""The KAN-graph: KANs as PyG graphs (:func:`kan_to_graph`) and back (:func:`graph_to_kan`).

Nodes are all neurons of all layers; a directed edge ``(l, i) -> (l+1, j)`` carries
the edge function ``phi_ij`` of layer ``l``. For one KAN with widths ``[n_0..n_L]``
neuron ``(l, i)`` is node ``node_offset[l] + i`` and edge ``(l, i, j)`` is edge
``edge_offset[l] + i * n_{l+1} + j`` (layers in order, source-major). Graphs of many
KANs are concatenated PyG-style into one :class:`~torch_geometric.data.Batch`.

Fields of the returned batch (``N`` nodes, ``E`` edges, ``B`` graphs):

=================  ==============  ===========================================================
field              shape           content
=================  ==============  ===========================================================
``x``              ``(N, F)``      ``[knots (K) | node_scale | node_bias | role one-hot (3)]``
                                   for ``encoding="coef"`` (``K = G+2k+1``; output neurons have
                                   zero knots, input neurons the affine ``(1, 0)``);
                                   ``[lo | hi | node_scale | node_bias | role one-hot (3)]``
                                   for ``encoding="values"`` (``[lo, hi]`` = grid range)
``edge_index``     ``(2, E)``      ``(source, target)`` node indices
``edge_attr``      ``(E, C)``      ``"coef"``: ``KANWeights.edge_features()`` (``C=G+k+1``);
                                   ``"values"``: ``phi_ij`` at ``num_points`` equispaced points
                                   of the source neuron's grid range
``edge_coef``      ``(E, G+k)``    raw ``coef`` (``"coef"`` only; for exact inversion)
``edge_scales``    ``(E, 3)``      raw ``(scale_base, scale_sp, mask)`` (``"coef"`` only)
``node_layer``     ``(N,)``        layer ``l`` of the neuron
``node_pos``       ``(N,)``        index ``i`` of the neuron within its layer
``node_role``      ``(N,)``        0 input, 1 hidden, 2 output
``node_k``         ``(N,)``        spline order of the layer the neuron feeds (-1 for outputs)
``node_base_fun``  ``(N,)``        index in :data:`BASE_FUNCTION_NAMES` of that layer's base
                                   function (-1 for outputs)
``edge_layer``     ``(E,)``        layer ``l`` of the edge
``kan_encoding``   ``(B,)``        0 for ``"coef"``, 1 for ``"values"``
``batch``          ``(N,)``        graph of each node (PyG); ``ptr``: ``(B+1,)`` node offsets
=================  ==============  ===========================================================
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch_geometric.data import Batch, Data

from .kan.spline import BASE_FUNCTIONS
from .kan.weights import KANWeights

__all__ = [
    "kan_to_graph",
    "graph_to_kan",
    "edge_output_to_kan",
    "node_output_to_kan",
    "graph_groups",
    "make_batch",
    "BASE_FUNCTION_NAMES",
    "ROLE_INPUT",
    "ROLE_HIDDEN",
    "ROLE_OUTPUT",
    "NODE_EXTRA_FEATURES",
]

#: Base function names in the order used by ``node_base_fun``.
BASE_FUNCTION_NAMES: Tuple[str, ...] = tuple(sorted(BASE_FUNCTIONS))
ROLE_INPUT, ROLE_HIDDEN, ROLE_OUTPUT = 0, 1, 2
#: Number of node feature columns after the knots (or grid range), namely node_scale,
#: node_bias and the three role flags.
NODE_EXTRA_FEATURES = 5
ENCODINGS = {"coef": 0, "values": 1}
_NODE_FIELDS = ("node_layer", "node_pos", "node_role", "node_k", "node_base_fun")


def _normalise(kans) -> List[KANWeights]:
    """Any accepted input -> a list of batched KANWeights, in graph order."""
    from .registry import as_kan_weights

    items = list(kans) if isinstance(kans, (list, tuple)) else [kans]
    if not items:
        raise ValueError("kan_to_graph: got an empty list of KANs")
    out = []
    for i, obj in enumerate(items):
        w = obj if isinstance(obj, KANWeights) else as_kan_weights(obj)
        if not isinstance(w, KANWeights):
            raise TypeError(f"kan_to_graph: item {i} converted to {type(w).__name__}, expected KANWeights")
        out.append(w.unsqueeze())
    return out


def _check(w: KANWeights, label: str) -> None:
    """Fast re-validation: full :meth:`KANWeights.validate` only when a cheap test (sums are
    finite, knots increase) fails, so that the error names the layer and tensor."""
    ok = all(bool(torch.isfinite(t.sum())) for f in ("coef", "scale_base", "scale_sp", "mask", "node_scale", "node_bias")
             for t in getattr(w, f))
    ok = ok and all(bool(torch.isfinite(g).all()) and bool((g[..., 1:] >= g[..., :-1]).all()) for g in w.grid)
    if not ok:
        try:
            w.validate()
        except (TypeError, ValueError) as err:
            raise type(err)(f"{label}: {err}") from None


def _arch_key(w: KANWeights) -> tuple:
    return (tuple(w.widths), tuple(w.grid_sizes), tuple(w.k), tuple(w.base_fun))


def _template(widths: Sequence[int], device) -> Dict[str, torch.Tensor]:
    """Per-graph index tensors (node and edge order of the layout contract)."""
    n = torch.tensor(widths, device=device)
    node_off = [0]
    for v in widths:
        node_off.append(node_off[-1] + v)
    L = len(widths) - 1
    node_layer = torch.repeat_interleave(torch.arange(L + 1, device=device), n)
    node_pos = torch.cat([torch.arange(v, device=device) for v in widths])
    src, dst, elayer = [], [], []
    for l in range(L):
        a, b = widths[l], widths[l + 1]
        src.append(node_off[l] + torch.arange(a, device=device).repeat_interleave(b))
        dst.append(node_off[l + 1] + torch.arange(b, device=device).repeat(a))
        elayer.append(torch.full((a * b,), l, device=device, dtype=torch.long))
    role = torch.full_like(node_layer, ROLE_HIDDEN)
    role[node_layer == 0] = ROLE_INPUT
    role[node_layer == L] = ROLE_OUTPUT
    return dict(
        edge_index=torch.stack([torch.cat(src), torch.cat(dst)]),
        edge_layer=torch.cat(elayer),
        node_layer=node_layer,
        node_pos=node_pos,
        node_role=role,
    )


def _group_tensors(w: KANWeights, encoding: str, num_points: int) -> Dict[str, torch.Tensor]:
    """All tensors of a stack of ``B`` same-architecture KANs, ``(B, N_g, .)`` / ``(B, E_g, .)``."""
    B, widths, L = w.num_models, w.widths, w.depth
    dt, dev = w.dtype, w.device
    t = _template(widths, dev)
    k_node = torch.cat([torch.full((widths[l],), w.k[l], device=dev) for l in range(L)] + [torch.full((widths[L],), -1, device=dev)])
    bf = [BASE_FUNCTION_NAMES.index(b) for b in w.base_fun]
    bf_node = torch.cat([torch.full((widths[l],), bf[l], device=dev) for l in range(L)] + [torch.full((widths[L],), -1, device=dev)])
    if encoding == "coef":
        node_geom = [w.grid[l] for l in range(L)]
        K = w.grid[0].shape[-1]
    else:
        node_geom = [torch.stack([g[..., w.k[l]], g[..., -1 - w.k[l]]], dim=-1) for l, g in enumerate(w.grid)]
        K = 2
    node_geom.append(torch.zeros(B, widths[L], K, dtype=dt, device=dev))
    scale = [torch.ones(B, widths[0], dtype=dt, device=dev)] + list(w.node_scale)
    bias = [torch.zeros(B, widths[0], dtype=dt, device=dev)] + list(w.node_bias)
    role = torch.nn.functional.one_hot(t["node_role"], 3).to(dt).expand(B, -1, -1)
    x = torch.cat([torch.cat(node_geom, 1), torch.cat(scale, 1).unsqueeze(-1), torch.cat(bias, 1).unsqueeze(-1), role], -1)
    out = dict(t, x=x, node_k=k_node, node_base_fun=bf_node)
    if encoding == "coef":
        feats = w.edge_features()
        out["edge_attr"] = torch.cat([f.reshape(B, -1, f.shape[-1]) for f in feats], 1)
        out["edge_coef"] = torch.cat([c.reshape(B, -1, c.shape[-1]) for c in w.coef], 1)
        out["edge_scales"] = torch.cat(
            [torch.stack([w.scale_base[l], w.scale_sp[l], w.mask[l]], -1).reshape(B, -1, 3) for l in range(L)], 1
        )
    else:
        vals = []
        steps = torch.linspace(0, 1, num_points, dtype=dt, device=dev)
        for l, g in enumerate(w.grid):
            lo, hi = g[..., w.k[l], None], g[..., -1 - w.k[l], None]
            pts = (lo + (hi - lo) * steps).transpose(-1, -2)  # (B, P, n): each neuron's own grid range
            v = w.edge_functions(l, pts).permute(0, 2, 3, 1)  # (B, n, m, P)
            vals.append(v.reshape(B, -1, num_points))
        out["edge_attr"] = torch.cat(vals, 1)
    return out


def kan_to_graph(kans, *, encoding: str = "coef", num_points: int = 16, validate: bool = True) -> Batch:
    r"""Build the KAN-graph batch of one or many KANs (fields: see the module docstring).

    Args:
        kans: a :class:`~wskan_ext.KANWeights` (single or batched), anything
            :func:`~wskan_ext.as_kan_weights` accepts (a native or pykan KAN, ...), or a
            list of those, possibly with different architectures (graphs keep the
            input order; a batched item contributes its models in order).
        encoding: ``"coef"`` (canonical spline coefficients, exact, invertible by
            :func:`graph_to_kan`; every layer of every KAN must share ``G`` and ``k``) or
            ``"values"`` (edge-function values at ``num_points`` equispaced points of the
            source neuron's grid range ``[t_k, t_{G+k}]``; works across grid sizes and
            spline orders, not invertible).
        num_points: number of sample points for ``encoding="values"``.
        validate: re-check every input for non-finite values and knot order (weights may
            have been changed in place since they were validated); errors name the item,
            layer and tensor.

    Construction is vectorised: one pass of tensor ops per distinct architecture.

    Shapes:
        - ``x``: ``(N, K + 5)`` (``"coef"``) or ``(N, 7)`` (``"values"``);
        - ``edge_attr``: ``(E, G + k + 1)`` or ``(E, num_points)``; ``edge_index``: ``(2, E)``.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"kan_to_graph: encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}")
    if encoding == "values" and (not isinstance(num_points, int) or num_points < 2):
        raise ValueError(f"kan_to_graph: num_points must be an int >= 2, got {num_points!r}")
    ws = _normalise(kans)
    if validate:
        for i, w in enumerate(ws):
            _check(w, f"kan_to_graph: item {i}")
    if encoding == "coef":
        ref = (ws[0].grid_sizes[0], ws[0].k[0])
        for i, w in enumerate(ws):
            for l, (G, k) in enumerate(zip(w.grid_sizes, w.k)):
                if (G, k) != ref:
                    raise ValueError(
                        f"kan_to_graph: encoding='coef' needs one grid size G and spline order k for all layers of "
                        f"all KANs; item {i} layer {l} has (G={G}, k={k}) but item 0 layer 0 has (G={ref[0]}, "
                        f"k={ref[1]}); use encoding='values' to mix them"
                    )
    dt, dev = ws[0].dtype, ws[0].device
    for i, w in enumerate(ws):
        if w.dtype != dt or w.device != dev:
            raise ValueError(f"kan_to_graph: item {i} is {w.dtype} on {w.device}, item 0 is {dt} on {dev}")
    # group by architecture; remember the graph index of every model
    groups: Dict[tuple, list] = {}
    start = 0
    for w in ws:
        groups.setdefault(_arch_key(w), []).append((w, start))
        start += w.num_models
    num_graphs = start
    sizes, order = [], []
    for key, members in groups.items():
        widths = key[0]
        sizes.append((sum(widths), sum(a * b for a, b in zip(widths[:-1], widths[1:]))))
        order.append(torch.cat([torch.arange(s, s + m.num_models, device=dev) for m, s in members]))
    graph_of = torch.cat(order)  # group-order position -> graph index
    n_nodes = torch.cat([torch.full((len(o),), n, device=dev) for o, (n, _) in zip(order, sizes)])
    n_edges = torch.cat([torch.full((len(o),), e, device=dev) for o, (_, e) in zip(order, sizes)])
    identity = bool(torch.equal(graph_of, torch.arange(num_graphs, device=dev)))
    pos = torch.empty_like(graph_of)
    pos[graph_of] = torch.arange(num_graphs, device=dev)  # graph index -> group-order position
    nn_g, ne_g = n_nodes[pos], n_edges[pos]
    node_ptr = torch.cat([n_nodes.new_zeros(1), nn_g.cumsum(0)])
    edge_ptr = torch.cat([n_edges.new_zeros(1), ne_g.cumsum(0)])
    blocks = []
    for members, graphs in zip(groups.values(), order):
        w = members[0][0] if len(members) == 1 else KANWeights.stack([m[0] for m in members])
        b = _group_tensors(w, encoding, num_points)
        # global edge_index of this group's graphs: template + node offset of each graph
        b["edge_index"] = (b["edge_index"].unsqueeze(1) + node_ptr[graphs].view(1, -1, 1)).reshape(2, -1).t()
        blocks.append(b)

    def gather(per_group, counts_grouporder, counts_final):
        flat = per_group[0] if len(per_group) == 1 else torch.cat(per_group, 0)
        if identity:
            return flat
        src_start = torch.cat([counts_grouporder.new_zeros(1), counts_grouporder.cumsum(0)[:-1]])[pos]
        dst_start = torch.cat([counts_final.new_zeros(1), counts_final.cumsum(0)[:-1]])
        idx = torch.repeat_interleave(src_start - dst_start, counts_final) + torch.arange(flat.shape[0], device=dev)
        return flat[idx]

    def node_cat(key):
        return gather([b[key].reshape(-1, *b[key].shape[2:]) if b[key].dim() == 3 else b[key].repeat(b["x"].shape[0])
                       for b in blocks], n_nodes, nn_g)

    def edge_cat(key):
        return gather([b[key].reshape(-1, b[key].shape[-1]) if b[key].dim() == 3 else b[key].repeat(b["x"].shape[0])
                       for b in blocks], n_edges, ne_g)

    node = {"x": node_cat("x"), **{key: node_cat(key) for key in _NODE_FIELDS}}
    edge_keys = ["edge_attr", "edge_layer"] + (["edge_coef", "edge_scales"] if encoding == "coef" else [])
    edge = {key: edge_cat(key) for key in edge_keys}
    edge_index = gather([b["edge_index"] for b in blocks], n_edges, ne_g).t()
    kan_encoding = torch.full((num_graphs,), ENCODINGS[encoding], device=dev)
    return make_batch(node, edge, edge_index, node_ptr, edge_ptr, {"kan_encoding": kan_encoding})


def make_batch(node: Dict[str, torch.Tensor], edge: Dict[str, torch.Tensor], edge_index: torch.Tensor,
               node_ptr: torch.Tensor, edge_ptr: torch.Tensor,
               graph: Optional[Dict[str, torch.Tensor]] = None) -> Batch:
    """The PyG ``Batch`` that ``Batch.from_data_list`` would build from the graphs, made
    directly from their concatenated tensors (no per-graph ``Data``; the speed of
    :func:`kan_to_graph` and of the task models' mini-batches). ``batch``, ``ptr`` and
    PyG's slicing bookkeeping are filled in, so ``to_data_list``, ``get_example`` and
    re-batching work; ``tests/test_graph.py`` compares every field with
    ``Batch.from_data_list`` so that a PyG change to that bookkeeping fails loudly.

    Shapes:
        - ``node[key]``: ``(N, ...)``; ``edge[key]``: ``(E, ...)``; ``edge_index``: ``(2, E)``
          in global node numbering; ``graph[key]``: ``(B, ...)``;
        - ``node_ptr``: ``(B + 1,)`` node offsets; ``edge_ptr``: ``(B + 1,)`` edge offsets.
    """
    graph = graph or {}
    num_graphs = node_ptr.numel() - 1
    out = Batch(_base_cls=Data)
    for fields in (node, edge, graph):
        for key, value in fields.items():
            out[key] = value
    out.edge_index = edge_index
    out.batch = torch.repeat_interleave(torch.arange(num_graphs, device=node_ptr.device), node_ptr.diff())
    out.ptr = node_ptr
    zeros = torch.zeros(num_graphs, dtype=torch.long, device=node_ptr.device)
    out._num_graphs = num_graphs
    out._slice_dict = {**{k: node_ptr for k in node}, **{k: edge_ptr for k in [*edge, "edge_index"]},
                       **{k: torch.arange(num_graphs + 1, device=node_ptr.device) for k in graph}}
    out._inc_dict = {**{k: zeros for k in [*node, *edge, *graph]}, "edge_index": node_ptr[:-1]}
    return out


# ---------------------------------------------------------------------------- inverse
def _require(batch, fields, what: str) -> None:
    missing = [f for f in fields if getattr(batch, f, None) is None]
    if missing:
        raise ValueError(f"{what}: the graph is missing the field(s) {missing} (build it with kan_to_graph)")


def _graph_vector(batch) -> Tuple[torch.Tensor, int]:
    vec = getattr(batch, "batch", None)
    if vec is None:
        return torch.zeros(batch.num_nodes, dtype=torch.long, device=batch.x.device), 1
    return vec, int(batch.num_graphs) if isinstance(batch, Batch) else int(vec.max()) + 1


def graph_groups(batch) -> Tuple[List[dict], torch.Tensor, torch.Tensor]:
    """Split a KAN-graph batch into groups of graphs sharing one architecture.

    Returns ``(groups, node_ptr, edge_ptr)``; each group is a dict with ``graphs``
    (graph indices, ascending), ``widths``, ``k`` and ``base_fun`` (per layer), and the
    gather indices ``node_index: (B_g, N_g)`` and ``edge_index: (B_g, E_g)`` of its
    graphs' nodes and edges in the batch. Raises ``ValueError`` when the layout does
    not follow the KAN-graph contract.
    """
    _require(batch, ("x", "edge_index", "node_layer", "node_k", "node_base_fun"), "graph_groups")
    bvec, B = _graph_vector(batch)
    dev = bvec.device
    node_layer, node_k, node_bf = batch.node_layer.long(), batch.node_k.long(), batch.node_base_fun.long()
    N = bvec.shape[0]
    for f in ("node_layer", "node_k", "node_base_fun"):
        if tuple(batch[f].shape) != (N,):
            raise ValueError(f"graph_groups: {f} must have shape ({N},) (one entry per node), got {tuple(batch[f].shape)}")
    n_cnt = torch.bincount(bvec, minlength=B)
    egraph = bvec[batch.edge_index[0]]
    if egraph.numel() and not bool((egraph[1:] >= egraph[:-1]).all()):
        raise ValueError("graph_groups: edges are not ordered graph by graph (edge_index breaks the layout contract)")
    e_cnt = torch.bincount(egraph, minlength=B)
    node_ptr = torch.cat([n_cnt.new_zeros(1), n_cnt.cumsum(0)])
    edge_ptr = torch.cat([e_cnt.new_zeros(1), e_cnt.cumsum(0)])
    L1 = int(node_layer.max()) + 1
    cell = bvec * L1 + node_layer
    counts = torch.bincount(cell, minlength=B * L1).view(B, L1)
    stats = []
    for name, v in (("node_k", node_k), ("node_base_fun", node_bf)):
        hi = torch.full((B * L1,), -(2**62), device=dev).scatter_reduce(0, cell, v, "amax")
        lo = torch.full((B * L1,), 2**62, device=dev).scatter_reduce(0, cell, v, "amin")
        if not torch.equal(hi[counts.view(-1) > 0], lo[counts.view(-1) > 0]):
            raise ValueError(f"graph_groups: {name} differs between the neurons of one layer")
        stats.append(hi.view(B, L1))
    sig, inv = torch.unique(torch.cat([counts] + stats, 1), dim=0, return_inverse=True)
    groups = []
    for u in range(sig.shape[0]):
        row = sig[u].tolist()
        widths = [c for c in row[:L1] if c > 0]
        L = len(widths) - 1
        if L < 1 or any(c == 0 for c in row[: L + 1]):
            raise ValueError(f"graph_groups: a graph has layer widths {row[:L1]} (needs >= 2 non-empty layers)")
        ks, bfs = row[L1 : L1 + L], row[2 * L1 : 2 * L1 + L]
        if any(kk < 1 for kk in ks) or any(not 0 <= b < len(BASE_FUNCTION_NAMES) for b in bfs):
            raise ValueError(f"graph_groups: invalid node_k {ks} or node_base_fun {bfs} for widths {widths}")
        graphs = (inv == u).nonzero().squeeze(1)
        t = _template(widths, dev)
        nidx = node_ptr[graphs].unsqueeze(1) + torch.arange(sum(widths), device=dev)
        eidx = edge_ptr[graphs].unsqueeze(1) + torch.arange(t["edge_layer"].numel(), device=dev)
        if not torch.equal(e_cnt[graphs], torch.full_like(graphs, t["edge_layer"].numel())):
            raise ValueError(
                f"graph_groups: graphs with widths {widths} must have {t['edge_layer'].numel()} edges, "
                f"got {e_cnt[graphs].tolist()}"
            )
        if not torch.equal(node_layer[nidx], t["node_layer"].expand_as(nidx)):
            raise ValueError(f"graph_groups: nodes of graphs with widths {widths} are not ordered layer by layer")
        groups.append(dict(graphs=graphs, widths=widths, k=ks, base_fun=[BASE_FUNCTION_NAMES[b] for b in bfs],
                           node_index=nidx, edge_index=eidx))
    return groups, node_ptr, edge_ptr


def _per_graph(groups, per_group, num_graphs):
    if len(groups) == 1:
        return per_group[0]
    out = [None] * num_graphs
    for g, res in zip(groups, per_group):
        for j, gi in enumerate(g["graphs"].tolist()):
            out[gi] = res[j] if isinstance(res, KANWeights) else [t[j] for t in res]
    return out


def graph_to_kan(batch) -> Union[KANWeights, List[KANWeights]]:
    r"""Invert :func:`kan_to_graph` (``encoding="coef"``) exactly (bitwise).

    Returns a batched :class:`~wskan_ext.KANWeights` (one model per graph) when all graphs
    share one architecture, else a list with one unbatched ``KANWeights`` per graph, in
    graph order. A single :class:`~torch_geometric.data.Data` gives an unbatched KAN.

    Raises:
        ValueError: a field is missing (naming it), feature sizes disagree, the graph was
            built with ``encoding="values"`` (not invertible), or the weights fail validation.
    """
    _require(batch, ("x", "edge_index", "kan_encoding"), "graph_to_kan")
    if bool((batch.kan_encoding != ENCODINGS["coef"]).any()):
        raise ValueError("graph_to_kan: the graph was built with encoding='values', which is not invertible")
    _require(batch, ("edge_coef", "edge_scales", *_NODE_FIELDS, "edge_layer"), "graph_to_kan")
    groups, _, _ = graph_groups(batch)
    F = batch.x.shape[-1]
    nb = batch.edge_coef.shape[-1]
    if tuple(batch.edge_scales.shape[1:]) != (3,):
        raise ValueError(f"graph_to_kan: edge_scales must have shape (E, 3), got {tuple(batch.edge_scales.shape)}")
    results = []
    for g in groups:
        widths, ks, L = g["widths"], g["k"], len(g["widths"]) - 1
        K = F - NODE_EXTRA_FEATURES
        if any(K != nb + kk + 1 for kk in ks):
            raise ValueError(
                f"graph_to_kan: x has {F} features, i.e. {K} knots, but edge_coef has {nb} basis functions and "
                f"k={ks}: expected {nb + ks[0] + 1 + NODE_EXTRA_FEATURES} node features"
            )
        Bg = g["node_index"].shape[0]
        if len(groups) == 1:  # all graphs: contiguous blocks, views instead of gathers
            x = batch.x.reshape(Bg, -1, F)
            ec, es = batch.edge_coef.reshape(Bg, -1, nb), batch.edge_scales.reshape(Bg, -1, 3)
        else:
            x = batch.x[g["node_index"]]
            ec, es = batch.edge_coef[g["edge_index"]], batch.edge_scales[g["edge_index"]]
        kw = {f: [] for f in ("grid", "coef", "scale_base", "scale_sp", "mask", "node_scale", "node_bias")}
        no = eo = 0
        for l in range(L):
            n, m = widths[l], widths[l + 1]
            kw["grid"].append(x[:, no : no + n, :K])
            kw["node_scale"].append(x[:, no + n : no + n + m, K])
            kw["node_bias"].append(x[:, no + n : no + n + m, K + 1])
            kw["coef"].append(ec[:, eo : eo + n * m].reshape(Bg, n, m, nb))
            for c, f in enumerate(("scale_base", "scale_sp", "mask")):
                kw[f].append(es[:, eo : eo + n * m, c].reshape(Bg, n, m))
            no, eo = no + n, eo + n * m
        w = KANWeights(**kw, k=ks, base_fun=g["base_fun"], validate=False)
        _check(w, f"graph_to_kan: graphs with widths {widths}")  # full validation only if a cheap check fails
        results.append(w)
    out = _per_graph(groups, results, len(batch.kan_encoding))
    if not isinstance(batch, Batch) and isinstance(out, KANWeights):
        return out[0]
    return out


def _split_output(batch, out: torch.Tensor, which: str):
    groups, _, _ = graph_groups(batch)
    expected = batch.num_nodes if which == "node" else batch.edge_index.shape[1]
    if out.dim() != 2 or out.shape[0] != expected:
        raise ValueError(f"{which}_output_to_kan: expected a ({expected}, C) {which} output, got {tuple(out.shape)}")
    res = []
    for g in groups:
        t = out[g[f"{which}_index"]]
        w, chunks, o = g["widths"], [], 0
        for l in range(len(w) - 1 if which == "edge" else len(w)):
            shape = (w[l], w[l + 1]) if which == "edge" else (w[l],)
            size = shape[0] * (shape[1] if len(shape) == 2 else 1)
            chunks.append(t[:, o : o + size].reshape(t.shape[0], *shape, t.shape[-1]))
            o += size
        res.append(chunks)
    return _per_graph(groups, res, _graph_vector(batch)[1])


def edge_output_to_kan(batch, out: torch.Tensor):
    """Map an edge-level output ``(E, C)`` to the KANs' own layout: a list over layers of
    ``(B, n_l, n_{l+1}, C)`` when all graphs share widths, else a list over graphs of
    lists over layers of ``(n_l, n_{l+1}, C)``."""
    return _split_output(batch, out, "edge")


def node_output_to_kan(batch, out: torch.Tensor):
    """Map a node-level output ``(N, C)`` to a list over layers ``l = 0..L`` of
    ``(B, n_l, C)`` (one architecture) or a list over graphs of lists of ``(n_l, C)``."""
    return _split_output(batch, out, "node")
