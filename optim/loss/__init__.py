"""Objectives for input optimization, composable with ``+ - * / **``, unary ``-`` and ``abs()``.

Every loss class takes its target(s) and required values (channel index, direction, reference) positionally;
``batch_index`` and every tuning knob are keyword-only::

    ChannelActivation(target, channel_index, *, batch_index=None)
    NeuronActivation(target, channel_index, *, x=None, y=None, batch_index=None)
    ClassLogit(target, class_index, *, batch_index=None, num_classes=None)

A target is an ``nn.Module`` or a dotted module name resolved when the optimization starts. Every index is
checked by one function, :func:`check_index`: channel and position indices must be ints ``>= 0`` when the
loss is built and inside the activation when it is called; ``batch_index`` is ``None`` (the whole batch), an
int or a ``[start, end]`` pair, negative values counting from the end as in Python (:func:`batch_slice`).

Every loss reads its layer through :mod:`optim.layouts` (keyword-only ``layout=``, inferred by default): on a
token layer ``(N, L, D)`` a channel is a hidden unit and a position a patch token on the token grid (the
class token is reached with ``token=``); channels-last stages (``swin_t``) are read as channels.

Example:
    >>> import torch
    >>> acts = {"mixed4a": torch.arange(8.0).reshape(2, 4, 1, 1)}
    >>> ChannelActivation("mixed4a", 1, batch_index=-1)(acts).flatten().tolist()
    [5.0]
    >>> ChannelActivation("mixed4a", -1)
    Traceback (most recent call last):
    ...
    ValueError: channel_index must be >= 0, got -1
    >>> vit_block = {"blocks.11": torch.zeros(1, 197, 768)}  # a class token and 14 x 14 patch tokens
    >>> ChannelActivation("blocks.11", 300)(vit_block).shape  # hidden unit 300 on the token grid
    torch.Size([1, 14, 14])
"""
from .activation import (
    ActivationInterpolation,
    ChannelActivation,
    ClassLogit,
    DeepDream,
    LayerActivation,
    NeuronActivation,
    get_neuron_pos,
)
from .base import (
    BaseLoss,
    CompositeLoss,
    Loss,
    batch_slice,
    check_index,
    default_loss_summarize,
    module_op,
    rmodule_op,
    sum_loss_list,
)
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
    "check_index",
    "batch_slice",
    "module_op",
    "rmodule_op",
    "get_neuron_pos",
    "LayerActivation",
    "ChannelActivation",
    "ClassLogit",
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
