"""One-call rendering: ``render_vis`` for one objective, ``render_layer`` for many channels of a layer.

Both go through the render core, :class:`~optim.optimization.InputOptimization`, with the defaults of
:mod:`optim.optimization.defaults` (re-exported here): a Fourier-parameterized (1/f^1.5 spectrum scaling),
colour-decorrelated ``NaturalImage``, captum's ``TransformationRobustness`` stack and Adam at 0.05.

Example:
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    >>> first, last = opt.render_vis(net, "2:1", image=default_image(24), thresholds=(2, 6), progress=False, seed=0)
    >>> tuple(last.shape)
    (1, 3, 24, 24)
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from ._utils import resolve_module
from .activations import autograd_context
from .loss.activation import ChannelActivation
from .loss.base import Loss
from .loss.parse import parse
from .optimization.batched import Segment, TransformArg, make_transform, render_batches, seeded
from .optimization.defaults import (
    DEFAULT_DECAY_POWER,
    DEFAULT_LR,
    DEFAULT_SIZE,
    DEFAULT_STEPS,
    OptimizerArg,
    default_image,
    default_transforms,
    make_optimizer,
    model_input_channels,
)
from .optimization.input_optimization import InputOptimization
from .optimization.progress import ProgressBar, StepCallback

__all__ = [
    "render_vis",
    "render_layer",
    "default_image",
    "default_transforms",
    "DEFAULT_SIZE",
    "DEFAULT_LR",
    "DEFAULT_DECAY_POWER",
    "DEFAULT_STEPS",
]

Objective = Union[Loss, str]
ImageArg = Union[None, nn.Module, torch.Tensor, Callable[[], nn.Module]]


def _build_image(image: ImageArg, model: Optional[nn.Module] = None) -> nn.Module:
    if image is None:
        return default_image(channels=model_input_channels(model))
    if isinstance(image, nn.Module):
        return image
    if isinstance(image, torch.Tensor):
        if image.dim() not in (3, 4) or image.numel() == 0:
            raise ValueError(f"a start image must be a non-empty CHW or NCHW tensor, got shape {tuple(image.shape)}")
        return default_image(channels=image.shape[-3], init=image)
    if callable(image):
        built = image()
        if not isinstance(built, nn.Module):
            raise TypeError(f"the image factory must return an nn.Module, got {type(built).__name__}")
        return built
    raise TypeError(
        "image must be None, an image parameterization (nn.Module), a function returning one, or a tensor "
        f"to start from, got {type(image).__name__}"
    )


def _check_thresholds(thresholds: Union[int, Sequence[int]]) -> List[int]:
    if isinstance(thresholds, int) and not isinstance(thresholds, bool):
        thresholds = (thresholds,)
    try:
        values = list(thresholds)
    except TypeError:
        raise TypeError(f"thresholds must be an int or a sequence of ints, got {type(thresholds).__name__}") from None
    if not values or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in values):
        raise ValueError(f"thresholds must be non-negative step counts, got {thresholds!r}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"thresholds must be strictly increasing, got {thresholds!r}")
    return values


def _as_image_tensor(x: torch.Tensor) -> torch.Tensor:
    from .images import ImageTensor

    return ImageTensor(x.detach().as_subclass(torch.Tensor).cpu().clone())


def render_vis(
    model: nn.Module,
    objective: Objective,
    image: ImageArg = None,
    transforms: TransformArg = None,
    thresholds: Union[int, Sequence[int]] = (DEFAULT_STEPS,),
    optimizer: OptimizerArg = None,
    lr: float = DEFAULT_LR,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    progress: bool = True,
    seed: Optional[int] = None,
    *,
    callback: Optional[StepCallback] = None,
) -> List[torch.Tensor]:
    """Render an image that maximizes ``objective`` on ``model`` (Lucent's ``render_vis``).

    Args:
        model: the network (left exactly as it was: mode, gradients flags, no hooks).
        objective: a :class:`~optim.loss.Loss`, or a string: ``"layer:channel"``, ``"layer:channel:x:y"``
            for a neuron, ``"layer"`` for DeepDream on the layer (dotted module names, see
            :func:`optim.loss.parse`).
        image: the image parameterization (default :func:`default_image` with as many channels as the model's
            first convolution reads: 1 renders a grayscale image, without colour decorrelation), a function that
            builds one
            (Lucent's ``param_f``), or a tensor in ``[0, 1]`` to start from.
        transforms: a module, a list of modules (applied in order), or ``None`` for
            :func:`default_transforms`; ``[]`` for none.
        thresholds: step counts at which a snapshot is taken; the render runs to the last one.
        optimizer: ``None`` for Adam, an optimizer class (built with ``lr``), an instance over the image's
            parameters, or a function ``params -> optimizer``.
        lr: the learning rate of a default or class-given optimizer (a finite number > 0).
        preprocess: applied after the transforms and before the model (e.g. input normalization).
        progress: show a progress bar.
        seed: makes the render reproducible whatever was built before the call: the image is re-initialized
            from the seed (``reset_parameters``) and image ``i`` of the batch draws its transforms from its own
            stream. ``None``: the image is used as built.
        callback: ``callback(step, loss, images)`` after every step (e.g.
            :class:`~optim.optimization.TensorBoardCallback`).

    Returns:
        One detached CPU ``ImageTensor`` ``[B, C, H, W]`` per threshold.

    Raises:
        ValueError: for an unknown layer (with close names), a channel out of range, or bad thresholds.
        FloatingPointError: when the loss becomes NaN or infinite.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3))
        >>> a = opt.render_vis(net, "0:1", image=default_image(16), thresholds=3, progress=False, seed=0)
        >>> b = opt.render_vis(net, "0:1", image=default_image(16), thresholds=3, progress=False, seed=0)
        >>> torch.equal(a[0], b[0])
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(objective, str):
        objective = parse(objective, model=model)
    elif not isinstance(objective, Loss):
        raise TypeError(f"objective must be an optim.loss.Loss or a string such as 'layer:channel', got {objective!r}")
    steps = _check_thresholds(thresholds)
    # built outside inference mode even when the caller is inside it, so autograd can train the image
    with autograd_context(), seeded(seed, model):
        param = _build_image(image, model)
        transform = make_transform(transforms, preprocess)
        obj = InputOptimization(model, objective, param, transform, seed=seed)
    # one optimizer for every segment, so Adam's moments carry over between snapshots
    opt_arg = make_optimizer(optimizer, obj.parameters(), lr)
    bar = ProgressBar(steps[-1], enabled=progress)
    segment = Segment(bar)
    images: List[torch.Tensor] = []
    try:
        for threshold in steps:
            segment.offset, segment.end = segment.end, threshold
            if threshold > segment.offset:
                obj.optimize(segment, optimizer=opt_arg, lr=lr, callback=callback, step_offset=segment.offset)
            with torch.no_grad():
                images.append(_as_image_tensor(param()))
    finally:
        bar.close()
    return images


