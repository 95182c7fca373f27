"""Rank the strongest connections between two layers from their expanded weights."""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import torch

__all__ = ["Connection", "top_connections"]

_SCORES = ("norm", "sum", "max_abs")


class Connection(NamedTuple):
    """One connection: channel ``source_channel`` of the lower layer into ``target_channel`` of the upper."""

    target_channel: int
    source_channel: int
    strength: float


def top_connections(
    expanded_weights: torch.Tensor,
    k: int = 10,
    target_channel: Optional[int] = None,
    source_channel: Optional[int] = None,
    score: str = "norm",
    largest: bool = True,
) -> List[Connection]:
    """The ``k`` strongest connections in a ``[C2, C1, ...]`` expanded weight tensor, strongest first.

    Args:
        expanded_weights: ``[C2, C1, H, W]`` (or ``[C2, C1]``) from :func:`extract_expanded_weights`.
        k: how many connections to return (fewer if there are fewer).
        target_channel: only connections into this upper-layer channel.
        source_channel: only connections out of this lower-layer channel.
        score: ``"norm"`` (L2 norm of the spatial kernel: overall strength), ``"sum"`` (net effect: the
            most excitatory first, the most inhibitory with ``largest=False``) or ``"max_abs"``.
        largest: rank from the highest score (``False``: from the lowest).

    Returns:
        A list of :class:`Connection` ``(target_channel, source_channel, strength)``.

    Raises:
        ValueError: for a tensor of rank < 2, an unknown ``score``, a bad ``k``, or channels out of range.

    Example::

        >>> w = torch.zeros(2, 3, 1, 1)  # 3 source channels into 2 target channels, 1 x 1 kernels
        >>> w[1, 0], w[1, 2], w[0, 1] = 0.5, -2.0, 1.0
        >>> top_connections(w, k=2)  # the strongest, by the norm of the kernel
        [Connection(target_channel=1, source_channel=2, strength=2.0), Connection(target_channel=0, source_channel=1, strength=1.0)]
        >>> top_connections(w, k=1, target_channel=1, score="sum")  # the most excitatory input of channel 1
        [Connection(target_channel=1, source_channel=0, strength=0.5)]
    """
    if not torch.is_tensor(expanded_weights) or expanded_weights.dim() < 2:
        got = tuple(expanded_weights.shape) if torch.is_tensor(expanded_weights) else type(expanded_weights).__name__
        raise ValueError(f"expanded_weights must be a tensor of shape [C2, C1, ...], got {got}")
    if score not in _SCORES:
        raise ValueError(f"score must be one of {_SCORES}, got {score!r}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    kernels = expanded_weights.detach().reshape(*expanded_weights.shape[:2], -1).double()
    if score == "norm":
        scores = torch.linalg.vector_norm(kernels, dim=2)
    elif score == "sum":
        scores = kernels.sum(2)
    else:
        scores = kernels.abs().amax(2)

    rows = torch.arange(scores.size(0), device=scores.device)
    cols = torch.arange(scores.size(1), device=scores.device)
    checks = (("target_channel", target_channel, scores.size(0)), ("source_channel", source_channel, scores.size(1)))
    for name, channel, size in checks:
        if channel is not None and not 0 <= channel < size:
            raise ValueError(f"{name} must be in [0, {size}), got {channel}")
    if target_channel is not None:
        scores, rows = scores[target_channel : target_channel + 1], rows[target_channel : target_channel + 1]
    if source_channel is not None:
        scores, cols = scores[:, source_channel : source_channel + 1], cols[source_channel : source_channel + 1]

    values, flat = torch.topk(scores.flatten(), min(k, scores.numel()), largest=largest)
    return [
        Connection(int(rows[i // scores.size(1)]), int(cols[i % scores.size(1)]), float(v))
        for v, i in zip(values.tolist(), flat.tolist())
    ]
