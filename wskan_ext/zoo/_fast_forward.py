"""The batched trainer's training forward (:func:`wskan_ext.zoo.trainer.train_batched`)."""

from __future__ import annotations

from typing import Optional

import torch
from einops import rearrange

from ..kan import _native
from ..kan.local_spline import grid_is_uniform, local_basis, local_spline_sum
from ..kan.module import KAN
from ..kan.spline import base_function, bspline_basis, truncated_power_coefficients, truncated_power_spline
from ..kan.weights import layer_forward

__all__ = ["FastForward"]


class FastForward:
    """The same function as :meth:`KANWeights.forward`, organised for training speed.

    * layer 0: the basis of the (fixed) data ``x`` on the (fixed, shared) grid is computed
      once. With ``spline="local"`` and the compiled kernels (:mod:`wskan_ext.kan._native`)
      it is kept as the ``k+1`` active values per (sample, input)
      (:func:`~wskan_ext.kan.local_spline.local_basis`), and each step is one pass over
      (model, sample, input) with the ``k+1`` active coefficient rows and the base term;
      otherwise it is the
      dense ``(s, n_0 * nb)`` basis of :func:`~wskan_ext.kan.spline.bspline_basis`, and each
      step one matmul;
    * layers ``l >= 1`` with ``spline="local"`` (the default where the compiled kernels
      exist and the grids are uniform): the splines and the base term in one compiled pass
      (:func:`~wskan_ext.kan._native.native_spline_sum` with ``base_weight``), or
      :func:`~wskan_ext.kan.local_spline.local_spline_sum` and a batched matmul where the
      compiled kernels do not apply;
    * layers ``l >= 1`` with ``spline="truncated"`` (the default otherwise): every B-spline is a fixed combination
      of truncated powers (:func:`~wskan_ext.kan.spline.truncated_power_coefficients`,
      ``B_b(x) = sum_q A[b, q] (x - t_q)_+^k``, zero from the last knot on), so
      ``sum_b c_b B_b(x) = sum_q (c A)_q (x - t_q)_+^k``: three elementwise passes and a
      matmul instead of the Cox--de Boor recursion. It agrees with the recursion to
      ~1e-12 in float64 and ~1e-4 relative in float32 (cancellation); ``spline="exact"``
      uses the recursion (:func:`~wskan_ext.kan.weights.layer_forward`).
    """

    def __init__(self, model: KAN, x: torch.Tensor, spline: str):
        if spline not in ("auto", "local", "truncated", "exact"):
            raise ValueError(f"spline must be 'auto', 'local', 'truncated' or 'exact', got {spline!r}")
        hidden = list(model.layers)[1:]
        uniform = all(grid_is_uniform(layer.grid) for layer in hidden)
        if spline == "local" and not uniform:
            raise ValueError("spline='local' needs uniform hidden-layer grids")
        if spline == "auto":  # measured: benchmarks/spline_kernel.py and benchmarks/zoo_train.py
            native = uniform and all(_native.supports(x, layer.grid, k=kl, m=layer.coef.shape[-2])
                                     for layer, kl in zip(hidden, model.k[1:]))
            spline = "local" if native else "truncated"
        self.spline = spline
        layer = model.layers[0]
        self.shared = bool((layer.grid == layer.grid[:1]).all())
        if self.shared:
            self.base = base_function(model.base_fun[0])(x)
            # the compiled local kernel on the precomputed k+1 basis values, or one dense GEMM
            self.native = (spline == "local" and grid_is_uniform(layer.grid[0])
                           and _native.supports(x, layer.grid, k=model.k[0], m=layer.coef.shape[-2]))
            if self.native:
                first, values, _ = local_basis(x, layer.grid[0], model.k[0])
                # with few distinct values per input (pixel levels, an INR's coordinates) the
                # lookup form: one table of the distinct (input, value) pairs per model
                self.local = _native.SharedBasis.from_local(first, values, model.k[0], layer.grid.shape[-1],
                                                            base=self.base, x=x)
            else:
                self.basis = rearrange(bspline_basis(x, layer.grid[0], model.k[0]), "s i b -> s (i b)")
        self.A = [None] + [truncated_power_coefficients(layer.grid, kl) if spline == "truncated" else None
                           for layer, kl in zip(hidden, model.k[1:])]
        # hidden layers whose splines and base term run as one compiled pass
        self.fused = [False] + [spline == "local" and _native.supports(x, layer.grid, k=kl, m=layer.coef.shape[-2])
                                for layer, kl in zip(hidden, model.k[1:])]

    def __call__(self, model: KAN, x: torch.Tensor, idx: Optional[torch.Tensor], hidden: bool = False):
        """Outputs ``(B, s, m)``; with ``hidden`` also every layer's inputs (``(B, s, n_l)`` each,
        the data first), as :meth:`KANWeights.forward(return_hidden=True) <wskan_ext.KANWeights.forward>`."""
        B = model.num_models
        w = model.weights()
        acts = [x.expand(B, *x.shape) if idx is None else x[idx]] if hidden else None
        if self.shared:
            layer = model.layers[0]
            effb = layer.mask * layer.scale_base
            if self.native and idx is None:  # one compiled pass, edge scales and node affine map included
                h = _native.native_shared_sum(self.local, layer.coef, base_weight=effb,
                                              spline_scale=layer.mask * layer.scale_sp,
                                              node_scale=layer.node_scale, node_bias=layer.node_bias)
            else:
                eff = (layer.mask * layer.scale_sp).unsqueeze(-1) * layer.coef  # (B, n, m, nb)
                if self.native:
                    y = local_spline_sum(x[idx], layer.grid, eff, model.k[0]) + torch.bmm(self.base[idx], effb)
                elif idx is None:
                    # one (s, p) @ (p, B*m) GEMM for all models; the sum is made contiguous in the
                    # (B, s, m) layout once, so the hidden layers' elementwise ops run on dense memory
                    eff = rearrange(eff, "B i o b -> (i b) (B o)")
                    y = self.basis @ eff + self.base @ rearrange(effb, "B i o -> i (B o)")
                    y = rearrange(y, "s (B o) -> B s o", B=B).contiguous()
                else:
                    y = torch.bmm(self.basis[idx], rearrange(eff, "B i o b -> B (i b) o")) + torch.bmm(self.base[idx], effb)
                h = layer.node_scale.unsqueeze(-2) * y + layer.node_bias.unsqueeze(-2)
        else:
            h = layer_forward(w, 0, x.expand(B, *x.shape) if idx is None else x[idx])
        for l in range(1, model.depth):
            if hidden:
                acts.append(h)
            if self.spline == "exact":
                h = layer_forward(w, l, h)
                continue
            layer, k = model.layers[l], model.k[l]
            grid = layer.grid  # (B, n, K)
            eff = (layer.mask * layer.scale_sp).unsqueeze(-1) * layer.coef  # (B, n, m, nb)
            if self.fused[l]:  # the whole layer in one compiled pass (node map fused where it is constant)
                # the last layer's outputs as a view of (B, m, s): the loss over classes reads them so
                h = _native.native_spline_sum(h, grid, eff, k, base_weight=layer.mask * layer.scale_base,
                                              base_fun=base_function(model.base_fun[l]),
                                              node_scale=layer.node_scale, node_bias=layer.node_bias,
                                              transposed=l == model.depth - 1)
                continue
            if self.spline == "local":
                y = local_spline_sum(h, grid, eff, k)
                y = y + torch.bmm(base_function(model.base_fun[l])(h), layer.mask * layer.scale_base)
                h = layer.node_scale.unsqueeze(-2) * y + layer.node_bias.unsqueeze(-2)
                continue
            cT = torch.einsum("Biob,Bibq->Biqo", eff, self.A[l]).contiguous()
            hc = torch.minimum(h, grid[..., -1].unsqueeze(-2))  # B-splines vanish from t_last on
            chunk = max(1, 2 ** 20 // max(1, B * grid.shape[-2] * grid.shape[-1]))
            y = truncated_power_spline(hc, grid, cT, k, chunk)
            y = y + torch.bmm(base_function(model.base_fun[l])(h), layer.mask * layer.scale_base)
            h = layer.node_scale.unsqueeze(-2) * y + layer.node_bias.unsqueeze(-2)
        return (h, acts) if hidden else h
