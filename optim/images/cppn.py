"""Compositional pattern-producing network: an image drawn by a small per-pixel network."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn

from .base import ImageParameterization, assign_, check_generators, check_positive, check_size, normal_noise

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
        init: must be None: a CPPN's parameters are network weights, so it cannot start from an image
            (use ``PixelImage``, ``FFTImage`` or ``LaplacianImage`` for that).
        num_hidden: (keyword-only) units per hidden layer.
        num_layers: (keyword-only) number of hidden layers.
        activation: (keyword-only) ``"composite"`` (Lucid's ``[atan(x) / 0.67, atan(x)**2 / 0.6]``, which
            doubles the width), ``"atan"``, ``"tanh"`` or ``"relu"``.

    Raises:
        ValueError: an ``init`` tensor, or an unknown ``activation``.

    Example::

        >>> from optim.images import NaturalImage
        >>> image = NaturalImage((128, 128), parameterization=CPPNImage)
        >>> image().shape
        torch.Size([1, 3, 128, 128])
    """

    __constants__ = ["batch", "channels", "height", "width", "activation"]

    def __init__(
        self,
        size: Sequence[int] = (224, 224),
        channels: int = 3,
        batch: int = 1,
        init: Optional[torch.Tensor] = None,
        *,
        num_hidden: int = 24,
        num_layers: int = 8,
        activation: str = "composite",
    ) -> None:
        super().__init__()
        if init is not None:
            what = f"a tensor of shape {tuple(init.shape)}" if isinstance(init, torch.Tensor) else repr(init)
            raise ValueError(
                "CPPNImage cannot start from init (its parameters are network weights, not pixels; "
                f"num_hidden, num_layers and activation are keyword-only): init must be None, got {what}"
            )
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
            layers.append(nn.Conv2d(batch * fan_in, batch * num_hidden, 1, groups=batch))
            fan_in = num_hidden * width_mult
        self.hidden = nn.ModuleList(layers)
        self.output = nn.Conv2d(batch * fan_in, batch * self.channels, 1, groups=batch)
        self.reset_parameters()

    def reset_parameters(self, generators: Optional[Sequence[torch.Generator]] = None) -> None:
        """Re-draw the network: hidden weights ``N(0, 1 / fan_in)``, layer by layer (image ``i``'s network
        from ``generators[i]``), zero biases and a zero output layer (so the image starts uniform).

        See :meth:`ImageParameterization.reset_parameters`.
        """
        check_generators(generators, self.batch, "CPPNImage.reset_parameters")
        for conv in self.hidden:
            weight = conv.weight  # [B * out, fan_in, 1, 1]: image b's network is rows b * out ... (b + 1) * out
            fan_in = weight.size(1)
            per_image = (self.batch, weight.size(0) // self.batch) + tuple(weight.shape[1:])
            noise = normal_noise(per_image, generators, weight.dtype).reshape(weight.shape)
            assign_(weight, noise * math.sqrt(1.0 / fan_in))
            assign_(conv.bias, torch.zeros_like(conv.bias))
        assign_(self.output.weight, torch.zeros_like(self.output.weight))
        assign_(self.output.bias, torch.zeros_like(self.output.bias))

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
