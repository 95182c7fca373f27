"""The mean Fourier magnitude of a dataset, for spectrum-matched image parameterizations."""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..images.base import check_size
from ._color import _accumulation_dtype, iter_image_batches

__all__ = ["dataset_spectrum"]


def dataset_spectrum(loader: Iterable[Any], size: Union[int, Sequence[int]]) -> torch.Tensor:
    """The mean magnitude of the real 2D FFT (``norm="ortho"``) of every image in a dataset.

    Images of another size are resized (bilinear, antialiased) to ``size`` first. The result is the
    ``magnitude`` that ``opt.images.PhaseImage`` takes, so optimized images share the dataset's power
    spectrum (MACO, Fel et al. 2023).

    Args:
        loader: an iterable of NCHW batches or ``(images, labels)`` pairs, such as a ``DataLoader``.
        size: the image size ``(height, width)`` (an int for a square) the spectrum is for.

    Returns:
        A float32 ``[C, H, W // 2 + 1]`` tensor on the batches' device.

    Raises:
        ValueError: for a bad ``size``, an empty loader, or batches whose channel counts differ.

    Example::

        >>> import functools
        >>> loader = torch.utils.data.DataLoader(torch.rand(8, 3, 96, 96), batch_size=4)
        >>> magnitude = dataset_spectrum(loader, 64)  # resized to 64 x 64 first
        >>> magnitude.shape
        torch.Size([3, 64, 33])
        >>> phase = functools.partial(opt.images.PhaseImage, magnitude=magnitude)  # NaturalImage passes size etc.
        >>> image = opt.images.NaturalImage((64, 64), parameterization=phase)
        >>> image().shape
        torch.Size([1, 3, 64, 64])
    """
    height, width = check_size(size)
    total: Optional[torch.Tensor] = None
    count = 0
    for images in iter_image_batches(loader):
        images = images.to(_accumulation_dtype(images.device))
        if tuple(images.shape[2:]) != (height, width):
            images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        magnitude = torch.fft.rfft2(images, norm="ortho").abs().sum(0)
        if total is None:
            total = magnitude
        elif magnitude.shape != total.shape:
            raise ValueError(f"every batch needs {total.size(0)} channels, got a batch with {magnitude.size(0)}")
        else:
            total = total + magnitude.to(total.device)
        count += images.size(0)
    if total is None:
        raise ValueError("dataset_spectrum needs a loader yielding at least one image")
    return (total / count).float()
