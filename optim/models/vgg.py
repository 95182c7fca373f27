"""VGG-16 as trained in Caffe by the Oxford Visual Geometry Group, with captum's module layout.

Layers live in ``features`` (an ``nn.Sequential``: convolution ``features.0``, its ReLU ``features.1``,
..., as in torchvision and captum), so captum's converted ``vgg16_caffe_features.pth`` loads unchanged.
"""
from __future__ import annotations

from typing import Any, List, Optional, Type, Union

import torch
import torch.nn as nn

from ._heads import pop_num_classes
from ._hub import WEIGHTS_SHA256
from ._input_range import warn_if_outside_unit_range
from ._layers import RedirectedReluLayer, SkipLayer
from ._utils import _load_pretrained

__all__ = ["vgg16", "VGG16", "VGG", "VGG16_CAFFE_URL", "VGG16_LAYERS"]

# captum's conversion of the Caffe VGG-16 (convolutional features only, no classifier).
VGG16_CAFFE_URL = "https://pytorch-tutorial-assets.s3.amazonaws.com/captum/vgg16_caffe_features.pth"
# no SHA-256 is published for it: see WEIGHTS_SHA256
WEIGHTS_SHA256.setdefault(VGG16_CAFFE_URL, None)

# Output channels of each 3x3 convolution; "P" is a 2x2/2 pooling layer.
VGG16_LAYERS: List[Union[int, str]] = (
    [64, 64, "P", 128, 128, "P"] + [256] * 3 + ["P"] + ([512] * 3 + ["P"]) * 2  # type: ignore[operator]
)

# Caffe's ImageNet mean, RGB order, on the 0-255 scale.
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)


def vgg16(
    pretrained: bool = False,
    *,
    progress: bool = True,
    model_path: Optional[str] = None,
    **kwargs: Any,
) -> "VGG16":
    """VGG-16 (`Very Deep Convolutional Networks <https://arxiv.org/abs/1409.1556>`_), Caffe weights.

    Args:
        pretrained: load captum's conversion of the Caffe ImageNet weights (features only). The
            defaults then become ``classifier_logits=False``, ``transform_input=True``,
            ``scale_input=True``; any of them can still be given.
        progress: keyword-only; show a progress bar while downloading.
        model_path: keyword-only; load the weights from this local file instead of downloading them. With
            ``pretrained=False`` the file is loaded into the model exactly as ``kwargs`` build it.
        kwargs: arguments of :class:`VGG16`, and ``num_classes`` (the same as VGG16's ``out_features``).
            ``num_classes`` adds the classifier (``classifier_logits=True``): the model then returns
            ``[N, num_classes]`` logits. The published weights cover the convolutional features only, so
            with ``pretrained=True`` the features are loaded and the whole classifier (three fully
            connected layers) is freshly initialised, as timm does for a new head.

    Returns:
        The model.

    Raises:
        ValueError: if the weights do not fit the model (missing/unexpected keys are named; e.g.
            ``classifier_logits=True`` with pretrained weights but no ``num_classes``), ``num_classes``
            with ``classifier_logits=False``, or ``num_classes`` below 1.

    Example:
        >>> import torch
        >>> with torch.device("meta"):  # shapes only: skips initialising 134M parameters
        ...     model = vgg16(num_classes=7)
        ...     model(torch.rand(1, 3, 224, 224)).shape
        torch.Size([1, 7])
        >>> model = vgg16(pretrained=True).eval()  # doctest: +SKIP
    """
    num_classes = pop_num_classes(kwargs, "out_features")
    if num_classes is not None:
        if kwargs.get("classifier_logits", True) is False:
            raise ValueError(
                f"num_classes={num_classes} needs the classifier, but classifier_logits=False was given; "
                "leave classifier_logits out (num_classes turns it on) or drop num_classes"
            )
        kwargs.update(classifier_logits=True, out_features=num_classes)
    if pretrained:
        defaults = dict(
            transform_input=True,
            scale_input=True,
            classifier_logits=False,
            replace_relus_with_redirectedrelu=False,
            use_linear_modules_only=False,
            out_features=1000,
        )
        kwargs = {**defaults, **kwargs}
    model = VGG16(**kwargs)
    if pretrained and num_classes is not None:
        # the published file has no classifier: load the features, keep the freshly built head
        head, model.classifier = model.classifier, None
        _load_pretrained(model, VGG16_CAFFE_URL, model_path, progress=progress)
        model.classifier = head
    elif pretrained or model_path is not None:
        _load_pretrained(model, VGG16_CAFFE_URL, model_path, progress=progress)
    return model


