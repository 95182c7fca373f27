"""Squash functions: map an unbounded image to ``[0, 1]``, the last step of ``NaturalImage``."""

import torch
import torch.nn as nn

__all__ = ["AlgebraicSigmoid"]


class AlgebraicSigmoid(nn.Module):
    """The algebraic sigmoid ``0.5 + 0.5 * u / sqrt(1 + u^2)`` with ``u = x / 2``: the same value (0.5) and slope
    (1/4) at 0 as ``torch.sigmoid``, but tails that approach 0 and 1 polynomially instead of exponentially.

    Why renders use it (issue 12): a render's largest values sit in the squash's ends. With a sigmoid an input of
    6.3 already exports as 255 and its gradient has fallen to 0.7% of the slope at 0, so strong colours turn into
    flat, clipped fields (posterization) that the optimizer no longer moves. Here the input must pass 22.5 to export
    as 255, and the gradient falls as ``|x|^-3``, not ``e^-|x|``: colours stay graded and keep learning. With a
    1/f^1.5 spectrum it took the share of values exported at exactly 0 or 255 from up to 7-26% to 0%
    (``benchmarks/class_transfer.py`` classes, 128 steps). ``x / sqrt(1 + x^2)`` is the inverse square root unit of
    Carlile et al. (2017), "Improving deep learning by inverse square root linear units (ISRLUs)", arXiv:1710.09967.

    Shapes: any; the output has the input's shape and dtype, in the open interval ``(0, 1)``.

    Example:
        >>> squash = AlgebraicSigmoid()
        >>> x = torch.tensor([-6.2, 0.0, 6.2])
        >>> squash(x)
        tensor([0.0241, 0.5000, 0.9759])
        >>> torch.sigmoid(x)
        tensor([0.0020, 0.5000, 0.9980])
        >>> torch.allclose(squash.inverse(squash(x)), x, atol=1e-4)
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # clamped so that u * u stays finite in float16 (inf would give 0 * inf): past 200 the output exports as
        # 0 or 255 anyway and the gradient is about 1e-7 of the slope at 0
        u = (0.5 * x).clamp(-200.0, 200.0)
        return 0.5 + 0.5 * u * torch.rsqrt(1.0 + u * u)

    @torch.jit.export
    def inverse(self, p: torch.Tensor, epsilon: float = 1e-6) -> torch.Tensor:
        """The input that ``forward`` maps to ``p``, with ``p`` clamped to ``[epsilon, 1 - epsilon]`` (as ``logit``
        is): ``(2 p - 1) / sqrt(p (1 - p))``, the form of ``2 v / sqrt(1 - v^2)`` with ``v = 2 p - 1`` that does not
        cancel near the ends."""
        p = p.clamp(epsilon, 1.0 - epsilon)
        return (2.0 * p - 1.0) * torch.rsqrt(p * (1.0 - p))
