"""Weight matching of hidden neurons (wskan_ext.align)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples

from wskan_ext import KANWeights, permute_hidden
from wskan_ext.align import align_to, edge_values
from wskan_ext.equivariance_tests import strategies as kst
from wskan_ext.kan.spline import uniform_grid
from wskan_ext.kan import random_hidden_permutations
from wskan_ext.kan.weights import layer_forward

F64 = torch.float64
UNIFORM = dict(random_grid=False, grid_range=(-1, 1))  # pykan's default uniform grids

# (architecture, seed): depth 1..4, widths 1..6, per-layer G 1..5 and k 1..3
ARCHS = st.tuples(kst.architectures(max_depth=4, max_width=6, grid_sizes=(1, 5), k=(1, 3), per_layer=True),
                  st.integers(0, 2**16))


def kan(arch, seed, num_models=None, **kw):
    """A random KAN (15 % of the edges masked, jittered per-neuron grids unless ``UNIFORM``)."""
    return kst.random_kan(arch, seed, num_models=num_models, mask_prob=0.15, **kw)


def _stack_copies(w: KANWeights, B: int) -> KANWeights:
    return KANWeights.stack([w] * B)


@settings(max_examples=examples(12))
@given(ARCHS)
def test_align_recovers_identity_on_permuted_copies(case):
    arch, seed = case
    ref = kan(arch, seed)
    copies = _stack_copies(ref, 3)
    perms = random_hidden_permutations(copies, torch.Generator().manual_seed(seed + 1), per_model=True)
    shuffled = permute_hidden(copies, perms)
    aligned, found = align_to(shuffled, ref)
    for b in range(3):
        assert aligned[b].equal(ref)
    # the found permutations invert the applied ones
    for p, q in zip(perms, found):
        assert torch.equal(torch.gather(p, 1, q), torch.arange(p.shape[1]).expand_as(p))
    # aligned == permute_hidden(input, found), and the functions are unchanged
    assert permute_hidden(shuffled, found).equal(aligned)


@settings(max_examples=examples(8))
@given(ARCHS)
def test_unrelated_kans_do_not_align_to_equality(case):
    # negative twin: alignment cannot make an unrelated KAN equal to the reference,
    # but it keeps its function
    arch, seed = case
    ref = kan(arch, seed)
    other = kan(arch, seed + 7)
    aligned, _ = align_to(other, ref)
    assert not aligned.equal(ref)
    x = 2 * torch.rand(20, arch["widths"][0], generator=torch.Generator().manual_seed(seed), dtype=F64) - 1
    assert torch.allclose(aligned(x), other(x), rtol=1e-12, atol=1e-12)


def test_align_single_kan_and_noisy_copies():
    ref = kan({"widths": [3, 6, 5, 2], "grid_sizes": [4, 3, 5], "k": [3, 2, 1]}, 3)
    gen = torch.Generator().manual_seed(0)
    p = random_hidden_permutations(ref, gen)
    noisy = permute_hidden(ref, p).map(lambda t: t + 1e-3 * torch.randn(t.shape, generator=gen, dtype=F64))
    noisy = KANWeights(**{f: getattr(noisy, f) for f in ("grid", "coef", "scale_base", "scale_sp", "mask",
                                                           "node_scale", "node_bias")}, k=ref.k)
    aligned, found = align_to(noisy, ref)
    assert not aligned.batched and found[0].shape == (6,)
    for pi, qi in zip(p, found):
        assert torch.equal(pi[qi], torch.arange(len(pi)))
    assert aligned.allclose(ref, rtol=0, atol=1e-2)
    # the noisy, unaligned copy is far from the reference
    assert not noisy.allclose(ref, rtol=0, atol=1e-2)


def _refine_k1(w: KANWeights) -> KANWeights:
    """Exact degree-1 knot insertion at every interval midpoint (uniform grids): the
    refined KAN has grid size 2G and the same edge functions on the grid range."""
    grid, coef = [], []
    for l in range(w.depth):
        assert w.k[l] == 1
        G, c = w.grid_sizes[l], w.coef[l]
        lo, hi = w.grid[l][..., 0, 1].item(), w.grid[l][..., 0, -2].item()
        grid.append(uniform_grid(w.widths[l], 2 * G, 1, (lo, hi), dtype=c.dtype).expand_as(
            torch.empty(*c.shape[:-3], w.widths[l], 2 * G + 3)).contiguous())
        mids = 0.5 * (c[..., :-1] + c[..., 1:])
        out = torch.stack([c[..., :-1], mids], dim=-1).flatten(-2)
        coef.append(torch.cat([out, c[..., -1:]], dim=-1))
    return KANWeights(grid=grid, coef=coef, scale_base=w.scale_base, scale_sp=w.scale_sp, k=w.k, mask=w.mask,
                      node_scale=w.node_scale, node_bias=w.node_bias)


def test_align_across_grids():
    ref = kan({"widths": [2, 5, 4, 1], "grid_sizes": [3, 4, 2], "k": 1}, 11, **UNIFORM)
    fine = _refine_k1(ref)
    assert fine.grid_sizes == [6, 8, 4]
    x = 0.99 * (2 * torch.rand(50, 2, generator=torch.Generator().manual_seed(0), dtype=F64) - 1)
    h_ref = layer_forward(ref, 0, x)
    assert torch.allclose(layer_forward(fine, 0, x), h_ref, atol=1e-12)  # same layer function inside the grid
    p = random_hidden_permutations(fine, torch.Generator().manual_seed(5))
    aligned, found = align_to(permute_hidden(fine, p), ref)
    for pi, qi in zip(p, found):
        assert torch.equal(pi[qi], torch.arange(len(pi)))
    assert aligned.equal(fine)


def test_edge_values_sum_to_layer_output():
    w = kan({"widths": [3, 4], "grid_sizes": 5, "k": 2}, 0, num_models=2, **UNIFORM)
    pts = torch.linspace(-0.9, 0.9, 7, dtype=F64)
    V = edge_values(w, 0, pts)  # (B, n, m, P)
    x = pts[:, None].expand(7, 3)
    y = layer_forward(w, 0, x)  # (B, P, m)
    pre = V.sum(dim=1).transpose(-1, -2)
    assert torch.allclose(w.node_scale[0][:, None] * pre + w.node_bias[0][:, None], y, atol=1e-12)


def test_align_errors():
    a = kan({"widths": [2, 3, 1], "grid_sizes": 3, "k": 1}, 0)
    b = kan({"widths": [2, 4, 1], "grid_sizes": 3, "k": 1}, 0)
    with pytest.raises(ValueError, match="widths differ"):
        align_to(a, b)
    with pytest.raises(ValueError, match="single KAN"):
        align_to(a, a.unsqueeze())
    with pytest.raises(TypeError):
        align_to(a, "ref")


def test_align_on_device(device):
    ref = kan({"widths": [3, 5, 4, 2], "grid_sizes": [4, 3, 5], "k": [3, 2, 1]}, 1).to(device)
    copies = KANWeights.stack([ref] * 2)
    perms = [p.to(device) for p in random_hidden_permutations(copies, torch.Generator().manual_seed(0), per_model=True)]
    aligned, found = align_to(permute_hidden(copies, perms), ref)
    assert aligned.device == ref.device and found[0].device == ref.device
    assert aligned[0].equal(ref) and aligned[1].equal(ref)
