"""Stable flattening of KANs (wskan_ext.adapters.flat)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wskan_ext import permute_hidden
from wskan_ext.adapters.flat import FlatSpec, from_flat, to_flat
from wskan_ext.align import align_to
from wskan_ext.equivariance_tests import strategies as kst
from wskan_ext.kan import random_hidden_permutations
from wskan_ext.kan.weights import FIELDS

F64 = torch.float64

# random KANs: depth 1..3, widths 1..5, per-layer G 1..5 and k 1..3, unbatched or 1/4 models,
# float64 or float32, 15 % of the edges masked, jittered per-neuron grids
KANS = kst.kan_weights(max_depth=3, max_width=5, grid_sizes=(1, 5), k=(1, 3), per_layer=True,
                       num_models=st.sampled_from([None, 1, 4]), dtype=st.sampled_from([F64, torch.float32]),
                       mask_prob=0.15)


@given(KANS)
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


@given(KANS)
def test_field_subset(w):
    vec, spec = to_flat(w, fields=("scale_base", "coef"))  # kept in FIELDS order
    assert spec.fields == ("coef", "scale_base")
    assert spec.size == sum(c[0 if w.batched else ...].numel() + s[0 if w.batched else ...].numel()
                            for c, s in zip(w.coef, w.scale_base))
    with pytest.raises(ValueError, match="lacks"):
        from_flat(vec, spec)


@given(KANS)
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
    w = kst.random_kan({"widths": [2, 3], "grid_sizes": 3, "k": 1}, 0, num_models=2, mask_prob=0.15)
    vec, spec = to_flat(w)
    with pytest.raises(ValueError, match=rf"\(B, {spec.size}\)"):
        from_flat(vec[:, :-1], spec)
    with pytest.raises(TypeError, match="FlatSpec"):
        from_flat(vec, {"size": spec.size})
    with pytest.raises(ValueError, match="subset"):
        to_flat(w, fields=("coefs",))
    assert isinstance(spec, FlatSpec) and spec.fields == FIELDS


def test_round_trip_on_device(device):
    w = kst.random_kan({"widths": [3, 5, 2], "grid_sizes": [4, 3], "k": [3, 2]}, 0, num_models=2, mask_prob=0.15,
                       device=device)
    vec, spec = to_flat(w)
    assert vec.device == w.device
    assert from_flat(vec, spec).equal(w)
