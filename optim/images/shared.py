"""Shared low-resolution components added to every image of a batch (Lucid's lowres_tensor)."""
from __future__ import annotations

import inspect
from typing import Callable, List, Optional, Sequence, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import (
    ImageParameterization,
    assign_,
    check_generators,
    check_wrapped_geometry,
    normal_noise,
    reset_inner,
)
from .fft import FFTImage
from .simple import FunctionImage

__all__ = ["SharedImage", "resize_linear"]

ShapeArg = Union[Sequence[int], Sequence[Sequence[int]]]
OffsetArg = Union[int, Sequence[int], Sequence[Sequence[int]], None]


def resize_linear(x: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Resize an NCHW tensor to ``size`` by linear interpolation along every axis that differs.

    The batch and channel axes are interpolated too (Lucid's ``resize_bilinear_nd``), so a shared
    tensor with fewer batch elements than the image varies smoothly across the batch.

    Args:
        x: a 4D tensor.
        size: the target ``[B, C, H, W]``.

    Returns:
        The resized tensor (``x`` itself when the shapes already match).

    Example::

        >>> resize_linear(torch.randn(2, 3, 4, 4), [5, 3, 8, 8]).shape
        torch.Size([5, 3, 8, 8])
    """
    if x.size(2) != size[2] or x.size(3) != size[3]:
        x = F.interpolate(x, size=[size[2], size[3]], mode="bilinear", align_corners=False)
    for dim in [0, 1]:
        if x.size(dim) != size[dim]:
            moved = x.movedim(dim, -1)
            shape = list(moved.shape)
            flat = moved.reshape(-1, 1, shape[-1])
            flat = F.interpolate(flat, size=[size[dim]], mode="linear", align_corners=False)
            shape[-1] = size[dim]
            x = flat.reshape(shape).movedim(-1, dim)
    return x


def _as_shapes(shapes: ShapeArg) -> List[List[int]]:
    if isinstance(shapes, (list, tuple)) and shapes and all(isinstance(s, int) for s in shapes):
        shapes = [shapes]
    if not isinstance(shapes, (list, tuple)) or not shapes:
        raise ValueError(f"shapes must be a shape or a non-empty list of shapes, got {shapes!r}")
    out = []
    for shape in shapes:
        if not isinstance(shape, (list, tuple)) or not 2 <= len(shape) <= 4:
            raise ValueError(f"each shared shape must have 2 to 4 ints ([B, C,] H, W), got {shape!r}")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise ValueError(f"each shared shape must hold positive ints, got {shape!r}")
        out.append([1] * (4 - len(shape)) + list(shape))
    return out


def _as_offsets(offset: OffsetArg, count: int) -> Optional[List[List[int]]]:
    if offset is None:
        return None

    def one(value) -> List[int]:
        if isinstance(value, int) and not isinstance(value, bool):
            return [value] * 4
        if isinstance(value, (list, tuple)) and 1 <= len(value) <= 4:
            if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return [0] * (4 - len(value)) + list(value)
        raise ValueError(f"an offset must be an int or 1 to 4 ints ([B, C,] H, W), got {value!r}")

    if isinstance(offset, (list, tuple)) and offset and isinstance(offset[0], (list, tuple)):
        if len(offset) != count:
            raise ValueError(f"got {len(offset)} offsets for {count} shared shapes")
        offsets = [one(o) for o in offset]
    else:
        offsets = [one(offset)] * count
    if any(v < 0 for o in offsets for v in o):
        raise ValueError(f"offsets must be non-negative, got {offset!r}")
    return offsets


def _takes_no_argument(func: Callable) -> bool:
    """Whether ``func`` is a ready image function (callable with no argument, taking no ``size``) rather than
    a factory called like a parameterization class."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_KEYWORD or p.name in ("size", "channels", "batch") for p in params):
        return False
    return all(p.default is not p.empty or p.kind is p.VAR_POSITIONAL for p in params)


class SharedImage(ImageParameterization):
    """Add shared low-resolution tensors to the output of another parameterization.

    Each shared tensor (shape ``[B', C', h, w]``, shorter shapes are left-padded with 1) is resized by
    linear interpolation along every axis to the full ``[B, C, H, W]`` and added, as in Lucid's
    ``lowres_tensor``. With ``B' = 1`` the same pattern is added to every image; with ``1 < B' < B`` it
    is interpolated over the batch axis, which aligns neighbouring images of an interpolation batch
    (Mordvintsev et al., "Differentiable Image Parameterizations", Distill 2018).

    An offset (like a phase) shifts an interpolated tensor by that many elements per axis, padding the
    start symmetrically and cropping the end, as Lucid does.

    Like ``NaturalImage``, it builds its per-image parameterization from ``(size, channels, batch,
    init)`` or takes a ready one (then the geometry is read from it).

    Random streams: the shared tensors belong to the whole batch, so they cannot come from one image's
    stream alone. :meth:`reset_parameters` resets the inner parameterization (image ``i`` from
    ``generators[i]``) and then draws the shared tensors from ``generators[0]``: equal generators give
    equal images, and the inner part of image ``i`` is the same alone or in a batch, but the sum is not
    (sharing is the point of this parameterization).

    Args:
        size: ``(height, width)`` (ignored with ``init`` or a ready ``parameterization``).
        channels: channels per image (ignored with ``init`` or a ready ``parameterization``).
        batch: number of images (ignored with ``init`` or a ready ``parameterization``).
        init: a CHW or NCHW tensor for the inner parameterization to start from; the shared tensors then
            start at zero, so ``forward()`` returns what the inner one returns.
        shapes: (keyword-only, required) one shape or a list of shapes of the shared tensors.
        parameterization: (keyword-only) the per-image parameterization the shared tensors are added to:
            a class or factory called with the keywords ``size``, ``channels``, ``batch`` (and ``init``
            when given), a ready instance (then ``init`` must be None, and a ``size``, ``channels`` or
            ``batch`` other than the default must agree with it), or a plain function of no argument that
            returns the NCHW image (captum accepts any callable; it is wrapped, and its state is its owner's).
        offset: (keyword-only) None, an int for every axis, up to 4 ints ``[B, C, H, W]`` for every tensor,
            or one such list per shared tensor.
        sd: (keyword-only) standard deviation of the random initial shared tensors.

    captum's positional form ``SharedImage(shapes, parameterization, offset)`` works too (a module or a
    callable in the second position), with ``sd`` as a keyword (a positional offset of exactly ``1`` cannot
    be told from the default ``batch``: give that one as ``offset=1``).

    Raises:
        ValueError: bad ``shapes`` or ``offset``; ``init`` with a ready instance; a geometry that
            disagrees with a ready instance.
        TypeError: a ``parameterization`` that is neither a module class, a factory nor an instance.

    Example::

        >>> image = SharedImage((64, 64), 3, 6, shapes=[(1, 3, 32, 32), (2, 3, 8, 8)])
        >>> image().shape
        torch.Size([6, 3, 64, 64])
        >>> fixed = torch.zeros(2, 3, 8, 8)
        >>> captum_style = SharedImage([(1, 3, 4, 4)], lambda: fixed, (0, 0, 1, 1))  # shapes, a callable, offset
        >>> captum_style().shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(
        self,
        size: Sequence[int] = (224, 224),
        channels: int = 3,
        batch: int = 1,
        init: Optional[torch.Tensor] = None,
        *,
        shapes: Optional[ShapeArg] = None,
        parameterization: Union[Type[nn.Module], Callable[..., nn.Module], nn.Module] = FFTImage,
        offset: OffsetArg = None,
        sd: float = 0.01,
    ) -> None:
        super().__init__()
        if isinstance(channels, nn.Module) or callable(channels):
            # captum's positional form SharedImage(shapes, parameterization, offset)
            if shapes is not None or init is not None:
                raise TypeError(
                    "SharedImage(shapes, parameterization, offset) takes no shapes= or init=; the keyword form "
                    "is SharedImage(size, channels, batch, init, *, shapes=..., parameterization=...)"
                )
            if batch != 1:
                if offset is not None:
                    raise TypeError("SharedImage(shapes, parameterization, offset) got offset twice")
                offset = batch
            shapes, parameterization = size, channels
            size, channels, batch = (224, 224), 3, 1
        if (
            callable(parameterization)
            and not isinstance(parameterization, (nn.Module, type))
            and _takes_no_argument(parameterization)
        ):
            parameterization = FunctionImage(parameterization)
        if shapes is None:
            raise TypeError("SharedImage needs shapes=: one shape or a list of shapes of the shared tensors")
        if not isinstance(sd, (int, float)) or isinstance(sd, bool):
            raise TypeError(f"sd must be a number, got {type(sd).__name__}")
        shape_list = _as_shapes(shapes)
        offsets = _as_offsets(offset, len(shape_list))
        if isinstance(parameterization, nn.Module):
            if init is not None:
                raise ValueError("init can only be used with a parameterization class or factory, not an instance")
            inner = parameterization
        elif callable(parameterization) and not (
            isinstance(parameterization, type) and not issubclass(parameterization, nn.Module)
        ):
            kwargs = {"size": size, "channels": channels, "batch": batch}
            if init is not None:
                kwargs["init"] = init
            inner = parameterization(**kwargs)
            if not isinstance(inner, nn.Module):
                raise TypeError(f"the parameterization factory must return an nn.Module, got {type(inner).__name__}")
        else:
            raise TypeError(
                "parameterization must be an ImageParameterization class, a factory called like one, or an "
                f"instance, got {parameterization!r}"
            )
        self.parameterization = inner
        if isinstance(parameterization, nn.Module):
            reference = check_wrapped_geometry(inner, size, channels, batch, "SharedImage")
        else:
            reference = check_wrapped_geometry(inner, (224, 224), 3, 1, "SharedImage")
        if offsets is not None:
            for o in offsets:
                if any(v > s for v, s in zip(o, reference.shape)):
                    raise ValueError(f"offset {o} exceeds the image shape {list(reference.shape)}")
        self.has_offset = offsets is not None
        self.offsets: List[List[int]] = offsets if offsets is not None else []
        self.sd = float(sd)
        self.shared = nn.ParameterList(
            [nn.Parameter(torch.empty(s, dtype=reference.dtype, device=reference.device)) for s in shape_list]
        )
        self._starts_at_zero = init is not None
        self._batch = int(reference.size(0))
        self._reset_shared(None)

    def _reset_shared(self, generator: Optional[torch.Generator]) -> None:
        for shared in self.shared:
            if self._starts_at_zero:
                assign_(shared, torch.zeros_like(shared))
            elif generator is None:
                assign_(shared, normal_noise(shared.shape, None, shared.dtype) * self.sd)
            else:
                assign_(shared, normal_noise((1,) + tuple(shared.shape), [generator])[0] * self.sd)

    def reset_parameters(self, generators: Optional[Sequence[torch.Generator]] = None) -> None:
        """Reset the inner parameterization, then the shared tensors (``N(0, sd)`` from ``generators[0]``,
        or zero when started from ``init``).

        See :meth:`ImageParameterization.reset_parameters` and the class notes on random streams.
        """
        generators = check_generators(generators, self._batch, "SharedImage.reset_parameters")
        reset_inner(self.parameterization, generators, "SharedImage")
        self._reset_shared(generators[0] if generators else None)

    def _offset(self, x: torch.Tensor, offset: List[int]) -> torch.Tensor:
        for dim in range(4):
            pad = offset[dim]
            if pad > 0:
                # TensorFlow's SYMMETRIC padding: the mirror includes the edge element
                front = x.narrow(dim, 0, pad).flip([dim])
                x = torch.cat([front, x], dim=dim).narrow(dim, 0, x.size(dim))
        return x

    def forward(self) -> torch.Tensor:
        """Returns:
        The ``[B, C, H, W]`` image of the inner parameterization plus every resized shared tensor."""
        image = self.parameterization()
        size = [image.size(0), image.size(1), image.size(2), image.size(3)]
        i = 0
        for shared in self.shared:
            x = resize_linear(shared, size)
            if self.has_offset:
                x = self._offset(x, self.offsets[i])
            image = image + x
            i += 1
        return image
