"""InceptionV1 (GoogLeNet, "inception5h"): the network of Lucid and of the Distill circuits papers.

The module tree and state-dict keys match captum's published ``inception5h.pth`` (a conversion of
Lucid's TensorFlow graph), so that file loads unchanged and layer names such as ``"mixed4a"`` or
``"mixed4a.conv_3x3"`` mean what they mean in Lucid and captum.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Type, Union

import torch
import torch.nn as nn

from ._heads import fresh_linear, pop_num_classes
from ._hub import WEIGHTS_SHA256
from ._input_range import warn_if_outside_unit_range
from ._layers import Conv2dSame, RedirectedReluLayer, SkipLayer
from ._utils import _load_pretrained

__all__ = ["googlenet", "InceptionV1", "InceptionModule", "AuxBranch", "INCEPTION5H_URL"]

# captum's conversion of Lucid's inception5h.
INCEPTION5H_URL = "https://github.com/pytorch/captum/raw/optim-wip/captum/optim/_models/inception5h.pth"
# captum publishes no SHA-256 for it (and the file name has no hash prefix for torch.hub to check): ``None``
# until a verified digest is pinned; meanwhile the first download's digest is recorded and checked.
WEIGHTS_SHA256.setdefault(INCEPTION5H_URL, None)

# TensorFlow's LRN (depth_radius=5, alpha=1e-4, beta=0.5, bias=2) in torch's parameterization
# (size = 2 * radius + 1, alpha multiplied by size).
_LRN_ARGS = (11, 0.0011, 0.5, 2.0)
# the classifier size of the inception5h weights: a "dummy" class, the 1000 ImageNet classes, 7 unused
_INCEPTION5H_CLASSES = 1008


def googlenet(
    pretrained: bool = False,
    *,
    progress: bool = True,
    model_path: Optional[str] = None,
    **kwargs: Any,
) -> "InceptionV1":
    """InceptionV1 / GoogLeNet (`Going Deeper with Convolutions <https://arxiv.org/abs/1409.4842>`_).

    Args:
        pretrained: load captum's inception5h ImageNet weights (1008 classes), downloaded once from
            ``INCEPTION5H_URL`` into torch.hub's cache and checked by SHA-256 (``WEIGHTS_SHA256[INCEPTION5H_URL]``, or
            the digest recorded at the first download while none is pinned). The defaults then become
            ``transform_input=True``, ``replace_relus_with_redirectedrelu=True``, ``aux_logits=False``,
            ``bgr_transform=False``, ``use_linear_modules_only=False``; any of them can still be given.
        progress: keyword-only; show a progress bar while downloading.
        model_path: keyword-only; load the weights from this local file instead of downloading them. With
            ``pretrained=False`` the file is loaded into the model exactly as ``kwargs`` build it
            (``num_classes`` included).
        kwargs: arguments of :class:`InceptionV1`, and ``num_classes`` (the same as InceptionV1's
            ``out_features``). With pretrained weights and a ``num_classes`` other than 1008, the backbone
            is loaded and ``fc`` (and the auxiliary classifiers' ``loss_classifier``, if any) is replaced by
            a freshly initialised ``nn.Linear``, as timm does.

    Returns:
        The model (in training mode, as built by ``nn.Module``; call ``.eval()`` for inference).

    Raises:
        ValueError: if the weights do not fit the model (missing/unexpected keys are named), the cached
            download fails its SHA-256 check (it is deleted), or ``num_classes`` is below 1 or disagrees
            with ``out_features``.

    Example:
        >>> import torch
        >>> model = googlenet(num_classes=7).eval()
        >>> model(torch.rand(1, 3, 96, 96)).shape
        torch.Size([1, 7])
        >>> model = googlenet(pretrained=True).eval()  # doctest: +SKIP
    """
    num_classes = pop_num_classes(kwargs, "out_features")
    if not pretrained:
        if num_classes is not None:
            kwargs["out_features"] = num_classes
        model = InceptionV1(**kwargs)
        if model_path is not None:
            _load_pretrained(model, INCEPTION5H_URL, model_path, progress=progress)
        return model
    defaults = dict(
        transform_input=True,
        bgr_transform=False,
        replace_relus_with_redirectedrelu=True,
        use_linear_modules_only=False,
        aux_logits=False,
    )
    model = InceptionV1(**{**defaults, **kwargs}, out_features=_INCEPTION5H_CLASSES)
    _load_pretrained(model, INCEPTION5H_URL, model_path, progress=progress)
    if num_classes is not None and num_classes != _INCEPTION5H_CLASSES:
        model.fc = fresh_linear(model.fc, num_classes)
        for aux in (model.aux1, model.aux2):
            if aux is not None:
                aux.loss_classifier = fresh_linear(aux.loss_classifier, num_classes)
    return model


def _layer_types(
    replace_relus_with_redirectedrelu: bool, use_linear_modules_only: bool
) -> Tuple[Type[nn.Module], Type[nn.Module]]:
    """The activation and pooling classes of a model variant."""
    if use_linear_modules_only:
        return SkipLayer, _AvgPoolLikeMax
    return (RedirectedReluLayer if replace_relus_with_redirectedrelu else nn.ReLU), nn.MaxPool2d


class _AvgPoolLikeMax(nn.AvgPool2d):
    """Average pooling standing in for a max pool of the same geometry (padding left out of the mean)."""

    def __init__(self, kernel_size: int, stride: int, padding: int = 0, ceil_mode: bool = False) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad=False)


class InceptionV1(nn.Module):
    """InceptionV1 with Lucid's layer names (``conv1`` ... ``mixed3a`` ... ``mixed5b``, ``fc``).

    Args:
        out_features: number of classes (1008 for inception5h).
        aux_logits: add the two auxiliary classifiers ``aux1`` (after ``mixed4a``) and ``aux2`` (after
            ``mixed4d``); forward then returns ``(logits, aux1, aux2)``.
        transform_input: map an RGB input in [0, 1] to the network's range, ``x * 255 - 117`` (and warn, as
            captum does, when the input leaves [0, 1]; see ``optim.models._input_range``).
        bgr_transform: with ``transform_input``, also reorder the channels RGB -> BGR.
        replace_relus_with_redirectedrelu: use :class:`RedirectedReluLayer` for every ReLU.
        use_linear_modules_only: the linear variant for circuits: every ReLU a :class:`SkipLayer` (an
            identity, as in captum, so the variant is recognisable) and every max pool an average pool of the
            same geometry.

    Example:
        >>> model = InceptionV1(use_linear_modules_only=True)
        >>> type(model.conv1_relu).__name__, type(model.pool1).__name__
        ('SkipLayer', '_AvgPoolLikeMax')
    """

    def __init__(
        self,
        out_features: int = 1008,
        aux_logits: bool = False,
        transform_input: bool = False,
        bgr_transform: bool = False,
        replace_relus_with_redirectedrelu: bool = False,
        use_linear_modules_only: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(out_features, int) or out_features <= 0:
            raise ValueError(f"out_features must be a positive int, got {out_features!r}")
        self.aux_logits = bool(aux_logits)
        self.transform_input = bool(transform_input)
        self.bgr_transform = bool(bgr_transform)
        activ, pool = _layer_types(replace_relus_with_redirectedrelu, use_linear_modules_only)
        self._build_layers(out_features, aux_logits, activ, pool)

    #: ``(in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection)`` channels of each mixed block
    #: (inception5h's; the Places365 model overrides a few)
    BLOCK_WIDTHS: Dict[str, Tuple[int, int, int, int, int, int, int]] = {
        "mixed3a": (192, 64, 96, 128, 16, 32, 32),
        "mixed3b": (256, 128, 128, 192, 32, 96, 64),
        "mixed4a": (480, 192, 96, 204, 16, 48, 64),
        "mixed4b": (508, 160, 112, 224, 24, 64, 64),
        "mixed4c": (512, 128, 128, 256, 24, 64, 64),
        "mixed4d": (512, 112, 144, 288, 32, 64, 64),
        "mixed4e": (528, 256, 160, 320, 32, 128, 128),
        "mixed5a": (832, 256, 160, 320, 48, 128, 128),
        "mixed5b": (832, 384, 192, 384, 48, 128, 128),
    }

    def _aux_branch(self, in_channels: int, out_features: int, activ: Type[nn.Module]) -> nn.Module:
        return AuxBranch(in_channels, out_features, activ)

    def _build_layers(self, out_features: int, aux_logits: bool, activ: Type[nn.Module], pool: Type[nn.Module]) -> None:
        """Every layer, in Lucid's order and names, with this class's :attr:`BLOCK_WIDTHS` and auxiliary branch."""
        widths = self.BLOCK_WIDTHS

        def mixed(name: str) -> InceptionModule:
            return InceptionModule(*widths[name], activ, pool)

        self.conv1 = Conv2dSame(3, 64, kernel_size=7, stride=2)
        self.conv1_relu = activ()
        self.pool1 = pool(kernel_size=3, stride=2, padding=0, ceil_mode=True)
        self.local_response_norm1 = nn.LocalResponseNorm(*_LRN_ARGS)

        self.conv2 = nn.Conv2d(64, 64, kernel_size=1)
        self.conv2_relu = activ()
        self.conv3 = Conv2dSame(64, 192, kernel_size=3)
        self.conv3_relu = activ()
        self.local_response_norm2 = nn.LocalResponseNorm(*_LRN_ARGS)
        self.pool2 = pool(kernel_size=3, stride=2, padding=0, ceil_mode=True)

        self.mixed3a = mixed("mixed3a")
        self.mixed3a_relu = activ()
        self.mixed3b = mixed("mixed3b")
        self.mixed3b_relu = activ()
        self.pool3 = pool(kernel_size=3, stride=2, padding=0, ceil_mode=True)

        self.mixed4a = mixed("mixed4a")
        self.mixed4a_relu = activ()
        self.aux1: Optional[nn.Module] = (
            self._aux_branch(widths["mixed4b"][0], out_features, activ) if aux_logits else None
        )
        self.mixed4b = mixed("mixed4b")
        self.mixed4b_relu = activ()
        self.mixed4c = mixed("mixed4c")
        self.mixed4c_relu = activ()
        self.mixed4d = mixed("mixed4d")
        self.mixed4d_relu = activ()
        self.aux2: Optional[nn.Module] = (
            self._aux_branch(widths["mixed4e"][0], out_features, activ) if aux_logits else None
        )
        self.mixed4e = mixed("mixed4e")
        self.mixed4e_relu = activ()
        self.pool4 = pool(kernel_size=3, stride=2, padding=0, ceil_mode=True)

        self.mixed5a = mixed("mixed5a")
        self.mixed5a_relu = activ()
        self.mixed5b = mixed("mixed5b")
        self.mixed5b_relu = activ()

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.drop = nn.Dropout(0.4000000059604645)
        self.fc = nn.Linear(1024, out_features)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise ValueError("InceptionV1 expects an NCHW (or CHW) image tensor, got " + str(x.dim()) + " dimensions")
        if self.transform_input:
            if not torch.jit.is_scripting():
                warn_if_outside_unit_range(x, "InceptionV1")
            x = x * 255 - 117
            if self.bgr_transform:
                x = x[:, [2, 1, 0]]
        return x

    def forward(
        self, x: torch.Tensor
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        x = self._transform_input(x)
        x = self.local_response_norm1(self.pool1(self.conv1_relu(self.conv1(x))))
        x = self.conv2_relu(self.conv2(x))
        x = self.local_response_norm2(self.conv3_relu(self.conv3(x)))
        x = self.pool2(x)
        x = self.mixed3a_relu(self.mixed3a(x))
        x = self.mixed3b_relu(self.mixed3b(x))
        x = self.pool3(x)
        x = self.mixed4a_relu(self.mixed4a(x))
        aux1 = self.aux1(x) if self.aux1 is not None else None
        x = self.mixed4b_relu(self.mixed4b(x))
        x = self.mixed4c_relu(self.mixed4c(x))
        x = self.mixed4d_relu(self.mixed4d(x))
        aux2 = self.aux2(x) if self.aux2 is not None else None
        x = self.mixed4e_relu(self.mixed4e(x))
        x = self.pool4(x)
        x = self.mixed5a_relu(self.mixed5a(x))
        x = self.mixed5b_relu(self.mixed5b(x))
        x = torch.flatten(self.avgpool(x), 1)
        x = self.fc(self.drop(x))
        if aux1 is not None and aux2 is not None:
            return x, aux1, aux2
        return x


class InceptionModule(nn.Module):
    """One inception block: 1x1, 1x1->3x3, 1x1->5x5 and pool->1x1 branches, concatenated.

    Args:
        in_channels: input channels.
        c1x1: channels of the 1x1 branch.
        c3x3reduce: channels of the 1x1 reduction before the 3x3 convolution.
        c3x3: channels of the 3x3 branch.
        c5x5reduce: channels of the 1x1 reduction before the 5x5 convolution.
        c5x5: channels of the 5x5 branch.
        pool_proj: channels of the pooling branch's 1x1 projection.
        activ: activation class after the reductions.
        p_layer: pooling class of the pooling branch.

    Example:
        >>> block = InceptionModule(192, 64, 96, 128, 16, 32, 32)  # mixed3a
        >>> block(torch.rand(1, 192, 28, 28)).shape
        torch.Size([1, 256, 28, 28])
    """

    def __init__(
        self,
        in_channels: int,
        c1x1: int,
        c3x3reduce: int,
        c3x3: int,
        c5x5reduce: int,
        c5x5: int,
        pool_proj: int,
        activ: Type[nn.Module] = nn.ReLU,
        p_layer: Type[nn.Module] = nn.MaxPool2d,
    ) -> None:
        super().__init__()
        self.conv_1x1 = nn.Conv2d(in_channels, c1x1, kernel_size=1)
        self.conv_3x3_reduce = nn.Conv2d(in_channels, c3x3reduce, kernel_size=1)
        self.conv_3x3_reduce_relu = activ()
        self.conv_3x3 = Conv2dSame(c3x3reduce, c3x3, kernel_size=3)
        self.conv_5x5_reduce = nn.Conv2d(in_channels, c5x5reduce, kernel_size=1)
        self.conv_5x5_reduce_relu = activ()
        self.conv_5x5 = Conv2dSame(c5x5reduce, c5x5, kernel_size=5)
        self.pool = p_layer(kernel_size=3, stride=1, padding=1, ceil_mode=True)
        self.pool_proj = nn.Conv2d(in_channels, pool_proj, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1x1 = self.conv_1x1(x)
        c3x3 = self.conv_3x3(self.conv_3x3_reduce_relu(self.conv_3x3_reduce(x)))
        c5x5 = self.conv_5x5(self.conv_5x5_reduce_relu(self.conv_5x5_reduce(x)))
        px = self.pool_proj(self.pool(x))
        return torch.cat([c1x1, c3x3, c5x5, px], dim=1)


class AuxBranch(nn.Module):
    """Auxiliary classifier of InceptionV1 (``loss_conv`` -> ``loss_fc`` -> ``loss_classifier``).

    Args:
        in_channels: channels of the feature map it reads.
        out_features: number of classes.
        activ: activation class.

    Example:
        >>> aux = AuxBranch(508, 1008).eval()
        >>> aux(torch.rand(1, 508, 14, 14)).shape
        torch.Size([1, 1008])
    """

    def __init__(
        self, in_channels: int = 508, out_features: int = 1008, activ: Type[nn.Module] = nn.ReLU
    ) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d((4, 4))
        self.loss_conv = nn.Conv2d(in_channels, 128, kernel_size=1)
        self.loss_conv_relu = activ()
        self.loss_fc = nn.Linear(2048, 1024)
        self.loss_fc_relu = activ()
        self.loss_dropout = nn.Dropout(0.699999988079071)
        self.loss_classifier = nn.Linear(1024, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.loss_conv_relu(self.loss_conv(self.avg_pool(x)))
        x = self.loss_fc_relu(self.loss_fc(torch.flatten(x, 1)))
        return self.loss_classifier(self.loss_dropout(x))
