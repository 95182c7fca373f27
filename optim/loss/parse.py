"""Turn Lucent-style objective strings (``"mixed4a:97"``) into losses.

The grammar is ``layer``, ``layer:channel`` or ``layer:channel:x:y``, where ``layer`` is a dotted module
name of the model (``"blocks.10"``), ``channel``, ``x`` and ``y`` are non-negative integers:

- ``"layer"``: :class:`~optim.loss.DeepDream` on the whole layer;
- ``"layer:channel"``: :class:`~optim.loss.ChannelActivation`;
- ``"layer:channel:x:y"``: :class:`~optim.loss.NeuronActivation` at column ``x``, row ``y``.

On a token layer ``(N, L, D)`` (a ViT block) the channel is a hidden unit and ``x``/``y`` a patch token on
the token grid, as for the loss classes (:mod:`optim.layouts`): ``"blocks.11:300"`` is hidden unit 300.
"""
from __future__ import annotations

from typing import List, Optional

import torch.nn as nn

from .._utils import resolve_module
from ..layouts import LayoutArg
from .activation import ChannelActivation, DeepDream, NeuronActivation
from .base import BaseLoss, BatchIndex

__all__ = ["parse"]

_GRAMMAR = "'layer', 'layer:channel' or 'layer:channel:x:y'"


def _non_negative_int(text: str, what: str, spec: str) -> int:
    value = text.strip()
    if not value.isdigit():
        raise ValueError(f"the {what} in objective {spec!r} must be a non-negative integer, got {text!r}")
    return int(value)


def parse(
    spec: str, *, batch_index: BatchIndex = None, model: Optional[nn.Module] = None, layout: LayoutArg = None
) -> BaseLoss:
    """Build the loss a Lucent-style objective string describes.

    Args:
        spec: ``"layer"`` (DeepDream), ``"layer:channel"`` (channel) or ``"layer:channel:x:y"`` (neuron).
        batch_index: keyword-only; which images of the batch the loss reads (``None``: all, an int, or
            ``[start, end]``; negative values count from the end, see :class:`~optim.loss.BaseLoss`).
        model: if given, the layer name is checked against the model now (a ``ValueError`` listing close
            names for an unknown layer) instead of when the optimization starts.
        layout: the layer's layout (``None``: inferred; see :class:`~optim.loss.BaseLoss`).

    Returns:
        A :class:`~optim.loss.BaseLoss` whose target is the dotted layer name; it composes with the usual
        loss algebra.

    Raises:
        TypeError: when ``spec`` is not a string.
        ValueError: for a malformed string or, with ``model``, an unknown layer.

    Example:
        >>> parse("mixed4b:154:3:4", batch_index=-1)
        NeuronActivation(mixed4b, 154, x=3, y=4, batch_index=-1)
        >>> pos_neg = parse("mixed4b:154", batch_index=0) - parse("mixed4b:154", batch_index=1)
        >>> pos_neg.targets
        ['mixed4b']
        >>> import torch
        >>> parse("block:1")({"block": torch.arange(10.0).reshape(1, 5, 2)}).tolist()  # hidden unit 1, 2x2 grid
        [[[3.0, 5.0], [7.0, 9.0]]]
    """
    if not isinstance(spec, str):
        raise TypeError(f"an objective string must be a str, got {type(spec).__name__}")
    parts: List[str] = spec.split(":")
    layer = parts[0].strip()
    if not layer or len(parts) not in (1, 2, 4):
        raise ValueError(f"cannot parse objective {spec!r}: expected {_GRAMMAR}")
    if model is not None:
        resolve_module(model, layer)
    if len(parts) == 1:
        return DeepDream(layer, batch_index=batch_index, layout=layout)
    channel = _non_negative_int(parts[1], "channel", spec)
    if len(parts) == 2:
        return ChannelActivation(layer, channel, batch_index=batch_index, layout=layout)
    x = _non_negative_int(parts[2], "x position", spec)
    y = _non_negative_int(parts[3], "y position", spec)
    return NeuronActivation(layer, channel, x=x, y=y, batch_index=batch_index, layout=layout)
