"""Recipes on one or two channels: diversity, neuron vs channel, positive/negative, interpolation."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn

from .._utils import check_positive
from ..loss.activation import ActivationInterpolation, ChannelActivation, NeuronActivation
from ..loss.base import BaseLoss, Loss
from ..loss.parse import parse
from ..loss.regularizer import Alignment, Diversity
from ..optimization.defaults import DEFAULT_STEPS, default_image
from ..render import render_vis
from ._common import ChannelSpec, channel_spec, image_size

__all__ = ["diversity", "neuron_vs_channel", "positive_negative", "interpolation"]


def _render(model: nn.Module, loss: Loss, size: Optional[int], batch: int, steps: int, **kwargs) -> torch.Tensor:
    """One :func:`~optim.render.render_vis` run (the render core, no loop of its own) of ``batch`` images."""
    hw = image_size(model, size)
    thresholds = (check_positive(steps, "steps", zero=True),)  # named as the recipes call it
    (out,) = render_vis(model, loss, image=lambda: default_image(hw, batch=batch), thresholds=thresholds, **kwargs)
    return out


def diversity(
    model: nn.Module,
    objective: Union[Loss, str],
    n: int = 4,
    layer: Optional[Union[str, nn.Module]] = None,
    weight: float = 1.0,
    size: Optional[int] = None,
    steps: int = DEFAULT_STEPS,
    **render_kwargs,
) -> torch.Tensor:
    """Several different images of one feature (Lucid's diversity): the objective on every image of a
    batch plus ``weight`` times :class:`~optim.loss.Diversity` (dissimilar Gram matrices at ``layer``).

    Args:
        model: the network (left as it was).
        objective: a loss over the whole batch, or a string such as ``"blocks.10:7"``.
        n: number of images.
        layer: where the Gram matrices are compared (default: the objective's layer, when it has one).
        weight: strength of the diversity term.
        size: image side (default: the model's native size, else ``DEFAULT_SIZE``; see
            :func:`~optim.models.preprocess.render_inputs`).
        steps: optimization steps.
        **render_kwargs: passed to :func:`~optim.render_vis` (``lr``, ``transforms``, ``seed``, ``callback``, ...).

    Returns:
        An ``ImageTensor`` ``[n, 3, size, size]``.

    Example::

        >>> images = diversity(model, "blocks.10:7", n=3, weight=2.0, size=32, steps=4, progress=False, seed=0)
        >>> images.shape
        torch.Size([3, 3, 32, 32])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"diversity needs n >= 2 images, got {n!r}")
    loss = parse(objective, model=model) if isinstance(objective, str) else objective
    if layer is None:
        if not isinstance(loss, BaseLoss):
            raise ValueError("give layer= for a composite objective: it has no single layer to diversify")
        layer = loss.target
    return _render(model, loss + float(weight) * Diversity(layer), size, n, steps, **render_kwargs)


def neuron_vs_channel(
    model: nn.Module,
    channel: ChannelSpec,
    x: Optional[int] = None,
    y: Optional[int] = None,
    size: Optional[int] = None,
    steps: int = DEFAULT_STEPS,
    **render_kwargs,
) -> torch.Tensor:
    """Image 0 maximizes one neuron of the channel (at ``x``, ``y``; the centre by default), image 1 the
    whole channel: a neuron gives one localized instance of the feature, a channel tiles it everywhere.

    Args:
        model: the network (left as it was).
        channel: ``"layer:channel"`` or ``(layer, channel)``.
        x: the neuron's column (``None``: centre).
        y: the neuron's row (``None``: centre).
        size: image side (default: the model's native size, else ``DEFAULT_SIZE``; see
            :func:`~optim.models.preprocess.render_inputs`).
        steps: optimization steps.
        **render_kwargs: passed to :func:`~optim.render_vis` (``lr``, ``transforms``, ``seed``, ``callback``, ...).

    Returns:
        An ``ImageTensor`` ``[2, 3, size, size]``: neuron, channel.
    """
    layer, index = channel_spec(channel, model)
    loss = NeuronActivation(layer, index, x=x, y=y, batch_index=0) + ChannelActivation(layer, index, batch_index=1)
    return _render(model, loss, size, 2, steps, **render_kwargs)


def positive_negative(
    model: nn.Module, channel: ChannelSpec, size: Optional[int] = None, steps: int = DEFAULT_STEPS, **render_kwargs
) -> torch.Tensor:
    """Image 0 maximizes the channel, image 1 minimizes it (TorchLight's positive/negative pair).

    Args:
        model: the network (left as it was).
        channel: ``"layer:channel"`` or ``(layer, channel)``.
        size: image side (default: the model's native size, else ``DEFAULT_SIZE``; see
            :func:`~optim.models.preprocess.render_inputs`).
        steps: optimization steps.
        **render_kwargs: passed to :func:`~optim.render_vis` (``lr``, ``transforms``, ``seed``, ``callback``, ...).

    Returns:
        An ``ImageTensor`` ``[2, 3, size, size]``: positive, negative.
    """
    layer, index = channel_spec(channel, model)
    loss = ChannelActivation(layer, index, batch_index=0) - ChannelActivation(layer, index, batch_index=1)
    return _render(model, loss, size, 2, steps, **render_kwargs)


def interpolation(
    model: nn.Module,
    first: ChannelSpec,
    second: ChannelSpec,
    n: int = 5,
    alignment: float = 0.0,
    size: Optional[int] = None,
    steps: int = DEFAULT_STEPS,
    **render_kwargs,
) -> torch.Tensor:
    """Interpolate between two channels across a batch: image 0 shows ``first``, image ``n - 1``
    ``second``, the ones between blend them (:class:`~optim.loss.ActivationInterpolation`).

    Args:
        model: the network (left as it was).
        first: ``"layer:channel"`` or ``(layer, channel)``.
        second: the same for the other end.
        n: number of images (at least 2).
        alignment: weight of :class:`~optim.loss.Alignment` at the first layer, which makes neighbouring
            images share their layout (0: off).
        size: image side (default: the model's native size, else ``DEFAULT_SIZE``; see
            :func:`~optim.models.preprocess.render_inputs`).
        steps: optimization steps.
        **render_kwargs: passed to :func:`~optim.render_vis` (``lr``, ``transforms``, ``seed``, ``callback``, ...).

    Returns:
        An ``ImageTensor`` ``[n, 3, size, size]``.

    Example::

        >>> frames = interpolation(model, "blocks.10:7", "blocks.11:20", n=5, size=32, steps=4, progress=False)
        >>> frames.shape  # blocks.10:7 -> blocks.11:20
        torch.Size([5, 3, 32, 32])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"interpolation needs n >= 2 images, got {n!r}")
    layer_one, channel_one = channel_spec(first, model)
    layer_two, channel_two = channel_spec(second, model)
    loss: Loss = ActivationInterpolation(layer_one, channel_one, layer_two, channel_two)
    if alignment:
        loss = loss + float(alignment) * Alignment(layer_one)
    return _render(model, loss, size, n, steps, **render_kwargs)
