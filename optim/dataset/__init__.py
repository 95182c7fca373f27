"""Dataset statistics: channel covariance, the KLT colour decorrelation matrix, and the mean spectrum.

Example::

    import optim as opt
    klt = opt.dataset.dataset_klt_matrix(loader)        # for ToRGB(transform=klt)
    magnitude = opt.dataset.dataset_spectrum(loader, 128)  # for PhaseImage(magnitude=...)
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
