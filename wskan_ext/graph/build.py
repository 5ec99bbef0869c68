"""KANs -> PyG graphs (:func:`kan_to_graph`) and the batching helper (:func:`make_batch`)."""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch_geometric.data import Batch, Data

from ..kan.weights import KANWeights
from .layout import _NODE_FIELDS, BASE_FUNCTION_NAMES, ENCODINGS, _arch_key, _check, _template

def _normalise(kans) -> List[KANWeights]:
    """Any accepted input -> a list of batched KANWeights, in graph order."""
    from ..registry import as_kan_weights

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


def _group_tensors(w: KANWeights, encoding: str, num_points: int, value_range: str = "grid") -> Dict[str, torch.Tensor]:
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
            c = w.k[l] if value_range == "grid" else 0  # [t_k, t_{G+k}] or the whole span [t_0, t_last]
            lo, hi = g[..., c, None], g[..., -1 - c, None]
            pts = (lo + (hi - lo) * steps).transpose(-1, -2)  # (B, P, n): each neuron's own range
            v = w.edge_functions(l, pts).permute(0, 2, 3, 1)  # (B, n, m, P)
            vals.append(v.reshape(B, -1, num_points))
        out["edge_attr"] = torch.cat(vals, 1)
    return out


def kan_to_graph(kans, *, encoding: str = "coef", num_points: int = 16, validate: bool = True,
                 value_range: str = "grid") -> Batch:
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
        value_range: where ``encoding="values"`` samples each edge function: ``"grid"``, the
            source neuron's grid range ``[t_k, t_{G+k}]``, or ``"support"``, the whole knot
            span ``[t_0, t_{G+2k}]`` (the outer knots' B-splines act on inputs that leave the
            grid range). The node features keep the grid range either way.
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
    if value_range not in ("grid", "support"):
        raise ValueError(f"kan_to_graph: value_range must be 'grid' or 'support', got {value_range!r}")
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
        b = _group_tensors(w, encoding, num_points, value_range)
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
