"""Objectives along directions in activation space (Lucid's direction objectives, CLIP facets)."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layouts import Layout, LayoutArg, channels_first, unit_name
from .activation import (
    _check_token,
    _neuron_view,
    _optional_index,
    as_map,
    check_channel,
    neuron_position,
)
from .base import Activations, BaseLoss, BatchIndex, Target, check_index, target_name

__all__ = [
    "dot_cossim",
    "Direction",
    "NeuronDirection",
    "AngledNeuronDirection",
    "TensorDirection",
    "ActivationWeights",
    "VectorLoss",
    "FacetLoss",
]


def dot_cossim(x: torch.Tensor, y: torch.Tensor, cossim_pow: float = 0.0, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Dot product of ``x`` and ``y`` along ``dim``, weighted by their cosine similarity to a power.

    ``cossim_pow = 0`` gives the plain dot product; larger powers favour the direction over the magnitude
    (the cosine is clamped below at 0.1, as in Lucid).
    """
    dot = (x * y).sum(dim)
    if cossim_pow == 0:
        return dot
    cossim = F.cosine_similarity(x, y, dim=dim, eps=eps).clamp(min=0.1)
    return dot * cossim**cossim_pow


def _as_direction(vec: torch.Tensor, name: str = "vec") -> torch.Tensor:
    if not isinstance(vec, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(vec).__name__}")
    return vec.detach()


def _check_length(vec: torch.Tensor, act: torch.Tensor, target: Target, layout: Optional[Layout] = None,
                  what: str = "the direction", count: Optional[int] = None) -> None:
    """A direction (or ``what``) needs one value per unit of ``act`` (a channels-first view); ``count``: how
    many it gives (default: all its values)."""
    given = vec.numel() if count is None else count
    if given != act.shape[1]:
        raise ValueError(f"{what} has {given} values but {target_name(target)} has {act.shape[1]} "
                         f"{unit_name(act, layout)}")


class Direction(BaseLoss):
    """Move every position's activation along a direction ``vec`` in channel space.

    On a token layer ``(N, L, D)`` the direction has one value per hidden unit and is followed at every
    patch token (``Direction(block, torch.randn(768))`` on a ViT-B/16 block).

    Args:
        target: the layer.
        vec: a direction with one value per channel (hidden unit).
        cossim_pow: weight by cosine similarity to this power (0: plain dot product).
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).

    Example:
        >>> acts = {"mixed4a": torch.tensor([[1.0, 2.0]])}
        >>> Direction("mixed4a", torch.tensor([3.0, -1.0]))(acts).tolist()
        [1.0]
        >>> tokens = {"block": torch.arange(10.0).reshape(1, 5, 2)}  # a class token + a 2x2 grid, 2 hidden units
        >>> Direction("block", torch.tensor([1.0, -1.0]))(tokens).tolist()  # unit 0 - unit 1 at each patch token
        [[[-1.0, -1.0], [-1.0, -1.0]]]
    """

    def __init__(
        self, target: Target, vec: torch.Tensor, *, cossim_pow: float = 0.0, batch_index: BatchIndex = None,
        layout: LayoutArg = None,
    ) -> None:
        super().__init__(target, batch_index=batch_index, layout=layout)
        self.vec = _as_direction(vec).reshape(1, -1)
        self.cossim_pow = float(cossim_pow)

    def __call__(self, activations: Activations) -> torch.Tensor:
        act, layout = self._read(activations)
        _check_length(self.vec, act, self.target, layout)
        vec = self.vec.to(act.device, act.dtype).reshape((1, -1) + (1,) * (act.dim() - 2))
        return dot_cossim(vec, act, self.cossim_pow)


