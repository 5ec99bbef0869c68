import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples
from wskan_ext import KAN
from wskan_ext.kan import _native
from wskan_ext.kan.spline import truncated_power_spline
from wskan_ext.zoo.trainer import RunHParams, _FastForward, diverged_at, init_models, train_batched


def _data(s=40, n=5, c=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(s, n, generator=g, dtype=dtype) * 2 - 1)
    y = torch.randint(c, (s,), generator=g)
    return x, y


def _reference(width, x, y, lr, seed, init_scale, subset, steps):
    """One model trained with torch.optim.Adam and the plain module forward."""
    g = torch.Generator().manual_seed(seed)
    m = KAN(width, noise_scale=0.3 * init_scale, scale_base_sigma=init_scale, generator=g, dtype=x.dtype)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(m(x[subset]), y[subset]).backward()
        opt.step()
    return m.weights(detach=True)


@settings(max_examples=examples(2))
@given(st.integers(2, 5), st.sampled_from(["truncated", "exact", "local"]), st.integers(0, 100))
def test_batched_adam_equals_torch_adam_per_model(h, spline, seed):
    width = [5, h, 3]
    x, y = _data(seed=seed)
    hp = RunHParams(lr=[1e-2, 3e-2, 1e-3], seed=[seed, seed + 1, seed + 2], init_scale=[1.0, 0.5, 2.0],
                    subset_fraction=[1.0, 0.5, 0.8])
    res = train_batched(width, x, y, hp, steps=6, checkpoints=[3, 6], spline=spline)
    assert res.train_loss.shape == (3, 2) and (res.diverged_step == -1).all()
    # exact and local splines: same float64 operations up to summation order; truncated powers differ
    # from Cox--de Boor by ~1e-15 per forward, which Adam's normalised steps amplify to ~1e-8
    atol = 1e-6 if spline == "truncated" else 1e-10
    for b in range(3):
        ref = _reference(width, x, y, float(hp.lr[b]), int(hp.seed[b]), float(hp.init_scale[b]), res.subset[b], 6)
        assert res.checkpoints[1][b].allclose(ref, rtol=1e-8, atol=atol)
    # negative twin: model 0 trained with model 1's learning rate differs
    wrong = _reference(width, x, y, float(hp.lr[1]), int(hp.seed[0]), 1.0, res.subset[0], 6)
    assert not res.checkpoints[1][0].allclose(wrong, rtol=1e-6, atol=1e-8)


def test_fast_forward_matches_module_forward_float64_and_float32():
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-3)):
        x, _ = _data(s=64, n=4, dtype=dtype)
        hp = RunHParams(lr=[0.1] * 3, seed=[1, 2, 3], init_scale=[3.0, 3.0, 3.0])
        model = init_models([4, 5, 6, 2], 5, 3, hp, dtype=dtype)
        with torch.no_grad():  # push hidden activations outside the grid on both sides
            for layer in model.layers:
                layer.scale_base.mul_(4)
        ref = model(x.expand(3, *x.shape))
        hid = model.weights().forward(x, return_hidden=True)[1]
        assert hid[1].max() > 1.6 or hid[1].min() < -1.6  # hidden values leave the grid
        for spline in ("truncated", "exact"):
            out = _FastForward(model, x, spline)(model, x, None)
            assert torch.allclose(out, ref, atol=tol * ref.abs().max().item(), rtol=0)
        # negative twin: dropping the clamp at the last knot breaks agreement
        layer = model.layers[1]
        fwd = _FastForward(model, x, "truncated")
        eff = (layer.mask * layer.scale_sp).unsqueeze(-1) * layer.coef
        cT = torch.einsum("Biob,Bibq->Biqo", eff, fwd.A[1]).contiguous()
        # far beyond t_last = 1.6 every B-spline is 0; unclamped truncated powers cancel badly
        h = torch.linspace(30, 60, hid[1].numel(), dtype=dtype).reshape(hid[1].shape)
        good = truncated_power_spline(torch.minimum(h, layer.grid[..., -1].unsqueeze(-2)), layer.grid, cT, 3, 7)
        bad = truncated_power_spline(h, layer.grid, cT, 3, 7)
        scale = cT.abs().max().item()
        assert good.abs().max() < 1e-4 * scale
        if dtype == torch.float32:
            assert bad.abs().max() > 1e-3 * scale


