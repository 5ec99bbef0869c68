"""Small ``nn.Module`` building blocks of the MLPs produced by :func:`~wskan_ext.kan_to_mlp`.

Everything here is a plain, stateless-or-buffer-only module that any MLP tool can run:

* :class:`ReLUPower` -- ``relu(x) ** p`` (``p = 1`` is the ReLU);
* :class:`Clamp` -- per-feature clamping ``min(max(x, lower), upper)`` with buffer bounds
  (``nn.Hardtanh`` only takes scalar bounds);
* :class:`SplitActivation` -- different activations on consecutive slices of the features;
* :class:`BatchedLinear` -- ``N`` independent linear maps evaluated in one call, for
  batched (zoo-sized) conversions; :func:`unbatch_mlp` turns a batched MLP into a list of
  standard ``nn.Sequential`` built from ``nn.Linear``.
"""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

__all__ = [
    "ReLUPower",
    "Clamp",
    "SplitActivation",
    "BatchedLinear",
    "unbatch_mlp",
    "mlp_parameter_count",
    "activation_module",
    "activation_name",
]


class ReLUPower(nn.Module):
    r"""The rectified power unit :math:`x \mapsto \max(x, 0)^p`.

    Shapes: any ``(*)`` -> ``(*)``.
    """

    def __init__(self, power: int):
        super().__init__()
        if isinstance(power, bool) or not isinstance(power, int) or power < 1:
            raise ValueError(f"ReLUPower: power must be an int >= 1, got {power!r}")
        self.power = power

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x)
        return y if self.power == 1 else y**self.power

    def extra_repr(self) -> str:
        return f"power={self.power}"


class Clamp(nn.Module):
    r"""Per-feature clamping :math:`y_f = \min(\max(x_f, \ell_f), u_f)`.

    Bounds may be infinite (no clamping of that feature).

    Shapes:
        - ``lower``, ``upper``: ``(F,)``, or ``(N, F)`` for ``N`` batched models;
        - input ``(*, F)``; batched: ``(N, s, F)``.
    """

    def __init__(self, lower: torch.Tensor, upper: torch.Tensor):
        super().__init__()
        if lower.shape != upper.shape:
            raise ValueError(f"Clamp: lower {tuple(lower.shape)} and upper {tuple(upper.shape)} differ in shape")
        if bool((lower > upper).any()):
            raise ValueError("Clamp: some lower bound exceeds its upper bound")
        self.register_buffer("lower", lower)
        self.register_buffer("upper", upper)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.lower, self.upper
        if lo.dim() == 2:  # batched: (N, F) against (N, s, F)
            lo, hi = lo.unsqueeze(-2), hi.unsqueeze(-2)
        return torch.minimum(torch.maximum(x, lo), hi)

    def extra_repr(self) -> str:
        return f"features={self.lower.shape[-1]}" + (f", models={self.lower.shape[0]}" if self.lower.dim() == 2 else "")


class SplitActivation(nn.Module):
    r"""Apply ``activations[c]`` to the ``c``-th consecutive slice of ``sizes[c]`` features.

    ``kan_units`` records the unit layout of a :func:`~wskan_ext.kan_to_mlp` network
    (``"knots"`` or ``"basis"``) so that :func:`~wskan_ext.mlp_to_kan` can invert it.

    Shapes: input ``(*, sum(sizes))`` -> output of the same shape.
    """

    def __init__(self, sizes: Sequence[int], activations: Sequence[nn.Module], kan_units: Optional[str] = None):
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) != len(activations) or not sizes or any(s < 0 for s in sizes):
            raise ValueError(f"SplitActivation: need one activation per non-negative size, got {sizes} / {len(activations)}")
        if kan_units not in (None, "knots", "basis"):
            raise ValueError(f"SplitActivation: kan_units must be None, 'knots' or 'basis', got {kan_units!r}")
        self.sizes = sizes
        self.activations = nn.ModuleList(activations)
        #: unit layout when built by kan_to_mlp (read back by mlp_to_kan)
        self.kan_units = kan_units

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != sum(self.sizes):
            raise ValueError(f"SplitActivation: expected {sum(self.sizes)} features, got {x.shape[-1]}")
        parts = torch.split(x, self.sizes, dim=-1)
        return torch.cat([act(p) for act, p in zip(self.activations, parts)], dim=-1)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}" + (f", kan_units={self.kan_units!r}" if self.kan_units else "")


