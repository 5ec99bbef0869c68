"""The ``compiled`` candidate of ``benchmarks/spline_kernel.py``: its closed-form dense basis
(each :math:`B_b(x)` is one polynomial piece of the cardinal B-spline, chosen by
``floor((x - t_b)/h)``) is the Cox--de Boor basis, so the benchmark times the same function.

float64, ``k = 1..3``, ``G = 1..20``, the edge points of ``test_local_spline.py`` (every knot,
one ulp either side, inside, outside); tolerance ``1e-12`` absolute (basis values lie in
``[0, 1]``; a ``floor`` one off at a knot selects the neighbouring piece, which agrees there to
rounding). Negative twin: a basis built on knots shifted by a third of a spacing differs.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wskan_ext.equivariance_tests.profiles import examples
from wskan_ext.kan.spline import bspline_basis, uniform_grid

@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/spline_kernel.py", "wskan_spline_kernel_bench")


def _points(row: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t0, tl = row[0].item(), row[-1].item()
    span = tl - t0
    return torch.cat([row, torch.nextafter(row, row - span), torch.nextafter(row, row + span),
                      t0 + span * torch.rand(16, generator=g, dtype=row.dtype),
                      t0 - span * (0.01 + torch.rand(4, generator=g, dtype=row.dtype)),
                      tl + span * (0.01 + torch.rand(4, generator=g, dtype=row.dtype))])


@settings(max_examples=examples(30), deadline=None)
@given(k=st.integers(1, 3), G=st.integers(1, 20), lo=st.floats(-4, 4), width=st.floats(0.25, 8),
       seed=st.integers(0, 2**16))
def test_closed_form_basis_is_cox_de_boor(bench, k, G, lo, width, seed):
    row = uniform_grid(1, G, k, (lo, lo + width), dtype=torch.float64)[0]
    t0, h = row[0].item(), (row[-1].item() - row[0].item()) / (row.numel() - 1)
    x = _points(row, seed).unsqueeze(-1)  # (s, n=1)
    ours = bench.closed_form_basis(x, t0, h, G + k, k)
    ref = bspline_basis(x, row.unsqueeze(0), k)
    assert ours.shape == ref.shape == (x.shape[0], 1, G + k)
    assert (ours - ref).abs().max().item() <= 1e-12
    shifted = bench.closed_form_basis(x, t0 + h / 3, h, G + k, k)
    assert (shifted - ref).abs().max().item() > 1e-2  # negative twin: the check can fail
