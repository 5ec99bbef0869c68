"""The local-support B-spline kernel (:mod:`wskan_ext.kan.local_spline`) against the
Cox--de Boor recursion (:func:`~wskan_ext.kan.spline.bspline_basis`), and its dispatch.

Tolerances (every error is measured relative to the magnitude the quantity can have, so the
numbers do not depend on the scale of the coefficients or of the grid spacing ``h``):

* forward ``spline_sum``  ``y[s, o]``:    ``|coef|_o = sum_i max_b |coef[i, o, b]|``;
* forward ``spline_eval`` ``y[s, i, o]``: ``max_b |coef[i, o, b]|``;
* ``d/dx``:    ``sum_o |g[s, (i,) o]| * max_b |coef[i, o, b]| / h_i`` (``g`` the upstream gradient);
* ``d/dcoef``: ``sum_s |g[s, (i,) o]|``.

``RTOL64 = 1e-12`` in float64 (the issue's bound; the worst seen over 1,500 random cases is
3.8e-14, on ``d/dx``, with grid ranges ``lo in [-4, 4]``, width ``[0.25, 8]``, so
``max|t| / h`` up to ~1000) and ``RTOL32 = 2e-4`` in float32 (local float32 vs recursion
float32; worst seen 2.6e-5 -- both round the knots: ``max|t| / h`` times float32's eps).

Grids whose rounded knots miss the 64-eps uniformity test (``grid_is_uniform``; about 2 % of
random ranges, e.g. a narrow range far from 0) take the general path under ``auto`` and make
``method="local"`` raise; the exactness test checks exactly that for them.

Edge cases: ``x`` exactly on every knot, one ulp either side of every knot (where the rounded
``floor((x - t_0) / h)`` is off by one and the kernel must correct it against the stored
knots), on ``t_0`` and ``t_last`` (0 from ``t_last`` on, half-open as Cox--de Boor), inside
and outside. NaN: the local kernel propagates it (value, and ``d/dx`` for ``k >= 2``; for
``k = 1`` the slope is constant per interval); Cox--de Boor does
NOT -- its ``nan_to_num`` turns a NaN input into a 0 value (its ``x``-gradient there is 0
or NaN depending on ``k``). ``±inf``: both give the value 0; the local kernel's gradient is 0.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wskan_ext import KAN
from wskan_ext.equivariance_tests.profiles import examples
from wskan_ext.kan import _native
from wskan_ext.kan import local_spline as LS
from wskan_ext.kan import weights as kan_weights_module
from wskan_ext.kan.local_spline import grid_is_uniform, local_basis, local_spline_eval, local_spline_sum
from wskan_ext.kan.spline import bspline_basis, spline_eval, spline_sum, uniform_grid
from wskan_ext.zoo.trainer import RunHParams, train_batched

RTOL64 = 1e-12
RTOL32 = 2e-4
RTOL = {torch.float64: RTOL64, torch.float32: RTOL32}


# ----------------------------------------------------------------- helpers
def make_grid(k, G, ranges, dtype):
    """One uniform pykan grid row per input neuron, each with its own ``(lo, width)``:
    ``(n, G + 2k + 1)``."""
    return torch.cat([uniform_grid(1, G, k, (lo, lo + w), dtype=dtype) for lo, w in ranges])


def edge_points(grid, seed, inside=12, outside=4):
    """Per input neuron (column): every knot, one ulp below and above every knot, random
    points inside ``[t_0, t_last)`` and outside on both sides; columns shuffled
    independently. ``grid (n, K)`` -> ``x (3K + inside + 2 outside, n)``."""
    g = torch.Generator().manual_seed(seed)
    dt = grid.dtype
    cols = []
    for t in grid:
        t0, tl = t[0].item(), t[-1].item()
        span = tl - t0
        pts = [t, torch.nextafter(t, t - span), torch.nextafter(t, t + span),
               t0 + span * torch.rand(inside, generator=g, dtype=dt),
               t0 - span * (0.01 + torch.rand(outside, generator=g, dtype=dt)),
               tl + span * (0.01 + torch.rand(outside, generator=g, dtype=dt))]
        c = torch.cat(pts)
        cols.append(c[torch.randperm(c.numel(), generator=g)])
    return torch.stack(cols, -1)


def run(fn, x, coef, g_up, method):
    """Value, d/dx and d/dcoef of ``<fn(x, method), g_up>``."""
    x = x.clone().requires_grad_(True)
    c = coef.clone().requires_grad_(True)
    y = fn(x, c, method)
    gx, gc = torch.autograd.grad(y, (x, c), g_up)
    return y.detach(), gx, gc


def spacing(grid):
    """``h`` per row: ``(*, n)``."""
    return (grid[..., -1] - grid[..., 0]) / (grid.shape[-1] - 1)


def assert_close_scaled(a, b, scale, rtol, what):
    err = ((a - b).abs() / scale).max().item()
    assert err <= rtol, f"{what}: max scaled error {err:.3e} > {rtol:.1e}"
    return err


def compare_sum(x, grid, coef, k, seed, rtol):
    """spline_sum local vs recursion, forward and both gradients (scaled errors)."""
    gen = torch.Generator().manual_seed(seed + 1)
    lead = torch.broadcast_shapes(x.shape[:-2], grid.shape[:-2], coef.shape[:-3])
    g_up = torch.randn(*lead, x.shape[-2], coef.shape[-2], generator=gen, dtype=x.dtype)  # (*, s, m)
    fn = lambda xx, cc, meth: spline_sum(xx, grid, cc, k, method=meth)  # noqa: E731
    (yl, gxl, gcl), (yr, gxr, gcr) = run(fn, x, coef, g_up, "local"), run(fn, x, coef, g_up, "recursion")
    cmax = coef.abs().amax(-1)  # (*, n, m)
    gx_scale = (g_up.abs() @ cmax.transpose(-1, -2)) / spacing(grid).unsqueeze(-2)  # (*, s, n)
    gc_scale = g_up.abs().sum(-2).unsqueeze(-2).unsqueeze(-1).expand(*lead, *coef.shape[-3:])
    return [
        assert_close_scaled(yl, yr, cmax.sum(-2).unsqueeze(-2), rtol, "spline_sum value"),
        assert_close_scaled(gxl, gxr, gx_scale.sum_to_size(x.shape) + 1e-300, rtol, "spline_sum d/dx"),
        assert_close_scaled(gcl, gcr, gc_scale.sum_to_size(coef.shape) + 1e-300, rtol, "spline_sum d/dcoef"),
    ]


def compare_eval(x, grid, coef, k, seed, rtol):
    """spline_eval local vs recursion, forward and both gradients (scaled errors)."""
    gen = torch.Generator().manual_seed(seed + 2)
    m = coef.shape[-2]
    g_up = torch.randn(*x.shape, m, generator=gen, dtype=x.dtype)  # (*, s, n, m)
    fn = lambda xx, cc, meth: spline_eval(xx, grid, cc, k, method=meth)  # noqa: E731
    (yl, gxl, gcl), (yr, gxr, gcr) = run(fn, x, coef, g_up, "local"), run(fn, x, coef, g_up, "recursion")
    cmax = coef.abs().amax(-1)  # (*, n, m)
    return [
        assert_close_scaled(yl, yr, cmax.unsqueeze(-3) + 1e-300, rtol, "spline_eval value"),
        assert_close_scaled(gxl, gxr, (g_up.abs() * cmax.unsqueeze(-3)).sum(-1) / spacing(grid).unsqueeze(-2) + 1e-300,
                            rtol, "spline_eval d/dx"),
        assert_close_scaled(gcl, gcr, g_up.abs().sum(-3).unsqueeze(-1) + 1e-300, rtol, "spline_eval d/dcoef"),
    ]


ranges = st.tuples(st.floats(-4, 4), st.floats(0.25, 8))


# ------------------------------------------------ exactness vs Cox--de Boor
@settings(max_examples=examples(15))
@given(k=st.integers(1, 3), G=st.integers(1, 20), rngs=st.lists(ranges, min_size=1, max_size=3),
       m=st.integers(1, 3), seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from([torch.float64, torch.float32]))
@example(k=1, G=2, rngs=[(0.1, 0.25)], m=1, seed=0, dtype=torch.float64)  # x one ulp below a knot (a fixed bug)
@example(k=3, G=20, rngs=[(-4.0, 8.0), (4.0, 0.25)], m=2, seed=1, dtype=torch.float64)
@example(k=2, G=1, rngs=[(-1.0, 2.0)], m=1, seed=2, dtype=torch.float32)
def test_local_matches_cox_de_boor_everywhere(k, G, rngs, m, seed, dtype):
    grid = make_grid(k, G, rngs, dtype)
    n = grid.shape[0]
    coef = torch.randn(n, m, G + k, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    x = edge_points(grid, seed)
    if not grid_is_uniform(grid):
        # a rounded range can fail the 64-eps uniformity test: auto then takes the general
        # path silently (same result as the recursion), and "local" refuses
        assert torch.equal(spline_sum(x, grid, coef, k), spline_sum(x, grid, coef, k, method="recursion"))
        with pytest.raises(ValueError, match="uniform"):
            spline_sum(x, grid, coef, k, method="local")
        return
    compare_sum(x, grid, coef, k, seed, RTOL[dtype])
    compare_eval(x, grid, coef, k, seed, RTOL[dtype])


def test_boundary_points_exactly():
    """``t_0`` is inside (first interval), ``t_last`` and beyond are outside (0), in both
    kernels, values and slopes."""
    G = 4
    for k in (1, 2, 3):
        grid = uniform_grid(1, G, k, (-1.0, 1.0), dtype=torch.float64)
        coef = torch.randn(1, 1, G + k, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
        t0, tl = grid[0, 0].item(), grid[0, -1].item()
        x = torch.tensor([[t0], [tl], [tl + 1.0], [t0 - 1.0]], dtype=torch.float64)
        compare_sum(x, grid, coef, k, 0, RTOL64)
        compare_eval(x, grid, coef, k, 0, RTOL64)
        first, v, dv = local_basis(x, grid, k)
        assert first[0, 0] == -k and (v[1:] == 0).all() and (dv[1:] == 0).all()
        assert torch.allclose(v[0, 0, -1], bspline_basis(x[:1], grid, k)[0, 0, 0], atol=1e-15)
        # the basis sums to 1 on [t_k, t_{G+k}] (partition of unity) -- on the stored knots too
        xs = grid[:, k:G + k + 1].T.contiguous()
        assert torch.allclose(local_basis(xs, grid, k)[1].sum(-1), torch.ones_like(xs), atol=1e-14)


# ---------------------------------------------------------------- NaN, inf
@pytest.mark.parametrize("k", [1, 2, 3])
def test_nan_propagates_in_local_kernel_but_not_in_cox_de_boor(k):
    grid = uniform_grid(2, 5, k, dtype=torch.float64)
    coef = torch.randn(2, 3, 5 + k, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([[nan, 0.1], [0.3, 0.2], [inf, -0.4], [-inf, 0.5]], dtype=torch.float64)
    for fn in (spline_sum, spline_eval):
        xl = x.clone().requires_grad_(True)
        y = fn(xl, grid, coef, k, method="local")
        y.sum().backward()
        hit = torch.zeros(y.shape, dtype=torch.bool)
        hit[0] = True  # spline_sum: the NaN sample's outputs; spline_eval: its edges from input 0
        if fn is spline_eval:
            hit[0, 1] = False
        assert y[hit].isnan().all() and y[~hit].isfinite().all()
        assert xl.grad[1:].isfinite().all() and (xl.grad[2:, 0] == 0).all()
        # d/dx at the NaN point: NaN for k >= 2; for k = 1 the slope is a constant per
        # interval, so it is finite (the value is NaN, and so is any loss built on it)
        assert xl.grad[0, 0].isnan() if k >= 2 else xl.grad[0, 0].isfinite()
        # Cox--de Boor hides the NaN: its basis is nan_to_num'ed, the NaN sample gives 0
        xr = x.clone().requires_grad_(True)
        yr = fn(xr, grid, coef, k, method="recursion")
        yr.sum().backward()
        assert yr.isfinite().all()
        if fn is spline_eval:
            assert (yr[0, 0] == 0).all() and (yr[2:, 0] == 0).all()
        # every finite value and the ±inf ones (0 outside the grid) agree
        assert torch.allclose(y[1:], yr[1:], atol=1e-12, rtol=0)
    # the auto path on a uniform grid is the local one: NaN reaches the output
    assert spline_sum(x, grid, coef, k)[0].isnan().all()
    # a NaN coefficient gradient only where the NaN sample's active coefficients are
    c = coef.clone().requires_grad_(True)
    spline_sum(x, grid, c, k, method="local").sum().backward()
    assert c.grad[1].isfinite().all() and c.grad[0].isnan().any()


# ------------------------------------------------------ uniformity checks
def test_grid_is_uniform_detects_non_uniform_grids_and_auto_falls_back():
    k, G = 3, 6
    base = uniform_grid(3, G, k, (-1.0, 2.0), dtype=torch.float64)
    assert grid_is_uniform(base)
    assert grid_is_uniform(make_grid(k, G, [(-1.0, 2.0), (0.5, 0.3), (-3.0, 7.0)], torch.float64))  # rows differ
    assert grid_is_uniform(base.float())
    h = spacing(base)[0].item()

    repeated = base.clone()
    repeated[1] = 0.25  # a dead neuron after pykan's update_grid_from_samples: every knot equal
    partly = base.clone()
    partly[0, 4] = partly[0, 3]  # one repeated knot
    perturbed = base.clone()
    perturbed[2, 5] += 1e-3 * h  # non-uniform (still increasing)
    tiny = base.clone()
    tiny[0, 5] += 1e-9 * h  # far above rounding
    needs_grad = base.clone().requires_grad_(True)
    coef = torch.randn(3, 2, G + k, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x = edge_points(base, 5)
    for bad in (repeated, partly, perturbed, tiny, needs_grad):
        assert not grid_is_uniform(bad)
        # method="auto" silently takes the general path, with the recursion's (correct) result
        for fn in (spline_sum, spline_eval):
            assert torch.equal(fn(x, bad, coef, k), fn(x, bad, coef, k, method="recursion"))
            with pytest.raises(ValueError, match="uniform"):
                fn(x, bad, coef, k, method="local")
    # the grid that needs a gradient gets one (general path), with the local kernel's value
    y = spline_sum(x, needs_grad, coef, k)
    y.sum().backward()
    assert needs_grad.grad is not None and needs_grad.grad.abs().sum() > 0
    assert torch.allclose(y.detach(), spline_sum(x, base, coef, k, method="local"), atol=1e-12, rtol=0)
    # one non-uniform model in a batch sends the whole batch to the general path
    batch = torch.stack([base, perturbed])
    assert not grid_is_uniform(batch) and grid_is_uniform(batch[:1])


def test_local_maths_on_non_uniform_grid_differs_from_cox_de_boor():
    """Negative twin: the check is needed -- the local kernel's maths on a perturbed grid
    (called directly, bypassing the dispatch) is NOT Cox--de Boor's B-spline."""
    k, G = 3, 6
    grid = uniform_grid(2, G, k, (-1.0, 1.0), dtype=torch.float64)
    h = spacing(grid)[0].item()
    grid[0, 6] += 0.3 * h
    grid[1, 4] -= 0.2 * h
    assert not grid_is_uniform(grid)
    coef = torch.randn(1, 2, 2, G + k, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.linspace(-1, 1, 50, dtype=torch.float64).unsqueeze(-1).expand(50, 2).unsqueeze(0).contiguous()
    ref = spline_sum(x, grid, coef[0], k, method="recursion")
    wrong = local_spline_sum(x, grid.unsqueeze(0), coef, k)[0]
    scale = coef.abs().amax(-1).sum(-2).max().item()
    assert (wrong - ref).abs().max().item() > 1e-3 * scale
    wrong_eval = local_spline_eval(x[0], grid, coef[0], k)
    assert (wrong_eval - spline_eval(x[0], grid, coef[0], k, method="recursion")).abs().max() > 1e-3 * scale
    # ...while on the unperturbed grid the same direct call agrees
    uni = uniform_grid(2, G, k, (-1.0, 1.0), dtype=torch.float64)
    assert torch.allclose(local_spline_sum(x, uni.unsqueeze(0), coef, k)[0],
                          spline_sum(x, uni, coef[0], k, method="recursion"), atol=1e-12 * scale, rtol=0)


def test_unknown_method_is_an_error():
    grid = uniform_grid(1, 3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="method"):
        spline_sum(torch.zeros(2, 1, dtype=torch.float64), grid, torch.zeros(1, 1, 5, dtype=torch.float64), 2,
                   method="fast")


# -------------------------------------------------------- batched shapes
@settings(max_examples=examples(10))
@given(k=st.integers(1, 3), G=st.integers(1, 12), n=st.integers(1, 4), m=st.integers(1, 3), B=st.integers(1, 3),
       layout=st.sampled_from(["all", "shared_x", "shared_grid", "shared_coef", "two_axes"]),
       seed=st.integers(0, 2**31 - 1))
def test_batched_and_broadcast_shapes_match_recursion(k, G, n, m, B, layout, seed):
    """``spline_sum`` with a model axis on some or all of ``x``, ``grid``, ``coef``
    (broadcast), and two leading axes; gradients reach the un-broadcast tensors."""
    gen = torch.Generator().manual_seed(seed)
    dt = torch.float64
    rng = [(float(lo), float(w))
           for lo, w in zip(torch.rand(n, generator=gen) * 4 - 2, torch.rand(n, generator=gen) + 0.5)]
    grid1 = make_grid(k, G, rng, dt)
    if not grid_is_uniform(grid1):
        grid1 = make_grid(k, G, [(-1.0, 2.0)] * n, dt)
    x1 = edge_points(grid1, seed, inside=6, outside=2)  # (s, n)
    lead = {"two_axes": (2, B)}.get(layout, (B,))
    jitter = lambda t: t + 0.1 * torch.randn(*lead, *t.shape, generator=gen, dtype=dt)  # noqa: E731
    x = x1 if layout == "shared_x" else jitter(x1)
    grid = grid1 if layout == "shared_grid" else (grid1 + torch.arange(B, dtype=dt).view(B, 1, 1) * 0.5).expand(
        *lead, *grid1.shape).contiguous()
    coef = torch.randn(*(() if layout == "shared_coef" else lead), n, m, G + k, generator=gen, dtype=dt)
    assert grid_is_uniform(grid)
    compare_sum(x, grid, coef, k, seed, RTOL64)
    out = spline_sum(x, grid, coef, k)
    assert out.shape == torch.broadcast_shapes(x.shape[:-2], grid.shape[:-2], coef.shape[:-3]) + (x.shape[-2], m)
    if layout in ("all", "two_axes"):  # spline_eval shares its leading axis across x, grid, coef
        compare_eval(x, grid, coef, k, seed, RTOL64)


def _recursion_forward(monkeypatch):
    """Make KANWeights.forward use Cox--de Boor (the reference)."""
    monkeypatch.setattr(kan_weights_module, "spline_sum", functools.partial(spline_sum, method="recursion"))


@settings(max_examples=examples(8))
@given(widths=st.lists(st.integers(1, 4), min_size=2, max_size=4), G=st.integers(1, 10), k=st.integers(1, 3),
       B=st.sampled_from([None, 1, 3]), seed=st.integers(0, 2**31 - 1), shared_x=st.booleans())
def test_kan_weights_forward_uses_local_kernel_and_matches_recursion(widths, G, k, B, seed, shared_x):
    gen = torch.Generator().manual_seed(seed)
    model = KAN(widths, grid=G, k=k, num_models=B, generator=gen, dtype=torch.float64,
                noise_scale=3.0, scale_base_sigma=3.0)  # large weights: hidden values leave the grid
    w = model.weights()
    s = 17
    x = 2.5 * torch.randn(*((B,) if B and not shared_x else ()), s, widths[0], generator=gen, dtype=torch.float64)
    x.requires_grad_(True)
    calls = []
    real = LS.local_spline_sum
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LS, "local_spline_sum", lambda *a, **kw: calls.append(1) or real(*a, **kw))
        y = w.forward(x)
    assert len(calls) == len(widths) - 1  # every layer took the local kernel
    params = [p for p in model.parameters()]
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad(y, [x] + params, gy)
    with pytest.MonkeyPatch.context() as mp:
        _recursion_forward(mp)
        y_ref = w.forward(x)
        grads_ref = torch.autograd.grad(y_ref, [x] + params, gy)
    scale = y_ref.abs().max().item() + 1.0
    assert torch.allclose(y, y_ref, rtol=0, atol=1e-11 * scale)
    for g, gr in zip(grads, grads_ref):
        assert torch.allclose(g, gr, rtol=0, atol=1e-11 * (gr.abs().max().item() + 1.0))
    assert y.shape == ((B,) if B else ()) + (s, widths[-1])


