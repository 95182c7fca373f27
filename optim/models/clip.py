"""The image and text towers of OpenAI's CLIP ResNet-50x4 (Radford et al. 2021, https://arxiv.org/abs/2103.00020).

The towers of the model behind "Multimodal Neurons in Artificial Neural Networks" (Goh et al., Distill 2021).
Module trees and state-dict keys are those of the weights captum publishes (``clip_resnet50x4_image.pt``,
``clip_resnet50x4_text.pt``), so those files load unchanged.

- Image tower: a ResNet with a three-convolution stem, anti-aliased strided blocks (an average pool before each
  strided convolution and in each downsampling shortcut) and an attention pool that reads out a 640-d embedding.
  Its native input is 288 x 288 (a 9 x 9 grid at ``layer4``); at other sizes the attention pool's positional
  embedding is resized bicubically, as is usual for ViT/CLIP position embeddings.
- Text tower: a 12-layer causal transformer of width 640 over 77 byte-pair tokens; the embedding is read at
  the end-of-text token (the largest token id) and projected to 640-d.

The cosine similarity of the two embeddings, times ``exp(logit_scale)``, is CLIP's image-text logit.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Type

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._hub import WEIGHTS_SHA256
from ._input_range import warn_if_outside_unit_range
from ._layers import RedirectedReluLayer, SkipLayer
from ._utils import _load_pretrained

__all__ = [
    "clip_resnet50x4_image",
    "clip_resnet50x4_text",
    "CLIP_ResNet50x4Image",
    "CLIP_ResNet50x4Text",
    "CLIP_IMAGE_URL",
    "CLIP_TEXT_URL",
]

CLIP_IMAGE_URL = "https://pytorch.s3.amazonaws.com/models/captum/clip_resnet50x4_image.pt"
CLIP_TEXT_URL = "https://pytorch.s3.amazonaws.com/models/captum/clip_resnet50x4_text.pt"
# no digests are published: the first download's is recorded and checked (see optim.models._hub)
WEIGHTS_SHA256.setdefault(CLIP_IMAGE_URL, None)
WEIGHTS_SHA256.setdefault(CLIP_TEXT_URL, None)

# the normalization CLIP was trained with (RGB mean and standard deviation of its data)
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_resnet50x4_image(
    pretrained: bool = False,
    *,
    progress: bool = True,
    model_path: Optional[str] = None,
    **kwargs: Any,
) -> "CLIP_ResNet50x4Image":
    """The image tower of CLIP ResNet-50x4 (captum's ``clip_resnet50x4_image``).

    Args:
        pretrained: load captum's conversion of OpenAI's weights, downloaded once from ``CLIP_IMAGE_URL`` into
            torch.hub's cache and checked by SHA-256 (``WEIGHTS_SHA256[CLIP_IMAGE_URL]``, or the digest recorded
            at the first download while none is pinned). The defaults then become ``transform_input=True``,
            ``replace_relus_with_redirectedrelu=True`` and ``use_linear_modules_only=False``.
        progress: keyword-only; show a progress bar while downloading.
        model_path: keyword-only; load the weights from this local file instead (also with
            ``pretrained=False``: the file is then loaded into the model exactly as ``kwargs`` build it).
        kwargs: arguments of :class:`CLIP_ResNet50x4Image`.

    Returns:
        The model (in training mode, as built by ``nn.Module``; call ``.eval()`` for inference). It maps an
        ``[N, 3, H, W]`` image in [0, 1] to an ``[N, 640]`` embedding.

    Raises:
        ValueError: weights that do not fit (missing/unexpected keys are named), or a cached download that fails
            its SHA-256 check (it is deleted).

    Example:
        >>> with torch.device("meta"):  # shapes only: skips initialising 87M parameters
        ...     model = clip_resnet50x4_image(transform_input=True).eval()
        ...     model(torch.rand(1, 3, 288, 288)).shape
        torch.Size([1, 640])

    ``clip_resnet50x4_image(pretrained=True)`` downloads the weights once (about 350 MB).
    """
    if pretrained:
        defaults = dict(transform_input=True, replace_relus_with_redirectedrelu=True, use_linear_modules_only=False)
        kwargs = {**defaults, **kwargs}
    model = CLIP_ResNet50x4Image(**kwargs)
    if pretrained or model_path is not None:
        _load_pretrained(model, CLIP_IMAGE_URL, model_path, progress=progress)
    return model


def clip_resnet50x4_text(
    pretrained: bool = False,
    *,
    progress: bool = True,
    model_path: Optional[str] = None,
    **kwargs: Any,
) -> "CLIP_ResNet50x4Text":
    """The text tower of CLIP ResNet-50x4 (captum's ``clip_resnet50x4_text``).

    Args:
        pretrained: load captum's conversion of OpenAI's weights, downloaded once from ``CLIP_TEXT_URL`` into
            torch.hub's cache and checked by SHA-256 (as :func:`clip_resnet50x4_image`).
        progress: keyword-only; show a progress bar while downloading.
        model_path: keyword-only; load the weights from this local file instead.
        kwargs: arguments of :class:`CLIP_ResNet50x4Text`.

    Returns:
        The model; it maps ``[N, 77]`` token ids (CLIP's byte-pair encoding, start and end tokens included,
        zero-padded) to an ``[N, 640]`` embedding.

    Example:
        >>> model = clip_resnet50x4_text(num_residual_layers=1).eval()
        >>> tokens = torch.zeros(2, 77, dtype=torch.long)
        >>> tokens[:, :3] = torch.tensor([49406, 320, 49407])  # start, one word, end
        >>> model(tokens).shape
        torch.Size([2, 640])
    """
    model = CLIP_ResNet50x4Text(**kwargs)
    if pretrained or model_path is not None:
        _load_pretrained(model, CLIP_TEXT_URL, model_path, progress=progress)
    return model


def _activation_class(replace_relus_with_redirectedrelu: bool, use_linear_modules_only: bool) -> Type[nn.Module]:
    if use_linear_modules_only:
        return SkipLayer
    return RedirectedReluLayer if replace_relus_with_redirectedrelu else nn.ReLU


class CLIP_ResNet50x4Image(nn.Module):  # noqa: N801  (captum's name)
    """The image tower of CLIP ResNet-50x4 with captum's layer names (``conv1`` ... ``layer4``, ``attnpool``).

    Args:
        transform_input: normalize an RGB input in [0, 1] with CLIP's mean and standard deviation (and warn
            when the input leaves [0, 1], as captum does).
        replace_relus_with_redirectedrelu: use ``RedirectedReluLayer`` for every ReLU.
        use_linear_modules_only: every ReLU a ``SkipLayer`` (the linear variant for circuits).

    Example:
        >>> with torch.device("meta"):  # structure only
        ...     model = CLIP_ResNet50x4Image()
        >>> [name for name, _ in model.named_children()][-5:]
        ['layer1', 'layer2', 'layer3', 'layer4', 'attnpool']
        >>> sum(p.numel() for p in model.parameters()) // 10**6  # millions of parameters
        87
    """

    def __init__(
        self,
        transform_input: bool = False,
        replace_relus_with_redirectedrelu: bool = False,
        use_linear_modules_only: bool = False,
    ) -> None:
        super().__init__()
        self.transform_input = bool(transform_input)
        activ = _activation_class(replace_relus_with_redirectedrelu, use_linear_modules_only)
        # the stem: three 3x3 convolutions (the first strided), then a 2x2 average pool
        self.conv1 = nn.Conv2d(3, 40, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(40)
        self.relu1 = activ()
        self.conv2 = nn.Conv2d(40, 40, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(40)
        self.relu2 = activ()
        self.conv3 = nn.Conv2d(40, 80, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(80)
        self.relu3 = activ()
        self.avgpool = nn.AvgPool2d(2)
        # four stages of bottleneck blocks (widths 80, 160, 320, 640; outputs 4x wider)
        self.layer1 = _stage(80, 80, blocks=4, stride=1, activ=activ)
        self.layer2 = _stage(320, 160, blocks=6, stride=2, activ=activ)
        self.layer3 = _stage(640, 320, blocks=10, stride=2, activ=activ)
        self.layer4 = _stage(1280, 640, blocks=6, stride=2, activ=activ)
        self.attnpool = AttentionPool2d(9, 2560, out_features=640, num_heads=40)
        self.register_buffer("_mean", torch.tensor(_CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(_CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise ValueError("CLIP_ResNet50x4Image expects an NCHW (or CHW) image, got " + str(x.dim()) + " dimensions")
        if self.transform_input:
            if not torch.jit.is_scripting():
                warn_if_outside_unit_range(x, "CLIP_ResNet50x4Image")
            x = (x - self._mean.to(x.dtype)) / self._std.to(x.dtype)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._transform_input(x)
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


def _stage(inplanes: int, planes: int, blocks: int, stride: int, activ: Type[nn.Module]) -> nn.Sequential:
    layers = [Bottleneck(inplanes, planes, stride, activ)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes, 1, activ) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """A CLIP bottleneck block: 1x1 -> 3x3 -> (average pool when strided) -> 1x1, plus the shortcut.

    The stride is an average pool rather than a strided convolution (anti-aliasing), in the main path and in
    the downsampling shortcut (``downsample`` = pool, 1x1 convolution, BatchNorm).

    Args:
        inplanes: input channels.
        planes: the block's inner width (its output has ``4 * planes`` channels).
        stride: 1, or the downsampling factor.
        activ: activation class.

    Example:
        >>> Bottleneck(8, 4, stride=2).eval()(torch.rand(1, 8, 6, 6)).shape
        torch.Size([1, 16, 3, 3])
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, activ: Type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = activ()
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = activ()
        self.avgpool: nn.Module = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = activ()
        self.downsample: Optional[nn.Sequential] = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                nn.Conv2d(inplanes, planes * self.expansion, kernel_size=1, bias=False),
                nn.BatchNorm2d(planes * self.expansion),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP's attention pooling: the mean of the grid, prepended as a query token, attends over the grid.

    Args:
        spacial_size: the side of the grid the positional embedding was trained for (9 at 288 px).
        in_features: channels of the grid.
        out_features: size of the output embedding.
        num_heads: attention heads.

    Example:
        >>> pool = AttentionPool2d(3, 8, out_features=4, num_heads=2)
        >>> pool(torch.rand(2, 8, 3, 3)).shape, pool(torch.rand(2, 8, 5, 5)).shape  # other grids are resized
        (torch.Size([2, 4]), torch.Size([2, 4]))
    """

    def __init__(
        self, spacial_size: int = 9, in_features: int = 2560, out_features: int = 640, num_heads: int = 40
    ) -> None:
        super().__init__()
        if in_features % num_heads:
            raise ValueError(f"in_features ({in_features}) must be a multiple of num_heads ({num_heads})")
        self.spacial_size = spacial_size
        self.positional_embedding = nn.Parameter(torch.randn(spacial_size**2 + 1, in_features) / in_features**0.5)
        self.k_proj = nn.Linear(in_features, in_features)
        self.q_proj = nn.Linear(in_features, in_features)
        self.v_proj = nn.Linear(in_features, in_features)
        self.c_proj = nn.Linear(in_features, out_features)
        self.num_heads = num_heads

    def _positions(self, height: int, width: int) -> torch.Tensor:
        """The positional embedding for a ``height x width`` grid (the trained one, resized when it differs)."""
        pos = self.positional_embedding
        if height == self.spacial_size and width == self.spacial_size:
            return pos
        side = self.spacial_size
        grid = pos[1:].t().reshape(1, -1, side, side)
        grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
        return torch.cat([pos[:1], grid.reshape(-1, height * width).t()], dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = x.reshape(n, c, h * w).permute(0, 2, 1)  # [N, HW, C]
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # the mean first: [N, 1 + HW, C]
        tokens = tokens + self._positions(h, w).to(tokens.dtype)
        head = c // self.num_heads
        q = self.q_proj(tokens[:, :1]).reshape(n, 1, self.num_heads, head).transpose(1, 2)
        k = self.k_proj(tokens).reshape(n, -1, self.num_heads, head).transpose(1, 2)
        v = self.v_proj(tokens).reshape(n, -1, self.num_heads, head).transpose(1, 2)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(head), dim=-1)  # [N, heads, 1, 1 + HW]
        out = (weights @ v).transpose(1, 2).reshape(n, c)
        return self.c_proj(out)


class CLIP_ResNet50x4Text(nn.Module):  # noqa: N801  (captum's name)
    """The text tower of CLIP ResNet-50x4 with captum's layer names (``transformer.0`` ... ``ln_final``).

    Args:
        width: the transformer's width (640).
        num_heads: attention heads (10).
        num_residual_layers: transformer blocks (12).
        content_length: tokens per text (77), captum's name for the context length.
        vocab_size: the byte-pair vocabulary (49408).

    Example:
        >>> model = CLIP_ResNet50x4Text(num_residual_layers=2)
        >>> [name for name, _ in model.named_children()]
        ['transformer', 'token_embedding', 'ln_final']
        >>> float(model.logit_scale.detach().exp())  # CLIP's initial temperature, 1 / 0.07
        14.285...
    """

    def __init__(
        self,
        width: int = 640,
        num_heads: int = 10,
        num_residual_layers: int = 12,
        content_length: int = 77,
        vocab_size: int = 49408,
    ) -> None:
        super().__init__()
        self.content_length = content_length
        self.transformer = nn.Sequential(
            *[ResidualAttentionBlock(width, num_heads, content_length) for _ in range(num_residual_layers)]
        )
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.randn(content_length, width) * 0.01)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, width) / width**0.5)
        # the temperature of CLIP's image-text logits (used when the towers are combined)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """Embed ``[N, content_length]`` token ids; the embedding is read at each text's end token (its largest id)."""
        if text.dim() != 2 or text.shape[1] != self.content_length:
            raise ValueError(
                f"the text tower expects [N, {self.content_length}] token ids, got shape {tuple(text.shape)}"
            )
        x = self.token_embedding(text) + self.positional_embedding.to(self.token_embedding.weight.dtype)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)  # the blocks read [L, N, C]
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)]
        return x @ self.text_projection.to(x.dtype)


class QuickGELU(nn.Module):
    """OpenAI's GELU approximation ``x * sigmoid(1.702 x)``, which CLIP was trained with.

    Example:
        >>> QuickGELU()(torch.tensor([0.0, 1.0]))
        tensor([0.0000, 0.8458])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """A pre-norm transformer block with causal self-attention: ``x + attn(ln_1(x))``, then ``+ mlp(ln_2(x))``.

    Args:
        width: the model width.
        num_heads: attention heads.
        content_length: the sequence length the causal mask covers.

    Example:
        >>> ResidualAttentionBlock(8, 2, 5)(torch.rand(5, 3, 8)).shape  # [L, N, C]
        torch.Size([5, 3, 8])
    """

    def __init__(self, width: int = 640, num_heads: int = 10, content_length: int = 77) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, num_heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, width * 4), QuickGELU(), nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width)
        mask = torch.full((content_length, content_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        mask = self.attn_mask[: x.shape[0], : x.shape[0]].to(x.dtype)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))
