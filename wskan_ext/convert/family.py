"""The ``mlp`` family of :func:`~wskan_ext.as_kan_weights`: a plain MLP (an
``nn.Sequential`` of ``nn.Linear`` / :class:`~wskan_ext.convert.BatchedLinear` and
activation modules) converted by the exact MLP -> KAN construction, so MLP and KAN zoos
share one pipeline. Registered through the entry-point group ``wskan_ext.families``."""

from __future__ import annotations

from torch import nn

from ..kan.weights import KANWeights
from .modules import BatchedLinear
from .mlp_to_kan import mlp_to_kan

__all__ = ["register"]


def _detect(obj) -> bool:
    return isinstance(obj, nn.Sequential) and any(isinstance(m, (nn.Linear, BatchedLinear)) for m in obj.modules())


def _convert(obj, **kwargs) -> KANWeights:
    kwargs.setdefault("route", "exact")
    return mlp_to_kan(obj, **kwargs)


def register():
    """``(name, detect, convert)`` of the ``mlp`` family."""
    return "mlp", _detect, _convert
