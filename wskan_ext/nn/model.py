r"""``WSKAN``: encoders, a stack of :class:`WSKANLayer`, and invariant / equivariant readouts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch_geometric.nn import global_add_pool, global_mean_pool
from torch_geometric.utils import scatter

from ..graph import ROLE_INPUT, ROLE_OUTPUT, edge_output_to_kan, node_output_to_kan
from .layer import WSKANLayer, mlp

__all__ = ["WSKAN", "WSKANOutput"]


def _head(in_channels: int, hidden: int, out_channels: int, act: str, dropout: float) -> nn.Module:
    """``Linear -> act -> Dropout -> Linear`` (the read-out heads)."""
    net = mlp(in_channels, hidden, out_channels, act)
    if dropout > 0:
        net.insert(2, nn.Dropout(dropout))
    return net


@dataclass
class WSKANOutput:
    """What ``WSKAN.forward`` returns (heads that were not configured are ``None``).

    Attributes:
        graph: ``(B, graph_out_channels)`` invariant graph-level output.
        node: ``(N, node_out_channels)`` equivariant node-level output (node order).
        edge: ``(E, edge_out_channels)`` equivariant edge-level output (edge order).
        node_embedding: ``(N, hidden_channels)`` final node features.
        edge_embedding: ``(E, edge_hidden_channels)`` final edge features.
    """

    graph: Optional[torch.Tensor]
    node: Optional[torch.Tensor]
    edge: Optional[torch.Tensor]
    node_embedding: torch.Tensor
    edge_embedding: torch.Tensor


class WSKAN(nn.Module):
    r"""WS-KAN: a graph meta-network on KAN-graphs (:func:`~wskan_ext.kan_to_graph`).

    .. math::
        h^{(0)}_v &= \mathrm{enc}_h([x_v, \xi_v]) + \rho_{r(v)} + [r(v)=\text{in}]\,
                     \pi^{\text{in}}_{p(v)} + [r(v)=\text{out}]\,\pi^{\text{out}}_{p(v)}, \qquad
        e^{(0)}_{uv} = \mathrm{enc}_e(a_{uv})

        (h^{(t+1)}, e^{(t+1)}) &= \mathrm{WSKANLayer}_t(h^{(t)}, e^{(t)}), \quad t < T

        y_{\text{graph}} &= \phi_g\big([\mathrm{pool}_v h^{(T)}_v, \mathrm{pool}_{uv} e^{(T)}_{uv}]\big),\quad
        y_v = \phi_n(h^{(T)}_v), \quad y_{uv} = \phi_e([e^{(T)}_{uv}, h^{(T)}_u, h^{(T)}_v])

    With ``readout="layer"`` the graph read-out pools every *layer* of the KAN separately
    (mean and max over the neurons of layer :math:`l` and over the edges of edge layer
    :math:`l`, concatenated over layers :math:`l < ` ``max_layers``; absent layers give zeros):

    .. math::
        y_{\text{graph}} = \phi_g\Big(\big[\mathrm{mean}_{v \in V_l} h_v, \max_{v \in V_l} h_v\big]_{l \le L},
        \big[\mathrm{mean}_{uv \in E_l} e_{uv}, \max_{uv \in E_l} e_{uv}\big]_{l < L}\Big)

    which is still invariant (a hidden-neuron permutation keeps every neuron in its layer).

    where :math:`x_v` are the node features of the graph, :math:`\xi_v` optional extra
    node inputs (e.g. the input values of a simulated forward pass), :math:`r(v)` the role
    (input / hidden / output neuron) with a learned embedding :math:`\rho`, and
    :math:`\pi^{\text{in}}, \pi^{\text{out}}` learned positional embeddings of the
    position :math:`p(v)` of input and output neurons. Hidden neurons get no positional
    information, so the graph output is invariant and node / edge outputs equivariant to
    hidden-neuron permutations; input and output neurons are identified.

    Args:
        node_in_channels, edge_in_channels: feature sizes of the graph (``x``, ``edge_attr``).
        hidden_channels: node feature size; ``edge_hidden_channels`` (default the same)
            the edge feature size.
        num_layers: number of :class:`WSKANLayer` (at least the KAN depth for
            information to cross the network).
        graph_out_channels, node_out_channels, edge_out_channels: head sizes (``None``
            disables a head).
        max_inputs, max_outputs: size of the positional embedding tables.
        extra_node_channels: size of :math:`\xi_v` passed to :meth:`forward`.
        aggr, backward, residual, norm, act, shared: passed to every :class:`WSKANLayer`.
        pool: ``"mean"`` or ``"sum"`` graph pooling (``readout="global"``).
        readout: ``"global"`` (pool all nodes and edges) or ``"layer"`` (pool per KAN layer;
            needs ``node_layer`` / ``edge_layer`` from :func:`~wskan_ext.kan_to_graph`).
        max_layers: number of KAN layers the ``"layer"`` read-out has slots for.
        dropout: dropout before the last linear map of every head.
        context: before every layer, add to each node (edge) a learned linear map of the mean
            of the node (edge) features of its own KAN layer in its own graph, zero-initialised
            (a per-layer "virtual node", like NFN's pooled terms; invariant under hidden-neuron
            permutations, which keep every neuron in its layer). Needs ``node_layer`` /
            ``edge_layer``.
        typed_edges: every layer's first maps get one edge weight per KAN layer
            (``WSKANLayer(num_edge_types=max_layers)``, fed ``edge_layer``): R-GCN-style
            typed edges, the per-layer parameters NFN's layers have. Needs ``edge_layer``.
        product: every layer's node update also reads second-order products of its aggregated
            messages (``WSKANLayer(product=True)``).
        bilinear: every layer's messages and edge update get edge-conditioned bilinear terms
            (``WSKANLayer(bilinear=True)``).
        lookup: ``Q > 0``: every layer's edges read their own edge function at ``Q`` positions
            chosen by the source neuron (``WSKANLayer(lookup=Q)``); the graph then needs
            ``edge_values`` ``(E, P)``, the edge functions sampled at ``P`` equispaced points of
            their source's range (e.g. ``kan_to_graph(w, encoding="values", num_points=P).edge_attr``,
            any fixed scaling).
        io_readout: the graph head also reads :math:`\sum_{v \in \text{in}} h_v \odot
            \gamma^{\text{in}}_{p(v)}` and the same over output neurons, with learned gates
            :math:`\gamma` per position: input and output neurons are never permuted, so the
            read-out may tell them apart (mean/max pooling cannot), as NFN's HNP read-out does.

    Shapes:
        - input: a KAN-graph batch with ``x: (N, node_in_channels)``,
          ``edge_attr: (E, edge_in_channels)``; ``node_extra: (N, extra_node_channels)``;
        - output: a ``WSKANOutput`` with ``graph: (B, graph_out)``, ``node: (N, node_out)``,
          ``edge: (E, edge_out)``.
    """

    def __init__(
        self,
        node_in_channels: int,
        edge_in_channels: int,
        hidden_channels: int = 64,
        num_layers: int = 4,
        *,
        edge_hidden_channels: Optional[int] = None,
        graph_out_channels: Optional[int] = None,
        node_out_channels: Optional[int] = None,
        edge_out_channels: Optional[int] = None,
        max_inputs: int = 1024,
        max_outputs: int = 1024,
        extra_node_channels: int = 0,
        aggr: str = "sum",
        backward: bool = True,
        residual: bool = True,
        norm: Optional[str] = "layer",
        act: str = "silu",
        pool: str = "mean",
        readout: str = "global",
        max_layers: int = 8,
        dropout: float = 0.0,
        io_readout: bool = False,
        shared: bool = False,
        context: bool = False,
        typed_edges: bool = False,
        product: bool = False,
        bilinear: bool = False,
        lookup: int = 0,
    ):
        super().__init__()
        if pool not in ("mean", "sum"):
            raise ValueError(f"pool must be 'mean' or 'sum', got {pool!r}")
        if readout not in ("global", "layer"):
            raise ValueError(f"readout must be 'global' or 'layer', got {readout!r}")
        if int(max_layers) < 1:
            raise ValueError(f"max_layers must be >= 1, got {max_layers}")
        self.readout, self.max_layers, self.dropout = readout, int(max_layers), float(dropout)
        self.io_readout, self.context, self.typed_edges = bool(io_readout), bool(context), bool(typed_edges)
        self.lookup = int(lookup)
        H, He = hidden_channels, edge_hidden_channels or hidden_channels
        self.node_in_channels, self.edge_in_channels = node_in_channels, edge_in_channels
        self.extra_node_channels, self.pool = extra_node_channels, pool
        self.hidden_channels, self.edge_hidden_channels = H, He
        self.node_encoder = mlp(node_in_channels + extra_node_channels, H, H, act)
        self.edge_encoder = mlp(edge_in_channels, He, He, act)
        self.role_embedding = nn.Embedding(3, H)
        self.input_embedding = nn.Embedding(max_inputs, H)
        self.output_embedding = nn.Embedding(max_outputs, H)
        self.layers = nn.ModuleList(
            WSKANLayer(H, He, max(H, He), aggr=aggr, backward=backward, residual=residual, norm=norm, act=act,
                       shared=shared, num_edge_types=self.max_layers if self.typed_edges else 1, product=product,
                       bilinear=bilinear, lookup=lookup)
            for _ in range(num_layers)
        )
        if self.context:  # zero-initialised: the model starts as the one without context
            self.node_context = nn.ModuleList(nn.Linear(H, H) for _ in range(num_layers))
            self.edge_context = nn.ModuleList(nn.Linear(He, He) for _ in range(num_layers))
        g_in = H + He if readout == "global" else 2 * ((self.max_layers + 1) * H + self.max_layers * He)
        if self.io_readout:
            self.input_gate, self.output_gate = nn.Embedding(max_inputs, H), nn.Embedding(max_outputs, H)
            g_in += 2 * H
        self.graph_head = _head(g_in, H, graph_out_channels, act, dropout) if graph_out_channels else None
        self.node_head = _head(H, H, node_out_channels, act, dropout) if node_out_channels else None
        self.edge_head = _head(He + 2 * H, H, edge_out_channels, act, dropout) if edge_out_channels else None
        self.reset_parameters()

    def reset_parameters(self):
        """Re-initialise every sub-module (the context maps to zero)."""
        for mod in self.modules():
            if mod is not self and hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
        if self.context:
            for lin in (*self.node_context, *self.edge_context):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def encode(self, data, node_extra: Optional[torch.Tensor] = None):
        """Initial node and edge features ``(N, H)``, ``(E, He)``."""
        for f in ("x", "edge_index", "edge_attr", "node_role", "node_pos"):
            if getattr(data, f, None) is None:
                raise ValueError(f"WSKAN: the graph is missing the field {f!r} (build it with kan_to_graph)")
        x, ea = data.x, data.edge_attr
        if x.dim() != 2 or x.shape[1] != self.node_in_channels:
            raise ValueError(f"WSKAN: x must have shape (N, {self.node_in_channels}), got {tuple(x.shape)}")
        if ea.dim() != 2 or ea.shape[1] != self.edge_in_channels:
            raise ValueError(f"WSKAN: edge_attr must have shape (E, {self.edge_in_channels}), got {tuple(ea.shape)}")
        if self.extra_node_channels:
            if node_extra is None or tuple(node_extra.shape) != (x.shape[0], self.extra_node_channels):
                got = None if node_extra is None else tuple(node_extra.shape)
                raise ValueError(f"WSKAN: node_extra must have shape ({x.shape[0]}, {self.extra_node_channels}), got {got}")
            x = torch.cat([x, node_extra.to(x.dtype)], dim=-1)
        elif node_extra is not None:
            raise ValueError("WSKAN: node_extra given but the model was built with extra_node_channels=0")
        role, pos = data.node_role.long(), data.node_pos.long()
        h = self.node_encoder(x) + self.role_embedding(role)
        for r, table, name in ((ROLE_INPUT, self.input_embedding, "max_inputs"), (ROLE_OUTPUT, self.output_embedding, "max_outputs")):
            sel = role == r
            p = pos[sel]
            if p.numel() and int(p.max()) >= table.num_embeddings:
                raise ValueError(f"WSKAN: a KAN has {int(p.max()) + 1} {name[4:]}, more than {name}={table.num_embeddings}")
            h = h.index_add(0, sel.nonzero().squeeze(1), table(p))
        return h, self.edge_encoder(ea)

    def forward(self, data, node_extra: Optional[torch.Tensor] = None) -> WSKANOutput:
        """Encode, apply the layers, and read out (heads that are not configured give ``None``)."""
        h, e = self.encode(data, node_extra)
        edge_index = data.edge_index
        bvec = getattr(data, "batch", None)
        if bvec is None:
            bvec = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
        size = int(data.num_graphs) if getattr(data, "num_graphs", None) is not None else int(bvec.max()) + 1
        need_groups = self.context or self.typed_edges or (self.readout == "layer" and self.graph_head is not None)
        groups = self._layer_groups(data, bvec) if need_groups else None
        etype = data.edge_layer.long() if self.typed_edges else None  # checked < max_layers by _layer_groups
        values = None
        if self.lookup:
            values = getattr(data, "edge_values", None)
            if values is None:
                raise ValueError(f"WSKAN(lookup={self.lookup}): the graph needs edge_values (E, P), the edge "
                                 "functions sampled at P equispaced points (kan_to_graph(w, encoding='values'))")
        for t, layer in enumerate(self.layers):
            if self.context:  # before the layer: its residual sum is what the layer normalises
                h, e = self._add_context(t, h, e, groups, size)
            h, e = layer(h, edge_index, e, etype, values)
        graph = None
        if self.graph_head is not None:
            if self.readout == "layer":
                pooled = self._layer_pool(h, e, groups, size)
            else:
                pool = global_mean_pool if self.pool == "mean" else global_add_pool
                pooled = torch.cat([pool(h, bvec, size), pool(e, bvec[edge_index[0]], size)], dim=-1)
            if self.io_readout:
                pooled = torch.cat([pooled, self._io_pool(data, h, bvec, size)], dim=-1)
            graph = self.graph_head(pooled)
        node = self.node_head(h) if self.node_head is not None else None
        edge = None
        if self.edge_head is not None:
            edge = self.edge_head(torch.cat([e, h[edge_index[0]], h[edge_index[1]]], dim=-1))
        return WSKANOutput(graph, node, edge, h, e)

    def _layer_groups(self, data, bvec):
        """Index of the (graph, KAN layer) group of every node and edge: ``graph * slots + layer``
        with ``max_layers + 1`` node slots and ``max_layers`` edge slots per graph."""
        nl, el = getattr(data, "node_layer", None), getattr(data, "edge_layer", None)
        what = ("readout='layer'" if self.readout == "layer" and self.graph_head is not None
                else "context=True" if self.context else "typed_edges=True")
        if nl is None or el is None:
            raise ValueError(f"WSKAN({what}): the graph needs node_layer and edge_layer (build it with kan_to_graph)")
        L = self.max_layers
        if int(el.max()) >= L:
            raise ValueError(f"WSKAN({what}): a KAN has {int(el.max()) + 1} layers, more than max_layers={L}")
        return bvec * (L + 1) + nl.long(), bvec[data.edge_index[0]] * L + el.long()

    def _add_context(self, t, h, e, groups, size):
        """``h_v += C^h_t mean_{u in layer(v)} h_u`` and ``e_uv += C^e_t mean_{e' in layer(uv)} e'``,
        the means taken within the node's / edge's own graph and KAN layer."""
        L, (gn, ge) = self.max_layers, groups
        hn = scatter(h, gn, 0, dim_size=size * (L + 1), reduce="mean")
        he = scatter(e, ge, 0, dim_size=size * L, reduce="mean")
        return (h + self.node_context[t](hn).index_select(0, gn),
                e + self.edge_context[t](he).index_select(0, ge))

    def _layer_pool(self, h, e, groups, size):
        """Mean and max of node / edge features per (graph, KAN layer): ``(B, g_in)``."""
        L, parts = self.max_layers, []
        for feat, group, slots in ((h, groups[0], L + 1), (e, groups[1], L)):
            for reduce in ("mean", "max"):
                parts.append(scatter(feat, group, 0, dim_size=size * slots, reduce=reduce).view(size, -1))
        return torch.cat(parts, dim=-1)

    def _io_pool(self, data, h, bvec, size):
        """Position-gated sums over input and output neurons per graph: ``(B, 2 H)``."""
        role, pos, parts = data.node_role.long(), data.node_pos.long(), []
        for r, gate in ((ROLE_INPUT, self.input_gate), (ROLE_OUTPUT, self.output_gate)):
            sel = (role == r).nonzero().squeeze(1)
            parts.append(scatter(h[sel] * gate(pos[sel]), bvec[sel], 0, dim_size=size, reduce="sum"))
        return torch.cat(parts, dim=-1)

    @staticmethod
    def edge_output_to_kan(data, edge_out: torch.Tensor):
        """Edge output ``(E, C)`` in the KANs' ``[n_in, n_out, C]`` layout per layer
        (see :func:`wskan_ext.graph.edge_output_to_kan`)."""
        return edge_output_to_kan(data, edge_out)

    @staticmethod
    def node_output_to_kan(data, node_out: torch.Tensor):
        """Node output ``(N, C)`` as ``(n_l, C)`` blocks per layer (see
        :func:`wskan_ext.graph.node_output_to_kan`)."""
        return node_output_to_kan(data, node_out)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(node_in={self.node_in_channels}, edge_in={self.edge_in_channels}, "
            f"hidden={self.hidden_channels}, edge_hidden={self.edge_hidden_channels}, layers={len(self.layers)}, "
            f"readout={self.readout!r})"
        )
