"""Iterate averaging of a render: the image returned is a weighted average of the images the steps optimized, not
the last one (Polyak & Juditsky 1992), with polynomial-decay weights (Shamir & Zhang 2013, "Stochastic gradient
descent for non-smooth optimization: convergence results and optimal averaging schemes", ICML): the window grows
with the render, so a short render averages a few steps and a long one many.

The last iterate of a render carries the latest transform's jitter and the optimizer's last overshoot; an average
over the last part of the render keeps what its steps agreed on. It costs one image-sized buffer and an add per
step. ``render_vis(..., average=1/6)``, ``render_layer``, ``render_batches``, the recipes, the atlas and the CLI's
``--average`` take the fraction of the render that holds most of the weight; the default is
:data:`~optim.optimization.defaults.DEFAULT_AVERAGE` for a render from noise and none for one from a photo
(:func:`~optim.optimization.defaults.resolve_average`), and the measurements are in the
:mod:`optim.optimization.defaults` docstring.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .progress import StepCallback, check_callback

__all__ = ["ImageAverage", "check_average", "MAX_AVERAGE"]

#: The widest window ``average`` may ask for: the last half of the render (weights growing linearly with the step).
MAX_AVERAGE = 0.5


def check_average(average: Any) -> Optional[float]:
    """``average`` as a fraction in ``[0, MAX_AVERAGE]`` (the last part of the render that the average of its
    steps' images is weighted towards), or ``None`` (the default's rule,
    :func:`~optim.optimization.defaults.resolve_average`).

    Raises:
        TypeError: not a number (a bool, a string ...).
        ValueError: outside ``[0, MAX_AVERAGE]`` or not finite.

    Example:
        >>> check_average(0.25), check_average(None)
        (0.25, None)
    """
    if average is None:
        return None
    if isinstance(average, bool) or not isinstance(average, (int, float)):
        raise TypeError(f"average must be a fraction in [0, {MAX_AVERAGE}] (the last part of the render its average "
                        f"of the steps' images is weighted towards) or None; got {average!r} "
                        f"({type(average).__name__})")
    if not 0.0 <= float(average) <= MAX_AVERAGE:
        raise ValueError(f"average must be a fraction in [0, {MAX_AVERAGE}]: the render returns an average of its "
                         f"steps' images weighted towards that last part of them (1/6, the default: the last sixth; "
                         f"0: the last image; an exponential decay such as 0.9, as optim once took, is no longer "
                         f"accepted), got {average!r}")
    return float(average)


class ImageAverage:
    """The polynomial-decay average of a render's images (Shamir & Zhang 2013).

    The images are those the steps optimized (one per step, folded in by :meth:`update`, e.g. from the step
    callback) and, last, the current image (given to :meth:`value`). Image ``n`` enters with weight
    ``w_n = (eta + 1) / (n + eta) = 1 / (1 + window * (n - 1))`` (``avg_n = (1 - w_n) avg_{n-1} + w_n x_n``,
    ``w_1 = 1``), where ``eta = 1 / window - 1``: after ``n`` images, image ``i`` weighs in proportion to
    ``Gamma(i + eta) / Gamma(i)``, about ``(i / n) ** eta``, so the last ``window * n`` images hold about two thirds
    of the weight (63-75%), a window that grows with the render.

    Args:
        window: the fraction of the images that holds most of the weight, in ``[0, MAX_AVERAGE]``; 0 gives the
            current image exactly, 1/6 (``eta = 5``) weighs mostly the last sixth, 0.5 weighs image ``i`` in
            proportion to ``i``.

    Example:
        >>> avg = ImageAverage(0.5)  # eta = 1: weights 1, 2, 3
        >>> for x in (1.0, 2.0):
        ...     avg.update(torch.tensor([x]))
        >>> avg.value(torch.tensor([3.0]))  # (1 * 1 + 2 * 2 + 3 * 3) / 6
        tensor([2.3333])

        A hand-wired render averaged as ``render_vis`` averages it (``then`` feeds the average from the step
        callback):

        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3))
        >>> image = opt.optimization.default_image(16)
        >>> obj = opt.InputOptimization(net, opt.loss.ChannelActivation(net[0], 1), image, seed=0)
        >>> average = ImageAverage(1 / 6)
        >>> _ = obj.optimize(8, callback=average.then(None))
        >>> average.value(image()).shape, average.steps
        (torch.Size([1, 3, 16, 16]), 8)
    """

    def __init__(self, window: float) -> None:
        checked = check_average(window)
        if checked is None:
            raise TypeError(f"window must be a float in [0, {MAX_AVERAGE}], got None")
        self.window = checked
        self.steps = 0
        self._average: Optional[torch.Tensor] = None

    def _weight(self, n: int) -> float:
        # (eta + 1) / (n + eta) with eta = 1 / window - 1, written without eta: exact at any window (no inf / inf)
        return 1.0 / (1.0 + self.window * (n - 1))

    def update(self, image: torch.Tensor) -> None:
        """Fold in one step's image ``[B, C, H, W]`` (detached; the first update fixes the shape)."""
        self.steps += 1
        if self.window == 0.0:  # value() is the current image: nothing to keep
            return
        image = image.detach()
        if self._average is None:
            self._average = image.clone()
        else:
            self._average.lerp_(image, self._weight(self.steps))  # one pass over the buffer per step

    def value(self, current: torch.Tensor) -> torch.Tensor:
        """The average of the images folded in so far and ``current`` (not folded in: the render goes on)."""
        current = current.detach()
        if self._average is None or self.window == 0.0:
            return current
        w = self._weight(self.steps + 1)
        return self._average * (1.0 - w) + current * w

    def then(self, callback: Optional[StepCallback]) -> Optional[StepCallback]:
        """A step callback that updates the average, then calls ``callback`` (if any); ``callback`` itself at
        window 0, where there is nothing to average (so a render without averaging runs no extra work per step).

        Raises:
            TypeError: ``callback`` is neither ``None`` nor callable.
        """
        check_callback(callback)
        if self.window == 0.0:
            return callback  # type: ignore[return-value]

        def step(index: int, loss: torch.Tensor, images: torch.Tensor) -> None:
            self.update(images)
            if callback is not None:
                callback(index, loss, images)

        return step
