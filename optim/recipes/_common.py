"""What the recipes share: reading reference activations and turning objective strings into channels."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .._utils import model_device_dtype, resolve_module
from ..loss.activation import ChannelActivation
from ..loss.base import Loss
from ..loss.parse import parse
from ..optimization.hooks import model_frozen, run_to_targets

__all__ = [
    "ChannelSpec",
    "as_batch",
    "reference_activations",
    "channel_spec",
    "shape_preserving_transforms",
    "render_once",
]

ChannelSpec = Union[str, Tuple[Union[str, nn.Module], int]]


def as_batch(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """A detached float NCHW copy of a CHW or NCHW image tensor in ``[0, 1]``."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a CHW or NCHW tensor in [0, 1], got {type(image).__name__}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4:
        raise ValueError(f"{name} must be a CHW or NCHW tensor, got shape {tuple(image.shape)}")
    image = image.detach().as_subclass(torch.Tensor)
    return image.float() if not image.is_floating_point() else image


def reference_activations(
    model: nn.Module, layers: Sequence[Union[str, nn.Module]], image: torch.Tensor
) -> Dict[Union[str, nn.Module], torch.Tensor]:
    """The outputs of ``layers`` for ``image`` (model frozen, no gradients, stopped after the last layer).

    Args:
        model: the network (left as it was).
        layers: modules or dotted names.
        image: an NCHW batch in ``[0, 1]``.

    Returns:
        layer (as given) -> detached activation.
    """
    device, dtype = model_device_dtype(model)
    modules = [resolve_module(model, layer) for layer in layers]
    with model_frozen(model), torch.no_grad():
        outputs = run_to_targets(model, modules, image.to(device=device, dtype=dtype))
    return {layer: outputs[module].detach() for layer, module in zip(layers, modules)}


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
        if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
            raise ValueError(f"the channel must be a non-negative int, got {channel!r}")
        return layer, channel
    raise TypeError(f"a channel is given as 'layer:channel' or (layer, channel), got {spec!r}")


def shape_preserving_transforms(translate: int = 4) -> nn.Module:
    """A small random jitter that keeps the image size, for objectives compared position by position."""
    from ..transforms import RandomSpatialJitter

    return RandomSpatialJitter(translate)


def render_once(
    model: nn.Module,
    loss: Loss,
    image: Any,
    transforms: Any,
    steps: int,
    lr: float,
    progress: bool,
    seed: Optional[int],
) -> torch.Tensor:
    """One :func:`~optim.render.render_vis` run of ``steps`` steps, returning its single image.

    Args:
        model: the network (left as it was).
        loss: the objective to maximize.
        image: an image parameterization, or a callable building one (as ``render_vis`` takes it).
        transforms: as ``render_vis`` takes them (None: its default).
        steps: optimization steps.
        lr: Adam's learning rate.
        progress: show a progress bar.
        seed: seed for a reproducible render.

    Returns:
        The rendered ``ImageTensor``.

    Example::

        >>> from optim.loss import DeepDream
        >>> from optim.render import default_image
        >>> out = render_once(model, DeepDream("blocks.6"), default_image(init=cat), None, 2, 0.05, False, 0)
        >>> out.shape  # cat: a [1, 3, 96, 96] photo
        torch.Size([1, 3, 96, 96])
    """
    from ..render import render_vis

    (out,) = render_vis(
        model, loss, image=image, transforms=transforms, thresholds=(steps,), lr=lr, progress=progress, seed=seed
    )
    return out
