"""Objectives that read activations directly: layers, channels, neurons, DeepDream and interpolation."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn as nn

from ..layouts import Layout, LayoutArg, unit_name
from .base import Activations, BaseLoss, BatchIndex, Target, _where, check_index, target_name

__all__ = [
    "LayerActivation",
    "ChannelActivation",
    "ClassLogit",
    "NeuronActivation",
    "DeepDream",
    "ActivationInterpolation",
    "check_channel",
    "as_map",
    "neuron_position",
    "get_neuron_pos",
]


def check_channel(
    activation: torch.Tensor, channel_index: int, target: Target, layout: Optional[Layout] = None
) -> int:
    """Check ``channel_index`` against the channels (dim 1) of a channels-first view with :func:`check_index`.

    Args:
        activation: the channels-first view (:func:`optim.layouts.channels_first`).
        channel_index: the channel (a hidden unit of a token layer).
        target: the layer, named in errors.
        layout: the layer's layout; range errors name the units as :func:`optim.layouts.unit_name` does.

    Raises:
        ValueError: an activation with no channel dimension, or an index outside it (naming the layer, the
            value and the valid range).

    Example:
        >>> check_channel(torch.zeros(1, 192, 14, 14), 300, "blocks.1", Layout("NLD"))
        Traceback (most recent call last):
        ...
        ValueError: channel_index 300 is out of range for layer 'blocks.1', which has 192 hidden units (valid: 0..191)
    """
    if activation.dim() < 2:
        raise ValueError(
            f"{target_name(target)} outputs a tensor of shape {tuple(activation.shape)}, which has no channel dim"
        )
    unit = unit_name(activation, layout)
    return check_index(channel_index, "channel_index", size=activation.shape[1], target=target, unit=unit)


def as_map(activation: torch.Tensor) -> torch.Tensor:
    """A channels-first view with one spatial dim ``(N, C, L)`` as a one-row map ``(N, C, 1, L)``.

    Positions of a token sequence without a grid are then columns ``x`` of row ``y = 0``. Other ranks are
    returned as they are.

    Example:
        >>> as_map(torch.zeros(2, 3, 5)).shape
        torch.Size([2, 3, 1, 5])
    """
    return activation.unsqueeze(2) if activation.dim() == 3 else activation


def neuron_position(activation: torch.Tensor, x: Optional[int], y: Optional[int], target: Target) -> Tuple[int, int]:
    """The (x, y) = (column, row) of a neuron; ``None`` means the centre, as in Lucent (Lucid's NHWC code reads
    ``acts[:, x, y]``: its x is the row).

    Raises:
        ValueError: a non-4-D activation, or a position outside its spatial size (:func:`check_index`).
    """
    if activation.dim() != 4:
        raise ValueError(
            f"a neuron position needs a 4-D (N, C, H, W) activation, {target_name(target)} gives "
            f"shape {tuple(activation.shape)}"
        )
    height, width = activation.shape[2:]
    col = width // 2 if x is None else check_index(x, "x", size=width, target=target, unit="columns")
    row = height // 2 if y is None else check_index(y, "y", size=height, target=target, unit="rows")
    return col, row


def get_neuron_pos(height: int, width: int, x: Optional[int] = None, y: Optional[int] = None) -> Tuple[int, int]:
    """The ``(x, y)`` position of a neuron in an ``height x width`` map; ``None`` means the centre (captum's name).

    ``x`` is the column (it indexes the width, dim 3 of NCHW) and ``y`` the row (the height, dim 2), as in
    Lucent and every neuron loss of optim (Lucid's NHWC code indexes rows with ``x``). The centre of an even side is the cell right of / below the middle
    (``width // 2``, ``height // 2``).

    Args:
        height: rows of the map.
        width: columns of the map.
        x: the column, or ``None`` for the centre.
        y: the row, or ``None`` for the centre.

    Returns:
        ``(x, y)``; index the activation as ``act[:, c, y, x]``.

    Raises:
        TypeError / ValueError: a position that is not an int inside the map (:func:`check_index`).

    Example:
        >>> get_neuron_pos(5, 8)
        (4, 2)
        >>> get_neuron_pos(5, 8, x=7, y=0)
        (7, 0)
        >>> get_neuron_pos(5, 8, x=8)
        Traceback (most recent call last):
        ...
        ValueError: x 8 is out of range for the activation, which has 8 columns (valid: 0..7)
    """
    height = check_index(height, "height")
    width = check_index(width, "width")
    col = width // 2 if x is None else check_index(x, "x", size=width, unit="columns")
    row = height // 2 if y is None else check_index(y, "y", size=height, unit="rows")
    return col, row


def _optional_index(value: Optional[int], name: str) -> Optional[int]:
    """``None`` (the documented 'all' / 'centre'), or an index checked by :func:`check_index`."""
    return None if value is None else check_index(value, name)


def _check_token(token: Optional[int], x: Optional[int], y: Optional[int]) -> Optional[int]:
    token = _optional_index(token, "token")
    if token is not None and (x is not None or y is not None):
        raise ValueError(f"give a position as x/y (on the grid) or as token= (any token), not both: "
                         f"token={token}, x={x}, y={y}")
    return token


def _neuron_view(
    loss: BaseLoss, activations: Activations, x: Optional[int], y: Optional[int], token: Optional[int] = None
) -> Tuple[torch.Tensor, Layout]:
    """Every channel of ``loss``'s target at one position, as ``(N, C, 1, 1)``, and the layer's layout.

    The position is ``(x, y)`` on the channels-first view (``None``: the centre; a token sequence without a
    grid is one row), or, for a token layer, ``token``: an index into every token, prefix tokens included
    (``token=0`` is a ViT's class token).

    Raises:
        ValueError: a position outside the layer, or ``token`` on a layer that is not a token layout.
    """
    if token is not None:
        act, layout = loss._read(activations, keep_prefix=True)
        if not layout.is_tokens:
            raise ValueError(
                f"token={token} needs a token layer (N, L, D); {_where(loss.target)} is read as {layout.name} "
                f"(give layout='NLD' if it holds tokens)"
            )
        index = check_index(token, "token", size=act.shape[2], target=loss.target, unit="tokens")
        return act[:, :, index : index + 1].unsqueeze(-1), layout
    act, layout = loss._read(activations)
    act = as_map(act)
    col, row = neuron_position(act, x, y, loss.target)
    return act[:, :, row : row + 1, col : col + 1], layout


class LayerActivation(BaseLoss):
    """The whole activation of a layer (maximizing it raises every unit), in its channels-first view.

    Args:
        target: the layer.
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).

    Example:
        >>> acts = {"mixed4a": torch.arange(4.0).reshape(2, 2, 1, 1)}
        >>> LayerActivation("mixed4a", batch_index=1)(acts).flatten().tolist()
        [2.0, 3.0]
    """

    def __call__(self, activations: Activations) -> torch.Tensor:
        return self._activation(activations)


class ChannelActivation(BaseLoss):
    """The activation of one channel, over all positions (2-D outputs such as logits work too).

    On a token layer ``(N, L, D)`` a channel is a hidden unit (an index into ``D``) over the patch tokens.

    Args:
        target: the layer.
        channel_index: the channel (hidden unit), an int ``>= 0``.
        batch_index: keyword-only; which images of the batch the loss reads (see :class:`BaseLoss`).
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).

    Raises:
        TypeError: a ``channel_index`` that is not an int (``None``, a bool, a float ...).
        ValueError: a negative ``channel_index``; when called, one the layer does not have (naming the layer
            and the valid range).

    Example:
        >>> acts = {"mixed4a": torch.arange(8.0).reshape(2, 4, 1, 1)}
        >>> ChannelActivation("mixed4a", 3)(acts).flatten().tolist()
        [3.0, 7.0]
        >>> ChannelActivation("mixed4a", None)
        Traceback (most recent call last):
        ...
        TypeError: channel_index must be an int, got None (NoneType)
    """

    def __init__(
        self, target: Target, channel_index: int, *, batch_index: BatchIndex = None, layout: LayoutArg = None
    ) -> None:
        super().__init__(target, batch_index=batch_index, layout=layout)
        self.channel_index = check_index(channel_index, "channel_index")

    def __call__(self, activations: Activations) -> torch.Tensor:
        act, layout = self._read(activations)
        return act[:, check_channel(act, self.channel_index, self.target, layout)]

    def _extra_repr(self) -> str:
        return str(self.channel_index)


class ClassLogit(BaseLoss):
    """A class's logit: output ``class_index`` of a classifier's ``[batch, classes]`` output (Lucid's
    ``objectives.class_logit``), the objective of a class visualization.

    :class:`ChannelActivation` reads a channel of any layer, so on a network without a classification head it would
    render a feature-map channel under a class's name. This objective refuses an output that is not
    ``[batch, classes]`` (vgg16's convolutional features, a timm model built with ``global_pool=""``, a ViT's tokens;
    a convolutional head's ``[batch, classes, 1, 1]`` is read as ``[batch, classes]``) and, given ``num_classes``, one
    of another width: pass the length of the label list a class name was read from, so that a model with other
    classes (a Places365 network, a fine-tuned head, a pooled backbone with ``num_classes=0``) is refused rather than
    optimized at the same index. A 2-D output without ``num_classes`` cannot be told apart from pooled features.

    Args:
        target: the module whose output holds the logits (usually the model itself; a ``ModelOutput`` or dict
            output is read at its ``logits``, as every loss reads one).
        class_index: the output index of the class, an int ``>= 0`` (:func:`~optim.models.class_index` turns a
            class name into one).
        batch_index: keyword-only; which images of the batch the loss reads (see :class:`BaseLoss`).
        num_classes: keyword-only; the number of classes the output must have (``None``: any).

    Raises:
        TypeError: a ``class_index`` or ``num_classes`` that is not an int.
        ValueError: a negative ``class_index`` or ``num_classes`` below 1; when called, an output that is not
            ``[batch, classes]`` or not ``num_classes`` wide (naming its shape), or an index it does not have.

    Example:
        >>> logits = {"fc": torch.tensor([[0.5, 2.0, -1.0], [1.0, 0.0, 3.0]])}
        >>> ClassLogit("fc", 2)(logits).tolist()
        [-1.0, 3.0]
        >>> ClassLogit("features", 2)({"features": torch.zeros(1, 512, 7, 7)})
        Traceback (most recent call last):
        ...
        ValueError: ClassLogit needs class logits, a [batch, classes] output, but the output of 'features' has shape (1, 512, 7, 7): a network without a classification head, or logits that are not its first output; read the module that outputs the logits instead (target=)
        >>> ClassLogit("fc", 2, num_classes=1000)(logits)
        Traceback (most recent call last):
        ...
        ValueError: the output of 'fc' has 3 classes, not num_classes=1000 (the number of class names the class was read from): the names are not this model's classes; give the class by its index (or, in Python, the model's own names: labels=)
    """

    def __init__(
        self, target: Target, class_index: int, *, batch_index: BatchIndex = None, num_classes: Optional[int] = None
    ) -> None:
        super().__init__(target, batch_index=batch_index)
        self.class_index = check_index(class_index, "class_index")
        if num_classes is not None and check_index(num_classes, "num_classes") < 1:
            raise ValueError(f"num_classes must be an int >= 1 or None, got {num_classes!r}")
        self.num_classes = None if num_classes is None else int(num_classes)

    def __call__(self, activations: Activations) -> torch.Tensor:
        raw = activations[self.target]
        # a convolutional head's [batch, classes, 1, 1] is read as [batch, classes]
        if isinstance(raw, torch.Tensor) and (raw.dim() < 2 or any(n != 1 for n in raw.shape[2:])):
            raise ValueError(
                f"ClassLogit needs class logits, a [batch, classes] output, but {self._where()} has shape "
                f"{tuple(raw.shape)}: "
                "a network without a classification head, or logits that are not its first output; read the module "
                "that outputs the logits instead (target=)"
            )
        act = self._read(activations)[0].flatten(1)
        classes = act.shape[1]
        if self.num_classes is not None and classes != self.num_classes:
            raise ValueError(
                f"{self._where()} has {classes} classes, not num_classes={self.num_classes} (the number of class "
                "names the class was read from): the names are not this model's classes; give the class by its index "
                "(or, in Python, the model's own names: labels=)"
            )
        if self.class_index >= classes:
            raise ValueError(f"class_index {self.class_index} is out of range: {self._where()} has {classes} classes "
                             f"(valid: 0..{classes - 1})")
        return act[:, self.class_index]

    def _where(self) -> str:  # for errors only: built when one is raised, not every step
        return f"the output of {self.target!r}" if isinstance(self.target, str) else (
            f"the output of {type(self.target).__name__}")

    def _extra_repr(self) -> str:
        return str(self.class_index) + ("" if self.num_classes is None else f", num_classes={self.num_classes}")


class NeuronActivation(BaseLoss):
    """The activation of one neuron: one channel at one position (the centre by default).

    On a token layer a neuron is one hidden unit of one token: ``x``/``y`` address a patch token on the
    token grid (a sequence without a grid is one row: ``x`` is the token), ``token`` any token by its index
    in the sequence, prefix tokens included (``token=0``: a ViT's class token).

    Args:
        target: the layer.
        channel_index: the channel (hidden unit).
        x: keyword-only; the column; ``None`` for the centre.
        y: keyword-only; the row; ``None`` for the centre.
        token: keyword-only; token layers only: the token's index in the sequence (instead of ``x``/``y``).
        batch_index: keyword-only; which images of the batch the loss reads (see :class:`BaseLoss`).
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).

    Raises:
        TypeError: a ``channel_index``, ``x``, ``y`` or ``token`` that is not an int (``None`` only for the
            position).
        ValueError: a negative index, or ``token`` together with ``x``/``y``; when called, one outside the
            activation, or ``token`` on a layer without tokens.

    Example:
        >>> acts = {"mixed4a": torch.arange(18.0).reshape(1, 2, 3, 3)}
        >>> NeuronActivation("mixed4a", 1)(acts).item()  # the centre: row 1, column 1
        13.0
        >>> NeuronActivation("mixed4a", 1, x=2, y=0)(acts).item()
        11.0
        >>> tokens = {"block": torch.arange(10.0).reshape(1, 5, 2)}  # a class token + 2x2 grid, 2 hidden units
        >>> NeuronActivation("block", 1, x=1, y=0)(tokens).item(), NeuronActivation("block", 1, token=0)(tokens).item()
        (5.0, 1.0)
    """

    def __init__(
        self,
        target: Target,
        channel_index: int,
        *,
        x: Optional[int] = None,
        y: Optional[int] = None,
        token: Optional[int] = None,
        batch_index: BatchIndex = None,
        layout: LayoutArg = None,
    ) -> None:
        super().__init__(target, batch_index=batch_index, layout=layout)
        self.channel_index = check_index(channel_index, "channel_index")
        self.x = _optional_index(x, "x")
        self.y = _optional_index(y, "y")
        self.token = _check_token(token, self.x, self.y)

    def __call__(self, activations: Activations) -> torch.Tensor:
        neuron, layout = _neuron_view(self, activations, self.x, self.y, self.token)
        return neuron[:, check_channel(neuron, self.channel_index, self.target, layout)]

    def _extra_repr(self) -> str:
        pos = "" if self.x is None and self.y is None else f", x={self.x}, y={self.y}"
        if self.token is not None:
            pos = f", token={self.token}"
        return f"{self.channel_index}{pos}"


class DeepDream(BaseLoss):
    """DeepDream (Mordvintsev et al. 2015): the squared activation of a layer.

    Args:
        target: the layer.
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).

    Example:
        >>> DeepDream("mixed4c")({"mixed4c": torch.tensor([[-2.0, 3.0]])}).tolist()
        [[4.0, 9.0]]
    """

    def __call__(self, activations: Activations) -> torch.Tensor:
        return self._activation(activations) ** 2


class ActivationInterpolation(BaseLoss):
    """Interpolate between two channels across the batch (Lucid's ``channel_interpolate``).

    Image ``i`` of ``n`` maximizes ``(1 - w_i) * channel_one + w_i * channel_two`` with ``w_i = i / (n - 1)``,
    so the first image shows channel one, the last channel two and the ones between blend them.

    Args:
        target_one: the first layer.
        channel_index_one: its channel, or ``None`` for the whole layer.
        target_two: the second layer.
        channel_index_two: its channel, or ``None`` for the whole layer.
        layout: keyword-only; the layers' layout (``None``: inferred for each, see :class:`BaseLoss`).

    captum's keyword names ``target1``, ``channel_index1``, ``target2`` and ``channel_index2`` are accepted
    too (``ActivationInterpolation(target1=m, channel_index1=3, target2=m, channel_index2=7)``).

    Example:
        >>> acts = {"mixed4a": torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])}
        >>> ActivationInterpolation("mixed4a", 0, "mixed4a", 1)(acts).item()  # 1 + 0.5 * 1 + 1
        2.5
    """

    def __init__(
        self,
        target_one: Optional[Target] = None,
        channel_index_one: Optional[int] = None,
        target_two: Optional[Target] = None,
        channel_index_two: Optional[int] = None,
        *,
        layout: LayoutArg = None,
        **captum_names: Any,
    ) -> None:
        aliases = {"target1": "target_one", "channel_index1": "channel_index_one",
                   "target2": "target_two", "channel_index2": "channel_index_two"}
        given = {"target_one": target_one, "channel_index_one": channel_index_one,
                 "target_two": target_two, "channel_index_two": channel_index_two}
        for alias, value in captum_names.items():
            if alias not in aliases:
                raise TypeError(f"ActivationInterpolation got an unexpected keyword argument {alias!r}")
            if given[aliases[alias]] is not None:
                raise TypeError(f"ActivationInterpolation got both {alias!r} and {aliases[alias]!r}")
            given[aliases[alias]] = value
        target_one, target_two = given["target_one"], given["target_two"]
        channel_index_one, channel_index_two = given["channel_index_one"], given["channel_index_two"]
        for name, value in (("target_one", target_one), ("target_two", target_two)):
            if value is None:
                raise TypeError(f"ActivationInterpolation needs {name} (a module or a dotted module name)")
        super().__init__(target_one, layout=layout)
        if not isinstance(target_two, (nn.Module, str)):
            raise TypeError(
                f"a loss target must be an nn.Module or a dotted module name, got {type(target_two).__name__}"
            )
        self.target_two = target_two
        self.channel_index_one = _optional_index(channel_index_one, "channel_index_one")
        self.channel_index_two = _optional_index(channel_index_two, "channel_index_two")

    @property
    def targets(self) -> list:
        return [self.target, self.target_two] if self.target is not self.target_two else [self.target]

    def _channel_means(self, activations: Activations, target: Target, channel: Optional[int]) -> torch.Tensor:
        act, layout = self._read(activations, target)
        if channel is not None:
            act = act[:, check_channel(act, channel, target, layout)]
        return act.reshape(act.shape[0], -1).mean(dim=1)

    def __call__(self, activations: Activations) -> torch.Tensor:
        one = self._channel_means(activations, self.target, self.channel_index_one)
        two = self._channel_means(activations, self.target_two, self.channel_index_two)
        n = one.shape[0]
        weights = torch.linspace(0.0, 1.0, n, device=one.device, dtype=one.dtype) if n > 1 else one.new_zeros(1)
        return ((1 - weights) * one + weights * two).sum()

    def _extra_repr(self) -> str:
        return f"{self.channel_index_one}, {target_name(self.target_two)}, {self.channel_index_two}"
