"""Compositional pattern-producing network: an image drawn by a small per-pixel network."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from .base import ImageParameterization, check_positive, check_size

__all__ = ["CPPNImage"]

_ACTIVATIONS = ("composite", "atan", "tanh", "relu")


class CPPNImage(ImageParameterization):
    """An image drawn by a CPPN: pixel coordinates pass through a stack of 1x1 convolutions.

    As in Lucid's ``cppn``: coordinates in ``[-sqrt(3), sqrt(3)]``, ``num_layers`` hidden layers of
    ``num_hidden`` units with weights ~ ``N(0, 1 / fan_in)``, and a zero-initialized output layer (so
    the image starts uniform). The parameters are the network's weights; each image of the batch has
    its own network (one grouped convolution per layer). The output is unsquashed, like the other
    parameterizations; ``NaturalImage`` maps it to ``[0, 1]``.

    Args:
        size: ``(height, width)``.
        channels: output channels per image.
        batch: number of images (independent networks).
        num_hidden: units per hidden layer.
        num_layers: number of hidden layers.
        activation: ``"composite"`` (Lucid's ``[atan(x) / 0.67, atan(x)**2 / 0.6]``, which doubles the
            width), ``"atan"``, ``"tanh"`` or ``"relu"``.

    Example::

        image = NaturalImage((128, 128), parameterization=CPPNImage)
        image().shape  # torch.Size([1, 3, 128, 128])
    """

    __constants__ = ["batch", "channels", "height", "width", "activation"]

    def __init__(
        self,
        size: Sequence[int] = (224, 224),
        channels: int = 3,
        batch: int = 1,
        num_hidden: int = 24,
        num_layers: int = 8,
        activation: str = "composite",
    ) -> None:
        super().__init__()
        height, width = check_size(size)
        self.height, self.width = height, width
        self.channels = check_positive(channels, "channels")
        self.batch = check_positive(batch, "batch")
        num_hidden = check_positive(num_hidden, "num_hidden")
        num_layers = check_positive(num_layers, "num_layers")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        r = math.sqrt(3.0)
        ys = torch.linspace(-r, r, height).view(height, 1).expand(height, width)
        xs = torch.linspace(-r, r, width).view(1, width).expand(height, width)
        coords = torch.stack([xs, ys]).repeat(batch, 1, 1).unsqueeze(0)  # [1, B * 2, H, W]
        self.register_buffer("coords", coords)
        width_mult = 2 if activation == "composite" else 1
        layers = []
        fan_in = 2
        for _ in range(num_layers):
            conv = nn.Conv2d(batch * fan_in, batch * num_hidden, 1, groups=batch)
            nn.init.normal_(conv.weight, std=math.sqrt(1.0 / fan_in))
            nn.init.zeros_(conv.bias)
            layers.append(conv)
            fan_in = num_hidden * width_mult
        self.hidden = nn.ModuleList(layers)
        self.output = nn.Conv2d(batch * fan_in, batch * self.channels, 1, groups=batch)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def _activate(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "composite":
            # per image group: [atan / 0.67, atan**2 / 0.6], unit-RMS for N(0, 1) inputs (Lucid)
            a = torch.atan(x).view(1, self.batch, -1, self.height, self.width)
            a = torch.cat([a / 0.67, (a * a) / 0.6], dim=2)
            return a.view(1, -1, self.height, self.width)
        if self.activation == "atan":
            return torch.atan(x)
        if self.activation == "tanh":
            return torch.tanh(x)
        return torch.relu(x)

    def forward(self) -> torch.Tensor:
        """Returns:
        The ``[B, C, H, W]`` image (unsquashed)."""
        x = self.coords
        for conv in self.hidden:
            x = self._activate(conv(x))
        return self.output(x).view(self.batch, self.channels, self.height, self.width)
