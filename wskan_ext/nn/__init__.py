"""Neural networks on KAN-graphs: :class:`WSKANLayer` and :class:`WSKAN`, and the
pruning read-out :class:`AttributionHead`."""

from .attribution import AttributionHead, attribution_log_scores
from .layer import WSKANLayer, mlp
from .model import WSKAN, WSKANOutput

__all__ = ["WSKANLayer", "WSKAN", "WSKANOutput", "mlp", "AttributionHead", "attribution_log_scores"]
