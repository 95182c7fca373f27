"""What the app renders: channels of a layer, in batches, with the settings its gallery keys on.

A thin layer over :func:`optim.render_layer` that fixes the settings a gallery keys on (:class:`RenderSettings`)
and reports progress batch by batch to a callback (the app's progress bar). The app has no render numbers of its
own: the image size left unset is the model's native size, else ``DEFAULT_SIZE``
(:func:`optim.models.preprocess.render_inputs`, as every render), and steps and learning rate default to
:mod:`optim.optimization.defaults`. The layer-table helpers live in
:mod:`optim.models.selection` (shared with the command line) and are re-exported here.

>>> tiles = render_channels(nn.Sequential(nn.Conv2d(3, 4, 3)), "0", [0, 1, 2], RenderSettings(size=16, steps=2),
...                         batch_size=2)
>>> [tuple(t.shape) for t in tiles]
[(3, 16, 16), (3, 16, 16), (3, 16, 16)]
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..models.selection import channel_count, layer_table, renderable_layers
from .._utils import check_positive
from ..optimization.defaults import DEFAULT_LR, DEFAULT_STEPS, check_lr

__all__ = ["RenderSettings", "render_channels", "layer_table", "channel_count", "renderable_layers"]


@dataclass(frozen=True)
class RenderSettings:
    """The settings a render depends on (and a gallery keys on).

    Args:
        size: image side in pixels or ``(height, width)``; ``None``: the model's native size, else
            ``DEFAULT_SIZE`` (resolved for a model by :meth:`for_model`, before the gallery keys on it).
        steps: optimization steps.
        seed: random seed of every batch.
        lr: the learning rate at the first step (it decays as in every render).

    Example:
        >>> from optim.optimization.defaults import DEFAULT_SIZE
        >>> RenderSettings().for_model(nn.Conv2d(3, 4, 3)).size == DEFAULT_SIZE
        True
        >>> RenderSettings(size=(24, 32)).as_dict()["size"]
        [24, 32]
    """

    size: Union[None, int, Tuple[int, int]] = None
    steps: int = DEFAULT_STEPS
    seed: int = 0
    lr: float = DEFAULT_LR

    def __post_init__(self) -> None:
        from ..images.base import check_size

        if self.size is not None:
            height, width = check_size(self.size)
            object.__setattr__(self, "size", height if height == width else (height, width))
        check_positive(self.steps, "steps")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        check_lr(self.lr)

    def for_model(self, model: nn.Module) -> "RenderSettings":
        """These settings with ``size`` resolved for ``model`` (its native size, else ``DEFAULT_SIZE``)."""
        from ..models.preprocess import render_inputs

        return replace(self, size=render_inputs(model, self.size).size)

    def as_dict(self) -> Dict[str, Any]:
        """The settings as JSON values (the gallery's key), with the render defaults they do not set (the
        image's spectrum decay, the lr schedule, the transforms, the iterate averaging), so that renders made under
        other defaults are not reused."""
        from ..jobs import _job_average, _render_defaults

        size = list(self.size) if isinstance(self.size, tuple) else self.size
        return {**asdict(self), "size": size, "lr": float(self.lr), **_render_defaults(),
                "average": _job_average(None)}


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
        settings: size, steps, seed and learning rate (a size left unset is the model's native size, else
            ``DEFAULT_SIZE``).
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
    settings = settings.for_model(model)
    channels = list(channels)
    if not channels:
        raise ValueError("channels is empty: give at least one channel index")
    check_positive(batch_size, "batch_size")
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
