"""The KAN equivariance suite: reusable property-based checks for metanetworks on KANs.

Modelled on ``e3nn.util.test`` (``equivariance_error`` / ``assert_equivariant`` with
dtype-dependent tolerances), for the hidden-neuron permutation group of KANs:

* :mod:`.strategies` -- Hypothesis strategies (architectures, weights, pykan models,
  permutations, mixed batches, inputs inside and outside the grid);
* :mod:`.actions` -- the group action on each input format and output kind (pluggable);
* :mod:`.checks` -- :func:`equivariance_error`, :func:`assert_equivariant`,
  :func:`assert_invariant`, :func:`assert_sensitive`;
* :mod:`.plugin` -- the pytest plugin (options ``--wskan-profile``, ``--wskan-dtype``,
  fixture ``kan_equivariance``);
* ``python -m wskan_ext.equivariance_tests --model pkg.mod:factory`` -- the whole suite
  on your model, as a pass/fail table.

Names are imported lazily so that the pytest plugin stays light.
"""

import importlib

_EXPORTS = {
    "equivariance_error": "checks",
    "equivariance_check": "checks",
    "assert_equivariant": "checks",
    "assert_invariant": "checks",
    "assert_sensitive": "checks",
    "sensitivity_check": "checks",
    "random_permutations": "checks",
    "EquivarianceResult": "checks",
    "FLOAT_TOLERANCE": "checks",
    "default_tolerance": "checks",
    "SENSITIVITY_THRESHOLD": "checks",
    "default_min_change": "checks",
    "InputFormat": "actions",
    "OutputAction": "actions",
    "register_format": "actions",
    "register_output": "actions",
    "formats": "actions",
    "outputs": "actions",
    "permute_inputs": "actions",
    "permute_outputs": "actions",
    "run_suite": "suite",
}
_MODULES = ("strategies", "checks", "actions", "layout", "examples", "plugin", "suite")

__all__ = sorted(_EXPORTS) + ["strategies", "actions", "checks"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
