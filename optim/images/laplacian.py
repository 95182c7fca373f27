"""Laplacian pyramid parameterization: a sum of images at halving resolutions."""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import ImageParameterization, assign_, check_generators, check_positive, image_geometry, normal_noise

__all__ = ["LaplacianImage"]


class LaplacianImage(ImageParameterization):
    """An image built as ``0.5 + sum_k upsample(level_k)`` over pyramid levels (as in captum.optim).

    Level ``k`` has the resolution of the image divided by ``scales[k]`` (rounded up) and is upsampled
    with nearest neighbours, so coarse levels move whole blocks of pixels at once and the optimizer
    builds large structures before fine detail. Random levels start with standard deviation
    ``0.1 * (scale / max_scale) ** power``.

    With ``init``, the image is split into an exact Laplacian pyramid (block means at each level, the
    remainder at full resolution), so ``forward()`` returns ``init``.

    Args:
        size: ``(height, width)`` (ignored when ``init`` is given).
        channels: channels per image (ignored when ``init`` is given).
        batch: number of images; a single-image ``init`` is repeated to this many.
        init: a CHW or NCHW tensor to start from.
        scales: downsampling factors of the levels; factors larger than the image are dropped.
        power: how strongly coarse levels are favoured at random initialization.
        scale_list: captum's name for ``scales`` (whole numbers, e.g. ``[1.0, 2.0, 4.0]``); give one or the
            other.

    Example::

        >>> image = LaplacianImage((64, 64), scales=(1, 2, 4, 8, 16, 32))
        >>> len(image.levels)
        6
    """

    __constants__ = ["height", "width"]

    def __init__(
        self,
        size: Sequence[int] = (224, 224),
        channels: int = 3,
        batch: int = 1,
        init: Optional[torch.Tensor] = None,
        *,
        scales: Sequence[int] = (1, 2, 4, 8, 16, 32),
        power: float = 0.1,
        scale_list: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__()
        if scale_list is not None:
            if tuple(scales) != (1, 2, 4, 8, 16, 32):
                raise TypeError("LaplacianImage got both scales and scale_list (captum's name for it): give one")
            if isinstance(scale_list, (int, float, str, torch.Tensor)) or not hasattr(scale_list, "__iter__"):
                raise TypeError(f"scale_list must be a sequence of whole numbers, got {scale_list!r}")
            converted = []
            for s in scale_list:
                if isinstance(s, bool) or not isinstance(s, (int, float)) or float(s) != int(s):
                    raise ValueError(f"scale_list must hold whole numbers (pyramid factors), got {s!r}")
                converted.append(int(s))
            scales = converted
        if not isinstance(power, (int, float)) or isinstance(power, bool):
            raise TypeError(f"power must be a number, got {type(power).__name__}")
        if isinstance(scales, (int, str, torch.Tensor)) or not hasattr(scales, "__iter__"):
            raise TypeError(f"scales must be a sequence of positive ints, got {scales!r}")
        batch, channels, height, width, init, dtype, device = image_geometry(size, channels, batch, init)
        scales = sorted({check_positive(s, "each scale") for s in scales})
        scales = [s for s in scales if s <= max(height, width)]
        if not scales or scales[0] != 1:
            # the full-resolution level is what makes any image reachable (and init exact)
            scales = [1] + scales
        self.height = height
        self.width = width
        self.scales = scales
        self.power = float(power)
        shapes = [(batch, channels, -(-height // s), -(-width // s)) for s in scales]
        self.levels = nn.ParameterList(
            [nn.Parameter(torch.empty(shape, dtype=dtype, device=device)) for shape in shapes]
        )
        self._remember_initial_state(None if init is None else self._decompose(init - 0.5, shapes))
        self.reset_parameters()

    def reset_parameters(self, generators: Optional[Sequence[torch.Generator]] = None) -> None:
        """Re-draw level ``k`` as ``N(0, 0.1 * (scale_k / max_scale) ** power)``, finest first (image ``i``
        from ``generators[i]``), or go back to ``init``.

        See :meth:`ImageParameterization.reset_parameters`.
        """
        levels = list(self.levels)
        check_generators(generators, levels[0].size(0), "LaplacianImage.reset_parameters")
        if self._restore_initial_state(levels):
            return
        top = float(max(self.scales))
        for level, s in zip(levels, self.scales):
            assign_(level, normal_noise(level.shape, generators, level.dtype) / 10 * (s / top) ** self.power)

    def _decompose(self, residual: torch.Tensor, shapes: List[tuple]) -> List[torch.Tensor]:
        """Split ``residual`` into levels, coarsest first, leaving the remainder at full resolution."""
        levels: List[torch.Tensor] = [residual] * len(shapes)
        for i in range(len(shapes) - 1, 0, -1):
            level = F.adaptive_avg_pool2d(residual, shapes[i][2:])
            residual = residual - self._upsample(level)
            levels[i] = level
        levels[0] = residual
        return levels

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(2) == self.height and x.size(3) == self.width:
            return x
        return F.interpolate(x, size=[self.height, self.width], mode="nearest")

    def forward(self) -> torch.Tensor:
        """Returns:
        The ``[B, C, H, W]`` image, the sum of the upsampled levels plus 0.5."""
        image = torch.zeros(0)
        first = True
        for level in self.levels:
            up = self._upsample(level)
            if first:
                image = up + 0.5
                first = False
            else:
                image = image + up
        return image
