"""Exact KAN -> MLP conversion (see ``docs/convert.rst`` for the construction)."""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from ..kan.spline import truncated_power_coefficients
from ..kan.weights import KANWeights
from .modules import BatchedLinear, Clamp, ReLUPower, SplitActivation, _linear, activation_module

__all__ = ["kan_to_mlp", "work_dtype"]


def work_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """float64 for the conversion arithmetic wherever the device supports it."""
    return dtype if device.type == "mps" else torch.float64


def _as_weights(kans) -> KANWeights:
    if isinstance(kans, KANWeights):
        return kans
    if isinstance(kans, (list, tuple)):
        from ..registry import as_kan_weights

        return KANWeights.stack([as_kan_weights(k) for k in kans])
    from ..registry import as_kan_weights

    return as_kan_weights(kans)


def _layer_maps(w: KANWeights, l: int, wd: torch.dtype):
    """Expansion, clamp bounds and contraction of layer ``l`` (batched, in dtype ``wd``).

    Shapes (``B`` models, ``n`` inputs, ``m`` outputs, ``K`` knots, ``F = n K + n``):
        - ``src``: ``(F,)`` source input neuron of each expanded feature;
        - ``e_bias``, ``lower``, ``upper``: ``(B, F)``;
        - ``c_weight``: ``(B, m, F)``; ``c_bias``: ``(B, m)``.
    """
    grid = w.grid[l].to(wd)  # (B, n, K)
    B, n, K = grid.shape
    k = w.k[l]
    dev = grid.device
    A = truncated_power_coefficients(grid, k)  # (B, n, nb, K)
    ec = w.effective_coef()[l].to(wd)  # (B, n, m, nb)
    eb = w.effective_base()[l].to(wd)  # (B, n, m)
    if w.base_fun[l] == "zero":
        eb = torch.zeros_like(eb)
    ns, nbias = w.node_scale[l].to(wd), w.node_bias[l].to(wd)  # (B, m)
    tp = torch.einsum("bimc,bicq->bmiq", ec, A)  # truncated-power coefficients (B, m, n, K)
    c_spline = (ns[:, :, None, None] * tp).reshape(B, -1, n * K)
    c_base = ns[:, :, None] * eb.transpose(1, 2)  # (B, m, n)
    c_weight = torch.cat([c_spline, c_base], dim=-1)
    src = torch.cat([torch.arange(n, device=dev).repeat_interleave(K), torch.arange(n, device=dev)])
    zeros = grid.new_zeros(B, n)
    e_bias = torch.cat([-grid.reshape(B, n * K), zeros], dim=-1)
    inf = torch.full_like(zeros, float("inf"))
    lower = torch.cat([(grid[..., :1] - grid).reshape(B, n * K), -inf], dim=-1)
    upper = torch.cat([(grid[..., -1:] - grid).reshape(B, n * K), inf], dim=-1)
    return src, e_bias, lower, upper, c_weight, nbias


