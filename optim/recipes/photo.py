"""Recipes that start from, or compare with, a real photo: DeepDream, feature inversion, style transfer
and feature accentuation."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..images.base import as_image_batch
from ..loss.activation import DeepDream
from ..loss.base import Loss, sum_loss_list
from ..loss.parse import parse
from ..loss.style import ContentLoss, ReferenceDistance, StyleLoss
from ..optimization.defaults import DEFAULT_LR, DEFAULT_STEPS, default_image
from ..optimization.progress import StepCallback
from ._common import reference_activations, render_once, shape_preserving_transforms

__all__ = ["deep_dream", "feature_inversion", "style_transfer", "feature_accentuation"]

Layer = Union[str, nn.Module]


def deep_dream(
    model: nn.Module,
    image: torch.Tensor,
    layer: Layer,
    steps: int = 64,
    lr: float = DEFAULT_LR,
    transforms: Optional[nn.Module] = None,
    progress: bool = True,
    seed: Optional[int] = None,
    *,
    callback: Optional[StepCallback] = None,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    average: Optional[float] = None,
) -> torch.Tensor:
    """DeepDream on a photo (Mordvintsev et al. 2015): amplify whatever ``layer`` sees in it.

    Args:
        model: the network (left as it was).
        image: the photo, CHW or NCHW in ``[0, 1]``.
        layer: the layer whose squared activation is raised.
        steps: optimization steps.
        lr: Adam's learning rate.
        transforms: default: a small size-preserving jitter.
        progress: show a progress bar.
        seed: seed for a reproducible render.
        callback: ``callback(step, loss, images)`` after every step (see :func:`~optim.render.render_vis`).
        preprocess: applied before the model (as ``render_vis`` takes it; ``None``: the model's declared
            normalization, else none).
        average: iterate averaging, as :func:`~optim.render.render_vis` takes it (``None``: its rule, an average
            weighted towards the last sixth from noise, the last image from a photo).

    Returns:
        The dreamed ``ImageTensor``, same shape as ``image`` (batched).

    Example::

        >>> dream = deep_dream(model, cat, "blocks.6", steps=4, progress=False, seed=0)  # cat: a [1, 3, 96, 96] photo
        >>> dream.shape
        torch.Size([1, 3, 96, 96])
        >>> energy = lambda x: opt.models.collect_activations(model, "blocks.6", x)["blocks.6"].pow(2).mean()
        >>> bool(energy(dream) > energy(cat))  # what blocks.6 sees in the photo is amplified
        True
    """
    start = as_image_batch(image)
    jitter = shape_preserving_transforms() if transforms is None else transforms
    return render_once(model, DeepDream(layer), start, jitter, steps, lr, progress, seed, callback, preprocess,
                       average=average)


def feature_inversion(
    model: nn.Module,
    image: torch.Tensor,
    layer: Layer,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    transforms: Optional[nn.Module] = None,
    progress: bool = True,
    seed: Optional[int] = None,
    *,
    callback: Optional[StepCallback] = None,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    average: Optional[float] = 0.0,
) -> torch.Tensor:
    """Invert a layer's representation of a photo (Mahendran & Vedaldi 2015): from noise, render an image
    whose activation at ``layer`` matches the photo's (:class:`~optim.loss.ContentLoss`).

    What survives in the render is what the layer keeps of the photo; what is lost, it discards.

    Args:
        model: the network (left as it was).
        image: the photo, CHW or NCHW in ``[0, 1]`` (the render has its size).
        layer: the layer to match.
        steps: optimization steps.
        lr: the learning rate at the first step.
        transforms: default: none (the match is position by position).
        progress: show a progress bar.
        seed: seed for a reproducible render.
        callback: ``callback(step, loss, images)`` after every step (see :func:`~optim.render.render_vis`).
        preprocess: applied before the model, to the render and to the photo whose activations are the
            reference alike (as ``render_vis`` takes it; ``None``: the model's declared normalization, else none).
        average: iterate averaging, as :func:`~optim.render.render_vis` takes it; default 0, the last image: a
            reconstruction converges, and without transforms no per-step jitter is left to average out.

    Returns:
        The inverted ``ImageTensor`` ``[N, 3, H, W]``.

    Example::

        >>> inverted = feature_inversion(model, cat, "blocks.8", steps=4, progress=False, seed=0)  # try steps=256
        >>> inverted.shape  # the photo's size; cat: a [1, 3, 96, 96] photo
        torch.Size([1, 3, 96, 96])
    """
    target = as_image_batch(image)
    reference = reference_activations(model, [layer], target, preprocess, transforms)[layer]
    noise = default_image(tuple(target.shape[2:]), batch=target.shape[0], channels=target.shape[1])
    # no jitter by default: the match is position by position, and the Fourier parameterization
    # already keeps the render smooth (a 2 px jitter leaves twice the error after 40 steps)
    jitter = [] if transforms is None else transforms
    loss = -ContentLoss(layer, reference)
    return render_once(model, loss, noise, jitter, steps, lr, progress, seed, callback, preprocess, average=average)


def style_transfer(
    model: nn.Module,
    content: torch.Tensor,
    style: torch.Tensor,
    content_layer: Layer,
    style_layers: Sequence[Layer],
    style_weight: float = 10.0,
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
    """Neural style transfer (Gatys et al. 2016): keep ``content``'s activation at ``content_layer`` and
    take on ``style``'s Gram matrices at ``style_layers``, starting from the content image.

    The loss is ``ReferenceDistance(content_layer) + style_weight * mean(StyleLoss(layer))``; both terms
    are relative to the reference, so ``style_weight`` means the same at any layers.

    Args:
        model: the network (left as it was).
        content: the content photo, CHW or NCHW in ``[0, 1]`` (the render has its size).
        style: the style image, CHW or NCHW (any size).
        content_layer: the layer whose activation stays close to the content's
            (:class:`~optim.loss.ReferenceDistance`).
        style_layers: the layers of :class:`~optim.loss.StyleLoss`, averaged.
        style_weight: weight of the style term against the content term.
        steps: optimization steps.
        lr: Adam's learning rate.
        transforms: default: a small size-preserving jitter.
        progress: show a progress bar.
        seed: seed for a reproducible render.
        callback: ``callback(step, loss, images)`` after every step (see :func:`~optim.render.render_vis`).
        preprocess: applied before the model, to the render and to the photo whose activations are the
            reference alike (as ``render_vis`` takes it; ``None``: the model's declared normalization, else none).
        average: iterate averaging, as :func:`~optim.render.render_vis` takes it (``None``: its rule, an average
            weighted towards the last sixth from noise, the last image from a photo).

    Returns:
        The stylized ``ImageTensor``.

    Example::

        >>> painting = torch.rand(3, 64, 64)  # any size
        >>> out = style_transfer(model, cat, painting, "blocks.8", ["blocks.1", "blocks.3"], steps=4, progress=False)
        >>> out.shape  # the content's size; cat: a [1, 3, 96, 96] photo
        torch.Size([1, 3, 96, 96])
    """
    style_layers = list(style_layers)
    if not style_layers:
        raise ValueError("style_layers is empty: give at least one layer")
    start = as_image_batch(content, "content")
    content_act = reference_activations(model, [content_layer], start, preprocess, transforms)[content_layer]
    style_acts = reference_activations(model, style_layers, as_image_batch(style, "style"), preprocess, transforms)
    style_loss = sum_loss_list([StyleLoss(layer, style_acts[layer]) for layer in style_layers]) / len(style_layers)
    # both terms are relative (about 1 for an unrelated image), so one weight fits any pair of layers
    loss = -(ReferenceDistance(content_layer, content_act) + float(style_weight) * style_loss)
    jitter = shape_preserving_transforms(2) if transforms is None else transforms
    return render_once(model, loss, start, jitter, steps, lr, progress, seed, callback, preprocess, average=average)


def feature_accentuation(
    model: nn.Module,
    image: torch.Tensor,
    objective: Union[Loss, str],
    layer: Layer,
    weight: float = 16.0,
    steps: int = 64,
    lr: float = 0.01,
    transforms: Optional[nn.Module] = None,
    progress: bool = True,
    seed: Optional[int] = None,
    *,
    callback: Optional[StepCallback] = None,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    average: Optional[float] = None,
) -> torch.Tensor:
    """Feature accentuation (Hamblin et al. 2024): raise ``objective`` starting from a real image while
    staying close to the image's activation at ``layer``, so the render shows *what in this image* drives
    the feature rather than an unrelated super-stimulus.

    The loss is ``objective - weight * ReferenceDistance(layer, image's activation)``.

    Args:
        model: the network (left as it was).
        image: the photo, CHW or NCHW in ``[0, 1]``.
        objective: what to raise: a loss or a string such as ``"blocks.10:7"`` or ``"classifier:281"``.
        layer: where the render must stay close to the image (an earlier layer than the objective's).
        weight: the strength of that pull (the distance is relative, in ``[0, 1]`` near the image).
        steps: optimization steps.
        lr: Adam's learning rate (low: the render must not leave the image in the first steps, when
            Adam moves every coefficient by about ``lr`` whatever the loss).
        transforms: default: a small size-preserving jitter.
        progress: show a progress bar.
        seed: seed for a reproducible render.
        callback: ``callback(step, loss, images)`` after every step (see :func:`~optim.render.render_vis`).
        preprocess: applied before the model, to the render and to the photo whose activations are the
            reference alike (as ``render_vis`` takes it; ``None``: the model's declared normalization, else none).
        average: iterate averaging, as :func:`~optim.render.render_vis` takes it (``None``: its rule, an average
            weighted towards the last sixth from noise, the last image from a photo).

    Returns:
        The accentuated ``ImageTensor``.

    Example::

        >>> out = feature_accentuation(model, cat, "blocks.12:40", layer="blocks.4", steps=4, progress=False, seed=0)
        >>> channel_40 = lambda x: opt.models.collect_activations(model, "blocks.12", x)["blocks.12"][:, 40].mean()
        >>> bool(channel_40(out) > channel_40(cat))  # cat: a [1, 3, 96, 96] photo
        True
        >>> bool((out - cat).abs().mean() < 0.05)  # while the image stays close to the photo
        True
    """
    start = as_image_batch(image)
    target = parse(objective, model=model) if isinstance(objective, str) else objective
    if not isinstance(target, Loss):
        raise TypeError(f"objective must be a Loss or an objective string, got {type(objective).__name__}")
    reference = reference_activations(model, [layer], start, preprocess, transforms)[layer]
    loss = target - float(weight) * ReferenceDistance(layer, reference)
    jitter = shape_preserving_transforms() if transforms is None else transforms
    return render_once(model, loss, start, jitter, steps, lr, progress, seed, callback, preprocess, average=average)
