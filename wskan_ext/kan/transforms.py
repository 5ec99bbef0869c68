r"""Exact weight-space transforms of a KAN's *function*: reflecting an input coordinate and
negating the outputs, for augmenting INR zoos without refitting; and an argmax-preserving
change of a classifier's logits, for augmenting classifier zoos whose label is an accuracy.

**Reflecting input** :math:`i` builds weights whose network computes
:math:`f(x_1, \dots, -x_i, \dots, x_n)`. On a grid symmetric about 0 (every uniform grid
over ``[-a, a]``, pykan's default ``[-1, 1]`` included) the B-splines mirror into each other,
:math:`B_b(-x) = B_{nb-1-b}(x)`, so the spline part reverses its coefficients. The base
part needs :math:`b(-x)` in terms of :math:`b(x)`:

* odd base functions (``identity``, ``tanh``, ``zero``): :math:`b(-x) = -b(x)`, the scale
  changes sign -- exact everywhere;
* ``silu``: :math:`\mathrm{silu}(-x) = \mathrm{silu}(x) - x`, and the linear term is a spline
  with the Greville abscissae as coefficients, :math:`x = \sum_b g_b B_b(x)` with
  :math:`g_b = (t_{b+1} + \dots + t_{b+k}) / k` -- exact for :math:`x` inside the grid range
  :math:`[t_k, t_{K-1-k}]` (where a KAN's inputs live; outside it the B-splines vanish and the
  transform differs); needs :math:`k \ge 1`.

Other base functions raise ``ValueError``. **Negating the outputs** flips the sign of the
last layer's node affine, exactly. **Mixing the logits** (:func:`mix_logits`) rescales every
output by one positive factor :math:`a` and adds one function of the last hidden layer to all
of them, :math:`z'_o = a z_o + \sum_j \lambda_j \bar\phi_j(h_j) + c`, with
:math:`\bar\phi_j` the node-scaled mean of the edge functions leaving neuron :math:`j`: the
last layer's edges change (their base weights, spline coefficients and spline scales), the
argmax of every input does not, nor does any accuracy. For a sine INR :math:`a \sin(bx)`, reflecting the input and
negating the output gives the *same* function (it is odd): a label-preserving augmentation.
For a 2-D image INR, reflecting coordinate ``i`` renders the image mirrored along that axis.
"""

from __future__ import annotations

import torch

from .weights import KANWeights

__all__ = ["reflect_input", "negate_output", "mix_logits"]

_ODD_BASES = ("identity", "tanh", "zero")


def _check_symmetric(grid: torch.Tensor, i: int) -> None:
    row = grid[..., i, :]
    if not torch.allclose(row, -row.flip(-1), rtol=0, atol=1e-9 * float(row.abs().max().clamp_min(1))):
        raise ValueError(f"reflect_input: layer 0, tensor 'grid', input {i}: the knots are not symmetric about 0 "
                         "(t_q = -t_{K-1-q}); only such grids mirror B-splines exactly")


def reflect_input(weights: KANWeights, i: int) -> KANWeights:
    """Weights computing the same function with input ``i`` negated (see the module
    docstring for where this is exact). The input ``weights`` are not modified.

    Shapes: every tensor keeps its shape (batched or not).
    """
    if not isinstance(weights, KANWeights):
        raise TypeError(f"reflect_input: expected KANWeights, got {type(weights).__name__}")
    n0 = weights.widths[0]
    if not (isinstance(i, int) and 0 <= i < n0):
        raise ValueError(f"reflect_input: input index must be an int in [0, {n0}), got {i!r}")
    base, k = weights.base_fun[0], weights.k[0]
    if base not in _ODD_BASES + ("silu",):
        raise ValueError(f"reflect_input: layer 0 base function {base!r} has no exact reflection; "
                         f"supported: {', '.join(_ODD_BASES + ('silu',))}")
    if base == "silu" and k < 1:
        raise ValueError("reflect_input: layer 0 has k=0; silu's linear term needs k >= 1 splines")
    grid = weights.grid[0]
    _check_symmetric(grid, i)
    coef, sb, sp = weights.coef[0].clone(), weights.scale_base[0].clone(), weights.scale_sp[0].clone()
    eff = sp[..., i, :].unsqueeze(-1) * coef[..., i, :, :].flip(-1)  # (*, m, nb): mirrored spline part
    if base == "silu":  # silu(-x) = silu(x) - x, and x = sum_b g_b B_b(x) on the grid range
        knots = grid[..., i, :]  # (*, K)
        g = knots.unfold(-1, k, 1)[..., 1:-1, :].mean(-1)  # Greville abscissae (*, nb)
        eff = eff - sb[..., i, :].unsqueeze(-1) * g.unsqueeze(-2)
    else:
        sb[..., i, :] = -sb[..., i, :]
    coef[..., i, :, :] = eff
    sp[..., i, :] = 1.0
    return weights._replace(coef=[coef] + weights.coef[1:], scale_base=[sb] + weights.scale_base[1:],
                            scale_sp=[sp] + weights.scale_sp[1:])


