"""Colour recorrelation: map decorrelated channels to RGB (and back) with a fixed 3x3 matrix."""
from __future__ import annotations

from typing import Union

import torch
import torch.nn as nn

__all__ = ["ToRGB", "klt_matrix", "i1i2i3_matrix"]


def klt_matrix() -> torch.Tensor:
    """Lucid's ImageNet colour correlation square root, normalized by its largest column norm.

    Returns:
        A float64 ``[3, 3]`` tensor ``C`` with ``rgb = C @ decorrelated`` per pixel.
    """
    svd_sqrt = torch.tensor(
        [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float64
    )
    return svd_sqrt / torch.linalg.vector_norm(svd_sqrt, dim=0).max()


def i1i2i3_matrix() -> torch.Tensor:
    """Ohta, Kanade and Sakai's I1I2I3 colour space matrix (an approximate KLT for natural images).

    Returns:
        A float64 ``[3, 3]`` tensor.
    """
    return torch.tensor(
        [[1 / 3, 1 / 3, 1 / 3], [1 / 2, 0.0, -1 / 2], [-1 / 4, 1 / 2, -1 / 4]], dtype=torch.float64
    )


class ToRGB(nn.Module):
    """Recorrelate the colour channels of an image: ``rgb = M @ x`` at every pixel.

    Optimizing in a decorrelated colour space preconditions the optimizer (Olah et al., Distill 2017).
    A fourth (alpha) channel is passed through unchanged. The inverse uses the true matrix inverse,
    computed once in float64, so ``forward(forward(x), inverse=True)`` gives ``x`` back.

    Args:
        transform: ``"klt"`` (Lucid's ImageNet colour correlation), ``"i1i2i3"``, or an invertible
            ``[3, 3]`` tensor.

    Example::

        >>> to_rgb = ToRGB("klt")
        >>> x = torch.randn(1, 3, 8, 8)
        >>> rgb = to_rgb(x)
        >>> torch.allclose(to_rgb(rgb, inverse=True), x, atol=1e-6)
        True
    """

    def __init__(self, transform: Union[str, torch.Tensor] = "klt") -> None:
        super().__init__()
        if isinstance(transform, str):
            if transform == "klt":
                matrix = klt_matrix()
            elif transform == "i1i2i3":
                matrix = i1i2i3_matrix()
            else:
                raise ValueError(f"transform must be 'klt', 'i1i2i3' or a 3x3 tensor, got {transform!r}")
        elif isinstance(transform, torch.Tensor):
            if transform.shape != (3, 3):
                raise ValueError(f"a transform matrix must have shape (3, 3), got {tuple(transform.shape)}")
            matrix = transform.detach().to(device="cpu", dtype=torch.float64)
        else:
            raise TypeError(
                f"transform must be 'klt', 'i1i2i3' or a 3x3 tensor, got {type(transform).__name__}"
            )
        if torch.linalg.matrix_rank(matrix) < 3:
            raise ValueError(f"the transform matrix must be invertible, got {matrix.tolist()}")
        # kept in float64 (cast to the input's dtype on use) so float64 renders lose no precision
        self.register_buffer("transform", matrix)
        self.register_buffer("inverse_transform", torch.linalg.inv(matrix))

    def forward(self, x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """Recorrelate (or, with ``inverse=True``, decorrelate) the colours of ``x``.

        Args:
            x: an NCHW or CHW tensor with 3 channels, or 4 where the fourth is alpha.
            inverse: apply the inverse matrix instead.

        Returns:
            A tensor of the same shape as ``x``.
        """
        if x.dim() != 3 and x.dim() != 4:
            raise ValueError("ToRGB expects a CHW or NCHW tensor, got " + str(x.dim()) + " dimensions")
        channel_dim = x.dim() - 3
        channels = x.size(channel_dim)
        if channels != 3 and channels != 4:
            raise ValueError("ToRGB expects 3 or 4 (RGB + alpha) channels, got " + str(channels))
        matrix = self.inverse_transform if inverse else self.transform
        matrix = matrix.to(dtype=x.dtype, device=x.device)
        rgb = x.narrow(channel_dim, 0, 3)
        # out[..., c, h, w] = sum_k M[c, k] x[..., k, h, w], one batched matmul over flattened pixels
        out = torch.matmul(matrix, rgb.flatten(-2)).view(rgb.shape)
        if channels == 4:
            out = torch.cat([out, x.narrow(channel_dim, 3, 1)], dim=channel_dim)
        return out
