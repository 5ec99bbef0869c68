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
    two-layer MLPs, the residual ``+`` optional and :math:`\mathrm{N}` a per-node /
    per-edge :class:`~torch.nn.LayerNorm` (or identity). Every operation is either
    per node, per edge, or a permutation-invariant aggregation over edges, so the layer
    is equivariant to any relabelling of nodes (in particular to hidden-neuron
    permutations of the KAN) and graphs in a batch do not interact. Cost is
    :math:`O(E)` (one MLP call per edge and direction).

    Args:
        node_channels: size of :math:`h` (kept by the layer).
        edge_channels: size of :math:`e` (kept by the layer).
        hidden_channels: width of the MLPs (default ``max(node_channels, edge_channels)``).
        aggr: PyG aggregation (``"sum"``, ``"mean"``, ``"max"``, ...).
        backward: also send messages target -> source (a separate MLP).
        residual: add the update to the input.
        norm: ``"layer"`` (LayerNorm per node / edge) or ``None``.
        act: ``"silu"``, ``"relu"``, ``"gelu"`` or ``"tanh"``.

    Shapes:
        - input: node features ``(N, node_channels)``, ``edge_index: (2, E)``, edge
          features ``(E, edge_channels)``;
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
    ):
        super().__init__(aggr=aggr, flow="source_to_target")
        if norm not in ("layer", None):
            raise ValueError(f"norm must be 'layer' or None, got {norm!r}")
        self.node_channels, self.edge_channels = int(node_channels), int(edge_channels)
        H = int(hidden_channels or max(node_channels, edge_channels))
        self.hidden_channels, self.backward, self.residual, self.norm, self.act = H, backward, residual, norm, act
        Cn, Ce = self.node_channels, self.edge_channels
        self.msg_fwd = mlp(2 * Cn + Ce, H, Cn, act)
        self.msg_bwd = mlp(2 * Cn + Ce, H, Cn, act) if backward else None
        self.node_mlp = mlp((3 if backward else 2) * Cn, H, Cn, act)
        self.edge_mlp = mlp(Ce + 2 * Cn, H, Ce, act)
        self.node_norm = nn.LayerNorm(Cn) if norm == "layer" else nn.Identity()
        self.edge_norm = nn.LayerNorm(Ce) if norm == "layer" else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self):
        """Re-initialise every MLP and normalisation."""
        super().reset_parameters()
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.LayerNorm)):
                mod.reset_parameters()

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
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
        parts = [x, self.propagate(edge_index, x=x, edge_attr=edge_attr, direction=0)]
        if self.backward:
            parts.append(self.propagate(edge_index.flip(0), x=x, edge_attr=edge_attr, direction=1))
        dh = self.node_mlp(torch.cat(parts, dim=-1))
        src, dst = edge_index
        de = self.edge_mlp(torch.cat([edge_attr, x[src], x[dst]], dim=-1))
        h = x + dh if self.residual else dh
        e = edge_attr + de if self.residual else de
        return self.node_norm(h), self.edge_norm(e)

    def message(self, x_i: torch.Tensor, x_j: torch.Tensor, edge_attr: torch.Tensor, direction: int) -> torch.Tensor:
        """Message of one edge: ``psi([h_sender, h_receiver, e])`` with the MLP of ``direction``
        (0 forward, 1 backward; the backward pass propagates on the flipped edges)."""
        net = self.msg_fwd if direction == 0 else self.msg_bwd
        return net(torch.cat([x_j, x_i, edge_attr], dim=-1))

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(node={self.node_channels}, edge={self.edge_channels}, "
            f"hidden={self.hidden_channels}, aggr={self.aggr!r}, backward={self.backward}, "
            f"residual={self.residual}, norm={self.norm!r})"
        )
