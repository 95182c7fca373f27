"""Objectives for input optimization, composable with ``+ - * / **``, unary ``-`` and ``abs()``.

Every objective takes a target (an ``nn.Module`` or a dotted module name resolved when the optimization
starts) and a ``batch_index`` (an int or ``[start, end]``).
"""
from .activation import (
    ActivationInterpolation,
    ChannelActivation,
    DeepDream,
    LayerActivation,
    NeuronActivation,
)
from .base import BaseLoss, CompositeLoss, Loss, default_loss_summarize, sum_loss_list
from .direction import (
    ActivationWeights,
    AngledNeuronDirection,
    Direction,
    FacetLoss,
    NeuronDirection,
    TensorDirection,
    VectorLoss,
)
from .regularizer import L1, L2, Alignment, Diversity, L2Mean, TotalVariation
from .parse import parse
from .style import ContentLoss, ReferenceDistance, StyleLoss, Transparency, gram_matrix

__all__ = [
    "Loss",
    "BaseLoss",
    "CompositeLoss",
    "sum_loss_list",
    "default_loss_summarize",
    "LayerActivation",
    "ChannelActivation",
    "NeuronActivation",
    "DeepDream",
    "ActivationInterpolation",
    "TotalVariation",
    "L1",
    "L2",
    "L2Mean",
    "Diversity",
    "Alignment",
    "Direction",
    "NeuronDirection",
    "AngledNeuronDirection",
    "TensorDirection",
    "ActivationWeights",
    "VectorLoss",
    "FacetLoss",
    "parse",
    "gram_matrix",
    "StyleLoss",
    "ContentLoss",
    "ReferenceDistance",
    "Transparency",
]
