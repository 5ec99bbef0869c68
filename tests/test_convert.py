"""KAN -> MLP conversion: spline identities, exactness inside and far outside the grid,
float32 behaviour with and without clamping, batching, pykan models, devices."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples
from wskan_ext import KANWeights, kan_to_mlp
from wskan_ext.convert import (
    BatchedLinear,
    Clamp,
    SplitActivation,
    greville_abscissae,
    marsden_coefficients,
    mlp_parameter_count,
    unbatch_mlp,
)
from wskan_ext.kan.spline import bspline_basis, truncated_power_coefficients, uniform_grid

BASES = ["silu", "identity", "zero", "relu", "tanh", "gelu", "softplus", "relu2"]


def random_grid(gen, shape, K, dtype, uniform=False):
    """Increasing knots ``(*shape, K)``: uniform (pykan's) or random non-uniform steps."""
    if uniform:
        g = uniform_grid(shape[-1], K - 1, 0, (-1.0, 1.0), dtype=dtype)
        return g.expand(*shape, K).clone()
    steps = 0.05 + torch.rand(*shape, K, generator=gen, dtype=dtype)
    start = 2 * torch.rand(*shape, 1, generator=gen, dtype=dtype) - 1 - steps.sum(-1, keepdim=True) / 2
    return start + torch.cumsum(steps, -1)


def random_kan(seed, widths, G, ks, bases, dtype=torch.float64, models=None, uniform=False, masks=True):
    gen = torch.Generator().manual_seed(seed)
    lead = () if models is None else (models,)
    kw = {f: [] for f in ("grid", "coef", "scale_base", "scale_sp", "mask", "node_scale", "node_bias")}
    for l, (n, m) in enumerate(zip(widths[:-1], widths[1:])):
        k = ks[l]
        r = lambda *s: torch.randn(*lead, *s, generator=gen, dtype=dtype)  # noqa: E731
        kw["grid"].append(random_grid(gen, (*lead, n), G + 2 * k + 1, dtype, uniform))
        kw["coef"].append(r(n, m, G + k))
        kw["scale_base"].append(r(n, m))
        kw["scale_sp"].append(r(n, m))
        mask = (torch.rand(*lead, n, m, generator=gen) > 0.25).to(dtype) if masks else torch.ones(*lead, n, m, dtype=dtype)
        kw["mask"].append(mask)
        kw["node_scale"].append(r(m))
        kw["node_bias"].append(r(m))
    return KANWeights(**kw, k=list(ks), base_fun=list(bases))


@st.composite
def kan_specs(draw, max_depth=3, max_width=4):
    depth = draw(st.integers(1, max_depth))
    widths = draw(st.lists(st.integers(1, max_width), min_size=depth + 1, max_size=depth + 1))
    ks = draw(st.lists(st.integers(1, 3), min_size=depth, max_size=depth))
    bases = draw(st.lists(st.sampled_from(BASES), min_size=depth, max_size=depth))
    return dict(
        seed=draw(st.integers(0, 2**31 - 1)),
        widths=widths,
        G=draw(st.integers(1, 6)),
        ks=ks,
        bases=bases,
        uniform=draw(st.booleans()),
    )


def probe_inputs(w, seed, s=64, far=1e3):
    """Inputs inside the grid range of layer 0, just outside, and up to ``|x| = far``."""
    gen = torch.Generator().manual_seed(seed)
    g = w.grid[0] if not w.batched else w.grid[0][0]
    lo, hi = g[:, 0], g[:, -1]
    u = torch.rand(s, w.widths[0], generator=gen, dtype=w.dtype)
    inside = lo + (hi - lo) * u
    edges = torch.stack([lo, hi, lo - 1e-3, hi + 1e-3])
    far_x = far * (2 * torch.rand(s, w.widths[0], generator=gen, dtype=w.dtype) - 1)
    return torch.cat([inside, edges, far_x, torch.full_like(edges[:2], far) * torch.tensor([[1.0], [-1.0]], dtype=w.dtype)])


def rel_err(a, b):
    with torch.no_grad():
        return float((a - b).abs().max() / (1.0 + b.abs().max()))


# ------------------------------------------------------------------ spline identities
@given(k=st.integers(1, 3), G=st.integers(1, 6), n=st.integers(1, 3), seed=st.integers(0, 10**6), uniform=st.booleans())
def test_truncated_power_form_equals_bspline_everywhere(k, G, n, seed, uniform):
    gen = torch.Generator().manual_seed(seed)
    grid = random_grid(gen, (n,), G + 2 * k + 1, torch.float64, uniform)
    A = truncated_power_coefficients(grid, k)  # (n, nb, K)
    x = torch.cat([torch.linspace(-30, 30, 601, dtype=torch.float64), grid.flatten()])[:, None].expand(-1, n)
    basis = bspline_basis(x, grid, k)  # (s, n, nb)
    tp = torch.relu(x[..., None] - grid[None]) ** k  # (s, n, K)
    via_tp = torch.einsum("sik,ibk->sib", tp, A)
    bound = torch.einsum("sik,ibk->sib", tp, A.abs())  # scale of the cancelling terms
    assert bool(((via_tp - basis).abs() <= 1e-9 + 1e-13 * bound).all())
    # negative twin: a perturbed coefficient matrix no longer reproduces the basis
    A2 = A.clone()
    A2[:, 0, 0] *= 1.01
    bad = torch.einsum("sik,ibk->sib", tp, A2)
    assert float((bad - basis).abs().max()) > 1e-6


@given(k=st.integers(1, 3), G=st.integers(1, 6), seed=st.integers(0, 10**6), p=st.integers(0, 20))
def test_marsden_and_greville_reproduce_truncated_powers(k, G, seed, p):
    gen = torch.Generator().manual_seed(seed)
    grid = random_grid(gen, (1,), G + 2 * k + 1, torch.float64)[0]
    K = grid.numel()
    p = p % K
    nb = K - k - 1
    x = torch.linspace(float(grid[k]), float(grid[K - k - 1]), 301, dtype=torch.float64)[:-1]
    basis = bspline_basis(x[:, None], grid[None], k)[:, 0]
    psi = marsden_coefficients(grid, k, grid[p]) * (torch.arange(nb) >= p)
    assert float((basis @ psi - torch.relu(x - grid[p]) ** k).abs().max()) <= 1e-9
    assert float((basis @ greville_abscissae(grid, k) - x).abs().max()) <= 1e-12
    # negative twin: outside the basic interval the identity fails
    xo = grid[k] - 0.5 * (grid[k] - grid[0]) - 1e-3 - torch.rand(1, generator=gen, dtype=torch.float64)
    bo = bspline_basis(xo[:, None], grid[None], k)[:, 0]
    assert float((bo @ greville_abscissae(grid, k) - xo).abs().max()) > 1e-6


# ------------------------------------------------------------------ KAN -> MLP exactness
@given(spec=kan_specs(), form=st.sampled_from(["factored", "merged"]))
def test_kan_to_mlp_exact_float64_inside_and_far_outside(spec, form):
    w = random_kan(**spec)
    x = probe_inputs(w, spec["seed"])
    mlp = kan_to_mlp(w, form=form)
    assert isinstance(mlp, torch.nn.Sequential)
    assert all(isinstance(m, (torch.nn.Linear, Clamp, SplitActivation)) for m in mlp)
    assert rel_err(mlp(x), w(x)) <= 1e-9
    assert rel_err(kan_to_mlp(w, form=form, units="basis")(x), w(x)) <= 1e-9
    # without clamping float64 is still exact inside (and near) the grid, up to the truncated
    # powers' cancellation, which grows like (G+2k)^k: the thorough profile found 1.2e-9, so the
    # unclamped (non-default) path is held to 1e-8; the default, clamped path above to 1e-9
    inside = x[: 64 + 4]
    assert rel_err(kan_to_mlp(w, form=form, clamp=False)(inside), w(inside)) <= 1e-8


@settings(max_examples=examples(8))
@given(spec=kan_specs(), form=st.sampled_from(["factored", "merged"]))
def test_kan_to_mlp_float32_basis_units_relative(spec, form):
    """units='basis' meets 1e-4 relative in float32 for any grid size and depth."""
    w64 = random_kan(**spec)
    w = w64.float()
    x = probe_inputs(w64, spec["seed"])
    y = w64(x)
    out = kan_to_mlp(w, form=form, units="basis")(x.float()).double()
    assert rel_err(out, y) <= 1e-4


@settings(max_examples=examples(8))
@given(spec=kan_specs(max_depth=1), form=st.sampled_from(["factored", "merged"]))
def test_kan_to_mlp_float32_knot_units_relative(spec, form):
    """units='knots': the truncated powers cancel across the grid, so float32 error grows
    like (G+2k)^k (and with the ratio of knot spacings); one layer on a uniform grid with
    (G+2k)^k <= 11^3 (pykan's G=5, k=3) meets 1e-4."""
    spec = dict(spec, uniform=True)
    if (spec["G"] + 2 * spec["ks"][0]) ** spec["ks"][0] > 11**3:
        spec = dict(spec, G=11 - 2 * spec["ks"][0])
    w64 = random_kan(**spec)
    x = probe_inputs(w64, spec["seed"])
    out = kan_to_mlp(w64.float(), form=form, units="knots")(x.float()).double()
    assert rel_err(out, w64(x)) <= 1e-4


def test_float32_fine_grids_need_basis_units():
    """Negative twin of the knot-units bound: at G=20, k=3 the shared truncated powers lose
    float32 accuracy inside the grid; per-B-spline units do not."""
    w64 = random_kan(1, [4, 4], 20, [3], ["silu"], masks=False, uniform=True)
    x = probe_inputs(w64, 1)[:64]
    y = w64(x)
    err = {u: rel_err(kan_to_mlp(w64.float(), units=u)(x.float()).double(), y) for u in ("knots", "basis")}
    # basis units measured 1.1e-5 here (torch 2.13, CPU): still 100x below the knot units
    assert err["knots"] > 1e-4 and err["basis"] <= 2e-5
    assert rel_err(kan_to_mlp(w64, units="basis")(x), y) <= 1e-9


def test_float32_needs_clamping_far_outside():
    """Negative twin of the float32 test: without clamping the truncated powers cancel
    catastrophically far to the right of the grid."""
    w = random_kan(3, [3, 4, 2], 5, [3, 3], ["silu", "silu"], masks=False).float()
    x = torch.full((4, 3), 1e3)
    ref = w.double()(x.double())
    assert rel_err(kan_to_mlp(w, clamp=True, units="knots")(x).double(), ref) <= 1e-4
    assert rel_err(kan_to_mlp(w, clamp=False, units="knots")(x).double(), ref) > 1e-2


def test_factored_and_merged_parameter_counts():
    w = random_kan(0, [5, 4, 3], 5, [3, 2], ["silu", "silu"])
    fac = mlp_parameter_count(kan_to_mlp(w, units="knots"))
    mer = mlp_parameter_count(kan_to_mlp(w, form="merged", units="knots"))
    (n0, n1, n2), (K0, K1) = w.widths, [g.shape[-1] for g in w.grid]
    F0, F1 = n0 * (K0 + 1), n1 * (K1 + 1)
    expect_fac = (F0 * n0 + F0) + (n1 * F0 + n1) + (F1 * n1 + F1) + (n2 * F1 + n2)
    expect_mer = (F0 * n0 + F0) + (F1 * F0 + F1) + (n2 * F1 + n2)
    assert fac["parameters"] == expect_fac and mer["parameters"] == expect_mer
    assert fac["clamp_bounds"] == mer["clamp_bounds"] == 2 * (n0 * K0 + n1 * K1)
    assert fac["nonzero"] < mer["nonzero"]
    # factored non-zeros: one weight per expanded feature plus the contractions, ~ the KAN's size
    assert fac["nonzero"] <= 2 * w.num_parameters()
    # units="auto" picks the compact knot units in float64 and per-B-spline units in float32
    assert mlp_parameter_count(kan_to_mlp(w)) == fac
    basis = mlp_parameter_count(kan_to_mlp(w.float()))
    assert basis == mlp_parameter_count(kan_to_mlp(w, units="basis")) and basis["parameters"] > fac["parameters"]


# ------------------------------------------------------------------ batching and devices
@settings(max_examples=examples(6))
@given(spec=kan_specs(max_depth=2), models=st.integers(1, 4), form=st.sampled_from(["factored", "merged"]))
def test_batched_conversion_matches_every_model(spec, models, form):
    w = random_kan(**spec, models=models)
    x = probe_inputs(w, spec["seed"], s=16)
    mlp = kan_to_mlp(w, form=form)
    assert any(isinstance(m, BatchedLinear) for m in mlp)
    y = mlp(x)  # shared inputs
    assert y.shape == (models, x.shape[0], w.widths[-1])
    assert rel_err(y, w(x)) <= 1e-9
    xs = x.unsqueeze(0).repeat(models, 1, 1) * torch.linspace(0.5, 1.5, models, dtype=x.dtype)[:, None, None]
    assert rel_err(mlp(xs), w(xs)) <= 1e-9
    singles = unbatch_mlp(mlp)
    for i, single in enumerate(singles):
        assert all(not isinstance(m, BatchedLinear) for m in single)
        assert rel_err(single(x), w[i](x)) <= 1e-9
    # negative twin: models are not interchangeable
    if models > 1:
        assert rel_err(singles[0](x), w[1](x)) > 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conversion_stays_on_device(device, dtype):
    w = random_kan(5, [3, 5, 2], 4, [3, 2], ["silu", "identity"], models=3).to(device=device, dtype=dtype)
    mlp = kan_to_mlp(w)
    assert all(t.device.type == device.type and t.dtype == dtype for t in list(mlp.parameters()) + list(mlp.buffers()))
    x = probe_inputs(w.to("cpu", torch.float64), 1).to(device)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    assert rel_err(mlp(x.to(dtype)).double(), w.double()(x)) <= tol


# ------------------------------------------------------------------ pykan models
@pytest.mark.parametrize("k", [1, 2, 3])
def test_pykan_updated_grids(k):
    kan = pytest.importorskip("kan")
    from wskan_ext.adapters.pykan import from_pykan

    model = kan.KAN(width=[2, 3, 2], grid=4, k=k, seed=k, auto_save=False)
    gen = torch.Generator().manual_seed(k)
    samples = torch.cat([torch.randn(200, 2, generator=gen) ** 3, torch.rand(50, 2, generator=gen) * 3])
    model.update_grid_from_samples(samples)
    grids = [layer.grid for layer in model.act_fun]
    steps = grids[0][:, 1:] - grids[0][:, :-1]
    assert float(steps.max() - steps.min()) > 1e-3  # grid is non-uniform ...
    assert not torch.allclose(grids[0][0], grids[0][1])  # ... and differs per neuron
    with torch.no_grad():
        model.node_bias[0].add_(torch.randn(3, generator=gen))
        model.subnode_scale[1].mul_(1 + torch.rand(2, generator=gen))
    x = torch.cat([samples[:64], 500 * (2 * torch.rand(32, 2, generator=gen) - 1), torch.full((1, 2), -1e3)])
    with torch.no_grad():
        ref = model(x).double()
    w32 = from_pykan(model)
    for form in ("factored", "merged"):
        assert rel_err(kan_to_mlp(w32, form=form)(x).double(), ref) <= 1e-4
    w64 = from_pykan(model, dtype=torch.float64)
    assert rel_err(kan_to_mlp(w64)(x.double()), w64(x.double())) <= 1e-9
    # a pykan model is accepted directly (through the registry)
    assert rel_err(kan_to_mlp(model)(x).double(), ref) <= 1e-4


def test_bad_arguments_raise():
    w = random_kan(0, [2, 2], 3, [1], ["silu"])
    with pytest.raises(ValueError, match="form"):
        kan_to_mlp(w, form="dense")
    with pytest.raises(ValueError, match="units"):
        kan_to_mlp(w, units="edges")
    with pytest.raises(ValueError, match="needs clamp=True"):
        kan_to_mlp(w, units="basis", clamp=False)


def test_unclamped_float64_error_grows_far_outside():
    """docs/convert.rst's table (first row): ``clamp=False`` is exact in float64 only near the
    grid; far outside the truncated powers cancel (relative error ~ |x|^(k-1) eps). The
    clamped default stays at rounding level everywhere (its negative twin)."""
    from wskan_ext import KAN

    for seed in range(3):
        w = KAN([4, 8, 3], grid=5, k=3, generator=torch.Generator().manual_seed(seed)).weights(detach=True).double()
        unclamped, clamped = kan_to_mlp(w, clamp=False), kan_to_mlp(w)
        g = torch.Generator().manual_seed(1)
        for s, lo, hi in ((1e3, 0.0, 2e-9), (1e6, 1e-5, 2e-3)):
            x = s * (2 * torch.rand(2000, 4, generator=g, dtype=torch.float64) - 1)
            ref = w(x)
            err = rel_err(unclamped(x), ref)
            assert lo <= err <= hi, (seed, s, err)
            assert rel_err(clamped(x), ref) <= 1e-14


def test_kan_to_mlp_revalidates_weights_edited_in_place_to_nan():
    """Issue 14 (weights): weights edited in place after validation are checked again."""
    w = random_kan(0, [3, 4, 2], 4, [2, 2], ["silu", "silu"])
    kan_to_mlp(w)
    w.coef[1][0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"layer 1: coef contains NaN"):
        kan_to_mlp(w)
    w.coef[1][0, 1, 2] = 0.0
    w.grid[0][1, 3] = w.grid[0][1, 0] - 1  # knots out of order
    with pytest.raises(ValueError, match=r"layer 0: grid knots must be non-decreasing"):
        kan_to_mlp(w)


def test_zero_width_layer_is_refused_naming_the_layer():
    """Issue 14 (weights): zero-width layers used to be accepted and crash kan_to_mlp."""
    good = random_kan(0, [3, 2, 2], 3, [1, 1], ["silu", "silu"])
    kw = {f: list(getattr(good, f)) for f in ("grid", "coef", "scale_base", "scale_sp", "mask", "node_scale",
                                               "node_bias")}
    kw["coef"][1] = kw["coef"][1][:, :0]
    kw["scale_base"][1], kw["scale_sp"][1], kw["mask"][1] = (t[:, :0] for t in (kw["scale_base"][1],
                                                                                kw["scale_sp"][1], kw["mask"][1]))
    kw["node_scale"][1], kw["node_bias"][1] = kw["node_scale"][1][:0], kw["node_bias"][1][:0]
    with pytest.raises(ValueError, match=r"layer 1: zero width: coef has n_in=2, n_out=0"):
        KANWeights(**kw, k=[1, 1], base_fun="silu")
    unchecked = KANWeights(**kw, k=[1, 1], base_fun="silu", validate=False)
    with pytest.raises(ValueError, match=r"layer 1: zero width"):
        kan_to_mlp(unchecked)
    with pytest.raises(ValueError, match=r"layer 0: zero width: coef has n_in=0"):
        KANWeights(grid=[torch.zeros(0, 4)], coef=[torch.zeros(0, 2, 2)], scale_base=[torch.zeros(0, 2)],
                   scale_sp=[torch.zeros(0, 2)], k=1)
