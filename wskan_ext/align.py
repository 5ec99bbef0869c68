r"""Weight matching of hidden neurons: align KANs to a reference KAN.

Hidden neurons of a KAN can be permuted without changing its function
(:func:`~wskan_ext.permute_hidden`). Before comparing, averaging or flattening the
weights of different KANs it helps to put their hidden neurons in a common order.
:func:`align_to` finds, for each model, the hidden permutations that make it closest
to a reference KAN -- weight matching in the sense of Ainsworth et al. (Git Re-Basin),
with the similarity of two neurons measured on their **edge functions** rather than
on raw spline coefficients, so that KANs with different grids (or spline orders) can
be matched.

**Similarity.** Layer ``l`` gets a common set of ``P`` sample points
:math:`x_1 < \dots < x_P` spanning the union of the grid ranges of all its input
neurons, over every model and the reference. The *profile* of edge ``(i, j)`` is
:math:`(\phi_{ij}(x_1), \dots, \phi_{ij}(x_P))` (:func:`edge_values`). Hidden neuron
``j`` of hidden layer ``h`` is described by the profiles of its incoming edges (from
layer ``h-1``, whose neurons are taken in their current aligned order), its node affine,
and the profiles of its outgoing edges (to layer ``h+1``, in their current order). The
matching cost of a model neuron ``j`` to reference neuron ``j'`` is the squared
Euclidean distance of these descriptions; since :math:`\sum_j \|a_{\pi(j)}\|^2` does
not depend on :math:`\pi`, minimising it equals maximising
:math:`\sum_j \langle a_{\pi(j)}, r_j \rangle`, Ainsworth et al.'s objective.

**Solver.** A first forward sweep matches each hidden layer on its incoming edges and
node affine only (inputs are fixed, so the first hidden layer is matched on exact
features, then the next, ...). Then coordinate descent: each hidden layer in turn
is re-solved with incoming *and* outgoing edges by
:func:`scipy.optimize.linear_sum_assignment`, until no permutation changes. A hidden
permuted copy of the reference is therefore matched back exactly.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch
from einops import rearrange
from scipy.optimize import linear_sum_assignment

from .kan.permute import permute_hidden
from .kan.weights import KANWeights

__all__ = ["edge_values", "layer_points", "align_to"]


def layer_points(weights: KANWeights, l: int, num_points: int) -> torch.Tensor:
    r"""``num_points`` evenly spaced points covering the grid ranges ``[t_k, t_{G+k}]``
    of every input neuron of layer ``l`` (over all models, if batched).

    Shapes: returns ``(P,)``.
    """
    k = weights.k[l]
    grid = weights.grid[l]
    lo = grid[..., k].min()
    hi = grid[..., grid.shape[-1] - k - 1].max()
    return torch.linspace(0.0, 1.0, num_points, dtype=grid.dtype, device=grid.device) * (hi - lo) + lo


def edge_values(weights: KANWeights, l: int, points: torch.Tensor) -> torch.Tensor:
    r"""Values of every edge function of layer ``l`` on sample points.

    .. math::
        V[i, j, p] = \phi_{ij}(x_{i,p}) = \mathrm{mask}_{ij}\,\big(\mathrm{scale\_base}_{ij}\, b(x_{i,p})
        + \mathrm{scale\_sp}_{ij} \textstyle\sum_b \mathrm{coef}_{ijb} B_{ib}(x_{i,p})\big)

    Evaluated by :meth:`~wskan_ext.KANWeights.edge_functions` (the node affine is not
    included: it acts on the sum over ``i``).

    Shapes:
        - ``points``: ``(P,)`` (shared by all input neurons and models) or
          ``(*, n, P)`` (per input neuron, e.g. points inside each neuron's own grid);
        - returns ``(*, n, m, P)`` where ``*`` is the model axis of ``weights``, if any.
    """
    n = weights.widths[l]
    lead = weights.coef[l].shape[:-3]
    if points.dim() == 1:
        x = points.view(*([1] * len(lead)), -1, 1).expand(*lead, points.shape[0], n)
    else:
        x = rearrange(points, "... n p -> ... p n").expand(*lead, points.shape[-1], n)
    return rearrange(weights.edge_functions(l, x), "... p n m -> ... n m p")


def _lap(cost: torch.Tensor) -> torch.Tensor:
    """Rows = reference neurons, columns = model neurons; returns perm with perm[j'] = j."""
    rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
    return torch.as_tensor(cols[np.argsort(rows)], dtype=torch.long, device=cost.device)


def align_to(
    kans: KANWeights,
    reference: KANWeights,
    *,
    num_points: int = 16,
    max_iter: int = 20,
    affine_weight: float = 1.0,
) -> Tuple[KANWeights, List[torch.Tensor]]:
    r"""Align the hidden neurons of each KAN in ``kans`` to ``reference``.

    Args:
        kans: one KAN or a batch of ``B`` KANs with the reference's widths (grids,
            grid sizes and spline orders may differ from the reference's).
        reference: one (unbatched) KAN.
        num_points: sample points per layer for the edge-function profiles.
        max_iter: maximum number of coordinate-descent sweeps after the first sweep.
        affine_weight: weight of the node affine (scale, bias) in the cost.

    Returns:
        ``(aligned, perms)``: ``aligned = permute_hidden(kans, perms)`` computes the
        same functions as ``kans``; ``perms[h]`` has shape ``(B, n_{h+1})`` (``(n_{h+1},)``
        for an unbatched input) with ``aligned`` neuron ``j`` = original neuron
        ``perms[h][..., j]``.

    Shapes:
        - ``kans``: ``(B, ...)`` or unbatched; ``reference``: unbatched.
    """
    if not isinstance(kans, KANWeights) or not isinstance(reference, KANWeights):
        raise TypeError(
            f"align_to expects KANWeights, got {type(kans).__name__} and {type(reference).__name__}"
        )
    if reference.batched:
        raise ValueError(f"align_to: reference must be a single KAN, got a batch of {reference.num_models}")
    if kans.widths != reference.widths:
        raise ValueError(f"align_to: widths differ: kans have {kans.widths}, reference has {reference.widths}")
    if num_points < 1:
        raise ValueError(f"align_to: num_points must be >= 1, got {num_points}")
    single = not kans.batched
    batch = kans.unsqueeze()
    B, L, widths = batch.num_models, batch.depth, batch.widths
    ref = reference.to(dtype=batch.dtype, device=batch.device)
    # common sample points per layer (models and reference together), and profiles
    pts = []
    for l in range(L):
        a, b = layer_points(batch, l, num_points), layer_points(ref, l, num_points)
        lo, hi = torch.minimum(a[0], b[0]), torch.maximum(a[-1], b[-1])
        pts.append(torch.linspace(0.0, 1.0, num_points, dtype=a.dtype, device=a.device) * (hi - lo) + lo)
    V = [edge_values(batch, l, pts[l]) for l in range(L)]  # (B, n, m, P)
    R = [edge_values(ref, l, pts[l]) for l in range(L)]  # (n, m, P)
    A = [torch.stack([s, t], -1) * affine_weight for s, t in zip(batch.node_scale, batch.node_bias)]  # (B, m, 2)
    RA = [torch.stack([s, t], -1) * affine_weight for s, t in zip(ref.node_scale, ref.node_bias)]

    n_hidden = L - 1
    perms = [torch.arange(widths[h + 1], device=batch.device).expand(B, -1).clone() for h in range(n_hidden)]

    def ident(l: int) -> torch.Tensor:
        return torch.arange(widths[l], device=batch.device)

    def solve(b: int, h: int, outgoing: bool) -> torch.Tensor:
        # hidden layer h+1 sits between edge layers h (incoming) and h+1 (outgoing)
        p_prev = perms[h - 1][b] if h > 0 else ident(h)
        inc = rearrange(V[h][b][p_prev], "i j p -> j (i p)")
        inc_ref = rearrange(R[h], "i j p -> j (i p)")
        feats, refs = [inc, A[h][b]], [inc_ref, RA[h]]
        if outgoing:
            p_next = perms[h + 1][b] if h + 1 < n_hidden else ident(h + 2)
            feats.append(rearrange(V[h + 1][b][:, p_next], "j o p -> j (o p)"))
            refs.append(rearrange(R[h + 1], "j o p -> j (o p)"))
        f, r = torch.cat(feats, -1), torch.cat(refs, -1)
        cost = (r.unsqueeze(1) - f.unsqueeze(0)).pow(2).sum(-1)  # (ref j', model j)
        return _lap(cost)

    for b in range(B):
        for h in range(n_hidden):
            perms[h][b] = solve(b, h, outgoing=False)
        for _ in range(max_iter):
            changed = False
            for h in range(n_hidden):
                new = solve(b, h, outgoing=True)
                if not torch.equal(new, perms[h][b]):
                    perms[h][b] = new
                    changed = True
            if not changed:
                break
    aligned = permute_hidden(batch, perms)
    if single:
        return aligned[0], [p[0] for p in perms]
    return aligned, perms