# ------------------------------------------------------------------ trainer
def test_trainer_local_spline_gives_exact_losses_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 4, generator=g, dtype=torch.float64) * 2 - 1
    y = torch.randint(3, (48,), generator=g)
    hp = RunHParams(lr=[3e-2, 1e-2, 5e-2], seed=[1, 2, 3], init_scale=[1.0, 2.0, 4.0], subset_fraction=[1.0, 0.7, 0.9])
    kw = dict(steps=8, checkpoints=[2, 4, 6, 8], grid=5, k=3)
    width = [4, 5, 4, 3]
    loc = train_batched(width, x, y, hp, spline="local", **kw)
    ex = train_batched(width, x, y, hp, spline="exact", **kw)
    assert loc.extra["spline"] == "local"
    assert torch.allclose(loc.train_loss, ex.train_loss, rtol=1e-10, atol=0)
    for a, b in zip(loc.checkpoints, ex.checkpoints):
        assert a.allclose(b, rtol=1e-8, atol=1e-10)
    # negative twin: another learning rate gives other losses
    hp2 = RunHParams(lr=[3e-3, 1e-2, 5e-2], seed=[1, 2, 3], init_scale=[1.0, 2.0, 4.0], subset_fraction=[1.0, 0.7, 0.9])
    other = train_batched(width, x, y, hp2, spline="local", **kw)
    assert not torch.allclose(other.train_loss[0], ex.train_loss[0], rtol=1e-6, atol=0)
    assert torch.allclose(other.train_loss[1:], ex.train_loss[1:], rtol=1e-10, atol=0)


