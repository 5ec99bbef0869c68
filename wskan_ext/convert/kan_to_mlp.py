"""Exact KAN -> MLP conversion (see ``docs/convert.rst`` for the construction)."""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from ..kan.spline import truncated_power_coefficients
from ..kan.weights import KANWeights
from .modules import BatchedLinear, Clamp, ReLUPower, SplitActivation, _linear, activation_module

__all__ = ["kan_to_mlp", "work_dtype", "solve_dtype", "basis_alpha"]


def work_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """dtype of the conversion arithmetic: at least float32 (half precisions are promoted).

    Every product formed here has a few terms of one sign pattern fixed by the knots, so
    it is accurate to a few ulps in the weights' own precision; the one ill-conditioned
    step (the normal equations of knot units in :func:`~wskan_ext.mlp_to_kan`) promotes
    to float64 itself.
    """
    return torch.promote_types(dtype, torch.float32)


def solve_dtype(device: torch.device) -> torch.dtype:
    """float64 wherever the device has it (not on Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _as_weights(kans) -> KANWeights:
    """The input as validated :class:`KANWeights` (re-validated: weights may have been
    edited in place since they were built, e.g. to NaN)."""
    from ..registry import as_kan_weights

    if isinstance(kans, KANWeights):
        w = kans
    elif isinstance(kans, (list, tuple)):
        if not kans:
            raise ValueError("kan_to_mlp: got an empty list of KANs")
        w = KANWeights.stack([as_kan_weights(k) for k in kans])
    else:
        w = as_kan_weights(kans)
    return w.validate()


def basis_alpha(A: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k+1`` truncated-power coefficients of each B-spline on its own knots
    ``t_b .. t_{b+k}`` (the one on ``t_{b+k+1}`` is not needed once the input is clamped
    to the support): ``alpha[..., b, r] = A[..., b, b + r]``.

    Shapes: ``A``: ``(*, nb, K)``; returns ``(*, nb, k+1)``.
    """
    nb = A.shape[-2]
    idx = torch.arange(nb, device=A.device)[:, None] + torch.arange(k + 1, device=A.device)
    return torch.gather(A, -1, idx.expand(*A.shape[:-2], nb, k + 1))


def _layer_maps(w: KANWeights, l: int, wd: torch.dtype, ec: torch.Tensor, eb: torch.Tensor, units: str):
    """Expansion, clamp bounds and contraction of layer ``l`` (batched, in dtype ``wd``).

    ``units="knots"``: ``U = K`` units per input, unit ``q`` is ``(x - t_q)_+^k`` with ``x``
    clamped to the grid. ``units="basis"``: ``U = (G+k)(k+1)`` units per input, unit
    ``(b, r)`` is ``(x - t_{b+r})_+^k`` with ``x`` clamped to the support of ``B_b``.

    Shapes (``B`` models, ``n`` inputs, ``m`` outputs, ``F = n U + n``):
        - ``src``: ``(F,)`` source input neuron of each expanded feature;
        - ``e_bias``, ``lower``, ``upper``: ``(B, F)``;
        - ``c_weight``: ``(B, m, F)``; ``c_bias``: ``(B, m)``.
    """
    grid = w.grid[l].to(wd)  # (B, n, K)
    B, n, K = grid.shape
    k = w.k[l]
    dev = grid.device
    A = truncated_power_coefficients(grid, k)  # (B, n, nb, K)
    ec, eb = ec.to(wd), eb.to(wd)  # effective coef (B, n, m, nb) and base weight (B, n, m)
    if w.base_fun[l] == "zero":
        eb = torch.zeros_like(eb)
    ns, nbias = w.node_scale[l].to(wd), w.node_bias[l].to(wd)  # (B, m)
    if units == "knots":
        knots = grid  # knot of each unit (B, n, U)
        lo_end, hi_end = grid[..., :1], grid[..., -1:]
    else:
        nb = K - k - 1
        idx = torch.arange(nb, device=dev)[:, None] + torch.arange(k + 1, device=dev)
        knots = grid[..., idx].flatten(-2)  # (B, n, nb (k+1))
        lo_end = grid[..., :nb].repeat_interleave(k + 1, dim=-1)
        hi_end = grid[..., k + 1 :].repeat_interleave(k + 1, dim=-1)
    U = knots.shape[-1]
    m = ec.shape[2]
    # the contraction [spline units | base units] is written in place into one (B, m, F)
    # tensor (the largest of the conversion): no einsum output, scaled copy and cat copy
    c_weight = grid.new_empty(B, m, n * U + n)
    nsw = ns[:, :, None, None] * ec.permute(0, 2, 1, 3)  # node scale folded into the coefficients (B, m, n, nb)
    if units == "knots":  # truncated-power coefficients (B, m, n, K)
        torch.matmul(nsw.unsqueeze(-2), A.unsqueeze(1), out=c_weight[..., : n * U].view(B, m, n, 1, U))
    else:  # every B-spline's own k+1 units (B, m, n, nb, k+1)
        torch.mul(nsw.unsqueeze(-1), basis_alpha(A, k).unsqueeze(1),
                  out=c_weight[..., : n * U].view(B, m, n, nb, k + 1))
    torch.mul(ns.unsqueeze(-1), eb.transpose(1, 2), out=c_weight[..., n * U:])  # base units (B, m, n)
    src = torch.cat([torch.arange(n, device=dev).repeat_interleave(U), torch.arange(n, device=dev)])
    zeros = grid.new_zeros(B, n)
    e_bias = torch.cat([-knots.reshape(B, n * U), zeros], dim=-1)
    inf = torch.full_like(zeros, float("inf"))
    lower = torch.cat([(lo_end - knots).reshape(B, n * U), -inf], dim=-1)
    upper = torch.cat([(hi_end - knots).reshape(B, n * U), inf], dim=-1)
    return src, e_bias, lower, upper, c_weight, nbias


