"""MLP -> KAN conversion by three routes (see ``docs/convert.rst`` for the constructions)."""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from ..kan.spline import truncated_power_coefficients, uniform_grid
from ..kan.weights import KANWeights
from ._parse import Affine, KanForm, compose, parse_mlp
from .kan_to_mlp import basis_alpha, solve_dtype, work_dtype
from .modules import BatchedLinear, ReLUPower, activation_name

__all__ = ["mlp_to_kan", "marsden_coefficients", "greville_abscissae", "ROUTES"]

#: The conversion routes of :func:`mlp_to_kan`.
ROUTES = ("exact", "relu_spline", "relu_power")


def marsden_coefficients(grid: torch.Tensor, k: int, tau: torch.Tensor) -> torch.Tensor:
    r"""Marsden's dual polynomials :math:`\psi_b(\tau) = \prod_{r=1}^{k} (t_{b+r} - \tau)`.

    Marsden's identity :math:`(x - \tau)^k = \sum_b \psi_b(\tau) B_b(x)` holds for
    ``x`` in the basic interval :math:`[t_k, t_{K-k-1}]`; if :math:`\tau = t_p` is a knot,
    keeping only ``b >= p`` gives the truncated power :math:`(x - t_p)_+^k` there.

    Shapes: ``grid``: ``(*, K)``; ``tau``: ``(*)``; returns ``(*, K - k - 1)``.
    """
    nb = grid.shape[-1] - k - 1
    idx = torch.arange(nb, device=grid.device)[:, None] + torch.arange(1, k + 1, device=grid.device)
    return (grid[..., idx] - tau[..., None, None]).prod(dim=-1)


def greville_abscissae(grid: torch.Tensor, k: int) -> torch.Tensor:
    r"""Greville abscissae :math:`\xi_b = (t_{b+1} + \dots + t_{b+k}) / k`; by Marsden's
    identity :math:`x = \sum_b \xi_b B_b(x)` on the basic interval.

    Shapes: ``grid``: ``(*, K)``; returns ``(*, K - k - 1)``.
    """
    nb = grid.shape[-1] - k - 1
    idx = torch.arange(nb, device=grid.device)[:, None] + torch.arange(1, k + 1, device=grid.device)
    return grid[..., idx].mean(dim=-1)


def _unexpand(t: torch.Tensor) -> torch.Tensor:
    """``t`` with every broadcast (stride-0) dimension cut to size 1: the same values,
    still broadcastable, without touching the copies an ``expand`` pretends to hold (a
    shared expansion weight ``expand``-ed over 1000 models is one model's data)."""
    return t[tuple(slice(0, 1) if st == 0 and sz > 1 else slice(None) for st, sz in zip(t.stride(), t.shape))]


def _absmax(t: torch.Tensor) -> float:
    """``max |t|`` (NaN if ``t`` holds one) from one ``aminmax`` pass: no ``|t|`` temporary,
    and ~15x faster on CPU than ``vector_norm(t, inf)`` for the ~10^8-entry weights here."""
    t = _unexpand(t)
    if t.numel() == 0:
        return 0.0
    lo, hi = torch.aminmax(t)
    return max(-float(lo), float(hi)) if not (torch.isnan(lo) or torch.isnan(hi)) else float("nan")


def _full(chain, B: int):
    aff = compose(chain)
    return aff.weight.expand(B, -1, -1), aff.bias.expand(B, -1)


