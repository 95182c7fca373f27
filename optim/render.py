"""One-call rendering: ``render_vis`` for one objective, ``render_layer`` for many channels of a layer.

Both are thin layers over :class:`~optim.optimization.InputOptimization` with defaults tuned for short
budgets on CPU (see ``benchmarks/class_transfer.py``): a Fourier-parameterized (1/f^1.5 spectrum scaling),
colour-decorrelated ``NaturalImage``, captum's ``TransformationRobustness`` stack and Adam at 0.05.

Example::

    import optim as opt
    model = opt.models.efficientnet_lite0(pretrained=True)
    images = opt.render_vis(model, "blocks.10:7", thresholds=(32, 128))
    opt.show(images, labels=["32 steps", "128 steps"])
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from ._utils import model_device_dtype, resolve_module
from .loss.activation import ChannelActivation
from .loss.base import Loss, sum_loss_list
from .loss.parse import parse
from .optimization.hooks import model_frozen, run_to_targets
from .optimization.input_optimization import InputOptimization

__all__ = [
    "render_vis",
    "render_layer",
    "default_image",
    "default_transforms",
    "DEFAULT_SIZE",
    "DEFAULT_LR",
    "DEFAULT_DECAY_POWER",
]

Objective = Union[Loss, str]
OptimizerArg = Union[None, torch.optim.Optimizer, type, Callable[[List[torch.Tensor]], torch.optim.Optimizer]]
TransformArg = Union[None, nn.Module, Sequence[nn.Module]]
ImageArg = Union[None, nn.Module, torch.Tensor, Callable[[], nn.Module]]

#: Side of the square image ``render_vis`` renders when no image is given.
DEFAULT_SIZE = 128
#: Adam's learning rate in ``render_vis`` (Lucent's value), tuned together with ``DEFAULT_DECAY_POWER`` on
#: ``benchmarks/class_transfer.py`` (10 classes rendered on EfficientNet-Lite0, judged by Lite2). With Lucid's
#: 1/f spectrum, lr 0.1 gave Lite2 top-1 9-10/10 at 64 and 128 steps, but a flamingo render failed about half
#: the time (pink texture Lite2 reads as hog or hippopotamus; even Lite0 rejects it at 224 px); lower rates
#: alone (0.025, 0.05) did not fix it. With decay 1.5 and lr 0.05, seeds 0-5: 64 steps 9-10/10 in every
#: seed, 128 steps 10/10 in every seed, 32 steps 6-10/10.
DEFAULT_LR = 0.05
#: Exponent of the Fourier parameterization's 1/f scaling in :func:`default_image` for renders from noise
#: (Lucid's is 1). A steeper scaling gives low frequencies, hence object-scale shapes, a larger share of
#: every step; 1.25 helped less and 2.0 saturates into flat colour fields that no longer transfer.
DEFAULT_DECAY_POWER = 1.5


def default_image(
    size: Union[int, Sequence[int]] = DEFAULT_SIZE,
    batch: int = 1,
    channels: int = 3,
    init: Optional[torch.Tensor] = None,
    decay_power: Optional[float] = None,
) -> nn.Module:
    """The image parameterization ``render_vis`` uses when none is given.

    Args:
        size: ``(height, width)`` or one int for a square (ignored with ``init``).
        batch: number of images.
        channels: 3, or 4 for RGBA.
        init: an image in ``[0, 1]`` (CHW or NCHW) to start from.
        decay_power: exponent of the ``FFTImage``'s 1/f spectrum scaling. Default: ``DEFAULT_DECAY_POWER``
            from noise, and Lucid's 1 with ``init``: a steeper scaling speeds up the low frequencies, which
            helps a render from noise find object-scale shapes but washes out a photo one starts from.

    Returns:
        A ``NaturalImage`` (Fourier parameterization, KLT colour decorrelation, sigmoid).

    Example::

        image = default_image(96, batch=4)
    """
    from .images import FFTImage, NaturalImage

    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if decay_power is None:
        decay_power = DEFAULT_DECAY_POWER if init is None else 1.0
    fft = functools.partial(FFTImage, decay_power=decay_power)
    return NaturalImage(size, channels=channels, batch=batch, init=init, parameterization=fft)


def default_transforms() -> nn.Module:
    """The transforms ``render_vis`` uses when none are given: captum's ``TransformationRobustness``.

    Returns:
        A fresh transform module.
    """
    from .transforms import TransformationRobustness

    return TransformationRobustness()


class _Lambda(nn.Module):
    """Wraps a plain callable so that it can sit in an ``nn.Sequential``."""

    def __init__(self, func: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.func = func

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.func(x)


def _build_transform(transforms: TransformArg, preprocess: Optional[Callable]) -> nn.Module:
    if transforms is None:
        transform = default_transforms()
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
    pre = preprocess if isinstance(preprocess, nn.Module) else _Lambda(preprocess)
    return nn.Sequential(transform, pre)


def _build_image(image: ImageArg) -> nn.Module:
    if image is None:
        return default_image()
    if isinstance(image, nn.Module):
        return image
    if isinstance(image, torch.Tensor):
        return default_image(init=image, channels=image.shape[-3])
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


def _build_optimizer(optimizer: OptimizerArg, params: List[torch.Tensor], lr: float) -> Any:
    """What InputOptimization accepts: an Optimizer instance or class, or ``None`` (Adam)."""
    if optimizer is None or isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if isinstance(optimizer, type):
        if issubclass(optimizer, torch.optim.Optimizer):
            return optimizer
        raise TypeError(f"optimizer must be a torch.optim.Optimizer class, got {optimizer.__name__}")
    if callable(optimizer):
        built = optimizer(params)
        if not isinstance(built, torch.optim.Optimizer):
            raise TypeError(f"the optimizer factory must return a torch.optim.Optimizer, got {type(built).__name__}")
        return built
    raise TypeError(
        "optimizer must be None, a torch.optim.Optimizer, an Optimizer class or a function of the parameters, "
        f"got {type(optimizer).__name__}"
    )


class _Segments:
    """Stop criterion for one segment of a render that runs in several ``optimize`` calls.

    The hooks of an optimization only live inside ``optimize``, so snapshots are taken between calls; this
    object keeps one progress bar across the calls (``optimize`` closes criteria through ``close``, which
    this class deliberately does not have: :meth:`finish` closes the bar once the render is done).
    """

    def __init__(self, total: int, show_progress: bool) -> None:
        self.total = total
        self.show_progress = show_progress
        self.offset = 0
        self.end = 0
        self._bar: Any = None

    def __call__(self, step: int, obj: Any, history: List[torch.Tensor], optimizer: Any) -> bool:
        done = self.offset + step
        if self.show_progress:
            if self._bar is None:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.total, unit="step")
            self._bar.update(done - self._bar.n)
            if history and (done % 8 == 0 or done >= self.end):
                self._bar.set_postfix(objective=f"{-float(history[-1]):.4g}", refresh=False)
        return done < self.end

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _as_image_tensor(x: torch.Tensor) -> torch.Tensor:
    from .images import ImageTensor

    return ImageTensor(x.detach().as_subclass(torch.Tensor).cpu().clone())


@contextlib.contextmanager
def _seeded(seed: Optional[int], model: nn.Module) -> Iterator[None]:
    """Seed torch's generators inside the block and give the caller's random state back afterwards."""
    if seed is None:
        yield
        return
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    device, _ = model_device_dtype(model)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def render_vis(
    model: nn.Module,
    objective: Objective,
    image: ImageArg = None,
    transforms: TransformArg = None,
    thresholds: Union[int, Sequence[int]] = (512,),
    optimizer: OptimizerArg = None,
    lr: float = DEFAULT_LR,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    progress: bool = True,
    seed: Optional[int] = None,
) -> List[torch.Tensor]:
    """Render an image that maximizes ``objective`` on ``model`` (Lucent's ``render_vis``).

    Args:
        model: the network (left exactly as it was: mode, gradients flags, no hooks).
        objective: a :class:`~optim.loss.Loss`, or a string: ``"layer:channel"``, ``"layer:channel:x:y"``
            for a neuron, ``"layer"`` for DeepDream on the layer (dotted module names, see
            :func:`optim.loss.parse`).
        image: the image parameterization (default :func:`default_image`), a function that builds one
            (Lucent's ``param_f``; called after seeding, so ``seed`` also fixes its initialization), or a
            tensor in ``[0, 1]`` to start from.
        transforms: a module, a list of modules (applied in order), or ``None`` for
            :func:`default_transforms`; ``[]`` for none.
        thresholds: step counts at which a snapshot is taken; the render runs to the last one.
        optimizer: ``None`` for Adam, an optimizer class (built with ``lr``), an instance over the image's
            parameters, or a function ``params -> optimizer``.
        lr: the learning rate of a default or class-given optimizer.
        preprocess: applied after the transforms and before the model (e.g. input normalization).
        progress: show a progress bar.
        seed: seed torch's generators for a reproducible render (the caller's random state is restored).

    Returns:
        One detached CPU ``ImageTensor`` ``[B, C, H, W]`` per threshold.

    Raises:
        ValueError: for an unknown layer (with close names), a channel out of range, or bad thresholds.

    Example::

        first, last = opt.render_vis(model, "blocks.10:7", thresholds=(64, 256))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(objective, str):
        objective = parse(objective, model=model)
    elif not isinstance(objective, Loss):
        raise TypeError(f"objective must be an optim.loss.Loss or a string such as 'layer:channel', got {objective!r}")
    steps = _check_thresholds(thresholds)
    with _seeded(seed, model):
        param = _build_image(image)
        transform = _build_transform(transforms, preprocess)
        obj = InputOptimization(model, objective, param, transform)
        # one optimizer for every segment, so Adam's moments carry over between snapshots
        opt_arg = _build_optimizer(optimizer, obj.parameters(), lr)
        if isinstance(opt_arg, type):
            opt_arg = opt_arg(obj.parameters(), lr=lr)
        segments = _Segments(steps[-1], progress)
        images: List[torch.Tensor] = []
        try:
            for threshold in steps:
                segments.offset, segments.end = segments.end, threshold
                if threshold > segments.offset:
                    obj.optimize(segments, optimizer=opt_arg, lr=lr)
                with torch.no_grad():
                    images.append(_as_image_tensor(param()))
        finally:
            segments.finish()
    return images


def _layer_channels(model: nn.Module, layer: nn.Module, size: Sequence[int], preprocess: Optional[Callable]) -> int:
    """The channel count of ``layer``'s output, from one forward pass on a grey image."""
    device, dtype = model_device_dtype(model)
    probe = torch.full((1, 3, *size), 0.5, device=device, dtype=dtype)
    if preprocess is not None:
        probe = preprocess(probe)
    with model_frozen(model), torch.no_grad():
        out = run_to_targets(model, [layer], probe)[layer]
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise ValueError(f"render_layer needs a layer with a channel dimension, got output {type(out).__name__}")
    return int(out.shape[1])


def render_layer(
    model: nn.Module,
    layer: Union[str, nn.Module],
    channels: Optional[Sequence[int]] = None,
    batch_size: int = 16,
    steps: int = 128,
    size: Union[int, Sequence[int]] = DEFAULT_SIZE,
    transforms: TransformArg = None,
    optimizer: Optional[type] = None,
    lr: float = DEFAULT_LR,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    progress: bool = True,
    seed: Optional[int] = None,
) -> torch.Tensor:
    """Render many channels of one layer, ``batch_size`` channels per optimization.

    Every image of a batch has its own ``ChannelActivation(layer, c, batch_index=i)`` objective, summed
    with :func:`~optim.loss.sum_loss_list`. Images of a batch do not interact (the model is in eval
    mode, each loss reads only its own image), so each is a render of its channel alone, and the batch
    costs much less per channel than one render per channel (``benchmarks/layer_throughput.py``).

    Args:
        model: the network (left as it was).
        layer: the layer, as a module or a dotted name.
        channels: the channels to render (default: every channel of the layer).
        batch_size: channels rendered together.
        steps: optimization steps per batch.
        size: image side (an int) or ``(height, width)``.
        transforms: as in :func:`render_vis`.
        optimizer: an optimizer class (default Adam).
        lr: learning rate.
        preprocess: as in :func:`render_vis`.
        progress: show a progress bar per batch.
        seed: seed for a reproducible render.

    Returns:
        A CPU ``ImageTensor`` ``[len(channels), 3, H, W]``, in channel order (see ``opt.make_grid_image``).

    Example::

        grid = opt.make_grid_image(opt.render_layer(model, "blocks.5", channels=range(8)), images_per_row=4)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if optimizer is not None and not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
        raise TypeError(f"render_layer's optimizer must be an Optimizer class or None, got {optimizer!r}")
    hw = (size, size) if isinstance(size, int) and not isinstance(size, bool) else tuple(size)
    module = resolve_module(model, layer)
    n_channels = _layer_channels(model, module, hw, preprocess)
    chosen = list(range(n_channels)) if channels is None else list(channels)
    if not chosen:
        raise ValueError("channels is empty: give at least one channel index")
    for c in chosen:
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < n_channels:
            raise ValueError(f"channel {c!r} is out of range for a layer with {n_channels} channels (0..{n_channels - 1})")
    tiles: List[torch.Tensor] = []
    with _seeded(seed, model):
        for start in range(0, len(chosen), batch_size):
            chunk = chosen[start : start + batch_size]
            loss = sum_loss_list([ChannelActivation(module, c, batch_index=i) for i, c in enumerate(chunk)])
            (tiles_chunk,) = render_vis(
                model,
                loss,
                image=lambda n=len(chunk): default_image(hw, batch=n),
                transforms=transforms,
                thresholds=(steps,),
                optimizer=optimizer,
                lr=lr,
                preprocess=preprocess,
                progress=progress,
            )
            tiles.append(tiles_chunk)
    from .images import ImageTensor

    return ImageTensor(torch.cat([t.as_subclass(torch.Tensor) for t in tiles]))
