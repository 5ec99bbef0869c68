r"""Local-support B-spline kernels for uniform grids.

On a uniform knot vector :math:`t_q = t_0 + q h` the point :math:`x` lies in interval
:math:`j = \lfloor (x - t_0)/h \rfloor` and only the :math:`k+1` basis functions
:math:`B_{j-k}, \dots, B_j` are non-zero there. With the fractional position
:math:`f = (x - t_j)/h \in [0, 1)` their values are the *cardinal* B-spline polynomials,
given by the uniform Cox--de Boor recursion on :math:`k+1` numbers (not on all
:math:`G+k` basis functions):

.. math::
    N^{0}_{0} = 1, \qquad
    N^{d}_{r}(f) = \frac{(f + d - r)\,N^{d-1}_{r-1}(f) + (r + 1 - f)\,N^{d-1}_{r}(f)}{d},
    \quad r = 0..d,

with :math:`N^{d-1}_{-1} = N^{d-1}_{d} = 0`, so :math:`B_{j-k+r}(x) = N^k_r(f)` and
:math:`\mathrm dB_{j-k+r}/\mathrm dx = (N^{k-1}_{r-1}(f) - N^{k-1}_r(f))/h`.
Cost is :math:`O(k^2)` per (sample, input neuron) for the values, and :math:`O(k+1)` per
(sample, edge) for the spline: the coefficients of the :math:`k+1` active basis functions are
gathered, and in the backward pass the gradients are scattered back. No ``(s, n, G+k)``
basis tensor is materialised.

Exactness: the interval is chosen by comparing :math:`x` with the stored knots (the same
half-open rule as Cox--de Boor), so ``x`` on a knot, on ``t_0`` or on ``t_last`` is handled
like :func:`~wskan_ext.kan.spline.bspline_basis` does; the values agree with it to rounding
(~1e-15 in float64). NaN inputs give NaN outputs.

:func:`grid_is_uniform` decides, per tensor, whether the kernel applies; the dispatching
entry points (:func:`~wskan_ext.kan.spline.spline_sum`,
:func:`~wskan_ext.kan.spline.spline_eval`) fall back to Cox--de Boor otherwise.
"""

from __future__ import annotations

from typing import List, Tuple

import torch

__all__ = ["grid_is_uniform", "local_basis", "local_spline_sum", "local_spline_eval"]



def grid_is_uniform(grid: torch.Tensor, rtol: float | None = None) -> bool:
    """Whether every knot row of ``grid`` ``(*, K)`` is uniform: all spacings equal the
    row's mean spacing ``h > 0`` to ``rtol * max(h, max |t|)`` (default ``rtol = 64 * eps`` of
    the dtype; knots are rounded relative to their own magnitude).

    Grids that need gradients, repeated knots (dead neurons after pykan's
    ``update_grid_from_samples``) and hand-made non-uniform grids return ``False``.
    """
    if grid.requires_grad or grid.shape[-1] < 2 or not grid.dtype.is_floating_point:
        return False
    if rtol is None:
        rtol = 64 * torch.finfo(grid.dtype).eps
    d = grid[..., 1:] - grid[..., :-1]
    h = (grid[..., -1:] - grid[..., :1]) / (grid.shape[-1] - 1)
    # knots are rounded relative to their magnitude, so narrow ranges far from 0 need the
    # tolerance on max(h, |t|), not on h alone
    scale = torch.maximum(h, grid.abs().amax(-1, keepdim=True))
    return bool(((h > 0) & ((d - h).abs() <= rtol * scale)).all())


