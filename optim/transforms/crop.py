"""Center and random crops of CHW / NCHW tensors."""
from __future__ import annotations

from typing import List, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["center_crop", "CenterCrop", "RandomCrop"]

SizeSpec = Union[int, Sequence[int]]


def _as_hw(size: SizeSpec, name: str) -> List[int]:
    """``int`` or ``(h, w)`` (or ``[s]``) -> ``[h, w]`` of non-negative ints."""
    if isinstance(size, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got a bool")
    if isinstance(size, int):
        hw = [size, size]
    elif isinstance(size, (list, tuple, torch.Size)) and len(size) in (1, 2):
        hw = [int(s) for s in size] * (2 if len(size) == 1 else 1)
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {size!r}")
    if min(hw) < 0:
        raise ValueError(f"{name} must be non-negative, got {hw}")
    return hw


def _center_crop(
    x: torch.Tensor, size: List[int], pixels_from_edges: bool, offset_left: bool, padding_value: float
) -> torch.Tensor:
    if x.dim() < 2:
        raise ValueError(f"center_crop expects a tensor with at least 2 dimensions, got {x.dim()}")
    h, w = x.shape[-2], x.shape[-1]
    if pixels_from_edges:
        if size[0] > h or size[1] > w:
            raise ValueError(f"cannot crop {size} pixels away from an image of size ({h}, {w})")
        out_h, out_w = h - size[0], w - size[1]
    else:
        out_h, out_w = size[0], size[1]
    if out_h > h or out_w > w:
        # A crop larger than the image pads it, the odd pixel on the same side the crop would put it.
        ph, pw = max(out_h - h, 0), max(out_w - w, 0)
        before_h = (ph + 1) // 2 if offset_left else ph // 2
        before_w = (pw + 1) // 2 if offset_left else pw // 2
        pad = [before_w, pw - before_w, before_h, ph - before_h]
        x = F.pad(x, pad, mode="constant", value=padding_value)
        h, w = x.shape[-2], x.shape[-1]
    dh, dw = h - out_h, w - out_w
    top = (dh + 1) // 2 if offset_left else dh // 2
    left = (dw + 1) // 2 if offset_left else dw // 2
    return x[..., top : top + out_h, left : left + out_w]


def center_crop(
    x: torch.Tensor,
    size: SizeSpec,
    pixels_from_edges: bool = False,
    offset_left: bool = False,
    padding_value: float = 0.0,
) -> torch.Tensor:
    """Crop the centre of a CHW or NCHW tensor.

    When the amount cropped away on an axis is odd, the extra pixel comes off the bottom/right, or off the
    top/left with ``offset_left=True``. A crop larger than the image pads it with ``padding_value``.

    Args:
        x: a tensor whose last two dimensions are height and width.
        size: the output size ``(h, w)`` (an int for a square), or with ``pixels_from_edges=True`` the number
            of pixels to remove on each axis.
        pixels_from_edges: read ``size`` as pixels to remove rather than the output size.
        offset_left: put the odd pixel of an uneven crop on the top/left side.
        padding_value: fill used when the crop is larger than the image.

    Returns:
        The cropped tensor (a view unless padding was needed).

    Example::

        >>> center_crop(torch.rand(1, 3, 10, 10), 4).shape
        torch.Size([1, 3, 4, 4])
    """
    return _center_crop(x, _as_hw(size, "size"), pixels_from_edges, offset_left, float(padding_value))


class CenterCrop(nn.Module):
    """Module form of :func:`center_crop`.

    Args:
        size: output size ``(h, w)`` or an int, or pixels to remove with ``pixels_from_edges=True``.
        pixels_from_edges: read ``size`` as pixels to remove rather than the output size.
        offset_left: put the odd pixel of an uneven crop on the top/left side.
        padding_value: fill used when the crop is larger than the image.

    Example::

        >>> CenterCrop((4, 6))(torch.rand(1, 3, 10, 10)).shape
        torch.Size([1, 3, 4, 6])
    """

    def __init__(
        self, size: SizeSpec, pixels_from_edges: bool = False, offset_left: bool = False, padding_value: float = 0.0
    ) -> None:
        super().__init__()
        self.size = _as_hw(size, "size")
        self.pixels_from_edges = pixels_from_edges
        self.offset_left = offset_left
        self.padding_value = float(padding_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Center crop ``x``."""
        return _center_crop(x, self.size, self.pixels_from_edges, self.offset_left, self.padding_value)

    def extra_repr(self) -> str:
        return f"size={self.size}, pixels_from_edges={self.pixels_from_edges}, offset_left={self.offset_left}"


class RandomCrop(nn.Module):
    """Crop a window of fixed size at a uniformly random position of a CHW or NCHW tensor.

    Args:
        size: the window ``(h, w)`` or an int for a square.

    Example::

        >>> RandomCrop(8)(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(self, size: SizeSpec) -> None:
        super().__init__()
        self.size = _as_hw(size, "size")

    def sample_params(self, x: torch.Tensor) -> List[int]:
        """Draw ``[top, left]`` for ``x`` (from the CPU generator: slicing needs host integers)."""
        h, w = x.shape[-2], x.shape[-1]
        if self.size[0] > h or self.size[1] > w:
            raise ValueError(f"crop size {self.size} is larger than the image ({h}, {w})")
        top = int(torch.randint(0, h - self.size[0] + 1, ()))
        left = int(torch.randint(0, w - self.size[1] + 1, ()))
        return [top, left]

    def apply_params(self, x: torch.Tensor, top: int, left: int) -> torch.Tensor:
        """Crop the window whose top-left corner is ``(top, left)``."""
        return x[..., top : top + self.size[0], left : left + self.size[1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Randomly crop ``x``."""
        corner = self.sample_params(x)
        return self.apply_params(x, corner[0], corner[1])

    def extra_repr(self) -> str:
        return f"size={self.size}"
