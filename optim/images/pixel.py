"""The plainest parameterization: every pixel is a parameter."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from .base import ImageParameterization, image_geometry

__all__ = ["PixelImage"]


class PixelImage(ImageParameterization):
    """An image whose pixels are the parameters themselves.

    Args:
        size: ``(height, width)`` of the image (ignored when ``init`` is given).
        channels: channels per image (ignored when ``init`` is given).
        batch: number of images; a single-image ``init`` is repeated to this many.
        init: a CHW or NCHW tensor to start from; ``forward()`` returns it exactly. By default pixels
            start near mid-grey (``0.5 + N(0, 0.1)``).

    Example::

        image = PixelImage((64, 64), batch=2)
        image().shape  # torch.Size([2, 3, 64, 64])
    """

    def __init__(
        self,
        size: Sequence[int] = (224, 224),
        channels: int = 3,
        batch: int = 1,
        init: Optional[torch.Tensor] = None,
    ) -> None:
        super().__init__()
        geo = image_geometry(size, channels, batch, init)
        if geo.init is None:
            image = torch.randn(geo.batch, geo.channels, geo.height, geo.width) / 10 + 0.5
        else:
            image = geo.init
        self.image = nn.Parameter(image)

    def forward(self) -> torch.Tensor:
        """Returns:
        The ``[B, C, H, W]`` image parameter."""
        return self.image
