r"""Baseline meta-networks for KAN weight spaces, and the magnitude heuristic for pruning.

All models map a batch of ``B`` same-architecture KANs to a graph-level output
``(B, C)`` or an edge-level output ``(B, E, C)`` (edges in KAN-graph order: layer by
layer, edge ``(i, j)`` of layer ``l`` at ``edge_offset[l] + i * n_{l+1} + j``).

* :class:`FlatMLP` -- an MLP on the flattened weight vector
  (:func:`wskan_ext.adapters.flat.to_flat`); not permutation invariant. Used raw, after
  weight matching (:func:`wskan_ext.align.align_to`) or with random hidden-permutation
  augmentation (:func:`permute_edge_labels` moves edge labels along).
* :class:`DeepSetsEdges` -- DeepSets over the set of edges (Zaheer et al.): invariant to
  *any* edge permutation, hence blind to the graph structure.
* :class:`StatNN` -- per-layer weight statistics (:func:`weight_statistics`) -> MLP
  (Unterthiner et al., "Predicting Neural Network Accuracy from Weights").
* :class:`NFNEdges` -- an equivariant HNP neural functional (Zhou et al., via the
  ``nfn`` adapter) with an edge-level read-out; the invariant NFN is
  :class:`wskan_ext.adapters.nfn.KANInvariantNFN`.
* :class:`MagnitudeHeuristic` -- keep edge ``(l, i, j)`` iff the norm of its canonical
  parameters exceeds a per-layer threshold chosen on training data.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from einops import rearrange
from torch import nn

from ..kan.weights import KANWeights

__all__ = ["FlatMLP", "DeepSetsEdges", "StatNN", "NFNEdges", "MagnitudeHeuristic", "weight_statistics",
           "edge_magnitudes", "permute_edge_labels", "STAT_QUANTILES"]

#: Quantiles of StatNN's statistics (besides mean and variance), as Unterthiner et al.
STAT_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _mlp(dims: Sequence[int], act=nn.SiLU, dropout: float = 0.0) -> nn.Sequential:
    mods: List[nn.Module] = []
    for a, b in zip(dims[:-2], dims[1:-1]):
        mods += [nn.Linear(a, b), act()] + ([nn.Dropout(dropout)] if dropout else [])
    mods.append(nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*mods)


class FlatMLP(nn.Module):
    r"""MLP on flattened weights: :math:`y = \mathrm{MLP}(\mathrm{vec}(W))`.

    Args:
        in_dim: length ``D`` of the weight vector.
        out_channels: ``C``; with ``num_edges`` set the output is edge-level ``(B, E, C)``.
        hidden, layers: MLP width and number of hidden layers; ``dropout`` between them.

    Shapes: ``(B, D) -> (B, C)`` or ``(B, E, C)``.
    """

    def __init__(self, in_dim: int, out_channels: int, hidden: int = 256, layers: int = 2,
                 num_edges: int = 0, dropout: float = 0.0):
        super().__init__()
        self.num_edges, self.out_channels = int(num_edges), int(out_channels)
        out = out_channels * (num_edges or 1)
        self.net = _mlp([in_dim] + [hidden] * layers + [out], dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return y.view(x.shape[0], self.num_edges, self.out_channels) if self.num_edges else y


class DeepSetsEdges(nn.Module):
    r"""DeepSets over edges: :math:`z_e = \phi(a_e)`, :math:`\bar z = \mathrm{mean}_e z_e`;
    graph-level :math:`y = \rho(\bar z)`, edge-level :math:`y_e = \psi([z_e, \bar z])`.

    Shapes: edge features ``(B, E, F) -> (B, C)`` (``level="graph"``) or ``(B, E, C)``.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 64, level: str = "graph"):
        super().__init__()
        if level not in ("graph", "edge"):
            raise ValueError(f"level must be 'graph' or 'edge', got {level!r}")
        self.level = level
        self.phi = _mlp([in_channels, hidden, hidden, hidden])
        self.head = _mlp([2 * hidden if level == "edge" else hidden, hidden, out_channels])

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        z = self.phi(e)
        pooled = z.mean(1)
        if self.level == "graph":
            return self.head(pooled)
        return self.head(torch.cat([z, pooled.unsqueeze(1).expand_as(z)], -1))


def weight_statistics(w: KANWeights) -> torch.Tensor:
    r"""StatNN features: for every layer and every parameter group (effective spline
    coefficients, effective base weights, node scales, node biases), the mean, variance
    and quantiles :data:`STAT_QUANTILES` over the group's entries.

    Shapes: batched ``w`` -> ``(B, L * 4 * (2 + len(STAT_QUANTILES)))``.
    """
    b = w.unsqueeze()
    q = torch.tensor(STAT_QUANTILES, dtype=b.dtype, device=b.device)
    feats = []
    for l in range(b.depth):
        for t in (b.effective_coef()[l], b.effective_base()[l], b.node_scale[l], b.node_bias[l]):
            flat = t.reshape(t.shape[0], -1)
            feats += [flat.mean(1, keepdim=True), flat.var(1, unbiased=False, keepdim=True),
                      torch.quantile(flat, q, dim=1).t()]
    return torch.cat(feats, 1)


