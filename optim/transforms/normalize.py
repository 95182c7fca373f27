"""Input normalization: ``(x - mean) / std`` per channel, the preprocessing most pretrained models expect.

A render keeps its image in ``[0, 1]`` and normalizes it on the way into the model: ``render_vis`` adds
:class:`Normalize` as the model's preprocess when the model declares a mean and std
(:func:`optim.models.preprocess.input_config`: timm ``pretrained_cfg``, open_clip's ``preprocess_cfg``). A Hugging
Face model keeps its mean and std in its image processor, which the model does not hold: pass
``preprocess=opt.models.input_config(model, processor).normalize()``.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn as nn

__all__ = ["Normalize", "normalize"]

Stats = Union[float, Sequence[float], torch.Tensor]


def _as_stats(value: Stats, name: str) -> Tuple[float, ...]:
    """``value`` as a tuple of finite floats (one per channel, or one for every channel)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a sequence of numbers (one per channel), got {value!r}")
    if isinstance(value, torch.Tensor):
        if value.dim() > 1 and value.numel() != value.shape[0]:
            raise ValueError(f"{name} must be one number per channel (a 1-D tensor), got shape {tuple(value.shape)}")
        values = value.detach().double().reshape(-1).cpu().tolist()
    elif isinstance(value, (int, float)):
        values = [value]
    else:
        try:
            values = list(value)
        except TypeError:
            raise TypeError(
                f"{name} must be a number or a sequence of numbers (one per channel), got {type(value).__name__}"
            ) from None
    if not values:
        raise ValueError(f"{name} is empty: give one number per channel")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must hold numbers, got {v!r} ({type(v).__name__})")
        if not math.isfinite(v):
            raise ValueError(f"{name} must hold finite numbers, got {v!r}")
        out.append(float(v))
    return tuple(out)


def _check_stats(mean: Stats, std: Stats) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    mean_t, std_t = _as_stats(mean, "mean"), _as_stats(std, "std")
    if any(s <= 0 for s in std_t):
        raise ValueError(f"std must be > 0 for every channel, got {std_t}")
    if len(mean_t) != len(std_t) and 1 not in (len(mean_t), len(std_t)):
        raise ValueError(
            f"mean and std must have the same length (one per channel), got {len(mean_t)} and {len(std_t)}"
        )
    return mean_t, std_t


def _check_input(x: torch.Tensor, channels: int, where: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where} expects a tensor, got {type(x).__name__}")
    if x.dim() < 3:
        raise ValueError(f"{where} expects a CHW or NCHW tensor, got shape {tuple(x.shape)}")
    if channels != 1 and x.shape[-3] != channels:
        from ..images.base import channel_advice, count_channels

        have = int(x.shape[-3])
        raise ValueError(
            f"{where} has {channels} channel values but the input has {count_channels(have)} (shape "
            f"{tuple(x.shape)}): give {channel_advice(have, channels)}"
        )


def _apply(x: torch.Tensor, mean: List[float], std: List[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


def normalize(x: torch.Tensor, mean: Stats, std: Stats) -> torch.Tensor:
    """``(x - mean) / std`` per channel (the functional twin of :class:`Normalize`; differentiable).

    Args:
        x: a ``CHW`` or ``NCHW`` float tensor (a render's image, in ``[0, 1]``).
        mean: one number per channel (or one for all), e.g. ImageNet's ``(0.485, 0.456, 0.406)``.
        std: one number > 0 per channel (or one for all).

    Returns:
        A tensor of ``x``'s shape, dtype and device.

    Raises:
        TypeError: ``mean`` / ``std`` not numbers; ValueError: a non-positive or non-finite ``std``, lengths
        that differ from each other or from the input's channels.

    Example:
        >>> normalize(torch.full((1, 3, 1, 1), 0.5), (0.5, 0.25, 0.0), (0.5, 0.25, 1.0)).flatten().tolist()
        [0.0, 1.0, 0.5]
        >>> normalize(torch.zeros(1, 3, 2, 2), (0.5, 0.5), 0.5)
        Traceback (most recent call last):
        ...
        ValueError: normalize has 2 channel values but the input has 3 channels (shape (1, 3, 2, 2)): give ...
    """
    mean_t, std_t = _check_stats(mean, std)
    _check_input(x, max(len(mean_t), len(std_t)), "normalize")
    return _apply(x, list(mean_t), list(std_t))


class Normalize(nn.Module):
    """Per-channel input normalization ``(x - mean) / std``, as a transform (a render's ``preprocess``).

    Deterministic (no random draw), so a batched render applies it to the whole batch at once. The mean and
    std are kept as Python floats and cast to the input's dtype and device on every call, so the module works
    for float32, bf16 and fp16 models on any device without ``.to()``.

    Args:
        mean: one number per channel (or one for all).
        std: one number > 0 per channel (or one for all).

    Raises:
        TypeError / ValueError: as :func:`normalize`, at construction for the statistics and at call time for
        an input whose channels do not match.

    Example:
        >>> norm = Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        >>> y = norm(torch.full((2, 3, 4, 4), 0.485))
        >>> y.shape, round(y[0, 0, 0, 0].item(), 6), round(y[0, 2, 0, 0].item(), 4)
        (torch.Size([2, 3, 4, 4]), 0.0, 0.3511)
        >>> Normalize((0.5, 0.5, 0.5), (0.5, 0.0, 0.5))
        Traceback (most recent call last):
        ...
        ValueError: std must be > 0 for every channel, got (0.5, 0.0, 0.5)
    """

    #: draws no random numbers: a batched render applies it to the whole batch at once
    deterministic = True

    def __init__(self, mean: Stats, std: Stats) -> None:
        super().__init__()
        mean_t, std_t = _check_stats(mean, std)
        self.mean: List[float] = list(mean_t)
        self.std: List[float] = list(std_t)
        self.channels = max(len(self.mean), len(self.std))

    @torch.jit.unused
    def _checked(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.channels, "Normalize")
        # an ImageTensor (NaturalImage's output) would route the arithmetic through its __torch_function__
        return x if type(x) is torch.Tensor else x.as_subclass(torch.Tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize a ``CHW`` or ``NCHW`` tensor (a tensor subclass such as ``ImageTensor`` comes out plain)."""
        if not torch.jit.is_scripting():
            x = self._checked(x)
        return _apply(x, self.mean, self.std)

    def extra_repr(self) -> str:
        return f"mean={tuple(self.mean)}, std={tuple(self.std)}"
