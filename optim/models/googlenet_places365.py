"""InceptionV1 trained on MIT Places365-Standard (Zhou et al. 2017, https://arxiv.org/abs/1610.02055).

The module tree and state-dict keys are those of the weights captum publishes (``inceptionv1_places365.pth``,
a conversion of the Places365 Caffe GoogLeNet), so that file loads unchanged. The network is InceptionV1 with
the Caffe model's channel counts (``mixed4a`` has 208 3x3 channels, not inception5h's 204) and its own
auxiliary classifiers (``aux1`` after ``mixed4a``, ``aux2`` after ``mixed4d``; ``conv`` -> ``fc1`` -> ``fc2``).
The 365 outputs are the scene categories of ``INCEPTIONV1_PLACES365_CLASSES``, in the dataset's order.
"""
from __future__ import annotations

from typing import Any, Optional, Type

import torch
import torch.nn as nn

from ._heads import fresh_linear, pop_num_classes
from ._hub import WEIGHTS_SHA256
from ._input_range import warn_if_outside_unit_range
from ._utils import _load_pretrained
from .googlenet import InceptionV1

__all__ = ["googlenet_places365", "InceptionV1Places365", "PlacesAuxBranch", "PLACES365_URL"]

# captum's conversion of the Places365 GoogLeNet.
PLACES365_URL = "https://pytorch-tutorial-assets.s3.amazonaws.com/captum/inceptionv1_places365.pth"
# no digest is published: the first download's is recorded and checked (see optim.models._hub)
WEIGHTS_SHA256.setdefault(PLACES365_URL, None)

# the Places365 mean pixel (RGB, on the 0-255 scale) the Caffe model was trained with
_PLACES_MEAN_RGB = (116.7894, 112.6004, 104.0437)
_PLACES365_CLASSES = 365


def googlenet_places365(
    pretrained: bool = False,
    *,
    progress: bool = True,
    model_path: Optional[str] = None,
    **kwargs: Any,
) -> "InceptionV1Places365":
    """InceptionV1 / GoogLeNet trained on Places365-Standard (captum's ``googlenet_places365``).

    Args:
        pretrained: load captum's Places365 weights, downloaded once from ``PLACES365_URL`` into torch.hub's
            cache and checked by SHA-256 (``WEIGHTS_SHA256[PLACES365_URL]``, or the digest recorded at the first
            download while none is pinned). The defaults then become ``transform_input=True``,
            ``replace_relus_with_redirectedrelu=True``, ``use_linear_modules_only=False`` and
            ``aux_logits=False`` (the auxiliary classifiers are loaded, then dropped, so ``model(x)`` is the
            logits; captum keeps them by default: pass ``aux_logits=True`` for its ``(logits, aux1, aux2)``).
        progress: keyword-only; show a progress bar while downloading.
        model_path: keyword-only; load the weights from this local file instead. With ``pretrained=False``
            the file is loaded into the model exactly as ``kwargs`` build it.
        kwargs: arguments of :class:`InceptionV1Places365` (whose ``aux_logits`` defaults to False here, with or
            without pretrained weights, so that ``model(x)`` is the logits), and ``num_classes`` (its
            ``out_features``): with
            pretrained weights and another class count, the backbone is loaded and ``fc`` (and ``aux*.fc2``)
            replaced by freshly initialised layers.

    Returns:
        The model (in training mode, as built by ``nn.Module``; call ``.eval()`` for inference).

    Raises:
        ValueError: weights that do not fit (missing/unexpected keys are named), a cached download that fails
            its SHA-256 check (it is deleted), a bad ``num_classes``.

    Example:
        >>> model = googlenet_places365(num_classes=5).eval()
        >>> model(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 5])
        >>> model = googlenet_places365(pretrained=True).eval()  # doctest: +SKIP

    ``INCEPTIONV1_PLACES365_CLASSES[int(model(image).argmax())]`` names the predicted scene.
    """
    num_classes = pop_num_classes(kwargs, "out_features")
    if not pretrained:
        if num_classes is not None:
            kwargs["out_features"] = num_classes
        kwargs.setdefault("aux_logits", False)
        model = InceptionV1Places365(**kwargs)
        if model_path is not None:
            _load_pretrained(model, PLACES365_URL, model_path, progress=progress)
        return model
    defaults = dict(
        transform_input=True,
        replace_relus_with_redirectedrelu=True,
        use_linear_modules_only=False,
        aux_logits=False,
    )
    options = {**defaults, **kwargs}
    keep_aux = bool(options.pop("aux_logits"))
    # the published file holds the auxiliary classifiers: load them, then drop them unless asked for
    model = InceptionV1Places365(**options, aux_logits=True, out_features=_PLACES365_CLASSES)
    _load_pretrained(model, PLACES365_URL, model_path, progress=progress)
    if not keep_aux:
        model.aux1 = None
        model.aux2 = None
        model.aux_logits = False
    if num_classes is not None and num_classes != _PLACES365_CLASSES:
        model.fc = fresh_linear(model.fc, num_classes)
        for aux in (model.aux1, model.aux2):
            if aux is not None:
                aux.fc2 = fresh_linear(aux.fc2, num_classes)
    return model


