"""opt.images: image tensors, display helpers, colour recorrelation and image parameterizations.

Every parameterization is an ``nn.Module`` whose ``forward()`` takes no argument and returns an NCHW
tensor; ``NaturalImage`` composes one with colour recorrelation and a squash into ``[0, 1]``.

All of them share the constructor ``(size, channels, batch, init, *, knobs...)`` (``StackImage``, built
from ready parts, takes its geometry from them) and ``reset_parameters(generators=None)``, which re-draws
the random initial state, image ``i`` from ``generators[i]`` when given, so an image is the same alone or
in a batch. The colour recorrelation (``ToRGB``) lives in ``optim.images.decorrelation``.

Example::

    >>> import torch
    >>> import optim as opt
    >>> image = opt.images.NaturalImage((32, 32), 3, 2)    # FFTImage + ToRGB("klt") + sigmoid
    >>> image.reset_parameters([torch.Generator().manual_seed(s) for s in (7, 8)])
    >>> alone = opt.images.NaturalImage((32, 32))
    >>> alone.reset_parameters([torch.Generator().manual_seed(8)])
    >>> torch.equal(image()[1], alone()[0])
    True
"""
from .base import ImageParameterization, InputParameterization
from .decorrelation import ToRGB
from .cppn import CPPNImage
from .display import make_grid_image, save_tensor_as_image, show
from .fft import FFTImage, rfft2d_freqs
from .image_tensor import ImageTensor
from .laplacian import LaplacianImage
from .natural import NaturalImage, logit
from .phase import PhaseImage
from .pixel import PixelImage
from .shared import SharedImage
from .simple import SimpleTensorParameterization
from .squash import AlgebraicSigmoid
from .stack import StackImage

__all__ = [
    "ImageTensor",
    "InputParameterization",
    "ImageParameterization",
    "SimpleTensorParameterization",
    "PixelImage",
    "FFTImage",
    "LaplacianImage",
    "SharedImage",
    "StackImage",
    "NaturalImage",
    "PhaseImage",
    "CPPNImage",
    "AlgebraicSigmoid",
    "ToRGB",
    "rfft2d_freqs",
    "logit",
    "show",
    "save_tensor_as_image",
    "make_grid_image",
]
