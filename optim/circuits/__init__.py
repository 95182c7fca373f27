"""Circuits: expanded weights between non-adjacent layers, weight heatmaps and connection rankings.

Example::

    import optim as opt
    linear = opt.models.googlenet(pretrained=True, use_linear_modules_only=True)
    w = opt.circuits.extract_expanded_weights(linear, linear.mixed4a_relu, linear.mixed4b_relu, 5)
    heatmap = opt.weights_to_heatmap_2d(w[443, 308] / w[443].abs().max())
"""
from ._connections import Connection, top_connections
from ._expanded_weights import extract_expanded_weights
from ._heatmap import DEFAULT_HEATMAP_COLORS, weights_to_heatmap_2d

__all__ = [
    "extract_expanded_weights",
    "weights_to_heatmap_2d",
    "top_connections",
    "Connection",
    "DEFAULT_HEATMAP_COLORS",
]
