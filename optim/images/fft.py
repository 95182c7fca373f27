"""Fourier parameterization: the image's spectrum, scaled by 1/f, is the parameter (Lucid's fft_image)."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn

from .base import ImageParameterization, assign_, check_generators, image_geometry, normal_noise

__all__ = ["FFTImage", "rfft2d_freqs", "spectrum_scale"]


def rfft2d_freqs(height: int, width: int, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The frequency magnitude of every coefficient of a real 2D FFT, as in Lucid.

    Args:
        height: image height.
        width: image width.
        dtype: floating dtype of the result (the default dtype if None).

    Returns:
        A ``[height, width // 2 + 1]`` tensor of ``sqrt(fx**2 + fy**2)`` in cycles per pixel.

    Example::

        >>> rfft2d_freqs(4, 4)[0, 1]
        tensor(0.2500)
    """
    fy = torch.fft.fftfreq(height, dtype=dtype)[:, None]
    fx = torch.fft.rfftfreq(width, dtype=dtype)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def spectrum_scale(
    height: int, width: int, decay_power: float = 1.0, dtype: Optional[torch.dtype] = None
) -> torch.Tensor:
    """Lucid's 1/f scaling of a real 2D spectrum, times ``sqrt(height * width)``.

    The ``sqrt(h * w)`` factor makes ``irfft2`` (which divides by ``h * w``) orthonormal, so a white
    spectrum of unit variance gives pixels of comparable variance at any image size.

    Args:
        height: image height.
        width: image width.
        decay_power: exponent of the 1/f fall-off (0 gives a flat spectrum).
        dtype: floating dtype of the result.

    Returns:
        A ``[height, width // 2 + 1]`` tensor.
    """
    freqs = rfft2d_freqs(height, width, dtype=dtype)
    floor = torch.full_like(freqs, 1.0 / max(height, width))
    return math.sqrt(height * width) / torch.maximum(freqs, floor) ** decay_power


class FFTImage(ImageParameterization):
    """An image parameterized by its real 2D Fourier spectrum with 1/f scaling (Lucid's ``fft_image``).

    The parameter ``spectrum`` is ``[B, C, H, W // 2 + 1, 2]`` (real and imaginary parts); ``forward``
    returns ``irfft2(spectrum * scale)``. The scaling gives every frequency band a similar effective
    learning rate, which makes optimization favour natural, low-frequency images.

    Unlike Lucid, odd widths keep exactly ``W // 2 + 1`` frequencies (``torch.fft.irfft2`` is told the
    output size), so ``init`` inverts exactly for any size. Like captum's ``FFTImage`` and unlike Lucid / Lucent
    (``image / 4``), the image is not divided by 4: from the same spectrum it is 4x Lucid's, so a Lucid learning
    rate or initial noise level corresponds to a 4x smaller one here (the render defaults were tuned this way).

    Moved to float16 or bfloat16 (``module.to(torch.bfloat16)``), it still computes and returns float32: there
    is no complex bfloat16 and no CPU float16 FFT.

    Args:
        size: ``(height, width)`` (ignored when ``init`` is given).
        channels: channels per image (ignored when ``init`` is given).
        batch: number of images; a single-image ``init`` is repeated to this many.
        init: a CHW or NCHW tensor; ``forward()`` then returns it (up to floating point rounding).
        decay_power: exponent of the 1/f scaling.

    Example::

        >>> image = FFTImage((64, 64), decay_power=1.5)
        >>> image().shape
        torch.Size([1, 3, 64, 64])
    """

    __constants__ = ["height", "width"]

    def __init__(
        self,
        size: Sequence[int] = (224, 224),
        channels: int = 3,
        batch: int = 1,
        init: Optional[torch.Tensor] = None,
        *,
        decay_power: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(decay_power, (int, float)) or isinstance(decay_power, bool):
            raise TypeError(f"decay_power must be a number, got {type(decay_power).__name__}")
        geo = image_geometry(size, channels, batch, init)
        height, width = geo.height, geo.width
        self.height = height
        self.width = width
        self.decay_power = float(decay_power)
        # float64 until cast by Module.to(), so a module later moved to float64 loses no precision
        scale = spectrum_scale(height, width, self.decay_power, dtype=torch.float64).to(geo.device)
        self.register_buffer("scale", scale)
        shape = (geo.batch, geo.channels, height, width // 2 + 1, 2)
        self.spectrum = nn.Parameter(torch.empty(shape, dtype=geo.dtype, device=geo.device))
        if geo.init is None:
            self._remember_initial_state(None)
        else:
            spectrum = torch.view_as_real(torch.fft.rfft2(geo.init)) / scale[..., None].to(geo.dtype)
            self._remember_initial_state([spectrum])
        self.reset_parameters()

    def reset_parameters(self, generators: Optional[Sequence[torch.Generator]] = None) -> None:
        """Re-draw the spectrum as ``N(0, 0.01)`` (Lucid's; image ``i`` from ``generators[i]``), or go back to ``init``.

        See :meth:`ImageParameterization.reset_parameters`.
        """
        check_generators(generators, self.spectrum.size(0), "FFTImage.reset_parameters")
        if not self._restore_initial_state([self.spectrum]):
            assign_(self.spectrum, normal_noise(self.spectrum.shape, generators, self.spectrum.dtype) * 0.01)

    def forward(self) -> torch.Tensor:
        """Returns:
        The ``[B, C, H, W]`` image ``irfft2(spectrum * scale)``."""
        # complex * real: a real scale broadcast over a trailing (re, im) axis of size 1 is several times
        # slower on CPU, forward and backward, and gives the same values
        spectrum = self.spectrum
        if spectrum.dtype == torch.float16 or spectrum.dtype == torch.bfloat16:
            # no complex bfloat16, and no float16 FFT on CPU: a module moved to a low precision computes in
            # float32 (and returns float32; a render casts the image to the model's dtype)
            spectrum = spectrum.float()
        scaled = torch.view_as_complex(spectrum) * self.scale.to(spectrum.dtype)
        return torch.fft.irfft2(scaled, s=[self.height, self.width])
