"""Neural networks on KAN-graphs: :class:`WSKANLayer` and :class:`WSKAN`."""

from .layer import WSKANLayer, mlp
from .model import WSKAN, WSKANOutput

__all__ = ["WSKANLayer", "WSKAN", "WSKANOutput", "mlp"]
