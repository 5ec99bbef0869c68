"""MLP -> KAN conversion: the three routes, round trips, batching, devices, errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from wskan_ext.equivariance_tests.profiles import examples
from wskan_ext import KANWeights, kan_to_mlp, mlp_to_kan
from wskan_ext.convert import BatchedLinear, ReLUPower, unbatch_mlp
from wskan_ext.kan.spline import uniform_grid

ACTS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "relu2": lambda: ReLUPower(2),
}


def rel_err(a, b):
    with torch.no_grad():
        return float((a - b).abs().max() / (1.0 + b.abs().max()))


def build_mlp(seed, widths, acts, lead_act=None, trail_act=None, extra=False, dtype=torch.float64):
    torch.manual_seed(seed)  # nn.Linear initialises from the global generator (test-only)
    mods = [] if lead_act is None else [ACTS[lead_act]()]
    for l, (n, m) in enumerate(zip(widths[:-1], widths[1:])):
        mods.append(nn.Linear(n, m))
        if extra and l == 0:
            mods += [nn.Dropout(0.5), nn.Linear(m, m), nn.Identity()]
        if l < len(widths) - 2:
            mods.append(ACTS[acts[l]]())
    if trail_act is not None:
        mods.append(ACTS[trail_act]())
    return nn.Sequential(*mods).to(dtype).eval()


@st.composite
def mlp_specs(draw, acts=tuple(ACTS)):
    depth = draw(st.integers(1, 3))
    return dict(
        seed=draw(st.integers(0, 10**6)),
        widths=draw(st.lists(st.integers(1, 5), min_size=depth + 1, max_size=depth + 1)),
        acts=draw(st.lists(st.sampled_from(acts), min_size=depth, max_size=depth)),
        lead_act=draw(st.none() | st.sampled_from(acts)),
        trail_act=draw(st.none() | st.sampled_from(acts)),
        extra=draw(st.booleans()),
    )


def wide_inputs(n, seed, far=1e3, s=128):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(s, n, generator=gen, dtype=torch.float64)
    return torch.cat([x, far * (2 * torch.rand(s, n, generator=gen, dtype=torch.float64) - 1)])


# ------------------------------------------------------------------ route "exact"
@given(spec=mlp_specs())
def test_exact_route_everywhere_and_round_trip(spec):
    mlp = build_mlp(**spec)
    x = wide_inputs(spec["widths"][0], spec["seed"])
    y = mlp(x)
    w = mlp_to_kan(mlp)
    assert isinstance(w, KANWeights) and not w.batched
    assert (w.coef[0] == 0).all()
    assert rel_err(w(x), y) <= 1e-9
    # MLP -> KAN -> MLP
    for form in ("factored", "merged"):
        assert rel_err(kan_to_mlp(w, form=form)(x), y) <= 1e-9
    # negative twin: the activations live in the per-layer base functions
    if any(b not in ("identity", "relu") for b in w.base_fun[1:]):
        wrong = KANWeights(w.grid, w.coef, w.scale_base, w.scale_sp, w.k, w.mask, w.node_scale, w.node_bias,
                           base_fun="identity")
        assert rel_err(wrong(x), y) > 1e-6


def test_exact_route_float32():
    mlp = build_mlp(1, [4, 8, 8, 3], ["tanh", "silu"], dtype=torch.float32)
    x = wide_inputs(4, 1).float()
    w = mlp_to_kan(mlp)
    assert w.dtype == torch.float32
    assert rel_err(w(x), mlp(x)) <= 1e-4


# ------------------------------------------------------------------ KAN -> MLP -> KAN
def random_kan(seed, widths, G, k, base, models=None):
    """Random KAN with non-uniform per-neuron grids, masks and node affines (float64)."""
    gen = torch.Generator().manual_seed(seed)
    lead = () if models is None else (models,)
    kw = {f: [] for f in ("grid", "coef", "scale_base", "scale_sp", "mask", "node_scale", "node_bias")}
    for n, m in zip(widths[:-1], widths[1:]):
        steps = 0.05 + torch.rand(*lead, n, G + 2 * k + 1, generator=gen, dtype=torch.float64)
        kw["grid"].append(torch.cumsum(steps, -1) - steps.sum(-1, keepdim=True) / 2)
        r = lambda *s: torch.randn(*lead, *s, generator=gen, dtype=torch.float64)  # noqa: E731
        kw["coef"].append(r(n, m, G + k))
        kw["scale_base"].append(r(n, m))
        kw["scale_sp"].append(r(n, m))
        kw["mask"].append((torch.rand(*lead, n, m, generator=gen) > 0.2).double())
        kw["node_scale"].append(r(m))
        kw["node_bias"].append(r(m))
    return KANWeights(**kw, k=k, base_fun=base)


@settings(max_examples=examples(10))
@given(
    seed=st.integers(0, 10**6),
    widths=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    G=st.integers(1, 5),
    k=st.integers(1, 3),
    base=st.sampled_from(["silu", "identity", "tanh", "relu2"]),
    form=st.sampled_from(["factored", "merged"]),
    clamp=st.booleans(),
    units=st.sampled_from(["knots", "basis"]),
    models=st.none() | st.integers(1, 3),
)
def test_kan_mlp_kan_round_trip(seed, widths, G, k, base, form, clamp, units, models):
    w = random_kan(seed, widths, G, k, base, models)
    back = mlp_to_kan(kan_to_mlp(w, form=form, clamp=clamp or units == "basis", units=units))
    assert back.architecture == w.architecture and back.batched == w.batched
    for a, b in zip(back.grid, w.grid):
        assert float((a - b).abs().max()) <= 1e-12
    # effective coefficients come back with the node scale folded in (node_scale = 1)
    ns = [s.unsqueeze(-2) for s in w.node_scale]
    for a, b, s in zip(back.effective_coef(), w.effective_coef(), ns):
        assert rel_err(a, b * s.unsqueeze(-1)) <= 1e-9
    for a, b, s in zip(back.effective_base(), w.effective_base(), ns):
        assert rel_err(a, b * s) <= 1e-9
    x = torch.cat([torch.randn(32, widths[0], dtype=torch.float64), 1e3 * torch.randn(8, widths[0], dtype=torch.float64)])
    assert rel_err(back(x), w(x)) <= 1e-9


@pytest.mark.parametrize("units", ["knots", "basis"])
def test_round_trip_through_float32_mlp(units):
    w = random_kan(7, [3, 4, 2], 5, 3, "silu").float()
    w.node_bias[0] = w.node_bias[0] * 1e3  # large biases: merged biases round far above the knots
    back = mlp_to_kan(kan_to_mlp(w, form="merged", units=units))
    x = torch.randn(64, 3)
    assert back.dtype == torch.float32 and rel_err(back(x), w(x)) <= 1e-4


# ------------------------------------------------------------------ spline routes
def _box_points(lo, hi, seed, s=256):
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(s, lo.numel(), generator=gen, dtype=torch.float64)
    corners = torch.stack([lo, hi])
    return torch.cat([lo + (hi - lo) * u, corners])


@given(spec=mlp_specs(acts=("relu", "leaky_relu")), seed=st.integers(0, 10**6))
def test_relu_spline_route_exact_in_box_not_outside(spec, seed):
    spec = dict(spec, extra=False)
    mlp = build_mlp(**spec)
    n0 = spec["widths"][0]
    gen = torch.Generator().manual_seed(seed)
    lo = -0.1 - 3 * torch.rand(n0, generator=gen, dtype=torch.float64)
    hi = lo + 0.2 + 3 * torch.rand(n0, generator=gen, dtype=torch.float64)
    w = mlp_to_kan(mlp, route="relu_spline", input_box=(lo, hi))
    assert set(w.k) == {1} and set(w.base_fun) == {"zero"} and set(w.grid_sizes) == {2}
    x = _box_points(lo, hi, seed)
    assert rel_err(w(x), mlp(x)) <= 1e-9
    # negative twin: splines vanish outside their grids, so far outside the box the KAN is wrong
    out = hi + 10 * (hi - lo) + 10 + torch.rand(64, n0, generator=gen, dtype=torch.float64)
    if bool((mlp(out) - mlp(out + 1)).abs().max() > 1e-6):  # the MLP is not constant out there
        assert rel_err(w(out), mlp(out)) > 1e-6


@settings(max_examples=examples(10))
@given(seed=st.integers(0, 10**6), power=st.integers(1, 3), widths=st.lists(st.integers(1, 4), min_size=2, max_size=4))
def test_relu_power_route_marsden(seed, power, widths):
    torch.manual_seed(seed)
    mods = []
    for l, (n, m) in enumerate(zip(widths[:-1], widths[1:])):
        mods.append(nn.Linear(n, m))
        if l < len(widths) - 2:
            mods.append(ReLUPower(power))
    mlp = nn.Sequential(*mods).double()
    lo, hi = torch.full((widths[0],), -1.5, dtype=torch.float64), torch.full((widths[0],), 0.5, dtype=torch.float64)
    w = mlp_to_kan(mlp, route="relu_power", input_box=(-1.5, 0.5))
    k_expected = power if len(widths) > 2 else 1
    assert set(w.k) == {k_expected}
    x = _box_points(lo, hi, seed)
    assert rel_err(w(x), mlp(x)) <= 1e-9
    # the spline KAN converts on to an MLP without ever leaving the box
    assert rel_err(kan_to_mlp(w)(x), mlp(x)) <= 1e-9


def test_spline_routes_batched_list_and_box_per_model():
    mlps = [build_mlp(s, [2, 5, 3], ["relu"]) for s in range(3)]
    lo = torch.tensor([[-1.0, -2.0], [0.0, 0.5], [-3.0, -3.0]], dtype=torch.float64)
    hi = lo + torch.tensor([[2.0], [1.0], [0.1]], dtype=torch.float64)
    w = mlp_to_kan(mlps, route="relu_spline", input_box=(lo, hi))
    assert w.num_models == 3
    for i, mlp in enumerate(mlps):
        x = _box_points(lo[i], hi[i], i)
        assert rel_err(w[i](x), mlp(x)) <= 1e-9


# ------------------------------------------------------------------ batched MLPs and devices
def test_batched_mlp_round_trip_matches_list():
    w = random_kan(11, [3, 4, 2], 4, 2, "silu", models=5)
    mlp = kan_to_mlp(w)
    assert isinstance(mlp[0], BatchedLinear)
    back = mlp_to_kan(mlp)
    from_list = mlp_to_kan(unbatch_mlp(mlp))
    x = torch.randn(16, 3, dtype=torch.float64)
    assert back.num_models == from_list.num_models == 5
    assert rel_err(back(x), w(x)) <= 1e-9 and rel_err(from_list(x), w(x)) <= 1e-9


@pytest.mark.parametrize("route", ["exact", "relu_spline", "relu_power"])
def test_mlp_to_kan_on_device(device, route):
    mlp = build_mlp(2, [3, 6, 2], ["relu"]).to(device)
    box = None if route == "exact" else (-1.0, 1.0)
    w = mlp_to_kan(mlp, route=route, input_box=box)
    assert w.device.type == device.type
    x = (2 * torch.rand(50, 3, dtype=torch.float64) - 1).to(device)
    assert rel_err(w(x), mlp(x)) <= 1e-9
    assert rel_err(kan_to_mlp(w)(x), mlp(x)) <= 1e-9


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "mlp, match",
    [
        (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)), "'1'.*BatchNorm1d.*normalisation"),
        (nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1)), "'1'.*LayerNorm"),
        (nn.Sequential(nn.Conv1d(3, 4, 1), nn.ReLU(), nn.Linear(4, 1)), "'0'.*Conv1d"),
        (nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)), "'1'.*expects 5 input features.*gives 4"),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 2)), "expects 5 input features.*gives 4"),
        (nn.Sequential(nn.Linear(3, 4), nn.Hardtanh(), nn.Linear(4, 2)), "'1'.*Hardtanh"),
        (nn.Sequential(nn.Linear(3, 4), nn.ELU(alpha=2.0), nn.Linear(4, 2)), "'1'.*ELU.*non-default"),
        (nn.Sequential(nn.ReLU(), nn.Tanh()), "no nn.Linear"),
    ],
)
def test_unsupported_mlps_raise_naming_the_module(mlp, match):
    with pytest.raises(ValueError, match=match):
        mlp_to_kan(mlp)


def test_route_errors():
    relu = build_mlp(0, [2, 3, 1], ["relu"])
    tanh = build_mlp(0, [2, 3, 1], ["tanh"])
    with pytest.raises(ValueError, match="route must be one of"):
        mlp_to_kan(relu, route="spline")
    with pytest.raises(ValueError, match="needs input_box"):
        mlp_to_kan(relu, route="relu_spline")
    with pytest.raises(ValueError, match="input_box is used only"):
        mlp_to_kan(relu, input_box=(-1.0, 1.0))
    with pytest.raises(ValueError, match="'1'.*Tanh.*relu_spline"):
        mlp_to_kan(tanh, route="relu_spline", input_box=(-1.0, 1.0))
    mixed = nn.Sequential(nn.Linear(2, 3), ReLUPower(2), nn.Linear(3, 3), ReLUPower(3), nn.Linear(3, 1)).double()
    with pytest.raises(ValueError, match="one power.*\\[2, 3\\]"):
        mlp_to_kan(mixed, route="relu_power", input_box=(-1.0, 1.0))
    with pytest.raises(ValueError, match="powers \\[2\\].*relu_power"):
        mlp_to_kan(build_mlp(0, [2, 3, 1], ["relu2"]), route="relu_spline", input_box=(-1.0, 1.0))
    with pytest.raises(ValueError, match="input_box: bounds"):
        mlp_to_kan(relu, route="relu_spline", input_box=(1.0, -1.0))
    with pytest.raises(ValueError, match="broadcast"):
        mlp_to_kan(relu, route="relu_spline", input_box=(torch.zeros(5), torch.ones(5)))
    with pytest.raises(TypeError, match="nn.Sequential"):
        mlp_to_kan("not a model")


def test_tampered_kan_mlp_is_rejected():
    w = random_kan(3, [2, 3, 2], 3, 2, "silu")
    mlp = kan_to_mlp(w, form="merged")
    with torch.no_grad():
        mlp[3].weight[0, 0] += 0.5  # a spline unit no longer copies its base unit
    with pytest.raises(ValueError, match="'3'.*not an MLP produced by kan_to_mlp"):
        mlp_to_kan(mlp)
    mlp = kan_to_mlp(w)
    with torch.no_grad():
        mlp[1].lower[0] -= 0.25  # clamp no longer at the grid bounds
    with pytest.raises(ValueError, match="Clamp bounds"):
        mlp_to_kan(mlp)
    mlp = kan_to_mlp(w)
    with torch.no_grad():
        mlp[3].weight[0, 1] += 1.0  # contraction leaves the span of the B-splines
    with pytest.raises(ValueError, match="'3'.*not a combination of B-splines"):
        mlp_to_kan(mlp)
    with pytest.raises(ValueError, match="must follow the expansion"):
        mlp_to_kan(nn.Sequential(*list(kan_to_mlp(w))[1:]))
    for layer, where in ((0, "not an MLP produced"), (3, "not a combination of B-splines")):
        mlp = kan_to_mlp(w)  # a NaN weight fails the checks (a NaN residual is not "small")
        with torch.no_grad():
            mlp[layer].weight[0, 1] = float("nan")
        with pytest.raises(ValueError, match=f"'{layer}'.*{where}"):
            mlp_to_kan(mlp)


# ------------------------------------------------------------------ issue 14: BatchNorm, composition
def _bn(C, seed, affine=True):
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm1d(C, affine=affine).double()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(C, generator=g, dtype=torch.float64))
        bn.running_var.copy_(0.1 + torch.rand(C, generator=g, dtype=torch.float64) * 3)
        if affine:
            bn.weight.copy_(torch.randn(C, generator=g, dtype=torch.float64))
            bn.bias.copy_(torch.randn(C, generator=g, dtype=torch.float64))
    return bn.eval()


@pytest.mark.parametrize("where", ["after_linear", "after_activation", "first", "last", "no_affine"])
def test_eval_batchnorm_is_folded_exactly(where):
    """Issue 14 (conversions): an eval-mode BatchNorm1d used to be refused or, in the CLI,
    dropped (error 0.56); it is an affine map and is folded into the neighbouring Linear."""
    torch.manual_seed(0)
    lin = lambda n, m: nn.Linear(n, m).double()  # noqa: E731
    mods = {
        "after_linear": [lin(3, 5), _bn(5, 1), nn.ReLU(), lin(5, 2)],
        "after_activation": [lin(3, 5), nn.Tanh(), _bn(5, 2), lin(5, 2)],
        "first": [_bn(3, 3), lin(3, 4), nn.SiLU(), lin(4, 2)],
        "last": [lin(3, 4), nn.ReLU(), lin(4, 2), _bn(2, 4)],
        "no_affine": [lin(3, 5), _bn(5, 5, affine=False), nn.GELU(), lin(5, 2)],
    }[where]
    mlp = nn.Sequential(*mods).eval()
    w = mlp_to_kan(mlp)
    x = wide_inputs(w.widths[0], 0)
    assert rel_err(w(x), mlp(x)) <= 1e-12
    # negative twin: the same network in training mode normalises with batch statistics
    with pytest.raises(ValueError, match=r"BatchNorm1d.*training-mode normalisation.*\.eval\(\)"):
        mlp_to_kan(mlp.train())


def test_batchnorm_without_running_stats_is_refused():
    bn = nn.BatchNorm1d(4, track_running_stats=False).double().eval()
    mlp = nn.Sequential(nn.Linear(3, 4).double(), bn, nn.ReLU(), nn.Linear(4, 1).double())
    with pytest.raises(ValueError, match=r"'1' \(BatchNorm1d\).*track_running_stats=False"):
        mlp_to_kan(mlp)


def test_linear_relu_linear_linear_composes_without_inserting_an_activation():
    """Issue 14 (conversions): ``Sequential(Linear, ReLU, Linear, Linear)`` -- the last two
    Linears are one affine map; nothing may be inserted between them."""
    torch.manual_seed(1)
    mlp = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.Linear(4, 2)).double()
    w = mlp_to_kan(mlp)
    assert w.widths == [3, 5, 2] and w.base_fun == ["identity", "relu"]
    x = wide_inputs(3, 1)
    assert rel_err(w(x), mlp(x)) <= 1e-12
    # negative twin: with a ReLU inserted between the last two Linears the function differs
    wrong = nn.Sequential(*mlp[:3], nn.ReLU(), mlp[3])
    assert rel_err(mlp_to_kan(wrong)(x), mlp(x)) > 1e-2