def test_truncated_spline_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 3, dtype=torch.float64, generator=g, requires_grad=True)
    grid = torch.sort(torch.randn(2, 3, 8, dtype=torch.float64, generator=g), -1).values
    c = torch.randn(2, 3, 8, 4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, c: truncated_power_spline(x, grid, c, 3, 4), (x, c))


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 20), st.integers(1, 4), st.integers(1, 5), st.integers(2, 9),
       st.integers(1, 25), st.integers(0, 999))
@settings(max_examples=examples(25))
def test_truncated_spline_matches_dense_formula_forward_and_gradients(k, B, s, n, m, K, chunk, seed):
    """The chunked kernel (wide-output GEMM layouts, gradients recomputed per chunk) equals
    autograd through the dense formula y = sum_{i,q} (x_i - t_iq)_+^k cT_iqo, float64, for
    any chunk size; the negative twin (k - 1 instead of k in the dense formula) differs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, s, n, dtype=torch.float64, generator=g)
    grid = torch.sort(torch.randn(B, n, K, dtype=torch.float64, generator=g), -1).values
    c = torch.randn(B, n, K, m, dtype=torch.float64, generator=g)
    gy = torch.randn(B, s, m, dtype=torch.float64, generator=g)

    def dense(x, c, p):
        return torch.einsum("bsiq,biqo->bso", (x.unsqueeze(-1) - grid.unsqueeze(1)).clamp(min=0) ** p, c)

    outs = []
    for f in (lambda x, c: truncated_power_spline(x, grid, c, k, chunk), lambda x, c: dense(x, c, k)):
        xr, cr = x.clone().requires_grad_(True), c.clone().requires_grad_(True)
        y = f(xr, cr)
        y.backward(gy)
        outs.append((y.detach(), xr.grad, cr.grad))
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
    # negative twin, on points right of every knot (where every truncated power is active; the
    # random points above can all lie left of the knots, where both formulas give 0)
    xt = grid.amax(-1).unsqueeze(1) + 0.25 + torch.rand(B, 3, n, dtype=torch.float64, generator=g)
    twin = dense(xt, c, k - 1) if k > 1 else dense(xt, c, 2)
    assert not torch.allclose(twin, truncated_power_spline(xt, grid, c, k, chunk), atol=1e-6)


def test_models_are_independent_of_their_batch_mates():
    x, y = _data(s=30)
    hp = RunHParams(lr=[1e-2, 5e-2], seed=[7, 8], subset_fraction=[0.7, 1.0], label_noise=[0.3, 0.0])
    both = train_batched([5, 3, 3], x, y, hp, steps=5, batch_size=8, seed=1)
    alone = train_batched([5, 3, 3], x, y, RunHParams(lr=[1e-2], seed=[7], subset_fraction=[0.7], label_noise=[0.3]),
                          steps=5, batch_size=8, seed=1)
    assert torch.equal(both.subset[0], alone.subset[0]) and torch.equal(both.labels[0], alone.labels[0])
    assert (both.labels[0] != y).any()  # label noise applied
    assert torch.equal(both.labels[1], y)  # and not where the fraction is 0
    # full batch: model 0 is the same whether trained alone or with model 1
    fb = train_batched([5, 3, 3], x, y, hp, steps=5)
    fa = train_batched([5, 3, 3], x, y, RunHParams(lr=[1e-2], seed=[7], subset_fraction=[0.7], label_noise=[0.3]), steps=5)
    # (GEMM blocking depends on B: ulp-level differences, amplified by Adam's normalised steps)
    assert fb.checkpoints[0][0].allclose(fa.checkpoints[0][0], rtol=1e-6, atol=1e-7)
    assert not fb.checkpoints[0][1].allclose(fa.checkpoints[0][0], rtol=1e-3, atol=1e-4)


def test_divergence_is_flagged_and_contained():
    x, y = _data(s=30)
    hp = RunHParams(lr=[1e-2, float("inf")], seed=[1, 2])
    res = train_batched([5, 3, 3], x, y, hp, steps=4, checkpoints=[1, 4])
    flags = diverged_at(res)
    assert flags[1].all() and not flags[0].any()
    assert res.diverged_step[0] == -1 and res.diverged_step[1] >= 1
    ok = train_batched([5, 3, 3], x, y, RunHParams(lr=[1e-2], seed=[1]), steps=4)
    assert res.checkpoints[1][0].allclose(ok.checkpoints[0][0], rtol=1e-6, atol=1e-7)


def test_regression_and_bad_inputs():
    x = torch.linspace(-1, 1, 20, dtype=torch.float64)[:, None]
    y = torch.stack([torch.sin(3 * x), 0.5 * x]).to(torch.float64)  # (2, 20, 1)
    res = train_batched([1, 4, 1], x, y, RunHParams(lr=[3e-2, 3e-2], seed=[0, 1]), steps=30, task="regression",
                        checkpoints=[1, 30])
    assert (res.train_loss[:, 1] < res.train_loss[:, 0]).all()
    with pytest.raises(ValueError, match="regression targets"):
        train_batched([1, 4, 1], x, y[0], RunHParams(lr=[1e-2], seed=[0]), steps=2, task="regression")
    with pytest.raises(ValueError, match="checkpoints"):
        train_batched([1, 4, 1], x, y, RunHParams(lr=[1e-2] * 2, seed=[0, 1]), steps=2, task="regression",
                      checkpoints=[3])
    with pytest.raises(ValueError, match="subset_fraction"):
        RunHParams(lr=[1e-2], seed=[0], subset_fraction=[0.0])
    with pytest.raises(ValueError, match="expected 2 values"):
        RunHParams(lr=[1e-2, 1e-2], seed=[0])


# ---------------------------------------------------------------- divergence (issue 14.2)
def test_initial_and_checkpoint_losses_are_the_subset_objective():
    x, y = _data(s=30)
    hp = RunHParams(lr=[1e-2, 5e-2], seed=[1, 2], subset_fraction=[0.6, 1.0], label_noise=[0.2, 0.0])
    full = train_batched([5, 3, 3], x, y, hp, steps=4, checkpoints=[1, 4])
    mini = train_batched([5, 3, 3], x, y, hp, steps=4, checkpoints=[1, 4], batch_size=7)
    # full batch: the initial objective is step 1's loss; mini-batches compute it on the whole subset
    assert torch.equal(full.initial_loss, full.train_loss[:, 0])
    assert torch.allclose(mini.initial_loss, full.initial_loss, rtol=1e-12, atol=0)
    assert full.checkpoint_loss.shape == (2, 2) and (full.checkpoint_loss[:, 1] < full.initial_loss).all()


def test_loss_far_above_its_initial_value_is_diverged():
    """Issue 14.2: a run whose loss went from 2 to 1e10 was "ok" (only NaN/Inf counted)."""
    x, y = _data(s=30)
    res = train_batched([5, 3, 3], x, y, RunHParams(lr=[1e-2, 3e3], seed=[1, 2]), steps=6, checkpoints=[6])
    assert (res.diverged_step == -1).all()  # finite all along: the old test saw nothing
    assert res.checkpoint_loss[1, 0] > 10 * res.initial_loss[1]
    flags = diverged_at(res, loss_factor=10.0, weight_bound=None)
    assert flags[:, 0].tolist() == [False, True]
    # negative twins: with the test off, or a factor above the observed ratio, nothing is flagged
    assert not diverged_at(res, loss_factor=None, weight_bound=None).any()
    ratio = float(res.checkpoint_loss[1, 0] / res.initial_loss[1])
    assert not diverged_at(res, loss_factor=2 * ratio, weight_bound=None).any()


def test_weights_above_the_bound_are_diverged():
    x, y = _data(s=30)
    res = train_batched([5, 3, 3], x, y, RunHParams(lr=[1e-2, 1e-2], seed=[1, 2]), steps=3, checkpoints=[3])
    assert not diverged_at(res).any()  # defaults: 10x loss, |w| <= 1e4
    res.checkpoints[0].coef[1][1, 0, 0, 0] = 2e4  # one trained weight of model 1 past the bound
    assert diverged_at(res, loss_factor=None)[:, 0].tolist() == [False, True]
    assert not diverged_at(res, loss_factor=None, weight_bound=None).any()
    res.checkpoints[0].grid[0][0, 0, 0] = -5e4  # the fixed grid is not a trained weight
    assert diverged_at(res, loss_factor=None)[:, 0].tolist() == [False, True]


@pytest.mark.parametrize("spline", ["truncated", "exact", "local"])
def test_nan_inputs_propagate_through_the_kernel_and_flag_the_run(spline):
    """A kernel fed NaN must return NaN (B-splines are zero outside the grid, and a NaN
    compares as outside: a kernel could silently map it to 0); the trainer then flags the run."""
    x, y = _data(s=20, n=4)
    hp = RunHParams(lr=[1e-2, 1e-2], seed=[1, 2])
    model = init_models([4, 5, 3], 5, 3, hp, dtype=x.dtype)
    with torch.no_grad():  # only the spline part of every layer may carry the NaN
        for layer in model.layers:
            layer.scale_base.zero_()
    bad = x.clone()
    bad[3, 1] = float("nan")
    out = _FastForward(model, bad, spline)(model, bad, None)
    assert torch.isnan(out[:, 3]).all() and torch.isfinite(out[:, torch.arange(20) != 3]).all()
    res = train_batched([4, 5, 3], bad, y, hp, steps=3, checkpoints=[1, 3], spline=spline)
    assert (res.diverged_step == 1).all() and diverged_at(res).all()
    assert not diverged_at(train_batched([4, 5, 3], x, y, hp, steps=3, checkpoints=[1, 3], spline=spline)).any()


def test_sparsity_penalty_training_equals_torch_adam_on_loss_plus_lamb_penalty():
    """``hp.lamb``: each model minimises its loss + lamb * pykan's penalty on its own subset
    (= torch.optim.Adam on that objective), models with lamb 0 train exactly as before;
    twin: the penalised model differs from the same seed without it."""
    from wskan_ext.zoo.trainer import sparsity_penalty

    width, x, y = [5, 4, 3], *_data(seed=3)
    hp = RunHParams(lr=[1e-2, 1e-2, 2e-2], seed=[5, 5, 6], subset_fraction=[0.8, 0.8, 1.0], lamb=[0.05, 0.0, 0.01])
    res = train_batched(width, x, y, hp, steps=5, spline="exact")
    plain = train_batched(width, x, y, RunHParams(lr=[1e-2], seed=[5], subset_fraction=[0.8]), steps=5, spline="exact")
    for b in range(3):
        g = torch.Generator().manual_seed(int(hp.seed[b]))
        m = KAN(width, noise_scale=0.3, scale_base_sigma=1.0, generator=g, dtype=x.dtype)
        opt = torch.optim.Adam(m.parameters(), lr=float(hp.lr[b]))
        sub = res.subset[b]
        for _ in range(5):
            opt.zero_grad()
            obj = F.cross_entropy(m(x[sub]), y[sub])
            if hp.lamb[b] > 0:
                obj = obj + float(hp.lamb[b]) * sparsity_penalty(m.weights(), x[sub])
            obj.backward()
            opt.step()
        assert res.checkpoints[0][b].allclose(m.weights(detach=True), rtol=1e-8, atol=1e-10), b
    assert res.checkpoints[0][1].allclose(plain.checkpoints[0][0], rtol=1e-8, atol=1e-10)
    assert not res.checkpoints[0][0].allclose(plain.checkpoints[0][0], rtol=1e-4, atol=1e-6)
    slow = train_batched(width, x, y, hp, steps=5, fast=False)  # module forward: the penalty's own forward
    assert slow.checkpoints[0].allclose(res.checkpoints[0], rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="lamb must be finite and >= 0"):
        RunHParams(lr=[1e-2], seed=[0], lamb=[-1.0])


@pytest.mark.parametrize("spline", ["truncated", "local", "exact"])
def test_fast_forward_hidden_inputs_match_kanweights_forward(spline):
    """The layer inputs the trainer's forward hands to the sparsity penalty are those of
    ``KANWeights.forward(return_hidden=True)`` (float64), with and without a minibatch."""
    width, (x, _) = [5, 4, 3, 2], _data(s=30)
    hp = RunHParams(lr=[1e-2] * 3, seed=[1, 2, 3])
    model = init_models(width, 5, 3, hp, dtype=torch.float64)
    fwd = _FastForward(model, x, spline)
    w = model.weights(detach=True)
    idx = torch.stack([torch.randperm(30, generator=torch.Generator().manual_seed(b))[:12] for b in range(3)])
    for ix, xin in ((None, x.expand(3, *x.shape)), (idx, x[idx])):
        out, acts = fwd(model, x, ix, hidden=True)
        ref_out, ref_acts = w.forward(xin, return_hidden=True)
        assert len(acts) == len(ref_acts) - 1 == 3  # every layer's input (the reference also ends with the output)
        for a, r in zip(acts, ref_acts):
            assert torch.allclose(a, r, rtol=1e-10, atol=1e-10)
        assert torch.allclose(out, ref_out, rtol=1e-10, atol=1e-10)
        assert torch.equal(fwd(model, x, ix), out)  # hidden=False: the same outputs


def test_auto_picks_the_compiled_kernels_and_falls_back(monkeypatch):
    """``spline="auto"`` resolves to the compiled local-support kernels in both layers where they
    apply and to the dense ones otherwise; both train the same models (float64)."""
    from wskan_ext.kan import _native

    x, y = _data(s=40, n=4)
    hp = RunHParams(lr=[1e-2, 3e-2], seed=[3, 4])
    auto = train_batched([4, 5, 3], x, y, hp, steps=4)
    if _native.available():
        assert (auto.extra["kernel"], auto.extra["first_layer"]) == ("local", "native")
    monkeypatch.setattr(_native, "supports", lambda *a, **kw: False)
    dense = train_batched([4, 5, 3], x, y, hp, steps=4)
    assert (dense.extra["kernel"], dense.extra["first_layer"]) == ("truncated", "dense")
    assert torch.allclose(auto.train_loss, dense.train_loss, rtol=1e-9, atol=0)
    # truncated powers differ from the local kernel by ~1e-15 per forward; Adam's normalised
    # steps amplify that (as in the Adam test above)
    assert auto.checkpoints[-1].allclose(dense.checkpoints[-1], rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not _native.available(), reason="no C++ compiler: the compiled kernels are absent")
def test_quantised_data_takes_the_lookup_first_layer(monkeypatch):
    """Data with few distinct values per input (pixel levels) takes the lookup form of the shared
    first layer (``first_layer="lookup"``) and trains the same models as the per-sample form and
    as the dense kernels (float64)."""
    x, y = _data(s=60, n=4)
    x = (x * 4).round() / 4  # 9 levels per input
    hp = RunHParams(lr=[1e-2, 3e-2], seed=[3, 4])
    lookup = train_batched([4, 5, 3], x, y, hp, steps=4)
    assert lookup.extra["first_layer"] == "lookup"
    real = _native.SharedBasis.from_local
    monkeypatch.setattr(_native.SharedBasis, "from_local",
                        classmethod(lambda cls, *a, **kw: real(*a, **{**kw, "lookup": False})))
    per_sample = train_batched([4, 5, 3], x, y, hp, steps=4)
    assert per_sample.extra["first_layer"] == "native"
    monkeypatch.setattr(_native, "supports", lambda *a, **kw: False)
    dense = train_batched([4, 5, 3], x, y, hp, steps=4)
    for other in (per_sample, dense):
        assert torch.allclose(lookup.train_loss, other.train_loss, rtol=1e-9, atol=0)
        assert lookup.checkpoints[-1].allclose(other.checkpoints[-1], rtol=1e-6, atol=1e-6)