def test_kan_weights_on_device(device):
    """The local kernel on the device agrees with the CPU recursion (float64)."""
    k, G = 3, 7
    grid = uniform_grid(3, G, k, (-1.0, 1.0), dtype=torch.float64)
    coef = torch.randn(2, 3, 2, G + k, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = edge_points(grid, 0).expand(2, -1, -1).contiguous()
    gb = grid.expand(2, -1, -1).contiguous()
    ref = spline_sum(x, gb, coef, k, method="recursion")
    out = spline_sum(x.to(device), gb.to(device), coef.to(device), k, method="local")
    assert out.device.type == device.type
    assert torch.allclose(out.cpu(), ref, rtol=0, atol=1e-12 * coef.abs().max().item() * 3)


# ------------------------------------------- compiled kernels (kan._native)
needs_native = pytest.mark.skipif(not _native.available(), reason="no C++ compiler: the compiled kernels are absent")


def _with_special_points(x, seed):
    """``x`` with NaN, +inf and -inf written into a few random entries."""
    g = torch.Generator().manual_seed(seed)
    x = x.clone()
    flat = x.view(-1)
    pos = torch.randperm(flat.numel(), generator=g)[:3]
    flat[pos] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=x.dtype)[:len(pos)]
    return x


def _sum_and_grads(x, grid, coef, k, g_up, backend):
    xx, cc = x.clone().requires_grad_(True), coef.clone().requires_grad_(True)
    y = local_spline_sum(xx, grid, cc, k, backend=backend)
    gx, gc = torch.autograd.grad(y, (xx, cc), g_up)
    return y.detach(), gx, gc


