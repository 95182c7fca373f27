"""Class visualization: render what a classifier takes for each of some classes."""
from __future__ import annotations

import numbers
from collections import abc
from functools import partial
from typing import Callable, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..loss.activation import ClassLogit
from ..loss.base import sum_loss_list
from ..optimization.defaults import DEFAULT_LR, DEFAULT_STEPS, default_image
from ..optimization.progress import StepCallback
from ._common import image_size, render_once

__all__ = ["class_visualization", "class_logits"]


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
    labels: Union[None, Sequence[str], Mapping[int, str]] = None,
) -> torch.Tensor:
    """Render one image per class, each maximizing its class logit (all classes in one batched render).

    Args:
        model: a classifier (left as it was).
        classes: a class, or a list of them: an output index, or a class name such as ``"Egyptian cat"`` (read
            with :func:`~optim.models.class_index` against ``labels``, as the CLI's ``--class`` does; see
            :func:`~optim.recipes.classes.class_logits`).
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
        labels: the model's class names in output order (or ``{index: name}``), for class names (default: the names
            the model declares, :func:`~optim.models.model_labels`, else ImageNet's).

    Raises:
        ValueError: no class, a negative index, or an unknown or ambiguous name (with the closest names); at the
            first step, an output that is not ``[batch, classes]`` (a network without a classification head, such as
            vgg16's features), an index it does not have (naming how many outputs it has), or, for a class given by
            name, an output whose width is not the number of names (the names are not this model's classes): see
            :class:`~optim.loss.ClassLogit`, the objective of each image.
        TypeError: a class that is neither an int nor a str; bad ``labels``.

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
    objectives = class_logits(model, classes, target=target, labels=labels)
    # built after seeding, so seed fixes its init
    image = partial(default_image, image_size(model, size), batch=len(objectives))
    loss = sum_loss_list(objectives)
    return render_once(model, loss, image, transforms, steps, lr, progress, seed, callback, preprocess, average=average)


def class_logits(
    model: nn.Module,
    classes: Union[int, str, Sequence[Union[int, str]]],
    *,
    target: Optional[Union[str, nn.Module]] = None,
    labels: Union[None, Sequence[str], Mapping[int, str]] = None,
) -> List[ClassLogit]:
    """The objective of each class of a class visualization: one :class:`~optim.loss.ClassLogit` per class, the
    one reading of ``classes`` that :func:`class_visualization` and the CLI's ``--class`` share.

    A class given by name is looked up in ``labels`` (default: the names the model declares,
    :func:`~optim.models.model_labels`, else ImageNet's) and its objective requires an output of ``len(labels)``
    classes, so a model with other classes is refused at the first step instead of optimized at the same index. A
    class given by index (an int, or ASCII digits such as ``"285"``, as the command line passes it) is taken as it
    is: only its range is checked, against the output.

    Args:
        model: the classifier.
        classes: a class, or a sequence of them: an output index (an int ``>= 0``) or a class name.
        target: the module whose output holds the logits (default: the model's own output).
        labels: the model's class names in output order, or a mapping ``{index: name}`` (a Hugging Face
            ``config.id2label``); see :func:`~optim.models.check_labels`.

    Returns:
        The objectives, in the order of ``classes``: the ``i``-th reads image ``i`` of the batch
        (``batch_index=i``), one image per class.

    Raises:
        TypeError: ``classes`` is not an int, a str or a sequence of them; bad ``labels``.
        ValueError: no class, a negative index, an unknown or ambiguous name (see
            :func:`~optim.models.class_index`), or empty ``labels``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> objectives = class_logits(net, [2, "bird"], labels=["cat", "dog", "bird"])
        >>> [(o.class_index, o.num_classes, o.batch_index) for o in objectives]
        [(2, None, 0), (2, 3, 1)]
        >>> class_logits(net, 1.0)
        Traceback (most recent call last):
        ...
        TypeError: classes must be a class index (int), a class name (str) or a sequence of them, got 1.0 (float)
    """
    from ..models.selection import INDEX_TEXT, check_labels, class_index, model_labels

    if isinstance(classes, (numbers.Integral, str)) and not isinstance(classes, bool):
        items = [classes]
    elif isinstance(classes, abc.Iterable) and not isinstance(classes, (bytes, abc.Mapping)):
        items = list(classes)
    else:
        raise TypeError("classes must be a class index (int), a class name (str) or a sequence of them, got "
                        f"{classes!r} ({type(classes).__name__})")
    if not items:
        raise ValueError("classes is empty: give at least one class index or name")
    logits = model if target is None else target
    names: Optional[List[str]] = None
    objectives = []
    for i, c in enumerate(items):
        if isinstance(c, bool) or not isinstance(c, (str, numbers.Integral)):
            raise TypeError(f"classes must hold class indices (int) or names (str), got {c!r} ({type(c).__name__})")
        if isinstance(c, str) and not INDEX_TEXT.fullmatch(c.strip()):
            if names is None:
                from ..models import IMAGENET_CLASSES

                given = labels if labels is not None else model_labels(model)
                names = list(IMAGENET_CLASSES) if given is None else check_labels(given)
            objectives.append(ClassLogit(logits, class_index(c, names), batch_index=i, num_classes=len(names)))
        else:  # an index, as an int or as text ("285", the command line's): ClassLogit checks it
            objectives.append(ClassLogit(logits, int(c), batch_index=i))
    return objectives
