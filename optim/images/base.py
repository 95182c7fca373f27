"""The base class of image parameterizations and the argument checks they share."""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ["ImageParameterization"]


class ImageParameterization(nn.Module):
    """An optimizable image: ``forward()`` takes no argument and returns an NCHW tensor.

    Subclasses keep every parameter a real tensor (a spectrum carries a trailing dimension of 2), so
    ``module.to(dtype)`` and ``module.to(device)`` are always safe.

    Example::

        class Constant(ImageParameterization):
            def __init__(self):
                super().__init__()
                self.image = nn.Parameter(torch.zeros(1, 3, 8, 8))

            def forward(self) -> torch.Tensor:
                return self.image
    """

    def forward(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")


def check_size(size: Sequence[int], name: str = "size") -> Tuple[int, int]:
    """Validate an image ``(height, width)`` (an int means a square)."""
    if isinstance(size, int):
        size = (size, size)
    try:
        size = tuple(size)
    except TypeError:
        raise TypeError(f"{name} must be an int or (height, width), got {type(size).__name__}") from None
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"{name} must be a positive int or (height, width) of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def check_positive(value: int, name: str) -> int:
    """Validate a positive int argument such as ``channels`` or ``batch``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def prepare_init(init: Optional[torch.Tensor], batch: int) -> Optional[torch.Tensor]:
    """Turn a CHW or NCHW ``init`` into a detached floating NCHW tensor.

    A single image is repeated to ``batch`` images; an init with its own batch keeps it.
    """
    if init is None:
        return None
    if not isinstance(init, torch.Tensor):
        raise TypeError(f"init must be a torch.Tensor (CHW or NCHW), got {type(init).__name__}")
    if init.dim() not in (3, 4):
        raise ValueError(f"init must be CHW or NCHW, got shape {tuple(init.shape)}")
    init = init.detach().as_subclass(torch.Tensor)
    if not init.is_floating_point():
        init = init.to(torch.get_default_dtype())
    if init.dim() == 3:
        init = init.unsqueeze(0)
    if init.size(0) == 1 and batch > 1:
        init = init.expand(batch, -1, -1, -1)
    return init.clone()


class ImageGeometry(NamedTuple):
    """The validated ``(batch, channels, height, width)`` of a parameterization, and its prepared ``init``."""

    batch: int
    channels: int
    height: int
    width: int
    init: Optional[torch.Tensor]
    dtype: torch.dtype
    device: Optional[torch.device]


def image_geometry(
    size: Sequence[int], channels: int, batch: int, init: Optional[torch.Tensor]
) -> ImageGeometry:
    """Check the arguments every pixel-grid parameterization takes; an ``init`` fixes the geometry.

    Args:
        size: ``(height, width)`` (an int for a square), used without ``init``.
        channels: channels per image, used without ``init``.
        batch: number of images; a single-image ``init`` is repeated to this many.
        init: a CHW or NCHW tensor, or None.

    Returns:
        An :class:`ImageGeometry`: the shape, the NCHW ``init`` from :func:`prepare_init`, and the dtype
        and device to create parameters with (the default dtype and device without ``init``).
    """
    batch = check_positive(batch, "batch")
    init = prepare_init(init, batch)
    if init is None:
        height, width = check_size(size)
        channels = check_positive(channels, "channels")
        return ImageGeometry(batch, channels, height, width, None, torch.get_default_dtype(), None)
    b, c, h, w = (int(s) for s in init.shape)
    return ImageGeometry(b, c, h, w, init, init.dtype, init.device)
