"""The equivariance suite itself: layouts, actions, checks, strategies, reference models.

Every positive property has a negative twin that shows the check can fail."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples

from wskan_ext import KANWeights, permute_hidden
from wskan_ext.equivariance_tests import (
    FLOAT_TOLERANCE,
    assert_equivariant,
    assert_invariant,
    assert_sensitive,
    equivariance_check,
    equivariance_error,
    permute_inputs,
)
from wskan_ext.equivariance_tests import examples as E
from wskan_ext.equivariance_tests import layout as L
from wskan_ext.equivariance_tests import strategies as kst
from wskan_ext.equivariance_tests.actions import (
    ActionContext,
    InputFormat,
    OutputAction,
    get_output,
    register_format,
)

ARCH = dict(min_depth=2, max_depth=3, max_width=4, min_hidden_width=2, per_layer=True,
            base_funs=("silu", "tanh", "relu", "identity"))


def edge_rows(w: KANWeights) -> torch.Tensor:
    """Canonical edge features in layout-contract edge order: ``(*, E, C)`` (one C for all layers)."""
    return torch.cat([f.reshape(*f.shape[:-3], -1, f.shape[-1]) for f in w.edge_features()], -2)


def node_rows(w: KANWeights) -> torch.Tensor:
    """Per-node (node_scale, node_bias) in node order; inputs get (1, 0)."""
    lead = w.coef[0].shape[:-3]
    first = torch.stack([torch.ones(*lead, w.widths[0]), torch.zeros(*lead, w.widths[0])], -1).to(w.dtype)
    return torch.cat([first] + [torch.stack([s, b], -1) for s, b in zip(w.node_scale, w.node_bias)], -2)


# ------------------------------------------------------------------ layout maths
@given(kst.kans_and_permutations(grid_sizes=3, k=2, **{k: v for k, v in ARCH.items() if k != "per_layer"}))
def test_layout_actions_match_permute_hidden(wp):
    w, perms = wp
    units = L.units_of(w.widths, perms, None)
    wp_ = permute_hidden(w, perms)
    assert torch.equal(edge_rows(w)[L.edge_index_perm(units)], edge_rows(wp_))
    assert torch.equal(node_rows(w)[L.node_index(units)], node_rows(wp_))


def test_layout_negative_twin_inverse_permutation_differs():
    w = kst.random_kan({"widths": [2, 3, 1], "grid_sizes": [3, 3], "k": [2, 2], "base_fun": ["silu"] * 2}, 0)
    p = torch.tensor([1, 2, 0])  # a 3-cycle: not its own inverse
    wrong = L.units_of(w.widths, [torch.argsort(p)], None)
    assert not torch.equal(edge_rows(w)[L.edge_index_perm(wrong)], edge_rows(permute_hidden(w, [p])))
    assert not torch.equal(node_rows(w)[L.node_index(wrong)], node_rows(permute_hidden(w, [p])))


def test_decode_names_rows():
    units = L.units_of([2, 3, 1], [torch.tensor([0, 1, 2])], None) * 2
    assert L.decode_node(units, 3) == "model 0, node (layer 1, neuron 1) [hidden]"
    assert L.decode_node(units, 6 + 5) == "model 1, node (layer 2, neuron 0) [output]"
    assert L.decode_edge(units, 6 + 2) == "model 0, edge (layer 1, from neuron 2 to neuron 0)"
    assert L.decode_edge(units, 9 + 4) == "model 1, edge (layer 0, from neuron 1 to neuron 1)"


# ------------------------------------------------------------------ strategies
@given(st.data())
def test_strategies_respect_their_bounds(data):
    arch = data.draw(kst.architectures(min_depth=2, max_depth=3, max_width=4, min_hidden_width=2, grid_sizes=(2, 4),
                                       k=(1, 2), per_layer=True))
    assert 2 <= len(arch["widths"]) - 1 <= 3 and all(n >= 2 for n in arch["widths"][1:-1])
    assert all(2 <= g <= 4 for g in arch["grid_sizes"]) and all(1 <= k <= 2 for k in arch["k"])
    nm = data.draw(st.one_of(st.none(), st.integers(1, 3)))
    w = data.draw(kst.kan_weights(arch, num_models=nm, dtype=torch.float32, mask_prob=0.3))
    assert w.architecture == arch and w.num_models == nm and w.dtype == torch.float32
    assert set(torch.cat([m.reshape(-1) for m in w.mask]).tolist()) <= {0.0, 1.0}
    perms = data.draw(kst.hidden_permutations(w, per_model=True))
    for p, n in zip(perms, w.widths[1:-1]):
        assert torch.equal(p.sort(-1).values, torch.arange(n).expand_as(p))
    x = data.draw(kst.kan_inputs(w, min_samples=4, max_samples=8))
    assert x.shape[-2:][1] == w.widths[0] and (x.dim() == 3) == w.batched
    assert torch.isfinite(w(x)).all()


@settings(max_examples=examples(10))
@given(st.data())
def test_strategy_knobs_grid_range_dtype_and_short_architectures(data):
    from wskan_ext.kan.spline import uniform_grid

    seed = data.draw(st.integers(0, 2**16))
    full = {"widths": [3, 4, 2], "grid_sizes": [5, 5], "k": [2, 2], "base_fun": ["silu", "silu"]}
    short = {"widths": [3, 4, 2], "grid_sizes": 5, "k": 2}  # ints broadcast, base_fun defaults to silu
    assert kst.random_kan(short, seed, num_models=2).equal(kst.random_kan(full, seed, num_models=2))
    with pytest.raises(ValueError, match=r"k: expected 2 entries \(one per layer\), got 3"):
        kst.random_kan({"widths": [3, 4, 2], "grid_sizes": 5, "k": [1, 2, 3]}, seed)
    # grid_range: every neuron's range is exactly (lo, hi); uniform spacing gives pykan's grid bitwise
    uni = kst.random_kan(short, seed, num_models=2, random_grid=False, grid_range=(-1, 1))
    assert all(torch.equal(g, uniform_grid(g.shape[-2], 5, 2, (-1, 1), dtype=g.dtype).expand_as(g)) for g in uni.grid)
    jit = kst.random_kan(short, seed, grid_range=(-0.5, 2.0))
    for g in jit.grid:
        assert torch.all(g[:, 2] == -0.5) and torch.allclose(g[:, 7], torch.full_like(g[:, 7], 2.0))
        assert not torch.allclose(g[:, 1:] - g[:, :-1], (g[:, 1:] - g[:, :-1])[:, :1])  # jittered
    # negative twin: without grid_range the ranges are random per neuron
    assert not torch.all(kst.random_kan(short, seed).grid[0][:, 2] == -0.5)
    # grid_range does not change the other tensors
    ref = kst.random_kan(short, seed)
    assert all(torch.equal(a, b) for a, b in zip(jit.coef + jit.node_bias, ref.coef + ref.node_bias))
    dtypes = st.sampled_from([torch.float64, torch.float32])
    w = data.draw(kst.kan_weights(dtype=dtypes, mask_prob=st.just(1.0), max_depth=2))
    assert w.dtype in (torch.float64, torch.float32) and all(torch.all(m == 0) for m in w.mask)


@settings(max_examples=examples(5))
@given(st.data())
def test_pykan_models_knobs(data):
    pytest.importorskip("kan")
    from wskan_ext.adapters.pykan import from_pykan

    model = data.draw(kst.pykan_models(max_depth=3, max_width=3, grid_sizes=(1, 4), k=(1, 3), per_layer=True,
                                       base_funs=("silu", "identity"), node_affine=True, update_grid=st.booleans()))
    assert not all(torch.equal(s, torch.ones_like(s)) for s in model.node_scale)  # outer affine is random
    w = from_pykan(model)
    assert len(set(w.base_fun)) == 1  # one base function per model
    x = torch.randn(20, w.widths[0], generator=torch.Generator().manual_seed(0), dtype=w.dtype)
    with torch.no_grad():
        assert torch.allclose(w(x), model(x), rtol=1e-12, atol=1e-12)
    # negative twin: by default to_pykan's identity outer affine is kept
    plain = data.draw(kst.pykan_models(max_depth=2, max_width=3))
    assert all(torch.equal(s, torch.ones_like(s)) for s in plain.node_scale)


def test_kan_inputs_cover_inside_outside_and_knots():
    w = kst.random_kan({"widths": [3, 2], "grid_sizes": [4], "k": [3], "base_fun": ["silu"]}, 5)
    lo, hi = w.grid[0][:, 0], w.grid[0][:, -1]

    @given(kst.kan_inputs(w, min_samples=8, max_samples=8))
    @settings(max_examples=examples(10))
    def collect(x):
        seen.append(x)

    seen = []
    collect()
    x = torch.cat(seen)
    assert ((x < lo) | (x > hi)).any() and ((x > lo) & (x < hi)).any()
    assert (x.unsqueeze(-1) == w.grid[0]).any()  # some samples sit exactly on knots

    inside = []

    @given(kst.kan_inputs(w, min_samples=8, max_samples=8, outside=False))
    @settings(max_examples=examples(10))
    def collect_inside(x):
        inside.append(x)

    collect_inside()
    x = torch.cat(inside)
    assert ((x >= lo) & (x <= hi)).all()


@given(kst.kan_batches(min_size=2, max_size=3, min_depth=1, max_depth=3))
def test_kan_batches_are_lists_of_valid_kans(kans):
    assert 2 <= len(kans) <= 3 and all(isinstance(w, KANWeights) for w in kans)
    for w in kans:
        w.validate()


def test_kan_batches_mix_architectures():
    seen = set()

    @given(kst.kan_batches(min_size=3, max_size=3))
    @settings(max_examples=examples(10))
    def collect(kans):
        seen.add(len({tuple(w.widths) for w in kans}))

    collect()
    assert max(seen) > 1


# ------------------------------------------------------------------ reference models pass
@given(kst.kans_and_permutations(**ARCH), st.sampled_from(["graph", "node", "edge"]))
def test_tiny_kan_net_passes(wp, readout):
    w, perms = wp
    model = E.TinyKANNet().double()
    out = {"graph": "invariant", "node": "node", "edge": "edge"}[readout]
    res = assert_equivariant(lambda x: model(x, readout), w, perms, output=out)
    assert res.error <= 1e-12


@settings(max_examples=examples(8))
@given(kst.kans_and_permutations(num_models=st.integers(1, 3), per_model=True, grid_sizes=2, k=2, min_depth=2,
                                 max_depth=3, min_hidden_width=2), st.sampled_from(["node", "edge"]))
def test_batched_weights_with_per_model_permutations(wp, out):
    w, perms = wp
    model = E.TinyKANNet(readout=out).double()
    assert_equivariant(model, w, perms, output=out)
    flat = lambda x: model(x).reshape(-1, 2)  # noqa: E731  (B*rows, C) layout is accepted too
    assert_equivariant(flat, w, perms, output=out)


@settings(max_examples=examples(6))
@given(kst.kans_and_permutations(dtype=torch.float32, **ARCH))
def test_float32_passes_with_stated_tolerance(wp):
    w, perms = wp
    model = E.TinyKANNet(readout="node")
    res = assert_equivariant(model, w, perms, output="node")
    assert res.tolerance == FLOAT_TOLERANCE[torch.float32] == 1e-4 and res.dtype == torch.float32
    if w.widths[0] > 1:
        sens = assert_sensitive(E.TinyKANNet(), w)
        assert sens.tolerance == 1e-5 and sens.error > 1e-5


@settings(max_examples=examples(6))
@given(kst.kans_and_permutations(**ARCH))
def test_deepsets_invariant_and_sensitive_twin(wp):
    w, perms = wp
    assert_invariant(E.DeepSetsOverEdges().double(), w, perms)
    if w.widths[0] > 1:
        assert_sensitive(E.TinyKANNet().double(), w)


# ------------------------------------------------------------------ expected failures
def _kan(widths, seed=0, G=3, k=2):
    d = len(widths) - 1
    return kst.random_kan({"widths": widths, "grid_sizes": [G] * d, "k": [k] * d, "base_fun": ["silu"] * d}, seed)


@pytest.mark.parametrize("readout,out", [("graph", "invariant"), ("node", "node"), ("edge", "edge")])
def test_positional_hidden_bug_is_caught(readout, out):
    bad = E.TinyKANNet(positional_hidden=True, readout=readout).double()
    with pytest.raises(AssertionError) as exc:
        assert_equivariant(bad, _kan([2, 3, 2]), [torch.tensor([1, 2, 0])], output=out)
    msg = str(exc.value)
    assert "violated" in msg and "widths=[2, 3, 2]" in msg and "layer 1: [1, 2, 0]" in msg
    assert "tolerance 1.0e-09" in msg
    if out == "node":
        assert "[hidden]" in msg
    if out == "edge":
        assert "neuron" in msg


def test_failure_is_shrunk_by_hypothesis():
    bad = E.TinyKANNet(positional_hidden=True, readout="node").double()

    @given(kst.kans_and_permutations(min_depth=2, max_depth=3, max_width=4, min_hidden_width=1))
    # fixed on purpose (not examples(n)): this checks what Hypothesis shrinks a known failure to
    @settings(max_examples=30, derandomize=True, database=None)
    def prop(wp):
        assert_equivariant(bad, *wp, output="node")

    with pytest.raises(AssertionError) as exc:
        prop()
    msg = str(exc.value)
    # the minimal counterexample: a single swap of two hidden neurons
    assert "widths=[1, 2, 1]" in msg and "layer 1: [1, 0]" in msg


def test_flat_mlp_is_not_invariant():
    w = _kan([2, 3, 1])
    mlp = E.FlatMLP(E.FlatMLP.flatten(w).shape[-1]).double()
    with pytest.raises(AssertionError, match=r"invariance violated: output='invariant' of FlatMLP"):
        assert_invariant(mlp, w)
    assert equivariance_error(mlp, w, ntrials=3) > 1e-3


@given(kst.kans_and_permutations(min_depth=2, max_depth=3, max_width=4, min_hidden_width=2))
@settings(max_examples=examples(8))
def test_flat_mlp_fails_for_every_nontrivial_permutation(wp):
    w, perms = wp
    mlp = E.FlatMLP(E.FlatMLP.flatten(w).shape[-1]).double()
    moved = any(not torch.equal(p, torch.arange(p.numel())) for p in perms)
    assert (equivariance_error(mlp, w, perms) > 1e-6) == moved


def test_insensitive_models_fail_sensitivity():
    w = _kan([3, 3, 2])
    with pytest.raises(AssertionError, match=r"DeepSetsOverEdges is insensitive to a non-symmetry \(input\)"):
        assert_sensitive(E.DeepSetsOverEdges().double(), w)
    with pytest.raises(AssertionError, match="change       : 0.000e\\+00"):
        assert_sensitive(lambda x: torch.zeros(3, dtype=x.dtype), w)
    assert_sensitive(E.TinyKANNet().double(), w, which="output")
    with pytest.raises(ValueError, match="no KAN has >= 2 input neurons"):
        assert_sensitive(E.TinyKANNet().double(), _kan([1, 3, 2]))


def test_output_structure_and_nan_are_failures():
    w = _kan([2, 3, 1])
    calls = []

    def changes_shape(x):
        calls.append(1)
        return torch.zeros(len(calls))

    assert equivariance_error(changes_shape, w) == math.inf
    assert equivariance_error(lambda x: torch.tensor([float("nan")]), w) == math.inf
    with pytest.raises(ValueError, match="expected 6 rows in node order"):
        equivariance_error(lambda x: torch.zeros(5, 2), w, output="node")


def test_bad_usage_errors():
    w = _kan([2, 3, 1])
    with pytest.raises(ValueError, match="unknown input format 'nope'"):
        equivariance_error(lambda x: x, w, input_format="nope")
    with pytest.raises(ValueError, match="unknown output action 'nope'"):
        equivariance_error(lambda x: x, w, output="nope")
    with pytest.raises(ValueError, match="perms: expected one permutation list per KAN item"):
        equivariance_error(lambda x: 0.0, [w, w], [[torch.arange(3)]])
    with pytest.raises(ValueError, match="hidden layer 1: .* is not a permutation"):
        equivariance_error(lambda x: 0.0, w, [torch.tensor([0, 0, 1])])
    with pytest.raises(ValueError, match="already registered"):
        register_format(InputFormat("weights", lambda w: w))


# ------------------------------------------------------------------ weights output, custom formats
@given(kst.kans_and_permutations(**ARCH))
@settings(max_examples=examples(8))
def test_weights_output_action(wp):
    w, perms = wp
    assert_equivariant(lambda x: x.map(torch.tanh), w, perms, output="weights")
    # negative twin: an output that ignores the permutation
    if any(not torch.equal(p, torch.arange(p.numel())) for p in perms):
        assert equivariance_error(lambda x: w, w, perms, output="weights") > 0


def test_custom_format_and_output_are_pluggable():
    # a user format: the transposed edge-feature tensors of each layer, with its own action
    def convert(w):
        return [f.transpose(-2, -3) for f in w.edge_features()]

    def act(obj, w, perms):
        full = [torch.arange(w.widths[0])] + list(perms) + [torch.arange(w.widths[-1])]
        return [t[full[l + 1]][:, full[l]] for l, t in enumerate(obj)]

    fmt = InputFormat("test-transposed", convert, act)
    out = OutputAction("test-sum", lambda y, ctx: y)
    w = _kan([2, 4, 3, 1])
    f = lambda obj: sum(t.sum() for t in obj)  # noqa: E731
    assert equivariance_error(f, w, input_format=fmt, output=out) < 1e-12
    bad = lambda obj: sum(t[0].sum() * (i + 1) for i, t in enumerate(obj))  # noqa: E731
    perms = [torch.tensor([1, 0, 2, 3]), torch.tensor([2, 0, 1])]
    assert equivariance_error(bad, w, perms, input_format=fmt, output=out) > 1e-6
    assert isinstance(ActionContext([w], [[torch.arange(4), torch.arange(3)]]).units, list)
    assert get_output("invariant").name == "invariant"


def test_permute_inputs_is_not_a_symmetry():
    w = _kan([2, 3, 1], seed=3)
    x = torch.rand(5, 2, dtype=torch.float64)
    assert not torch.allclose(permute_inputs(w, [1, 0])(x), w(x))
    assert torch.allclose(permute_inputs(w, [1, 0])(x.flip(-1)), w(x), atol=1e-12, rtol=0)


def test_equivariance_check_reports_worst_item_of_a_list():
    ws = [_kan([2, 3, 1], 0), _kan([3, 4, 2], 1)]
    bad = E.TinyKANNet(positional_hidden=True, readout="node").double()
    res = equivariance_check(bad, ws, output="node")
    assert not res.passed and res.item in (0, 1) and "model 0, node (layer 1" in res.where
    assert res.architectures[0]["widths"] == ws[res.item].widths
