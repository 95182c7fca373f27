"""Symmetric ("mirror with the edge repeated") padding with an exact gradient.

``numpy.pad(mode="symmetric")`` mirrors ``[a, b, c]`` into ``[b, a | a, b, c | c, b]``. An input pixel can
appear several times in the output, so its gradient is the sum over all its copies; captum's version only
cropped the output gradient, losing the copies' share.
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple, Union

import torch
import torch.nn as nn

__all__ = ["SymmetricPadding", "symmetric_pad", "SymmetricPad2d"]


def _symmetric_index(size: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Source index of every output position along one axis (periodic mirror, so any pad width works)."""
    pos = torch.arange(-before, size + after, device=device)
    period = pos.remainder(2 * size)
    return torch.where(period < size, period, 2 * size - 1 - period)


def _check_pad_width(x: torch.Tensor, padding: List[List[int]]) -> None:
    if len(padding) > x.dim():
        raise ValueError(f"padding has {len(padding)} (before, after) pairs for a {x.dim()}-D tensor")
    for pair in padding:
        if len(pair) != 2 or pair[0] < 0 or pair[1] < 0:
            raise ValueError(f"each padding entry must be a (before, after) pair of non-negative ints, got {pair}")


def _pad_indexed(x: torch.Tensor, padding: List[List[int]]) -> torch.Tensor:
    """Symmetric padding by gathering; ``padding`` pairs apply to the trailing dimensions."""
    first = x.dim() - len(padding)
    for offset, pair in enumerate(padding):
        if pair[0] > 0 or pair[1] > 0:
            dim = first + offset
            x = x.index_select(dim, _symmetric_index(x.shape[dim], pair[0], pair[1], x.device))
    return x


class SymmetricPadding(torch.autograd.Function):
    """Autograd function for symmetric padding, NumPy ``pad_width`` style.

    ``SymmetricPadding.apply(x, padding)`` where ``padding`` holds one ``(before, after)`` pair per
    dimension, aligned with the trailing dimensions (``[[1, 1], [2, 2]]`` pads H by 1 and W by 2 of an NCHW
    tensor; a full list as in NumPy also works). The backward pass sums the gradient of every mirrored copy
    back onto its source pixel.

    Example::

        >>> SymmetricPadding.apply(torch.tensor([[1.0, 2.0, 3.0]]), [[0, 0], [2, 1]])
        tensor([[2., 1., 1., 2., 3., 3.]])
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, padding: Sequence[Sequence[int]]) -> torch.Tensor:
        pairs = [[int(p) for p in pair] for pair in padding]
        _check_pad_width(x, pairs)
        first = x.dim() - len(pairs)
        ctx.steps = []
        for offset, pair in enumerate(pairs):
            if pair[0] > 0 or pair[1] > 0:
                dim = first + offset
                index = _symmetric_index(x.shape[dim], pair[0], pair[1], x.device)
                ctx.steps.append((dim, x.shape[dim], index))
                x = x.index_select(dim, index)
        return x

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Tuple[torch.Tensor, None]:
        grad = grad_output
        for dim, size, index in reversed(ctx.steps):
            shape = list(grad.shape)
            shape[dim] = size
            grad = grad.new_zeros(shape).index_add(dim, index, grad)
        return grad, None


@torch.jit.unused
def _pad_function(x: torch.Tensor, padding: List[List[int]]) -> torch.Tensor:
    return SymmetricPadding.apply(x, padding)


def symmetric_pad(x: torch.Tensor, pad: List[int]) -> torch.Tensor:
    """Symmetric padding with ``F.pad``'s argument order: ``[left, right, top, bottom, ...]``.

    Args:
        x: input tensor.
        pad: (before, after) amounts starting from the last dimension.

    Returns:
        The padded tensor; its gradient sums over mirrored copies.

    Example::

        >>> symmetric_pad(torch.rand(1, 3, 8, 8), [2, 2, 2, 2]).shape
        torch.Size([1, 3, 12, 12])
    """
    if len(pad) % 2 != 0:
        raise ValueError(f"pad needs an even number of entries (before, after per dimension), got {pad}")
    pairs: List[List[int]] = []
    for i in range(len(pad) // 2 - 1, -1, -1):
        pairs.append([pad[2 * i], pad[2 * i + 1]])
    if torch.jit.is_scripting():
        # TorchScript cannot call autograd Functions; index_select's own gradient is the same sum.
        _check_pad_width(x, pairs)
        return _pad_indexed(x, pairs)
    return _pad_function(x, pairs)


class SymmetricPad2d(nn.Module):
    """Symmetric padding of the last two dimensions, as a module.

    Args:
        padding: an int for all sides or ``(left, right, top, bottom)``.

    Example::

        >>> SymmetricPad2d(1)(torch.rand(1, 3, 4, 4)).shape
        torch.Size([1, 3, 6, 6])
    """

    #: draws no random numbers: a batched render applies it to the whole batch at once
    deterministic = True

    def __init__(self, padding: Union[int, Sequence[int]]) -> None:
        super().__init__()
        if isinstance(padding, int) and not isinstance(padding, bool):
            pad = [padding] * 4
        elif isinstance(padding, (list, tuple)) and len(padding) == 4:
            pad = [int(p) for p in padding]
        else:
            raise ValueError(f"padding must be an int or (left, right, top, bottom), got {padding!r}")
        if min(pad) < 0:
            raise ValueError(f"padding must be non-negative, got {pad}")
        self.padding = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad ``x``."""
        return symmetric_pad(x, self.padding)

    def extra_repr(self) -> str:
        return f"padding={self.padding}"
