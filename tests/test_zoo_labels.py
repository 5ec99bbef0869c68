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