def kan_to_mlp(kans, form: str = "factored", clamp: bool = True) -> nn.Sequential:
    r"""Convert KAN(s) into an MLP computing exactly the same function.

    Each KAN layer :math:`\ell` (``n`` inputs with knots :math:`t_{i,0..K-1}`, ``m``
    outputs) becomes

    1. an **expansion** ``Linear(n, nK + n)``: feature :math:`(i, q)` is
       :math:`x_i - t_{i,q}` (weight 1, bias :math:`-t_{i,q}`), followed by the ``n``
       copies :math:`x_i` for the base function;
    2. with ``clamp=True``, a :class:`Clamp` of feature :math:`(i,q)` to
       :math:`[t_{i,0} - t_{i,q},\ t_{i,K-1} - t_{i,q}]` (i.e. :math:`x_i` clamped to its
       grid; the spline is zero at both ends, so this is exact, and it removes the
       catastrophic cancellation of truncated powers far outside the grid);
    3. a :class:`SplitActivation`: :class:`ReLUPower` ``(k)`` on the ``nK`` spline units,
       the base function's module on the ``n`` base units;
    4. a **contraction** ``Linear(nK + n, m)`` with weights
       :math:`s_j \sum_b \tilde c_{ijb} A_{i,bq}` (spline units) and
       :math:`s_j \tilde w_{ij}` (base units), bias :math:`\beta_j`, where
       :math:`\tilde c, \tilde w` are the effective coefficients / base weights, ``A`` the
       matrix of :func:`~wskan_ext.kan.spline.truncated_power_coefficients` and
       :math:`s, \beta` the node affine.

    ``form="factored"`` keeps expansion and contraction apart (parameters ~ the KAN's
    plus the sparse expansions); ``form="merged"`` multiplies each contraction into the
    next expansion (one dense ``Linear`` between hidden layers, about ``K`` times larger).
    Base function ``zero`` is carried by ``nn.Identity`` units with zero weights.

    Args:
        kans: :class:`~wskan_ext.KANWeights` (single or batched), a list of them, or any
            object :func:`~wskan_ext.as_kan_weights` accepts.
        form: ``"factored"`` or ``"merged"``.
        clamp: insert the :class:`Clamp` modules (recommended; needed for float32
            accuracy far outside the grid).

    Returns:
        One KAN: an ``nn.Sequential`` of ``nn.Linear``, :class:`Clamp` and
        :class:`SplitActivation`. Batched KANs (``N`` models): the same with
        :class:`BatchedLinear` (expansion weights shared, stored once) and batched
        :class:`Clamp`; :func:`~wskan_ext.convert.unbatch_mlp` splits it into ``N``
        standard MLPs. Tensors stay on the KANs' device and dtype.

    Shapes:
        - single: input ``(s, n_0)`` -> ``(s, n_L)``;
        - batched: input ``(N, s, n_0)`` or ``(s, n_0)`` -> ``(N, s, n_L)``.
    """
    if form not in ("factored", "merged"):
        raise ValueError(f"form must be 'factored' or 'merged', got {form!r}")
    w = _as_weights(kans)
    batched = w.batched
    wb = w.unsqueeze()
    dtype, dev = w.dtype, w.device
    wd = work_dtype(dev, dtype)
    maps = [_layer_maps(wb, l, wd) for l in range(w.depth)]

    def lin(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
        weight, bias = weight.to(dtype), bias.to(dtype)
        if batched:
            return BatchedLinear(weight.contiguous(), bias.contiguous())
        return _linear(weight[0], bias[0])

    def act(l: int) -> List[nn.Module]:
        src, _, lower, upper, _, _ = maps[l]
        n, K = w.widths[l], w.grid[l].shape[-1]
        mods: List[nn.Module] = []
        if clamp:
            lo, hi = lower.to(dtype), upper.to(dtype)
            mods.append(Clamp(lo, hi) if batched else Clamp(lo[0], hi[0]))
        mods.append(SplitActivation([n * K, n], [ReLUPower(w.k[l]), activation_module(w.base_fun[l])]))
        return mods

    def expansion(l: int) -> Tuple[torch.Tensor, torch.Tensor]:
        src, e_bias, *_ = maps[l]
        onehot = torch.nn.functional.one_hot(src, w.widths[l]).to(wd)  # (F, n)
        return onehot.unsqueeze(0), e_bias

    mods: List[nn.Module] = []
    ew, eb = expansion(0)
    mods.append(lin(ew, eb))
    mods.extend(act(0))
    for l in range(w.depth):
        cw, cb = maps[l][4], maps[l][5]
        if l == w.depth - 1:
            mods.append(lin(cw, cb))
        elif form == "factored":
            mods.append(lin(cw, cb))
            ew, eb = expansion(l + 1)
            mods.append(lin(ew, eb))
            mods.extend(act(l + 1))
        else:  # merged: expansion(l+1) o contraction(l) = rows of the contraction, gathered
            src, e_bias = maps[l + 1][0], maps[l + 1][1]
            mods.append(lin(cw[:, src, :], cb[:, src] + e_bias))
            mods.extend(act(l + 1))
    return nn.Sequential(*mods)