def _factor_expansion(act: KanForm, aff: Affine, eps: float):
    """Split the affine map feeding a kan_to_mlp activation into (base rows, knots)."""
    split = act.split
    if len(split.sizes) != 2:
        raise ValueError(f"{act.where}: expected SplitActivation([nU, n], [ReLUPower(k), base]), got sizes {split.sizes}")
    spl, base = split.activations
    if isinstance(spl, ReLUPower):
        k = spl.power
    elif type(spl) is nn.ReLU:
        k = 1
    else:
        raise ValueError(f"{act.where}: the first SplitActivation segment must be ReLUPower(k) or nn.ReLU, got {spl!r}")
    base_name = activation_name(base, act.where)
    layout = split.kan_units or "knots"
    n = split.sizes[1]
    F = aff.weight.shape[-2]
    if n < 1 or split.sizes[0] % n or F != sum(split.sizes):
        raise ValueError(
            f"{act.where}: sizes {split.sizes} do not match a kan_to_mlp expansion of {F} features from {aff.where}"
        )
    U = split.sizes[0] // n
    if layout == "basis" and (U % (k + 1) or act.clamp is None):
        raise ValueError(f"{act.where}: a 'basis' layout needs (k+1) units per B-spline and a Clamp before it")
    K = U if layout == "knots" else U // (k + 1) + k + 1
    if K - 2 * k - 1 < 1:
        raise ValueError(f"{act.where}: {K} knots per neuron is too few for degree k={k} (need >= {2 * k + 2})")
    w, b = _unexpand(aff.weight), aff.bias
    wb, bb = w[..., n * U :, :], b[..., n * U :]
    ws = w[..., : n * U, :].reshape(*w.shape[:-2], n, U, w.shape[-1])
    scale = _absmax(w) + 1.0
    if not _absmax(ws - wb.unsqueeze(-2)) <= 64 * eps * scale:
        raise ValueError(
            f"{aff.where} feeding {act.where}: the spline units of a neuron do not copy its base unit's weights; "
            "this is not an MLP produced by kan_to_mlp"
        )
    knots = bb.unsqueeze(-1) - b[..., : n * U].reshape(*b.shape[:-1], n, U)  # knot of each unit
    if layout == "knots":
        grid = knots
    else:  # units (b, r) sit on t_{b+r}; the last knot is the clamp's upper end of B_{nb-1}
        nb = K - k - 1
        kr = knots.reshape(*knots.shape[:-1], nb, k + 1)
        last = act.clamp.upper.to(knots.dtype)[..., : n * U].reshape(-1, n, nb, k + 1)[..., -1, 0] + kr[..., -1, 0]
        grid = torch.cat([kr[..., :, 0], kr[..., -1, 1:], last.unsqueeze(-1)], dim=-1)
        idx = torch.arange(nb, device=grid.device)[:, None] + torch.arange(k + 1, device=grid.device)
        tol = 64 * eps * (_absmax(grid) + _absmax(bb) + 1.0)
        if not _absmax(grid[..., idx] - kr) <= tol:
            raise ValueError(f"{aff.where} feeding {act.where}: unit biases are not the knots of a 'basis' layout")
    if act.clamp is not None:
        lo = act.clamp.lower.to(grid.dtype)
        hi = act.clamp.upper.to(grid.dtype)
        if layout == "knots":
            lo_end, hi_end = grid[..., :1], grid[..., -1:]
        else:
            lo_end = grid[..., :nb].repeat_interleave(k + 1, dim=-1)
            hi_end = grid[..., k + 1 :].repeat_interleave(k + 1, dim=-1)
        exp_lo = torch.cat([(lo_end - knots).flatten(-2), torch.full_like(bb, -float("inf"))], -1)
        exp_hi = torch.cat([(hi_end - knots).flatten(-2), torch.full_like(bb, float("inf"))], -1)
        tol = 64 * eps * (_absmax(grid) + _absmax(bb) + 1.0)
        fin = torch.isfinite(exp_lo)
        if not (
            torch.equal(torch.isfinite(lo.expand_as(exp_lo)), fin)
            and _absmax((lo - exp_lo)[fin]) <= tol
            and _absmax((hi - exp_hi)[fin]) <= tol
        ):
            raise ValueError(f"{act.where}: Clamp bounds are not the grid bounds implied by {aff.where}")
    return Affine(wb, bb, aff.where), grid, k, base_name, layout


