"""wskan_ext: weight-space learning on Kolmogorov-Arnold Networks.

Public API (documented in the API reference, ``docs/api.rst``)::

    from wskan_ext import KANWeights, KAN, as_kan_weights, register_family, permute_hidden
    from wskan_ext import kan_to_graph, graph_to_kan, WSKANLayer, WSKAN, kan_to_mlp, mlp_to_kan

Subpackages: ``wskan_ext.adapters`` (pykan, efficient-kan, nfn, DWS, flat vectors),
``wskan_ext.equivariance_tests`` (the equivariance suite, also ``wskan check``),
``wskan_ext.zoo`` (datasets, zoo building and storage), ``wskan_ext.tasks`` (meta-learning
tasks); the command line is ``wskan`` (``wskan --help``).

Names are imported on first use (PEP 562), so ``import wskan_ext`` -- and the pytest
plugin of the equivariance suite, which every pytest run in an environment with
wskan_ext installed loads -- does not pay for torch and PyG until they are needed.
"""

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: public name -> submodule that defines it
_EXPORTS = {
    "KANWeights": ".kan",
    "KAN": ".kan",
    "permute_hidden": ".kan",
    "as_kan_weights": ".registry",
    "register_family": ".registry",
    "families": ".registry",
    "kan_to_graph": ".graph",
    "graph_to_kan": ".graph",
    "WSKANLayer": ".nn",
    "WSKAN": ".nn",
    "kan_to_mlp": ".convert",
    "mlp_to_kan": ".convert",
    "align_to": ".align",
}

__all__ = list(_EXPORTS) + ["__version__"]


def __getattr__(name):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'wskan_ext' has no attribute {name!r}") from None
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for static analysers only
    from .align import align_to
    from .convert import kan_to_mlp, mlp_to_kan
    from .graph import graph_to_kan, kan_to_graph
    from .kan import KAN, KANWeights, permute_hidden
    from .nn import WSKAN, WSKANLayer
    from .registry import as_kan_weights, families, register_family
