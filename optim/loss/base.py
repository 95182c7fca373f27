"""The ``Loss`` base class and the algebra that composes losses.

A loss is a small object that knows its target modules (``targets``) and maps the recorded activations to a
tensor (``__call__``). Arithmetic between losses builds new losses whose targets are the union of both
sides, so ``ChannelActivation(m.mixed4a, 97) - 0.1 * TotalVariation(image)`` is itself a ``Loss``.
"""
from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from typing import Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

__all__ = [
    "Target",
    "Loss",
    "BaseLoss",
    "CompositeLoss",
    "sum_loss_list",
    "default_loss_summarize",
    "target_name",
]

Target = Union[nn.Module, str]
Number = Union[int, float]
BatchIndex = Optional[Union[int, Sequence[int]]]
Activations = Mapping[Target, torch.Tensor]


def target_name(target: Target) -> str:
    """A short readable name for a target: the dotted name itself, or the module's class name."""
    return target if isinstance(target, str) else type(target).__name__


def _unique(targets: Iterable[Target]) -> List[Target]:
    # Modules hash by identity, strings by value: one list, first occurrence kept, order stable.
    seen: dict = {}
    for t in targets:
        seen.setdefault(t, None)
    return list(seen)


class Loss(ABC):
    """Base class of every objective.

    Subclasses define :attr:`targets` and :meth:`__call__`. Every loss supports ``+ - * / **``, unary ``-``
    and ``abs()`` with other losses and with numbers, on either side. Between two losses each side is first
    reduced to its mean, so losses on layers of different shapes combine; with a number the operation is
    elementwise.

    Example::

        loss = ChannelActivation("mixed4a", 97) - 0.05 * TotalVariation(image)
    """

    @property
    @abstractmethod
    def targets(self) -> List[Target]:
        """The modules (or dotted module names) whose outputs this loss reads."""

    @abstractmethod
    def __call__(self, activations: Activations) -> torch.Tensor:
        """Map recorded activations (target -> tensor) to a loss tensor."""

    # The algebra ---------------------------------------------------------------------------------------
    def __add__(self, other: Union["Loss", Number]) -> "CompositeLoss":
        return _binary(self, other, operator.add, "+")

    def __radd__(self, other: Number) -> "CompositeLoss":
        return _binary(other, self, operator.add, "+")

    def __sub__(self, other: Union["Loss", Number]) -> "CompositeLoss":
        return _binary(self, other, operator.sub, "-")

    def __rsub__(self, other: Number) -> "CompositeLoss":
        return _binary(other, self, operator.sub, "-")

    def __mul__(self, other: Union["Loss", Number]) -> "CompositeLoss":
        return _binary(self, other, operator.mul, "*")

    def __rmul__(self, other: Number) -> "CompositeLoss":
        return _binary(other, self, operator.mul, "*")

    def __truediv__(self, other: Union["Loss", Number]) -> "CompositeLoss":
        return _binary(self, other, operator.truediv, "/")

    def __rtruediv__(self, other: Number) -> "CompositeLoss":
        return _binary(other, self, operator.truediv, "/")

    def __pow__(self, other: Union["Loss", Number]) -> "CompositeLoss":
        return _binary(self, other, operator.pow, "**")

    def __rpow__(self, other: Number) -> "CompositeLoss":
        return _binary(other, self, operator.pow, "**")

    def __neg__(self) -> "CompositeLoss":
        return CompositeLoss(lambda acts: -self(acts), self.targets, f"-{self!r}")

    def __abs__(self) -> "CompositeLoss":
        return CompositeLoss(lambda acts: torch.abs(self(acts)), self.targets, f"abs({self!r})")


class CompositeLoss(Loss):
    """A loss built from other losses: a function of the activations plus the union of their targets.

    Args:
        loss_fn: maps the activations to a tensor.
        targets: the targets ``loss_fn`` reads.
        name: the readable expression shown by ``repr``.
    """

    def __init__(self, loss_fn: Callable[[Activations], torch.Tensor], targets: Iterable[Target], name: str) -> None:
        self._loss_fn = loss_fn
        self._targets = _unique(targets)
        self._name = name

    @property
    def targets(self) -> List[Target]:
        return list(self._targets)

    def __call__(self, activations: Activations) -> torch.Tensor:
        return self._loss_fn(activations)

    def __repr__(self) -> str:
        return self._name


