"""What the recipes share: reading reference activations and turning objective strings into channels."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .._utils import check_positive, model_device_dtype, resolve_module
from ..activations import ActivationMap, record_activations
from ..loss.activation import ChannelActivation
from ..loss.base import Loss, check_index
from ..loss.parse import parse
from ..optimization.progress import StepCallback

__all__ = [
    "ChannelSpec",
    "reference_activations",
    "channel_spec",
    "shape_preserving_transforms",
    "render_once",
    "image_size",
]

ChannelSpec = Union[str, Tuple[Union[str, nn.Module], int]]


def reference_activations(
    model: nn.Module,
    layers: Sequence[Union[str, nn.Module]],
    image: torch.Tensor,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    transforms: Any = None,
) -> ActivationMap:
    """The outputs of ``layers`` for ``image``, through the activation core
    (:func:`~optim.activations.record_activations`: eval mode, no gradients, stopped after the last layer,
    each output as its layer produced it, a module called several times read at its last call).

    The image goes through the preprocess a render of ``model`` uses
    (:func:`~optim.models.preprocess.render_inputs`: ``preprocess`` when given, else the model's declared
    normalization, else nothing), so a reference and a render are compared on the same input.

    Args:
        model: the network (left as it was).
        layers: modules or dotted names.
        image: an NCHW batch in ``[0, 1]`` (moved to the model's device and dtype).
        preprocess: as ``render_vis`` takes it (``None``: the model's normalization, if it declares one and
            ``transforms`` hold none; ``nn.Identity()``: none).
        transforms: the render's transforms: a ``Normalize`` among them is applied to the reference too, as the
            render applies it (their random parts are not: the reference is the image as given).

    Returns:
        An :class:`~optim.activations.ActivationMap` of detached activations: iteration yields the layers as
        given, and each answers its module and its dotted name.

    Raises:
        ValueError: a model that refuses the image's channel count (an RGB photo for a grayscale model), naming
            both counts and the conversion, raised from torch's error.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(inplace=True))
        >>> acts = reference_activations(net, ["0", net[1]], torch.ones(1, 3, 2, 2))
        >>> torch.equal(acts[net[0]], net[0](torch.ones(1, 3, 2, 2))), acts["1"].min().item() >= 0
        (True, True)
    """
    from ..models.preprocess import normalizers, render_inputs
    from ..render import explained_input_errors

    device, dtype = model_device_dtype(model)
    image = image.to(device=device, dtype=dtype)
    channels, hw = image.shape[1], (image.shape[2], image.shape[3])
    steps = normalizers(transforms) + [render_inputs(model, preprocess=preprocess, transforms=transforms).preprocess]
    with torch.no_grad():
        for step in steps:
            if step is not None:
                image = step(image)
    with explained_input_errors(model, hw, channels=channels):
        return record_activations(model, list(layers), image)


def channel_spec(spec: ChannelSpec, model: nn.Module) -> Tuple[Union[str, nn.Module], int]:
    """``"layer:channel"`` or ``(layer, channel)`` -> ``(layer, channel)``, the layer checked in ``model``."""
    if isinstance(spec, str):
        loss = parse(spec, model=model)
        if type(loss) is not ChannelActivation:
            raise ValueError(f"expected a channel objective 'layer:channel', got {spec!r}")
        return loss.target, loss.channel_index
    if isinstance(spec, tuple) and len(spec) == 2:
        layer, channel = spec
        resolve_module(model, layer)
        return layer, check_index(channel, "channel")
    raise TypeError(f"a channel is given as 'layer:channel' or (layer, channel), got {spec!r}")


def shape_preserving_transforms(translate: int = 4) -> nn.Module:
    """A small random jitter that keeps the image size, for objectives compared position by position."""
    from ..transforms import RandomSpatialJitter

    return RandomSpatialJitter(translate)


def image_size(model: nn.Module, size: Union[None, int, Sequence[int]] = None) -> Tuple[int, int]:
    """A recipe's image ``(height, width)``: ``size`` when given, else the model's native size (timm, torchvision
    ViT, Hugging Face), else ``DEFAULT_SIZE``: :func:`~optim.models.preprocess.render_inputs`, as ``render_vis``.

    Example:
        >>> from optim.optimization.defaults import DEFAULT_SIZE
        >>> image_size(nn.Conv2d(3, 4, 3)) == (DEFAULT_SIZE, DEFAULT_SIZE), image_size(nn.Conv2d(3, 4, 3), 32)
        (True, (32, 32))
    """
    from ..models.preprocess import render_inputs

    return render_inputs(model, size).size


def render_once(
    model: nn.Module,
    loss: Loss,
    image: Any,
    transforms: Any,
    steps: int,
    lr: float,
    progress: bool,
    seed: Optional[int],
    callback: Optional[StepCallback] = None,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    average: Optional[float] = None,
) -> torch.Tensor:
    """One :func:`~optim.render.render_vis` run of ``steps`` steps, returning its single image: every recipe
    renders through it (the render core and its defaults, no loop of its own).

    Args:
        model: the network (left as it was).
        loss: the objective to maximize.
        image: an image parameterization, a callable building one, or a photo tensor to start from (as
            ``render_vis`` takes it: a photo keeps its contrast, see ``PHOTO_START_OPTIMIZER``).
        transforms: as ``render_vis`` takes them (None: its default).
        steps: optimization steps.
        lr: the learning rate at the first step.
        progress: show a progress bar.
        seed: seed for a reproducible render.
        callback: ``callback(step, loss, images)`` after every step (see :func:`~optim.render.render_vis`).
        preprocess: as ``render_vis`` takes it (``None``: the model's normalization, if it declares one).
        average: iterate averaging, as ``render_vis`` takes it (``None``: its rule).

    Returns:
        The rendered ``ImageTensor``.

    Example::

        >>> from optim.loss import DeepDream
        >>> out = render_once(model, DeepDream("blocks.6"), cat, None, 2, 0.05, False, 0)
        >>> out.shape  # cat: a [1, 3, 96, 96] photo
        torch.Size([1, 3, 96, 96])
    """
    from ..render import render_vis

    thresholds = (check_positive(steps, "steps", zero=True),)  # named as the recipes call it, not as render_vis does
    (out,) = render_vis(
        model, loss, image=image, transforms=transforms, thresholds=thresholds, lr=lr, progress=progress, seed=seed,
        callback=callback, preprocess=preprocess, average=average,
    )
    return out
