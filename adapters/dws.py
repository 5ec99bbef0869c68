r"""KANs in the weight-space tuple format of DWSNets, Neural Graphs and ScaleGMN.

Those libraries consume an MLP as two tuples of tensors, **channels last**, plus the
list of layer widths (``layer_layout``):

.. code-block:: text

    weights[l]: (B, n_l, n_{l+1}, C)     # edge (i, j) of layer l, C features
    biases[l]:  (B, n_{l+1}, C)          # neuron j of layer l+1
    layer_layout = [n_0, n_1, ..., n_L]

A KAN layer has exactly this structure: one edge function per ``(i, j)`` and a node
affine per output neuron. :func:`to_dws` writes the per-edge features into the ``C``
channels of ``weights[l]`` and the node affine into ``biases[l]``; the grid, which
belongs to input neuron ``i`` of layer ``l``, is broadcast over that neuron's outgoing
edges (``b i K -> b i m K``) so that it moves with the neuron under every
permutation. Edge channels of layer ``l`` (``K = G_l + 2k_l + 1`` knots):

=============  ==================================================================  =============
features       edge channels                                                       invertible
=============  ==================================================================  =============
``raw``        ``coef (G+k) | scale_base | scale_sp | mask | grid (K)``            bitwise
``canonical``  ``mask*scale_sp*coef (G+k) | mask*scale_base | grid (K)``           same function
``values``     ``phi_ij`` at ``P`` points of ``[t_k, t_{G+k}]``, then ``lo | hi``  no
=============  ==================================================================  =============

Node channels are ``node_scale | node_bias``. Layers (and weights vs. biases) are
zero-padded to one common ``C`` (the most any layer needs), as DWSNets-style models
need one channel count. :class:`ChannelLayout` records what sits where;
:func:`from_dws` inverts ``raw`` bitwise and ``canonical`` up to the rescaling
symmetry (``scale_sp = mask = 1``, an identical forward pass).

An MLP zoo stored in this format (``C = 1``: ``weights[l][b, :, :, 0]`` is the
transposed ``nn.Linear`` weight) is read by :func:`mlps_from_dws` /
:func:`kans_from_dws_mlps` and written by :func:`mlps_to_dws`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Sequence, Tuple

import torch
from einops import rearrange, repeat
from torch import nn

from wskan_ext.kan.weights import KANWeights

__all__ = [
    "FEATURES",
    "ChannelLayout",
    "channel_layout",
    "encode_channels",
    "decode_channels",
    "DWSInput",
    "to_dws",
    "from_dws",
    "mlps_to_dws",
    "mlps_from_dws",
    "kans_from_dws_mlps",
]

#: Per-edge feature encodings understood by the dws and nfn adapters.
FEATURES = ("raw", "canonical", "values")


@dataclass(frozen=True)
class ChannelLayout:
    """What each channel of the adapted tensors holds (enough to invert them).

    Attributes:
        features: ``"raw"``, ``"canonical"`` or ``"values"``.
        include_grid: whether grid channels follow the edge features.
        num_points: sample points per edge for ``features="values"``.
        widths, k, grid_sizes, base_fun: the KAN architecture.
        channels: the common channel count ``C`` (after zero padding).
    """

    features: str
    include_grid: bool
    num_points: int
    widths: Tuple[int, ...]
    k: Tuple[int, ...]
    grid_sizes: Tuple[int, ...]
    base_fun: Tuple[str, ...]
    channels: int

    @property
    def depth(self) -> int:
        return len(self.k)

    def edge_channel_names(self, l: int) -> List[str]:
        """Names of the used edge channels of layer ``l``, in order."""
        G, k = self.grid_sizes[l], self.k[l]
        if self.features == "values":
            names = [f"phi(x_{p})" for p in range(self.num_points)]
            return names + (["lo", "hi"] if self.include_grid else [])
        coef = "coef" if self.features == "raw" else "eff_coef"
        names = [f"{coef}[{b}]" for b in range(G + k)]
        names += ["scale_base", "scale_sp", "mask"] if self.features == "raw" else ["eff_base"]
        return names + ([f"grid[{q}]" for q in range(G + 2 * k + 1)] if self.include_grid else [])

    def node_channel_names(self, l: int) -> List[str]:
        """Names of the used node (bias) channels of layer ``l``."""
        return ["node_scale", "node_bias"]


def channel_layout(
    kans: KANWeights, features: str = "canonical", include_grid: bool = True, num_points: int = 16
) -> ChannelLayout:
    """The :class:`ChannelLayout` that :func:`encode_channels` uses for ``kans``."""
    if not isinstance(kans, KANWeights):
        raise TypeError(f"expected KANWeights, got {type(kans).__name__} (convert with wskan_ext.as_kan_weights)")
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    if features == "values" and num_points < 1:
        raise ValueError(f"num_points must be >= 1 for features='values', got {num_points}")
    lay = ChannelLayout(
        features, bool(include_grid), int(num_points), tuple(kans.widths), tuple(kans.k),
        tuple(kans.grid_sizes), tuple(kans.base_fun), 0,
    )
    C = max(max(len(lay.edge_channel_names(l)), len(lay.node_channel_names(l))) for l in range(kans.depth))
    return ChannelLayout(**{**lay.__dict__, "channels": C})


def _pad(t: torch.Tensor, C: int) -> torch.Tensor:
    return torch.cat([t, t.new_zeros(*t.shape[:-1], C - t.shape[-1])], dim=-1)


def encode_channels(kans: KANWeights, layout: ChannelLayout) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    r"""Per-edge and per-node channels of a batch of KANs, channels last.

    Shapes:
        - returns ``edges[l]: (B, n_l, n_{l+1}, C)`` and ``nodes[l]: (B, n_{l+1}, C)``
          (an unbatched KAN is treated as ``B = 1``).
    """
    if list(layout.widths) != kans.widths or list(layout.k) != kans.k or list(layout.grid_sizes) != kans.grid_sizes:
        raise ValueError(
            f"channel layout is for widths={list(layout.widths)}, k={list(layout.k)}, "
            f"grid_sizes={list(layout.grid_sizes)}; got KANs with {kans.architecture}"
        )
    w = kans.unsqueeze()
    C = layout.channels
    edges, nodes = [], []
    eff_coef, eff_base = w.effective_coef(), w.effective_base()
    for l in range(w.depth):
        m, k, grid = w.widths[l + 1], w.k[l], w.grid[l]
        if layout.features == "raw":
            parts = [w.coef[l], w.scale_base[l][..., None], w.scale_sp[l][..., None], w.mask[l][..., None]]
        elif layout.features == "canonical":
            parts = [eff_coef[l], eff_base[l][..., None]]
        else:
            lo, hi = grid[..., k], grid[..., grid.shape[-1] - k - 1]  # (B, n)
            s = torch.linspace(0.0, 1.0, layout.num_points, dtype=grid.dtype, device=grid.device)
            pts = lo[..., None] + (hi - lo)[..., None] * s  # (B, n, P): each neuron's own grid range
            parts = [rearrange(w.edge_functions(l, rearrange(pts, "b n p -> b p n")), "b p n m -> b n m p")]
            grid = torch.stack([lo, hi], dim=-1)
        if layout.include_grid:
            parts.append(repeat(grid, "b i K -> b i m K", m=m))
        edges.append(_pad(torch.cat(parts, dim=-1), C))
        nodes.append(_pad(torch.stack([w.node_scale[l], w.node_bias[l]], dim=-1), C))
    return edges, nodes


def decode_channels(edges: Sequence[torch.Tensor], nodes: Sequence[torch.Tensor], layout: ChannelLayout) -> KANWeights:
    """Inverse of :func:`encode_channels` (``raw``: bitwise; ``canonical``: same
    function with ``scale_sp = mask = 1``; ``values``: not invertible).

    Shapes: ``edges[l]: (B, n_l, n_{l+1}, C)``, ``nodes[l]: (B, n_{l+1}, C)`` -> a
    batched :class:`~wskan_ext.KANWeights` of ``B`` models.
    """
    if layout.features == "values":
        raise ValueError(
            "features='values' samples the edge functions and cannot be inverted; "
            "encode with features='raw' (bitwise) or 'canonical' (same function) to go back"
        )
    if not layout.include_grid:
        raise ValueError("the grids were not encoded (include_grid=False); cannot rebuild KANWeights")
    L, widths = layout.depth, layout.widths
    if len(edges) != L or len(nodes) != L:
        raise ValueError(f"expected {L} weight and {L} bias tensors (one per layer), got {len(edges)} and {len(nodes)}")
    kw = {f: [] for f in ("grid", "coef", "scale_base", "scale_sp", "mask", "node_scale", "node_bias")}
    for l in range(L):
        e, v = edges[l], nodes[l]
        n, m, C = widths[l], widths[l + 1], layout.channels
        if e.dim() != 4 or tuple(e.shape[1:]) != (n, m, C):
            raise ValueError(f"layer {l}: weights must have shape (B, {n}, {m}, {C}), got {tuple(e.shape)}")
        if v.dim() != 3 or tuple(v.shape[1:]) != (m, C) or v.shape[0] != e.shape[0]:
            raise ValueError(f"layer {l}: biases must have shape ({e.shape[0]}, {m}, {C}), got {tuple(v.shape)}")
        nb, K = layout.grid_sizes[l] + layout.k[l], layout.grid_sizes[l] + 2 * layout.k[l] + 1
        kw["coef"].append(e[..., :nb])
        if layout.features == "raw":
            for f, c in (("scale_base", nb), ("scale_sp", nb + 1), ("mask", nb + 2)):
                kw[f].append(e[..., c])
            g0 = nb + 3
        else:
            kw["scale_base"].append(e[..., nb])
            kw["scale_sp"].append(torch.ones_like(e[..., nb]))
            kw["mask"].append(torch.ones_like(e[..., nb]))
            g0 = nb + 1
        kw["grid"].append(e[:, :, 0, g0 : g0 + K])
        kw["node_scale"].append(v[..., 0])
        kw["node_bias"].append(v[..., 1])
    kw = {f: [t.contiguous() for t in ts] for f, ts in kw.items()}
    return KANWeights(**kw, k=list(layout.k), base_fun=list(layout.base_fun))


class DWSInput(NamedTuple):
    """Output of :func:`to_dws`: ``model((out.weights, out.biases))`` feeds a DWSNets-style model."""

    weights: Tuple[torch.Tensor, ...]  #: ``(B, n_l, n_{l+1}, C)`` per layer
    biases: Tuple[torch.Tensor, ...]  #: ``(B, n_{l+1}, C)`` per layer
    layer_layout: List[int]  #: ``[n_0, ..., n_L]``
    layout: ChannelLayout  #: channel meaning, for :func:`from_dws`


def to_dws(kans, features: str = "canonical", include_grid: bool = True, num_points: int = 16) -> DWSInput:
    """KANs -> DWSNets/Neural Graphs/ScaleGMN tuples (channels last).

    Args:
        kans: :class:`~wskan_ext.KANWeights` (one or a batch) or any object a registered family
            converts (see :func:`wskan_ext.as_kan_weights`).
        features: ``"raw"`` (bitwise invertible), ``"canonical"`` (rescaling symmetry
            removed) or ``"values"`` (edge function values, grid-agnostic).
        include_grid: append the source neuron's knots (``lo, hi`` for ``values``).
        num_points: sample points per edge for ``values``.

    Shapes:
        - ``weights[l]``: ``(B, n_l, n_{l+1}, C)``; ``biases[l]``: ``(B, n_{l+1}, C)``.
    """
    from wskan_ext.registry import as_kan_weights

    kans = as_kan_weights(kans)
    layout = channel_layout(kans, features, include_grid, num_points)
    edges, nodes = encode_channels(kans, layout)
    return DWSInput(tuple(edges), tuple(nodes), list(kans.widths), layout)


def from_dws(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], layout: ChannelLayout) -> KANWeights:
    """DWS tuples -> batched :class:`~wskan_ext.KANWeights` (inverse of :func:`to_dws`).

    Shapes: ``weights[l]: (B, n_l, n_{l+1}, C)``, ``biases[l]: (B, n_{l+1}, C)``.
    """
    if not isinstance(layout, ChannelLayout):
        raise TypeError(f"layout must be the ChannelLayout returned by to_dws, got {type(layout).__name__}")
    return decode_channels(list(weights), list(biases), layout)


# ----------------------------------------------------------------------- MLP zoos
def _check_mlp_dws(weights, biases) -> List[int]:
    weights, biases = list(weights), list(biases)
    if len(weights) != len(biases) or not weights:
        raise ValueError(f"expected as many weight as bias tensors (>= 1), got {len(weights)} and {len(biases)}")
    layout = [weights[0].shape[1]]
    for l, (w, b) in enumerate(zip(weights, biases)):
        if w.dim() != 4 or w.shape[-1] != 1 or w.shape[1] != layout[-1]:
            raise ValueError(f"layer {l}: weights must have shape (B, {layout[-1]}, n_out, 1), got {tuple(w.shape)}")
        if tuple(b.shape) != (w.shape[0], w.shape[2], 1):
            raise ValueError(f"layer {l}: biases must have shape {(w.shape[0], w.shape[2], 1)}, got {tuple(b.shape)}")
        layout.append(w.shape[2])
    return layout


_ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "silu": nn.SiLU,
    "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "softplus": nn.Softplus,
}


def mlps_from_dws(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], activation: str = "relu") -> List[nn.Sequential]:
    """Read an MLP zoo stored as DWS tuples (``C = 1``) into ``nn.Sequential`` models
    (``Linear, act, Linear, act, ..., Linear``), with the exact stored values.

    Shapes: ``weights[l]: (B, n_l, n_{l+1}, 1)`` (transposed ``nn.Linear.weight``),
    ``biases[l]: (B, n_{l+1}, 1)``.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}")
    layout = _check_mlp_dws(weights, biases)
    models = []
    for b in range(weights[0].shape[0]):
        mods: List[nn.Module] = []
        for l, (w, bias) in enumerate(zip(weights, biases)):
            lin = nn.Linear(layout[l], layout[l + 1], dtype=w.dtype, device=w.device)
            with torch.no_grad():
                lin.weight.copy_(rearrange(w[b, ..., 0], "i o -> o i"))
                lin.bias.copy_(bias[b, :, 0])
            mods.append(lin)
            if l < len(layout) - 2:
                mods.append(_ACTIVATIONS[activation]())
        models.append(nn.Sequential(*mods))
    return models