class BatchedLinear(nn.Module):
    r"""``N`` independent affine maps :math:`y_n = x_n W_n^\top + b_n`.

    A weight with a leading axis of size 1 is shared (broadcast) by all models.

    Shapes:
        - ``weight``: ``(N or 1, out, in)``; ``bias``: ``(N, out)``;
        - input ``(N, s, in)``, or ``(s, in)`` shared by every model; output ``(N, s, out)``.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        if weight.dim() != 3 or bias.dim() != 2 or bias.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"BatchedLinear: expected weight (N, out, in) and bias (N, out), got {tuple(weight.shape)} / {tuple(bias.shape)}"
            )
        if weight.shape[0] not in (1, bias.shape[0]):
            raise ValueError(f"BatchedLinear: weight has {weight.shape[0]} models, bias {bias.shape[0]}")
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    @property
    def num_models(self) -> int:
        return self.bias.shape[0]

    @property
    def in_features(self) -> int:
        return self.weight.shape[-1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[-2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0)
        return torch.matmul(x, self.weight.transpose(-1, -2)) + self.bias.unsqueeze(-2)

    def extra_repr(self) -> str:
        shared = ", shared weight" if self.weight.shape[0] == 1 and self.num_models > 1 else ""
        return f"models={self.num_models}, in_features={self.in_features}, out_features={self.out_features}{shared}"


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(bias)
    return lin


def unbatch_mlp(mlp: nn.Sequential) -> List[nn.Sequential]:
    """Split an MLP built from :class:`BatchedLinear` (and batched :class:`Clamp`) into
    ``N`` standard ``nn.Sequential`` of ``nn.Linear`` and activation modules (copies)."""
    num = None
    for mod in mlp:
        if isinstance(mod, BatchedLinear):
            num = mod.num_models if num is None else num
            if mod.num_models != num:
                raise ValueError(f"unbatch_mlp: {mod} holds {mod.num_models} models, expected {num}")
    if num is None:
        raise ValueError("unbatch_mlp: the MLP has no BatchedLinear module (it is not batched)")
    out = []
    for i in range(num):
        mods = []
        for mod in mlp:
            if isinstance(mod, BatchedLinear):
                w = mod.weight[0 if mod.weight.shape[0] == 1 else i]
                mods.append(_linear(w.detach(), mod.bias[i].detach()))
            elif isinstance(mod, Clamp) and mod.lower.dim() == 2:
                mods.append(Clamp(mod.lower[i].clone(), mod.upper[i].clone()))
            else:
                mods.append(copy.deepcopy(mod))
        out.append(nn.Sequential(*mods))
    return out


def mlp_parameter_count(mlp: nn.Module) -> Dict[str, int]:
    """Parameter counts of one MLP (per model for a batched MLP).

    Returns a dict with ``parameters`` (every weight and bias entry, as a dense MLP
    tool counts them), ``nonzero`` (entries that are not exactly zero) and
    ``clamp_bounds`` (finite :class:`Clamp` bounds, which are buffers, not parameters).
    For :class:`BatchedLinear` a shared weight counts once per model.
    """
    total = nonzero = bounds = 0
    num = 1
    for mod in mlp.modules():
        if isinstance(mod, BatchedLinear):
            num = mod.num_models
    for mod in mlp.modules():
        if isinstance(mod, BatchedLinear):
            reps = num if mod.weight.shape[0] == 1 else 1
            total += (mod.weight.numel() * reps + mod.bias.numel()) // num
            nonzero += (int((mod.weight != 0).sum()) * reps + int((mod.bias != 0).sum())) // num
        elif isinstance(mod, nn.Linear):
            total += mod.weight.numel() + (mod.bias.numel() if mod.bias is not None else 0)
            nonzero += int((mod.weight != 0).sum()) + (int((mod.bias != 0).sum()) if mod.bias is not None else 0)
        elif isinstance(mod, Clamp):
            bounds += int(torch.isfinite(mod.lower).sum() + torch.isfinite(mod.upper).sum()) // num
    return {"parameters": int(total), "nonzero": int(nonzero), "clamp_bounds": int(bounds)}


# --------------------------------------------------------------------------- activations
#: base-function name -> module factory (``zero`` is carried by identity units with zero weights)
_FACTORIES = {
    "silu": nn.SiLU,
    "identity": nn.Identity,
    "zero": nn.Identity,
    "relu": nn.ReLU,
    "relu2": lambda: ReLUPower(2),
    "relu3": lambda: ReLUPower(3),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
}


def activation_module(name: str) -> nn.Module:
    """The ``nn.Module`` computing the base function ``name`` (see
    :data:`~wskan_ext.kan.spline.BASE_FUNCTIONS`); ``zero`` maps to ``nn.Identity``
    (its units then get zero outgoing weights)."""
    try:
        return _FACTORIES[name]()
    except KeyError:
        raise ValueError(f"no activation module for base function {name!r}; known: {sorted(_FACTORIES)}") from None


def activation_name(mod: nn.Module, where: str = "") -> str:
    """The base-function name computed by an activation module, or ``ValueError``
    naming the module when it is not one of :data:`~wskan_ext.kan.spline.BASE_FUNCTIONS`
    (with the same parameters)."""
    pre = f"{where}: " if where else ""
    if isinstance(mod, nn.Identity):
        return "identity"
    if isinstance(mod, ReLUPower):
        if mod.power > 3:
            raise ValueError(f"{pre}{mod!r} has no base function (relu, relu2, relu3 exist); use route='relu_power'")
        return {1: "relu", 2: "relu2", 3: "relu3"}[mod.power]
    simple = {nn.SiLU: "silu", nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
    for cls, name in simple.items():
        if type(mod) is cls:
            return name
    checks = {
        nn.GELU: ("gelu", lambda m: m.approximate == "none"),
        nn.ELU: ("elu", lambda m: m.alpha == 1.0),
        nn.LeakyReLU: ("leaky_relu", lambda m: m.negative_slope == 0.01),
        nn.Softplus: ("softplus", lambda m: m.beta == 1.0 and m.threshold == 20.0),
    }
    if type(mod) in checks:
        name, ok = checks[type(mod)]
        if ok(mod):
            return name
        raise ValueError(f"{pre}{mod!r} has non-default parameters; only {type(mod).__name__}() is supported")
    raise ValueError(
        f"{pre}unsupported module {mod!r} ({type(mod).__module__}.{type(mod).__qualname__}); "
        f"supported activations: {sorted(set(_FACTORIES) - {'zero'})} (plus ReLUPower), "
        "layers: nn.Linear, BatchedLinear, nn.Identity, nn.Dropout (as identity), Clamp + SplitActivation from kan_to_mlp"
    )