def _spline_from_contraction(chain, grid: torch.Tensor, k: int, layout: str, B: int, eps: float, where: str):
    """Effective B-spline coefficients from truncated-power contraction weights."""
    w, b = _full(chain, B)
    where_aff = chain[0].where
    n, K = grid.shape[-2:]
    nb = K - k - 1
    U = K if layout == "knots" else nb * (k + 1)
    m = w.shape[1]
    if w.shape[-1] != n * U + n:
        raise ValueError(f"{where_aff}: expects {w.shape[-1]} features, {where} gives {n * U + n}")
    if layout == "knots":
        sd = solve_dtype(w.device)
        A = truncated_power_coefficients(grid.to(sd), k)  # (B, n, nb, K)
        C = w[..., : n * K].to(sd).reshape(B, m, n, K).permute(0, 2, 3, 1)  # (B, n, K, m)
        # least squares C ~ A^T ec^T through the normal equations (A A^T is small, SPD and well
        # conditioned: A has full row rank); batched Cholesky is much faster than batched lstsq
        L, info = torch.linalg.cholesky_ex(torch.matmul(A, A.transpose(-1, -2)))
        if bool(info.any()):  # pragma: no cover - only for pathological (near-coincident) knots
            sol = torch.linalg.lstsq(A.transpose(-1, -2), C).solution
        else:
            sol = torch.cholesky_solve(torch.matmul(A, C), L)  # (B, n, nb, m)
        resid = torch.matmul(A.transpose(-1, -2), sol) - C
        coef = sol.permute(0, 1, 3, 2).to(w.dtype)  # (B, n, m, nb)
    else:  # every B-spline has its own units: C[b, r] = ec_b alpha[b, r], one least squares each
        alpha = basis_alpha(truncated_power_coefficients(grid, k), k)  # (B, n, nb, k+1)
        C = w[..., : n * U].reshape(B, m, n, nb, k + 1)  # (B, m, n, nb, k+1), a view
        coef = torch.einsum("bmncr,bncr->bnmc", C, alpha) / (alpha * alpha).sum(-1).unsqueeze(2)
        resid = torch.einsum("bnmc,bncr->bmncr", coef, alpha).sub_(C)
    r_max = _absmax(resid)
    if not r_max <= max(eps**0.5, 1e3 * eps) * (_absmax(C) + 1.0):
        raise ValueError(
            f"{where_aff}: contraction weights are not a combination of B-splines in truncated-power form "
            f"(least-squares residual {r_max:.3g}); not an MLP produced by kan_to_mlp"
        )
    scale_base = w[..., n * U :].transpose(1, 2)
    return coef, scale_base, b


def _box(input_box, n0: int, B: int, wd, dev):
    if input_box is None:
        return None
    if not isinstance(input_box, (tuple, list)) or len(input_box) != 2:
        raise ValueError(f"input_box must be a pair (lower, upper), got {type(input_box).__name__}")
    lo, hi = (torch.as_tensor(v, dtype=wd, device=dev) for v in input_box)
    try:
        lo, hi = lo.expand(B, n0), hi.expand(B, n0)
    except RuntimeError:
        raise ValueError(
            f"input_box bounds must broadcast to (models, n_0) = ({B}, {n0}), got {tuple(lo.shape)} / {tuple(hi.shape)}"
        ) from None
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()) or bool((lo > hi).any()):
        raise ValueError("input_box: bounds must be finite with lower <= upper")
    return lo, hi


def _act_kind(act, route: str):
    """(kind, power, slope) of a plain activation for the spline routes."""
    name, mod = act
    where = f"module {name!r}"
    if isinstance(mod, nn.Identity):
        return "identity", 1, 0.0
    if isinstance(mod, ReLUPower):
        return "relu", mod.power, 0.0
    if type(mod) is nn.ReLU:
        return "relu", 1, 0.0
    if type(mod) is nn.LeakyReLU:
        return "leaky", 1, float(mod.negative_slope)
    raise ValueError(
        f"{where} ({mod!r}): route {route!r} supports only ReLU, LeakyReLU and ReLUPower activations; "
        "use route='exact' for other activations"
    )