def _interval(x: torch.Tensor, grid: torch.Tensor):
    """Interval index ``j`` (``t_j <= x < t_{j+1}``, clamped to ``[0, K-2]``), fractional
    position ``f = (x - t_0)/h - j`` and the inside flag (``t_0 <= x < t_last``; ``True`` for
    NaN, so that NaN propagates).

    The interval is checked against the stored knots ``t_j`` and ``t_{j+1}`` (the rounded
    ``floor`` can be one off either way), so a point exactly on a knot falls in the interval
    that starts there and a point just below a knot in the one that ends there, as in
    Cox--de Boor's half-open rule.

    Shapes: ``x (*, s, n)``, ``grid (*, n, K)``; returns three ``(*, s, n)`` tensors.
    """
    K = grid.shape[-1]
    g = grid.unsqueeze(-3)  # (*, 1, n, K)
    t0, tl = g[..., 0], g[..., -1]
    u = (x - t0) * ((K - 1) / (tl - t0))
    jf = torch.nan_to_num(u.floor(), nan=0.0).clamp_(0, K - 2)
    j = jf.long()
    ge = g.expand(*x.shape, K)
    tj = torch.gather(ge, -1, j.unsqueeze(-1)).squeeze(-1)
    down = ((x < tj) & (j > 0)).to(j.dtype)
    j -= down
    jf -= down
    tj1 = torch.gather(ge, -1, (j + 1).unsqueeze(-1)).squeeze(-1)
    step = (x >= tj1) & (j < K - 2)
    j += step
    jf += step
    inside = ~((x < t0) | (x >= tl))
    return j, u.sub_(jf), inside


def _cardinal(f: torch.Tensor, k: int, derivative: bool = False) -> List[torch.Tensor]:
    """The ``k+1`` values ``N^k_r(f)`` of the uniform B-spline pieces (or their
    ``f``-derivatives ``N^{k-1}_{r-1} - N^{k-1}_r``), by the uniform recursion; a list of
    tensors shaped like ``f``."""
    d_max = k - 1 if derivative else k
    vals = [torch.ones_like(f)]
    for d in range(1, d_max + 1):
        new = []
        for r in range(d + 1):
            a = (f + (d - r)) * vals[r - 1] if r >= 1 else None
            b = (r + 1 - f) * vals[r] if r < d else None
            v = a if b is None else (b if a is None else a.add_(b))
            new.append(v.div_(d) if d > 1 else v)
        vals = new
    if not derivative:
        return vals
    return [-vals[0]] + [vals[r - 1] - vals[r] for r in range(1, k)] + [vals[k - 1]]


