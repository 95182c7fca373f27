"""Centered kernel alignment (CKA) between two sets of activations.

CKA (Kornblith et al., 2019, "Similarity of Neural Network Representations Revisited") compares two
representations of the same ``n`` examples, ``x`` of shape ``(n, d1)`` and ``y`` of shape ``(n, d2)``,
through their ``n x n`` kernel (Gram) matrices ``K`` and ``L``:

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) * HSIC(L, L))

It is 1 for identical representations and invariant to orthogonal transforms and isotropic scaling of
either side. The *biased* HSIC estimator ``tr(KHLH) / (n-1)^2`` is the one in Kornblith et al.; the
*unbiased* estimator of Song et al. (2012) is the one that may be averaged over minibatches (Nguyen et al.,
2021, "Do Wide and Deep Networks Learn the Same Things?"), which :class:`MinibatchCKA` does.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch

__all__ = [
    "gram_linear",
    "gram_rbf",
    "center_gram",
    "hsic",
    "kernel_cka",
    "linear_cka",
    "rbf_cka",
    "MinibatchCKA",
]

_KERNELS = ("linear", "rbf")


def _as_matrix(x: torch.Tensor, name: str) -> torch.Tensor:
    """Flatten activations to ``(n, features)`` in float64 (CKA sums many small products)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have shape (n, ...) with at least 2 dimensions, got {tuple(x.shape)}")
    return x.detach().reshape(x.shape[0], -1).to(torch.float64)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must describe the same examples: got {x.shape[0]} rows in x and {y.shape[0]} in y"
        )


def gram_linear(x: torch.Tensor) -> torch.Tensor:
    """The linear kernel ``x @ x.T`` of activations of shape ``(n, ...)``.

    Args:
        x: activations; every dimension after the first is flattened into features.

    Returns:
        The ``(n, n)`` Gram matrix in float64.
    """
    x = _as_matrix(x, "x")
    return x @ x.T


def gram_rbf(x: torch.Tensor, sigma: Optional[float] = None, threshold: float = 1.0) -> torch.Tensor:
    """The RBF kernel ``exp(-|xi - xj|^2 / (2 sigma^2))`` of activations of shape ``(n, ...)``.

    Args:
        x: activations; every dimension after the first is flattened into features.
        sigma: the kernel bandwidth. ``None`` uses the median heuristic of Kornblith et al.:
            ``sigma = threshold * sqrt(median of the squared pairwise distances)``, which keeps the
            kernel (and so CKA) invariant to isotropic scaling of ``x``.
        threshold: multiplier of the median distance when ``sigma`` is ``None``.

    Returns:
        The ``(n, n)`` kernel matrix in float64.
    """
    x = _as_matrix(x, "x")
    dot = x @ x.T
    sq_norms = torch.diagonal(dot)
    sq_dist = (sq_norms[:, None] + sq_norms[None, :] - 2 * dot).clamp_min(0)
    if sigma is None:
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        # torch.median picks the lower middle value; NumPy's mean-of-middles matches Kornblith's code.
        # kthvalue selects the middle values in O(n^2) instead of sorting all n^2 distances.
        flat = sq_dist.flatten()
        mid = flat.numel() // 2
        upper = flat.kthvalue(mid + 1).values
        median = upper if flat.numel() % 2 else (flat.kthvalue(mid).values + upper) / 2
        sq_sigma = threshold**2 * median
    else:
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        sq_sigma = torch.tensor(float(sigma) ** 2, dtype=sq_dist.dtype)
    if sq_sigma <= 0:
        raise ValueError("the RBF median heuristic needs at least two distinct rows in x")
    return torch.exp(-sq_dist / (2 * sq_sigma))


def center_gram(gram: torch.Tensor) -> torch.Tensor:
    """Double-center a Gram matrix: ``H K H`` with ``H = I - 11^T / n``."""
    gram = gram - gram.mean(dim=0, keepdim=True)
    return gram - gram.mean(dim=1, keepdim=True)


