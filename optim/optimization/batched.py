"""Batched renders: many images, each with its own objective, ``batch_size`` per optimization, one progress bar.

``render_layer`` (every channel of a layer), the atlas (one direction per grid cell) and sharded jobs all call
:func:`render_batches`. Image ``j`` is rendered with objective ``objectives[j]`` and key ``keys[j]``; with the
per-image random streams of :mod:`optim.optimization.streams` the result for image ``j`` is the same whatever the
batch size, its position in the batch, or which other images share its batch.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Hashable, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from .._utils import check_positive, model_device_dtype
from ..activations import autograd_context
from ..loss.base import Loss, sum_loss_list
from .averaging import ImageAverage, check_average
from .defaults import (
    DEFAULT_LR, DEFAULT_STEPS, OptimizerArg, check_residual_gradient, default_transforms, make_optimizer,
    resolve_average,
)
from .progress import ProgressBar, StepCallback
from .streams import check_seed

__all__ = ["render_batches", "make_transform", "seeded", "Segment"]

TransformArg = Union[None, nn.Module, Sequence[nn.Module]]


class _Lambda(nn.Module):
    """Wraps a plain callable so that it can sit in an ``nn.Sequential``."""

    def __init__(self, func: Callable[[torch.Tensor], torch.Tensor], deterministic: bool = False) -> None:
        super().__init__()
        self.func = func
        self.deterministic = deterministic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.func(x)


def make_transform(transforms: TransformArg = None, preprocess: Optional[Callable] = None) -> nn.Module:
    """The one normalisation of every entry point's ``transforms=`` and ``preprocess=`` arguments.

    Args:
        transforms: a module, a list of modules or callables (applied in order), ``None`` for
            :func:`~optim.optimization.default_transforms`, ``[]`` for none.
        preprocess: applied after the transforms, to the whole batch at once (so it must draw no random
            numbers), e.g. the model's input normalization.

    Returns:
        One ``nn.Module``.

    Example:
        >>> make_transform([], preprocess=lambda x: x * 2)(torch.ones(1, 3, 2, 2)).max().item()
        2.0
    """
    if transforms is None:
        transform: nn.Module = default_transforms()
    elif isinstance(transforms, nn.Module):
        transform = transforms
    elif isinstance(transforms, (list, tuple)):
        for t in transforms:
            if not callable(t):
                raise TypeError(f"every transform must be callable (an nn.Module), got {type(t).__name__}")
        transform = nn.Sequential(*[t if isinstance(t, nn.Module) else _Lambda(t) for t in transforms])
    else:
        raise TypeError(
            f"transforms must be None, an nn.Module or a list of modules, got {type(transforms).__name__}"
        )
    if preprocess is None:
        return transform
    if not callable(preprocess):
        raise TypeError(f"preprocess must be callable (e.g. an nn.Module), got {type(preprocess).__name__}")
    return nn.Sequential(transform, _Lambda(preprocess, deterministic=True))


@contextlib.contextmanager
def seeded(seed: Optional[int], model: Optional[nn.Module] = None) -> Iterator[None]:
    """Seed torch's CPU generator (and the model's CUDA device's) inside the block; restore both after.

    Only the generators of the devices it seeds are saved and restored: the CPU one always, a CUDA one only
    when the model lives on that device.
    """
    seed = check_seed(seed)
    if seed is None:
        yield
        return
    device = model_device_dtype(model)[0] if model is not None else torch.device("cpu")
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


class Segment:
    """Stop criterion for one part of a render whose progress bar spans several ``optimize`` calls.

    Runs until the render's step count reaches :attr:`end`; the bar belongs to the caller, who closes it.
    """

    def __init__(self, bar: ProgressBar, offset: int = 0, end: int = 0) -> None:
        self.bar = bar
        self.offset = offset
        self.end = end

    def __call__(self, step: int, obj: Any, history: List[torch.Tensor], optimizer: Any) -> bool:
        done = self.offset + step
        self.bar.update(done, history)
        return done < self.end


def render_batches(
    model: nn.Module,
    objectives: Sequence[Callable[[int], Loss]],
    keys: Sequence[Hashable],
    image: Callable[[int], nn.Module],
    *,
    batch_size: int = 16,
    steps: int = DEFAULT_STEPS,
    transforms: TransformArg = None,
    preprocess: Optional[Callable] = None,
    optimizer: OptimizerArg = None,
    lr: float = DEFAULT_LR,
    progress: bool = True,
    seed: Optional[int] = None,
    callback: Optional[StepCallback] = None,
    average: Optional[float] = None,
    residual_gradient: Optional[float] = None,
) -> torch.Tensor:
    """Render ``len(objectives)`` images, ``batch_size`` per optimization, with one progress bar.

    Args:
        model: the network (left as it was).
        objectives: per image, a function ``batch_index -> Loss`` giving its objective at that position.
        keys: per image, its identity (its random stream is derived from ``(seed, key)``).
        image: ``n -> parameterization`` of ``n`` images (e.g. ``lambda n: default_image(128, batch=n)``).
        batch_size: images per optimization.
        steps: optimization steps per image.
        transforms: as :func:`make_transform` takes them; a module is shared by every batch.
        preprocess: as :func:`make_transform` takes it.
        optimizer: an optimizer class, a function of the parameters, or ``None`` (the default AdamW; plain Adam
            for images built from a photo, see :func:`~optim.optimization.make_optimizer`); not an instance, as
            every batch needs its own.
        lr: the learning rate.
        progress: one progress bar over every step of every batch.
        seed: the render's seed (``None``: drawn once from torch's global generator).
        callback: ``callback(step, loss, images)`` after every step; ``step`` counts over all batches.
        average: iterate averaging, as :func:`~optim.render.render_vis` takes it (``None``: ``DEFAULT_AVERAGE``,
            1/6, for images from noise, none for a photo start; ``0``: each batch's last image).
        residual_gradient: as :func:`~optim.render.render_vis` takes it (``None``: ``DEFAULT_RESIDUAL_GRADIENT``
            for images from noise, 1 for a photo start).

    Returns:
        A detached CPU tensor ``[len(objectives), C, H, W]`` in the order of ``objectives``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3))
        >>> loss = lambda c: (lambda i: opt.loss.ChannelActivation(net[0], c, batch_index=i))
        >>> img = lambda n: opt.optimization.default_image(16, batch=n)
        >>> with torch.backends.mkldnn.flags(enabled=False):  # batch-invariant kernels: equal bit for bit
        ...     one = render_batches(net, [loss(2)], [2], img, steps=3, progress=False, seed=0)
        ...     two = render_batches(net, [loss(1), loss(2)], [1, 2], img, steps=3, progress=False, seed=0)
        >>> torch.equal(one[0], two[1])
        True
    """
    from .input_optimization import InputOptimization

    if len(objectives) != len(keys):
        raise ValueError(f"objectives and keys must have the same length, got {len(objectives)} and {len(keys)}")
    if not objectives:
        raise ValueError("objectives is empty: give at least one image to render")
    check_positive(batch_size, "batch_size")
    check_positive(steps, "steps")
    if isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError("a batched render needs an optimizer class or factory (one optimizer per batch), not an instance")
    if optimizer is not None:
        make_optimizer(optimizer, [torch.zeros(1, requires_grad=True)], lr)  # validate before any work
    average = check_average(average)
    check_residual_gradient(residual_gradient)
    seed = check_seed(seed)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    transform = make_transform(transforms, preprocess)
    n_batches = (len(objectives) + batch_size - 1) // batch_size
    bar = ProgressBar(steps * n_batches, enabled=progress)
    out: List[torch.Tensor] = []
    try:
        for b, start in enumerate(range(0, len(objectives), batch_size)):
            chunk = list(range(start, min(start + batch_size, len(objectives))))
            with autograd_context(), seeded(seed, model):
                param = image(len(chunk))
                loss = sum_loss_list([objectives[j](i) for i, j in enumerate(chunk)])
                obj = InputOptimization(model, loss, param, transform, seed=seed, image_keys=[keys[j] for j in chunk],
                                        residual_gradient=residual_gradient)
            averaged = ImageAverage(resolve_average(average, param))
            obj.optimize(Segment(bar, b * steps, (b + 1) * steps), optimizer, lr=lr, callback=averaged.then(callback),
                         step_offset=b * steps)
            with torch.no_grad():
                out.append(averaged.value(param()).as_subclass(torch.Tensor).cpu())
    finally:
        bar.close()
    return torch.cat(out)
