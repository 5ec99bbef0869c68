"""PyG graphs -> KANs (:func:`graph_to_kan`) and outputs back in the KANs' layout."""

from __future__ import annotations

from typing import List, Tuple, Union

import torch
from torch_geometric.data import Batch

from ..kan.weights import KANWeights
from .layout import _NODE_FIELDS, BASE_FUNCTION_NAMES, ENCODINGS, NODE_EXTRA_FEATURES, _check, _template

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
