"""A trainable KAN module in pykan's parameterisation, optionally holding many models."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import nn

from .spline import BASE_FUNCTIONS, uniform_grid
from .weights import FIELDS, KANWeights

__all__ = ["KAN"]


class KAN(nn.Module):
    r"""A Kolmogorov--Arnold Network with pykan's parameterisation (see
    :class:`~wskan_ext.KANWeights`), holding one KAN or ``num_models`` independent
    KANs of one architecture that are evaluated in one call.

    Args:
        width: layer widths ``[n_0, ..., n_L]``.
        grid: number of grid intervals ``G`` (one for all layers or one per layer).
        k: spline order (one or one per layer).
        num_models: if given, every parameter gets a leading model axis of this size.
        base_fun: base function name (default ``"silu"``).
        grid_range: initial grid range (pykan's default ``[-1, 1]``).
        noise_scale, scale_base_mu, scale_base_sigma: initialisation as in pykan
            (spline coefficients of size ``noise_scale / G``; ``scale_base`` uniform
            around ``mu / sqrt(n)`` with half-width ``sigma / sqrt(n)``;
            ``scale_sp = 1 / sqrt(n)``).
        affine_trainable: whether the node affine is trained (pykan's default: no).
        generator: a :class:`torch.Generator` for the initialisation.
        dtype, device: of every parameter.

    Shapes:
        - input: ``(s, n_0)``, or ``(num_models, s, n_0)`` for a batched module;
        - output: ``(s, n_L)`` or ``(num_models, s, n_L)``.
    """

    def __init__(
        self,
        width: Sequence[int],
        grid: Union[int, Sequence[int]] = 5,
        k: Union[int, Sequence[int]] = 3,
        *,
        num_models: Optional[int] = None,
        base_fun: str = "silu",
        grid_range=(-1.0, 1.0),
        noise_scale: float = 0.3,
        scale_base_mu: float = 0.0,
        scale_base_sigma: float = 1.0,
        affine_trainable: bool = False,
        generator: Optional[torch.Generator] = None,
        dtype: Optional[torch.dtype] = None,
        device=None,
    ):
        super().__init__()
        width = [int(w) for w in width]
        if len(width) < 2 or any(w < 1 for w in width):
            raise ValueError(f"width must list at least two positive layer sizes, got {width}")
        depth = len(width) - 1
        grids = list(grid) if isinstance(grid, (list, tuple)) else [grid] * depth
        ks = list(k) if isinstance(k, (list, tuple)) else [k] * depth
        if len(grids) != depth or len(ks) != depth:
            raise ValueError(f"grid and k must be one value or {depth} values, got grid={grid}, k={k}")
        if base_fun not in BASE_FUNCTIONS:
            raise ValueError(f"unknown base function {base_fun!r}; expected one of {sorted(BASE_FUNCTIONS)}")
        for l, (g, kl) in enumerate(zip(grids, ks)):
            if int(g) < 1:
                raise ValueError(f"layer {l}: grid size must be >= 1, got {g}")
            if int(kl) < 1:
                raise ValueError(f"layer {l}: spline order k must be >= 1, got {kl}")
        self.width = width
        self.k = [int(v) for v in ks]
        self.base_fun = [base_fun] * depth
        self.num_models = num_models
        self.init_config = dict(
            noise_scale=noise_scale,
            scale_base_mu=scale_base_mu,
            scale_base_sigma=scale_base_sigma,
            grid_range=tuple(grid_range),
            grid=[int(g) for g in grids],
        )
        lead = () if num_models is None else (int(num_models),)
        fk = dict(dtype=dtype or torch.get_default_dtype(), device=device)
        self.layers = nn.ModuleList()
        for l in range(depth):
            n, m, G, kl = width[l], width[l + 1], int(grids[l]), self.k[l]
            layer = nn.Module()
            layer.coef = nn.Parameter(torch.empty(*lead, n, m, G + kl, **fk))
            layer.scale_base = nn.Parameter(torch.empty(*lead, n, m, **fk))
            layer.scale_sp = nn.Parameter(torch.empty(*lead, n, m, **fk))
            layer.register_buffer("grid", torch.empty(*lead, n, G + 2 * kl + 1, **fk))
            layer.register_buffer("mask", torch.ones(*lead, n, m, **fk))
            if affine_trainable:
                layer.node_scale = nn.Parameter(torch.ones(*lead, m, **fk))
                layer.node_bias = nn.Parameter(torch.zeros(*lead, m, **fk))
            else:
                layer.register_buffer("node_scale", torch.ones(*lead, m, **fk))
                layer.register_buffer("node_bias", torch.zeros(*lead, m, **fk))
            self.layers.append(layer)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: Optional[torch.Generator] = None) -> None:
        """Re-draw the initial weights (pykan-style, see the class docstring)."""
        cfg = self.init_config
        for l, layer in enumerate(self.layers):
            n = self.width[l]
            G = cfg["grid"][l]
            kl = self.k[l]
            g = uniform_grid(n, G, kl, cfg["grid_range"], dtype=layer.grid.dtype, device=layer.grid.device)
            layer.grid.copy_(g.expand_as(layer.grid))
            u = torch.rand(layer.coef.shape, generator=generator, dtype=layer.coef.dtype).to(layer.coef.device)
            layer.coef.copy_((u - 0.5) * cfg["noise_scale"] / G)
            u = torch.rand(layer.scale_base.shape, generator=generator, dtype=layer.coef.dtype).to(layer.coef.device)
            layer.scale_base.copy_((cfg["scale_base_mu"] + cfg["scale_base_sigma"] * (2 * u - 1)) / math.sqrt(n))
            layer.scale_sp.fill_(1.0 / math.sqrt(n))
            layer.mask.fill_(1.0)
            layer.node_scale.fill_(1.0)
            layer.node_bias.fill_(0.0)

    @property
    def depth(self) -> int:
        return len(self.layers)

    def weights(self, detach: bool = False) -> KANWeights:
        """The module's weights as :class:`~wskan_ext.KANWeights` (sharing storage;
        ``detach=True`` cuts the autograd graph)."""
        kw = {f: [getattr(layer, f) for layer in self.layers] for f in FIELDS}
        w = KANWeights(**kw, k=self.k, base_fun=self.base_fun, validate=False)
        return w.detach() if detach else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_models is not None and x.dim() == 2:
            x = x.unsqueeze(0).expand(self.num_models, *x.shape)
        return self.weights().forward(x)

    @classmethod
    def from_weights(cls, weights: KANWeights, affine_trainable: bool = False) -> "KAN":
        """Build a module holding a copy of ``weights`` (single or batched)."""
        if not isinstance(weights, KANWeights):
            raise TypeError(f"KAN.from_weights expects KANWeights, got {type(weights).__name__}")
        if len(set(weights.base_fun)) != 1:
            raise ValueError(
                f"KAN module uses one base function for all layers; weights have {weights.base_fun}"
            )
        weights.validate()
        model = cls(
            weights.widths,
            grid=weights.grid_sizes,
            k=weights.k,
            num_models=weights.num_models,
            base_fun=weights.base_fun[0],
            affine_trainable=affine_trainable,
            dtype=weights.dtype,
            device=weights.device,
        )
        with torch.no_grad():
            for l, layer in enumerate(model.layers):
                for f in FIELDS:
                    getattr(layer, f).copy_(getattr(weights, f)[l])
        return model

    def extra_repr(self) -> str:
        s = f"width={self.width}, grid={self.init_config['grid']}, k={self.k}, base_fun={self.base_fun[0]!r}"
        if self.num_models is not None:
            s += f", num_models={self.num_models}"
        return s
