"""The plainest parameterization: every pixel is a parameter."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from .base import ImageParameterization, assign_, check_generators, image_geometry, normal_noise

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

        >>> import torch
        >>> image = PixelImage((64, 64), 3, 2)
        >>> image().shape
        torch.Size([2, 3, 64, 64])
        >>> image.reset_parameters([torch.Generator().manual_seed(s) for s in (0, 1)])
        >>> alone = PixelImage((64, 64))
        >>> alone.reset_parameters([torch.Generator().manual_seed(1)])
        >>> torch.equal(image()[1], alone()[0])
        True
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
        shape = (geo.batch, geo.channels, geo.height, geo.width)
        self.image = nn.Parameter(torch.empty(shape, dtype=geo.dtype, device=geo.device))
        self._remember_initial_state(None if geo.init is None else [geo.init])
        self.reset_parameters()

    def reset_parameters(self, generators: Optional[Sequence[torch.Generator]] = None) -> None:
        """Re-draw the pixels as ``0.5 + N(0, 0.1)`` (image ``i`` from ``generators[i]``), or go back to ``init``.

        See :meth:`ImageParameterization.reset_parameters`.
        """
        check_generators(generators, self.image.size(0), "PixelImage.reset_parameters")
        if not self._restore_initial_state([self.image]):
            assign_(self.image, normal_noise(self.image.shape, generators, self.image.dtype) / 10 + 0.5)

    def forward(self) -> torch.Tensor:
        """Returns:
        The ``[B, C, H, W]`` image parameter."""
        return self.image
