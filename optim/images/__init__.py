"""opt.images: image tensors, display helpers, colour recorrelation and image parameterizations.

Every parameterization is an ``nn.Module`` whose ``forward()`` takes no argument and returns an NCHW
tensor; ``NaturalImage`` composes one with colour recorrelation and a squash into ``[0, 1]``.

Example::

    import optim as opt
    image = opt.images.NaturalImage((128, 128))        # FFTImage + ToRGB("klt") + sigmoid
    image().show()
"""
from .base import ImageParameterization
from .color import ToRGB
from .cppn import CPPNImage
from .display import make_grid_image, save_tensor_as_image, show
from .fft import FFTImage, rfft2d_freqs
from .image_tensor import ImageTensor
from .laplacian import LaplacianImage
from .natural import NaturalImage, logit
from .phase import PhaseImage
from .pixel import PixelImage
from .shared import SharedImage
from .stack import StackImage

__all__ = [
    "ImageTensor",
    "ImageParameterization",
    "PixelImage",
    "FFTImage",
    "LaplacianImage",
    "SharedImage",
    "StackImage",
    "NaturalImage",
    "PhaseImage",
    "CPPNImage",
    "ToRGB",
    "rfft2d_freqs",
    "logit",
    "show",
    "save_tensor_as_image",
    "make_grid_image",
]