def render_layer(
    model: nn.Module,
    layer: Union[str, nn.Module],
    channels: Optional[Sequence[int]] = None,
    batch_size: int = 16,
    steps: int = DEFAULT_STEPS,
    size: Union[int, Sequence[int]] = DEFAULT_SIZE,
    transforms: TransformArg = None,
    optimizer: OptimizerArg = None,
    lr: float = DEFAULT_LR,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    progress: bool = True,
    seed: Optional[int] = None,
    *,
    callback: Optional[StepCallback] = None,
) -> torch.Tensor:
    """Render many channels of one layer, ``batch_size`` channels per optimization.

    Every image of a batch has its own ``ChannelActivation(layer, c, batch_index=i)`` objective and its own
    random stream keyed by its channel, so a channel's image is the same (``torch.equal``) rendered alone, in
    any batch, or at any position; the batch only makes it cheaper (``benchmarks/layer_throughput.py``).

    Args:
        model: the network (left as it was).
        layer: the layer, as a module or a dotted name.
        channels: the channels to render (default: every channel of the layer).
        batch_size: channels rendered together.
        steps: optimization steps per channel.
        size: image side (an int) or ``(height, width)``.
        transforms: as in :func:`render_vis`.
        optimizer: an optimizer class or a function ``params -> optimizer`` (default Adam).
        lr: learning rate.
        preprocess: as in :func:`render_vis`.
        progress: one progress bar over all batches.
        seed: seed for a reproducible render (``None``: drawn from torch's global generator).
        callback: ``callback(step, loss, images)`` after every step of every batch.

    Returns:
        A CPU ``ImageTensor`` ``[len(channels), C, H, W]``, in channel order (see ``opt.make_grid_image``); ``C``
        is the model's input channels (:func:`~optim.optimization.model_input_channels`, 3 for RGB models).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 6, 3))
        >>> tiles = opt.render_layer(net, "0", channels=[1, 4], steps=2, size=16, progress=False, seed=0)
        >>> alone = opt.render_layer(net, "0", channels=[4], steps=2, size=16, progress=False, seed=0)
        >>> tiles.shape, torch.allclose(tiles[1], alone[0], atol=1e-5)
        (torch.Size([2, 3, 16, 16]), True)

    The images are equal to float rounding: oneDNN (CPU) and cuDNN pick convolution kernels by batch size;
    with batch-invariant kernels (``torch.backends.mkldnn.flags(enabled=False)`` on CPU) they are equal bit
    for bit.
    """
    from .images import ImageTensor
    from .images.base import check_elements, check_size
    from .models.selection import channel_counts

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    hw = check_size(size)
    check_elements(3 * hw[0] * hw[1], "size")  # before the probe pass allocates anything
    module = resolve_module(model, layer)
    (n_channels,) = channel_counts(model, [module], hw, preprocess=preprocess)
    chosen = list(range(n_channels)) if channels is None else list(channels)
    if not chosen:
        raise ValueError("channels is empty: give at least one channel index")
    for c in chosen:
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < n_channels:
            raise ValueError(f"channel {c!r} is out of range for a layer with {n_channels} channels (0..{n_channels - 1})")
    objectives = [lambda i, c=c: ChannelActivation(module, c, batch_index=i) for c in chosen]
    in_channels = model_input_channels(model)
    tiles = render_batches(
        model,
        objectives,
        chosen,
        lambda n: default_image(hw, channels=in_channels, batch=n),
        batch_size=batch_size,
        steps=steps,
        transforms=transforms,
        preprocess=preprocess,
        optimizer=optimizer,
        lr=lr,
        progress=progress,
        seed=seed,
        callback=callback,
    )
    return ImageTensor(tiles)
