r"""Exact weight-space transforms of a KAN's *function*: reflecting an input coordinate and
negating the outputs, for augmenting INR zoos without refitting.

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
last layer's node affine, exactly. For a sine INR :math:`a \sin(bx)`, reflecting the input and
negating the output gives the *same* function (it is odd): a label-preserving augmentation.
For a 2-D image INR, reflecting coordinate ``i`` renders the image mirrored along that axis.
"""

from __future__ import annotations

import torch

from .weights import KANWeights

__all__ = ["reflect_input", "negate_output"]

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