def _binary(
    left: Union[Loss, Number], right: Union[Loss, Number], op: Callable, symbol: str
) -> CompositeLoss:
    for side in (left, right):
        if not isinstance(side, (Loss, int, float)) or isinstance(side, bool):
            raise TypeError(
                f"a loss combines with another Loss or a number (int/float), got {type(side).__name__}"
            )
    both = isinstance(left, Loss) and isinstance(right, Loss)

    def evaluate(side: Union[Loss, Number], acts: Activations) -> Union[torch.Tensor, Number]:
        if not isinstance(side, Loss):
            return side
        value = side(acts)
        # Two losses usually read layers of different shapes: compare them as scalars.
        return value.mean() if both else value

    targets = [t for side in (left, right) if isinstance(side, Loss) for t in side.targets]
    name = f"({left!r} {symbol} {right!r})"
    return CompositeLoss(lambda acts: op(evaluate(left, acts), evaluate(right, acts)), targets, name)


def sum_loss_list(
    loss_list: Sequence[Loss], to_scalar_fn: Callable[[torch.Tensor], torch.Tensor] = torch.mean
) -> CompositeLoss:
    """Sum many losses in one flat loop (no recursion, so hundreds of losses are fine).

    Args:
        loss_list: the losses.
        to_scalar_fn: reduces each loss to a scalar before summing.

    Returns:
        One loss whose targets are the union of all targets.

    Example::

        loss = sum_loss_list([ChannelActivation(layer, c, batch_index=i) for i, c in enumerate(channels)])
    """
    losses = list(loss_list)
    if not losses:
        raise ValueError("sum_loss_list needs at least one loss, got an empty list")
    for loss in losses:
        if not isinstance(loss, Loss):
            raise TypeError(f"sum_loss_list takes Loss objects, got {type(loss).__name__}")

    def loss_fn(acts: Activations) -> torch.Tensor:
        total = to_scalar_fn(losses[0](acts))
        for loss in losses[1:]:
            total = total + to_scalar_fn(loss(acts))
        return total

    name = f"sum_loss_list([{len(losses)} losses])" if len(losses) > 3 else f"sum_loss_list({losses!r})"
    return CompositeLoss(loss_fn, [t for loss in losses for t in loss.targets], name)


def default_loss_summarize(loss_value: torch.Tensor) -> torch.Tensor:
    """The default reduction of a loss tensor to the scalar that is minimized: ``-mean``."""
    return -loss_value.mean()


def _normalize_batch_index(batch_index: BatchIndex) -> Tuple[Optional[int], Optional[int]]:
    if batch_index is None:
        return None, None
    if isinstance(batch_index, bool):
        raise TypeError("batch_index must be an int or a [start, end] pair, got a bool")
    if isinstance(batch_index, int):
        if batch_index < 0:
            raise ValueError(f"batch_index must be >= 0, got {batch_index}")
        return batch_index, batch_index + 1
    if isinstance(batch_index, (list, tuple)) and len(batch_index) == 2 and all(
        isinstance(i, int) and not isinstance(i, bool) for i in batch_index
    ):
        start, end = batch_index
        if not 0 <= start < end:
            raise ValueError(f"batch_index [start, end] needs 0 <= start < end, got {list(batch_index)}")
        return start, end
    raise TypeError(f"batch_index must be None, an int or a [start, end] pair of ints, got {batch_index!r}")


class BaseLoss(Loss):
    """A loss on one target, optionally restricted to part of the batch.

    Args:
        target: the module (or dotted module name) whose output is read.
        batch_index: ``None`` for the whole batch, an int for one image, or ``[start, end]``.
    """

    def __init__(self, target: Target, batch_index: BatchIndex = None) -> None:
        if not isinstance(target, (nn.Module, str)):
            raise TypeError(f"a loss target must be an nn.Module or a dotted module name, got {type(target).__name__}")
        self.target = target
        self.batch_index = _normalize_batch_index(batch_index)

    @property
    def targets(self) -> List[Target]:
        return [self.target]

    def _activation(self, activations: Activations, target: Optional[Target] = None) -> torch.Tensor:
        """The recorded output of ``target`` (default: this loss's target), cut to ``batch_index``."""
        act = activations[self.target if target is None else target]
        start, end = self.batch_index
        if start is None:
            return act
        if end > act.shape[0]:
            raise ValueError(
                f"batch_index [{start}, {end}] is out of range for a batch of {act.shape[0]} at "
                f"{target_name(self.target if target is None else target)}"
            )
        return act[start:end]

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        args = [target_name(self.target)]
        extra = self._extra_repr()
        if extra:
            args.append(extra)
        if self.batch_index[0] is not None:
            start, end = self.batch_index
            args.append(f"batch_index={start if end == start + 1 else [start, end]}")
        return f"{type(self).__name__}({', '.join(args)})"
