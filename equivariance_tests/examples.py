"""Small reference metanetworks for the suite's documentation and self-tests.

Equivariant ones (which must pass) and deliberately broken ones (which must fail, proving
the checks can fail):

* :class:`DeepSetsOverEdges` -- a sum over all edges: invariant, but also invariant to
  permuting *input* neurons (it fails :func:`~.checks.assert_sensitive`).
* :class:`TinyKANNet` -- one round of edge/node message passing on :class:`~wskan_ext.KANWeights`
  with positional identity for input/output neurons; graph, node and edge readouts.
  ``positional_hidden=True`` is the classic bug: positional embeddings on *hidden* neurons.
* :class:`TinyGraphNet` -- the same idea on a KAN-graph PyG ``Batch``.
* :class:`FlatMLP` -- an MLP on the flattened weights (not invariant).

These are test fixtures, not models to train.
"""

from __future__ import annotations

import torch
from torch import nn

from wskan_ext.kan.weights import KANWeights

__all__ = ["DeepSetsOverEdges", "TinyKANNet", "TinyGraphNet", "FlatMLP", "init_from_seed"]


def init_from_seed(module: nn.Module, seed: int, scale: float = 1.5) -> nn.Module:
    """Re-draw every parameter from ``N(0, scale^2 / fan_in)`` with a seeded generator
    (no global RNG use)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan = p.shape[-1] if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p) * scale / fan**0.5)
    return module


def _mlp(i, h, o):
    return nn.Sequential(nn.Linear(i, h), nn.Tanh(), nn.Linear(h, o))


def _edge_summary(f: torch.Tensor) -> torch.Tensor:
    """``(..., C) -> (..., 4)``: mean, std, first and last feature (any ``C``)."""
    return torch.cat([f.mean(-1, keepdim=True), f.std(-1, unbiased=False, keepdim=True), f[..., :1], f[..., -1:]], -1)


def _pos(pos: torch.Tensor, dtype) -> torch.Tensor:
    p = pos.to(dtype).unsqueeze(-1) + 1.0
    return torch.cat([torch.sin(p), torch.cos(0.5 * p)], -1)


class DeepSetsOverEdges(nn.Module):
    """``rho(sum_{l,i,j} phi(e_lij))`` over canonical edge features: invariant to every
    neuron permutation, including the non-symmetric input/output ones.

    Shapes: :class:`~wskan_ext.KANWeights` with ``*`` models -> ``(*, out)``."""

    def __init__(self, hidden: int = 16, out: int = 2, seed: int = 0):
        super().__init__()
        self.phi, self.rho = _mlp(4, hidden, hidden), _mlp(hidden, hidden, out)
        init_from_seed(self, seed)

    def forward(self, w: KANWeights) -> torch.Tensor:
        total = sum(self.phi(_edge_summary(f)).sum((-2, -3)) for f in w.edge_features())
        return self.rho(total)


class TinyKANNet(nn.Module):
    r"""One round of message passing on the KAN-graph of a :class:`~wskan_ext.KANWeights`.

    Node ``(l, i)`` starts from its grid statistics, node affine, role and -- for input
    and output neurons only -- a positional code; edge ``(l, i, j)`` computes
    :math:`e = \mathrm{MLP}(d_{lij}, h_{l,i}, h_{l+1,j})`; nodes add the sum of their
    incident edges. Readouts: ``"graph"`` (sum over nodes), ``"node"``, ``"edge"``.

    Args:
        positional_hidden: the deliberate bug -- also give *hidden* neurons a
            positional code, which breaks permutation equivariance.

    Shapes: ``forward(w, readout)`` with ``*`` models: ``"graph"`` -> ``(*, out)``,
    ``"node"`` -> ``(*, N, out)``, ``"edge"`` -> ``(*, E, out)`` (layout-contract order).
    """

    def __init__(self, hidden: int = 16, out: int = 2, positional_hidden: bool = False, readout: str = "graph",
                 seed: int = 0):
        super().__init__()
        self.positional_hidden, self.readout = positional_hidden, readout
        self.enc = _mlp(10, hidden, hidden)
        self.msg = _mlp(4 + 2 * hidden, hidden, hidden)
        self.upd = _mlp(hidden, hidden, hidden)
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, out) for k in ("graph", "node", "edge")})
        init_from_seed(self, seed)

    def _nodes(self, w: KANWeights):
        L, lead, dt = w.depth, w.coef[0].shape[:-3], w.dtype
        hs = []
        for l, n in enumerate(w.widths):
            if l < L:
                g = w.grid[l]
                geo = torch.stack([g[..., 0], g[..., -1], g.diff(dim=-1).mean(-1)], -1)
            else:
                geo = torch.zeros(*lead, n, 3, dtype=dt, device=w.device)
            if l == 0:
                aff = torch.stack([torch.ones(*lead, n, dtype=dt, device=w.device), torch.zeros(*lead, n, dtype=dt, device=w.device)], -1)
            else:
                aff = torch.stack([w.node_scale[l - 1], w.node_bias[l - 1]], -1)
            role = 0 if l == 0 else (2 if l == L else 1)
            onehot = torch.zeros(*lead, n, 3, dtype=dt, device=w.device)
            onehot[..., role] = 1
            pos = _pos(torch.arange(n, device=w.device), dt).expand(*lead, n, 2)
            if role == 1 and not self.positional_hidden:
                pos = torch.zeros_like(pos)
            hs.append(self.enc(torch.cat([geo, aff, onehot, pos], -1)))
        return hs

    def forward(self, w: KANWeights, readout: str = None):
        readout = readout or self.readout
        hs = self._nodes(w)
        agg = [torch.zeros_like(h) for h in hs]
        edges = []
        for l, f in enumerate(w.edge_features()):
            n, m = f.shape[-3], f.shape[-2]
            src = hs[l].unsqueeze(-2).expand(*f.shape[:-1], -1)
            dst = hs[l + 1].unsqueeze(-3).expand(*f.shape[:-1], -1)
            e = self.msg(torch.cat([_edge_summary(f), src, dst], -1))  # (*, n, m, H)
            agg[l] = agg[l] + e.sum(-2)
            agg[l + 1] = agg[l + 1] + e.sum(-3)
            edges.append(e.reshape(*e.shape[:-3], n * m, e.shape[-1]))
        hs = [h + self.upd(a) for h, a in zip(hs, agg)]
        nodes = torch.cat(hs, -2)
        if readout == "graph":
            return self.heads["graph"](nodes.sum(-2))
        if readout == "node":
            return self.heads["node"](nodes)
        if readout == "edge":
            return self.heads["edge"](torch.cat(edges, -2))
        raise ValueError(f"readout must be 'graph', 'node' or 'edge', got {readout!r}")


class TinyGraphNet(nn.Module):
    """:class:`TinyKANNet`'s idea on a KAN-graph ``Batch`` (``x``, ``edge_attr``,
    ``edge_index``, ``node_role``, ``node_pos``, ``batch``): positional codes for input and
    output neurons (for all neurons with ``positional_hidden=True``, the bug).

    Shapes: ``"graph"`` -> ``(num_graphs, out)``, ``"node"`` -> ``(N, out)``, ``"edge"`` -> ``(E, out)``.
    """

    def __init__(self, hidden: int = 16, out: int = 2, positional_hidden: bool = False, readout: str = "graph",
                 seed: int = 0):
        super().__init__()
        self.positional_hidden, self.readout = positional_hidden, readout
        self.enc = _mlp(9, hidden, hidden)
        self.msg = _mlp(4 + 2 * hidden, hidden, hidden)
        self.upd = _mlp(hidden, hidden, hidden)
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, out) for k in ("graph", "node", "edge")})
        init_from_seed(self, seed)

    def forward(self, g, readout: str = None):
        readout = readout or self.readout
        x = g.x
        pos = _pos(g.node_pos, x.dtype)
        if not self.positional_hidden:
            pos = pos * (g.node_role != 1).unsqueeze(-1).to(x.dtype)
        h = self.enc(torch.cat([x.mean(-1, keepdim=True), x.std(-1, unbiased=False, keepdim=True), x[:, -5:], pos], -1))
        src, dst = g.edge_index
        e = self.msg(torch.cat([_edge_summary(g.edge_attr), h[src], h[dst]], -1))
        agg = torch.zeros_like(h).index_add_(0, src, e).index_add_(0, dst, e)
        h = h + self.upd(agg)
        if readout == "graph":
            pooled = torch.zeros(int(g.num_graphs), h.shape[-1], dtype=h.dtype, device=h.device)
            return self.heads["graph"](pooled.index_add_(0, g.batch, h))
        if readout == "node":
            return self.heads["node"](h)
        if readout == "edge":
            return self.heads["edge"](e)
        raise ValueError(f"readout must be 'graph', 'node' or 'edge', got {readout!r}")


class FlatMLP(nn.Module):
    """An MLP on all weights of a KAN flattened in a fixed order -- the structure-agnostic
    baseline, which is *not* invariant to hidden permutations.

    Shapes: :class:`~wskan_ext.KANWeights` with ``*`` models and ``in_features`` scalars per model -> ``(*, out)``."""

    def __init__(self, in_features: int, hidden: int = 32, out: int = 2, seed: int = 0):
        super().__init__()
        self.in_features = in_features
        self.net = _mlp(in_features, hidden, out)
        init_from_seed(self, seed)

    @staticmethod
    def flatten(w: KANWeights) -> torch.Tensor:
        nb = 1 if w.batched else 0
        return torch.cat([t.reshape(*t.shape[:nb], -1) for t in w.tensors().values()], -1)

    def forward(self, w: KANWeights) -> torch.Tensor:
        flat = self.flatten(w)
        if flat.shape[-1] != self.in_features:
            raise ValueError(f"FlatMLP: expected {self.in_features} weights per KAN, got {flat.shape[-1]} ({w.widths})")
        return self.net(flat)