@needs_native
@settings(max_examples=examples(15))
@given(k=st.integers(1, 5), G=st.integers(1, 20), n=st.sampled_from([1, 2, 3, 9, 17]),
       m=st.sampled_from([1, 3, 8, 17, 40]), B=st.integers(1, 3), special=st.booleans(),
       seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from([torch.float64, torch.float32]))
@example(k=3, G=5, n=2, m=17, B=2, special=True, seed=0, dtype=torch.float32)  # two vector chunks, NaN/inf
@example(k=3, G=10, n=17, m=1, B=2, special=True, seed=1, dtype=torch.float32)  # one output: lanes over inputs
@example(k=2, G=4, n=17, m=1, B=1, special=False, seed=2, dtype=torch.float64)
def test_native_kernel_matches_the_eager_kernel(k, G, n, m, B, special, seed, dtype):
    """The compiled kernel (``backend="native"``) against the eager one (``"torch"``), values
    and both gradients, on every knot, one ulp around each, inside and outside, with NaN and
    +-inf entries (which must land in the same places), ``k = 1..5`` (``k <= 3`` closed forms,
    ``4, 5`` the recursion), outputs spanning several 64-byte vectors, one output (vectors over
    the inputs), and numbers of inputs that fill whole vectors of inputs and leave a remainder."""
    gen = torch.Generator().manual_seed(seed)
    rngs = [(float(lo), float(w)) for lo, w in zip(torch.rand(n, generator=gen) * 4 - 2, torch.rand(n, generator=gen) + 0.5)]
    grid1 = make_grid(k, G, rngs, dtype)
    if not grid_is_uniform(grid1):
        grid1 = make_grid(k, G, [(-1.0, 2.0)] * n, dtype)
    grid = (grid1 + 0.25 * torch.arange(B, dtype=dtype).view(B, 1, 1)).contiguous()
    x = torch.stack([edge_points(grid[b], seed + b, inside=8, outside=2) for b in range(B)])
    if special:
        x = _with_special_points(x, seed)
    coef = torch.randn(B, n, m, G + k, generator=gen, dtype=dtype)
    g_up = torch.randn(B, x.shape[1], m, generator=gen, dtype=dtype)
    nat = _sum_and_grads(x, grid, coef, k, g_up, "native")
    ref = _sum_and_grads(x, grid, coef, k, g_up, "torch")
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    scale = coef.abs().amax(-1).sum(-2).max().item() / spacing(grid).min().item() * g_up.abs().max().item() + 1.0
    for what, a, b in zip(("value", "d/dx", "d/dcoef"), nat, ref):
        assert torch.equal(a.isnan(), b.isnan()), what
        ok = ~a.isnan()
        assert ((a[ok] - b[ok]).abs() <= tol * scale * max(1, x.shape[1])).all(), what
    if not special:
        assert all(t.isfinite().all() for t in nat)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("m", [1, 6, 10, 17])