class NeuronDirection(BaseLoss):
    """A direction at one position (the centre by default), optionally of one channel's value.

    Args:
        target: the layer.
        vec: a direction with one value per channel.
        x: the column; ``None`` for the centre.
        y: the row; ``None`` for the centre.
        token: token layers only: the token's index in the sequence, prefix tokens included (``0``: a ViT's
            class token), instead of ``x``/``y``.
        channel_index: restrict the dot product to one channel.
        cossim_pow: weight by cosine similarity to this power.
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).
    """

    def __init__(
        self,
        target: Target,
        vec: torch.Tensor,
        *,
        x: Optional[int] = None,
        y: Optional[int] = None,
        token: Optional[int] = None,
        channel_index: Optional[int] = None,
        cossim_pow: float = 0.0,
        batch_index: BatchIndex = None,
        layout: LayoutArg = None,
    ) -> None:
        super().__init__(target, batch_index=batch_index, layout=layout)
        self.vec = _as_direction(vec).reshape(1, -1, 1, 1)
        self.x, self.y = _optional_index(x, "x"), _optional_index(y, "y")
        self.token = _check_token(token, self.x, self.y)
        self.channel_index = _optional_index(channel_index, "channel_index")
        self.cossim_pow = float(cossim_pow)

    def __call__(self, activations: Activations) -> torch.Tensor:
        act, layout = _neuron_view(self, activations, self.x, self.y, self.token)
        vec = self.vec.to(act.device, act.dtype)
        _check_length(vec, act, self.target, layout)
        if self.channel_index is not None:
            channel = check_channel(act, self.channel_index, self.target, layout)
            act = act[:, channel : channel + 1]
            vec = vec[:, channel : channel + 1]
        return dot_cossim(vec, act, self.cossim_pow)


class AngledNeuronDirection(BaseLoss):
    """A neuron direction that rewards the angle to ``vec`` (Goh et al. 2021, multimodal neurons).

    Args:
        target: the layer.
        vec: a direction with one value per channel.
        vec_whitened: an optional whitening matrix ``[C, C]`` applied to ``vec``.
        cossim_pow: the power of the cosine weight; 0 returns the raw product.
        x: the column; ``None`` for the centre.
        y: the row; ``None`` for the centre.
        token: token layers only: the token's index in the sequence, prefix tokens included (``0``: a ViT's
            class token), instead of ``x``/``y``.
        eps: keeps the norm away from zero.
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).
    """

    def __init__(
        self,
        target: Target,
        vec: torch.Tensor,
        *,
        vec_whitened: Optional[torch.Tensor] = None,
        cossim_pow: float = 4.0,
        x: Optional[int] = None,
        y: Optional[int] = None,
        token: Optional[int] = None,
        eps: float = 1e-4,
        batch_index: BatchIndex = None,
        layout: LayoutArg = None,
    ) -> None:
        super().__init__(target, batch_index=batch_index, layout=layout)
        vec = _as_direction(vec).reshape(1, -1)
        self.vec = vec @ _as_direction(vec_whitened, "vec_whitened") if vec_whitened is not None else vec
        self.cossim_pow = float(cossim_pow)
        self.x, self.y = _optional_index(x, "x"), _optional_index(y, "y")
        self.token = _check_token(token, self.x, self.y)
        self.eps = float(eps)

    def __call__(self, activations: Activations) -> torch.Tensor:
        act, layout = self._read(activations)
        _check_length(self.vec, act, self.target, layout)  # on the layer's view, which names its units
        if act.dim() > 2 or self.token is not None or self.x is not None or self.y is not None:
            # a position on (N, C) has nothing to index: _neuron_view raises instead of reading the whole vector
            act = _neuron_view(self, activations, self.x, self.y, self.token)[0][:, :, 0, 0]
        vec = self.vec.to(act.device, act.dtype)
        if self.cossim_pow == 0:
            return act * vec
        dot = (act * vec).mean()
        cossim = dot / (self.eps + act.pow(2).sum().sqrt())
        return dot * cossim.clamp(min=0.1) ** self.cossim_pow