class StatNN(nn.Module):
    """MLP on :func:`weight_statistics` (graph-level only). Shapes: ``(B, S) -> (B, C)``."""

    def __init__(self, in_dim: int, out_channels: int, hidden: int = 128, layers: int = 2):
        super().__init__()
        self.net = _mlp([in_dim] + [hidden] * layers + [out_channels])

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.net(s)


class NFNEdges(nn.Module):
    r"""Equivariant HNP NFN with an edge-level read-out:
    ``[HNPLinear -> ReLU] x num_layers -> HNPLinear(hidden -> C)``, whose weight-space
    output ``weights[l]: (B, C, n_{l+1}, n_l)`` is read per edge.

    Shapes: ``WeightSpaceFeatures`` with ``weights[l]: (B, C_in, n_{l+1}, n_l)`` ->
    ``(B, E, C)``.
    """

    def __init__(self, spec, in_channels: int, out_channels: int, hidden: int = 16, num_layers: int = 2):
        super().__init__()
        from nfn.layers import HNPLinear, TupleOp

        chans = [in_channels] + [hidden] * num_layers
        mods: List[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            mods += [HNPLinear(spec, a, b), TupleOp(nn.ReLU())]
        mods.append(HNPLinear(spec, chans[-1], out_channels))
        self.net = nn.Sequential(*mods)

    def forward(self, wsfeat) -> torch.Tensor:
        out = self.net(wsfeat)
        return torch.cat([rearrange(t, "b c j i -> b (i j) c") for t in out.weights], 1)


def edge_magnitudes(w: KANWeights) -> torch.Tensor:
    r"""Norm of each edge's canonical parameters :math:`\|[\,\mathrm{mask}\cdot
    \mathrm{scale\_sp}\cdot c,\ \mathrm{mask}\cdot\mathrm{scale\_base}\,]\|_2`.

    Shapes: batched ``w`` -> ``(B, E)`` in KAN-graph edge order.
    """
    b = w.unsqueeze()
    return torch.cat([f.norm(dim=-1).reshape(f.shape[0], -1) for f in b.edge_features()], 1)


class MagnitudeHeuristic:
    """Keep an edge iff its :func:`edge_magnitudes` exceeds its layer's threshold.

    :meth:`fit` picks, per layer, the threshold (among midpoints of the sorted training
    magnitudes) with the highest training accuracy.
    """

    def __init__(self, widths: Sequence[int]):
        self.widths = list(widths)
        sizes = [a * b for a, b in zip(self.widths[:-1], self.widths[1:])]
        self.layer_of_edge = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        self.thresholds = torch.zeros(len(sizes), dtype=torch.float64)

    def fit(self, magnitudes: torch.Tensor, labels: torch.Tensor) -> "MagnitudeHeuristic":
        """``magnitudes, labels: (B, E)`` (labels 0/1)."""
        for l in range(len(self.thresholds)):
            sel = self.layer_of_edge == l
            m = magnitudes[:, sel].reshape(-1).double()
            y = labels[:, sel].reshape(-1).double()
            order = torch.argsort(m)
            ms, ys = m[order], y[order]
            # threshold between ms[c-1] and ms[c]: predict 0 for the first c, 1 for the rest
            neg_below = torch.cat([ys.new_zeros(1), torch.cumsum(1 - ys, 0)])
            pos_above = torch.cat([ys.sum().view(1), ys.sum() - torch.cumsum(ys, 0)])
            correct = neg_below + pos_above
            c = int(torch.argmax(correct))
            lo = ms[c - 1] if c > 0 else ms[0] - 1
            hi = ms[c] if c < len(ms) else ms[-1] + 1
            self.thresholds[l] = (lo + hi) / 2
        return self

    def logits(self, magnitudes: torch.Tensor) -> torch.Tensor:
        """``(B, E)`` magnitude minus threshold (``> 0`` = keep)."""
        return magnitudes.double() - self.thresholds[self.layer_of_edge].to(magnitudes.device)


def permute_edge_labels(labels: torch.Tensor, widths: Sequence[int], perms: Sequence[torch.Tensor]) -> torch.Tensor:
    """Move edge labels ``(B, E)`` along with hidden permutations ``perms[h]: (B, n_{h+1})``
    (the convention of :func:`wskan_ext.permute_hidden`: new neuron ``j`` = old ``p[j]``).

    Shapes: ``(B, E) -> (B, E)``.
    """
    B, L = labels.shape[0], len(widths) - 1
    out, off = [], 0
    ar = torch.arange(B, device=labels.device)
    for l in range(L):
        n, m = widths[l], widths[l + 1]
        t = labels[:, off: off + n * m].reshape(B, n, m)
        off += n * m
        src = perms[l - 1].expand(B, -1) if l > 0 else torch.arange(n, device=labels.device).expand(B, -1)
        dst = perms[l].expand(B, -1) if l < L - 1 else torch.arange(m, device=labels.device).expand(B, -1)
        t = t[ar[:, None, None], src[:, :, None], dst[:, None, :]]
        out.append(t.reshape(B, -1))
    return torch.cat(out, 1)