@pytest.mark.parametrize("trainable", [False, True])
def test_native_spline_sum_node_map_matches_torch(m, trainable, dtype):
    """The node affine map of :func:`native_spline_sum`: fused into the kernels for constant
    ``node_scale``/``node_bias`` (the trainer's buffers; outputs in one vector -- m = 6 in
    float64, 6 and 10 in float32 -- take the grouped backward, 1 the one-output path, the others
    the per-sample one), applied by torch where they need gradients; both against the plain sum
    scaled and shifted by torch, values and every gradient; and the ``transposed`` output layout
    against the default one, with incoming gradients of any strides."""
    k, G, n, B = 3, 5, 4, 2
    gen = torch.Generator().manual_seed(m)
    grid = uniform_grid(n, G, k, dtype=dtype).expand(B, -1, -1).contiguous()
    x = torch.randn(B, 70, n, generator=gen, dtype=dtype, requires_grad=True)
    coef = torch.randn(B, n, m, G + k, generator=gen, dtype=dtype, requires_grad=True)
    wb = torch.randn(B, n, m, generator=gen, dtype=dtype, requires_grad=True)
    ns = (torch.rand(B, m, generator=gen, dtype=dtype) + 0.5).requires_grad_(trainable)
    nb = torch.randn(B, m, generator=gen, dtype=dtype).requires_grad_(trainable)
    silu = torch.nn.functional.silu
    got = _native.native_spline_sum(x, grid, coef, k, base_weight=wb, base_fun=silu, node_scale=ns, node_bias=nb)
    ref = ns.unsqueeze(-2) * _native.native_spline_sum(x, grid, coef, k, base_weight=wb, base_fun=silu) + nb.unsqueeze(-2)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(got, ref, rtol=0, atol=tol * (ref.abs().max().item() + 1))
    args = [x, coef, wb] + ([ns, nb] if trainable else [])
    g_up = torch.randn(got.shape, generator=gen, dtype=dtype)
    for a, b in zip(torch.autograd.grad(got, args, g_up), torch.autograd.grad(ref, args, g_up)):
        assert torch.allclose(a, b, rtol=0, atol=10 * tol * (b.abs().max().item() + 1))
    # the (B, m, s) layout: the same values and gradients, also for a gradient with stride 0
    # (the backward of a sum) and for one in the transposed layout
    def layer(transposed):
        return _native.native_spline_sum(x, grid, coef, k, base_weight=wb, base_fun=silu, node_scale=ns,
                                         node_bias=nb, transposed=transposed)

    tr = layer(True)
    assert tr.shape == got.shape and tr.transpose(1, 2).is_contiguous() and torch.equal(tr, got)
    for g in (g_up, torch.ones(1, 1, 1, dtype=dtype).expand_as(got), g_up.transpose(1, 2).contiguous().transpose(1, 2)):
        for a, b in zip(torch.autograd.grad(layer(True), args, g), torch.autograd.grad(layer(False), args, g)):
            assert torch.allclose(a, b, rtol=0, atol=10 * tol * (b.abs().max().item() + 1))
    # negative twin: the node scale matters
    plain = _native.native_spline_sum(x, grid, coef, k, base_weight=wb, base_fun=silu)
    assert (plain - ref).abs().max() > 1e-3
    with pytest.raises(ValueError, match="together"):
        _native.native_spline_sum(x, grid, coef, k, node_scale=ns)
    with pytest.raises(ValueError, match="node_bias must have shape"):
        _native.native_spline_sum(x, grid, coef, k, node_scale=ns, node_bias=nb[:1])


@needs_native
def test_native_kernel_negative_twin_wrong_coefficient_layout():
    """The check can fail: coefficients with their basis axis reversed give other values."""
    k, G = 3, 6
    grid = uniform_grid(2, G, k, dtype=torch.float64).unsqueeze(0)
    coef = torch.randn(1, 2, 3, G + k, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = edge_points(grid[0], 3).unsqueeze(0)
    right = local_spline_sum(x, grid, coef, k, backend="torch")
    assert (local_spline_sum(x, grid, coef.flip(-1), k, backend="native") - right).abs().max() > 1e-3
    assert torch.allclose(local_spline_sum(x, grid, coef, k, backend="native"), right, rtol=0, atol=1e-12)


@needs_native
@settings(max_examples=examples(8))
@given(k=st.integers(1, 5), G=st.integers(1, 12), n=st.integers(1, 5), m=st.sampled_from([1, 4, 16, 33]),
       B=st.integers(1, 4), seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from([torch.float64, torch.float32]))
def test_native_shared_sum_matches_the_dense_basis(k, G, n, m, B, seed, dtype):
    """The first-layer kernel (one ``x`` and one grid for every model, precomputed local basis)
    against the dense Cox--de Boor basis, value and coefficient gradient."""
    gen = torch.Generator().manual_seed(seed)
    grid = uniform_grid(n, G, k, (-1.0, 1.5), dtype=dtype)
    x = edge_points(grid, seed, inside=6, outside=2)
    coef = torch.randn(B, n, m, G + k, generator=gen, dtype=dtype, requires_grad=True)
    y = _native.native_shared_sum(_native.SharedBasis.from_local(*local_basis(x, grid, k)[:2], k, grid.shape[-1]), coef)
    ref = torch.einsum("sib,Biob->Bso", bspline_basis(x, grid.unsqueeze(-3), k), coef)
    g_up = torch.randn(y.shape, generator=gen, dtype=dtype)
    gc, gc_ref = (torch.autograd.grad(t, coef, g_up)[0] for t in (y, ref))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    scale = coef.detach().abs().amax(-1).sum(-2).max().item() + 1.0
    assert torch.allclose(y, ref, rtol=0, atol=tol * scale)
    assert torch.allclose(gc, gc_ref, rtol=0, atol=tol * (g_up.abs().sum(-2).max().item() + 1.0))


def _quantised(grid, levels, S, seed, special=False):
    """``x (S, n)`` whose input ``i`` takes ``levels[i]`` values drawn from that input's edge
    points (knots, one ulp around them, inside, outside); with ``special`` also NaN and +-inf."""
    g = torch.Generator().manual_seed(seed)
    pts = edge_points(grid, seed, inside=6, outside=2)  # (P, n)
    cols = []
    for i, L in enumerate(levels):
        vals = pts[torch.randperm(pts.shape[0], generator=g)[:L], i]
        cols.append(vals[torch.randint(len(vals), (S,), generator=g)])
    x = torch.stack(cols, 1)
    return _with_special_points(x, seed) if special else x


def _shared_sum_and_grads(basis, coef, wb, g_up):
    cc = coef.clone().requires_grad_(True)
    ww = None if wb is None else wb.clone().requires_grad_(True)
    y = _native.native_shared_sum(basis, cc, base_weight=ww)
    grads = torch.autograd.grad(y, [cc] + ([] if ww is None else [ww]), g_up)
    return (y.detach(),) + tuple(grads)


@needs_native
@settings(max_examples=examples(12))
@given(k=st.integers(1, 5), G=st.integers(1, 12), n=st.sampled_from([1, 3, 17]), m=st.sampled_from([1, 4, 16, 33]),
       B=st.integers(1, 3), levels=st.lists(st.integers(1, 6), min_size=17, max_size=17), base=st.booleans(),
       special=st.booleans(), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float64, torch.float32]))
