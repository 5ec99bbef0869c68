r"""The KAN-graph: KANs as PyG graphs (:func:`kan_to_graph`) and back (:func:`graph_to_kan`).

Nodes are all neurons of all layers; a directed edge ``(l, i) -> (l+1, j)`` carries
the edge function ``phi_ij`` of layer ``l``. For one KAN with widths ``[n_0..n_L]``
neuron ``(l, i)`` is node ``node_offset[l] + i`` and edge ``(l, i, j)`` is edge
``edge_offset[l] + i * n_{l+1} + j`` (layers in order, source-major). Graphs of many
KANs are concatenated PyG-style into one :class:`~torch_geometric.data.Batch`.

Fields of the returned batch (``N`` nodes, ``E`` edges, ``B`` graphs):

=================  ==============  ===========================================================
field              shape           content
=================  ==============  ===========================================================
``x``              ``(N, F)``      ``[knots (K) | node_scale | node_bias | role one-hot (3)]``
                                   for ``encoding="coef"`` (``K = G+2k+1``; output neurons have
                                   zero knots, input neurons the affine ``(1, 0)``);
                                   ``[lo | hi | node_scale | node_bias | role one-hot (3)]``
                                   for ``encoding="values"`` (``[lo, hi]`` = grid range)
``edge_index``     ``(2, E)``      ``(source, target)`` node indices
``edge_attr``      ``(E, C)``      ``"coef"``: ``KANWeights.edge_features()`` (``C=G+k+1``);
                                   ``"values"``: ``phi_ij`` at ``num_points`` equispaced points
                                   of the source neuron's grid range
``edge_coef``      ``(E, G+k)``    raw ``coef`` (``"coef"`` only; for exact inversion)
``edge_scales``    ``(E, 3)``      raw ``(scale_base, scale_sp, mask)`` (``"coef"`` only)
``node_layer``     ``(N,)``        layer ``l`` of the neuron
``node_pos``       ``(N,)``        index ``i`` of the neuron within its layer
``node_role``      ``(N,)``        0 input, 1 hidden, 2 output
``node_k``         ``(N,)``        spline order of the layer the neuron feeds (-1 for outputs)
``node_base_fun``  ``(N,)``        index in ``BASE_FUNCTION_NAMES`` of that layer's base
                                   function (-1 for outputs)
``edge_layer``     ``(E,)``        layer ``l`` of the edge
``kan_encoding``   ``(B,)``        0 for ``"coef"``, 1 for ``"values"``
``batch``          ``(N,)``        graph of each node (PyG); ``ptr``: ``(B+1,)`` node offsets
=================  ==============  ===========================================================
"""

from .build import kan_to_graph, make_batch
from .inverse import edge_output_to_kan, graph_groups, graph_to_kan, node_output_to_kan
from .layout import BASE_FUNCTION_NAMES, NODE_EXTRA_FEATURES, ROLE_HIDDEN, ROLE_INPUT, ROLE_OUTPUT, _template

__all__ = [
    "kan_to_graph",
    "graph_to_kan",
    "edge_output_to_kan",
    "node_output_to_kan",
    "graph_groups",
    "make_batch",
    "BASE_FUNCTION_NAMES",
    "ROLE_INPUT",
    "ROLE_HIDDEN",
    "ROLE_OUTPUT",
    "NODE_EXTRA_FEATURES",
]
