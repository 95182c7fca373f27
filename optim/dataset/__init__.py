"""Dataset statistics: channel covariance, the KLT colour decorrelation matrix, and the mean spectrum.

Example (any iterable of NCHW batches or ``(images, labels)`` pairs is a loader)::

    >>> import functools
    >>> import optim as opt
    >>> dataset = torch.utils.data.TensorDataset(torch.rand(8, 3, 64, 64), torch.zeros(8))
    >>> loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    >>> klt = opt.dataset.dataset_klt_matrix(loader)
    >>> to_rgb = opt.images.ToRGB(transform=klt)
    >>> magnitude = opt.dataset.dataset_spectrum(loader, 64)  # [3, 64, 33]
    >>> phase = functools.partial(opt.images.PhaseImage, magnitude=magnitude)
    >>> image = opt.images.NaturalImage((64, 64), parameterization=phase, decorrelation_module=to_rgb)
    >>> image().shape
    torch.Size([1, 3, 64, 64])
"""
from ._color import cov_matrix_to_klt, dataset_cov_matrix, dataset_klt_matrix, image_cov, iter_image_batches
from ._spectrum import dataset_spectrum

__all__ = [
    "image_cov",
    "dataset_cov_matrix",
    "cov_matrix_to_klt",
    "dataset_klt_matrix",
    "dataset_spectrum",
    "iter_image_batches",
]