@example(k=3, G=5, n=17, m=16, B=2, levels=[1] * 17, base=True, special=False, seed=0, dtype=torch.float32)
@example(k=2, G=3, n=3, m=33, B=1, levels=[6] * 17, base=True, special=True, seed=1, dtype=torch.float64)
def test_native_lookup_form_matches_the_per_sample_form(k, G, n, m, B, levels, base, special, seed, dtype):
    """The lookup form of the shared first-layer sum (a table of the distinct (input, value)
    pairs per model) against the per-sample form and the dense Cox--de Boor basis, value and the
    gradients of the coefficients and the base weights, on inputs with 1..6 levels each drawn
    from knots, one ulp around them, inside and outside points, NaN and +-inf (NaN gets its own
    row and must land where the per-sample form puts it)."""
    gen = torch.Generator().manual_seed(seed)
    grid = uniform_grid(n, G, k, (-1.0, 1.5), dtype=dtype)
    x = _quantised(grid, levels[:n], 50, seed, special)
    first, values, _ = local_basis(x, grid, k)
    bv = torch.nn.functional.silu(x) if base else None
    per_sample = _native.SharedBasis.from_local(first, values, k, grid.shape[-1], base=bv)
    lookup = _native.SharedBasis.from_local(first, values, k, grid.shape[-1], base=bv, x=x, lookup=True)
    assert per_sample.rows is None
    distinct = sum(len(torch.unique(c[~c.isnan()])) + int(c.isnan().sum()) for c in x.T)
    assert lookup.rows.num_rows == distinct
    coef = torch.randn(B, n, m, G + k, generator=gen, dtype=dtype)
    wb = torch.randn(B, n, m, generator=gen, dtype=dtype) if base else None
    g_up = torch.randn(B, x.shape[0], m, generator=gen, dtype=dtype)
    got = _shared_sum_and_grads(lookup, coef, wb, g_up)
    ref = _shared_sum_and_grads(per_sample, coef, wb, g_up)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for what, a, b in zip(("value", "d/dcoef", "d/dbase_weight"), got, ref):
        assert torch.equal(a.isnan(), b.isnan()), what  # NaN and +-inf (base term at +-inf) in the same places
        assert torch.equal(a[a.isinf()], b[a.isinf()]), what
        ok = a.isfinite()
        scale = (a[ok].abs().max().item() if ok.any() else 0.0) + 1.0
        assert ((a[ok] - b[ok]).abs() <= tol * scale).all(), what
    if not special:  # and the dense basis, without the base term
        dense = torch.einsum("sib,Biob->Bso", bspline_basis(x, grid.unsqueeze(-3), k), coef)
        plain = _native.native_shared_sum(lookup, coef)
        assert torch.allclose(plain, dense, rtol=0, atol=tol * (coef.abs().amax(-1).sum(-2).max().item() + 1.0))


