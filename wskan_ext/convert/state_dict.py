"""Rebuild an ``nn.Sequential`` MLP from its ``state_dict`` (for ``wskan convert mlp-to-kan``).

A state dict of ``nn.Sequential(Linear, ReLU, Linear, Linear)`` has the keys ``0.weight,
0.bias, 2.weight, 2.bias, 3.weight, 3.bias``: the module *indices* say where the
parameter-free modules are. :func:`mlp_from_state_dict` reads the architecture from them:

* a module with a 2-D ``weight`` (and optionally ``bias``) is an ``nn.Linear``; one with
  ``running_mean``/``running_var`` (and optionally ``weight``/``bias``/``num_batches_tracked``)
  an ``nn.BatchNorm1d`` (rebuilt in eval mode, folded exactly by :func:`~wskan_ext.mlp_to_kan`);
* consecutive indices (``2`` then ``3``) mean *no* module in between (the two maps are
  composed, no activation is inserted); a gap of one index is one parameter-free module,
  taken to be ``activation``;
* everything else is ambiguous and refused unless ``layers`` lists every module: a gap of
  two or more indices, a first index above 0 (leading parameter-free modules). Modules after
  the last parameterised one leave no trace in a state dict (a trailing activation):
  ``layers`` is the only way to state them;
* a key that is not ``<i>.weight|bias|running_mean|running_var|num_batches_tracked``, a
  module whose keys fit neither layer type, a shape that does not fit, a non-float or
  non-finite tensor are refused, naming the key.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from .modules import _FACTORIES, activation_module

__all__ = ["mlp_from_state_dict", "LAYER_TOKENS"]

_KEY = re.compile(r"^(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
_NOOPS = {"dropout": nn.Dropout, "identity": nn.Identity, "flatten": nn.Flatten}
_BN = ("bn", "batchnorm", "batchnorm1d")
_ACTS = tuple(sorted(set(_FACTORIES) - {"zero", "identity"}))
#: The tokens of a ``layers`` spec, one per ``nn.Sequential`` module.
LAYER_TOKENS = ("linear",) + _BN + tuple(_NOOPS) + _ACTS


def _kind(i: int, g: Dict[str, torch.Tensor]) -> str:
    keys = sorted(g)
    if "running_mean" in g or "running_var" in g:
        if "running_mean" not in g or "running_var" not in g:
            raise ValueError(f"module {i}: BatchNorm1d keys {keys} need both running_mean and running_var")
        C = g["running_mean"].shape
        if len(C) != 1 or g["running_var"].shape != C:
            raise ValueError(f"module {i}: running_mean / running_var must be 1-D of one size, got "
                             f"{tuple(g['running_mean'].shape)} / {tuple(g['running_var'].shape)}")
        if ("weight" in g) != ("bias" in g):
            raise ValueError(f"module {i}: BatchNorm1d keys {keys} have only one of weight / bias")
        for key in ("weight", "bias"):
            if key in g and g[key].shape != C:
                raise ValueError(f"module {i}: key '{i}.{key}' has shape {tuple(g[key].shape)}, expected {tuple(C)}")
        return "bn"
    if "weight" in g and g["weight"].dim() == 2:
        if "num_batches_tracked" in g:
            raise ValueError(f"module {i}: keys {keys} mix nn.Linear and BatchNorm1d keys")
        out = g["weight"].shape[0]
        if "bias" in g and tuple(g["bias"].shape) != (out,):
            raise ValueError(f"module {i}: key '{i}.bias' has shape {tuple(g['bias'].shape)}, expected ({out},)")
        return "linear"
    shapes = {k: tuple(v.shape) for k, v in g.items()}
    raise ValueError(f"module {i}: keys {shapes} are neither an nn.Linear (2-D weight) nor an nn.BatchNorm1d "
                     "(running_mean, running_var)")


def _infer(kinds: Dict[int, str], activation: str) -> List[str]:
    idx = sorted(kinds)
    if idx[0] != 0:
        raise ValueError(
            f"the state dict starts at module {idx[0]}: modules 0..{idx[0] - 1} have no parameters and cannot be "
            "inferred (a leading activation, Flatten?); list every module with --layers / layers="
        )
    spec = []
    for a, b in zip(idx, idx[1:]):
        spec.append(kinds[a])
        gap = b - a - 1
        if gap == 1:
            spec.append(activation)
        elif gap > 1:
            raise ValueError(
                f"modules {a + 1}..{b - 1} (between {kinds[a]} {a} and {kinds[b]} {b}) have no parameters: {gap} "
                "modules in a row are ambiguous (an activation and a Dropout? two activations?); "
                "list every module with --layers / layers="
            )
    spec.append(kinds[idx[-1]])
    return spec


def _tokens(layers: Union[str, Sequence[str]]) -> List[str]:
    toks = [t.strip().lower() for t in (layers.split(",") if isinstance(layers, str) else layers)]
    for j, t in enumerate(toks):
        if t not in LAYER_TOKENS:
            raise ValueError(f"layers spec entry {j} ({t!r}): unknown; expected one of {list(LAYER_TOKENS)}")
    return ["bn" if t in _BN else t for t in toks]


def mlp_from_state_dict(state: Dict[str, torch.Tensor], layers: Optional[Union[str, Sequence[str]]] = None,
                        activation: str = "relu", bn_eps: float = 1e-5) -> nn.Sequential:
    """The eval-mode ``nn.Sequential`` whose ``state_dict()`` is ``state`` (see the module doc).

    Args:
        state: ``{"<i>.weight": tensor, ...}`` of an ``nn.Sequential`` of ``nn.Linear`` /
            ``nn.BatchNorm1d`` layers and parameter-free modules.
        layers: every module in order, e.g. ``"linear,relu,linear,linear"`` or a list of
            :data:`LAYER_TOKENS` (``bn`` = ``BatchNorm1d``); required when the indices are
            ambiguous, and the only way to state trailing parameter-free modules.
        activation: the module that fills a one-index gap when ``layers`` is not given.
        bn_eps: ``BatchNorm1d``'s ``eps`` (not stored in a state dict; PyTorch's default).

    Returns: the MLP, in eval mode, with the state dict's dtype. ``ValueError`` for any key,
    shape or dtype that does not fit, naming it.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict of tensors, got {type(state).__name__}")
    if layers is None:
        activation = activation.strip().lower()
        if activation not in _ACTS + ("identity",):
            raise ValueError(f"activation {activation!r}: unknown; expected one of {list(_ACTS)}")
    groups: Dict[int, Dict[str, torch.Tensor]] = {}
    dtype = None
    for key, t in state.items():
        m = _KEY.match(key) if isinstance(key, str) else None
        if m is None:
            raise ValueError(f"state dict key {key!r}: not a key of an nn.Sequential of nn.Linear / BatchNorm1d "
                             "layers ('<i>.weight', '<i>.bias', '<i>.running_mean', '<i>.running_var', "
                             "'<i>.num_batches_tracked')")
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state dict key {key!r}: expected a tensor, got {type(t).__name__}")
        if m.group(2) != "num_batches_tracked":
            if not t.dtype.is_floating_point:
                raise ValueError(f"state dict key {key!r}: dtype {t.dtype} is not floating point")
            if dtype is not None and t.dtype != dtype:
                raise ValueError(f"state dict key {key!r}: dtype {t.dtype}, the other tensors have {dtype}")
            dtype = t.dtype
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"state dict key {key!r}: contains NaN or Inf")
        groups.setdefault(int(m.group(1)), {})[m.group(2)] = t
    if not any("weight" in g or "running_mean" in g for g in groups.values()):
        raise ValueError("no '<i>.weight' keys of Linear layers found in the state dict")
    kinds = {i: _kind(i, g) for i, g in groups.items()}
    spec = _infer(kinds, activation) if layers is None else _tokens(layers)
    for i, kind in kinds.items():
        if i >= len(spec):
            raise ValueError(f"state dict keys of module {i} ({kind}): the layers spec lists only {len(spec)} modules")
        if spec[i] != kind:
            raise ValueError(f"module {i}: the layers spec says {spec[i]!r}, the state dict keys are those of a {kind!r}")
    mods: List[nn.Module] = []
    for i, tok in enumerate(spec):
        g = groups.get(i)
        if tok in ("linear", "bn") and g is None:
            raise ValueError(f"module {i}: the layers spec says {tok!r} but the state dict has no '{i}.*' keys")
        if tok == "linear":
            W = g["weight"]
            mod = nn.Linear(W.shape[1], W.shape[0], bias="bias" in g, dtype=W.dtype)
        elif tok == "bn":
            C = g["running_mean"].shape[0]
            mod = nn.BatchNorm1d(C, eps=bn_eps, affine="weight" in g, dtype=dtype)
        elif tok in _NOOPS:
            mod = _NOOPS[tok]()
        else:
            mod = activation_module(tok)
        if g is not None:
            with torch.no_grad():
                for key, t in g.items():
                    getattr(mod, key).copy_(t)
        mods.append(mod)
    return nn.Sequential(*mods).eval()
