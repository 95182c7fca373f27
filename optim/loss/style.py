"""Losses against reference activations: style (Gram matrices), content, accentuation, transparency.

``StyleLoss``, ``ContentLoss`` and ``ReferenceDistance`` are distances (0 at the reference), so a render
subtracts them from what it maximizes; ``Transparency`` is an objective to add.

Example:
    >>> import torch
    >>> content_act, style_act = torch.rand(1, 8, 4, 4), torch.rand(1, 4, 8, 8)
    >>> loss = -(ContentLoss("blocks.8", content_act) + 10.0 * StyleLoss("blocks.3", style_act))
    >>> loss.targets
    ['blocks.8', 'blocks.3']
"""
from __future__ import annotations

import torch

from ..layouts import Layout, LayoutArg, channels_first
from .base import Activations, BaseLoss, BatchIndex, Target, target_name

__all__ = ["gram_matrix", "StyleLoss", "ContentLoss", "ReferenceDistance", "Transparency"]


def gram_matrix(x: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of each image's channels, divided by the number of positions (Gatys et al. 2016).

    Dividing by ``H * W`` makes Gram matrices of images of different sizes comparable.

    Args:
        x: an ``[N, C, H, W]`` (or ``[N, C, L]``) activation.

    Returns:
        An ``[N, C, C]`` tensor.

    Example:
        >>> gram_matrix(torch.ones(1, 2, 3, 3))
        tensor([[[1., 1.],
                 [1., 1.]]])
    """
    if x.dim() < 3:
        raise ValueError(f"gram_matrix needs an [N, C, ...] activation with positions, got shape {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    return torch.bmm(flat, flat.transpose(1, 2)) / flat.shape[2]


def _reference(reference: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(reference, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(reference).__name__}")
    return reference.detach()


class _ReferenceLoss(BaseLoss):
    """A loss on one target that compares it to a fixed tensor (moved to the activation's device/dtype).

    The reference is stored as recorded (the layer's own layout) and read in the channels-first view of the
    layout the activation resolves to; token prefix and grid are inferred for the reference's own length
    unless ``layout`` gives them.
    """

    def __init__(
        self, target: Target, reference: torch.Tensor, *, batch_index: BatchIndex = None, layout: LayoutArg = None
    ) -> None:
        super().__init__(target, batch_index=batch_index, layout=layout)
        self.reference = _reference(reference, "reference")

    def _reference_view(self, reference: torch.Tensor, layout: Layout) -> torch.Tensor:
        """``reference`` (as recorded at the target) in the channels-first view of the activation's layout."""
        return channels_first(reference, self.layout if self.layout is not None else Layout(layout.name),
                              where=f"the reference of {target_name(self.target)}")

    def _paired(self, act: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The reference on ``act``'s device and dtype, checked to broadcast over ``act``'s batch."""
        reference = reference.to(device=act.device, dtype=act.dtype)
        if reference.shape[1:] != act.shape[1:] or reference.shape[0] not in (1, act.shape[0]):
            raise ValueError(
                f"{type(self).__name__}: the reference of shape {tuple(reference.shape)} does not match the "
                f"activation of {target_name(self.target)}, shape {tuple(act.shape)} (same shape, or batch 1)"
            )
        return reference


class StyleLoss(_ReferenceLoss):
    """The squared difference between the Gram matrices of the activation and of a style image, relative
    to the style's own: ``mean((G - G_style) ** 2) / mean(G_style ** 2)``.

    Being relative, it is about 1 for an unrelated image at any layer, so layers of very different scales
    share one weight.

    Args:
        target: the layer.
        style: the style image's activation at ``target`` as recorded (``[1 or N, C, H, W]``, or the
            layer's own layout; its spatial size may differ from the render's); its Gram matrix is computed
            once per layout.
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).

    Example:
        >>> style_act = torch.rand(1, 4, 8, 8)
        >>> loss = StyleLoss("blocks.3", style_act)
        >>> loss({"blocks.3": style_act.repeat(1, 1, 2, 2)}).abs().item() < 1e-6  # same statistics, larger
        True
    """

    def __init__(
        self, target: Target, style: torch.Tensor, *, batch_index: BatchIndex = None, layout: LayoutArg = None
    ) -> None:
        super().__init__(target, _reference(style, "style"), batch_index=batch_index, layout=layout)
        self._grams: dict = {}

    def __call__(self, activations: Activations) -> torch.Tensor:
        act, layout = self._read(activations)
        gram = gram_matrix(act)
        if layout not in self._grams:
            self._grams[layout] = gram_matrix(self._reference_view(self.reference, layout))
        style = self._paired(gram, self._grams[layout])
        return ((gram - style) ** 2).mean() / (style**2).mean().clamp_min(1e-12)


class ContentLoss(_ReferenceLoss):
    """The mean squared error between the activation and a reference activation (Gatys' content loss).

    Minimizing it from noise is feature inversion (Mahendran & Vedaldi 2015): the render becomes an image
    the layer cannot tell from the reference image.

    Args:
        target: the layer.
        reference: the reference image's activation at ``target`` (``[1 or N, C, H, W]``).
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).

    Example:
        >>> photo_act = torch.zeros(1, 2, 3, 3)
        >>> ContentLoss("blocks.8", photo_act)({"blocks.8": torch.ones(2, 2, 3, 3)}).item()
        1.0
    """

    def __call__(self, activations: Activations) -> torch.Tensor:
        act, layout = self._read(activations)
        return ((act - self._paired(act, self._reference_view(self.reference, layout))) ** 2).mean()


class ReferenceDistance(_ReferenceLoss):
    """Per image, the L2 distance to a reference activation relative to the reference's norm.

    Feature accentuation (Hamblin et al. 2024) raises a feature starting from a real image while this
    distance, at a chosen layer, keeps the render close to what the network saw in the image: 0 at the
    image's own activation, 1 at an all-zero activation, whatever the layer's scale.

    Args:
        target: the layer.
        reference: the image's activation at ``target`` (``[1 or N, C, H, W]``).
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).
        epsilon: keeps the square root differentiable at the reference.

    Returns (when called):
        An ``[N]`` tensor of relative distances.

    Example:
        >>> image_act = torch.ones(1, 2, 2, 2)
        >>> ReferenceDistance("blocks.5", image_act)({"blocks.5": torch.zeros(1, 2, 2, 2)}).tolist()
        [1.0]
    """

    def __init__(
        self,
        target: Target,
        reference: torch.Tensor,
        *,
        batch_index: BatchIndex = None,
        epsilon: float = 1e-8,
        layout: LayoutArg = None,
    ) -> None:
        super().__init__(target, reference, batch_index=batch_index, layout=layout)
        self.epsilon = float(epsilon)

    def __call__(self, activations: Activations) -> torch.Tensor:
        act, layout = self._read(activations)
        reference = self._paired(act, self._reference_view(self.reference, layout)).expand_as(act)
        diff = (act - reference).reshape(act.shape[0], -1)
        norm = reference.reshape(act.shape[0], -1).norm(dim=1).clamp_min(self.epsilon)
        return ((diff**2).sum(dim=1) + self.epsilon).sqrt() / norm


class Transparency(BaseLoss):
    """How transparent an RGBA image is: ``1 - sqrt(mean(alpha ** 2))`` per image (Lucid's mean alpha).

    Add it (weighted) to a feature objective on a 4-channel ``NaturalImage`` blended over random
    backgrounds with ``BlendAlpha``: the render then stays opaque only where the feature needs it.

    Args:
        target: the image parameterization (or any module whose output is ``[N, 4, H, W]``).
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).

    Returns (when called):
        An ``[N]`` tensor in ``[0, 1]``; 1 is fully transparent.

    Example:
        >>> rgba = torch.ones(2, 4, 3, 3)
        >>> rgba[1, 3] = 0.0  # the second image fully transparent
        >>> Transparency("image")({"image": rgba}).tolist()
        [0.0, 1.0]
    """

    def __call__(self, activations: Activations) -> torch.Tensor:
        x = self._activation(activations)
        if x.dim() != 4 or x.shape[1] != 4:
            raise ValueError(
                f"Transparency needs an [N, 4, H, W] RGBA output from {target_name(self.target)}, "
                f"got shape {tuple(x.shape)}"
            )
        alpha = x[:, 3].reshape(x.shape[0], -1)
        return 1.0 - (alpha**2).mean(dim=1).sqrt()
