"""Objectives that read activations directly: layers, channels, neurons, DeepDream and interpolation."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .base import Activations, BaseLoss, BatchIndex, Target, target_name

__all__ = [
    "LayerActivation",
    "ChannelActivation",
    "NeuronActivation",
    "DeepDream",
    "ActivationInterpolation",
    "check_channel",
    "neuron_position",
]


def check_channel(activation: torch.Tensor, channel_index: int, target: Target) -> None:
    """Raise a ValueError when ``channel_index`` does not exist in ``activation`` (channels on dim 1)."""
    if activation.dim() < 2:
        raise ValueError(
            f"{target_name(target)} outputs a tensor of shape {tuple(activation.shape)}, which has no channel dim"
        )
    if channel_index >= activation.shape[1]:
        raise ValueError(
            f"channel_index {channel_index} is out of range for {target_name(target)}, "
            f"which has {activation.shape[1]} channels (valid: 0..{activation.shape[1] - 1})"
        )


def _check_index(name: str, value: Optional[int]) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def neuron_position(activation: torch.Tensor, x: Optional[int], y: Optional[int], target: Target) -> Tuple[int, int]:
    """The (x, y) = (column, row) of a neuron; ``None`` means the centre, as in Lucid.

    Raises:
        ValueError: when the position lies outside the activation's spatial size.
    """
    if activation.dim() != 4:
        raise ValueError(
            f"a neuron position needs a 4-D (N, C, H, W) activation, {target_name(target)} gives "
            f"shape {tuple(activation.shape)}"
        )
    height, width = activation.shape[2:]
    col = width // 2 if x is None else x
    row = height // 2 if y is None else y
    if col >= width or row >= height:
        raise ValueError(
            f"neuron position x={col}, y={row} is outside {target_name(target)}'s spatial size "
            f"(height={height}, width={width})"
        )
    return col, row


class LayerActivation(BaseLoss):
    """The whole activation of a layer (maximizing it raises every unit).

    Args:
        target: the layer.
        batch_index: which images of the batch the loss reads.

    Example::

        loss = LayerActivation(model.mixed4a)
    """

    def __call__(self, activations: Activations) -> torch.Tensor:
        return self._activation(activations)


class ChannelActivation(BaseLoss):
    """The activation of one channel, over all positions (2-D outputs such as logits work too).

    Args:
        target: the layer.
        channel_index: the channel.
        batch_index: which images of the batch the loss reads.

    Example::

        loss = ChannelActivation(model.mixed4a, 465)
    """

    def __init__(self, target: Target, channel_index: int, batch_index: BatchIndex = None) -> None:
        super().__init__(target, batch_index)
        self.channel_index = _check_index("channel_index", channel_index)

    def __call__(self, activations: Activations) -> torch.Tensor:
        act = self._activation(activations)
        check_channel(act, self.channel_index, self.target)
        return act[:, self.channel_index]

    def _extra_repr(self) -> str:
        return str(self.channel_index)


class NeuronActivation(BaseLoss):
    """The activation of one neuron: one channel at one position (the centre by default).

    Args:
        target: the layer.
        channel_index: the channel.
        x: the column; ``None`` for the centre.
        y: the row; ``None`` for the centre.
        batch_index: which images of the batch the loss reads.

    Example::

        loss = NeuronActivation(model.mixed4a, 308)
    """

    def __init__(
        self,
        target: Target,
        channel_index: int,
        x: Optional[int] = None,
        y: Optional[int] = None,
        batch_index: BatchIndex = None,
    ) -> None:
        super().__init__(target, batch_index)
        self.channel_index = _check_index("channel_index", channel_index)
        self.x = _check_index("x", x)
        self.y = _check_index("y", y)

    def __call__(self, activations: Activations) -> torch.Tensor:
        act = self._activation(activations)
        check_channel(act, self.channel_index, self.target)
        col, row = neuron_position(act, self.x, self.y, self.target)
        return act[:, self.channel_index, row : row + 1, col : col + 1]

    def _extra_repr(self) -> str:
        pos = "" if self.x is None and self.y is None else f", x={self.x}, y={self.y}"
        return f"{self.channel_index}{pos}"


class DeepDream(BaseLoss):
    """DeepDream (Mordvintsev et al. 2015): the squared activation of a layer.

    Args:
        target: the layer.
        batch_index: which images of the batch the loss reads.

    Example::

        loss = DeepDream(model.mixed4c)
    """

    def __call__(self, activations: Activations) -> torch.Tensor:
        return self._activation(activations) ** 2


class ActivationInterpolation(BaseLoss):
    """Interpolate between two channels across the batch (Lucid's ``channel_interpolate``).

    Image ``i`` of ``n`` maximizes ``(1 - w_i) * channel_one + w_i * channel_two`` with ``w_i = i / (n - 1)``,
    so the first image shows channel one, the last channel two and the ones between blend them.

    Args:
        target_one: the first layer.
        channel_index_one: its channel, or ``None`` for the whole layer.
        target_two: the second layer.
        channel_index_two: its channel, or ``None`` for the whole layer.

    Example::

        loss = ActivationInterpolation(model.mixed4a, 476, model.mixed4a, 460)
    """

    def __init__(
        self,
        target_one: Target,
        channel_index_one: Optional[int],
        target_two: Target,
        channel_index_two: Optional[int],
    ) -> None:
        super().__init__(target_one)
        self.target_two = target_two
        self.channel_index_one = _check_index("channel_index_one", channel_index_one)
        self.channel_index_two = _check_index("channel_index_two", channel_index_two)

    @property
    def targets(self) -> list:
        return [self.target, self.target_two] if self.target is not self.target_two else [self.target]

    def _channel_means(self, activations: Activations, target: Target, channel: Optional[int]) -> torch.Tensor:
        act = activations[target]
        if channel is not None:
            check_channel(act, channel, target)
            act = act[:, channel]
        return act.reshape(act.shape[0], -1).mean(dim=1)

    def __call__(self, activations: Activations) -> torch.Tensor:
        one = self._channel_means(activations, self.target, self.channel_index_one)
        two = self._channel_means(activations, self.target_two, self.channel_index_two)
        n = one.shape[0]
        weights = torch.linspace(0.0, 1.0, n, device=one.device, dtype=one.dtype) if n > 1 else one.new_zeros(1)
        return ((1 - weights) * one + weights * two).sum()

    def _extra_repr(self) -> str:
        return f"{self.channel_index_one}, {target_name(self.target_two)}, {self.channel_index_two}"
