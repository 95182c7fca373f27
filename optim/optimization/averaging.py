"""Iterate averaging of a render: the image returned is an exponential moving average of the images the steps
optimized, not the last one (Polyak & Juditsky 1992; the EMA form as in Adam's debiased moments, Kingma & Ba 2015).

The last iterate of a render carries the latest transform's jitter and the optimizer's last overshoot; an average
over the last few steps keeps what every step agreed on. It costs one image-sized buffer and an add per step.
Opt-in: ``render_vis(..., average=0.9)``, ``render_layer``, ``render_batches``, the CLI's ``--average``
(``DEFAULT_AVERAGE`` is 0, the rule in :func:`~optim.optimization.defaults.resolve_average`); the measurements are
in the :mod:`optim.optimization.defaults` docstring.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .progress import StepCallback, check_callback

__all__ = ["ImageAverage", "check_average"]


def check_average(average: Any) -> Optional[float]:
    """``average`` as a decay in ``[0, 1)``, or ``None`` (no averaging).

    Raises:
        TypeError: not a number (a bool, a string ...).
        ValueError: outside ``[0, 1)`` or not finite.

    Example:
        >>> check_average(0.9), check_average(None)
        (0.9, None)
    """
    if average is None:
        return None
    if isinstance(average, bool) or not isinstance(average, (int, float)):
        raise TypeError(f"average must be a float decay in [0, 1) or None, got {average!r} ({type(average).__name__})")
    if not 0.0 <= float(average) < 1.0:
        raise ValueError(f"average must be a decay in [0, 1) (0.9: about the last 10 steps), got {average!r}")
    return float(average)


class ImageAverage:
    """The debiased exponential moving average of a render's images.

    The images are those the steps optimized (one per step, folded in by :meth:`update`, e.g. from the step
    callback) and, last, the current image (given to :meth:`value`). After images ``x_0 .. x_t`` it is
    ``sum_i d^(t - i) x_i / sum_i d^(t - i)``: a weighted mean that forgets at rate ``d``.

    Args:
        decay: ``d`` in ``[0, 1)``; 0 gives the current image exactly, 0.9 averages roughly the last 10.

    Example:
        >>> avg = ImageAverage(0.5)
        >>> for x in (1.0, 2.0):
        ...     avg.update(torch.tensor([x]))
        >>> avg.value(torch.tensor([3.0]))  # (0.25 * 1 + 0.5 * 2 + 1 * 3) / 1.75
        tensor([2.4286])
    """

    def __init__(self, decay: float) -> None:
        checked = check_average(decay)
        if checked is None:
            raise TypeError("decay must be a float in [0, 1), got None")
        self.decay = checked
        self.steps = 0
        self._ema: Optional[torch.Tensor] = None

    def update(self, image: torch.Tensor) -> None:
        """Fold in one step's image ``[B, C, H, W]`` (detached; the first update fixes the shape)."""
        self.steps += 1
        if self.decay == 0.0:  # value() is the current image: nothing to keep
            return
        image = image.detach()
        if self._ema is None:
            self._ema = image * (1.0 - self.decay)
        else:
            self._ema.mul_(self.decay).add_(image, alpha=1.0 - self.decay)

    def value(self, current: torch.Tensor) -> torch.Tensor:
        """The average of the images folded in so far and ``current`` (not folded in: the render goes on)."""
        current = current.detach()
        if self._ema is None or self.decay == 0.0:
            return current
        summed = self._ema * self.decay + current * (1.0 - self.decay)
        return summed / (1.0 - self.decay ** (self.steps + 1))

    def then(self, callback: Optional[StepCallback]) -> Optional[StepCallback]:
        """A step callback that updates the average, then calls ``callback`` (if any); ``callback`` itself at
        decay 0, where there is nothing to average (so a render without averaging runs no extra work per step).

        Raises:
            TypeError: ``callback`` is neither ``None`` nor callable.
        """
        check_callback(callback)
        if self.decay == 0.0:
            return callback  # type: ignore[return-value]

        def step(index: int, loss: torch.Tensor, images: torch.Tensor) -> None:
            self.update(images)
            if callback is not None:
                callback(index, loss, images)

        return step