class TensorDirection(BaseLoss):
    """A spatial direction: a ``[1, C, H, W]`` pattern matched against the centre of the activation.

    Args:
        target: the layer.
        vec: the pattern, at most the activation's spatial size.
        cossim_pow: weight by cosine similarity to this power.
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).
    """

    def __init__(
        self, target: Target, vec: torch.Tensor, *, cossim_pow: float = 0.0, batch_index: BatchIndex = None,
        layout: LayoutArg = None,
    ) -> None:
        super().__init__(target, batch_index=batch_index, layout=layout)
        vec = _as_direction(vec)
        if vec.dim() != 4:
            raise ValueError(f"TensorDirection needs a [1, C, H, W] tensor, got shape {tuple(vec.shape)}")
        self.vec = vec
        self.cossim_pow = float(cossim_pow)

    def __call__(self, activations: Activations) -> torch.Tensor:
        act, layout = self._read(activations)
        act = as_map(act)
        if act.dim() != 4:
            raise ValueError(f"TensorDirection needs a layer with positions, {target_name(self.target)} gives "
                             f"shape {tuple(act.shape)}")
        _, channels, vh, vw = self.vec.shape
        _check_length(self.vec[0, :, 0, 0], act, self.target, layout)
        height, width = act.shape[2:]
        if vh > height or vw > width:
            raise ValueError(
                f"the direction's spatial size {(vh, vw)} exceeds {target_name(self.target)}'s {(height, width)}"
            )
        top, left = (height - vh) // 2, (width - vw) // 2
        act = act[:, :, top : top + vh, left : left + vw]
        return dot_cossim(self.vec.to(act.device, act.dtype), act, self.cossim_pow)


class ActivationWeights(BaseLoss):
    """Activations weighted per channel, over the whole layer or a window at one position.

    Args:
        target: the layer.
        weights: one weight per channel.
        neuron: restrict to a window at ``(x, y)``; ``x``, ``y``, ``wx`` and ``wy`` are refused without it.
        x: the window's column (``None``: the centre).
        y: the window's row (``None``: the centre).
        wx: the window's width.
        wy: the window's height.
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).
    """

    def __init__(
        self,
        target: Target,
        weights: torch.Tensor,
        *,
        neuron: bool = False,
        x: Optional[int] = None,
        y: Optional[int] = None,
        wx: int = 1,
        wy: int = 1,
        batch_index: BatchIndex = None,
        layout: LayoutArg = None,
    ) -> None:
        super().__init__(target, batch_index=batch_index, layout=layout)
        self.weights = _as_direction(weights, "weights").reshape(-1)
        self.neuron = bool(neuron)
        self.x, self.y = _optional_index(x, "x"), _optional_index(y, "y")
        for name, size in (("wx", wx), ("wy", wy)):
            if check_index(size, name) < 1:
                raise ValueError(f"{name} (the window's size) must be >= 1, got {size}")
        self.wx, self.wy = int(wx), int(wy)
        if not self.neuron:
            given = {"x": self.x, "y": self.y, "wx": None if self.wx == 1 else self.wx,
                     "wy": None if self.wy == 1 else self.wy}
            window = ", ".join(f"{k}={v}" for k, v in given.items() if v is not None)
            if window:
                raise ValueError(
                    f"ActivationWeights got a window ({window}) but neuron=False, which weights the whole layer; "
                    "give neuron=True to weight the window only, or leave x, y, wx and wy out"
                )

    def __call__(self, activations: Activations) -> torch.Tensor:
        act, layout = self._read(activations)
        _check_length(self.weights, act, self.target, layout)
        if self.neuron:
            act = as_map(act)
            col, row = neuron_position(act, self.x, self.y, self.target)
            height, width = act.shape[2:]
            if col + self.wx > width or row + self.wy > height:
                raise ValueError(
                    f"the window x={col}, y={row}, wx={self.wx}, wy={self.wy} does not fit in "
                    f"{target_name(self.target)}'s spatial size (height={height}, width={width})"
                )
            act = act[:, :, row : row + self.wy, col : col + self.wx]
        weights = self.weights.to(act.device, act.dtype).reshape((1, -1) + (1,) * (act.dim() - 2))
        return act * weights


