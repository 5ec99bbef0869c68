r"""KANs as ``nfn`` weight-space features (Zhou et al., Neural Functional Networks).

``nfn`` (PyPI ``nfn``) represents an MLP as :class:`nfn.common.WeightSpaceFeatures`,
**channels first**:

.. code-block:: text

    weights[l]: (B, C, n_{l+1}, n_l)     # row = output neuron j, column = input neuron i
    biases[l]:  (B, C, n_{l+1})

A KAN layer maps onto this layout edge for edge: :func:`to_wsfeat` takes the per-edge
channels of :func:`wskan_ext.adapters.dws.encode_channels` (``raw``, ``canonical`` =
:meth:`~wskan_ext.KANWeights.edge_features` or ``values``; see the channel table in
:mod:`wskan_ext.adapters.dws`) and rearranges them with
``b i j c -> b c j i``; the biases carry the node affine (``node_scale, node_bias``).
**Grids** belong to the input neurons of each layer, so they enter as extra edge
channels broadcast over each input neuron's outgoing edges (``b i K -> b c j i``): a
permutation of hidden layer ``h`` permutes the columns of ``weights[h]``, and the grid
channels with them. Channels are zero-padded to one count ``C`` for all layers.

With that, ``nfn``'s layers run on KANs unmodified: :class:`~nfn.layers.HNPLinear`
and :class:`~nfn.layers.HNPPool` are equivariant/invariant to hidden-neuron
permutations (the KAN symmetry), :class:`~nfn.layers.NPLinear` and
:class:`~nfn.layers.NPPool` additionally to input/output permutations.
:class:`KANInvariantNFN` is a ready invariant model (NFN layers, pooling, MLP head),
built the way ``nfn``'s examples build one for MLPs.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from wskan_ext.kan.weights import KANWeights

from .dws import ChannelLayout, channel_layout, decode_channels, encode_channels

try:
    from nfn.common import ArraySpec, NetworkSpec, WeightSpaceFeatures
    from nfn.layers import HNPLinear, HNPPool, NPLinear, NPPool, TupleOp
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("wskan_ext.adapters.nfn needs the `nfn` package: pip install 'wskan_ext[nfn]'") from exc

__all__ = ["to_wsfeat", "from_wsfeat", "network_spec", "wsfeat_layout", "KANInvariantNFN"]


def _as_kans(kans) -> KANWeights:
    from wskan_ext.registry import as_kan_weights

    return as_kan_weights(kans)


def wsfeat_layout(kans, features: str = "canonical", include_grid: bool = True, num_points: int = 16) -> ChannelLayout:
    """The :class:`~wskan_ext.adapters.dws.ChannelLayout` (channel count ``C`` and
    meaning) that :func:`to_wsfeat` uses with these arguments."""
    return channel_layout(_as_kans(kans), features, include_grid, num_points)


def to_wsfeat(
    kans,
    features: str = "canonical",
    include_grid: bool = True,
    num_points: int = 16,
    return_layout: bool = False,
):
    """KANs -> :class:`nfn.common.WeightSpaceFeatures` (channels first).

    Args:
        kans: :class:`~wskan_ext.KANWeights` (one KAN or a batch) or any model a
            registered family converts.
        features: ``"canonical"`` (default: effective coefficients and base weight,
            ``G+k+1`` channels), ``"raw"`` (bitwise invertible) or ``"values"`` (edge
            function values on ``num_points`` points of each neuron's grid range).
        include_grid: append the source neuron's knots as channels.
        return_layout: also return the :class:`~wskan_ext.adapters.dws.ChannelLayout`.

    Shapes:
        - ``weights[l]``: ``(B, C, n_{l+1}, n_l)``; ``biases[l]``: ``(B, C, n_{l+1})``.
    """
    kans = _as_kans(kans)
    layout = channel_layout(kans, features, include_grid, num_points)
    edges, nodes = encode_channels(kans, layout)
    ws = WeightSpaceFeatures(
        tuple(rearrange(e, "b i j c -> b c j i") for e in edges),
        tuple(rearrange(v, "b j c -> b c j") for v in nodes),
    )
    return (ws, layout) if return_layout else ws


def from_wsfeat(wsfeat: WeightSpaceFeatures, layout: ChannelLayout) -> KANWeights:
    """Inverse of :func:`to_wsfeat` (``raw``: bitwise; ``canonical``: the same function
    with ``scale_sp = mask = 1``; ``values``: not invertible, raises ``ValueError``)."""
    if not isinstance(wsfeat, WeightSpaceFeatures):
        raise TypeError(f"expected nfn WeightSpaceFeatures, got {type(wsfeat).__name__}")
    edges = [rearrange(w, "b c j i -> b i j c") for w in wsfeat.weights]
    nodes = [rearrange(b, "b c j -> b j c") for b in wsfeat.biases]
    return decode_channels(edges, nodes, layout)


def network_spec(kans) -> NetworkSpec:
    """The :class:`nfn.common.NetworkSpec` of a KAN architecture.

    As ``nfn.common.network_spec_from_wsfeat`` does for MLPs, the hidden dimensions are
    marked ``-1`` (permutable) and only the input width (columns of the first layer) and
    the output width (rows of the last layer and its bias) are fixed.

    Args:
        kans: :class:`~wskan_ext.KANWeights`, a model a family converts, or a list of
            widths ``[n_0, ..., n_L]``.
    """
    if isinstance(kans, (list, tuple)):
        widths = list(kans)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in widths):
            raise TypeError(f"network_spec: a list argument must hold positive int widths, got {widths!r}")
    else:
        widths = _as_kans(kans).widths
    L = len(widths) - 1
    if L < 1:
        raise ValueError(f"a KAN needs at least two widths, got {widths}")
    wspec, bspec = [], []
    for l in range(L):
        rows = widths[l + 1] if l == L - 1 else -1
        cols = widths[l] if l == 0 else -1
        wspec.append(ArraySpec((rows, cols)))
        bspec.append(ArraySpec((widths[l + 1] if l == L - 1 else -1,)))
    return NetworkSpec(wspec, bspec)


class KANInvariantNFN(nn.Module):
    r"""An invariant NFN for KANs: ``num_layers`` NFN layers with ReLU, a permutation
    invariant pooling, and an MLP head.

    .. code-block:: text

        KANs -> to_wsfeat -> [HNPLinear|NPLinear -> ReLU] x num_layers
             -> HNPPool|NPPool -> (B, pooled) -> Linear -> ReLU -> Linear -> (B, out_dim)

    ``mode="HNP"`` respects exactly the KAN symmetry (hidden neurons; needs depth >= 2);
    ``mode="NP"`` also treats input/output neurons as exchangeable (any depth).

    Args:
        spec: the :func:`network_spec` of the KAN architecture.
        in_channels: ``C`` of the input features (``wsfeat_layout(...).channels``).
        hidden_channels, num_layers: width and depth of the equivariant trunk.
        out_dim: output size; ``head_hidden``: width of the MLP head.
        features, include_grid, num_points: how :meth:`forward` adapts a
            :class:`~wskan_ext.KANWeights` input (a ``WeightSpaceFeatures`` input is
            used as is).

    Shapes:
        - input: ``WeightSpaceFeatures`` with ``weights[l]: (B, C, n_{l+1}, n_l)``, or
          a batched ``KANWeights``; output ``(B, out_dim)``.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        in_channels: int,
        hidden_channels: int = 16,
        num_layers: int = 2,
        out_dim: int = 1,
        head_hidden: int = 64,
        mode: str = "HNP",
        features: str = "canonical",
        include_grid: bool = True,
        num_points: int = 16,
    ):
        super().__init__()
        if mode not in ("HNP", "NP"):
            raise ValueError(f"mode must be 'HNP' or 'NP', got {mode!r}")
        if mode == "HNP" and len(spec) < 2:
            raise ValueError(f"mode='HNP' needs a KAN with at least 2 layers (nfn's HNPLinear), got {len(spec)}")
        Lin = HNPLinear if mode == "HNP" else NPLinear
        Pool = HNPPool if mode == "HNP" else NPPool
        chans = [in_channels] + [hidden_channels] * num_layers
        trunk = []
        for a, b in zip(chans[:-1], chans[1:]):
            trunk += [Lin(spec, a, b), TupleOp(nn.ReLU())]
        self.trunk = nn.Sequential(*trunk)
        self.pool = Pool(spec)
        pooled = Pool.get_num_outs(spec) * chans[-1]
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(pooled, head_hidden), nn.ReLU(), nn.Linear(head_hidden, out_dim))
        self.mode = mode
        self._adapt = dict(features=features, include_grid=include_grid, num_points=num_points)

    def forward(self, x) -> torch.Tensor:
        if not isinstance(x, WeightSpaceFeatures):
            x = to_wsfeat(x, **self._adapt)
        return self.head(self.pool(self.trunk(x)))
