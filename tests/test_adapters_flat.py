"""Stable flattening of KANs (wskan_ext.adapters.flat)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wskan_ext import KAN, KANWeights, permute_hidden
from wskan_ext.adapters.flat import FlatSpec, from_flat, to_flat
from wskan_ext.align import align_to
from wskan_ext.kan.weights import FIELDS, random_hidden_permutations

F64 = torch.float64


def random_kans(widths, grids, ks, B, seed, dtype=F64, uniform=False):
    """Generic random KANs: random coefficients, scales, masks, node affines and
    (unless ``uniform``) jittered non-uniform grids."""
    g = torch.Generator().manual_seed(seed)
    w = KAN(widths, grid=grids, k=ks, num_models=B, generator=g, dtype=dtype).weights(detach=True)

    def r(t, scale=1.0):
        return scale * torch.randn(t.shape, generator=g, dtype=dtype)

    grid = []
    for gr, G in zip(w.grid, w.grid_sizes):
        jitter = 0.3 * (2.0 / G) * (torch.rand(gr.shape, generator=g, dtype=dtype) - 0.5)
        grid.append(gr if uniform else gr + jitter)
    return KANWeights(
        grid=grid,
        coef=[r(c) for c in w.coef],
        scale_base=[r(s) for s in w.scale_base],
        scale_sp=[0.5 + torch.rand(s.shape, generator=g, dtype=dtype) for s in w.scale_sp],
        k=w.k,
        mask=[(torch.rand(m.shape, generator=g) > 0.15).to(dtype) for m in w.mask],
        node_scale=[1 + r(s, 0.5) for s in w.node_scale],
        node_bias=[r(s, 0.5) for s in w.node_bias],
    )


@st.composite
def architectures(draw, max_depth=4, max_width=6):
    depth = draw(st.integers(1, max_depth))
    widths = draw(st.lists(st.integers(1, max_width), min_size=depth + 1, max_size=depth + 1))
    grids = draw(st.lists(st.integers(1, 5), min_size=depth, max_size=depth))
    ks = draw(st.lists(st.integers(1, 3), min_size=depth, max_size=depth))
    return widths, grids, ks, draw(st.integers(0, 2**16))


@st.composite
def kans(draw, max_depth=3, max_width=5):
    depth = draw(st.integers(1, max_depth))
    widths = draw(st.lists(st.integers(1, max_width), min_size=depth + 1, max_size=depth + 1))
    grids = draw(st.lists(st.integers(1, 5), min_size=depth, max_size=depth))
    ks = draw(st.lists(st.integers(1, 3), min_size=depth, max_size=depth))
    B = draw(st.sampled_from([None, 1, 4]))
    dtype = draw(st.sampled_from([F64, torch.float32]))
    return random_kans(widths, grids, ks, B, draw(st.integers(0, 2**16)), dtype=dtype)


@given(kans())
def test_round_trip_bitwise_and_documented_order(w):
    vec, spec = to_flat(w)
    assert vec.dtype == w.dtype
    assert vec.shape == ((w.num_models, spec.size) if w.batched else (spec.size,))
    assert spec.size == w.num_parameters()
    assert from_flat(vec, spec).equal(w)
    # the documented order: KANWeights.tensors() order, each tensor row-major
    one = w[0] if w.batched else w
    expected = torch.cat([t.reshape(-1) for t in one.tensors().values()])
    assert list(one.tensors()) == [e[0] for e in spec.entries]
    assert torch.equal(vec[0] if w.batched else vec, expected)
    assert torch.equal((vec[0] if w.batched else vec)[spec.slice("layers.0.coef")], one.coef[0].reshape(-1))


@given(kans())
def test_field_subset(w):
    vec, spec = to_flat(w, fields=("scale_base", "coef"))  # kept in FIELDS order
    assert spec.fields == ("coef", "scale_base")
    assert spec.size == sum(c[0 if w.batched else ...].numel() + s[0 if w.batched else ...].numel()
                            for c, s in zip(w.coef, w.scale_base))
    with pytest.raises(ValueError, match="lacks"):
        from_flat(vec, spec)


@given(kans(max_depth=3))
def test_flat_is_not_invariant_but_aligned_flat_is(w):
    """Negative twin: hidden permutations change the flat vector; aligning to a
    reference first removes the difference (the aligned flat-MLP baseline)."""
    ref = w[0] if w.batched else w
    p = random_hidden_permutations(ref, torch.Generator().manual_seed(0))
    if all(torch.equal(q, torch.arange(len(q))) for q in p):
        return
    shuffled = permute_hidden(ref, p)
    assert not torch.equal(to_flat(shuffled)[0], to_flat(ref)[0])
    aligned, _ = align_to(shuffled, ref)
    assert torch.equal(to_flat(aligned)[0], to_flat(ref)[0])


def test_bad_input():
    w = random_kans([2, 3], [3], [1], 2, 0)
    vec, spec = to_flat(w)
    with pytest.raises(ValueError, match=rf"\(B, {spec.size}\)"):
        from_flat(vec[:, :-1], spec)
    with pytest.raises(TypeError, match="FlatSpec"):
        from_flat(vec, {"size": spec.size})
    with pytest.raises(ValueError, match="subset"):
        to_flat(w, fields=("coefs",))
    assert isinstance(spec, FlatSpec) and spec.fields == FIELDS


def test_round_trip_on_device(device):
    w = random_kans([3, 5, 2], [4, 3], [3, 2], 2, 0).to(device)
    vec, spec = to_flat(w)
    assert vec.device == w.device
    assert from_flat(vec, spec).equal(w)
