"""Channel transforms: alpha blending, channel order, input range, and any number of channels to RGB."""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "BlendAlpha",
    "IgnoreAlpha",
    "ScaleInputRange",
    "RGBToBGR",
    "hue_to_rgb",
    "nchannels_to_rgb",
    "NChannelsToRGB",
]


def _check_channels(x: torch.Tensor, channels: int, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} expects an N{channels}HW tensor, got shape {list(x.shape)}")


class BlendAlpha(nn.Module):
    """Composite an RGBA image over a background: ``alpha * rgb + (1 - alpha) * background``.

    Args:
        background: a tensor broadcastable to ``(N, 3, H, W)`` (an image, or a colour of shape ``(3, 1, 1)``);
            ``None`` draws a uniform random background on every call, which pushes the optimisation to use
            transparency only where the content does not matter.

    Example::

        >>> BlendAlpha(torch.zeros(3, 1, 1))(torch.rand(1, 4, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(self, background: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        if background is not None and not isinstance(background, torch.Tensor):
            raise TypeError(f"background must be a tensor or None, got {type(background).__name__}")
        self.register_buffer("background", background)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blend the alpha channel of an N4HW tensor into its RGB channels."""
        _check_channels(x, 4, "BlendAlpha")
        rgb, alpha = x[:, :3], x[:, 3:4]
        background = self.background
        if background is None:
            background = torch.rand_like(rgb)
        return alpha * rgb + (1.0 - alpha) * background.to(rgb.dtype)


class IgnoreAlpha(nn.Module):
    """Drop the alpha channel of an N4HW tensor.

    Example::

        >>> IgnoreAlpha()(torch.rand(1, 4, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """

    #: draws no random numbers: a batched render applies it to the whole batch at once
    deterministic = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the RGB channels."""
        _check_channels(x, 4, "IgnoreAlpha")
        return x[:, :3]


class ScaleInputRange(nn.Module):
    """Multiply the input by a constant, for models expecting a range other than [0, 1] (e.g. 255).

    Args:
        multiplier: the factor.

    Example::

        >>> ScaleInputRange(255.0)(torch.ones(1, 3, 2, 2)).max()
        tensor(255.)
    """

    #: draws no random numbers: a batched render applies it to the whole batch at once
    deterministic = True

    def __init__(self, multiplier: float = 1.0) -> None:
        super().__init__()
        self.multiplier = float(multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale ``x``."""
        return x * self.multiplier

    def extra_repr(self) -> str:
        return f"multiplier={self.multiplier}"


class RGBToBGR(nn.Module):
    """Swap the red and blue channels of an N3HW tensor (for models trained on BGR input, e.g. Caffe ports).

    Example::

        >>> RGBToBGR()(torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)).flatten()
        tensor([3., 2., 1.])
    """

    #: draws no random numbers: a batched render applies it to the whole batch at once
    deterministic = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reverse the channel order."""
        _check_channels(x, 3, "RGBToBGR")
        return x.flip(1)


def _hue_colors(angles: torch.Tensor, warp: bool) -> torch.Tensor:
    """Unit RGB vectors for hue angles in degrees: ``(K,)`` -> ``(K, 3)``."""
    # The six primary/secondary colours at 0, 60, ..., 300 degrees, normalised to unit length.
    r = 1.0 / math.sqrt(2.0)
    corners = torch.tensor(
        [[1.0, 0.0, 0.0], [r, r, 0.0], [0.0, 1.0, 0.0], [0.0, r, r], [0.0, 0.0, 1.0], [r, 0.0, r]],
        dtype=angles.dtype,
        device=angles.device,
    )
    angles = angles - 360.0 * torch.floor(angles / 360.0)
    sector = torch.floor(angles / 60.0)
    frac = (angles - sector * 60.0) / 60.0
    index = sector.long() % 6
    if warp:
        # Ease in/out inside each sector so hues next to a primary look more distinct (as in Lucid).
        ease_in = torch.sin(frac * (math.pi / 2.0))
        ease_out = 1.0 - torch.sin((1.0 - frac) * (math.pi / 2.0))
        frac = torch.where(index % 2 == 0, ease_in, ease_out)
    vec = (1.0 - frac)[:, None] * corners[index] + frac[:, None] * corners[(index + 1) % 6]
    return vec / torch.linalg.vector_norm(vec, dim=1, keepdim=True)


def hue_to_rgb(
    angle: float, warp: bool = True, device: Optional[Union[str, torch.device]] = None
) -> torch.Tensor:
    """The unit-length RGB colour of a hue angle.

    Args:
        angle: hue in degrees (0 red, 120 green, 240 blue; any real number, taken modulo 360).
        warp: ease the interpolation between neighbouring colours so hues are easier to tell apart.
        device: where to put the result.

    Returns:
        A float32 tensor of shape ``(3,)`` with unit norm.

    Example::

        >>> hue_to_rgb(120.0)
        tensor([0., 1., 0.])
    """
    return _hue_colors(torch.tensor([float(angle)], dtype=torch.float32, device=device), warp)[0]


def nchannels_to_rgb(x: torch.Tensor, warp: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Map an NCHW tensor with any number of channels to RGB for display (Lucid's ``channels_to_rgb``).

    Channel ``i`` of ``K`` gets the hue ``360 * i / K``; each pixel's colour is the channel-weighted sum of
    hues, whitened by how spread out its channels are, and has the same norm as the pixel's channel vector.
    Inputs with negative values are first split into positive and negative parts (``2C`` channels).

    Args:
        x: NCHW input.
        warp: passed to :func:`hue_to_rgb`.
        eps: stabiliser of the normalisation.

    Returns:
        An ``(N, 3, H, W)`` tensor.

    Example::

        >>> nchannels_to_rgb(torch.rand(1, 6, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """
    if x.dim() != 4:
        raise ValueError(f"nchannels_to_rgb expects an NCHW tensor, got {x.dim()} dimensions")
    if bool((x < 0).any()):
        x = torch.cat([F.relu(x), F.relu(-x)], dim=1)
    k = x.shape[1]
    angles = torch.arange(k, device=x.device, dtype=x.dtype) * (360.0 / k)
    colors = _hue_colors(angles, warp)
    rgb = torch.einsum("nkhw,kc->nchw", x, colors)
    rgb = rgb + (x.sum(dim=1, keepdim=True) - x.max(dim=1, keepdim=True)[0])
    rgb = rgb / (eps + torch.linalg.vector_norm(rgb, dim=1, keepdim=True))
    return rgb * torch.linalg.vector_norm(x, dim=1, keepdim=True)


class NChannelsToRGB(nn.Module):
    """Module form of :func:`nchannels_to_rgb`.

    Args:
        warp: passed to :func:`hue_to_rgb`.

    Example::

        >>> NChannelsToRGB()(torch.rand(1, 5, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """

    #: draws no random numbers: a batched render applies it to the whole batch at once
    deterministic = True

    def __init__(self, warp: bool = True) -> None:
        super().__init__()
        self.warp = warp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convert ``x`` to RGB."""
        return nchannels_to_rgb(x, self.warp)
