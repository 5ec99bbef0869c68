"""``AttributionHead``: the attribution recursion is pykan's (float64, exact inputs),
equivariant, refuses bad shapes, and trains end to end around every edge-level model."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples
from wskan_ext.equivariance_tests.strategies import kan_weights
from wskan_ext.kan import random_hidden_permutations
from wskan_ext.nn.attribution import AttributionHead, attribution_log_scores
from wskan_ext.nn.baselines import permute_edge_labels
from wskan_ext.zoo.labels import edge_attribution


def _true_inputs(w, x):
    """The exact per-edge ``log A`` and the correction that makes the head's sigma exact."""
    _, acts = w.forward(x, return_hidden=True)
    log_a, corr = [], []
    for l in range(w.depth):
        phi = w.edge_functions(l, acts[l])  # (B, s, n, m)
        a = phi.std(dim=-3).log()  # (B, n, m)
        log_sigma = phi.sum(-2).std(dim=-2).log()  # (B, m)
        c = log_sigma - 0.5 * torch.logsumexp(2 * a, -2)  # the same for every source neuron
        log_a.append(a.flatten(1))
        corr.append(c.unsqueeze(-2).expand_as(a).flatten(1))
    return torch.cat(log_a, 1), torch.cat(corr, 1)


ARCH = dict(min_depth=1, max_depth=3, min_width=1, max_width=5, grid_sizes=(2, 6), k=(1, 3))


@settings(max_examples=examples(12), deadline=None)
@given(w=kan_weights(num_models=3, **ARCH), seed=st.integers(0, 2 ** 16))
def test_recursion_with_exact_inputs_is_pykans_attribution(w, seed):
    """With the true edge stds and the exact sigma correction, the head's scores are
    ``edge_attribution``'s (float64, 1e-10); negative twin: the uncorrected (independent-sum)
    sigma gives different scores wherever a node has two or more incoming edges."""
    x = torch.rand(40, w.widths[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1
    log_a, corr = _true_inputs(w, x)
    want = torch.cat([e.flatten(1) for e in edge_attribution(w, x)], 1)
    got = attribution_log_scores(log_a, corr, w.widths).exp()
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-14)
    if any(n >= 2 for n in w.widths[:-1]):
        uncorrected = attribution_log_scores(log_a, torch.zeros_like(corr), w.widths).exp()
        assert not torch.allclose(uncorrected, want, rtol=1e-6)


@settings(max_examples=examples(12), deadline=None)
@given(w=kan_weights(num_models=2, min_hidden_width=2, **ARCH), seed=st.integers(0, 2 ** 16))
def test_recursion_is_equivariant_to_hidden_permutations(w, seed):
    """Permuting hidden neurons permutes the per-edge inputs and the scores alike; negative
    twin: permuting the *inputs'* edge order the same way but not the output's differs."""
    g = torch.Generator().manual_seed(seed)
    log_a = torch.randn(2, sum(a * b for a, b in zip(w.widths[:-1], w.widths[1:])), generator=g, dtype=torch.float64)
    corr = 0.3 * torch.randn(log_a.shape, generator=g, dtype=torch.float64)
    perms = random_hidden_permutations(w, g)
    out = attribution_log_scores(log_a, corr, w.widths)
    moved = attribution_log_scores(permute_edge_labels(log_a, w.widths, perms),
                                   permute_edge_labels(corr, w.widths, perms), w.widths)
    assert torch.allclose(moved, permute_edge_labels(out, w.widths, perms), rtol=1e-12, atol=1e-12)
    if w.depth >= 2 and not all(torch.equal(p, torch.arange(len(p))) for p in perms):
        assert not torch.allclose(moved, out)


def test_head_logits_threshold_and_bad_input():
    """Logit 0 exactly at pykan's threshold; positive above, negative below; a wrong
    channel count or edge count is a one-line ValueError."""
    widths = [3, 2]
    net = torch.nn.Identity()
    head = AttributionHead(net, widths, threshold=0.03)
    # one layer: e_ij = A_ij * (1/2) / (sigma_j + 1e-4); choose A so that e is 0.03 on edge 0
    sigma = 1.0
    log_a = torch.full((1, 6), math.log(0.01), dtype=torch.float64)
    log_a[0, 0] = math.log(0.03 * 2 * (sigma + 1e-4))
    corr = (math.log(sigma) - 0.5 * torch.logsumexp(2 * log_a.view(1, 3, 2), 1)).unsqueeze(1).expand(1, 3, 2)
    logits = head(torch.stack([log_a, corr.reshape(1, 6)], -1)).detach()
    assert logits.shape == (1, 6, 1)
    assert abs(float(logits[0, 0, 0])) < 1e-5 and (logits[0, 1:, 0] < 0).all()
    with pytest.raises(ValueError, match=r"must return \(B, E, 2\), got \(1, 6, 3\)"):
        head(torch.zeros(1, 6, 3))
    with pytest.raises(ValueError, match=r"log_a must have shape \(B, 6\) for widths \[3, 2\], got \(1, 5\)"):
        head(torch.zeros(1, 5, 2))
    with pytest.raises(ValueError, match="threshold and eps must be > 0"):
        AttributionHead(net, widths, threshold=0.0)


def test_residual_channel_adds_to_the_logit():
    """``residual=True``: the third channel is added to the structured logit (a zero third
    channel gives the plain head's logits); two channels are then refused."""
    g = torch.Generator().manual_seed(0)
    out = torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
    plain = AttributionHead(torch.nn.Identity(), [3, 2])
    res = AttributionHead(torch.nn.Identity(), [3, 2], residual=True)
    with torch.no_grad():
        base = plain(out[..., :2])
        assert torch.allclose(res(torch.cat([out[..., :2], torch.zeros_like(out[..., :1])], -1)), base)
        assert torch.allclose(res(out), base + out[..., 2:].float())
    with pytest.raises(ValueError, match=r"must return \(B, E, 3\), got \(2, 6, 2\)"):
        res(out[..., :2])
