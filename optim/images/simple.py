"""A fixed tensor as a parameterization, and a plain function as one."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

from .base import ImageParameterization, check_generators

__all__ = ["SimpleTensorParameterization"]


class SimpleTensorParameterization(ImageParameterization):
    """Return one given tensor every call (captum.optim's class): a fixed part of a batch, or a tensor you train.

    An ``nn.Parameter`` is kept as this module's parameter (so it is optimized with the rest of a
    ``StackImage`` or ``SharedImage``); any other tensor is kept as a buffer, so it follows ``.to()``. Either
    way the tensor itself is stored, not a copy, and returned as is: no shape is required, though
    ``StackImage`` and ``SharedImage`` need NCHW.

    Args:
        tensor: the tensor to return.

    Raises:
        TypeError: ``tensor`` is not a tensor.

    Example:
        >>> from optim.images import PixelImage, StackImage
        >>> fixed = SimpleTensorParameterization(torch.zeros(1, 3, 4, 4))
        >>> batch = StackImage([PixelImage((4, 4)), fixed])
        >>> batch().shape, float(batch()[1].abs().sum())
        (torch.Size([2, 3, 4, 4]), 0.0)
        >>> trained = SimpleTensorParameterization(nn.Parameter(torch.zeros(1, 3, 4, 4)))
        >>> [name for name, _ in trained.named_parameters()]
        ['tensor']
    """

    def __init__(self, tensor: torch.Tensor) -> None:
        super().__init__()
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"SimpleTensorParameterization takes a torch.Tensor, got {type(tensor).__name__}")
        if isinstance(tensor, nn.Parameter):
            self.tensor = tensor
        else:
            self.register_buffer("tensor", tensor)

    def reset_parameters(self, generators: Optional[Sequence[torch.Generator]] = None) -> None:
        """A fixed tensor has no random state to re-draw: only ``generators`` is checked (one per image)."""
        batch = int(self.tensor.shape[0]) if self.tensor.dim() == 4 else 1
        check_generators(generators, batch, "SimpleTensorParameterization.reset_parameters")

    def forward(self) -> torch.Tensor:
        """Returns:
        The stored tensor."""
        return self.tensor


class FunctionImage(ImageParameterization):
    """A plain function with no argument that returns an NCHW tensor, as a parameterization (what
    ``SharedImage`` wraps a callable in). It holds no state of its own: whatever the function reads is yours.

    Args:
        func: the function.
    """

    def __init__(self, func: Callable[[], torch.Tensor]) -> None:
        super().__init__()
        if not callable(func):
            raise TypeError(f"FunctionImage takes a function, got {type(func).__name__}")
        self.func = func

    def reset_parameters(self, generators: Optional[Sequence[torch.Generator]] = None) -> None:
        """Nothing to re-draw (the function's state is its owner's): only ``generators`` is checked."""
        if generators is not None:
            with torch.no_grad():
                batch = int(self.func().shape[0])
            check_generators(generators, batch, "SharedImage (a function part)")

    @torch.jit.unused
    def forward(self) -> torch.Tensor:
        """Returns:
        ``func()``."""
        return self.func()
