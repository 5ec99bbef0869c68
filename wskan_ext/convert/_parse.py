"""Read an MLP into a normal form: KAN layers ``(activation on inputs, affine map)``.

The normal form of a feed-forward MLP is the alternating list

    sigma_0, (W_0, b_0), sigma_1, (W_1, b_1), ..., sigma_{L-1}, (W_{L-1}, b_{L-1})

where consecutive ``Linear`` modules (and eval-mode ``BatchNorm1d``, an affine map
per feature) are composed into one affine map, a missing
leading activation is the identity, two activations in a row get an identity affine
between them, and a trailing activation gets an identity affine after it. Affine maps
carry a model axis ``B`` (1 for a single MLP; a weight axis of 1 broadcasts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Union

import torch
from torch import nn

from .modules import BatchedLinear, Clamp, SplitActivation

__all__ = ["Affine", "KanForm", "compose", "parse_mlp"]


@dataclass
class Affine:
    """``y = x W^T + b``; weight ``(B or 1, out, in)``, bias ``(B, out)`` (work dtype)."""

    weight: torch.Tensor
    bias: torch.Tensor
    where: str

    def then(self, other: "Affine") -> "Affine":
        w = torch.matmul(other.weight, self.weight)
        b = torch.einsum("...oi,...i->...o", other.weight, self.bias) + other.bias
        return Affine(w, b, f"{self.where} + {other.where}")

    def is_identity(self) -> bool:
        w = self.weight
        return (
            w.shape[-1] == w.shape[-2]
            and not bool(self.bias.any())
            and torch.equal(w, torch.eye(w.shape[-1], dtype=w.dtype, device=w.device).expand_as(w))
        )


def compose(chain: List[Affine]) -> Affine:
    """One affine map for a chain of consecutive ``Linear`` layers (identities skipped,
    so a factored kan_to_mlp MLP never materialises its dense merged form)."""
    parts = [a for a in chain if not a.is_identity()] or chain[:1]
    out = parts[0]
    for a in parts[1:]:
        out = out.then(a)
    return out


@dataclass
class KanForm:
    """A ``[Clamp], SplitActivation([nK, n], [ReLUPower(k), base])`` pair from kan_to_mlp."""

    split: SplitActivation
    clamp: Optional[Clamp]
    where: str


Activation = Union[nn.Module, KanForm]


def _flatten(mlp: nn.Module, prefix: str = "") -> List[tuple]:
    if isinstance(mlp, nn.Sequential):
        out = []
        for name, mod in mlp.named_children():
            out.extend(_flatten(mod, f"{prefix}{name}" if not prefix else f"{prefix}.{name}"))
        return out
    return [(prefix or type(mlp).__name__, mlp)]


def _affine(name: str, mod: nn.Module, wd: torch.dtype) -> Affine:
    if isinstance(mod, BatchedLinear):
        w, b = mod.weight.detach().to(wd), mod.bias.detach().to(wd)
    else:
        w = mod.weight.detach().to(wd).unsqueeze(0)
        b = (mod.bias.detach().to(wd) if mod.bias is not None else w.new_zeros(w.shape[1])).unsqueeze(0)
    return Affine(w, b, f"module {name!r} ({type(mod).__name__})")


def _identity(n: int, like: torch.Tensor, where: str) -> Affine:
    return Affine(torch.eye(n, dtype=like.dtype, device=like.device).unsqueeze(0), like.new_zeros(1, n), where)


def _batchnorm_affine(name: str, mod: nn.BatchNorm1d, wd: torch.dtype) -> Affine:
    """An eval-mode ``BatchNorm1d`` as the affine map it is:
    ``y = (x - mean) * gamma / sqrt(var + eps) + beta``."""
    where = f"module {name!r} (BatchNorm1d)"
    if mod.training:
        raise ValueError(
            f"{where}: a training-mode normalisation layer normalises with batch statistics, which is "
            "not a fixed function; call .eval() so that its running statistics are folded exactly"
        )
    if mod.running_mean is None or mod.running_var is None:
        raise ValueError(
            f"{where}: track_running_stats=False normalises with batch statistics even in eval mode "
            "(not a fixed function); it cannot be folded"
        )
    mean, var = mod.running_mean.detach().to(wd), mod.running_var.detach().to(wd)
    if not (torch.isfinite(mean).all() and torch.isfinite(var).all()) or bool((var < 0).any()):
        raise ValueError(f"{where}: running statistics must be finite with running_var >= 0")
    scale = torch.rsqrt(var + mod.eps)
    if mod.weight is not None:
        scale = scale * mod.weight.detach().to(wd)
    bias = -mean * scale + (mod.bias.detach().to(wd) if mod.bias is not None else 0.0)
    return Affine(torch.diag(scale).unsqueeze(0), bias.unsqueeze(0), f"module {name!r} (BatchNorm1d, folded)")


_NORMS = tuple(
    getattr(nn, name)
    for name in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "InstanceNorm1d", "InstanceNorm2d",
                 "InstanceNorm3d", "LayerNorm", "GroupNorm", "LocalResponseNorm", "RMSNorm")
    if hasattr(nn, name)  # RMSNorm needs torch >= 2.4
)


def parse_mlp(mlp: nn.Module, wd: torch.dtype):
    """Return ``(layers, num_models)``: ``layers`` is a list of ``(activation, chain)``
    (the normal form above; ``chain`` lists the consecutive affine maps, to be
    :func:`compose`-d) and ``num_models`` the batch size (``None`` if unbatched)."""
    if not isinstance(mlp, nn.Module):
        raise TypeError(f"mlp_to_kan expects an nn.Sequential (or nn.Linear), got {type(mlp).__name__}")
    items = _flatten(mlp)
    tokens: List[tuple] = []  # ("aff", Affine) | ("act", Activation)
    num_models = None
    i = 0
    folded_norm = None
    while i < len(items):
        name, mod = items[i]
        is_bn = type(mod) is nn.BatchNorm1d
        if isinstance(mod, (nn.Linear, BatchedLinear)) or is_bn:
            if is_bn:
                aff = _batchnorm_affine(name, mod, wd)
                folded_norm = folded_norm or name
            else:
                aff = _affine(name, mod, wd)
            if isinstance(mod, BatchedLinear):
                if num_models not in (None, mod.num_models):
                    raise ValueError(f"module {name!r}: holds {mod.num_models} models, earlier modules {num_models}")
                num_models = mod.num_models
            if tokens and tokens[-1][0] == "aff":
                prev = tokens[-1][1][-1]
                if prev.weight.shape[-2] != aff.weight.shape[-1]:
                    raise ValueError(
                        f"{aff.where}: expects {aff.weight.shape[-1]} input features but the previous "
                        f"layer ({prev.where}) gives {prev.weight.shape[-2]} (shapes do not chain)"
                    )
                tokens[-1][1].append(aff)
            else:
                tokens.append(("aff", [aff]))
        elif isinstance(mod, (nn.Identity, nn.Dropout, nn.Flatten)):
            pass  # no-ops at inference (Dropout in eval mode; Flatten of (s, n) inputs)
        elif isinstance(mod, Clamp):
            nxt = items[i + 1][1] if i + 1 < len(items) else None
            if not isinstance(nxt, SplitActivation):
                raise ValueError(
                    f"module {name!r} (Clamp): only supported directly before a SplitActivation produced by kan_to_mlp"
                )
            tokens.append(("act", KanForm(nxt, mod, f"modules {name!r}, {items[i + 1][0]!r}")))
            i += 1
        elif isinstance(mod, SplitActivation):
            tokens.append(("act", KanForm(mod, None, f"module {name!r}")))
        elif isinstance(mod, _NORMS):
            raise ValueError(
                f"module {name!r} ({type(mod).__name__}): normalisation layers other than an eval-mode "
                "nn.BatchNorm1d (folded exactly) are not supported"
            )
        elif any(True for _ in mod.parameters()):
            raise ValueError(
                f"module {name!r} ({type(mod).__name__}): only nn.Linear / BatchedLinear layers and "
                "element-wise activations are supported"
            )
        else:
            tokens.append(("act", (name, mod)))
        i += 1
    if folded_norm is not None and num_models is not None:
        raise ValueError(
            f"module {folded_norm!r} (BatchNorm1d): cannot be folded into a batched MLP (BatchedLinear inputs "
            "(N, s, F) would put the samples on BatchNorm1d's channel axis)"
        )
    affs = [t[1][0] for t in tokens if t[0] == "aff"]
    if not affs:
        raise ValueError("mlp_to_kan: the MLP has no nn.Linear / BatchedLinear module")
    # chain check across activations
    width = None
    for kind, t in tokens:
        if kind == "aff":
            if width is not None and t[0].weight.shape[-1] != width:
                raise ValueError(
                    f"{t[0].where}: expects {t[0].weight.shape[-1]} input features but the previous Linear "
                    f"gives {width} (shapes do not chain)"
                )
            width = t[-1].weight.shape[-2]
    # normal form
    ref = affs[0].weight
    layers = []
    pending = None  # activation waiting for its affine
    width = affs[0].weight.shape[-1]
    for kind, t in tokens:
        if kind == "aff":
            layers.append((pending if pending is not None else ("<input>", nn.Identity()), t))
            pending = None
            width = t[-1].weight.shape[-2]
        else:
            if pending is not None:
                layers.append((pending, [_identity(width, ref, "identity (between activations)")]))
            pending = t
    if pending is not None:
        layers.append((pending, [_identity(width, ref, "identity (after the last activation)")]))
    return layers, num_models
