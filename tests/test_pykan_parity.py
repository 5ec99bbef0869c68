"""pykan 0.2.8 interop: exact tensors, function parity inside and far outside the grid."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples

from wskan_ext import KAN, as_kan_weights
from wskan_ext.adapters.pykan import from_pykan, to_pykan
from wskan_ext.equivariance_tests import strategies as kst

kan_mod = pytest.importorskip("kan")


def pykan_models(dtype):
    """Real pykan models: depth 1..4, widths 1..8, per-layer G 1..10 and k 1..3, base function
    silu/identity/zero, edges masked (30 %) or not, random subnode *and* node affines, and
    grids moved to sample quantiles (non-uniform) or left uniform."""
    return kst.pykan_models(dtype=dtype, max_depth=4, max_width=8, grid_sizes=(1, 10), k=(1, 3), per_layer=True,
                            base_funs=("silu", "identity", "zero"), mask_prob=st.sampled_from([0.0, 0.3]),
                            node_affine=True, update_grid=st.booleans())


def _inputs(n0, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    inside = 2 * torch.rand(50, n0, generator=g, dtype=dtype) - 1
    far = 100 * torch.randn(50, n0, generator=g, dtype=dtype)
    return torch.cat([inside, far, torch.full((1, n0), 1e3, dtype=dtype), torch.full((1, n0), -1e3, dtype=dtype)])


def _normwise(a, b, ref):
    """max |a - b| per output column, relative to that column's max |ref| (floored at 1)."""
    scale = ref.abs().amax(dim=0).clamp_min(1.0)
    return ((a.double() - b.double()).abs() / scale).max().item()


@given(pykan_models(torch.float64))
def test_parity_float64(model):
    """float64: <= 1e-12, norm-wise relative (per output column, max |y| floored at 1).

    Element-wise relative error is not a fair measure: where an output cancels to ~0 amid
    terms of size ~1e3 (inputs far outside the grid), any summation order leaves ~1e-13
    absolute error, which is enormous relative to the tiny output."""
    w = from_pykan(model)
    x = _inputs(w.widths[0], torch.float64)
    with torch.no_grad():
        ref = model(x)
        ours = w(x)
    err = _normwise(ours, ref, ref)
    assert err <= 1e-12, err


@settings(max_examples=examples(8))
@given(pykan_models(torch.float32))
def test_parity_float32(model):
    """float32: errors are norm-wise relative (per output column, max |y| floored at 1).

    Two float32 evaluations of the same function differ by summation order (we fold
    ``mask * scale_sp`` into the coefficients before one contraction; pykan scales after),
    and pykan's own float32 forward is up to ~7e-7 away from its float64 forward on these
    random models (2e-6 on rare Hypothesis extremes). So the bound is on accuracy: ours vs
    the float64 truth <= 1e-6 or at most 1.5x pykan's own float32 error, whichever is
    larger, and ours vs pykan <= 1e-6 or 3x pykan's own error.
    """
    w = from_pykan(model)
    assert w.dtype == torch.float32
    x = _inputs(w.widths[0], torch.float32)
    with torch.no_grad():
        ref = model(x)
        ours = w(x)
        truth = model.type(torch.float64)(x.double())
    err_vs_pykan = _normwise(ours, ref, truth)
    err_ours = _normwise(ours, truth, truth)
    err_pykan = _normwise(ref, truth, truth)
    assert err_vs_pykan <= max(1e-6, 3 * err_pykan), (err_vs_pykan, err_pykan)
    assert err_ours <= max(1e-6, 1.5 * err_pykan), (err_ours, err_pykan)


@given(pykan_models(torch.float64))
def test_parity_negative_twin_detects_wrong_affine_fold(model):
    """The parity check can fail: ignoring pykan's subnode affine changes the function."""
    w = from_pykan(model)
    with torch.no_grad():
        for l in range(len(model.act_fun)):
            model.subnode_bias[l].add_(1.0)
    x = _inputs(w.widths[0], torch.float64)
    with torch.no_grad():
        assert (w(x) - model(x)).abs().max() > 1e-3


@settings(max_examples=examples(8))
@given(pykan_models(torch.float64))
def test_round_trip_bitwise(model):
    w = from_pykan(model)
    model2 = to_pykan(w)
    w2 = from_pykan(model2)
    assert w2.equal(w)
    # every spline tensor is copied bit for bit
    for l, (a, b) in enumerate(zip(model.act_fun, model2.act_fun)):
        for name in ("grid", "coef", "scale_base", "scale_sp", "mask"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (l, name)
    x = _inputs(w.widths[0], torch.float64)
    with torch.no_grad():
        assert torch.allclose(model2(x), model(x), rtol=1e-12, atol=1e-12)


def test_converters_do_not_modify_or_alias_the_model():
    model = kan_mod.KAN(width=[2, 3, 1], grid=3, k=2, auto_save=False, seed=0)
    before = copy.deepcopy(model.state_dict())
    w = from_pykan(model)
    w.coef[0].add_(1.0)
    for key, val in model.state_dict().items():
        assert torch.equal(val, before[key]), key


def test_to_pykan_keeps_global_rng_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = KAN([2, 3, 1], grid=3, k=2, generator=torch.Generator().manual_seed(0)).weights(detach=True)
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    to_pykan(w)
    assert torch.equal(torch.rand(3), expected)
    assert list(tmp_path.iterdir()) == []


def test_registry_detects_pykan():
    model = kan_mod.KAN(width=[2, 2], grid=3, k=3, auto_save=False, seed=0)
    assert as_kan_weights(model).equal(from_pykan(model))


def test_multiplication_nodes_rejected():
    model = kan_mod.KAN(width=[2, [2, 1], 1], grid=3, k=3, auto_save=False, seed=0)
    with pytest.raises(ValueError, match=r"layer 1: pykan multiplication nodes .*width\[1\] = \[2, 1\]"):
        from_pykan(model)


def test_active_symbolic_branch_rejected():
    model = kan_mod.KAN(width=[2, 3, 1], grid=3, k=3, auto_save=False, seed=0)
    model.symbolic_fun[1].mask.data[0, 2] = 1.0
    with pytest.raises(ValueError, match=r"layer 1: symbolic_fun.mask is non-zero .*out=0, in=2"):
        from_pykan(model)
    # a disabled symbolic front does not contribute, so it is accepted
    model.symbolic_enabled = False
    from_pykan(model)


def test_unknown_base_function_rejected():
    model = kan_mod.KAN(width=[2, 1], grid=3, k=3, auto_save=False, seed=0)
    model.base_fun_name = "tanh"
    with pytest.raises(ValueError, match=r"unknown pykan base function 'tanh'"):
        from_pykan(model)


def test_to_pykan_rejects_base_functions_pykan_lacks():
    w = KAN([2, 2], base_fun="tanh").weights(detach=True)
    with pytest.raises(ValueError, match=r"pykan supports one base function .*tanh"):
        to_pykan(w)


def test_from_pykan_rejects_non_models():
    with pytest.raises(TypeError, match="expects a pykan KAN/MultKAN, got dict"):
        from_pykan({})
