"""What the command line and the app render: channels of a layer, in batches, with shared settings.

A thin layer over :func:`optim.render_vis` / :func:`optim.render_layer` that fixes the settings a gallery
keys on (:class:`RenderSettings`) and reports progress batch by batch to a callback (the app's progress bar).

Example::

    from optim.app.rendering import RenderSettings, render_channels
    tiles = render_channels(model, "blocks.10", [0, 1, 2, 3], RenderSettings(size=96, steps=64), batch_size=4)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from ..render import DEFAULT_DECAY_POWER, DEFAULT_LR

__all__ = ["RenderSettings", "render_channels", "layer_table", "channel_count",
           "native_input_size", "renderable_layers"]


@dataclass(frozen=True)
class RenderSettings:
    """The settings a render depends on (and a gallery keys on).

    Args:
        size: image side in pixels.
        steps: optimization steps.
        seed: random seed of every batch.
        lr: Adam's learning rate.
    """

    size: int = 128
    steps: int = 128
    seed: int = 0
    lr: float = DEFAULT_LR

    def __post_init__(self) -> None:
        for name in ("size", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")

    def as_dict(self) -> Dict[str, Any]:
        """The settings as JSON values (the gallery's key), with the default image's spectrum decay, so that
        renders made under other image defaults are not reused."""
        return {**asdict(self), "lr": float(self.lr), "decay_power": DEFAULT_DECAY_POWER}


def native_input_size(model_spec: str) -> int:
    """The side of a registry model's native input, or 224 for anything else."""
    from ..models import list_models, model_info

    return model_info(model_spec).input_size[0] if model_spec in list_models() else 224


def layer_table(model: nn.Module, size: int = 224) -> List[Any]:
    """``opt.models.layer_info`` rows of ``model`` for a ``size`` x ``size`` RGB input."""
    from ..models import layer_info

    return layer_info(model, (1, 3, size, size))


def renderable_layers(rows: Sequence[Any]) -> List[Any]:
    """The rows of :func:`layer_table` whose output is an NCHW feature map (channels can be rendered)."""
    return [r for r in rows if r.shape is not None and len(r.shape) == 4 and r.channels]


def channel_count(model: nn.Module, layer: str, size: int = 128) -> int:
    """The number of channels of ``layer``'s output.

    Raises:
        ValueError: for an unknown layer (listing close names) or one without a channel dimension.
    """
    from ..models import collect_activations

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    out = collect_activations(model, layer, torch.full((1, 3, size, size), 0.5, device=device))[layer]
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise ValueError(f"layer {layer!r} has no channel dimension (its output is {type(out).__name__})")
    return int(out.shape[1])


def render_channels(
    model: nn.Module,
    layer: str,
    channels: Sequence[int],
    settings: RenderSettings,
    batch_size: int = 8,
    progress: bool = False,
    callback: Optional[Callable[[int, int, List[int], torch.Tensor], None]] = None,
) -> List[torch.Tensor]:
    """Render each channel of ``layer`` in ``channels``, ``batch_size`` at a time.

    Every batch is seeded with ``settings.seed`` so a batch's result does not depend on the ones before.

    Args:
        model: the network (left as it was).
        layer: dotted layer name.
        channels: channel indices.
        settings: size, steps, seed and learning rate.
        batch_size: channels per optimization.
        progress: show a terminal progress bar per batch.
        callback: called after each batch with ``(done, total, batch_channels, batch_images)``.

    Returns:
        One CHW tensor in ``[0, 1]`` per channel, in the given order.

    Raises:
        ValueError: for an unknown layer, a channel out of range or an empty channel list.
    """
    from ..render import render_layer

    if not isinstance(settings, RenderSettings):
        raise TypeError(f"settings must be a RenderSettings, got {type(settings).__name__}")
    channels = list(channels)
    if not channels:
        raise ValueError("channels is empty: give at least one channel index")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    images: List[torch.Tensor] = []
    for start in range(0, len(channels), batch_size):
        chunk = channels[start : start + batch_size]
        tiles = render_layer(
            model, layer, channels=chunk, batch_size=len(chunk), steps=settings.steps, size=settings.size,
            lr=settings.lr, progress=progress, seed=settings.seed,
        ).as_subclass(torch.Tensor)
        images.extend(tiles.unbind(0))
        if callback is not None:
            callback(len(images), len(channels), chunk, tiles)
    return images
