"""Gaussian smoothing of 1-D, 2-D or 3-D signals, channel by channel."""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GaussianSmoothing"]

_PADDING = ("constant", "reflect", "replicate", "circular")


def _per_dim(value: Union[int, float, Sequence], dim: int, name: str) -> List[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)] * dim
    if isinstance(value, (list, tuple)) and len(value) == dim:
        return [float(v) for v in value]
    raise ValueError(f"{name} must be a number or a sequence of {dim} numbers, got {value!r}")


class GaussianSmoothing(nn.Module):
    """Blur each channel with a normalised Gaussian kernel (a depthwise convolution).

    Args:
        channels: number of channels of the input (and output).
        kernel_size: kernel size, one int or one per spatial dimension.
        sigma: standard deviation in pixels, one number or one per spatial dimension.
        dim: number of spatial dimensions: 1 (NCL), 2 (NCHW) or 3 (NCDHW).
        padding_mode: ``None`` for a "valid" convolution (the output shrinks by ``kernel_size - 1``, as in
            captum), or ``"constant"``, ``"reflect"``, ``"replicate"``, ``"circular"`` to keep the size.
        padding: keyword-only, captum's argument: the convolution's own zero padding, ``"same"``,
            ``"valid"``, an int or one int per spatial dimension (as ``F.conv2d`` takes it). Give either this
            or ``padding_mode``.

    Raises:
        ValueError: bad sizes, sigmas, ``dim``, ``padding_mode`` or ``padding``, or both padding arguments.

    Example::

        >>> GaussianSmoothing(3, 5, 1.0, padding_mode="reflect")(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 3, 16, 16])
        >>> GaussianSmoothing(1, 3, 1.0, padding="same")(torch.ones(1, 1, 4, 4))[0, 0, 0, 0] < 1  # zero-padded
        tensor(True)
    """

    #: draws no random numbers: a batched render applies it to the whole batch at once
    deterministic = True

    def __init__(
        self,
        channels: int,
        kernel_size: Union[int, Sequence[int]],
        sigma: Union[float, Sequence[float]],
        dim: int = 2,
        padding_mode: Optional[str] = None,
        *,
        padding: Optional[Union[str, int, Sequence[int]]] = None,
    ) -> None:
        super().__init__()
        if dim not in (1, 2, 3):
            raise ValueError(f"dim must be 1, 2 or 3, got {dim!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if padding_mode is not None and padding_mode not in _PADDING:
            raise ValueError(f"padding_mode must be None or one of {_PADDING}, got {padding_mode!r}")
        sizes = [int(k) for k in _per_dim(kernel_size, dim, "kernel_size")]
        sigmas = _per_dim(sigma, dim, "sigma")
        if min(sizes) < 1 or min(sigmas) <= 0:
            raise ValueError(f"kernel_size must be >= 1 and sigma > 0, got {sizes} and {sigmas}")
        kernel = torch.ones(sizes, dtype=torch.float64)
        for axis, (size, std) in enumerate(zip(sizes, sigmas)):
            coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
            shape = [1] * dim
            shape[axis] = size
            kernel = kernel * torch.exp(-0.5 * (coords / std) ** 2).view(shape)
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.float().expand(channels, 1, *sizes).contiguous())
        self.groups = channels
        self.dim = dim
        self.padding_mode = padding_mode
        # the convolution's own padding (captum's ``padding``): a string, or ints per spatial dimension
        self.conv_padding_str = "valid"
        self.conv_padding: List[int] = [0] * dim
        if padding is not None:
            if padding_mode is not None:
                raise ValueError("give padding_mode or padding (the convolution's zero padding), not both")
            if isinstance(padding, str):
                if padding not in ("same", "valid"):
                    raise ValueError(f"padding as a string must be 'same' or 'valid', got {padding!r}")
                self.conv_padding_str = padding
            else:
                amounts = [int(p) for p in _per_dim(padding, dim, "padding")]
                if min(amounts) < 0:
                    raise ValueError(f"padding must be non-negative, got {amounts}")
                self.conv_padding_str = ""
                self.conv_padding = amounts
        # F.pad order: last dimension first, (before, after) per dimension; the odd pixel goes after.
        pad: List[int] = []
        for size in reversed(sizes):
            pad += [(size - 1) // 2, size // 2]
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Smooth ``x`` (``(N, channels, *spatial)``)."""
        if x.dim() != self.dim + 2 or x.shape[1] != self.groups:
            raise ValueError(
                f"GaussianSmoothing expects (N, {self.groups}, ...) with {self.dim} spatial dims, "
                f"got shape {list(x.shape)}"
            )
        padding_mode = self.padding_mode
        if padding_mode is not None:
            x = F.pad(x, self.pad, mode=padding_mode)
        weight = self.weight.to(x.dtype)
        if self.conv_padding_str != "":
            if self.dim == 1:
                return F.conv1d(x, weight, padding=self.conv_padding_str, groups=self.groups)
            if self.dim == 2:
                return F.conv2d(x, weight, padding=self.conv_padding_str, groups=self.groups)
            return F.conv3d(x, weight, padding=self.conv_padding_str, groups=self.groups)
        if self.dim == 1:
            return F.conv1d(x, weight, padding=self.conv_padding, groups=self.groups)
        if self.dim == 2:
            return F.conv2d(x, weight, padding=self.conv_padding, groups=self.groups)
        return F.conv3d(x, weight, padding=self.conv_padding, groups=self.groups)