def _make_features(
    layers: List[Union[int, str]], activ: Type[nn.Module], pool: Type[nn.Module]
) -> nn.Sequential:
    """The convolutional trunk: a 3x3 convolution and activation per int, a 2x2/2 pool per "P"."""
    modules: List[nn.Module] = []
    in_channels = 3
    for spec in layers:
        if spec == "P":
            modules.append(pool(kernel_size=2, stride=2))
        elif isinstance(spec, int) and spec > 0:
            modules += [nn.Conv2d(in_channels, spec, kernel_size=3, padding=1), activ()]
            in_channels = spec
        else:
            raise ValueError(f"layers entries must be positive ints or 'P', got {spec!r}")
    return nn.Sequential(*modules)


class VGG16(nn.Module):
    """Caffe-style VGG-16: ``features`` (13 convolutions, 5 pools), ``avgpool``, optional ``classifier``.

    Args:
        out_features: classes of the classifier.
        transform_input: map an RGB input in [0, 1] to Caffe's input (x255, minus the ImageNet mean,
            RGB -> BGR).
        scale_input: with ``transform_input``, multiply by 255 first (set False for 0-255 inputs).
        classifier_logits: add the three fully connected layers (``classifier.0/3/6``).
        replace_relus_with_redirectedrelu: use :class:`RedirectedReluLayer` for every ReLU.
        use_linear_modules_only: every ReLU a ``SkipLayer`` (an identity) and every max pool an average pool.
        layers: the trunk layout (default :data:`VGG16_LAYERS`).

    Example:
        >>> with torch.device("meta"):  # shapes only
        ...     VGG16(classifier_logits=True)(torch.rand(2, 3, 224, 224)).shape
        torch.Size([2, 1000])
    """

    def __init__(
        self,
        out_features: int = 1000,
        transform_input: bool = True,
        scale_input: bool = True,
        classifier_logits: bool = False,
        replace_relus_with_redirectedrelu: bool = False,
        use_linear_modules_only: bool = False,
        layers: Optional[List[Union[int, str]]] = None,
    ) -> None:
        super().__init__()
        if not isinstance(out_features, int) or out_features <= 0:
            raise ValueError(f"out_features must be a positive int, got {out_features!r}")
        self.transform_input = bool(transform_input)
        self.scale_input = bool(scale_input)
        self.classifier_logits = bool(classifier_logits)
        if use_linear_modules_only:
            activ: Type[nn.Module] = SkipLayer  # an identity, as captum's linear variants use
            pool: Type[nn.Module] = nn.AvgPool2d
        else:
            activ = RedirectedReluLayer if replace_relus_with_redirectedrelu else nn.ReLU
            pool = nn.MaxPool2d
        self.features = _make_features(list(VGG16_LAYERS if layers is None else layers), activ, pool)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        last = [s for s in (VGG16_LAYERS if layers is None else layers) if isinstance(s, int)][-1]
        self.classifier: Optional[nn.Sequential] = None
        if classifier_logits:
            self.classifier = nn.Sequential(
                nn.Linear(last * 7 * 7, 4096),
                activ(),
                nn.Dropout(),
                nn.Linear(4096, 4096),
                activ(),
                nn.Dropout(),
                nn.Linear(4096, out_features),
            )
        self.register_buffer(
            "_mean", torch.tensor(_CAFFE_MEAN_RGB).view(1, 3, 1, 1), persistent=False
        )

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise ValueError("VGG16 expects an NCHW (or CHW) image tensor, got " + str(x.dim()) + " dimensions")
        if self.transform_input:
            if self.scale_input:
                if not torch.jit.is_scripting():
                    warn_if_outside_unit_range(x, "VGG16")
                x = x * 255
            x = x - self._mean.to(x.dtype)
            x = x[:, [2, 1, 0]]  # Caffe was trained on BGR
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(self._transform_input(x)))
        if self.classifier is not None:
            x = self.classifier(torch.flatten(x, 1))
        return x


class VGG(VGG16):
    """captum's name and argument order for the same network: ``VGG(layers, out_features=1000, ...)``.

    Args:
        layers: the trunk layout: output channels of each 3x3 convolution, ``"P"`` for each 2x2 pool
            (:data:`VGG16_LAYERS` for VGG-16).
        out_features: classes of the classifier.
        transform_input: see :class:`VGG16`.
        scale_input: see :class:`VGG16`.
        classifier_logits: see :class:`VGG16`.
        replace_relus_with_redirectedrelu: see :class:`VGG16`.
        use_linear_modules_only: see :class:`VGG16`.

    Example:
        >>> VGG([8, "P", 16], transform_input=False)(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 16, 7, 7])
    """

    def __init__(
        self,
        layers: List[Union[int, str]],
        out_features: int = 1000,
        transform_input: bool = True,
        scale_input: bool = True,
        classifier_logits: bool = False,
        replace_relus_with_redirectedrelu: bool = False,
        use_linear_modules_only: bool = False,
    ) -> None:
        super().__init__(
            out_features=out_features,
            transform_input=transform_input,
            scale_input=scale_input,
            classifier_logits=classifier_logits,
            replace_relus_with_redirectedrelu=replace_relus_with_redirectedrelu,
            use_linear_modules_only=use_linear_modules_only,
            layers=layers,
        )
