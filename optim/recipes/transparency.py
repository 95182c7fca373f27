"""RGBA rendering: a 4-channel image blended over random backgrounds, rewarded for being transparent."""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Union

import torch
import torch.nn as nn

from ..loss.base import Loss
from ..loss.parse import parse
from ..loss.style import Transparency
from ..optimization.defaults import DEFAULT_LR, DEFAULT_STEPS, default_image, default_transforms
from ..optimization.progress import StepCallback
from ._common import image_size, render_once

__all__ = ["render_rgba"]


def render_rgba(
    model: nn.Module,
    objective: Union[Loss, str],
    transparency: float = 10.0,
    size: Optional[int] = None,
    batch: int = 1,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    transforms: Optional[nn.Module] = None,
    progress: bool = True,
    seed: Optional[int] = None,
    *,
    callback: Optional[StepCallback] = None,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    average: Optional[float] = None,
) -> torch.Tensor:
    """Render a feature with an alpha channel (Lucid's transparent neuron visualizations).

    The image is a 4-channel ``NaturalImage``; every step it is composited over a fresh random
    background (``BlendAlpha``) before the transforms, so only the opaque pixels can carry the feature,
    and ``transparency`` times :class:`~optim.loss.Transparency` rewards leaving the rest see-through.

    Args:
        model: the network (left as it was).
        objective: a loss or a string such as ``"blocks.10:7"``.
        transparency: weight of the transparency reward (in [0, 1] per image, so it needs a weight
            comparable to the objective's scale; 10 suits mid-layer channels of ImageNet networks).
        size: image side (default: the model's native size, else ``DEFAULT_SIZE``; see
            :func:`~optim.models.preprocess.render_inputs`).
        batch: number of images.
        steps: optimization steps.
        lr: the learning rate at the first step.
        transforms: applied after the blending (default :func:`~optim.render.default_transforms`).
        progress: show a progress bar.
        seed: seed for a reproducible render.
        callback: ``callback(step, loss, images)`` after every step (see :func:`~optim.render.render_vis`).
        preprocess: applied before the model (as ``render_vis`` takes it; ``None``: the model's declared
            normalization, else none).
        average: iterate averaging, as :func:`~optim.render.render_vis` takes it (``None``: its rule, an average
            weighted towards the last sixth from noise, the last image from a photo).

    Returns:
        An ``ImageTensor`` ``[batch, 4, size, size]`` (RGB and alpha in ``[0, 1]``).

    Example::

        >>> rgba = render_rgba(model, "blocks.10:7", transparency=10.0, size=32, steps=4, progress=False, seed=0)
        >>> rgba.shape  # RGB + alpha
        torch.Size([1, 4, 32, 32])
        >>> rgba.export("feature.png")  # a PNG with transparency
        [PosixPath('feature.png')]
    """
    from ..transforms import BlendAlpha

    loss = parse(objective, model=model) if isinstance(objective, str) else objective
    if not isinstance(loss, Loss):
        raise TypeError(f"objective must be a Loss or an objective string, got {type(objective).__name__}")
    after = default_transforms() if transforms is None else transforms
    # "input_param" names the image parameterization inside the optimization
    loss = loss + float(transparency) * Transparency("input_param")
    # built after seeding, so seed fixes its init
    image = partial(default_image, image_size(model, size), batch=batch, channels=4)
    blend = nn.Sequential(BlendAlpha(), after)
    return render_once(model, loss, image, blend, steps, lr, progress, seed, callback, preprocess, average=average)
