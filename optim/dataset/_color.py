"""Colour statistics of a dataset: channel covariance and the KLT (colour decorrelation) matrix."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional

import torch

__all__ = ["image_cov", "dataset_cov_matrix", "cov_matrix_to_klt", "dataset_klt_matrix", "iter_image_batches"]


def _accumulation_dtype(device: torch.device) -> torch.dtype:
    # Pixel sums over a whole dataset lose precision in float32; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _check_nchw(x: Any, what: str) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{what} must be an NCHW batch, got shape {tuple(x.shape)}")
    return x


def iter_image_batches(loader: Iterable[Any]) -> Iterator[torch.Tensor]:
    """Yield the NCHW image batch of every item of ``loader``.

    Items may be bare image tensors or ``(images, labels, ...)`` tuples/lists, as torchvision datasets give.

    Raises:
        TypeError / ValueError: for an item that holds no NCHW tensor first.
    """
    for item in loader:
        images = item[0] if isinstance(item, (tuple, list)) else item
        yield _check_nchw(images, "each loader batch's images")


def image_cov(x: torch.Tensor) -> torch.Tensor:
    """The covariance between the channels of an NCHW batch, with every pixel of every image as a sample.

    Args:
        x: an ``[N, C, H, W]`` tensor.

    Returns:
        The unbiased ``[C, C]`` covariance matrix, in ``x``'s dtype and on its device.

    Raises:
        ValueError: for a tensor that is not 4-D, or with fewer than two pixels.

    Example::

        >>> image_cov(cat)  # cat: a [1, 3, 96, 96] photo; its colour channels are strongly correlated
        tensor([[0.0145, 0.0129, 0.0120],
                [0.0129, 0.0131, 0.0133],
                [0.0120, 0.0133, 0.0157]])
    """
    _check_nchw(x, "image_cov's input")
    pixels = x.permute(0, 2, 3, 1).reshape(-1, x.size(1))
    if pixels.size(0) < 2:
        raise ValueError(f"image_cov needs at least two pixels, got shape {tuple(x.shape)}")
    centered = pixels - pixels.mean(0, keepdim=True)
    return centered.T @ centered / (pixels.size(0) - 1)


def dataset_cov_matrix(loader: Iterable[Any]) -> torch.Tensor:
    """The channel covariance of all pixels of a dataset, streamed one batch at a time.

    Pixels of every image are pooled (one global mean), so differences in colour between images count as
    well as variation within them. Sums are accumulated in float64.

    Args:
        loader: an iterable of NCHW batches or ``(images, labels)`` pairs, such as a ``DataLoader``.

    Returns:
        The unbiased ``[C, C]`` covariance (float32, on the batches' device).

    Raises:
        ValueError: for an empty loader or batches whose channel counts differ.

    Example::

        >>> dataset = torch.utils.data.TensorDataset(torch.rand(8, 3, 32, 32), torch.zeros(8))
        >>> loader = torch.utils.data.DataLoader(dataset, batch_size=4)  # (images, labels) batches
        >>> dataset_cov_matrix(loader).diagonal()  # uniform noise: variance 1/12 per channel
        tensor([0.0842, 0.0823, 0.0832])
    """
    total: Optional[torch.Tensor] = None
    outer: Optional[torch.Tensor] = None
    count = 0
    for images in iter_image_batches(loader):
        pixels = images.permute(0, 2, 3, 1).reshape(-1, images.size(1))
        pixels = pixels.to(_accumulation_dtype(pixels.device))
        if total is None:
            total, outer = pixels.new_zeros(pixels.size(1)), pixels.new_zeros(pixels.size(1), pixels.size(1))
        elif pixels.size(1) != total.numel():
            raise ValueError(f"every batch needs {total.numel()} channels, got a batch with {pixels.size(1)}")
        total = total + pixels.sum(0).to(total.device)
        outer = outer + (pixels.T @ pixels).to(total.device)
        count += pixels.size(0)
    if total is None or count < 2:
        raise ValueError("dataset_cov_matrix needs a loader yielding at least two pixels")
    mean = total / count
    cov = (outer - count * torch.outer(mean, mean)) / (count - 1)
    return cov.float()


def cov_matrix_to_klt(cov_mtx: torch.Tensor, normalize: bool = False, epsilon: float = 1e-10) -> torch.Tensor:
    """Turn a covariance matrix into its KLT matrix ``U @ diag(sqrt(S + epsilon))``.

    ``U`` holds the eigenvectors of ``cov_mtx`` by decreasing eigenvalue ``S``, each signed so its entries
    sum to >= 0 (the first column is then the positive "luminance" direction, as in Lucid's ImageNet
    matrix). The result ``K`` satisfies ``K @ K.T == cov_mtx`` and maps decorrelated unit-variance colours to
    the dataset's colour statistics, as ``ToRGB(transform=K)`` expects.

    Args:
        cov_mtx: a symmetric ``[C, C]`` covariance matrix.
        normalize: divide by the largest column norm (Lucid's normalized colour correlation matrix).
        epsilon: added to the eigenvalues before the square root.

    Returns:
        The ``[C, C]`` KLT matrix, in ``cov_mtx``'s dtype and device.

    Raises:
        ValueError: for a matrix that is not square and symmetric.

    Example::

        >>> cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
        >>> klt = cov_matrix_to_klt(cov)
        >>> klt
        tensor([[ 1.3725, -0.3408],
                [ 0.5685,  0.8227]])
        >>> torch.allclose(klt @ klt.T, cov)
        True
    """
    if not torch.is_tensor(cov_mtx) or cov_mtx.dim() != 2 or cov_mtx.size(0) != cov_mtx.size(1):
        shape = tuple(cov_mtx.shape) if torch.is_tensor(cov_mtx) else type(cov_mtx).__name__
        raise ValueError(f"cov_matrix_to_klt needs a square [C, C] tensor, got {shape}")
    work = cov_mtx.to(_accumulation_dtype(cov_mtx.device))
    if not torch.allclose(work, work.T, rtol=1e-4, atol=1e-8):
        raise ValueError(f"cov_matrix_to_klt needs a symmetric covariance matrix, got {cov_mtx.tolist()}")
    eigvals, eigvecs = torch.linalg.eigh((work + work.T) / 2)
    eigvals, eigvecs = eigvals.flip(0).clamp_min(0), eigvecs.flip(1)  # descending; drop round-off negatives
    signs = torch.where(eigvecs.sum(0) < 0, -1.0, 1.0).to(eigvecs.dtype)
    klt = eigvecs * signs * torch.sqrt(eigvals + epsilon)
    if normalize:
        klt = klt / torch.linalg.vector_norm(klt, dim=0).max()
    return klt.to(cov_mtx.dtype)


def dataset_klt_matrix(loader: Iterable[Any], normalize: bool = False) -> torch.Tensor:
    """The colour decorrelation (KLT) matrix of a dataset, for ``ToRGB(transform=matrix)``.

    Args:
        loader: an iterable of NCHW batches or ``(images, labels)`` pairs.
        normalize: divide by the largest column norm.

    Returns:
        The ``[C, C]`` KLT matrix of :func:`dataset_cov_matrix`.

    Example::

        >>> loader = [cat, cat.flip(-1)]  # cat: a [1, 3, 96, 96] photo; a list of batches is a loader too
        >>> klt = dataset_klt_matrix(loader, normalize=True)
        >>> klt[:, 0]  # the first direction is luminance, as in Lucid's ImageNet matrix
        tensor([0.5696, 0.5686, 0.5936])
        >>> to_rgb = opt.images.ToRGB(transform=klt)
        >>> to_rgb(torch.randn(1, 3, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """
    return cov_matrix_to_klt(dataset_cov_matrix(loader), normalize=normalize)
