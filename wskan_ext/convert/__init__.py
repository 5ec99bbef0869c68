"""Exact KAN <-> MLP conversion, batched, on any device (see ``docs/convert.rst``).

* :func:`kan_to_mlp` -- KAN(s) -> ``nn.Sequential`` of ``nn.Linear`` (or
  :class:`BatchedLinear`), :class:`Clamp` and :class:`SplitActivation`;
* :func:`mlp_to_kan` -- MLP(s) -> :class:`~wskan_ext.KANWeights` by one of three routes
  (``exact``, ``relu_spline``, ``relu_power``);
* :func:`mlp_from_state_dict` -- an ``nn.Sequential`` rebuilt from its state dict (the
  ``wskan convert mlp-to-kan`` reader).
"""

from .kan_to_mlp import kan_to_mlp
from .mlp_to_kan import ROUTES, greville_abscissae, marsden_coefficients, mlp_to_kan
from .state_dict import mlp_from_state_dict
from .modules import (
    BatchedLinear,
    Clamp,
    ReLUPower,
    SplitActivation,
    activation_module,
    activation_name,
    mlp_parameter_count,
    unbatch_mlp,
)

__all__ = [
    "kan_to_mlp",
    "mlp_to_kan",
    "mlp_from_state_dict",
    "ROUTES",
    "marsden_coefficients",
    "greville_abscissae",
    "BatchedLinear",
    "Clamp",
    "ReLUPower",
    "SplitActivation",
    "activation_module",
    "activation_name",
    "mlp_parameter_count",
    "unbatch_mlp",
]
