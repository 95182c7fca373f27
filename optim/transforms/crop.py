"""Center and random crops of CHW / NCHW tensors."""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

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


_PADDING_MODES = ("constant", "reflect", "replicate", "circular")


def _check_padding_mode(padding_mode: str) -> str:
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    return padding_mode


@torch.jit.unused
def _eager_hw(size: Union[int, List[int]], padding_mode: str) -> List[int]:
    _check_padding_mode(padding_mode)
    return _as_hw(size, "size")


def _script_hw(size: Union[int, List[int]]) -> List[int]:
    if isinstance(size, int):
        return [size, size]
    if len(size) == 1:
        return [size[0], size[0]]
    if len(size) == 2:
        return [size[0], size[1]]
    raise ValueError("size must be an int or a pair of ints, got " + str(len(size)) + " values")


def _center_crop(
    x: torch.Tensor,
    size: List[int],
    pixels_from_edges: bool,
    offset_left: bool,
    padding_value: float,
    padding_mode: str = "constant",
) -> torch.Tensor:
    if x.dim() < 2:
        raise ValueError("center_crop expects a tensor with at least 2 dimensions, got " + str(x.dim()))
    h, w = x.shape[-2], x.shape[-1]
    if size[0] < 0 or size[1] < 0:
        raise ValueError("size must be non-negative, got " + str(size))
    if pixels_from_edges:
        if size[0] > h or size[1] > w:
            raise ValueError(
                "cannot crop " + str(size) + " pixels away from an image of size (" + str(h) + ", " + str(w) + ")"
            )
        out_h, out_w = h - size[0], w - size[1]
    else:
        out_h, out_w = size[0], size[1]
    if out_h > h or out_w > w:
        # A crop larger than the image pads it, the odd pixel on the same side the crop would put it.
        ph, pw = max(out_h - h, 0), max(out_w - w, 0)
        before_h = (ph + 1) // 2 if offset_left else ph // 2
        before_w = (pw + 1) // 2 if offset_left else pw // 2
        pad = [before_w, pw - before_w, before_h, ph - before_h]
        if padding_mode == "constant":
            x = F.pad(x, pad, mode="constant", value=padding_value)
        else:
            x = F.pad(x, pad, mode=padding_mode)
        h, w = x.shape[-2], x.shape[-1]
    dh, dw = h - out_h, w - out_w
    top = (dh + 1) // 2 if offset_left else dh // 2
    left = (dw + 1) // 2 if offset_left else dw // 2
    return x[..., top : top + out_h, left : left + out_w]


def center_crop(
    x: torch.Tensor,
    size: Union[int, List[int]],
    pixels_from_edges: bool = False,
    offset_left: bool = False,
    padding_mode: str = "constant",
    padding_value: float = 0.0,
) -> torch.Tensor:
    """Crop the centre of a CHW or NCHW tensor (captum's arguments, in captum's order; compiles with TorchScript).

    When the amount cropped away on an axis is odd, the extra pixel comes off the bottom/right, or off the
    top/left with ``offset_left=True``, as in TensorFlow / Lucid (and captum). A crop larger than the image pads
    it, the odd padded pixel on the same side (bottom/right by default, as TensorFlow's
    ``resize_with_crop_or_pad``); captum pads it on the other side, so for padding captum's ``offset_left=False``
    is optim's ``offset_left=True`` and the reverse (see ``docs/migrating_from_captum.md``).

    Args:
        x: a tensor whose last two dimensions are height and width.
        size: the output size ``(h, w)`` (an int for a square), or with ``pixels_from_edges=True`` the number
            of pixels to remove on each axis.
        pixels_from_edges: read ``size`` as pixels to remove rather than the output size.
        offset_left: put the odd pixel of an uneven crop (or pad) on the top/left side.
        padding_mode: how a crop larger than the image pads it: ``"constant"`` (with ``padding_value``),
            ``"reflect"``, ``"replicate"`` or ``"circular"``.
        padding_value: fill of ``"constant"`` padding.

    Returns:
        The cropped tensor (a view unless padding was needed).

    Raises:
        ValueError: a negative size, more pixels from the edges than the image has, an unknown padding mode.
        TypeError: a size that is neither an int nor a pair of ints.

    Example::

        >>> center_crop(torch.rand(1, 3, 10, 10), 4).shape
        torch.Size([1, 3, 4, 4])
        >>> center_crop(torch.arange(4.0).view(1, 1, 1, 4), [1, 6], padding_value=-1.0)
        tensor([[[[-1.,  0.,  1.,  2.,  3., -1.]]]])
        >>> torch.jit.script(center_crop)(torch.rand(1, 3, 10, 10), [4, 6]).shape
        torch.Size([1, 3, 4, 6])
    """
    if torch.jit.is_scripting():
        hw = _script_hw(size)
    else:
        hw = _eager_hw(size, padding_mode)
    return _center_crop(x, hw, pixels_from_edges, offset_left, float(padding_value), padding_mode)


class CenterCrop(nn.Module):
    """Module form of :func:`center_crop` (captum's arguments, in captum's order).

    Args:
        size: output size ``(h, w)`` or an int, or pixels to remove with ``pixels_from_edges=True``.
        pixels_from_edges: read ``size`` as pixels to remove rather than the output size.
        offset_left: put the odd pixel of an uneven crop (or pad) on the top/left side.
        padding_mode: ``"constant"``, ``"reflect"``, ``"replicate"`` or ``"circular"``, for a crop larger than
            the image.
        padding_value: fill of ``"constant"`` padding.

    Example::

        >>> CenterCrop((4, 6))(torch.rand(1, 3, 10, 10)).shape
        torch.Size([1, 3, 4, 6])
    """

    #: draws no random numbers: a batched render applies it to the whole batch at once
    deterministic = True

    def __init__(
        self,
        size: SizeSpec,
        pixels_from_edges: bool = False,
        offset_left: bool = False,
        padding_mode: str = "constant",
        padding_value: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(padding_mode, str):
            raise TypeError(
                f"padding_mode must be a str (captum's order: size, pixels_from_edges, offset_left, padding_mode, "
                f"padding_value), got {padding_mode!r}"
            )
        self.size = _as_hw(size, "size")
        self.pixels_from_edges = pixels_from_edges
        self.offset_left = offset_left
        self.padding_mode = _check_padding_mode(padding_mode)
        self.padding_value = float(padding_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Center crop ``x``."""
        return _center_crop(
            x, self.size, self.pixels_from_edges, self.offset_left, self.padding_value, self.padding_mode
        )

    def extra_repr(self) -> str:
        return f"size={self.size}, pixels_from_edges={self.pixels_from_edges}, offset_left={self.offset_left}"


class RandomCrop(nn.Module):
    """Crop a window of fixed size at a uniformly random position of a CHW or NCHW tensor.

    Args:
        size: the window ``(h, w)`` or an int for a square.
        crop_size: captum's name for ``size`` (give one or the other).

    Example::

        >>> RandomCrop(8)(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 3, 8, 8])
        >>> RandomCrop(crop_size=(4, 6)).size
        [4, 6]
    """

    def __init__(self, size: Optional[SizeSpec] = None, *, crop_size: Optional[SizeSpec] = None) -> None:
        super().__init__()
        if (size is None) == (crop_size is None):
            raise TypeError("RandomCrop needs the window size: give size (or captum's crop_size), not both")
        self.size = _as_hw(size if size is not None else crop_size, "size")

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