def channel_projection(
    activations: torch.Tensor,
    vec: torch.Tensor,
    activation_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = F.relu,
) -> torch.Tensor:
    """Apply ``activation_fn`` to channels-first activations, project them on ``vec`` and average space.

    The non-linearity acts on the activations before the projection, as in captum's ``VectorLoss`` and
    Goh et al. 2021 (``mean(relu(x) @ vec)``), so a negative activation never counts against a negative
    entry of ``vec``.

    Args:
        activations: ``[N, C]`` or ``[N, C, *spatial]``.
        vec: ``[C]`` or ``[C, K]``.
        activation_fn: applied elementwise to ``activations`` first; ``None`` for none.

    Returns:
        A tensor of shape ``[N]`` (or ``[N, K]``).

    Example:
        >>> channel_projection(torch.tensor([[-1.0, 2.0]]), torch.tensor([1.0, 1.0]))
        tensor([2.])
        >>> channel_projection(torch.tensor([[-1.0, 2.0]]), torch.tensor([1.0, 1.0]), activation_fn=None)
        tensor([1.])
    """
    if activation_fn is not None:
        activations = activation_fn(activations)
    x = activations.movedim(1, -1) if activations.dim() > 2 else activations
    x = x @ vec.to(x.device, x.dtype)
    if activations.dim() > 2:
        x = x.mean(dim=tuple(range(1, activations.dim() - 1)))
    return x


class VectorLoss(BaseLoss):
    """The activation passed through ``activation_fn``, projected on a vector and averaged over space.

    Args:
        target: the layer.
        vec: a vector with one value per channel.
        activation_fn: keyword-only; applied to the activations before the projection (ReLU by default, as
            in captum and Goh et al. 2021; ``None`` for none).
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).
    """

    def __init__(
        self,
        target: Target,
        vec: torch.Tensor,
        *,
        activation_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = F.relu,
        batch_index: BatchIndex = None,
        layout: LayoutArg = None,
    ) -> None:
        super().__init__(target, batch_index=batch_index, layout=layout)
        self.vec = _as_direction(vec).reshape(-1)
        self.activation_fn = activation_fn

    def __call__(self, activations: Activations) -> torch.Tensor:
        act, layout = self._read(activations)
        _check_length(self.vec, act, self.target, layout)
        return channel_projection(act, self.vec, self.activation_fn)


