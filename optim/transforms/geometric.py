"""Random geometric transforms: integer jitter, rescaling, rescaling in a fixed frame, rotation.

Every module draws its parameters from torch's generator (so ``torch.manual_seed`` reproduces a render),
and exposes ``apply_params`` to run the same transform with given parameters.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._affine import check_modes, warp_similarity
from ._sampling import ValueSpec, parse_values, pick, sample_distribution, split_distribution

__all__ = ["spatial_jitter", "RandomSpatialJitter", "RandomScale", "RandomScaleAffine", "RandomRotation"]

_JITTER_PADDING = ("reflect", "replicate", "circular", "constant")


def _check_nchw(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} expects an NCHW tensor, got {x.dim()} dimensions")


def spatial_jitter(
    x: torch.Tensor, shift_y: int, shift_x: int, padding_mode: str = "reflect", value: float = 0.0
) -> torch.Tensor:
    """Translate the content of an NCHW tensor by whole pixels, keeping its size.

    ``out[..., i, j] = x[..., i - shift_y, j - shift_x]``; pixels shifted in come from ``padding_mode``
    (``"circular"`` is ``numpy.roll``).

    Args:
        x: NCHW input.
        shift_y: rows to move the content down (negative: up).
        shift_x: columns to move the content right (negative: left).
        padding_mode: ``"reflect"``, ``"replicate"``, ``"circular"`` or ``"constant"``.
        value: fill for ``"constant"``.

    Returns:
        A tensor of the same shape as ``x``.

    Example::

        >>> spatial_jitter(torch.arange(4.0).view(1, 1, 1, 4), 0, 1, "circular")
        tensor([[[[3., 0., 1., 2.]]]])
    """
    _check_nchw(x, "spatial_jitter")
    h, w = x.shape[-2], x.shape[-1]
    if abs(shift_y) >= h or abs(shift_x) >= w:
        raise ValueError(f"a shift of ({shift_y}, {shift_x}) must be smaller than the image size ({h}, {w})")
    pad = [max(shift_x, 0), max(-shift_x, 0), max(shift_y, 0), max(-shift_y, 0)]
    if padding_mode == "constant":
        padded = F.pad(x, pad, mode="constant", value=value)
    else:
        padded = F.pad(x, pad, mode=padding_mode)
    top, left = max(-shift_y, 0), max(-shift_x, 0)
    return padded[:, :, top : top + h, left : left + w]


class RandomSpatialJitter(nn.Module):
    """Translate the content by a random whole number of pixels in ``[-translate, translate]`` on each axis.

    Args:
        translate: the largest shift, in pixels.
        padding_mode: how shifted-in pixels are filled: ``"reflect"`` (default, as captum), ``"replicate"``,
            ``"circular"`` or ``"constant"``.
        value: fill for ``"constant"``.

    Example::

        >>> jitter = RandomSpatialJitter(4)
        >>> jitter(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(self, translate: int, padding_mode: str = "reflect", value: float = 0.0) -> None:
        super().__init__()
        if isinstance(translate, bool) or not isinstance(translate, int) or translate < 0:
            raise ValueError(f"translate must be a non-negative int, got {translate!r}")
        if padding_mode not in _JITTER_PADDING:
            raise ValueError(f"padding_mode must be one of {_JITTER_PADDING}, got {padding_mode!r}")
        self.translate = translate
        self.padding_mode = padding_mode
        self.value = float(value)

    def sample_params(self) -> List[int]:
        """Draw ``[shift_y, shift_x]`` (from the CPU generator: slicing needs host integers anyway)."""
        shift: List[int] = torch.randint(-self.translate, self.translate + 1, (2,)).tolist()
        return shift

    def apply_params(self, x: torch.Tensor, shift_y: int, shift_x: int) -> torch.Tensor:
        """Shift ``x`` by the given number of pixels with this module's padding."""
        return spatial_jitter(x, shift_y, shift_x, self.padding_mode, self.value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Randomly translate an NCHW tensor."""
        shift = self.sample_params()
        return self.apply_params(x, shift[0], shift[1])

    def extra_repr(self) -> str:
        return f"translate={self.translate}, padding_mode={self.padding_mode!r}"


class _Distributed(nn.Module):
    """A random transform parameter that may come from a ``torch.distributions`` object (captum's option).

    A distribution is not TorchScript-compatible: a module holding one scripts, but a scripted call raises.
    """

    # the distribution is Python-only state; TorchScript leaves the attribute out
    __jit_ignored_attributes__ = ["distribution"]

    def _set_distribution(self, distribution: Optional[torch.distributions.Distribution]) -> None:
        self.distribution = distribution
        self.is_distribution = distribution is not None

    @torch.jit.unused
    def _sample_distribution(self, u):
        # type: (float) -> float
        # (a type comment: this module's postponed annotations are strings, which TorchScript cannot read on
        # an unused method)
        return sample_distribution(self.distribution, u)


class RandomScale(_Distributed):
    """Resize an NCHW tensor by a random factor with ``F.interpolate`` (the output size changes).

    Args:
        scale: a list (or 1-D tensor) of factors to choose from, a ``(min, max)`` tuple for a uniform range, or
            a ``torch.distributions`` object of scalars (drawn through its inverse CDF from the transform's
            random stream; not TorchScript-compatible).
        mode: ``F.interpolate`` mode (``"bilinear"``, ``"nearest"``, ``"bicubic"``, ``"area"``).
        align_corners: passed to ``F.interpolate`` for the modes that take it.
        antialias: low-pass filter before downscaling (``F.interpolate``'s option; ``"bilinear"`` and
            ``"bicubic"`` only), as captum's ``RandomScale(antialias=True)``.

    Example::

        >>> RandomScale([0.5])(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 3, 16, 16])
        >>> RandomScale(torch.distributions.Uniform(0.5, 0.75)).value_at(0.5)
        0.625
    """

    def __init__(
        self, scale: ValueSpec, mode: str = "bilinear", align_corners: bool = False, antialias: bool = False
    ) -> None:
        super().__init__()
        spec, distribution = split_distribution(scale, "scale")
        if distribution is None:
            table, is_range = parse_values(spec, "scale")
            if min(table) <= 0:
                raise ValueError(f"scale factors must be positive, got {table}")
        else:
            table, is_range = [1.0], False  # unused with a distribution (a typed placeholder for TorchScript)
        if mode not in ("bilinear", "nearest", "bicubic", "area"):
            raise ValueError(f"mode must be 'bilinear', 'nearest', 'bicubic' or 'area', got {mode!r}")
        if antialias and mode not in ("bilinear", "bicubic"):
            raise ValueError(f"antialias needs mode 'bilinear' or 'bicubic', got {mode!r}")
        self.scale: List[float] = table
        self.is_range = is_range
        self._set_distribution(distribution)
        self.mode = mode
        self.align_corners = align_corners
        self.antialias = bool(antialias)

    def value_at(self, u: float) -> float:
        """The factor for the uniform draw ``u`` in ``[0, 1)``."""
        if self.is_distribution:
            return self._sample_distribution(u)
        return pick(self.scale, self.is_range, u)

    def sample_params(self) -> float:
        """Draw a factor (from the CPU generator)."""
        return self.value_at(float(torch.rand(())))

    def apply_params(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """Resize ``x`` by ``scale``."""
        _check_nchw(x, "RandomScale")
        if self.mode in ("nearest", "area"):
            return F.interpolate(x, scale_factor=scale, mode=self.mode, recompute_scale_factor=False)
        return F.interpolate(
            x,
            scale_factor=scale,
            mode=self.mode,
            align_corners=self.align_corners,
            recompute_scale_factor=False,
            antialias=self.antialias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Randomly resize an NCHW tensor."""
        return self.apply_params(x, self.sample_params())


class _RandomSimilarity(_Distributed):
    """Shared storage of a random parameter table (or distribution), the resampling mode and the canvas fill."""

    def __init__(self, values: ValueSpec, name: str, mode: str, padding_mode: str, value: float) -> None:
        super().__init__()
        spec, distribution = split_distribution(values, name)
        # with a distribution the table is an unused placeholder (TorchScript needs a typed, non-empty list)
        table, is_range = parse_values(spec, name) if distribution is None else ([1.0], False)
        self.values: List[float] = table
        self.is_range = is_range
        self._set_distribution(distribution)
        self.mode = mode
        self.padding_mode = check_modes(mode, padding_mode, float(value))
        self.value = float(value)

    def value_at(self, u: float) -> float:
        """The value for the uniform draw ``u`` in ``[0, 1)`` (a table entry, a point of the range, or the
        distribution's inverse CDF at ``u``)."""
        if self.is_distribution:
            return self._sample_distribution(u)
        return pick(self.values, self.is_range, u)

    def sample_params(self) -> float:
        """Draw one value (from the CPU generator; no device work)."""
        return self.value_at(float(torch.rand(())))

    def extra_repr(self) -> str:
        if self.is_distribution:
            values = f"distribution={self.distribution!r}"
        else:
            values = f"range={tuple(self.values)}" if self.is_range else f"choices={len(self.values)}"
        return f"{values}, mode={self.mode!r}, padding_mode={self.padding_mode!r}"


class RandomScaleAffine(_RandomSimilarity):
    """Magnify the content by a random factor about the centre, keeping the frame size (affine resampling).

    A factor of 2 doubles the content's size, as :class:`RandomScale` would; below 1 the content shrinks and
    the uncovered border is filled according to ``padding_mode``. (captum's ``RandomScaleAffine`` uses the
    reciprocal convention: its factor scales the sampling grid.)

    Args:
        scale: a list (or 1-D tensor) of factors to choose from, a ``(min, max)`` tuple for a uniform range, or
            a ``torch.distributions`` object (see :class:`RandomScale`).
        mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"``.
        padding_mode: ``"constant"`` (fill with ``value``; ``"zeros"`` is accepted), ``"border"`` or
            ``"reflection"``.
        value: fill for ``"constant"``.

    Example::

        >>> RandomScaleAffine((0.9, 1.1))(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self, scale: ValueSpec, mode: str = "bilinear", padding_mode: str = "constant", value: float = 0.0
    ) -> None:
        super().__init__(scale, "scale", mode, padding_mode, value)
        if not self.is_distribution and min(self.values) <= 0:
            raise ValueError(f"scale factors must be positive, got {self.values}")

    def apply_params(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """Magnify the content of ``x`` by ``scale``."""
        _check_nchw(x, "RandomScaleAffine")
        hw = [x.shape[-2], x.shape[-1]]
        return warp_similarity(x, scale, 0.0, [0.0, 0.0], [0.0, 0.0], hw, self.mode, self.padding_mode, self.value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Randomly rescale the content of an NCHW tensor."""
        return self.apply_params(x, self.sample_params())


class RandomRotation(_RandomSimilarity):
    """Rotate the content by a random angle (degrees, counter-clockwise as displayed) about the centre.

    Args:
        degrees: a list (or 1-D tensor) of angles to choose from, a ``(min, max)`` tuple for a uniform range, or
            a ``torch.distributions`` object (e.g. ``torch.distributions.Normal(0.0, 10.0)``; see
            :class:`RandomScale`).
        mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"``.
        padding_mode: ``"constant"`` (fill with ``value``; ``"zeros"`` is accepted), ``"border"`` or
            ``"reflection"``.
        value: fill for ``"constant"``.

    Example::

        >>> RandomRotation([-10.0, 0.0, 10.0])(torch.rand(1, 3, 32, 48)).shape
        torch.Size([1, 3, 32, 48])
    """

    def __init__(
        self, degrees: ValueSpec, mode: str = "bilinear", padding_mode: str = "constant", value: float = 0.0
    ) -> None:
        super().__init__(degrees, "degrees", mode, padding_mode, value)

    def apply_params(self, x: torch.Tensor, angle: float) -> torch.Tensor:
        """Rotate the content of ``x`` by ``angle`` degrees."""
        _check_nchw(x, "RandomRotation")
        hw = [x.shape[-2], x.shape[-1]]
        return warp_similarity(x, 1.0, angle, [0.0, 0.0], [0.0, 0.0], hw, self.mode, self.padding_mode, self.value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Randomly rotate an NCHW tensor."""
        return self.apply_params(x, self.sample_params())