def _spline_route(layers, route: str, box, B: int, wd):
    kinds = [_act_kind(a, route) if not isinstance(a, KanForm) else None for a, _ in layers]
    for (a, _), kd in zip(layers, kinds):
        if kd is None:
            raise ValueError(f"{a.where}: a kan_to_mlp SplitActivation converts only by route='exact'")
    powers = sorted({p for kind, p, _ in kinds if kind == "relu"})
    if route == "relu_spline" and powers not in ([], [1]):
        raise ValueError(f"route 'relu_spline' needs ReLU (power 1) activations, got powers {powers}; use 'relu_power'")
    if len(powers) > 1:
        raise ValueError(f"route 'relu_power' needs one power for every activation, got powers {powers}")
    k = powers[0] if powers else 1
    if box is None:
        raise ValueError(f"route {route!r} needs input_box=(lower, upper): splines are exact only on a bounded box")
    lo, hi = box
    kw = {f: [] for f in ("grid", "coef", "scale_base", "scale_sp", "node_bias")}
    for (kind, _, slope), (_, aff) in zip(kinds, layers):
        w, b = _full(aff, B)
        # grid: nodes [lo', 0, hi'] containing the padded box, k extension knots each side
        span = (hi - lo).clamp_min(1e-12 * (1 + lo.abs() + hi.abs()))
        a, c = lo - 1e-4 * span, hi + 1e-4 * span
        width = c - a
        lo2, hi2 = torch.minimum(a, -0.25 * width), torch.maximum(c, 0.25 * width)
        h = (hi2 - lo2) / 2
        steps = torch.arange(1, k + 1, dtype=wd, device=lo.device)
        grid = torch.cat(
            [(lo2[..., None] - steps.flip(0) * h[..., None]), torch.stack([lo2, torch.zeros_like(lo2), hi2], -1),
             hi2[..., None] + steps * h[..., None]], -1
        )  # (B, n, 2k+3); knot k+1 is 0
        nb = grid.shape[-1] - k - 1
        relu = marsden_coefficients(grid, k, torch.zeros_like(lo2)) * (torch.arange(nb, device=lo.device) >= k + 1)
        ident = greville_abscissae(grid, k)
        fvals = {"identity": ident, "relu": relu, "leaky": (1 - slope) * relu + slope * ident}[kind]
        kw["grid"].append(grid)
        kw["coef"].append(torch.einsum("boi,bic->bioc", w, fvals))
        kw["scale_base"].append(torch.zeros_like(w.transpose(1, 2)))
        kw["scale_sp"].append(torch.ones_like(w.transpose(1, 2)))
        kw["node_bias"].append(b)
        # interval bounds of the next layer's inputs (activations are monotone)
        f = {"identity": lambda x: x, "relu": lambda x: torch.relu(x) ** k,
             "leaky": lambda x: torch.nn.functional.leaky_relu(x, slope)}[kind]
        flo, fhi = f(lo), f(hi)
        mid, rad = (flo + fhi) / 2, (fhi - flo) / 2
        zc = torch.einsum("boi,bi->bo", w, mid) + b
        zr = torch.einsum("boi,bi->bo", w.abs(), rad)
        lo, hi = zc - zr, zc + zr
    return kw, k, ["zero"] * len(layers)


def _exact_route(layers, B: int, wd, eps: float):
    acts = [a for a, _ in layers]
    affs = [aff for _, aff in layers]
    spline = {}
    for idx, act in enumerate(acts):
        if isinstance(act, KanForm):
            if idx == 0:
                raise ValueError(f"{act.where}: must follow the expansion nn.Linear produced by kan_to_mlp")
            chain = list(affs[idx - 1])
            chain[-1], grid, k, base, layout = _factor_expansion(act, chain[-1], eps)
            affs[idx - 1] = chain
            spline[idx] = (grid.expand(B, -1, -1), k, base, layout)
    start = 0
    if 1 in spline and not isinstance(acts[0], KanForm) and acts[0][0] == "<input>" and compose(affs[0]).is_identity():
        start = 1  # the first expansion reads the inputs directly
    kw = {f: [] for f in ("grid", "coef", "scale_base", "scale_sp", "node_bias")}
    ks, bases = [], []
    for idx in range(start, len(layers)):
        if idx in spline:
            grid, k, base, layout = spline[idx]
            coef, sb, b = _spline_from_contraction(affs[idx], grid, k, layout, B, eps, acts[idx].where)
        else:
            name, mod = acts[idx]
            base = activation_name(mod, f"module {name!r}")
            w, b = _full(affs[idx], B)
            n, m = w.shape[-1], w.shape[-2]
            k = 1
            grid = uniform_grid(n, 1, 1, dtype=wd, device=w.device).expand(B, -1, -1)
            coef = w.new_zeros(B, n, m, 2)
            sb = w.transpose(1, 2)
        kw["grid"].append(grid)
        kw["coef"].append(coef)
        kw["scale_base"].append(sb)
        kw["scale_sp"].append(torch.ones_like(sb))
        kw["node_bias"].append(b)
        ks.append(k)
        bases.append(base)
    return kw, ks, bases