@torch.no_grad()
def kan_to_mlp(kans, form: str = "factored", clamp: bool = True, units: str = "auto") -> nn.Sequential:
    r"""Convert KAN(s) into an MLP computing exactly the same function.

    Each KAN layer :math:`\ell` (``n`` inputs with knots :math:`t_{i,0..K-1}`, ``m``
    outputs) becomes

    1. an **expansion** ``Linear(n, nK + n)``: feature :math:`(i, q)` is
       :math:`x_i - t_{i,q}` (weight 1, bias :math:`-t_{i,q}`), followed by the ``n``
       copies :math:`x_i` for the base function;
    2. with ``clamp=True``, a :class:`~wskan_ext.convert.Clamp` of feature :math:`(i,q)` to
       :math:`[t_{i,0} - t_{i,q},\ t_{i,K-1} - t_{i,q}]` (i.e. :math:`x_i` clamped to its
       grid; the spline is zero at both ends, so this is exact, and it removes the
       catastrophic cancellation of truncated powers far outside the grid);
    3. a :class:`~wskan_ext.convert.SplitActivation`: :class:`~wskan_ext.convert.ReLUPower` ``(k)`` on the ``nK`` spline units,
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

    ``units="knots"`` uses the ``K`` shared units above. Their float32 rounding
    error grows like :math:`(G+2k)^k` (the truncated powers cancel across the whole grid):
    about ``5e-5`` relative at ``G=5, k=3`` and ``2e-3`` at ``G=20``. ``units="basis"``
    gives every B-spline its own ``k+1`` units, with the input clamped to that B-spline's
    support :math:`[t_b, t_{b+k+1}]`; cancellation then stays within one support and the
    float32 error is independent of ``G``, for ``(G+k)(k+1)`` instead of ``G+2k+1`` units
    per input neuron. ``units="auto"`` (default) takes ``"knots"`` for float64 weights (or
    ``clamp=False``) and ``"basis"`` otherwise.

    Args:
        kans: :class:`~wskan_ext.KANWeights` (single or batched), a list of them, or any
            object :func:`~wskan_ext.as_kan_weights` accepts.
        form: ``"factored"`` or ``"merged"``.
        clamp: insert the :class:`~wskan_ext.convert.Clamp` modules (recommended; needed for float32
            accuracy far outside the grid; required by ``units="basis"``).
        units: ``"auto"``, ``"knots"`` or ``"basis"`` (see above).

    Raises:
        ValueError: invalid weights (``TypeError`` for a wrong dtype), naming the layer and
            the tensor. The weights are validated again on every call, so tensors edited in
            place since the :class:`~wskan_ext.KANWeights` was built (e.g. to NaN) are caught.

    Returns:
        For one KAN, an ``nn.Sequential`` of ``nn.Linear``, :class:`~wskan_ext.convert.Clamp` and
        :class:`~wskan_ext.convert.SplitActivation`; for batched KANs (``N`` models), the same with
        :class:`~wskan_ext.convert.BatchedLinear` (expansion weights shared, stored once) and batched
        :class:`~wskan_ext.convert.Clamp`; :func:`~wskan_ext.convert.unbatch_mlp` splits it into ``N``
        standard MLPs. Tensors stay on the KANs' device and dtype.

    Shapes:
        - single: input ``(s, n_0)`` -> ``(s, n_L)``;
        - batched: input ``(N, s, n_0)`` or ``(s, n_0)`` -> ``(N, s, n_L)``.
    """
    if form not in ("factored", "merged"):
        raise ValueError(f"form must be 'factored' or 'merged', got {form!r}")
    if units not in ("auto", "knots", "basis"):
        raise ValueError(f"units must be 'auto', 'knots' or 'basis', got {units!r}")
    w = _as_weights(kans)
    if units == "auto":
        units = "knots" if (w.dtype == torch.float64 or not clamp) else "basis"
    if units == "basis" and not clamp:
        raise ValueError("units='basis' needs clamp=True (each unit is exact only on its B-spline's support)")
    batched = w.batched
    wb = w.unsqueeze()
    dtype, dev = w.dtype, w.device
    wd = work_dtype(dev, dtype)
    ecs, ebs = wb.effective_coef(), wb.effective_base()
    maps = [_layer_maps(wb, l, wd, ecs[l], ebs[l], units) for l in range(w.depth)]

    def lin(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
        weight, bias = weight.to(dtype), bias.to(dtype)
        if batched:
            return BatchedLinear(weight.contiguous(), bias.contiguous())
        return _linear(weight[0], bias[0])

    def act(l: int) -> List[nn.Module]:
        src, _, lower, upper, _, _ = maps[l]
        n = w.widths[l]
        nU = lower.shape[-1] - n
        mods: List[nn.Module] = []
        if clamp:
            lo, hi = lower.to(dtype), upper.to(dtype)
            mods.append(Clamp(lo, hi) if batched else Clamp(lo[0], hi[0]))
        acts = [ReLUPower(w.k[l]), activation_module(w.base_fun[l])]
        mods.append(SplitActivation([nU, n], acts, kan_units=units))
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