class FacetLoss(BaseLoss):
    """Faceted feature visualization (Goh et al. 2021): steer a late direction through an earlier layer.

    The loss is ``sum(layer * relu(d vec_activation / d layer) * facet_weights)``, where ``vec_activation``
    is :func:`channel_projection` of the ultimate target (``mean(relu(ultimate) @ vec)``): the earlier layer's
    activation, gated by where it helps the ultimate target's direction ``vec``, weighted by facet weights
    (e.g. a linear probe's weights for a facet such as "text" or "face").

    Args:
        ultimate_target: the late layer whose direction is followed.
        layer_target: the earlier layer that the facet weights live in.
        vec: the direction in ``ultimate_target``'s channels.
        facet_weights: weights for ``layer_target``'s channels: ``[C]`` or ``[1, C]`` (one weight per
            channel, applied at every position: the same total as captum's spatial sum of a ``[1, C]`` probe),
            or ``[1, C, H, W]`` (resized bilinearly to the layer's spatial size when it differs).
        strength: keyword-only; ``None``, one number scaling every image, or a ``(start, end)`` pair
            interpolated linearly over the batch (the first image gets ``start``, the last ``end``).
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).

    captum's argument order ``FacetLoss(vec, ultimate_target, layer_target, facet_weights)`` is accepted too:
    a tensor in the first position cannot be a target, so the first three arguments are read in captum's
    order then.

    Raises:
        TypeError: ``vec`` or ``facet_weights`` not a tensor, a ``strength`` that is neither a number nor a pair.
        ValueError: ``facet_weights`` of another shape, a ``strength`` sequence that is not a pair.

    Example:
        >>> acts = {"early": torch.ones(1, 2, 2, 2, requires_grad=True)}
        >>> acts["late"] = acts["early"] * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)  # d late / d early = +-1
        >>> loss = FacetLoss("late", "early", torch.tensor([1.0, 0.0]), torch.tensor([[3.0, 5.0]]))
        >>> loss(acts).item()  # only channel 0 helps the direction: 4 positions * 1 * grad 0.25 * weight 3
        3.0
        >>> FacetLoss("late", "early", torch.tensor([1.0, 0.0]), torch.tensor([[3.0, 5.0]]), strength=2.0)(acts).item()
        6.0
    """

    def __init__(
        self,
        ultimate_target: Target,
        layer_target: Target,
        vec: torch.Tensor,
        facet_weights: torch.Tensor,
        *,
        strength: Optional[Union[float, Sequence[float]]] = None,
        batch_index: BatchIndex = None,
        layout: LayoutArg = None,
    ) -> None:
        if isinstance(ultimate_target, torch.Tensor):
            # captum's order: (vec, ultimate_target, layer_target, facet_weights)
            ultimate_target, layer_target, vec = layer_target, vec, ultimate_target
        super().__init__(ultimate_target, batch_index=batch_index, layout=layout)
        if not isinstance(layer_target, (nn.Module, str)):
            raise TypeError(
                f"layer_target must be an nn.Module or a dotted module name, got {type(layer_target).__name__}"
            )
        self.layer_target = layer_target
        self.vec = _as_direction(vec).reshape(-1)
        weights = _as_direction(facet_weights, "facet_weights")
        if weights.dim() == 1 or (weights.dim() == 2 and weights.shape[0] == 1):
            weights = weights.reshape(1, -1, 1, 1)
        elif weights.dim() != 4 or weights.shape[0] != 1:
            raise ValueError(
                f"facet_weights must be [C], [1, C] or [1, C, H, W], got shape {tuple(weights.shape)}"
            )
        self.facet_weights = weights
        if strength is not None:
            if isinstance(strength, bool):
                raise TypeError(f"strength must be a number or a (start, end) pair, got {strength!r}")
            if isinstance(strength, (int, float)):
                strength = float(strength)
            elif isinstance(strength, (list, tuple)):
                if len(strength) != 2:
                    raise ValueError(f"strength must be a number or a (start, end) pair, got {strength!r}")
                strength = [float(strength[0]), float(strength[1])]
            else:
                raise TypeError(f"strength must be a number or a (start, end) pair, got {strength!r}")
        self.strength = strength

    @property
    def targets(self) -> list:
        return [self.target, self.layer_target]

    def __call__(self, activations: Activations) -> torch.Tensor:
        ultimate, ultimate_layout = self._read(activations)
        _check_length(self.vec, ultimate, self.target, ultimate_layout)
        layer, layout = self._read(activations, self.layer_target)
        _check_length(self.facet_weights, layer, self.layer_target, layout, "facet_weights",
                      self.facet_weights.shape[1])
        projected = channel_projection(ultimate, self.vec)
        layer_full = activations[self.layer_target]
        grad = torch.autograd.grad(projected.sum(), layer_full, retain_graph=True)[0].detach()
        grad = channels_first(grad, layout)  # the gradient is laid out like the layer
        if self.batch_index is not None:
            grad = grad[self._batch_slice(grad.shape[0], self.layer_target)]
        attribution = layer * F.relu(grad)
        if isinstance(self.strength, float):
            attribution = attribution * self.strength
        elif self.strength is not None:
            n = attribution.shape[0]
            strength = torch.linspace(self.strength[0], self.strength[1], n, device=layer.device, dtype=layer.dtype)
            attribution = attribution * strength.reshape((-1,) + (1,) * (layer.dim() - 1))
        weights = self.facet_weights.to(layer.device, layer.dtype)
        if weights.dim() == 4 and layer.dim() == 4 and weights.shape[2:] != layer.shape[2:]:
            weights = F.interpolate(weights, size=layer.shape[2:], mode="bilinear", align_corners=False)
        return (attribution * weights).sum()
