"""Class visualization: render what a classifier takes for each of some classes."""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..loss.activation import ClassLogit
from ..loss.base import sum_loss_list
from ..optimization.defaults import DEFAULT_LR, DEFAULT_STEPS, default_image
from ..optimization.progress import StepCallback
from ._common import image_size, render_once

__all__ = ["class_visualization"]


def class_visualization(
    model: nn.Module,
    classes: Union[int, str, Sequence[Union[int, str]]],
    target: Optional[Union[str, nn.Module]] = None,
    size: Optional[int] = None,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    transforms: Optional[nn.Module] = None,
    progress: bool = True,
    seed: Optional[int] = None,
    *,
    callback: Optional[StepCallback] = None,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    average: Optional[float] = None,
    labels: Optional[Sequence[str]] = None,
) -> torch.Tensor:
    """Render one image per class, each maximizing its class logit (all classes in one batched render).

    Args:
        model: a classifier (left as it was).
        classes: a class, or a list of them: an output index, or a class name such as ``"Egyptian cat"`` (read
            with :func:`~optim.models.class_index` against ``labels``, as the CLI's ``--class`` does).
        target: the module whose output holds the logits (default: the model's own output).
        size: image side (default: the model's native size, else ``DEFAULT_SIZE``; see
            :func:`~optim.models.preprocess.render_inputs`).
        steps: optimization steps.
        lr: the learning rate at the first step.
        transforms: default :func:`~optim.render.default_transforms`.
        progress: show a progress bar.
        seed: seed for a reproducible render.
        callback: ``callback(step, loss, images)`` after every step (see :func:`~optim.render.render_vis`).
        preprocess: applied before the model (as ``render_vis`` takes it; ``None``: the model's declared
            normalization, else none).
        average: iterate averaging, as :func:`~optim.render.render_vis` takes it (``None``: its rule, an average
            weighted towards the last sixth from noise, the last image from a photo).
        labels: the model's class names in output order, for class names (default: ImageNet's).

    Raises:
        ValueError: no class, a negative index, or an unknown name (with the closest names); at the first step, an
            output that is not ``[batch, classes]`` (a network without a classification head, such as vgg16's
            features) or an index it does not have (naming how many outputs it has): see
            :class:`~optim.loss.ClassLogit`, the objective of each image.
        TypeError: a class that is neither an int nor a str.

    Returns:
        An ``ImageTensor`` ``[len(classes), 3, size, size]``, in the order of ``classes``.

    Example::

        >>> model = opt.models.efficientnet_lite0(pretrained=True).eval()
        >>> classes = [1, 130, 980]
        >>> [opt.models.IMAGENET_CLASSES[c] for c in classes]
        ['goldfish', 'flamingo', 'volcano']
        >>> images = class_visualization(model, classes, size=64, steps=4, progress=False, seed=0)  # try steps=128
        >>> images.shape
        torch.Size([3, 3, 64, 64])
        >>> fig = opt.show(images, labels=[opt.models.IMAGENET_CLASSES[c] for c in classes])
        >>> class_visualization(model, "Egyptian cat", size=64, steps=1, progress=False).shape
        torch.Size([1, 3, 64, 64])
    """
    from ..models.selection import class_index

    items = [classes] if isinstance(classes, (int, str)) and not isinstance(classes, bool) else list(classes)
    if not items:
        raise ValueError("classes is empty: give at least one class index or name")
    indices = []
    for c in items:
        if isinstance(c, str):
            indices.append(class_index(c, labels))
        elif isinstance(c, bool) or not isinstance(c, int):
            raise TypeError(f"classes must hold class indices (int) or names (str), got {c!r} ({type(c).__name__})")
        elif c < 0:
            raise ValueError(f"class indices must be >= 0, got {c}")
        else:
            indices.append(c)
    logits = model if target is None else target
    loss = sum_loss_list([ClassLogit(logits, c, batch_index=i) for i, c in enumerate(indices)])
    # built after seeding, so seed fixes its init
    image = partial(default_image, image_size(model, size), batch=len(indices))
    return render_once(model, loss, image, transforms, steps, lr, progress, seed, callback, preprocess, average=average)
