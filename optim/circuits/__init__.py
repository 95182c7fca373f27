"""Circuits: expanded weights between non-adjacent layers, weight heatmaps and connection rankings.

Example (EfficientNet-Lite0 with its ReLU6s skipped, so the path between two blocks is linear; with
``opt.models.googlenet(pretrained=True, use_linear_modules_only=True)``, whose weights download once, the same
calls give the InceptionV1 circuits of the Distill thread, e.g. ``mixed4a_relu`` -> ``mixed4b_relu``)::

    >>> import optim as opt
    >>> model = opt.models.efficientnet_lite0(pretrained=True).eval()
    >>> opt.models.skip_layers(model, opt.models.RedirectedRelu6Layer)
    >>> x = torch.zeros(1, 3, 128, 128)
    >>> w = opt.circuits.extract_expanded_weights(model, "blocks.7", "blocks.8", 5, model_input=x)
    >>> w.shape  # [channels of blocks.8, channels of blocks.7, 5, 5]
    torch.Size([112, 80, 5, 5])
    >>> best = opt.circuits.top_connections(w, k=2, target_channel=7, score="sum")  # most excitatory first
    >>> [c.source_channel for c in best]
    [34, 8]
    >>> heatmap = opt.circuits.weights_to_heatmap_2d(w[7, 34] / w[7].abs().max())  # blue-white-red
    >>> heatmap.shape
    torch.Size([3, 5, 5])
"""
from ._connections import Connection, top_connections
from ._expanded_weights import crop_to_footprint, extract_expanded_weights
from ._heatmap import DEFAULT_HEATMAP_COLORS, weights_to_heatmap_2d

__all__ = [
    "extract_expanded_weights",
    "crop_to_footprint",
    "weights_to_heatmap_2d",
    "top_connections",
    "Connection",
    "DEFAULT_HEATMAP_COLORS",
]
