"""``KANWeights``: the one canonical, validated representation of a KAN's weights.

Layer ``l`` maps ``n = widths[l]`` inputs to ``m = widths[l+1]`` outputs:

.. code-block:: text

    phi_ij(x) = mask_ij * (scale_base_ij * b_l(x) + scale_sp_ij * sum_b coef_ijb * B_ib(x))
    y_j       = node_scale_j * sum_i phi_ij(x_i) + node_bias_j

Per layer (``*`` is an optional leading model axis, the same for every tensor):

==============  ====================  =========================================
tensor          shape                 meaning
==============  ====================  =========================================
``grid``        ``(*, n, G+2k+1)``    non-decreasing knots of each input neuron
``coef``        ``(*, n, m, G+k)``    B-spline coefficients of each edge
``scale_base``  ``(*, n, m)``         weight of the base function ``b_l``
``scale_sp``    ``(*, n, m)``         weight of the spline
``mask``        ``(*, n, m)``         edge mask (0 removes the edge)
``node_scale``  ``(*, m)``            output neuron affine (pykan's node and
``node_bias``   ``(*, m)``            subnode affines folded into one)
==============  ====================  =========================================
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Union

import torch

from .layout import EDGE_FIELDS, FIELDS, check_layout
from .spline import BASE_FUNCTIONS, base_function, spline_eval, spline_sum

__all__ = ["KANWeights", "layer_forward", "FIELDS", "EDGE_FIELDS"]

Tensors = Sequence[torch.Tensor]


def _as_list(value, depth: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != depth:
            raise ValueError(f"{name}: expected {depth} entries (one per layer), got {len(value)}")
        return list(value)
    return [value] * depth


class KANWeights:
    r"""Weights of one KAN, or of a stack of KANs sharing one architecture.

    Args:
        grid, coef, scale_base, scale_sp: one tensor per layer (see the module table).
        k: spline order, an ``int`` or one per layer (``k >= 1``).
        mask: per-layer edge masks; ones if omitted.
        node_scale, node_bias: per-layer output affines; ones / zeros if omitted.
        base_fun: base function name (see :data:`~wskan_ext.kan.spline.BASE_FUNCTIONS`),
            one for all layers or one per layer.
        validate: check shapes, finiteness and knot order (default ``True``).

    The leading model axis is present on every tensor or on none; ``num_models`` is
    ``None`` for a single KAN. Tensors are used as given (no copy): converters that
    take user models copy before building a ``KANWeights``.

    Shapes:
        - ``grid[l]``: ``(*, n_l, G_l + 2 k_l + 1)``
        - ``coef[l]``: ``(*, n_l, n_{l+1}, G_l + k_l)``
        - ``scale_base[l]``, ``scale_sp[l]``, ``mask[l]``: ``(*, n_l, n_{l+1})``
        - ``node_scale[l]``, ``node_bias[l]``: ``(*, n_{l+1})``
    """

    def __init__(
        self,
        grid: Tensors,
        coef: Tensors,
        scale_base: Tensors,
        scale_sp: Tensors,
        k: Union[int, Sequence[int]],
        mask: Optional[Tensors] = None,
        node_scale: Optional[Tensors] = None,
        node_bias: Optional[Tensors] = None,
        base_fun: Union[str, Sequence[str]] = "silu",
        validate: bool = True,
    ):
        for name, val in (("grid", grid), ("coef", coef), ("scale_base", scale_base), ("scale_sp", scale_sp)):
            if not isinstance(val, (list, tuple)):
                raise TypeError(f"{name}: expected a list of per-layer tensors, got {type(val).__name__}")
        depth = len(coef)
        if depth == 0:
            raise ValueError("coef: a KAN needs at least one layer, got 0 layers")
        self.grid = list(grid)
        self.coef = list(coef)
        self.scale_base = list(scale_base)
        self.scale_sp = list(scale_sp)
        for name in ("grid", "scale_base", "scale_sp"):
            if len(getattr(self, name)) != depth:
                raise ValueError(
                    f"{name}: expected {depth} per-layer tensors (as many as coef), got {len(getattr(self, name))}"
                )
        ks = _as_list(k, depth, "k")
        for l, kl in enumerate(ks):
            if isinstance(kl, bool) or not isinstance(kl, int):
                raise TypeError(f"layer {l}: k must be an int, got {type(kl).__name__}")
            if kl < 1:
                raise ValueError(f"layer {l}: spline order k must be >= 1, got k={kl}")
        self.k: List[int] = ks
        bfs = _as_list(base_fun, depth, "base_fun")
        for l, b in enumerate(bfs):
            if not isinstance(b, str):
                raise TypeError(f"layer {l}: base_fun must be a name (str), got {type(b).__name__}")
            if b not in BASE_FUNCTIONS:
                raise ValueError(
                    f"layer {l}: unknown base function {b!r}; expected one of {sorted(BASE_FUNCTIONS)}"
                )
        self.base_fun: List[str] = bfs

        ref = self.coef[0]
        if not isinstance(ref, torch.Tensor):
            raise TypeError(f"layer 0: coef must be a torch.Tensor, got {type(ref).__name__}")
        if mask is None:
            mask = [torch.ones(c.shape[:-1], dtype=c.dtype, device=c.device) for c in self.coef]
        if node_scale is None:
            node_scale = [torch.ones(c.shape[:-3] + c.shape[-2:-1], dtype=c.dtype, device=c.device) for c in self.coef]
        if node_bias is None:
            node_bias = [torch.zeros(c.shape[:-3] + c.shape[-2:-1], dtype=c.dtype, device=c.device) for c in self.coef]
        self.mask = list(mask)
        self.node_scale = list(node_scale)
        self.node_bias = list(node_bias)
        for name in ("mask", "node_scale", "node_bias"):
            if len(getattr(self, name)) != depth:
                raise ValueError(f"{name}: expected {depth} per-layer tensors, got {len(getattr(self, name))}")
        if validate:
            self.validate()

    # ------------------------------------------------------------------ basics
    @property
    def depth(self) -> int:
        """Number of layers ``L``."""
        return len(self.coef)

    @property
    def batched(self) -> bool:
        """Whether the tensors carry a leading model axis."""
        return self.coef[0].dim() == 4

    @property
    def num_models(self) -> Optional[int]:
        """Size of the model axis, or ``None`` for a single KAN."""
        return self.coef[0].shape[0] if self.batched else None

    def __len__(self) -> int:
        if not self.batched:
            raise TypeError("len() of an unbatched KANWeights; use .batched / .num_models")
        return self.coef[0].shape[0]

    @property
    def widths(self) -> List[int]:
        """Layer widths ``[n_0, n_1, ..., n_L]``."""
        return [self.coef[0].shape[-3]] + [c.shape[-2] for c in self.coef]

    @property
    def grid_sizes(self) -> List[int]:
        """Number of grid intervals ``G_l`` per layer."""
        return [g.shape[-1] - 2 * k - 1 for g, k in zip(self.grid, self.k)]

    @property
    def num_basis(self) -> List[int]:
        """Number of basis functions ``G_l + k_l`` per layer."""
        return [c.shape[-1] for c in self.coef]

    @property
    def dtype(self) -> torch.dtype:
        return self.coef[0].dtype

    @property
    def device(self) -> torch.device:
        return self.coef[0].device

    @property
    def architecture(self) -> dict:
        """The architecture as a dict of widths, grid sizes, spline orders and base functions."""
        return {
            "widths": self.widths,
            "grid_sizes": self.grid_sizes,
            "k": list(self.k),
            "base_fun": list(self.base_fun),
        }

    def same_architecture(self, other: "KANWeights") -> bool:
        return self.architecture == other.architecture

    def layer(self, l: int) -> dict:
        """The tensors of layer ``l`` as a dict (``grid``, ``coef``, ..., ``k``, ``base_fun``)."""
        d = {f: getattr(self, f)[l] for f in FIELDS}
        d["k"] = self.k[l]
        d["base_fun"] = self.base_fun[l]
        return d

    def _replace(self, **fields) -> "KANWeights":
        kw = {f: getattr(self, f) for f in FIELDS}
        kw.update(k=self.k, base_fun=self.base_fun)
        kw.update(fields)
        validate = kw.pop("validate", False)
        return KANWeights(**kw, validate=validate)

    def map(self, fn) -> "KANWeights":
        """Apply ``fn`` to every tensor (e.g. ``lambda t: t.detach()``)."""
        return self._replace(**{f: [fn(t) for t in getattr(self, f)] for f in FIELDS})

    def to(self, *args, **kwargs) -> "KANWeights":
        """Like :meth:`torch.Tensor.to`, applied to every tensor."""
        return self.map(lambda t: t.to(*args, **kwargs))

    def clone(self) -> "KANWeights":
        return self.map(lambda t: t.clone())

    def detach(self) -> "KANWeights":
        return self.map(lambda t: t.detach())

    def double(self) -> "KANWeights":
        return self.to(torch.float64)

    def float(self) -> "KANWeights":
        return self.to(torch.float32)

    def tensors(self) -> dict:
        """Flat ``{"layers.{l}.{field}": tensor}`` dict (e.g. for safetensors)."""
        return {f"layers.{l}.{f}": getattr(self, f)[l] for l in range(self.depth) for f in FIELDS}

    @classmethod
    def from_tensors(cls, tensors: dict, k, base_fun, validate: bool = True) -> "KANWeights":
        """Inverse of :meth:`tensors`."""
        depth = len(k) if isinstance(k, (list, tuple)) else None
        if depth is None:
            depth = 1 + max(int(key.split(".")[1]) for key in tensors)
        kw = {}
        for f in FIELDS:
            kw[f] = []
            for l in range(depth):
                key = f"layers.{l}.{f}"
                if key not in tensors:
                    raise ValueError(f"layer {l}: tensor {key!r} is missing")
                kw[f].append(tensors[key])
        return cls(**kw, k=k, base_fun=base_fun, validate=validate)

    def __repr__(self) -> str:
        b = f"num_models={self.num_models}, " if self.batched else ""
        return (
            f"KANWeights({b}widths={self.widths}, grid_sizes={self.grid_sizes}, k={self.k}, "
            f"base_fun={self.base_fun}, dtype={self.dtype}, device={self.device})"
        )

    # ------------------------------------------------------------ validation
    def validate(self) -> "KANWeights":
        """Check shapes, chaining, dtypes, finiteness and knot order.

        Raises:
            TypeError: a tensor of the wrong type or dtype (the message names the layer
                and the tensor).
            ValueError: a wrong shape, layers that do not chain, NaN/Inf, decreasing knots
                (the message names the layer, the tensor, the expected and the actual value).
        """
        check_layout(self)
        return self

    # ----------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, *, return_hidden: bool = False):
        r"""Evaluate the KAN(s) on inputs ``x``.

        Shapes:
            - unbatched weights: ``x: (s, n_0)`` -> ``(s, n_L)``;
            - batched weights (``B`` models): ``x: (B, s, n_0)`` (one input set per
              model) or ``(s, n_0)`` (shared) -> ``(B, s, n_L)``.

        With ``return_hidden=True`` also returns the list of every layer's activations
        ``[x_0, ..., x_L]``.
        """
        if x.dim() < 2 or x.shape[-1] != self.widths[0]:
            raise ValueError(f"input x must have shape (..., samples, {self.widths[0]}), got {tuple(x.shape)}")
        if self.batched and x.dim() == 2:
            x = x.unsqueeze(0).expand(self.num_models, *x.shape)
        acts = [x]
        for l in range(self.depth):
            x = layer_forward(self, l, x)
            acts.append(x)
        return (x, acts) if return_hidden else x

    __call__ = forward

    def edge_functions(self, l: int, x: torch.Tensor) -> torch.Tensor:
        r"""Every edge function of layer ``l`` on the inputs ``x`` of that layer: the one
        evaluator of :math:`\phi_{ij}(x_i) = \mathrm{mask}_{ij}(\mathrm{scale\_base}_{ij}\,
        b(x_i) + \mathrm{scale\_sp}_{ij} \sum_b \mathrm{coef}_{ijb} B_{ib}(x_i))` (probes,
        pruning labels, alignment and adapters use it; the node affine is not included).

        Shapes: ``x: (*, s, n_l)`` (``*`` = the model axis, if any) -> ``(*, s, n_l, n_{l+1})``.
        """
        if not 0 <= l < self.depth:
            raise ValueError(f"edge_functions: layer {l} does not exist (depth {self.depth})")
        if x.shape[-1] != self.widths[l]:
            raise ValueError(f"edge_functions: layer {l} expects x of shape (..., s, {self.widths[l]}), "
                             f"got {tuple(x.shape)}")
        mask = self.mask[l]
        spline = spline_eval(x, self.grid[l], (mask * self.scale_sp[l]).unsqueeze(-1) * self.coef[l], self.k[l])
        return spline + base_function(self.base_fun[l])(x).unsqueeze(-1) * (mask * self.scale_base[l]).unsqueeze(-3)

    # ------------------------------------------------------ canonical params
    def effective_coef(self) -> List[torch.Tensor]:
        """``mask * scale_sp * coef`` per layer: ``(*, n, m, G+k)``. Invariant to the
        per-edge rescaling ``(scale_sp, coef) -> (a * scale_sp, coef / a)``."""
        return [(mk * sp).unsqueeze(-1) * c for c, sp, mk in zip(self.coef, self.scale_sp, self.mask)]

    def effective_base(self) -> List[torch.Tensor]:
        """``mask * scale_base`` per layer: ``(*, n, m)``."""
        return [mk * sb for sb, mk in zip(self.scale_base, self.mask)]

    def edge_features(self) -> List[torch.Tensor]:
        """Canonical edge parameters per layer: ``(*, n, m, G+k+1)`` = effective spline
        coefficients followed by the effective base weight."""
        return [torch.cat([c, b.unsqueeze(-1)], dim=-1) for c, b in zip(self.effective_coef(), self.effective_base())]

    def canonicalize(self) -> "KANWeights":
        """Equivalent weights with ``scale_sp = mask``, ``coef = effective coef`` and
        ``scale_base = effective base`` (same function, rescaling symmetry removed)."""
        return self._replace(
            coef=self.effective_coef(),
            scale_base=self.effective_base(),
            scale_sp=[mk.clone() for mk in self.mask],
            mask=[mk.clone() for mk in self.mask],
        )

    # --------------------------------------------------------- batching API
    @staticmethod
    def stack(items: Iterable["KANWeights"]) -> "KANWeights":
        """Stack unbatched (or concatenate batched) KANs of one architecture on a new
        leading model axis."""
        items = list(items)
        if not items:
            raise ValueError("stack: got an empty list of KANWeights")
        first = items[0]
        for i, w in enumerate(items):
            if not isinstance(w, KANWeights):
                raise TypeError(f"stack: item {i} is a {type(w).__name__}, expected KANWeights")
            if not w.same_architecture(first):
                raise ValueError(
                    f"stack: item {i} has architecture {w.architecture}, item 0 has {first.architecture}"
                )
            if w.batched != first.batched:
                raise ValueError(f"stack: item {i} batched={w.batched} but item 0 batched={first.batched}")
        op = torch.cat if first.batched else torch.stack
        kw = {f: [op([getattr(w, f)[l] for w in items]) for l in range(first.depth)] for f in FIELDS}
        return first._replace(**kw)

    def unbind(self) -> List["KANWeights"]:
        """Split a batched KANWeights into single KANs (views)."""
        if not self.batched:
            raise ValueError("unbind: KANWeights is not batched")
        return [self[i] for i in range(self.num_models)]

    def __getitem__(self, idx) -> "KANWeights":
        """Index the model axis (an int gives one KAN; a slice / index tensor a batch)."""
        if not self.batched:
            raise TypeError("indexing an unbatched KANWeights; only batched weights have a model axis")
        return self.map(lambda t: t[idx])

    def unsqueeze(self) -> "KANWeights":
        """A single KAN as a batch of one."""
        return self if self.batched else self.map(lambda t: t.unsqueeze(0))

    def equal(self, other: "KANWeights") -> bool:
        """Exact (bitwise) equality of architecture and every tensor."""
        if not isinstance(other, KANWeights) or self.architecture != other.architecture:
            return False
        if self.batched != other.batched:
            return False
        return all(
            torch.equal(a, b) for f in FIELDS for a, b in zip(getattr(self, f), getattr(other, f))
        )

    def allclose(self, other: "KANWeights", rtol: float = 1e-5, atol: float = 1e-8) -> bool:
        if not isinstance(other, KANWeights) or self.architecture != other.architecture:
            return False
        return all(
            a.shape == b.shape and torch.allclose(a, b, rtol=rtol, atol=atol)
            for f in FIELDS
            for a, b in zip(getattr(self, f), getattr(other, f))
        )

    def num_parameters(self) -> int:
        """Number of scalars in one KAN (grids included)."""
        per = sum(getattr(self, f)[l][0 if self.batched else ...].numel() for f in FIELDS for l in range(self.depth))
        return int(per)


def layer_forward(w: KANWeights, l: int, x: torch.Tensor) -> torch.Tensor:
    """Evaluate layer ``l`` of ``w``.

    Shapes: ``x: (*, s, n)`` -> ``(*, s, m)`` (``*`` = the model axis of ``w``, if any).
    """
    k = w.k[l]
    grid, coef = w.grid[l], w.coef[l]
    mask = w.mask[l]
    spline = spline_sum(x, grid, (mask * w.scale_sp[l]).unsqueeze(-1) * coef, k)
    base = base_function(w.base_fun[l])(x)
    y = spline + torch.einsum("...si,...io->...so", base, mask * w.scale_base[l])
    return w.node_scale[l].unsqueeze(-2) * y + w.node_bias[l].unsqueeze(-2)