def negate_output(weights: KANWeights) -> KANWeights:
    """Weights computing ``-f``: the last layer's node scale and bias change sign. The input
    ``weights`` are not modified."""
    if not isinstance(weights, KANWeights):
        raise TypeError(f"negate_output: expected KANWeights, got {type(weights).__name__}")
    return weights._replace(node_scale=weights.node_scale[:-1] + [-weights.node_scale[-1]],
                            node_bias=weights.node_bias[:-1] + [-weights.node_bias[-1]])


def mix_logits(weights: KANWeights, scale, common, shift=0.0) -> KANWeights:
    r"""Weights whose outputs are :math:`z'_o(x) = a\, z_o(x) + \sum_j \lambda_j \bar\phi_j(h_j) + c`:
    one positive rescaling and one function shared by every output, so the argmax over the
    outputs (a classifier's prediction) is unchanged for every input. Here :math:`h_j` are the
    last layer's inputs and :math:`\bar\phi_j = \operatorname{mean}_o s_o \phi_{jo}` the mean
    over outputs of the edge functions leaving :math:`j`, scaled by the output node scales
    :math:`s_o`. Exact in real arithmetic: base weights and spline coefficients of the last
    layer are linear in their function, and each edge :math:`(j, o)` gets
    :math:`\lambda_j \bar\phi_j / s_o`. The input ``weights`` are not modified.

    Args:
        weights: a KAN or a stack of KANs.
        scale: :math:`a > 0`, a number or a tensor of shape ``(*)`` (one per KAN).
        common: :math:`\lambda`, a number or a tensor of shape ``(*, n)`` (``n`` = inputs of
            the last layer). A source neuron with a masked or zero-scale outgoing edge, whose
            share cannot reach every output, gets :math:`\lambda_j = 0`.
        shift: :math:`c`, a number or a tensor of shape ``(*)``.

    Shapes: every tensor keeps its shape (batched or not).

    Raises ``ValueError`` for a non-positive scale or a zero output node scale, naming the
    layer and tensor.
    """
    if not isinstance(weights, KANWeights):
        raise TypeError(f"mix_logits: expected KANWeights, got {type(weights).__name__}")
    l = weights.depth - 1
    coef, sb, sp = weights.coef[l], weights.scale_base[l], weights.scale_sp[l]
    mask, ns, nb = weights.mask[l], weights.node_scale[l], weights.node_bias[l]
    batch = ns.shape[:-1]
    n = sb.shape[-2]
    opts = dict(dtype=coef.dtype, device=coef.device)
    a = torch.as_tensor(scale, **opts).expand(batch)
    lam = torch.as_tensor(common, **opts).expand(*batch, n)
    c = torch.as_tensor(shift, **opts).expand(batch)
    if not bool((a > 0).all()) or not bool(torch.isfinite(a).all()):
        raise ValueError(f"mix_logits: scale must be finite and > 0 (a positive rescaling keeps the argmax), got {scale!r}")
    if bool((ns == 0).any()):
        raise ValueError(f"mix_logits: layer {l}, tensor 'node_scale' has zeros; an output with node scale 0 "
                         "cannot take the shared function")
    live = ((mask != 0) & (sp != 0)).all(-1)  # (*, n): sources whose edges reach every output
    lam = torch.where(live, lam, torch.zeros_like(lam))
    ms = mask * sp  # (*, n, m)
    nsu = ns.unsqueeze(-2)  # (*, 1, m)
    # node-scaled mean edge function per source: spline part (*, n, nb), base part (*, n)
    spline_mean = (nsu.unsqueeze(-1) * ms.unsqueeze(-1) * coef).mean(-2)
    base_mean = (nsu * mask * sb).mean(-1)
    add_spline = (lam.unsqueeze(-1) * spline_mean).unsqueeze(-2) / nsu.unsqueeze(-1)  # (*, n, m, nb)
    add_base = (lam * base_mean).unsqueeze(-1) / nsu  # (*, n, m)
    safe = torch.where(ms != 0, ms, torch.ones_like(ms))
    new_coef = torch.where((ms != 0).unsqueeze(-1), coef + add_spline / (a[..., None, None, None] * safe.unsqueeze(-1)),
                           coef)
    safe_mask = torch.where(mask != 0, mask, torch.ones_like(mask))
    new_sb = a[..., None, None] * sb + torch.where(mask != 0, add_base / safe_mask, torch.zeros_like(sb))
    new_sp = a[..., None, None] * sp
    new_nb = a[..., None] * nb + c[..., None]

    def put(lst, t):
        return lst[:l] + [t]

    return weights._replace(coef=put(weights.coef, new_coef), scale_base=put(weights.scale_base, new_sb),
                            scale_sp=put(weights.scale_sp, new_sp), node_bias=put(weights.node_bias, new_nb))