def hsic(k: torch.Tensor, l: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """The Hilbert-Schmidt independence criterion between two ``(n, n)`` kernel matrices.

    Args:
        k: kernel matrix of the first representation.
        l: kernel matrix of the second representation, over the same ``n`` examples.
        unbiased: use the unbiased estimator of Song et al. (2012) (needs ``n >= 4``) instead of
            the biased ``tr(KHLH) / (n-1)^2``.

    Returns:
        A 0-d float64 tensor.
    """
    if k.dim() != 2 or k.shape[0] != k.shape[1] or k.shape != l.shape:
        raise ValueError(f"k and l must be square kernel matrices of one shape, got {tuple(k.shape)}, {tuple(l.shape)}")
    k = k.to(torch.float64)
    l = l.to(torch.float64)
    n = k.shape[0]
    if not unbiased:
        return (center_gram(k) * l).sum() / (n - 1) ** 2
    if n < 4:
        raise ValueError(f"the unbiased HSIC estimator needs at least 4 examples, got {n}")
    k = k - torch.diag(torch.diagonal(k))
    l = l - torch.diag(torch.diagonal(l))
    # Every term is O(n^2): tr(KL) is an elementwise product of symmetric matrices and 1^T K L 1 a dot
    # product of row sums.
    trace_kl = (k * l).sum()
    sums = k.sum() * l.sum() / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * (k.sum(dim=0) @ l.sum(dim=1))
    return (trace_kl + sums - cross) / (n * (n - 3))


def kernel_cka(k: torch.Tensor, l: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """CKA between two precomputed ``(n, n)`` kernel matrices.

    Args:
        k: kernel matrix of the first representation.
        l: kernel matrix of the second representation.
        unbiased: use the unbiased HSIC estimator (Song et al., 2012).

    Returns:
        A 0-d float64 tensor, 1 for identical kernels.
    """
    xy = hsic(k, l, unbiased)
    return xy / torch.sqrt(hsic(k, k, unbiased) * hsic(l, l, unbiased))


def linear_cka(x: torch.Tensor, y: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Linear CKA between two activation matrices of shape ``(n, d1)`` and ``(n, d2)``.

    Args:
        x: activations of the first layer, one row per example (extra dimensions are flattened).
        y: activations of the second layer for the same examples.
        unbiased: use the unbiased HSIC estimator (needs ``n >= 4``).

    Returns:
        A 0-d float64 tensor in [0, 1] (the unbiased estimate can dip slightly below 0).

    Example::

        >>> x = torch.randn(100, 32)
        >>> rotation = torch.linalg.qr(torch.randn(32, 32)).Q
        >>> round(float(linear_cka(x, 3 * x @ rotation)), 6)  # invariant to scale and rotation
        1.0
        >>> round(float(linear_cka(x, torch.randn(100, 32))), 2)  # unrelated features
        0.26
    """
    x = _as_matrix(x, "x")
    y = _as_matrix(y, "y")
    _check_pair(x, y)
    if unbiased:
        return kernel_cka(x @ x.T, y @ y.T, unbiased=True)
    # Feature-space form of the biased estimator: O(n d^2) rather than O(n^2 d).
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    xy = torch.linalg.matrix_norm(y.T @ x) ** 2
    return xy / (torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y))


def rbf_cka(
    x: torch.Tensor,
    y: torch.Tensor,
    sigma: Optional[float] = None,
    threshold: float = 1.0,
    unbiased: bool = False,
) -> torch.Tensor:
    """RBF-kernel CKA between two activation matrices of shape ``(n, d1)`` and ``(n, d2)``.

    Args:
        x: activations of the first layer, one row per example.
        y: activations of the second layer for the same examples.
        sigma: the RBF bandwidth used for both sides; ``None`` picks each side's bandwidth by the
            median heuristic (``threshold`` times the median pairwise distance).
        threshold: multiplier of the median distance when ``sigma`` is ``None``.
        unbiased: use the unbiased HSIC estimator.

    Returns:
        A 0-d float64 tensor.

    Example::

        >>> x = torch.randn(100, 32)
        >>> round(float(rbf_cka(x, x)), 6)
        1.0
        >>> round(float(rbf_cka(x, torch.randn(100, 32))), 2)
        0.36
    """
    x = _as_matrix(x, "x")
    y = _as_matrix(y, "y")
    _check_pair(x, y)
    return kernel_cka(gram_rbf(x, sigma, threshold), gram_rbf(y, sigma, threshold), unbiased=unbiased)


def _gram(x: torch.Tensor, kernel: str, sigma: Optional[float], threshold: float) -> torch.Tensor:
    return gram_linear(x) if kernel == "linear" else gram_rbf(x, sigma, threshold)


class MinibatchCKA:
    """Unbiased CKA accumulated over minibatches (Nguyen et al., 2021).

    Each :meth:`update` adds the unbiased HSIC of one batch for every pair of layers; :meth:`compute`
    divides the summed cross terms by the summed self terms. Because the unbiased estimator has no
    batch-size bias, the result approaches the full-data CKA without holding all activations at once.

    Args:
        kernel: ``"linear"`` or ``"rbf"``.
        sigma: RBF bandwidth (``None``: per-batch median heuristic).
        threshold: median multiplier for the RBF heuristic.

    Example::

        >>> x = torch.randn(256, 32)
        >>> y = x @ torch.randn(32, 16)
        >>> m = MinibatchCKA()
        >>> for xb, yb in zip(x.split(64), y.split(64)):
        ...     m.update(xb, yb)
        >>> m.compute()  # one layer per side: a 0-d tensor
        tensor(0.5539, dtype=torch.float64)
        >>> m.reset()
        >>> for xb, yb in zip(x.split(64), y.split(64)):
        ...     m.update([xb, yb], [xb, yb, xb[:, :8]])  # lists of layers: an (L1, L2) matrix
        >>> m.compute().round(decimals=2)
        tensor([[1.0000, 0.5500, 0.5200],
                [0.5500, 1.0000, 0.2500]], dtype=torch.float64)
    """

    def __init__(self, kernel: str = "linear", sigma: Optional[float] = None, threshold: float = 1.0) -> None:
        if kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
        self.kernel = kernel
        self.sigma = sigma
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._xy: Optional[torch.Tensor] = None
        self._xx: Optional[torch.Tensor] = None
        self._yy: Optional[torch.Tensor] = None
        self._single: Optional[bool] = None
        self.n_batches = 0
        self.n_examples = 0

    @staticmethod
    def _as_list(acts: Union[torch.Tensor, Sequence[torch.Tensor]], name: str) -> List[torch.Tensor]:
        if isinstance(acts, torch.Tensor):
            return [acts]
        acts = list(acts)
        if not acts or not all(isinstance(a, torch.Tensor) for a in acts):
            raise TypeError(f"{name} must be a tensor or a non-empty sequence of tensors")
        return acts

    def update(
        self,
        x: Union[torch.Tensor, Sequence[torch.Tensor]],
        y: Union[torch.Tensor, Sequence[torch.Tensor]],
    ) -> None:
        """Add one batch.

        Args:
            x: activations ``(b, ...)`` of the first model, or a list of them (one per layer).
            y: activations ``(b, ...)`` of the second model for the same ``b`` examples, or a list.
        """
        single = isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
        xs, ys = self._as_list(x, "x"), self._as_list(y, "y")
        n = xs[0].shape[0]
        if any(a.shape[0] != n for a in xs + ys):
            raise ValueError(f"every activation in one update must have the same batch size ({n})")
        if n < 4:
            raise ValueError(
                f"unbiased HSIC needs batches of at least 4 examples, got {n}: use batch_size >= 4, and "
                "drop_last=True on a DataLoader whose last batch would be shorter"
            )
        if self._single is not None and (single != self._single or
                                         self._xy.shape != (len(xs), len(ys))):
            raise ValueError(
                f"update got {len(xs)} x {len(ys)} layers, but earlier batches had {tuple(self._xy.shape)}"
            )
        grams_x = [_gram(a, self.kernel, self.sigma, self.threshold) for a in xs]
        grams_y = [_gram(a, self.kernel, self.sigma, self.threshold) for a in ys]
        xy = torch.stack([torch.stack([hsic(k, l, unbiased=True) for l in grams_y]) for k in grams_x])
        xx = torch.stack([hsic(k, k, unbiased=True) for k in grams_x])
        yy = torch.stack([hsic(l, l, unbiased=True) for l in grams_y])
        if self._xy is None:
            self._xy, self._xx, self._yy, self._single = xy, xx, yy, single
        else:
            self._xy = self._xy + xy
            self._xx = self._xx + xx
            self._yy = self._yy + yy
        self.n_batches += 1
        self.n_examples += n

    def compute(self) -> torch.Tensor:
        """The CKA so far: a 0-d tensor if tensors were passed to :meth:`update`, else ``(L1, L2)``."""
        if self._xy is None:
            raise ValueError("MinibatchCKA.compute() called before any update()")
        out = self._xy / torch.sqrt(self._xx[:, None] * self._yy[None, :])
        return out[0, 0] if self._single else out
