"""efficient-kan interop through its documented ``state_dict`` layout.

efficient-kan (github.com/Blealtan/efficient-kan) is not on PyPI, so we read and write
its ``state_dict`` rather than its classes. A ``KAN`` of ``KANLinear`` layers stores,
per layer ``l`` under the prefix ``layers.{l}.``:

=================  ==================  ==================================================
key                shape               meaning
=================  ==================  ==================================================
``grid``           ``(in, G+2k+1)``    knots (buffer), pykan's convention
``base_weight``    ``(out, in)``       weight of ``base_activation(x)``
``spline_weight``  ``(out, in, G+k)``  B-spline coefficients
``spline_scaler``  ``(out, in)``       optional (``enable_standalone_scale_spline``)
=================  ==================  ==================================================

and evaluates ``y_j = sum_i base_weight[j,i] b(x_i) + spline_scaler[j,i] * sum_b
spline_weight[j,i,b] B_{i,b}(x_i)``. The spline order follows from the shapes:
``k = grid.shape[-1] - spline_weight.shape[-1] - 1``.
"""

from __future__ import annotations

import re
from typing import Dict, Mapping

import torch
from einops import rearrange

from wskan_ext.kan.weights import KANWeights

__all__ = ["from_efficient_kan", "to_efficient_kan", "is_efficient_kan_state_dict"]

_KEY = re.compile(r"^(?:(?P<prefix>.*?)\.)?(?P<layer>\d+)\.(?P<name>grid|base_weight|spline_weight|spline_scaler)$")


def _split_layers(state: Mapping[str, torch.Tensor]) -> Dict[int, Dict[str, torch.Tensor]]:
    layers: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _KEY.match(key)
        if m is None:
            continue
        layers.setdefault(int(m.group("layer")), {})[m.group("name")] = value
    return layers


def is_efficient_kan_state_dict(obj) -> bool:
    """Whether ``obj`` is a mapping in efficient-kan's ``state_dict`` layout."""
    if not isinstance(obj, Mapping) or not obj:
        return False
    if not all(isinstance(k, str) for k in obj):
        return False
    layers = _split_layers(obj)
    return bool(layers) and all({"grid", "base_weight", "spline_weight"} <= set(v) for v in layers.values())


def from_efficient_kan(state_dict: Mapping[str, torch.Tensor], base_fun: str = "silu") -> KANWeights:
    """Read an efficient-kan ``state_dict`` (of ``KAN`` or a stack of ``KANLinear``) into
    :class:`~wskan_ext.KANWeights` (a copy; ``mask`` = 1, identity node affine).

    Args:
        state_dict: keys ``[prefix.]{l}.grid|base_weight|spline_weight[|spline_scaler]``.
        base_fun: the ``base_activation`` the model used (efficient-kan's default: SiLU).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"from_efficient_kan expects a state_dict mapping, got {type(state_dict).__name__}")
    layers = _split_layers(state_dict)
    if not layers:
        raise ValueError(
            "state_dict has no efficient-kan layer keys "
            "('layers.{l}.grid', 'layers.{l}.base_weight', 'layers.{l}.spline_weight')"
        )
    idx = sorted(layers)
    if idx != list(range(len(idx))):
        raise ValueError(f"efficient-kan layers must be numbered 0..L-1, found {idx}")
    kw = {f: [] for f in ("grid", "coef", "scale_base", "scale_sp")}
    ks = []
    for l in idx:
        t = layers[l]
        for name in ("grid", "base_weight", "spline_weight"):
            if name not in t:
                raise ValueError(f"layer {l}: efficient-kan tensor {name!r} is missing")
        grid, bw, sw = t["grid"], t["base_weight"], t["spline_weight"]
        if sw.dim() != 3:
            raise ValueError(f"layer {l}: spline_weight must have shape (out, in, G+k), got {tuple(sw.shape)}")
        out_dim, in_dim, nb = sw.shape
        if bw.shape != (out_dim, in_dim):
            raise ValueError(f"layer {l}: base_weight must have shape {(out_dim, in_dim)}, got {tuple(bw.shape)}")
        if grid.dim() != 2 or grid.shape[0] != in_dim:
            raise ValueError(f"layer {l}: grid must have shape ({in_dim}, G+2k+1), got {tuple(grid.shape)}")
        k = grid.shape[1] - nb - 1
        if k < 1:
            raise ValueError(
                f"layer {l}: grid has {grid.shape[1]} knots and spline_weight {nb} basis functions, "
                f"which implies spline order k={k} (< 1)"
            )
        scaler = t.get("spline_scaler")
        if scaler is None:
            scaler = torch.ones_like(bw)
        elif scaler.shape != (out_dim, in_dim):
            raise ValueError(f"layer {l}: spline_scaler must have shape {(out_dim, in_dim)}, got {tuple(scaler.shape)}")
        ks.append(k)
        kw["grid"].append(grid.detach().clone())
        kw["coef"].append(rearrange(sw.detach(), "o i b -> i o b").clone())
        kw["scale_base"].append(rearrange(bw.detach(), "o i -> i o").clone())
        kw["scale_sp"].append(rearrange(scaler.detach(), "o i -> i o").clone())
    return KANWeights(**kw, k=ks, base_fun=base_fun)


def to_efficient_kan(weights: KANWeights, prefix: str = "layers") -> Dict[str, torch.Tensor]:
    """Write single-KAN :class:`~wskan_ext.KANWeights` as an efficient-kan ``state_dict``
    (with ``spline_scaler``; masks folded into the weights).

    efficient-kan has no node affine: weights whose ``node_scale``/``node_bias`` are not
    the identity raise ``ValueError``.
    """
    if not isinstance(weights, KANWeights):
        raise TypeError(f"to_efficient_kan expects KANWeights, got {type(weights).__name__}")
    if weights.batched:
        raise ValueError("to_efficient_kan takes one KAN; index the batch first (weights[i])")
    out: Dict[str, torch.Tensor] = {}
    for l in range(weights.depth):
        if not (torch.all(weights.node_scale[l] == 1) and torch.all(weights.node_bias[l] == 0)):
            raise ValueError(f"layer {l}: node_scale/node_bias is not the identity; efficient-kan has no node affine")
        mask = weights.mask[l]
        p = f"{prefix}.{l}." if prefix else f"{l}."
        out[p + "grid"] = weights.grid[l].detach().clone()
        out[p + "base_weight"] = rearrange(mask * weights.scale_base[l], "i o -> o i").detach().clone()
        out[p + "spline_weight"] = rearrange(weights.coef[l], "i o b -> o i b").detach().clone()
        out[p + "spline_scaler"] = rearrange(mask * weights.scale_sp[l], "i o -> o i").detach().clone()
    return out


def register():
    """The ``efficient_kan`` family of :func:`~wskan_ext.as_kan_weights` (entry point
    ``wskan_ext.families``): ``(name, detect, convert)``."""
    return "efficient_kan", is_efficient_kan_state_dict, from_efficient_kan