@torch.no_grad()
def mlp_to_kan(mlp, route: str = "exact", input_box=None) -> KANWeights:
    r"""Convert an MLP into a KAN computing the same function.

    The MLP is an ``nn.Sequential`` (nested ones are flattened) of ``nn.Linear`` /
    :class:`~wskan_ext.convert.BatchedLinear` layers and element-wise activations;
    ``nn.Identity``, ``nn.Dropout`` (as its eval-mode identity) and ``nn.Flatten`` are
    skipped. Consecutive linear layers are composed, and an eval-mode ``nn.BatchNorm1d``
    (an affine map per feature) is folded into them exactly; a training-mode one, or one
    without running statistics, raises ``ValueError``. KAN layer :math:`\ell` applies the
    activation that *precedes* MLP linear layer :math:`\ell` on every edge (the identity
    for the first) and the linear layer through its edge weights and node bias.

    Routes:
        - ``"exact"``: exact everywhere, no splines: edge
          :math:`\phi_{ij} = W_{ji}\,\sigma_\ell(x_i)` through the base-function branch
          (``coef = 0``, grid ``G = 1, k = 1`` on ``[-1, 1]``), biases in the node bias.
          Any activation of :data:`~wskan_ext.kan.spline.BASE_FUNCTIONS` (default
          parameters) is supported. MLPs built by :func:`~wskan_ext.kan_to_mlp` are
          recognised and inverted (knots from the expansion biases, B-spline
          coefficients by least squares from the truncated-power weights).
        - ``"relu_spline"``: ReLU (or LeakyReLU) MLP -> degree-1 spline KAN
          (base ``zero``), exact on ``input_box`` (interval arithmetic bounds every
          pre-activation; each neuron's knots include 0 and contain its bounds).
        - ``"relu_power"``: ReLU^k MLP (:class:`~wskan_ext.convert.ReLUPower`) ->
          degree-k spline KAN via Marsden's identity, exact on ``input_box``.

    Args:
        mlp: the MLP, a batched MLP (``BatchedLinear``), or a list of MLPs of one
            architecture (stacked).
        route: one of :data:`~wskan_ext.convert.ROUTES`.
        input_box: ``(lower, upper)``, each a float or a tensor broadcastable to
            ``(n_0,)`` (``(N, n_0)`` for ``N`` models); required by the spline routes.

    Returns: :class:`~wskan_ext.KANWeights` on the MLP's device and dtype (batched for a
    batched MLP or a list).

    Shapes: KAN widths are ``[n_0, ..., n_L]`` with ``n_l`` the MLP's feature widths
    (an extra identity-weight layer when the MLP ends with an activation).
    """
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    if isinstance(mlp, (list, tuple)):
        if not mlp:
            raise ValueError("mlp_to_kan: got an empty list of MLPs")
        boxes = [input_box] * len(mlp)
        if isinstance(input_box, (tuple, list)) and len(input_box) == 2:
            lo, hi = (torch.as_tensor(v) for v in input_box)
            per_model = [t.dim() == 2 and t.shape[0] == len(mlp) for t in (lo, hi)]
            if any(per_model):  # one box per MLP of the list
                lo, hi = (t if pm else t.expand(len(mlp), *t.shape) for t, pm in zip((lo, hi), per_model))
                boxes = [(lo[i], hi[i]) for i in range(len(mlp))]
        return KANWeights.stack([mlp_to_kan(m, route, b) for m, b in zip(mlp, boxes)])
    if not isinstance(mlp, nn.Module):
        raise TypeError(f"mlp_to_kan expects an nn.Sequential, nn.Linear or a list of them, got {type(mlp).__name__}")
    if isinstance(mlp, (nn.Linear, BatchedLinear)):
        mlp = nn.Sequential(mlp)
    first = next((m for m in mlp.modules() if isinstance(m, (nn.Linear, BatchedLinear))), None)
    if first is None:
        raise ValueError("mlp_to_kan: the MLP has no nn.Linear / BatchedLinear module")
    dtype, dev = first.weight.dtype, first.weight.device
    wd = work_dtype(dev, dtype)
    eps = torch.finfo(dtype).eps
    layers, num = parse_mlp(mlp, wd)
    B = num or 1
    if route == "exact":
        if input_box is not None:
            raise ValueError("input_box is used only by the spline routes ('relu_spline', 'relu_power')")
        kw, ks, bases = _exact_route(layers, B, wd, eps)
    else:
        n0 = layers[0][1][0].weight.shape[-1]
        kw, k, bases = _spline_route(layers, route, _box(input_box, n0, B, wd, dev), B, wd)
        ks = [k] * len(layers)
    out = {f: [t.to(dtype).contiguous() for t in v] for f, v in kw.items()}
    out["node_scale"] = [torch.ones_like(b) for b in out["node_bias"]]
    out["mask"] = [torch.ones_like(s) for s in out["scale_sp"]]
    w = KANWeights(**out, k=ks, base_fun=bases)
    return w if num is not None else w[0]
