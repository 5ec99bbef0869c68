r"""``WSKANLayer``: one round of message passing on the KAN-graph, updating nodes and edges."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torch_geometric.nn import MessagePassing

__all__ = ["WSKANLayer", "mlp"]

_ACTS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def mlp(in_channels: int, hidden_channels: int, out_channels: int, act: str = "silu") -> nn.Sequential:
    """Two-layer perceptron ``Linear -> act -> Linear`` (applied per node / edge)."""
    if act not in _ACTS:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(_ACTS)}")
    return nn.Sequential(nn.Linear(in_channels, hidden_channels), _ACTS[act](), nn.Linear(hidden_channels, out_channels))


class WSKANLayer(MessagePassing):
    r"""A WS-KAN message-passing layer on the KAN-graph (nodes = neurons, edges = edge
    functions), updating node features :math:`h` and edge features :math:`e`.

    For an edge :math:`e_{ij}` from neuron :math:`i` (layer :math:`l`) to neuron
    :math:`j` (layer :math:`l+1`):

    .. math::
        m^{\rightarrow}_{j} &= \bigoplus_{i \to j} \psi_{\rightarrow}\big([h_i, h_j, e_{ij}]\big)
        \qquad \text{(forward messages, source} \to \text{target)}

        m^{\leftarrow}_{i} &= \bigoplus_{i \to j} \psi_{\leftarrow}\big([h_j, h_i, e_{ij}]\big)
        \qquad \text{(backward messages, if enabled)}

        h'_i &= \mathrm{N}_h\big(h_i + \phi_h([h_i, m^{\rightarrow}_i, m^{\leftarrow}_i])\big)

        e'_{ij} &= \mathrm{N}_e\big(e_{ij} + \phi_e([e_{ij}, h_i, h_j])\big)

    with :math:`\bigoplus` the aggregation (``"sum"`` by default), :math:`\psi, \phi`
    two-layer MLPs (with ``shared=True`` the three share their first layer, one edge MLP
    with three output maps:
    :math:`[\psi_{\rightarrow}, \psi_{\leftarrow}, \phi_e] = [W_{\rightarrow}, W_{\leftarrow}, W_e]\,
    \sigma(W_1 [h_i, h_j, e_{ij}] + b_1) + [b_{\rightarrow}, b_{\leftarrow}, b_e]`, a third of
    the per-edge first-map FLOPs and activations), the residual ``+`` optional and :math:`\mathrm{N}` a per-node /
    per-edge :class:`~torch.nn.LayerNorm` (or identity). Every operation is either
    per node, per edge, or a permutation-invariant aggregation over edges, so the layer
    is equivariant to any relabelling of nodes (in particular to hidden-neuron
    permutations of the KAN) and graphs in a batch do not interact. Cost is
    :math:`O(E)` (one MLP call per edge and direction).

    Args:
        node_channels: size of :math:`h` (kept by the layer).
        edge_channels: size of :math:`e` (kept by the layer).
        hidden_channels: width of the MLPs (default ``max(node_channels, edge_channels)``).
        aggr: PyG aggregation (``"sum"``, ``"mean"``, ``"max"``, ...) or a list of them
            (PNA-style: the aggregated messages are concatenated, e.g.
            ``["sum", "mean", "max"]``).
        backward: also send messages target -> source (a separate MLP).
        residual: add the update to the input.
        norm: ``"layer"`` (LayerNorm per node / edge) or ``None``.
        act: ``"silu"``, ``"relu"``, ``"gelu"`` or ``"tanh"``.
        shared: one first layer for the forward message, backward message and edge update
            (see above) instead of one each.
        num_edge_types: with ``T > 1``, the edge part :math:`W_e e_{ij} + b` of the first
            maps has one weight and bias per edge type :math:`t_{ij}` (R-GCN-style typed
            edges; for a KAN-graph the type is the KAN layer of the edge, which a
            hidden-neuron permutation keeps, so equivariance is kept), and :meth:`forward`
            needs ``edge_type``. Costs ``T`` times that one ``(E, C_e) x (C_e, parts H)`` map.
        product: the node update also reads, for every aggregated message :math:`m`, the
            second-order term :math:`(P m) \odot (Q m)` with learned maps :math:`P, Q` (no
            bias): for a sum aggregation it holds every pairwise cross term
            :math:`\sum_{i, i'} (P \psi_i) \odot (Q \psi_{i'})`, such as the variance of a
            sum of correlated edge outputs, which a first-order node MLP can only approximate.
            Per node, so it costs :math:`O(N)`.
        bilinear: every part's hidden activation (forward message, backward message, edge
            update) gets the edge-conditioned term :math:`(U e_{ij} + c) \odot (V_a h_a + V_b h_b)`
            added after the activation (a low-rank NNConv-style message: an edge's output
            moments over its input neuron's distribution are bilinear in the edge's
            coefficients and a basis-moment vector of that neuron, e.g.
            :math:`\mathbb E[\phi(x)] = c^\top \mathbb E[B(x)]`, which a first-order
            MLP of the concatenation can only approximate). One more ``(E, C_e) x (C_e, parts H)``
            map per layer.
        lookup: with ``Q > 0``, every edge also reads its own edge function at ``Q`` positions
            chosen by its source neuron, :math:`r_{ij} = \mathrm{clamp}(\tfrac12 + W_r h_i, 0, 1)
            \in [0, 1]^Q`, by linear interpolation of the edge function's ``P`` equispaced samples
            ``edge_values`` over the source's range (:math:`r = 0` its lower, :math:`r = 1` its upper
            end): :math:`\ell_{ij,q} = \mathrm{interp}(v_{ij}, r_{ij,q})`, added to every first map as
            :math:`W_\ell \ell_{ij}`. An edge's output is its function *at its input neuron's value*;
            the lookup lets a neuron's state pick where the next functions are read, the step of a
            forward pass that an MLP of the concatenation :math:`[h_i, e_{ij}]` can only approximate.
            It reads nothing but the samples the edge features already hold (no input is evaluated),
            and it is per edge with the edge's own source, so equivariance is kept. :meth:`forward`
            then needs ``edge_values`` ``(E, P)``, ``P >= 2``.

    Shapes:
        - input: node features ``(N, node_channels)``, ``edge_index: (2, E)``, edge
          features ``(E, edge_channels)``, ``edge_type: (E,)`` (integers in ``[0, T)``,
          only with ``num_edge_types > 1``), ``edge_values: (E, P)`` (only with ``lookup > 0``);
        - output: ``(N, node_channels)``, ``(E, edge_channels)``.
    """

    def __init__(
        self,
        node_channels: int,
        edge_channels: int,
        hidden_channels: Optional[int] = None,
        *,
        aggr: str = "sum",
        backward: bool = True,
        residual: bool = True,
        norm: Optional[str] = "layer",
        act: str = "silu",
        shared: bool = False,
        num_edge_types: int = 1,
        product: bool = False,
        bilinear: bool = False,
        lookup: int = 0,
    ):
        aggrs = [aggr] if isinstance(aggr, str) else list(aggr)
        if not aggrs:
            raise ValueError("aggr must be an aggregation name or a non-empty list of them")
        super().__init__(aggr=aggrs[0] if len(aggrs) == 1 else aggrs, flow="source_to_target")
        self.num_aggr = len(aggrs)
        # sum / mean aggregation commutes with the message MLP's last (affine) map
        self._linear_aggr = aggrs[0] if len(aggrs) == 1 and aggrs[0] in ("sum", "add", "mean") else None
        if self._linear_aggr == "add":
            self._linear_aggr = "sum"
        if norm not in ("layer", None):
            raise ValueError(f"norm must be 'layer' or None, got {norm!r}")
        self.node_channels, self.edge_channels = int(node_channels), int(edge_channels)
        H = int(hidden_channels or max(node_channels, edge_channels))
        self.hidden_channels, self.backward, self.residual, self.norm, self.act = H, backward, residual, norm, act
        self.shared = bool(shared)
        if int(num_edge_types) < 1:
            raise ValueError(f"num_edge_types must be >= 1, got {num_edge_types}")
        self.num_edge_types = int(num_edge_types)
        Cn, Ce = self.node_channels, self.edge_channels
        # The first linear map of psi_fwd, psi_bwd and phi_e acts on a concatenation
        # [h_a, h_b, e]; it is computed as W_a h_a + W_b h_b + W_e e with the node parts
        # projected once per *node* (N rows) and the edge parts once per edge, instead of
        # three (E, 2 Cn + Ce) concatenations. Same function class, ~3x fewer edge FLOPs.
        # forward message, backward message, edge update (one first map for all with shared)
        self.num_parts = 1 if self.shared else (3 if backward else 2)
        self.node_proj = nn.Linear(Cn, 2 * self.num_parts * H, bias=False)
        self.edge_proj = nn.Linear(Ce, self.num_edge_types * self.num_parts * H)  # [type 0 | type 1 | ...]
        self.msg_fwd = nn.Sequential(_ACTS[act](), nn.Linear(H, Cn))
        self.msg_bwd = nn.Sequential(_ACTS[act](), nn.Linear(H, Cn)) if backward else None
        self.edge_mlp = nn.Sequential(_ACTS[act](), nn.Linear(H, Ce))
        self.product = bool(product)
        self.bilinear = bool(bilinear)
        if int(lookup) < 0:
            raise ValueError(f"lookup must be >= 0, got {lookup}")
        self.lookup = int(lookup)
        # lookup positions r = clamp(1/2 + W_r h_src, 0, 1), read values projected into every first map
        self.lookup_query = nn.Linear(Cn, self.lookup) if self.lookup else None
        self.lookup_proj = nn.Linear(self.lookup, self.num_parts * H, bias=False) if self.lookup else None
        # bilinear terms (U e + c) * (V_a h_a + V_b h_b) per part, nodes projected once per node
        self.bil_node_proj = nn.Linear(Cn, 2 * self.num_parts * H, bias=False) if self.bilinear else None
        self.bil_edge_proj = nn.Linear(Ce, self.num_parts * H) if self.bilinear else None
        M, dirs = self.num_aggr * Cn, (2 if backward else 1)
        # second-order terms: one (M -> 2M) map per direction, split into P m and Q m
        self.product_maps = nn.ModuleList(nn.Linear(M, 2 * M, bias=False) for _ in range(dirs)) if self.product else None
        self.node_mlp = mlp(Cn + dirs * M * (2 if self.product else 1), H, Cn, act)
        self.node_norm = nn.LayerNorm(Cn) if norm == "layer" else nn.Identity()
        self.edge_norm = nn.LayerNorm(Ce) if norm == "layer" else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self):
        """Re-initialise every MLP and normalisation."""
        super().reset_parameters()
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.LayerNorm)):
                mod.reset_parameters()
        # the fused first maps get the init of one Linear on the concatenation [h_a, h_b, e]
        bound = (2 * self.node_channels + self.edge_channels) ** -0.5
        for lin in (self.node_proj, self.edge_proj):
            nn.init.uniform_(lin.weight, -bound, bound)
        nn.init.uniform_(self.edge_proj.bias, -bound, bound)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor,
                edge_type: Optional[torch.Tensor] = None,
                edge_values: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Update node and edge features (see the class docstring); returns ``(h', e')``."""
        if x.dim() != 2 or x.shape[1] != self.node_channels:
            raise ValueError(f"WSKANLayer: node features must have shape (N, {self.node_channels}), got {tuple(x.shape)}")
        if edge_attr.dim() != 2 or edge_attr.shape[1] != self.edge_channels:
            raise ValueError(
                f"WSKANLayer: edge features must have shape (E, {self.edge_channels}), got {tuple(edge_attr.shape)}"
            )
        if edge_index.dim() != 2 or edge_index.shape != (2, edge_attr.shape[0]):
            raise ValueError(
                f"WSKANLayer: edge_index must have shape (2, {edge_attr.shape[0]}) (one column per edge feature row), "
                f"got {tuple(edge_index.shape)}"
            )
        T, E = self.num_edge_types, edge_attr.shape[0]
        if T > 1:
            if edge_type is None or edge_type.shape != (E,) or edge_type.dtype not in (torch.long, torch.int):
                got = None if edge_type is None else f"{tuple(edge_type.shape)} {edge_type.dtype}"
                raise ValueError(f"WSKANLayer(num_edge_types={T}): edge_type must be an integer tensor of shape "
                                 f"({E},), got {got}")
            if E and (int(edge_type.min()) < 0 or int(edge_type.max()) >= T):
                raise ValueError(f"WSKANLayer(num_edge_types={T}): edge_type values must lie in [0, {T}), got "
                                 f"[{int(edge_type.min())}, {int(edge_type.max())}]")
        elif edge_type is not None:
            raise ValueError("WSKANLayer: edge_type given but the layer was built with num_edge_types=1")
        if self.lookup:
            if edge_values is None or edge_values.dim() != 2 or edge_values.shape[0] != E or edge_values.shape[1] < 2:
                got = None if edge_values is None else tuple(edge_values.shape)
                raise ValueError(f"WSKANLayer(lookup={self.lookup}): edge_values must have shape ({E}, P) with P >= 2 "
                                 f"(each edge function sampled at P equispaced points), got {got}")
        elif edge_values is not None:
            raise ValueError("WSKANLayer: edge_values given but the layer was built with lookup=0")
        src, dst = edge_index
        H, N, k = self.hidden_channels, x.shape[0], self.num_parts
        # every part i (forward message, backward message, edge update) has the first map
        # W_src,i h_src + W_dst,i h_dst + W_e,i e: project nodes once (N rows), gather the
        # projections per edge with index_select (its backward is an index_add, not a
        # sort-based index_put), and split the (E, parts * H) sum once (no slice backward
        # that zero-fills an (E, parts * H) gradient per slice).
        P = self.node_proj(x)  # (N, 2 * parts * H): [sender parts | receiver parts]
        z = self.edge_proj(edge_attr)  # (E, T * parts * H)
        if T > 1:  # each edge keeps its own type's block
            z = z.view(E, T, k * H).gather(1, edge_type.long().view(E, 1, 1).expand(E, 1, k * H)).squeeze(1)
        z = z + P[:, : k * H].contiguous().index_select(0, src) + P[:, k * H:].contiguous().index_select(0, dst)
        if self.lookup:
            z = z + self.lookup_proj(self._lookup(self.lookup_query(x).index_select(0, src), edge_values))
        # one activation pass for all parts (every part's MLP starts with the same activation;
        # msg_fwd[0] / msg_bwd[0] stay as modules so saved state dicts and reprs keep their layout)
        a = self.edge_mlp[0](z)
        if self.bilinear:
            Q = self.bil_node_proj(x)
            a = a + self.bil_edge_proj(edge_attr) * (Q[:, : k * H].contiguous().index_select(0, src)
                                                     + Q[:, k * H:].contiguous().index_select(0, dst))
        a = a.split(H, dim=1)
        # part 0: forward messages src -> dst, psi_fwd([h_src, h_dst, e]);
        # part 1: backward messages dst -> src, psi_bwd([h_dst, h_src, e]);
        # with shared, all three parts read the one activation a[0]
        msgs = [self._aggregate(self.msg_fwd[1], a[0], dst, N)]
        if self.backward:
            msgs.append(self._aggregate(self.msg_bwd[1], a[min(1, k - 1)], src, N))
        parts = [x, *msgs]
        if self.product:
            for m, lin in zip(msgs, self.product_maps):
                pm, qm = lin(m).chunk(2, dim=-1)
                parts.append(pm * qm)
        dh = self.node_mlp(torch.cat(parts, dim=-1))
        # last part: edge update phi_e([e, h_src, h_dst])
        de = self.edge_mlp[1](a[k - 1])
        h = x + dh if self.residual else dh
        e = edge_attr + de if self.residual else de
        return self.node_norm(h), self.edge_norm(e)

    @staticmethod
    def _lookup(q: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Linear interpolation of ``values (E, P)`` (equispaced samples over ``[0, 1]``) at the
        positions ``clamp(1/2 + q, 0, 1)``, ``q: (E, Q)`` -> ``(E, Q)``."""
        npts = values.shape[1]
        if q.dtype in (torch.float16, torch.bfloat16):  # positions need more than 8 mantissa bits (autocast)
            q = q.float()
        pos = (0.5 + q).clamp(0, 1) * (npts - 1)
        i0 = pos.detach().floor().clamp(0, npts - 2).long()
        frac = pos - i0.to(pos.dtype)
        v0 = values.gather(1, i0).to(pos.dtype)
        return v0 + frac * (values.gather(1, i0 + 1).to(pos.dtype) - v0)

    def _aggregate(self, lin: nn.Linear, a: torch.Tensor, index: torch.Tensor, N: int) -> torch.Tensor:
        """``aggr_{e -> v} lin(a_e)``, ``(N, C)``. Sum and mean commute with the affine map
        ``lin``, so they aggregate the ``(E, H)`` activations first and apply ``lin`` to the
        ``N`` aggregates (the bias counted once per message, and not at all where no
        message arrives): the same function with one ``(E, H) x (H, C)`` GEMM fewer per
        direction. Other aggregations (``max``, PNA lists) apply ``lin`` per edge."""
        if self._linear_aggr is None:
            return self.aggr_module(lin(a), index, dim_size=N)
        out = torch.nn.functional.linear(self.aggr_module(a.contiguous(), index, dim_size=N), lin.weight)
        deg = torch.bincount(index, minlength=N).to(out.dtype).unsqueeze(1)
        return out + (deg if self._linear_aggr == "sum" else deg.clamp_max(1)) * lin.bias

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(node={self.node_channels}, edge={self.edge_channels}, "
            f"hidden={self.hidden_channels}, aggr={self.aggr!r}, backward={self.backward}, "
            f"residual={self.residual}, norm={self.norm!r}{', shared=True' if self.shared else ''}"
            f"{f', num_edge_types={self.num_edge_types}' if self.num_edge_types > 1 else ''}"
            f"{', product=True' if self.product else ''}{', bilinear=True' if self.bilinear else ''}"
            f"{f', lookup={self.lookup}' if self.lookup else ''})"
        )
