"""Differentiable image transforms for transformation robustness (kornia-style modules and functions).

Every transform is an ``nn.Module`` mapping an NCHW tensor to an NCHW tensor, draws its randomness from
torch (``torch.manual_seed`` reproduces a render), is differentiable with respect to its input and works
under ``torch.jit.script``. Random modules expose ``sample_params``/``apply_params`` to rerun a transform with
fixed parameters. :class:`TransformationRobustness` is the default stack, fused into a single resampling.

Example::

    >>> import optim as opt
    >>> transform = opt.transforms.TransformationRobustness()
    >>> transform(torch.rand(1, 3, 224, 224)).shape
    torch.Size([1, 3, 228, 228])
    >>> jitter = opt.transforms.RandomSpatialJitter(4)
    >>> x = torch.rand(1, 3, 32, 32)
    >>> shift = jitter.sample_params()  # one random draw, replayed
    >>> torch.equal(jitter.apply_params(x, *shift), jitter.apply_params(x, *shift))
    True
"""
from .color import BlendAlpha, IgnoreAlpha, NChannelsToRGB, RGBToBGR, ScaleInputRange, hue_to_rgb, nchannels_to_rgb
from .crop import CenterCrop, RandomCrop, center_crop
from .filters import GaussianSmoothing
from .normalize import Normalize, normalize
from .geometric import RandomRotation, RandomScale, RandomScaleAffine, RandomSpatialJitter, spatial_jitter
from .padding import SymmetricPad2d, SymmetricPadding, symmetric_pad
from .robustness import TransformationRobustness

__all__ = [
    "BlendAlpha",
    "IgnoreAlpha",
    "ScaleInputRange",
    "RGBToBGR",
    "NChannelsToRGB",
    "hue_to_rgb",
    "nchannels_to_rgb",
    "CenterCrop",
    "center_crop",
    "RandomCrop",
    "GaussianSmoothing",
    "Normalize",
    "normalize",
    "RandomSpatialJitter",
    "spatial_jitter",
    "RandomScale",
    "RandomScaleAffine",
    "RandomRotation",
    "SymmetricPadding",
    "SymmetricPad2d",
    "symmetric_pad",
    "TransformationRobustness",
]


def __getattr__(name: str):
    # captum keeps ToRGB among the transforms; optim's lives with the images (optim.images.ToRGB), loaded on
    # first use so that the transforms package keeps needing nothing but torch
    if name == "ToRGB":
        from ..images.decorrelation import ToRGB

        return ToRGB
    raise AttributeError(f"module 'optim.transforms' has no attribute {name!r}")