@needs_native
@settings(max_examples=examples(8))
@given(k=st.integers(1, 5), m=st.sampled_from([1, 7, 16, 20]), lookup=st.booleans(), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_native_shared_sum_edge_scale_and_node_map_match_torch(k, m, lookup, seed, dtype):
    """``spline_scale`` and the node affine map (fused into the lookup kernels, applied by torch in
    the per-sample form) against the plain sum scaled and shifted by torch: values and the
    gradients of every argument (coefficients, base weights, edge scales, node scale and bias)."""
    G, n, B = 4, 5, 2
    gen = torch.Generator().manual_seed(seed)
    grid = uniform_grid(n, G, k, (-1.0, 1.5), dtype=dtype)
    x = _quantised(grid, [3] * n, 40, seed)
    first, values, _ = local_basis(x, grid, k)
    basis = _native.SharedBasis.from_local(first, values, k, grid.shape[-1], base=torch.nn.functional.silu(x), x=x,
                                           lookup=lookup)
    assert (basis.rows is not None) == lookup
    args = [torch.randn(B, n, m, G + k, generator=gen, dtype=dtype), torch.randn(B, n, m, generator=gen, dtype=dtype),
            torch.randn(B, n, m, generator=gen, dtype=dtype), torch.rand(B, m, generator=gen, dtype=dtype) + 0.5,
            torch.randn(B, m, generator=gen, dtype=dtype)]
    args = [a.requires_grad_(True) for a in args]
    coef, wb, sc, ns, nb = args
    got = _native.native_shared_sum(basis, coef, base_weight=wb, spline_scale=sc, node_scale=ns, node_bias=nb)
    plain = _native.native_shared_sum(_native.SharedBasis.from_local(first, values, k, grid.shape[-1],
                                                                     base=torch.nn.functional.silu(x)),
                                      sc.unsqueeze(-1) * coef, base_weight=wb)
    ref = ns.unsqueeze(-2) * plain + nb.unsqueeze(-2)
    g_up = torch.randn(got.shape, generator=gen, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    scale = ref.detach().abs().max().item() + 1.0
    assert torch.allclose(got, ref, rtol=0, atol=tol * scale)
    for name, a, b in zip(("coef", "base_weight", "spline_scale", "node_scale", "node_bias"),
                          torch.autograd.grad(got, args, g_up), torch.autograd.grad(ref, args, g_up)):
        assert torch.allclose(a, b, rtol=0, atol=tol * (b.abs().max().item() + 1.0) * 10), name
    # negative twin: a node scale left out changes the values
    assert (_native.native_shared_sum(basis, coef, base_weight=wb, spline_scale=sc) - ref).abs().max() > 1e-3
    with pytest.raises(ValueError, match="together"):
        _native.native_shared_sum(basis, coef, node_scale=ns)
    with pytest.raises(ValueError, match="spline_scale must have shape"):
        _native.native_shared_sum(basis, coef, spline_scale=sc[:, :1])


@needs_native
def test_native_lookup_form_negative_twin_and_choice(monkeypatch):
    """The check can fail: rows built from other inputs (the samples in another order) give other
    values. ``lookup=None`` takes the lookup form only where the distinct pairs are at most half
    of the (sample, input) pairs; bad arguments are errors."""
    k, G = 3, 5
    grid = uniform_grid(4, G, k, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (40, 4), generator=gen).to(torch.float64) / 4
    first, values, _ = local_basis(x, grid, k)
    coef = torch.randn(2, 4, 3, G + k, generator=gen, dtype=torch.float64)
    right = _native.native_shared_sum(_native.SharedBasis.from_local(first, values, k, grid.shape[-1]), coef)
    auto = _native.SharedBasis.from_local(first, values, k, grid.shape[-1], x=x)
    assert auto.rows is not None and auto.rows.num_rows <= 20
    rows = auto.rows  # each input's reference row: its most common value; samples sparse without it
    for i in range(4):
        vals, counts = torch.unique(x[:, i], return_counts=True)
        ref_value = vals[counts == counts.max()][0]
        assert x[rows.idx[:, i] == rows.ref[i], i].eq(ref_value).all()
    assert int(rows.sptr[-1]) == int((rows.idx != rows.ref.unsqueeze(0)).sum()) == rows.sidx.numel()
    assert int(rows.off[-1]) == rows.order.numel() == rows.sidx.numel()
    assert torch.allclose(_native.native_shared_sum(auto, coef), right, rtol=0, atol=1e-12)
    wrong = _native.SharedBasis.from_local(first, values, k, grid.shape[-1], x=x.flip(0), lookup=True)
    assert (_native.native_shared_sum(wrong, coef) - right).abs().max() > 1e-3
    xc = torch.rand(40, 4, generator=gen, dtype=torch.float64)  # continuous: every pair distinct
    fc, vc, _ = local_basis(xc, grid, k)
    assert _native.SharedBasis.from_local(fc, vc, k, grid.shape[-1], x=xc).rows is None
    assert _native.SharedBasis.from_local(fc, vc, k, grid.shape[-1], x=xc, lookup=True).rows.num_rows == 160
    monkeypatch.setattr(_native, "_MAX_AUTO_ROWS", 10)  # the automatic choice caps the table's size
    assert _native.SharedBasis.from_local(first, values, k, grid.shape[-1], x=x).rows is None
    assert _native.SharedBasis.from_local(first, values, k, grid.shape[-1], x=x, lookup=True).rows is not None
    with pytest.raises(MemoryError):  # a kernel whose buffer could not be allocated (code -4)
        _native._run(lambda *args: -4, 1)
    with pytest.raises(ValueError, match="needs the inputs x"):
        _native.SharedBasis.from_local(first, values, k, grid.shape[-1], lookup=True)
    with pytest.raises(ValueError, match="at least one sample"):
        _native.SharedBasis.from_local(first[:0], values[:0], k, grid.shape[-1], x=x[:0], lookup=True)
    assert _native.SharedBasis.from_local(first[:0], values[:0], k, grid.shape[-1], x=x[:0]).rows is None
    with pytest.raises(ValueError, match="does not match"):
        _native.SharedBasis.from_local(first, values, k, grid.shape[-1], x=x[:10])
    with pytest.raises(ValueError, match="base values"):
        _native.native_shared_sum(auto, coef, base_weight=torch.zeros(2, 4, 3, dtype=torch.float64))


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 3])
def test_native_kernel_on_knots_of_a_grid_uniform_only_to_rounding(k, dtype):
    """The compiled kernel decides the interval by the stored knots only where the position lies
    within a rounding margin of a knot. Interior knots moved by a few ulps (the grid stays
    uniform for :func:`grid_is_uniform`), and points on them and one ulp either side, must fall
    where the eager kernel (which always checks the stored knots) puts them (with ``k = 1`` the
    slope jumps at every knot, so a point in the wrong interval shows in d/dx)."""
    G, n = 9, 17
    grid = uniform_grid(n, G, k, (-1.0, 1.5), dtype=dtype)
    gen = torch.Generator().manual_seed(3)
    inner = grid[:, 1:-1]
    for _ in range(3):  # up to 3 ulps away, each knot its own way
        step = torch.randint(-1, 2, inner.shape, generator=gen)
        inner = torch.where(step > 0, torch.nextafter(inner, inner + 1), torch.where(step < 0, torch.nextafter(inner, inner - 1), inner))
    grid = torch.cat([grid[:, :1], inner, grid[:, -1:]], 1).unsqueeze(0).contiguous()
    assert grid_is_uniform(grid) and not torch.equal(grid[0], uniform_grid(n, G, k, (-1.0, 1.5), dtype=dtype))
    x = edge_points(grid[0], 4, inside=40, outside=2).unsqueeze(0)
    coef = torch.randn(1, n, 5, G + k, generator=gen, dtype=dtype)
    g_up = torch.randn(1, x.shape[1], 5, generator=gen, dtype=dtype)
    nat = _sum_and_grads(x, grid, coef, k, g_up, "native")
    ref = _sum_and_grads(x, grid, coef, k, g_up, "torch")
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    scale = coef.abs().amax(-1).sum(-2).max().item() / spacing(grid).min().item() * g_up.abs().max().item() + 1.0
    for what, a, b in zip(("value", "d/dx", "d/dcoef"), nat, ref):
        assert ((a - b).abs() <= tol * scale * n).all(), what


@needs_native
def test_native_threads_split_the_model_axis_exactly():
    """Two threads (each a slice of the model axis) give bit-identical results to one."""
    k, G, B = 3, 5, 5
    gen = torch.Generator().manual_seed(0)
    grid = uniform_grid(4, G, k, dtype=torch.float32).expand(B, -1, -1).contiguous()
    x = torch.randn(B, 33, 4, generator=gen, requires_grad=True)
    coef = torch.randn(B, 4, 7, G + k, generator=gen, requires_grad=True)
    outs = []
    before = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            y = local_spline_sum(x, grid, coef, k, backend="native")
            outs.append((y,) + torch.autograd.grad(y.square().sum(), (x, coef)))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_backend_errors_name_the_problem():
    grid = uniform_grid(2, 4, 3, dtype=torch.float64).unsqueeze(0)
    x, coef = torch.zeros(1, 5, 2, dtype=torch.float64), torch.zeros(1, 2, 3, 7, dtype=torch.float64)
    with pytest.raises(ValueError, match="backend"):
        local_spline_sum(x, grid, coef, 3, backend="fast")
    g6 = uniform_grid(2, 4, 6, dtype=torch.float64).unsqueeze(0)
    with pytest.raises(ValueError, match="k=6"):  # no compiled kernel for k > 5 (or none at all)
        local_spline_sum(x, g6, torch.zeros(1, 2, 3, 10, dtype=torch.float64), 6, backend="native")
    with pytest.raises(ValueError, match="float16"):
        local_spline_sum(x.half(), grid.half(), coef.half(), 3, backend="native")
    # "auto" takes the eager kernel where the compiled one does not apply: same values
    y6 = local_spline_sum(x, g6, torch.ones(1, 2, 3, 10, dtype=torch.float64), 6)
    assert y6.shape == (1, 5, 3) and y6.isfinite().all()


_FALLBACK = """
import warnings, torch
from wskan_ext.kan import _native
from wskan_ext.kan.spline import spline_sum, uniform_grid
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    ok = _native.available()
grid = uniform_grid(2, 5, 3, dtype=torch.float64)
x = torch.linspace(-1.2, 1.2, 11, dtype=torch.float64).unsqueeze(-1).expand(11, 2)
coef = torch.randn(2, 3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
err = (spline_sum(x, grid, coef, 3) - spline_sum(x, grid, coef, 3, method="recursion")).abs().max().item()
print(ok, len([m for m in w if issubclass(m.category, RuntimeWarning)]), err < 1e-12)
"""


