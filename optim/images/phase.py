"""MACO: optimize only the Fourier phase of an image under a fixed magnitude spectrum."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from .base import ImageParameterization, assign_, check_generators, image_geometry, normal_noise
from .fft import spectrum_scale

__all__ = ["PhaseImage"]


class PhaseImage(ImageParameterization):
    """Magnitude-constrained image (MACO, Fel et al. 2023): the phase is the only parameter.

    ``forward`` builds ``irfft2(magnitude * exp(i * phase))`` and standardizes every channel of every
    image to zero mean and unit standard deviation (before any colour recorrelation or squashing, which
    ``NaturalImage`` adds). Fixing the magnitude keeps the image's power spectrum that of natural images,
    which is what lets MACO scale feature visualization to deep networks.

    Args:
        size: ``(height, width)`` (ignored when ``init`` is given).
        channels: channels per image (ignored when ``init`` is given).
        batch: number of images; a single-image ``init`` is repeated to this many.
        init: a CHW or NCHW image whose phase starts the optimization (its magnitude is replaced by
            ``magnitude``, so the output only resembles it). Random phases ``N(0, 1)`` otherwise.
        magnitude: (keyword-only) a fixed magnitude spectrum of shape ``[C, H, W // 2 + 1]`` or
            ``[H, W // 2 + 1]``, for example ``opt.dataset.dataset_spectrum`` over your own images. By
            default a natural 1/f power law (``1 / max(f, 1 / max(H, W)) ** decay_power``); nothing is
            downloaded.
        decay_power: (keyword-only) exponent of the default 1/f magnitude.

    Raises:
        ValueError: a ``magnitude`` whose shape does not fit the image.

    Example::

        >>> from optim.images import NaturalImage
        >>> image = NaturalImage((128, 128), parameterization=PhaseImage)
        >>> image().shape
        torch.Size([1, 3, 128, 128])
    """

    __constants__ = ["height", "width"]

    def __init__(
        self,
        size: Sequence[int] = (224, 224),
        channels: int = 3,
        batch: int = 1,
        init: Optional[torch.Tensor] = None,
        *,
        magnitude: Optional[torch.Tensor] = None,
        decay_power: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(decay_power, (int, float)) or isinstance(decay_power, bool):
            raise TypeError(f"decay_power must be a number, got {type(decay_power).__name__}")
        batch, channels, height, width, init, dtype, _ = image_geometry(size, channels, batch, init)
        freq_shape = (height, width // 2 + 1)
        if magnitude is None:
            magnitude = spectrum_scale(height, width, decay_power, dtype=torch.float64)
            magnitude = magnitude.expand(channels, *freq_shape)
        else:
            if not isinstance(magnitude, torch.Tensor):
                raise TypeError(f"magnitude must be a tensor, got {type(magnitude).__name__}")
            if magnitude.dim() == 2:
                magnitude = magnitude.unsqueeze(0)
            if magnitude.dim() != 3 or tuple(magnitude.shape[1:]) != freq_shape or magnitude.size(0) not in (
                1,
                channels,
            ):
                raise ValueError(
                    f"magnitude must have shape [{channels} or 1, {height}, {width // 2 + 1}] for a "
                    f"{height}x{width} image, got {tuple(magnitude.shape)}"
                )
            magnitude = magnitude.detach().expand(channels, *freq_shape)
        self.height = height
        self.width = width
        device = init.device if init is not None else magnitude.device
        self.register_buffer("magnitude", magnitude.to(device).clone())
        self.phase = nn.Parameter(torch.empty(batch, channels, *freq_shape, dtype=dtype, device=device))
        if init is None:
            self._remember_initial_state(None)
        else:
            centred = init - init.mean(dim=(2, 3), keepdim=True)
            self._remember_initial_state([torch.angle(torch.fft.rfft2(centred))])
        self.reset_parameters()

    def reset_parameters(self, generators: Optional[Sequence[torch.Generator]] = None) -> None:
        """Re-draw the phase as ``N(0, 1)`` (image ``i`` from ``generators[i]``), or go back to ``init``'s phase.

        See :meth:`ImageParameterization.reset_parameters`.
        """
        check_generators(generators, self.phase.size(0), "PhaseImage.reset_parameters")
        if not self._restore_initial_state([self.phase]):
            assign_(self.phase, normal_noise(self.phase.shape, generators, self.phase.dtype))

    def forward(self) -> torch.Tensor:
        """Returns:
        The ``[B, C, H, W]`` image, standardized per image and channel."""
        phase = self.phase
        if phase.dtype == torch.float16 or phase.dtype == torch.bfloat16:
            phase = phase.float()  # no low-precision complex FFT: compute in float32, as FFTImage does
        magnitude = self.magnitude.to(phase.dtype).expand_as(phase)
        spectrum = torch.polar(magnitude, phase)
        image = torch.fft.irfft2(spectrum, s=[self.height, self.width])
        var, mean = torch.var_mean(image, dim=[2, 3], correction=0, keepdim=True)
        return (image - mean) / torch.sqrt(var + 1e-10)
