"""Shared low-resolution components added to every image of a batch (Lucid's lowres_tensor)."""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import ImageParameterization

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

        resize_linear(torch.randn(2, 3, 4, 4), [5, 3, 8, 8]).shape  # torch.Size([5, 3, 8, 8])
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


class SharedImage(ImageParameterization):
    """Add shared low-resolution tensors to the output of another parameterization.

    Each shared tensor (shape ``[B', C', h, w]``, shorter shapes are left-padded with 1) is resized by
    linear interpolation along every axis to the full ``[B, C, H, W]`` and added, as in Lucid's
    ``lowres_tensor``. With ``B' = 1`` the same pattern is added to every image; with ``1 < B' < B`` it
    is interpolated over the batch axis, which aligns neighbouring images of an interpolation batch
    (Mordvintsev et al., "Differentiable Image Parameterizations", Distill 2018).

    An offset (like a phase) shifts an interpolated tensor by that many elements per axis, padding the
    start symmetrically and cropping the end, as Lucid does.

    Args:
        shapes: one shape or a list of shapes of the shared tensors.
        parameterization: the per-image parameterization the shared tensors are added to.
        offset: None, an int for every axis, up to 4 ints ``[B, C, H, W]`` for every tensor, or one
            such list per shared tensor.
        sd: standard deviation of the random initial shared tensors.

    Example::

        base = FFTImage((64, 64), batch=6)
        image = SharedImage([(1, 3, 32, 32), (2, 3, 8, 8)], base)
        image().shape  # torch.Size([6, 3, 64, 64])
    """

    def __init__(
        self,
        shapes: ShapeArg,
        parameterization: nn.Module,
        offset: OffsetArg = None,
        sd: float = 0.01,
    ) -> None:
        super().__init__()
        if not isinstance(parameterization, nn.Module):
            raise TypeError(
                f"parameterization must be an ImageParameterization instance, got {type(parameterization).__name__}"
            )
        shape_list = _as_shapes(shapes)
        offsets = _as_offsets(offset, len(shape_list))
        self.parameterization = parameterization
        with torch.no_grad():
            reference = parameterization()
        if reference.dim() != 4:
            raise ValueError(f"the parameterization must return NCHW, got shape {tuple(reference.shape)}")
        if offsets is not None:
            for o in offsets:
                if any(v > s for v, s in zip(o, reference.shape)):
                    raise ValueError(f"offset {o} exceeds the image shape {list(reference.shape)}")
        self.has_offset = offsets is not None
        self.offsets: List[List[int]] = offsets if offsets is not None else []
        self.shared = nn.ParameterList(
            [
                nn.Parameter(torch.randn(s, dtype=reference.dtype, device=reference.device) * sd)
                for s in shape_list
            ]
        )

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
