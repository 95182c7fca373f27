"""Models: InceptionV1 / googlenet (ImageNet and Places365), VGG16, EfficientNet-Lite, CLIP ResNet-50x4's
towers, layer utilities and a model registry."""
from . import _fold as _fold_mod
from . import _hub as _hub_mod
from . import _labels as _labels_mod
from . import _layers as _layers_mod
from . import _utils as _utils_mod
from . import clip as _clip_mod
from . import efficientnet_lite as _effnet_mod
from . import googlenet as _googlenet_mod
from . import googlenet_places365 as _places_mod
from . import preprocess as _preprocess_mod
from . import registry as _registry_mod
from . import selection as _selection_mod
from . import vgg as _vgg_mod

_SUBMODULES = (
    _hub_mod, _layers_mod, _fold_mod, _utils_mod, _googlenet_mod, _places_mod, _clip_mod, _vgg_mod, _effnet_mod,
    _registry_mod, _labels_mod, _preprocess_mod, _selection_mod,
)

# The star-imports come after the module aliases: `googlenet` and `vgg16` then name the factories.
from ._fold import *  # noqa: E402,F401,F403  fold_batchnorm, conv_bn_pairs
from ._hub import *  # noqa: E402,F401,F403  WEIGHTS_SHA256, file_sha256, load_verified_state_dict
from ._labels import *  # noqa: E402,F401,F403  INCEPTION5H_CLASSES, IMAGENET_CLASSES
from ._layers import *  # noqa: E402,F401,F403  RedirectedReLU, SkipLayer, replace_layers, Conv2dSame, ...
from ._utils import *  # noqa: E402,F401,F403  get_model_layers, layer_info, collect_activations
from .efficientnet_lite import *  # noqa: E402,F401,F403
from .clip import *  # noqa: E402,F401,F403
from .googlenet import *  # noqa: E402,F401,F403
from .googlenet_places365 import *  # noqa: E402,F401,F403
from .preprocess import *  # noqa: E402,F401,F403  input_config, InputConfig, render_inputs
from .registry import *  # noqa: E402,F401,F403
from .selection import *  # noqa: E402,F401,F403  class_index, model_labels, layer_table, parse_channels
from .vgg import *  # noqa: E402,F401,F403

__all__ = [name for module in _SUBMODULES for name in module.__all__]


def __getattr__(name: str):
    # ModelInspector lives in optim.analysis (it builds on the models, not the other way round).
    if name == "ModelInspector":
        from ..analysis.inspector import ModelInspector

        return ModelInspector
    raise AttributeError(f"module 'optim.models' has no attribute {name!r}")
