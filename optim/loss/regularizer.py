"""Regularizers and batch objectives: total variation, L1/L2 penalties, diversity and alignment."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..layouts import LayoutArg
from .activation import _optional_index, check_channel
from .base import Activations, BaseLoss, BatchIndex, Target

__all__ = ["TotalVariation", "L1", "L2", "L2Mean", "Diversity", "Alignment"]


class TotalVariation(BaseLoss):
    """Total variation: the summed absolute difference between neighbouring pixels (Mahendran & Vedaldi 2015).

    Subtract it (``loss - 0.1 * TotalVariation(image)``) to favour smooth images.

    Args:
        target: usually the image parameterization, or any layer.
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).
    """

    def __call__(self, activations: Activations) -> torch.Tensor:
        x = self._activation(activations)
        rows = x[..., 1:, :] - x[..., :-1, :]
        cols = x[..., :, 1:] - x[..., :, :-1]
        return rows.abs().sum() + cols.abs().sum()


class L1(BaseLoss):
    """The L1 distance of the activation from ``constant``: ``sum(|x - constant|)``.

    Args:
        target: the layer or image.
        constant: the value the penalty pulls towards.
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).
    """

    def __init__(
        self, target: Target, *, constant: float = 0.0, batch_index: BatchIndex = None, layout: LayoutArg = None
    ) -> None:
        super().__init__(target, batch_index=batch_index, layout=layout)
        self.constant = float(constant)

    def __call__(self, activations: Activations) -> torch.Tensor:
        return (self._activation(activations) - self.constant).abs().sum()

    def _extra_repr(self) -> str:
        return f"constant={self.constant}" if self.constant else ""


class L2(BaseLoss):
    """The L2 distance of the activation from ``constant``: ``sqrt(sum((x - constant)^2) + epsilon)``.

    Args:
        target: the layer or image.
        constant: the value the penalty pulls towards.
        epsilon: keeps the square root differentiable at zero.
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).
    """

    def __init__(
        self, target: Target, *, constant: float = 0.0, epsilon: float = 1e-6, batch_index: BatchIndex = None,
        layout: LayoutArg = None,
    ) -> None:
        super().__init__(target, batch_index=batch_index, layout=layout)
        self.constant = float(constant)
        self.epsilon = float(epsilon)

    def __call__(self, activations: Activations) -> torch.Tensor:
        return (((self._activation(activations) - self.constant) ** 2).sum() + self.epsilon).sqrt()

    def _extra_repr(self) -> str:
        return f"constant={self.constant}" if self.constant else ""


class L2Mean(BaseLoss):
    """The mean squared distance from ``constant`` (Lucid's ``L2Mean``), optionally of one channel.

    Args:
        target: the layer or image.
        channel_index: one channel, or ``None`` for all.
        constant: the target value.
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).
    """

    def __init__(
        self,
        target: Target,
        *,
        channel_index: Optional[int] = None,
        constant: float = 0.5,
        batch_index: BatchIndex = None,
        layout: LayoutArg = None,
    ) -> None:
        super().__init__(target, batch_index=batch_index, layout=layout)
        self.channel_index = _optional_index(channel_index, "channel_index")
        self.constant = float(constant)

    def __call__(self, activations: Activations) -> torch.Tensor:
        x, layout = self._read(activations)
        if self.channel_index is not None:
            x = x[:, check_channel(x, self.channel_index, self.target, layout)]
        return ((x - self.constant) ** 2).mean()


class Diversity(BaseLoss):
    """Diversity across the batch (Lucid): minus the mean cosine similarity of the images' Gram matrices.

    Add it to a channel objective over a batch to get several different images of one feature.

    Args:
        target: the layer whose Gram matrices are compared.
        batch_index: which images of the batch the loss reads (at least two).
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).
    """

    def __call__(self, activations: Activations) -> torch.Tensor:
        x = self._activation(activations)
        batch, channels = x.shape[:2]
        flat = x.reshape(batch, channels, -1)
        grams = torch.bmm(flat, flat.transpose(1, 2)).reshape(batch, -1)
        grams = F.normalize(grams, p=2, dim=1)
        similarity = grams @ grams.t()
        return -(similarity.sum() - similarity.diagonal().sum()) / batch


class Alignment(BaseLoss):
    """Alignment (Lucid): penalize differences between neighbouring images of the batch.

    Used with interpolation so that images next to each other share their layout; neighbours ``d`` apart
    count ``decay_ratio ** -d``, for ``d`` in 1..4.

    Args:
        target: the layer to align.
        decay_ratio: how fast the weight falls with the distance in the batch.
        batch_index: which images of the batch the loss reads.
        layout: keyword-only; the layer's layout (``None``: inferred, see :class:`BaseLoss`).
    """

    def __init__(
        self, target: Target, *, decay_ratio: float = 2.0, batch_index: BatchIndex = None, layout: LayoutArg = None
    ) -> None:
        super().__init__(target, batch_index=batch_index, layout=layout)
        self.decay_ratio = float(decay_ratio)

    def __call__(self, activations: Activations) -> torch.Tensor:
        x = self._activation(activations)
        total = x.new_zeros(())
        for d in range(1, min(5, x.shape[0])):
            diff = (x[:-d] - x[d:]) ** 2
            total = total + diff.reshape(diff.shape[0], -1).mean(dim=1).sum() / self.decay_ratio**d
        return -total

    def _extra_repr(self) -> str:
        return f"decay_ratio={self.decay_ratio}"