@pytest.mark.parametrize("env", ["disabled", "no_compiler"])
def test_without_compiled_kernels_everything_falls_back_to_eager(env, tmp_path):
    """``WSKAN_EXT_NATIVE=0`` switches the compiled kernels off silently; with no compiler on
    ``PATH`` a ``RuntimeWarning`` says so once; either way the results are the same."""
    import os
    import subprocess
    import sys

    e = dict(os.environ, WSKAN_EXT_CACHE=str(tmp_path / "cache"))
    e.pop("CXX", None)
    if env == "disabled":
        e["WSKAN_EXT_NATIVE"] = "0"
    else:
        e["PATH"] = str(tmp_path)  # no c++, g++ or clang++ here
    out = subprocess.run([sys.executable, "-c", _FALLBACK], env=e, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "0" if env == "disabled" else "1", "True"]
    assert not (tmp_path / "cache" / "native").exists() or not any((tmp_path / "cache" / "native").iterdir())


@needs_native
def test_native_library_builds_into_a_fresh_cache(tmp_path):
    import os
    import subprocess
    import sys

    e = dict(os.environ, WSKAN_EXT_CACHE=str(tmp_path))
    code = "from wskan_ext.kan import _native; print(_native.available())"
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "True", out.stderr
    files = [p.name for p in (tmp_path / "native").iterdir()]  # the library, no temporary left behind
    assert len(files) == 1 and files[0].startswith("local_spline_") and files[0].endswith(".so"), files


@needs_native
def test_native_entry_points_refuse_mismatched_shapes():
    k, G = 3, 5
    grid = uniform_grid(2, G, k, dtype=torch.float64).unsqueeze(0)
    x = torch.zeros(1, 4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="coef"):
        _native.native_spline_sum(x, grid, torch.zeros(1, 2, 3, G + k + 1, dtype=torch.float64), k)
    with pytest.raises(ValueError, match=r"x \(B, s, n\)"):
        _native.native_spline_sum(x[0], grid, torch.zeros(1, 2, 3, G + k, dtype=torch.float64), k)
    basis = _native.SharedBasis.from_local(*local_basis(x[0], grid[0], k)[:2], k, grid.shape[-1])
    with pytest.raises(ValueError, match="does not fit the basis"):
        _native.native_shared_sum(basis, torch.zeros(1, 3, 3, G + k, dtype=torch.float64))


@needs_native
@settings(max_examples=examples(8))
@given(k=st.integers(1, 4), G=st.integers(1, 10), n=st.sampled_from([1, 3, 17]), m=st.sampled_from([1, 5, 17]),
       B=st.integers(1, 3), base=st.sampled_from(["silu", "identity", "tanh"]), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_native_layer_sum_with_the_base_term(k, G, n, m, B, base, seed, dtype):
    """The fused layer sum (splines + ``base_fun(x) @ base_weight`` in one pass) against the
    eager spline sum plus a batched matmul, value and the three gradients; the shared
    first-layer kernel likewise. Negative twin: another base function gives other values."""
    gen = torch.Generator().manual_seed(seed)
    fn = {"silu": torch.nn.functional.silu, "identity": lambda t: t * 1.0, "tanh": torch.tanh}[base]
    grid = uniform_grid(n, G, k, (-1.0, 1.0), dtype=dtype).expand(B, -1, -1).contiguous()
    x = (1.5 * torch.randn(B, 20, n, generator=gen, dtype=dtype)).requires_grad_(True)
    coef = torch.randn(B, n, m, G + k, generator=gen, dtype=dtype, requires_grad=True)
    w = torch.randn(B, n, m, generator=gen, dtype=dtype, requires_grad=True)
    g_up = torch.randn(B, 20, m, generator=gen, dtype=dtype)
    y = _native.native_spline_sum(x, grid, coef, k, base_weight=w, base_fun=fn)
    ref = local_spline_sum(x, grid, coef, k, backend="torch") + torch.bmm(fn(x), w)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    scale = (coef.detach().abs().amax(-1).sum(-2).max() + w.detach().abs().sum(-2).max() * 3).item() + 1.0
    assert torch.allclose(y, ref, rtol=0, atol=tol * scale)
    grads = torch.autograd.grad(y, (x, coef, w), g_up)
    grads_ref = torch.autograd.grad(ref, (x, coef, w), g_up)
    for a, b in zip(grads, grads_ref):
        assert torch.allclose(a, b, rtol=0, atol=tol * scale * (b.abs().max().item() + 1.0) * 20 / max(1, m))
    other = {"silu": torch.tanh, "identity": torch.tanh, "tanh": torch.nn.functional.silu}[base]
    assert (_native.native_spline_sum(x, grid, coef, k, base_weight=w, base_fun=other) - y).abs().max() > 1e-3
    # the shared first layer: one x and one grid for every model
    x0 = x[0].detach()
    first, values, _ = local_basis(x0, grid[0], k)
    basis = _native.SharedBasis.from_local(first, values, k, grid.shape[-1], base=fn(x0))
    ys = _native.native_shared_sum(basis, coef, base_weight=w)
    refs = local_spline_sum(x0.expand(B, -1, -1), grid, coef, k, backend="torch") + fn(x0) @ w
    assert torch.allclose(ys, refs, rtol=0, atol=tol * scale)
    gs = torch.autograd.grad(ys, (coef, w), g_up)
    gs_ref = torch.autograd.grad(refs, (coef, w), g_up)
    for a, b in zip(gs, gs_ref):
        assert torch.allclose(a, b, rtol=0, atol=tol * scale * (b.abs().max().item() + 1.0))
    with pytest.raises(ValueError, match="together"):
        _native.native_spline_sum(x, grid, coef, k, base_weight=w)
    with pytest.raises(ValueError, match="base values"):
        _native.native_shared_sum(_native.SharedBasis.from_local(first, values, k, grid.shape[-1]), coef, base_weight=w)


@needs_native
def test_native_library_falls_back_to_serial_kernels_when_openmp_fails(tmp_path, monkeypatch):
    """A failing OpenMP build (simulated: a flag the compiler rejects) gives the serial kernels,
    with the same results, not the eager fallback."""
    monkeypatch.setenv("WSKAN_EXT_CACHE", str(tmp_path))
    monkeypatch.setattr(_native, "_openmp_flags", lambda: ["--no-such-flag"])
    lib = _native._load(_native._compiler())
    assert hasattr(lib, "wsk_sum_fwd_f64")
    files = [p.name for p in (tmp_path / "native").iterdir()]
    assert len(files) == 1, files  # only the serial build; the failed one left nothing behind