def mlps_to_dws(mlps: Sequence[nn.Module]) -> Tuple[Tuple[torch.Tensor, ...], Tuple[torch.Tensor, ...], List[int]]:
    """Write ``nn.Sequential`` MLPs of one architecture as DWS tuples (``C = 1``).

    Returns: ``(weights, biases, layer_layout)`` with ``weights[l]: (B, n_l, n_{l+1}, 1)``.
    """
    lins = [[m for m in mlp.modules() if isinstance(m, nn.Linear)] for mlp in mlps]
    if not lins or not lins[0]:
        raise ValueError("mlps_to_dws: expected a non-empty list of models containing nn.Linear layers")
    shapes = [tuple(l.weight.shape for l in ls) for ls in lins]
    for i, s in enumerate(shapes):
        if s != shapes[0]:
            raise ValueError(f"mlps_to_dws: model {i} has Linear shapes {s}, model 0 has {shapes[0]}")
    weights, biases = [], []
    for l in range(len(lins[0])):
        W = torch.stack([ls[l].weight.detach() for ls in lins])
        weights.append(rearrange(W, "b o i -> b i o 1"))
        bs = [ls[l].bias.detach() if ls[l].bias is not None else torch.zeros_like(W[0, :, 0]) for ls in lins]
        biases.append(rearrange(torch.stack(bs), "b o -> b o 1"))
    return tuple(weights), tuple(biases), [shapes[0][0][1]] + [s[0] for s in shapes[0]]


def kans_from_dws_mlps(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], activation: str = "relu") -> KANWeights:
    """An MLP zoo in DWS format -> a batch of KANs computing the same functions, via
    the exact conversion ``wskan_ext.mlp_to_kan`` (``route="exact"``)."""
    from wskan_ext.convert import mlp_to_kan

    return mlp_to_kan(mlps_from_dws(weights, biases, activation), route="exact")
