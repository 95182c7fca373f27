"""One-call rendering: ``render_vis`` for one objective, ``render_layer`` for many channels of a layer.

Both go through the render core, :class:`~optim.optimization.InputOptimization`, with the defaults of
:mod:`optim.optimization.defaults` (re-exported here): a Fourier-parameterized (1/f^1.5 spectrum scaling),
colour-decorrelated ``NaturalImage`` at the model's native size (else 160 px), captum's ``TransformationRobustness``
stack magnifying content 0.9-1.5x and keeping the size, an algebraic-sigmoid squash, and AdamW (weight decay 0.5)
from 0.025 with an inverse square-root decay; a render from noise returns an average of its steps' images weighted
towards the last sixth (``average``).

Example:
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    >>> first, last = opt.render_vis(net, "2:1", image=default_image(24), thresholds=(2, 6), progress=False, seed=0)
    >>> tuple(last.shape)
    (1, 3, 24, 24)
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ._utils import check_positive, is_out_of_memory, resolve_module
from .activations import autograd_context
from .images.base import as_image_batch, channel_advice, count_channels
from .loss.activation import ChannelActivation
from .loss.base import Loss, check_index
from .loss.parse import parse
from .optimization.averaging import ImageAverage, check_average
from .optimization.batched import Segment, TransformArg, make_transform, render_batches, seeded
from .optimization.defaults import (
    DEFAULT_DECAY_POWER,
    DEFAULT_LR,
    DEFAULT_SIZE,
    DEFAULT_STEPS,
    OptimizerArg,
    default_image,
    default_transforms,
    model_input_channels,
    resolve_average,
    check_residual_gradient,
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


def _build_image(
    image: ImageArg, model: Optional[nn.Module] = None, size: Optional[Sequence[int]] = None
) -> nn.Module:
    if image is None:
        return default_image(DEFAULT_SIZE if size is None else size, channels=model_input_channels(model))
    if isinstance(image, nn.Module):
        return image
    if isinstance(image, torch.Tensor) or type(image).__module__ == "numpy":
        start = as_image_batch(image, "image")  # a NumPy array is refused, with the conversion that fixes it
        return default_image(channels=start.shape[-3], init=start)
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


_TORCH_CHANNELS = re.compile(r"to have (\d+) channels?, but got (\d+) channels?")  # nn.Conv2d's message
_HF_CHANNELS = re.compile(r"[Cc]hannel.*Expected (\d+) but got (\d+)")  # Hugging Face patch embeddings'


def _channel_mismatch(err: BaseException, model: Any, channels: Optional[int], parameterization: bool) -> Optional[str]:
    """The hint for a model that refused the image's channel count, read from torch's (or Hugging Face's) own
    message, so a model that converts channels itself (a preprocess, a gray stem) is not blamed for a later error.

    Nor is the image blamed for an inner layer of an ``nn.Module`` that got the image's count by chance: when the
    refusing count is not the first convolution's and another convolution reads the image's count (the input
    layer that took the image), the error is the model's own. A heuristic: the first ``Conv2d`` in definition
    order stands for the input layer, and a function model (its modules unknown) is always given the hint.
    """
    if channels is None:
        return None
    found = _TORCH_CHANNELS.search(str(err)) or _HF_CHANNELS.search(str(err))
    if found is None or int(found.group(2)) != channels:
        return None
    want = int(found.group(1))
    if isinstance(model, nn.Module) and want != model_input_channels(model, default=want):
        if any(isinstance(m, nn.Conv2d) and m.in_channels == channels for m in model.modules()):
            return None
    if parameterization:  # a render: its image is a parameterization, and a preprocess goes in its transforms
        return (f"the image has {count_channels(channels)} and the model reads {want}: give an image parameterization "
                f"of {count_channels(want)} (default_image(size, channels={want})), {channel_advice(channels, want)} "
                "to start from, or a preprocess that converts it (render_vis's preprocess=, or a module at the end of "
                "InputOptimization's transform)")
    return (f"the image has {count_channels(channels)} and the model reads {want}: give "
            f"{channel_advice(channels, want)} or a preprocess that converts it")


def input_error(
    err: BaseException,
    model: nn.Module,
    config: Any,
    image_hw: Optional[Tuple[int, int]],
    fed_hw: Optional[Tuple[int, int]] = None,
    channels: Optional[int] = None,
    *,
    parameterization: bool = False,
) -> Optional[ValueError]:
    """A ``ValueError`` naming the working size, the transforms' output size and the channel count for a model that
    failed on the input it was fed.

    ``None`` when none of them explains the failure: an allocation failure (out of memory); the model declares no
    native size it insists on (``config.fixed_size`` False), or it was fed that size and the transforms kept the
    image's size, and torch's error is not a layer refusing the image's channel count (a layer after a preprocess
    or a stem that converts channels is not the image's fault). Renders raise it from the model's own error
    (``Expected 224 but got 228``, ``Input image size (36*36) doesn't match model (32*32)``,
    ``expected input[1, 3, 32, 32] to have 1 channels, but got 3 channels instead``).

    Args:
        err: the model's error.
        model: the network.
        config: its :class:`~optim.models.preprocess.InputConfig` (``None``: its native size is not considered).
        image_hw: the rendered image's ``(height, width)``.
        fed_hw: the ``(height, width)`` the model was fed, after the transforms (``None``: ``image_hw``).
        channels: the rendered image's channel count (``None``: not considered).
        parameterization: the image is an image parameterization (a render), so the advice names one.

    Example:
        >>> from optim.models.preprocess import InputConfig
        >>> err = input_error(AssertionError("Wrong image height!"), nn.Identity(), InputConfig(size=(32, 32)),
        ...                   (36, 36))
        >>> str(err)[:61]
        'Identity failed on a 36x36 input (Wrong image height!); its n'
        >>> str(err)[56:118]
        'its native input size is 32x32 (unknown): render at that size '
        >>> torch_said = RuntimeError("expected input[1, 3, 8, 8] to have 1 channels, but got 3 channels instead")
        >>> str(input_error(torch_said, nn.Conv2d(1, 4, 3), None, (8, 8), channels=3)).split("; ")[1][:79]
        'the image has 3 channels and the model reads 1: give a 1-channel image (photo.m'
    """
    if image_hw is None or is_out_of_memory(err):
        return None
    image_hw = (int(image_hw[0]), int(image_hw[1]))
    fed = image_hw if fed_hw is None else (int(fed_hw[0]), int(fed_hw[1]))
    hints = []
    mismatch = _channel_mismatch(err, model, channels, parameterization)
    if mismatch is not None:
        hints.append(mismatch)
    if fed != image_hw:
        hints.append(
            f"the transforms change the image size from {image_hw[0]}x{image_hw[1]} to {fed[0]}x{fed[1]}; "
            "a model with a fixed input size needs transforms that keep it, as the default transforms do "
            "(TransformationRobustness(crop_or_pad_output=True))"
        )
    native = getattr(config, "size", None)
    if native is not None and getattr(config, "fixed_size", None) is not False and tuple(native) != image_hw:
        hints.append(
            f"its native input size is {native[0]}x{native[1]} ({config.source}): render at that size "
            f"(default_image(({native[0]}, {native[1]})); render_vis and render_layer use it when image= and size= "
            "are unset)"
        )
    if not hints:
        return None
    name = getattr(model, "__name__", type(model).__name__)  # a function model by its own name
    return ValueError(f"{name} failed on a {fed[0]}x{fed[1]} input ({err}); " + "; ".join(hints))


@contextlib.contextmanager
def explained_input_errors(
    model: Any,
    image_hw: Tuple[int, int],
    config: Any = None,
    channels: Optional[int] = None,
) -> Iterator[None]:
    """Run a model on an image, raising :func:`input_error`'s ``ValueError`` (from the model's own error) where
    it explains the failure; any other error passes unchanged.

    Args:
        model, image_hw, config, channels: as :func:`input_error` takes them (the model is fed ``image_hw``).

    Example:
        >>> with explained_input_errors(nn.Conv2d(1, 4, 3), (8, 8), channels=3):
        ...     nn.Conv2d(1, 4, 3)(torch.zeros(1, 3, 8, 8))
        Traceback (most recent call last):
        ...
        ValueError: Conv2d failed on a 8x8 input (...); the image has 3 channels and the model reads 1: ...
    """
    try:
        yield
    except (RuntimeError, ValueError, AssertionError, TypeError) as err:
        # an inner reader (record_activations) may have explained it already, from the tensor it saw; this caller
        # knows the image before any preprocess, so it explains again from torch's own error, or passes that on
        inner = getattr(err, "_input_explained", False) and isinstance(err.__cause__, Exception)
        source = err.__cause__ if inner else err
        explained = input_error(source, model, config, image_hw, channels=channels)
        if explained is None:
            if inner:
                raise source from None
            raise
        explained._input_explained = True  # type: ignore[attr-defined]
        raise explained from source


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
    average: Optional[float] = None,
    residual_gradient: Optional[float] = None,
) -> List[torch.Tensor]:
    """Render an image that maximizes ``objective`` on ``model`` (Lucent's ``render_vis``).

    Args:
        model: the network (left exactly as it was: mode, gradients flags, no hooks).
        objective: a :class:`~optim.loss.Loss`, or a string: ``"layer:channel"``, ``"layer:channel:x:y"``
            for a neuron, ``"layer"`` for DeepDream on the layer (dotted module names, see
            :func:`optim.loss.parse`).
        image: the image parameterization (default :func:`default_image` at the model's native size, as
            :func:`optim.models.preprocess.input_config` reads it (timm ``pretrained_cfg``, torchvision ViT's
            ``image_size``, Hugging Face ``config.image_size``), else ``DEFAULT_SIZE``, with as many channels as the
            model's first convolution reads: 1 renders a grayscale image, without colour decorrelation), a
            function that builds one (Lucent's ``param_f``), or a tensor in ``[0, 1]`` to start from.
        transforms: a module, a list of modules (applied in order), or ``None`` for
            :func:`default_transforms`; ``[]`` for none.
        thresholds: step counts at which a snapshot is taken; the render runs to the last one.
        optimizer: ``None`` for AdamW with ``DEFAULT_WEIGHT_DECAY`` (``PHOTO_START_OPTIMIZER``, plain Adam, when
            the image starts from a photo: the decay would fade it), an optimizer class (built with ``lr``), an
            instance over the image's parameters, or a function ``params -> optimizer``.
        lr: the learning rate of a default or class-given optimizer (a finite number >= 0; 0 leaves the image as
            it started).
        preprocess: applied after the transforms and before the model (e.g. input normalization). ``None``:
            :class:`~optim.transforms.Normalize` with the mean and std the model declares (timm's
            ``pretrained_cfg``, open_clip's ``preprocess_cfg``; the image stays in ``[0, 1]``), else nothing;
            ``nn.Identity()`` for none (also when ``transforms`` already normalize). A Hugging Face model keeps
            its mean and std in its image processor: pass
            ``preprocess=opt.models.input_config(model, processor).normalize()``. optim's own models normalize
            their input themselves and get nothing.
        progress: show a progress bar.
        seed: makes the render reproducible whatever was built before the call: the image is re-initialized
            from the seed (``reset_parameters``) and image ``i`` of the batch draws its transforms from its own
            stream. ``None``: the image is used as built.
        callback: ``callback(step, loss, images)`` after every step (e.g.
            :class:`~optim.optimization.TensorBoardCallback`); ``images`` is the image that step optimized, not the
            average a snapshot returns.
        average: iterate averaging: each snapshot is an average of the images the steps so far optimized and the
            current one, weighted towards the last ``average`` of them (:class:`~optim.optimization.ImageAverage`:
            polynomial-decay weights, about two thirds of the weight on that fraction); a snapshot at step 0 is the
            starting image. ``None``: ``DEFAULT_AVERAGE`` (1/6) for an image from noise, none for one that starts
            from a photo (:func:`~optim.optimization.resolve_average`); ``0``: the last image. The average scores a
            little lower than the last image on the rendering model's own objective (the progress bar shows the
            last step's) and is named more often by other networks (:mod:`optim.optimization.defaults`).
        residual_gradient: the factor on the gradient through the model's residual branches while the image is
            optimized (:class:`~optim.optimization.InputOptimization`; the Skip Gradient Method). ``None``:
            ``DEFAULT_RESIDUAL_GRADIENT`` (0.25) from noise, 1 (the true gradient) from a photo; only models with
            such blocks (the zoo's EfficientNet-Lite) are affected.

    Returns:
        One detached CPU ``ImageTensor`` ``[B, C, H, W]`` per threshold.

    Raises:
        ValueError: for an unknown layer (with close names), a channel out of range, or bad thresholds; a model
            that fails on the image's size (the transforms changed it, or it is not the model's native size) or on
            its channel count (an RGB photo for a grayscale model) gets a ValueError naming the working size and
            transforms or both channel counts, raised from the model's own error.
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
    from .models.preprocess import render_inputs

    steps = _check_thresholds(thresholds)
    check_average(average)  # before any work
    check_residual_gradient(residual_gradient)
    inputs = render_inputs(model, preprocess=preprocess, transforms=transforms)  # native size and normalization
    # built outside inference mode even when the caller is inside it, so autograd can train the image
    with autograd_context(), seeded(seed, model):
        param = _build_image(image, model, inputs.size)
        transform = make_transform(transforms, inputs.preprocess)
        obj = InputOptimization(model, objective, param, transform, seed=seed, residual_gradient=residual_gradient)
    # built (and checked) before any work; every segment reuses it, so Adam's moments and the learning-rate
    # schedule carry over between snapshots
    obj._make_optimizer(optimizer, lr)
    averaged = ImageAverage(resolve_average(average, param))
    step_callback = averaged.then(callback)
    bar = ProgressBar(steps[-1], enabled=progress)
    segment = Segment(bar)
    images: List[torch.Tensor] = []
    try:
        for threshold in steps:
            segment.offset, segment.end = segment.end, threshold
            if threshold > segment.offset:  # a model that refuses the image: InputOptimization explains it
                obj.optimize(segment, optimizer=optimizer, lr=lr, callback=step_callback, step_offset=segment.offset)
            with torch.no_grad():
                images.append(_as_image_tensor(averaged.value(param())))
    finally:
        bar.close()
    return images


def render_layer(
    model: nn.Module,
    layer: Union[str, nn.Module],
    channels: Optional[Sequence[int]] = None,
    batch_size: int = 16,
    steps: int = DEFAULT_STEPS,
    size: Union[None, int, Sequence[int]] = None,
    transforms: TransformArg = None,
    optimizer: OptimizerArg = None,
    lr: float = DEFAULT_LR,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    progress: bool = True,
    seed: Optional[int] = None,
    *,
    callback: Optional[StepCallback] = None,
    average: Optional[float] = None,
    residual_gradient: Optional[float] = None,
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
        size: image side (an int) or ``(height, width)``; ``None``: the model's native size, else
            ``DEFAULT_SIZE`` (as in :func:`render_vis`).
        transforms: as in :func:`render_vis`.
        optimizer: an optimizer class or a function ``params -> optimizer`` (default AdamW with weight decay).
        lr: learning rate.
        preprocess: as in :func:`render_vis`.
        progress: one progress bar over all batches.
        seed: seed for a reproducible render (``None``: drawn from torch's global generator).
        callback: ``callback(step, loss, images)`` after every step of every batch.
        average: iterate averaging, as :func:`render_vis` takes it (``None``: ``DEFAULT_AVERAGE``, 1/6; ``0``:
            each image as its last step left it).
        residual_gradient: as :func:`render_vis` takes it.

    Returns:
        A CPU ``ImageTensor`` ``[len(channels), C, H, W]``, in channel order (see ``opt.make_grid_image``); ``C``
        is the model's input channels (:func:`~optim.optimization.model_input_channels`, 3 for RGB models).

    Raises:
        TypeError: a channel that is not an int.
        ValueError: an unknown layer, an empty ``channels``, a channel outside the layer (naming the layer, its
            channel count and the valid range), or a model that fails on the size or channel count (as in
            :func:`render_vis`); nothing is rendered.

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
    from .images.base import check_elements
    from .models.preprocess import render_inputs
    from .models.selection import channel_units

    check_positive(batch_size, "batch_size")
    check_positive(steps, "steps")
    check_average(average)  # before the probe pass
    check_residual_gradient(residual_gradient)
    inputs = render_inputs(model, size, preprocess, transforms)  # the model's native size and normalization
    hw = inputs.size
    preprocess = inputs.preprocess
    check_elements(3 * hw[0] * hw[1], "size")  # before the probe pass allocates anything
    module = resolve_module(model, layer)
    with explained_input_errors(model, hw, inputs.config):
        ((n_channels, unit),) = channel_units(model, [module], hw, preprocess=preprocess)
    chosen = list(range(n_channels)) if channels is None else list(channels)
    if not chosen:
        raise ValueError("channels is empty: give at least one channel index")
    for c in chosen:
        check_index(c, "channel", size=n_channels, target=layer, unit=unit)
    objectives = [lambda i, c=c: ChannelActivation(module, c, batch_index=i) for c in chosen]
    in_channels = model_input_channels(model)
    tiles = render_batches(  # a model that refuses the transformed image: InputOptimization explains it
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
        average=average,
        residual_gradient=residual_gradient,
    )
    return ImageTensor(tiles)