class InceptionV1Places365(InceptionV1):
    """InceptionV1 with the Places365 Caffe model's channel counts and captum's layer names.

    Args:
        out_features: number of classes (365).
        aux_logits: add the auxiliary classifiers ``aux1`` and ``aux2``; forward then returns
            ``(logits, aux1, aux2)``.
        transform_input: map an RGB input in [0, 1] to the network's input: ``x * 255`` minus the Places365 mean
            pixel, RGB -> BGR (and warn when the input leaves [0, 1], as captum does).
        replace_relus_with_redirectedrelu: use ``RedirectedReluLayer`` for every ReLU.
        use_linear_modules_only: every ReLU a ``SkipLayer`` and every max pool an average pool (for circuits).

    Example:
        >>> model = InceptionV1Places365(aux_logits=False).eval()
        >>> model(torch.rand(1, 3, 96, 96)).shape
        torch.Size([1, 365])
        >>> model.mixed4a.conv_3x3.out_channels  # inception5h's mixed4a has 204
        208
    """

    BLOCK_WIDTHS = {
        **InceptionV1.BLOCK_WIDTHS,
        "mixed4a": (480, 192, 96, 208, 16, 48, 64),
        "mixed4b": (512, 160, 112, 224, 24, 64, 64),
        "mixed5a": (832, 256, 160, 320, 32, 128, 128),
    }

    def __init__(
        self,
        out_features: int = _PLACES365_CLASSES,
        aux_logits: bool = True,
        transform_input: bool = True,
        replace_relus_with_redirectedrelu: bool = False,
        use_linear_modules_only: bool = False,
    ) -> None:
        if not isinstance(out_features, int) or isinstance(out_features, bool) or out_features <= 0:
            raise ValueError(f"out_features must be a positive int, got {out_features!r}")
        super().__init__(
            out_features,
            aux_logits=aux_logits,
            transform_input=transform_input,
            replace_relus_with_redirectedrelu=replace_relus_with_redirectedrelu,
            use_linear_modules_only=use_linear_modules_only,
        )
        self.register_buffer("_mean", torch.tensor(_PLACES_MEAN_RGB).view(1, 3, 1, 1), persistent=False)

    def _aux_branch(self, in_channels: int, out_features: int, activ: Type[nn.Module]) -> nn.Module:
        return PlacesAuxBranch(in_channels, out_features, activ)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise ValueError(
                "InceptionV1Places365 expects an NCHW (or CHW) image tensor, got " + str(x.dim()) + " dimensions"
            )
        if self.transform_input:
            if not torch.jit.is_scripting():
                warn_if_outside_unit_range(x, "InceptionV1Places365")
            x = x * 255 - self._mean.to(x.dtype)
            x = x[:, [2, 1, 0]]  # the Caffe model reads BGR
        return x


class PlacesAuxBranch(nn.Module):
    """An auxiliary classifier of the Places365 InceptionV1 (``conv`` -> ``fc1`` -> ``fc2``).

    Args:
        in_channels: channels of the feature map it reads (512 after ``mixed4a``, 528 after ``mixed4d``).
        out_features: number of classes.
        activ: activation class.

    Example:
        >>> PlacesAuxBranch(512, 365).eval()(torch.rand(1, 512, 14, 14)).shape
        torch.Size([1, 365])
    """

    def __init__(
        self, in_channels: int = 512, out_features: int = _PLACES365_CLASSES, activ: Type[nn.Module] = nn.ReLU
    ) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d((4, 4))
        self.conv = nn.Conv2d(in_channels, 128, kernel_size=1)
        self.conv_relu = activ()
        self.fc1 = nn.Linear(2048, 1024)
        self.fc1_relu = activ()
        self.dropout = nn.Dropout(0.699999988079071)
        self.fc2 = nn.Linear(1024, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_relu(self.conv(self.avg_pool(x)))
        x = self.fc1_relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(self.dropout(x))