def local_basis(x: torch.Tensor, grid: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The ``k+1`` non-zero basis functions at every point (uniform grids only).

    Shapes:
        - ``x``: ``(*, s, n)``; ``grid``: ``(*, n, K)`` (uniform rows, ``K = G + 2k + 1``);
        - returns ``first (*, s, n)`` long, the index ``b`` of the first active basis function
          (``j - k``, may be negative near ``t_0``), ``values (*, s, n, k+1)`` with
          ``B_{first + r}(x) = values[..., r]`` (0 where ``first + r`` is not a basis index
          or ``x`` is outside ``[t_0, t_last)``), and ``slopes (*, s, n, k+1)``, the
          derivatives :math:`\mathrm dB/\mathrm dx` (not tracked by autograd).
    """
    K = grid.shape[-1]
    nb = K - k - 1
    j, f, inside = _interval(x, grid)
    h = ((grid[..., -1] - grid[..., 0]) / (K - 1)).unsqueeze(-2).unsqueeze(-1)
    first = j - k
    b = first.unsqueeze(-1) + torch.arange(k + 1, device=x.device)
    keep = inside.unsqueeze(-1) & (b >= 0) & (b < nb)
    zero = torch.zeros((), dtype=f.dtype, device=f.device)
    values = torch.where(keep, torch.stack(_cardinal(f, k), -1), zero)
    slopes = torch.where(keep, torch.stack(_cardinal(f, k, derivative=True), -1) / h, zero)
    return first, values, slopes


def _windows(C: torch.Tensor, k: int) -> torch.Tensor:
    """``C (B, n, nb, m)`` -> ``(B * n * (nb + k), m * (k+1))``: row ``(b, i, w)`` holds the
    coefficients of basis functions ``w - k .. w`` (zero-padded), i.e. the ``k+1`` active
    ones on interval ``w``."""
    B, n, nb, m = C.shape
    Cp = torch.nn.functional.pad(C, (0, 0, k, k))  # (B, n, nb + 2k, m)
    W = Cp.unfold(2, k + 1, 1)  # (B, n, nb + k, m, k+1)
    return W.reshape(B * n * (nb + k), m * (k + 1))


def _unwindows(gW: torch.Tensor, B: int, n: int, nb: int, m: int, k: int) -> torch.Tensor:
    """Adjoint of :func:`_windows`: ``(B * n * (nb + k), m * (k+1))`` -> ``(B, n, nb, m)``."""
    gW = gW.view(B, n, nb + k, m, k + 1)
    gCp = gW.new_zeros(B, n, nb + 2 * k, m)
    for r in range(k + 1):
        gCp[:, :, r:r + nb + k] += gW[..., r]
    return gCp[:, :, k:k + nb]


def _contract(vals: List[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    """``sum_r vals[r][b, c, i] * rows[b, c, i, :, r]`` -> ``(B, c, n, m)``."""
    acc = vals[0].unsqueeze(-1) * rows[..., 0]
    for r in range(1, len(vals)):
        acc.addcmul_(vals[r].unsqueeze(-1), rows[..., r])
    return acc


class _LocalSplineSum(torch.autograd.Function):
    """``y[B, s, o] = sum_{i, r} N_r(f[B, s, i]) * C[B, i, j(B, s, i) - k + r, o]``: one row
    gather per (model, sample, input) forward, one row scatter-add backward."""

    @staticmethod
    def forward(ctx, x, grid, C, k: int, chunk: int):
        B, s, n = x.shape
        nb, m = C.shape[2], C.shape[3]
        W = _windows(C, k)
        j, f, inside = _interval(x, grid)
        q = _rows(j, nb, k)
        y = x.new_empty(B, s, m)
        for a in range(0, s, chunk):
            qa = q[:, a:a + chunk]
            rows = W.index_select(0, qa.reshape(-1)).view(*qa.shape, m, k + 1)
            t = _contract(_cardinal(f[:, a:a + chunk], k), rows)  # (B, c, n, m)
            y[:, a:a + chunk] = _outside_zero(t, inside[:, a:a + chunk]).sum(-2)
        ctx.save_for_backward(grid, C, q, f, inside)
        ctx.k, ctx.chunk = k, chunk
        return y

    @staticmethod
    def backward(ctx, gy):
        grid, C, q, f, inside = ctx.saved_tensors
        k, chunk = ctx.k, ctx.chunk
        B, s, n = q.shape
        nb, m = C.shape[2], C.shape[3]
        W = _windows(C, k)
        gx = f.new_empty(B, s, n) if ctx.needs_input_grad[0] else None
        gW = torch.zeros(B * n * (nb + k), m, k + 1, dtype=C.dtype, device=C.device) if ctx.needs_input_grad[2] else None
        inv_h = ((grid.shape[-1] - 1) / (grid[..., -1] - grid[..., 0])).unsqueeze(-2)  # (B, 1, n)
        for a in range(0, s, chunk):
            qa, fa, ia = q[:, a:a + chunk], f[:, a:a + chunk], inside[:, a:a + chunk]
            g = gy[:, a:a + chunk].unsqueeze(-2)  # (B, c, 1, m)
            if gx is not None:
                rows = W.index_select(0, qa.reshape(-1)).view(*qa.shape, m, k + 1)
                t = _outside_zero(_contract(_cardinal(fa, k, derivative=True), rows), ia)
                gx[:, a:a + chunk] = (t * g).sum(-1).mul_(inv_h)
            if gW is not None:
                vals = _cardinal(fa, k)
                contrib = torch.stack([_outside_zero(v.unsqueeze(-1) * g, ia) for v in vals], -1)
                gW.index_add_(0, qa.reshape(-1), contrib.view(-1, m, k + 1))
        gC = _unwindows(gW.view(-1, m * (k + 1)), B, n, nb, m, k) if gW is not None else None
        return gx, None, gC, None, None


def _outside_zero(t: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Zero the entries ``(B, c, n, m)`` of points outside the grid (NaN stays NaN)."""
    return t.masked_fill_(~inside.unsqueeze(-1), 0.0)


def _rows(j: torch.Tensor, nb: int, k: int) -> torch.Tensor:
    """Window row of every (model, sample, input): ``(b * n + i) * (nb + k) + j``."""
    B, n = j.shape[0], j.shape[-1]
    base = (torch.arange(B, device=j.device).view(B, 1, 1) * n + torch.arange(n, device=j.device)) * (nb + k)
    return j + base


def local_spline_sum(x: torch.Tensor, grid: torch.Tensor, coef: torch.Tensor, k: int,
                     chunk: int | None = None, backend: str = "auto") -> torch.Tensor:
    r"""Splines summed over each output's inputs, on uniform grids, with autograd
    (``x`` and ``coef``; the grid is fixed):

    .. math:: y_{B,s,o} = \sum_i \sum_b \mathrm{coef}_{B,i,o,b}\, B_{i,b}(x_{B,s,i})

    ``backend``: ``"native"`` runs the compiled CPU kernel (:mod:`wskan_ext.kan._native`: one
    pass over (model, sample, input) with the ``k+1`` active coefficient rows, forward and
    backward), ``"torch"`` the eager PyTorch kernel (row gathers forward, ``index_add_``
    backward, in chunks of ``chunk`` samples), ``"auto"`` (default) the native one wherever it
    applies (CPU, float32/float64, ``k <= 5``, a C++ compiler present) and
    the eager one otherwise. Both compute the same function (tested against each other and
    against Cox--de Boor).

    Shapes:
        - ``x``: ``(B, s, n)``; ``grid``: ``(B, n, K)``; ``coef``: ``(B, n, m, K-k-1)``;
        - returns ``(B, s, m)``.
    """
    if backend not in ("auto", "native", "torch"):
        raise ValueError(f"backend must be 'auto', 'native' or 'torch', got {backend!r}")
    B, s, n = x.shape
    m = coef.shape[-2]
    if backend != "torch":
        from . import _native

        if _native.supports(x, grid, coef, k=k, m=m):
            return _native.native_spline_sum(x, grid, coef, k)
        if backend == "native":
            raise ValueError("backend='native' needs CPU float32/float64 tensors, 1 <= k <= "
                             f"{_native.MAX_K}, at least one output and the compiled kernels "
                             f"(available: {_native.available()}); got {x.device}, {x.dtype}, k={k}, m={m}")
    if chunk is None:
        chunk = max(1, 2**21 // max(1, B * n * (k + 1) * m))
    return _LocalSplineSum.apply(x, grid, coef.transpose(-1, -2), k, chunk)


def local_spline_eval(x: torch.Tensor, grid: torch.Tensor, coef: torch.Tensor, k: int) -> torch.Tensor:
    r"""Every edge spline :math:`\sum_b \mathrm{coef}_{i,o,b} B_{i,b}(x_i)` on uniform grids
    (differentiable in ``x`` through the local polynomials, and in ``coef``).

    Shapes: ``x (*, s, n)``, ``grid (*, n, K)``, ``coef (*, n, m, K-k-1)``; returns
    ``(*, s, n, m)``.
    """
    nb = coef.shape[-1]
    first, v, dv = local_basis(x.detach(), grid, k)
    if x.requires_grad:  # values as a differentiable function of x (first-order exact)
        dx = torch.where(x.isinf(), 0.0, x - x.detach())  # inf - inf would turn the 0 outside into NaN
        v = v + dx.unsqueeze(-1) * dv
    b = (first.unsqueeze(-1) + torch.arange(k + 1, device=x.device)).clamp_(0, nb - 1)  # (*, s, n, k+1)
    m = coef.shape[-2]
    cf = coef.unsqueeze(-4).expand(*b.shape[:-1], m, nb)  # (*, s, n, m, nb)
    idx = b.unsqueeze(-2).expand(*b.shape[:-1], m, k + 1)
    return (torch.gather(cf, -1, idx) * v.unsqueeze(-2)).sum(-1)
