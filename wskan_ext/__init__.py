"""wskan_ext: weight-space learning on Kolmogorov-Arnold Networks.

Public API (see ``DESIGN.md`` section 6)::

    from wskan_ext import KANWeights, KAN, as_kan_weights, register_family, permute_hidden
"""

from .kan import KAN, KANWeights, permute_hidden
from .registry import as_kan_weights, families, register_family
from .graph import graph_to_kan, kan_to_graph
from .nn import WSKAN, WSKANLayer
from .convert import kan_to_mlp, mlp_to_kan
from .align import align_to

__version__ = "0.1.0"

__all__ = [
    "KANWeights",
    "KAN",
    "as_kan_weights",
    "register_family",
    "families",
    "permute_hidden",
    "kan_to_graph",
    "graph_to_kan",
    "WSKANLayer",
    "WSKAN",
    "kan_to_mlp",
    "mlp_to_kan",
    "align_to",
    "__version__",
]
