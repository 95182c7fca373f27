"""Split a signed tensor into non-negative halves, so one-sided NMF can run on it."""
from __future__ import annotations

import torch

__all__ = ["posneg"]


def posneg(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate the positive part and the negated negative part of ``x`` along ``dim``.

    NMF needs non-negative data; ``posneg`` lets it factor signed weights or activations (Voss et al.,
    "Visualizing Weights", Distill 2021) at the cost of doubling ``dim``: ``[relu(x), relu(-x)]``.

    Args:
        x: any tensor.
        dim: the dimension to concatenate along (doubles in size).

    Returns:
        A non-negative tensor with ``2 * x.size(dim)`` entries along ``dim``.

    Raises:
        TypeError: if ``x`` is not a tensor.

    Example::

        >>> posneg(torch.tensor([[1.0, -2.0]]), dim=1)
        tensor([[1., 0., 0., 2.]])
        >>> w = torch.randn(8, 16)  # signed weights: 8 units, 16 inputs
        >>> opt.reducer.ChannelReducer(2, "NMF", max_iter=1000).fit_transform(posneg(w, dim=1)).shape
        torch.Size([8, 2])
    """
    if not torch.is_tensor(x):
        raise TypeError(f"posneg expects a torch.Tensor, got {type(x).__name__}")
    return torch.cat([torch.relu(x), torch.relu(-x)], dim=dim)
