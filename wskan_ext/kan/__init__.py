"""The KAN family: canonical weights, spline maths, trainable module."""

from .module import KAN
from .spline import BASE_FUNCTIONS, bspline_basis, spline_eval, truncated_power_coefficients, uniform_grid
from .permute import permute_hidden, random_hidden_permutations
from .transforms import mix_logits, negate_output, reflect_input
from .weights import EDGE_FIELDS, FIELDS, KANWeights, layer_forward

__all__ = [
    "KAN",
    "KANWeights",
    "permute_hidden",
    "random_hidden_permutations",
    "reflect_input",
    "mix_logits",
    "negate_output",
    "layer_forward",
    "bspline_basis",
    "spline_eval",
    "truncated_power_coefficients",
    "uniform_grid",
    "BASE_FUNCTIONS",
    "FIELDS",
    "EDGE_FIELDS",
]
