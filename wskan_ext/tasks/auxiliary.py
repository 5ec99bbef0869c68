r"""Auxiliary *function-value* targets for meta-training (``TrainConfig(aux_points=P)``).

A graph-level regression label (a sine's :math:`(a, b)`, a classifier's accuracy) is two or
fewer numbers per KAN; on a few thousand KANs a meta-model fits them and generalises poorly.
The KAN's own outputs at fixed points of its input domain are further labels that every
training KAN carries for free: they are computed from its *weights* alone (the exact forward
pass, :meth:`~wskan_ext.KANWeights.forward`), no data is read. With ``aux_points=P`` the
meta-model gets :math:`P \cdot n_L` extra outputs trained to predict them,

.. math::
    \mathcal L = \mathcal L_{\text{task}} + \lambda\,\frac{1}{|\mathcal B|\,P\,n_L}
    \sum_{b \in \mathcal B} \sum_{p, o} \big(\hat f_b(x_p)_o - \tilde f_b(x_p)_o\big)^2,

with :math:`\tilde f` standardised per column on the training split and :math:`\lambda`
``aux_weight``. The extra outputs are dropped for validation, test and every metric: at
prediction time the meta-model still sees only the weights (no probe inputs), so a run with
auxiliary targets stays in the pure weight-space table. It is a training setting, like
``rank_weight``, offered to every trainable model alike.

The points: ``P`` equispaced points of the input grid range for a one-input KAN; for
``n_0 > 1`` inputs, ``P`` points drawn uniformly (seed 0) from the box of the input grid
ranges. The range is the union over the training split's KANs of
:math:`[t_k, t_{G+k}]` per input neuron, so every split uses the same points.
"""

from __future__ import annotations

import torch

from ..kan.weights import KANWeights

__all__ = ["function_points", "function_values"]


def function_points(weights: KANWeights, num_points: int) -> torch.Tensor:
    """Fixed input points in the grid range of ``weights``' first layer (see the module docstring).

    Shapes:
        ``weights``: batched, ``B`` KANs with ``n_0`` inputs -> ``(P, n_0)``.
    """
    if not isinstance(weights, KANWeights):
        raise TypeError(f"function_points: expected KANWeights, got {type(weights).__name__}")
    if not (isinstance(num_points, int) and not isinstance(num_points, bool) and num_points >= 1):
        raise ValueError(f"function_points: num_points must be an int >= 1, got {num_points!r}")
    grid, k = weights.grid[0], weights.k[0]  # (B, n_0, K) or (n_0, K)
    g = grid.reshape(-1, *grid.shape[-2:]).double()
    lo, hi = g[..., k].amin(0), g[..., -1 - k].amax(0)  # (n_0,)
    if lo.numel() == 1:
        u = torch.linspace(0, 1, num_points, dtype=torch.float64)[:, None]
    else:
        u = torch.rand(num_points, lo.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (lo + (hi - lo) * u).to(weights.dtype)


def function_values(weights: KANWeights, points: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Every KAN's outputs at ``points``, flattened point-major, in ``chunk``-sized model batches.

    Shapes:
        ``weights``: ``B`` KANs, ``points``: ``(P, n_0)`` -> ``(B, P * n_L)``.
    """
    if not isinstance(weights, KANWeights) or not weights.batched:
        raise TypeError("function_values: expected batched KANWeights (a leading model axis)")
    if points.ndim != 2 or points.shape[1] != weights.widths[0]:
        raise ValueError(f"function_values: points must be (P, {weights.widths[0]}), got {tuple(points.shape)}")
    n = weights.num_models
    with torch.no_grad():
        out = [weights[a: a + chunk].forward(points.to(weights.dtype)) for a in range(0, n, chunk)]
    return torch.cat(out).reshape(n, -1)
