import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples

from wskan_ext.adapters.pykan import from_pykan, to_pykan
from wskan_ext.zoo.labels import PYKAN_EDGE_THRESHOLD, edge_attribution, evaluate, pruning_masks, psnr


def _pykan_model(width, seed, noise):
    from kan import KAN as PyKAN
    from wskan_ext.adapters.pykan import preserve_global_rng

    with preserve_global_rng():
        return PyKAN(width=list(width), grid=5, k=3, noise_scale=noise, seed=seed, auto_save=False)


@settings(max_examples=examples(6))
@given(st.lists(st.integers(1, 4), min_size=2, max_size=4), st.integers(0, 1000), st.sampled_from([0.3, 1.0, 3.0]))
def test_pruning_matches_pykan_attribute_and_prune_edge(width, seed, noise):
    m = _pykan_model(width, seed, noise)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(64, width[0], generator=g) * 2 - 1
    with torch.no_grad():  # a random edge mask, as after an earlier pruning round
        m.act_fun[0].mask.data = (torch.rand(m.act_fun[0].mask.shape, generator=g) > 0.2).float()
    w = from_pykan(m)
    m.get_act(x)
    m.attribute(plot=False)
    ours = edge_attribution(w, x)
    for l, (a, b) in enumerate(zip(ours, m.edge_scores)):
        assert torch.allclose(a, b.T, rtol=1e-4, atol=1e-6), l
    masks = pruning_masks(w, x)
    m.prune_edge(PYKAN_EDGE_THRESHOLD, log_history=False)
    for l, (mk, s) in enumerate(zip(masks, ours)):
        clear = (s - PYKAN_EDGE_THRESHOLD).abs() > 1e-5  # decisions away from the threshold
        assert torch.equal(mk[clear], m.act_fun[l].mask.data[clear]), l
    # negative twin: pykan's scores are (out, in); comparing untransposed fails on non-square layers
    if width[0] != width[1] and ours[0].numel() > 1:
        assert not (ours[0].shape == m.edge_scores[0].shape and torch.allclose(ours[0], m.edge_scores[0]))


def test_batched_attribution_equals_per_model():
    ms = [_pykan_model([3, 4, 2], s, 1.0) for s in range(3)]
    from wskan_ext import KANWeights

    w = KANWeights.stack([from_pykan(m) for m in ms])
    x = torch.rand(50, 3) * 2 - 1
    batched = edge_attribution(w, x)
    for b in range(3):
        single = edge_attribution(w[b], x)
        for a, s in zip(batched, single):
            assert torch.allclose(a[b], s, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(batched[0][0], batched[0][1])


def test_evaluate_and_psnr():
    m = _pykan_model([4, 3, 3], 0, 1.0)
    w = from_pykan(m).unsqueeze()
    x = torch.rand(40, 4) * 2 - 1
    y = torch.randint(3, (40,))
    out = evaluate(w, x, y)
    with torch.no_grad():
        logits = m(x)
    assert out["acc"][0] == (logits.argmax(-1) == y).float().mean()
    assert torch.allclose(out["loss"][0], torch.nn.functional.cross_entropy(logits, y), atol=1e-6)
    r = evaluate(w, x, logits[None] + 0.1, task="regression")
    assert torch.allclose(r["mse"], torch.tensor([0.01]), atol=1e-6)
    assert torch.allclose(r["psnr"], torch.tensor([20.0]), atol=1e-3)
    assert torch.allclose(psnr(torch.tensor([1e-2, 1.0])), torch.tensor([20.0, 0.0]))
    assert to_pykan(w[0]) is not None


@settings(max_examples=examples(6))
@given(st.lists(st.integers(1, 4), min_size=2, max_size=4), st.integers(0, 1000), st.sampled_from([0.3, 1.0, 3.0]),
       st.sampled_from([(1.0, 2.0, 0.0, 0.0), (0.5, 0.0, 1.0, 0.3), (0.0, 1.0, 0.0, 2.0)]))
def test_sparsity_penalty_matches_pykan_get_reg(width, seed, noise, lambs):
    """``sparsity_penalty`` is pykan's ``get_reg('edge_forward_spline_n', ...)`` (value and
    gradient w.r.t. the coefficients), float64; a 0/1 sample weight equals dropping the
    samples (twin: it does change the value)."""
    from wskan_ext.zoo.trainer import sparsity_penalty

    torch.set_default_dtype(torch.float64)
    try:
        m = _pykan_model(width, seed, noise)
    finally:
        torch.set_default_dtype(torch.float32)
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(48, width[0], generator=g, dtype=torch.float64) * 2 - 1)
    m(x)  # save_act: pykan records the edge scales of this batch
    ref = m.get_reg("edge_forward_spline_n", *lambs)
    ref.backward()
    w = from_pykan(m).map(lambda t: t.detach().clone().requires_grad_(t.is_floating_point()))
    ours = sparsity_penalty(w, x, None, *lambs)
    assert torch.allclose(ours, ref.detach(), rtol=1e-10, atol=1e-12)
    ours.backward()
    for l in range(len(width) - 1):
        assert torch.allclose(w.coef[l].grad, m.act_fun[l].coef.grad, rtol=1e-8, atol=1e-10), l
    # sample weights: a 0/1 weight equals dropping those samples
    keep = torch.arange(48) % 3 != 0
    wd = w.map(lambda t: t.detach())
    sub = sparsity_penalty(wd, x[keep], None, *lambs)
    weighted = sparsity_penalty(wd.unsqueeze(), x.unsqueeze(0), keep[None].double(), *lambs)[0]
    assert torch.allclose(weighted, sub, rtol=1e-10)
    if lambs[0] or lambs[1]:
        assert not torch.allclose(weighted, ours.detach(), rtol=1e-6)


def test_sparsity_penalty_is_permutation_invariant_and_zero_std_safe():
    """Hidden-neuron permutations leave the penalty unchanged (twin: permuting the *inputs*
    of x alone changes it); a constant input column gives finite gradients (std 0)."""
    from wskan_ext.kan.permute import permute_hidden, random_hidden_permutations
    from wskan_ext.zoo.trainer import sparsity_penalty

    w = from_pykan(_pykan_model([3, 5, 4, 2], 3, 1.0)).map(lambda t: t.double())
    x = torch.rand(40, 3, dtype=torch.float64) * 2 - 1
    perms = random_hidden_permutations(w, generator=torch.Generator().manual_seed(0))
    a, b = sparsity_penalty(w, x), sparsity_penalty(permute_hidden(w, perms), x)
    assert torch.allclose(a, b, rtol=1e-12)
    assert not torch.allclose(a, sparsity_penalty(w, x[:, [1, 2, 0]]), rtol=1e-6)
    x[:, 0] = 0.25  # an always-constant pixel
    wg = w.map(lambda t: t.clone().requires_grad_(t.is_floating_point()))
    sparsity_penalty(wg, x).backward()
    assert all(torch.isfinite(c.grad).all() for c in wg.coef)
