"""Models: InceptionV1 / googlenet, VGG16, EfficientNet-Lite, layer utilities and a model registry."""
from ._layers import *  # noqa: F401,F403  RedirectedReLU, SkipLayer, replace_layers, Conv2dSame, ...
from ._utils import *  # noqa: F401,F403  get_model_layers, layer_info, collect_activations
from .googlenet import *  # noqa: F401,F403
from .vgg import *  # noqa: F401,F403
from .efficientnet_lite import *  # noqa: F401,F403
from .registry import *  # noqa: F401,F403
from ._labels import *  # noqa: F401,F403  INCEPTION5H_CLASSES, IMAGENET_CLASSES

from . import _layers, _utils, googlenet as _googlenet_mod, vgg as _vgg_mod  # noqa: E402
from . import efficientnet_lite as _effnet_mod, registry as _registry_mod, _labels as _labels_mod  # noqa: E402

__all__ = (
    list(_layers.__all__)
    + list(_utils.__all__)
    + list(_googlenet_mod.__all__)
    + list(_vgg_mod.__all__)
    + list(_effnet_mod.__all__)
    + list(_registry_mod.__all__)
    + list(_labels_mod.__all__)
)
