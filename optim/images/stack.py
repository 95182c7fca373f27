"""Concatenate several parameterizations into one batch."""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn

from .base import ImageParameterization, check_generators, reset_inner

__all__ = ["StackImage"]


class _ConstantImage(ImageParameterization):
    """A fixed NCHW tensor in a stack (kept as a buffer, so it follows ``.to()``)."""

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("image", image.detach().as_subclass(torch.Tensor).clone())

    def reset_parameters(self, generators: Optional[Sequence[torch.Generator]] = None) -> None:
        """A fixed image has no random state: only ``generators`` is checked."""
        check_generators(generators, self.image.size(0), "StackImage (a fixed image part)")

    def forward(self) -> torch.Tensor:
        return self.image


class StackImage(ImageParameterization):
    """Concatenate the outputs of several parameterizations (or fixed tensors) along one axis.

    Useful to optimize images of different parameterizations together, or to mix fixed images into a
    batch. Parts may live on different devices when ``output_device`` names where to gather them.

    Unlike its siblings it takes no ``(size, channels, batch, init)``: it is built from ready parts, and
    its geometry is theirs (the parts' batches add up along ``dim=0``; every other axis must agree).

    Random streams: with ``dim=0``, :meth:`reset_parameters` hands each part its own slice of the
    generators (the first part's ``B1`` images get ``generators[:B1]``, and so on), so an image is the
    same as its part built alone; along any other axis every part gets all the generators, in order.

    Args:
        parameterizations: image parameterizations (modules returning NCHW) or fixed CHW/NCHW tensors.
        dim: (keyword-only) the axis to concatenate along (0, the batch, by default).
        output_device: (keyword-only) move every part to this device before concatenating.

    Raises:
        ValueError: an empty list, a bad ``dim``, or parts whose shapes differ off ``dim``.
        TypeError: a part that is neither a module nor a tensor.

    Example::

        >>> from optim.images import FFTImage, PixelImage
        >>> image = StackImage([FFTImage((32, 32)), PixelImage((32, 32), batch=2)])
        >>> image().shape
        torch.Size([3, 3, 32, 32])
    """

    def __init__(
        self,
        parameterizations: Sequence[Union[nn.Module, torch.Tensor]],
        *,
        dim: int = 0,
        output_device: Optional[Union[str, torch.device]] = None,
    ) -> None:
        super().__init__()
        if isinstance(parameterizations, (nn.Module, torch.Tensor)) or not len(parameterizations):
            raise ValueError(
                "parameterizations must be a non-empty list of parameterizations or tensors, got "
                f"{parameterizations!r}"
            )
        if not isinstance(dim, int) or not -4 <= dim < 4:
            raise ValueError(f"dim must be an int in [-4, 3] for NCHW images, got {dim!r}")
        parts = []
        for p in parameterizations:
            if isinstance(p, torch.Tensor):
                if p.dim() not in (3, 4):
                    raise ValueError(f"a fixed image must be CHW or NCHW, got shape {tuple(p.shape)}")
                p = _ConstantImage(p if p.dim() == 4 else p.unsqueeze(0))
            elif not isinstance(p, nn.Module):
                raise TypeError(f"cannot stack a {type(p).__name__}; give modules or tensors")
            parts.append(p)
        self.parameterizations = nn.ModuleList(parts)
        self.dim = dim % 4
        self.output_device: Optional[torch.device] = (
            torch.device(output_device) if output_device is not None else None
        )
        with torch.no_grad():
            shapes = [list(p().shape) for p in parts]
        for shape in shapes:
            if len(shape) != 4:
                raise ValueError(f"every part must return NCHW, got shape {shape}")
            others = [s for i, s in enumerate(shape) if i != self.dim]
            if others != [s for i, s in enumerate(shapes[0]) if i != self.dim]:
                raise ValueError(f"parts can only differ along dim {self.dim}; got shapes {shapes}")
        self._part_batches: List[int] = [shape[0] for shape in shapes]

    def reset_parameters(self, generators: Optional[Sequence[torch.Generator]] = None) -> None:
        """Reset every part in order (see the class notes on how the generators are shared out).

        See :meth:`ImageParameterization.reset_parameters`.
        """
        batch = sum(self._part_batches) if self.dim == 0 else self._part_batches[0]
        generators = check_generators(generators, batch, "StackImage.reset_parameters")
        start = 0
        for part, part_batch in zip(self.parameterizations, self._part_batches):
            if generators is None:
                part_generators = None
            elif self.dim == 0:
                part_generators = generators[start : start + part_batch]
                start += part_batch
            else:
                part_generators = generators
            reset_inner(part, part_generators, "StackImage")

    def forward(self) -> torch.Tensor:
        """Returns:
        The parts' outputs concatenated along ``dim``."""
        images = []
        for p in self.parameterizations:
            image = p()
            if self.output_device is not None:
                image = image.to(self.output_device)
            images.append(image)
        return torch.cat(images, dim=self.dim)
