"""The ``Loss`` base class and the algebra that composes losses.

A loss is a small object that knows its target modules (``targets``) and maps the recorded activations to a
tensor (``__call__``). Arithmetic between losses builds new losses whose targets are the union of both
sides, so ``ChannelActivation(m.mixed4a, 97) - 0.1 * TotalVariation(image)`` is itself a ``Loss``.
"""
from __future__ import annotations

import numbers
import operator
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..layouts import Layout, LayoutArg, channels_first, check_layout, infer_layout

__all__ = [
    "Target",
    "Loss",
    "BaseLoss",
    "CompositeLoss",
    "sum_loss_list",
    "default_loss_summarize",
    "target_name",
    "check_index",
    "batch_slice",
    "module_op",
    "rmodule_op",
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

    Example:
        >>> import torch
        >>> from optim.loss import ChannelActivation, TotalVariation
        >>> loss = ChannelActivation("mixed4a", 1) - 0.5 * TotalVariation("image")
        >>> loss.targets
        ['mixed4a', 'image']
        >>> acts = {"mixed4a": torch.ones(1, 2, 2, 2), "image": torch.zeros(1, 3, 4, 4)}
        >>> loss(acts).item()  # mean(1) - mean(0.5 * 0)
        1.0
    """

    @property
    @abstractmethod
    def targets(self) -> List[Target]:
        """The modules (or dotted module names) whose outputs this loss reads."""

    @property
    def target(self) -> Union[Target, List[Target]]:
        """captum's name: the one target of a single-target loss, the list of targets otherwise.

        :class:`BaseLoss` returns its target as given (a module, a name, or the list it was built with;
        for :class:`~optim.loss.FacetLoss` and :class:`~optim.loss.ActivationInterpolation`, whose second
        target is an attribute of its own, the first one); :class:`CompositeLoss` always returns the list.
        :attr:`targets` is always the full list.
        """
        targets = self.targets
        return targets[0] if len(targets) == 1 else targets

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

    def __round__(self, ndigits: Optional[int] = None) -> "CompositeLoss":
        """``round(loss)`` / ``round(loss, n)``: the loss rounded elementwise to ``n`` decimals (default 0).

        Rounding is piecewise constant, so its gradient is zero everywhere: use it to report or compare
        objective values, not as something to optimize.
        """
        decimals = 0 if ndigits is None else check_index(ndigits, "ndigits", negative=True)
        return CompositeLoss(
            lambda acts: torch.round(self(acts), decimals=decimals),
            self.targets,
            f"round({self!r})" if ndigits is None else f"round({self!r}, {decimals})",
        )


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

    @property
    def target(self) -> List[Target]:
        """captum's name for :attr:`targets` (always a list for a composite loss)."""
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


def _check_other(other: Any) -> None:
    if not isinstance(other, (Loss, int, float)) or isinstance(other, bool):
        raise TypeError(
            f"a loss combines with another Loss or a number (int/float), got {type(other).__name__}"
        )


def module_op(loss: Loss, other: Union[None, Loss, Number], math_op: Callable) -> CompositeLoss:
    """Apply ``math_op`` to a loss (captum.optim's functional form of the loss algebra).

    Args:
        loss: the loss on the left.
        other: ``None`` for a unary operation (``math_op(loss(acts))``, e.g. ``operator.neg``,
            ``torch.abs``), a number (elementwise: ``math_op(loss(acts), other)``) or another loss (both
            reduced to their means first: ``math_op(mean(loss(acts)), mean(other(acts)))``).
        math_op: a function of one (unary) or two tensors/numbers, e.g. ``operator.add``.

    Returns:
        A :class:`CompositeLoss` whose targets are the union of both sides'.

    Raises:
        TypeError: ``loss`` is not a Loss, ``other`` is neither None, a number nor a Loss, or ``math_op`` is
            not callable.

    Example:
        >>> import operator
        >>> from optim.loss import LayerActivation
        >>> acts = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([10.0])}
        >>> module_op(LayerActivation("a"), LayerActivation("b"), operator.sub)(acts).item()  # 2 - 10
        -8.0
        >>> module_op(LayerActivation("a"), 2, operator.mul)(acts).tolist()
        [2.0, 6.0]
        >>> module_op(LayerActivation("a"), None, operator.neg)(acts).tolist()
        [-1.0, -3.0]
    """
    if not isinstance(loss, Loss):
        raise TypeError(f"module_op applies to a Loss, got {type(loss).__name__}")
    if not callable(math_op):
        raise TypeError(f"math_op must be callable, got {type(math_op).__name__}")
    if other is None:
        name = getattr(math_op, "__name__", "op")
        return CompositeLoss(lambda acts: math_op(loss(acts)), loss.targets, f"{name}({loss!r})")
    _check_other(other)
    return _binary(loss, other, math_op, getattr(math_op, "__name__", "op"))


def rmodule_op(loss: Loss, other: Number, math_op: Callable) -> CompositeLoss:
    """The reflected form of :func:`module_op`: ``math_op(other, loss(acts))``, ``other`` a number.

    This is what ``2 / loss`` and ``2 ** loss`` build (elementwise).

    Args:
        loss: the loss on the right.
        other: the number on the left.
        math_op: a function of two arguments, e.g. ``operator.truediv``.

    Raises:
        TypeError: ``other`` is not a number (two losses go through :func:`module_op`).

    Example:
        >>> import operator
        >>> from optim.loss import LayerActivation
        >>> rmodule_op(LayerActivation("a"), 6, operator.truediv)({"a": torch.tensor([2.0, 3.0])}).tolist()
        [3.0, 2.0]
    """
    if not isinstance(loss, Loss):
        raise TypeError(f"rmodule_op applies to a Loss, got {type(loss).__name__}")
    if not callable(math_op):
        raise TypeError(f"math_op must be callable, got {type(math_op).__name__}")
    if isinstance(other, Loss) or isinstance(other, bool) or not isinstance(other, (int, float)):
        raise TypeError(
            f"rmodule_op takes a number on the left (use module_op for two losses), got {type(other).__name__}"
        )
    return _binary(other, loss, math_op, getattr(math_op, "__name__", "op"))


def sum_loss_list(
    loss_list: Sequence[Loss], to_scalar_fn: Callable[[torch.Tensor], torch.Tensor] = torch.mean
) -> CompositeLoss:
    """Sum many losses in one flat loop (no recursion, so hundreds of losses are fine).

    Args:
        loss_list: the losses.
        to_scalar_fn: reduces each loss to a scalar before summing.

    Returns:
        One loss whose targets are the union of all targets.

    Example:
        >>> import torch
        >>> from optim.loss import ChannelActivation
        >>> loss = sum_loss_list([ChannelActivation("fc", c, batch_index=i) for i, c in enumerate([2, 0])])
        >>> loss({"fc": torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])}).item()  # fc[0, 2] + fc[1, 0]
        5.0
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


def _where(target: Optional[Target]) -> str:
    if target is None:
        return "the activation"
    return f"layer {target!r}" if isinstance(target, str) else f"layer {type(target).__name__}"


def check_index(
    value: Any,
    name: str,
    *,
    size: Optional[int] = None,
    target: Optional[Target] = None,
    unit: str = "channels",
    negative: bool = False,
    stop: bool = False,
) -> int:
    """The one validator of every index a loss takes (channel, neuron position, batch).

    Without ``size`` it checks what is known when the loss is built: the type, and the sign unless
    ``negative``. With ``size`` (the length of the indexed dimension of the activation, known when the loss
    is called) it also checks the range and returns the index resolved to ``0..size - 1``.

    Args:
        value: the index.
        name: the argument's name, for the messages (``"channel_index"``, ``"x"``, ``"batch_index"``).
        size: the length of the dimension indexed, or ``None`` before the activation is known.
        target: the layer the index applies to, named in range errors.
        unit: what the dimension counts, for range errors (``"channels"``, ``"images"``, ``"rows"``, ...).
        negative: allow negative values with Python's meaning (``-1``: the last one), as ``batch_index``
            does; otherwise a negative value is refused.
        stop: the value is the exclusive end of a range (``[start, end]``): ``size`` itself is allowed.

    Returns:
        ``int(value)``, resolved against ``size`` (``-1 -> size - 1``) when ``size`` is given.

    Raises:
        TypeError: not an int (a bool, ``None``, a float, a string ...), naming the argument and the value.
        ValueError: negative where that is not allowed, or outside the dimension, naming the argument, the
            value, the layer and the valid range.

    Example:
        >>> check_index(3, "channel_index")
        3
        >>> check_index(-1, "batch_index", size=4, unit="images", negative=True)
        3
        >>> check_index(-1, "channel_index")
        Traceback (most recent call last):
        ...
        ValueError: channel_index must be >= 0, got -1
        >>> check_index(None, "channel_index")
        Traceback (most recent call last):
        ...
        TypeError: channel_index must be an int, got None (NoneType)
        >>> check_index(4, "channel_index", size=4, target="mixed4a")
        Traceback (most recent call last):
        ...
        ValueError: channel_index 4 is out of range for layer 'mixed4a', which has 4 channels (valid: 0..3)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < 0 and not negative:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if size is None:
        return value
    high = size if stop else size - 1
    low = -size if negative else 0
    if not low <= value <= high:
        raise ValueError(
            f"{name} {value} is out of range for {_where(target)}, which has {size} {unit} "
            f"(valid: {low}..{high})"
        )
    return value + size if value < 0 else value


def _check_batch_index(batch_index: BatchIndex) -> Optional[Union[int, Tuple[int, int]]]:
    """``batch_index`` as stored: ``None``, an int, or a ``(start, end)`` pair (checked for type only)."""
    if batch_index is None:
        return None
    if isinstance(batch_index, (list, tuple)):
        if len(batch_index) != 2:
            raise ValueError(
                f"batch_index must be an int or a [start, end] pair of ints, got {list(batch_index)!r} "
                f"({len(batch_index)} values)"
            )
        start = check_index(batch_index[0], "batch_index start", negative=True)
        end = check_index(batch_index[1], "batch_index end", negative=True)
        return start, end
    if isinstance(batch_index, bool) or not isinstance(batch_index, numbers.Integral):
        raise TypeError(
            f"batch_index must be None, an int or a [start, end] pair of ints, got {batch_index!r} "
            f"({type(batch_index).__name__})"
        )
    return check_index(batch_index, "batch_index", negative=True)


def batch_slice(batch_index: BatchIndex, batch_size: int, target: Optional[Target] = None) -> slice:
    """The images of a batch of ``batch_size`` that ``batch_index`` selects, as a slice (Python's meaning).

    Args:
        batch_index: ``None`` (all), an int (one image; ``-1`` is the last) or a ``[start, end]`` pair
            (images ``start`` to ``end - 1``; negative values count from the end, as in ``x[start:end]``).
        batch_size: the length of the batch.
        target: the layer, named in errors.

    Raises:
        ValueError: an index outside the batch, or a pair that selects no image.

    Example:
        >>> batch_slice(-1, 4)
        slice(3, 4, None)
        >>> batch_slice([1, -1], 4)
        slice(1, 3, None)
    """
    return _resolve_batch(_check_batch_index(batch_index), batch_size, target)


def _resolve_batch(
    normalized: Optional[Union[int, Tuple[int, int]]], batch_size: int, target: Optional[Target]
) -> slice:
    if normalized is None:
        return slice(None)
    if isinstance(normalized, int):
        start = check_index(normalized, "batch_index", size=batch_size, target=target, unit="images", negative=True)
        return slice(start, start + 1)
    start = check_index(
        normalized[0], "batch_index start", size=batch_size, target=target, unit="images", negative=True
    )
    end = check_index(
        normalized[1], "batch_index end", size=batch_size, target=target, unit="images", negative=True, stop=True
    )
    if end <= start:
        raise ValueError(
            f"batch_index {list(normalized)} selects no image of the batch of {batch_size} at {_where(target)} "
            f"(it resolves to [{start}, {end}]; end must come after start)"
        )
    return slice(start, end)


class BaseLoss(Loss):
    """A loss on one target, optionally restricted to part of the batch.

    Args:
        target: the module (or dotted module name) whose output is read, or a list of them for a loss that
            reads several layers (captum's ``BaseLoss([m1, m2])``; such a subclass reads each one with
            ``self._activation(activations, target=m)``).
        batch_index: keyword-only. ``None`` for the whole batch, an int for one image (negative counts from
            the end: ``-1`` is the last image), or a ``[start, end]`` pair for images ``start`` to
            ``end - 1`` (negative values as in ``x[start:end]``). Checked against the batch size when the
            loss is called (:func:`batch_slice`).
        layout: keyword-only. How the target's output is laid out: ``None`` infers it (4-D: NCHW, or NHWC
            when the module's widths say so; 3-D: tokens ``(N, L, D)`` with the prefix tokens and square grid
            inferred; see :mod:`optim.layouts`), or ``"NCHW"``, ``"NHWC"``, ``"NLD"``, ``"LND"`` or a
            :class:`~optim.layouts.Layout` (``Layout("NLD", prefix=1, grid=(14, 14))``). One layout serves
            every target of a multi-target loss. Every loss computes on the channels-first view
            (:func:`~optim.layouts.channels_first`): a channel is a hidden unit of a token layer, a position
            (``x``, ``y``) a patch token on its grid; the prefix tokens (a ViT's class token) are left out of
            that view and reached with ``token=`` where a loss offers it.

    Raises:
        TypeError: a target that is neither a module nor a name, a ``batch_index`` that is not an int or
            a pair of ints, or a ``layout`` that is neither ``None``, a name nor a ``Layout``.
        ValueError: a ``batch_index`` sequence that is not a pair, an unknown layout name; when called, a
            ``batch_index`` outside the batch or a layout that does not fit the activation.

    Example:
        >>> from optim.loss import ChannelActivation
        >>> tokens = torch.arange(5 * 3.0).reshape(1, 5, 3)  # (N, L, D): a class token + 2x2 patch tokens
        >>> ChannelActivation("block", 1)({"block": tokens}).tolist()  # hidden unit 1 of the 4 patch tokens
        [[[4.0, 7.0], [10.0, 13.0]]]
        >>> ChannelActivation("block", 1, layout="NCHW")({"block": tokens}).tolist()  # token 1, read as NCL
        [[3.0, 4.0, 5.0]]
    """

    def __init__(
        self, target: Union[Target, Sequence[Target]], *, batch_index: BatchIndex = None, layout: LayoutArg = None
    ) -> None:
        self.target = target
        self.batch_index = _check_batch_index(batch_index)
        self.layout = check_layout(layout)

    @property
    def target(self) -> Union[Target, List[Target]]:
        """The target as given: one module or name, or the list a multi-target loss was built with."""
        return self._target

    @target.setter
    def target(self, value: Union[Target, Sequence[Target]]) -> None:
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("a loss needs at least one target, got an empty list")
            for t in value:
                if not isinstance(t, (nn.Module, str)):
                    raise TypeError(
                        f"a loss target must be an nn.Module or a dotted module name, got {type(t).__name__}"
                    )
            value = list(value)
        elif not isinstance(value, (nn.Module, str)):
            raise TypeError(f"a loss target must be an nn.Module or a dotted module name, got {type(value).__name__}")
        self._target = value

    @property
    def targets(self) -> List[Target]:
        return _unique(self._target) if isinstance(self._target, list) else [self._target]

    def _activation(self, activations: Activations, target: Optional[Target] = None) -> torch.Tensor:
        """The recorded output of ``target`` (default: this loss's target) in its channels-first view
        (:func:`~optim.layouts.channels_first` with this loss's ``layout``), cut to ``batch_index``."""
        return self._read(activations, target)[0]

    def _read(
        self, activations: Activations, target: Optional[Target] = None, *, keep_prefix: bool = False
    ) -> Tuple[torch.Tensor, Layout]:
        """The one place a loss reads an activation: ``(channels-first view cut to batch_index, its layout)``.

        ``keep_prefix=True`` gives a token layer as ``(N, D, L)`` with every token (prefix tokens first).
        """
        target = self.target if target is None else target
        if isinstance(target, list):
            raise ValueError(
                f"{type(self).__name__} has several targets ({[target_name(t) for t in target]}); read each "
                "one with self._activation(activations, target=...)"
            )
        raw = activations[target]
        layout = self._layout_of(raw, activations, target)
        act = channels_first(raw, layout, keep_prefix=keep_prefix)
        if self.batch_index is not None:
            act = act[self._batch_slice(act.shape[0], target)]
        return act, layout

    def _layout_of(self, raw: torch.Tensor, activations: Activations, target: Target) -> Layout:
        """The complete layout of ``target``'s recorded output ``raw`` (this loss's ``layout``, or inferred)."""
        module = target if isinstance(target, nn.Module) else None
        if module is None and hasattr(activations, "module_of"):
            module = activations.module_of(target)
        model = getattr(activations, "model", None)  # an ActivationMap's model: the module's ancestors
        memo = getattr(activations, "_layouts", None)
        # the module is part of the key: a block and its last child (or two names of one output) can record the same
        # tensor object, and their widths may infer different layouts for it
        key = (id(raw), id(module) if module is not None else None, self.layout)
        if memo is not None and key in memo:
            return memo[key]
        layout = infer_layout(raw, self.layout, module=module, model=model, where=_where(target))
        if memo is not None:
            memo[key] = layout
        return layout

    def _batch_slice(self, batch_size: int, target: Optional[Target] = None) -> slice:
        """The slice of a batch of ``batch_size`` this loss reads (``batch_index`` resolved)."""
        return _resolve_batch(self.batch_index, batch_size, self.target if target is None else target)

    def _extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        target = self.target
        args = [f"[{', '.join(target_name(t) for t in target)}]" if isinstance(target, list) else target_name(target)]
        extra = self._extra_repr()
        if extra:
            args.append(extra)
        if self.batch_index is not None:
            index = self.batch_index
            args.append(f"batch_index={index if isinstance(index, int) else list(index)}")
        if getattr(self, "layout", None) is not None:
            args.append(f"layout={self.layout.name!r}" if self.layout == Layout(self.layout.name)
                        else f"layout={self.layout!r}")
        return f"{type(self).__name__}({', '.join(args)})"
