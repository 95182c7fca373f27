"""Channel attribution for the Building Blocks view (Olah et al., 2018): which channels drive a class.

A channel's contribution is activation x gradient of the class logit, summed over positions
(captum's ``LayerGradientXActivation``). :func:`channel_blocks` pairs the top channels with their feature
visualizations from any render callable, and :func:`plot_channel_blocks` draws them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn as nn

from .._utils import module_name, resolve_module
from .methods import Target, _captum, _check_target, _prepare, logits_module
from ..activations import _channel_errors_explained, autograd_context, model_frozen
from ..layouts import LayoutArg, channels_first, infer_layout

__all__ = ["ChannelAttribution", "ChannelBlock", "channel_attribution", "channel_blocks", "plot_channel_blocks"]


class ChannelAttribution(NamedTuple):
    """The result of :func:`channel_attribution`.

    Attributes:
        channels: ``(k,)`` indices of the top channels, strongest first.
        scores: ``(k,)`` their summed activation x gradient (averaged over the batch).
        all_scores: ``(C,)`` the score of every channel of the layer.
        maps: ``(k, h, w)`` the spatial activation x gradient of each top channel (batch-averaged).
    """

    channels: torch.Tensor
    scores: torch.Tensor
    all_scores: torch.Tensor
    maps: torch.Tensor


def channel_attribution(
    model: nn.Module,
    image: torch.Tensor,
    target: Target,
    layer: Union[str, nn.Module],
    top_k: int = 10,
    absolute: bool = False,
    *,
    layout: LayoutArg = None,
) -> ChannelAttribution:
    """Rank the channels of ``layer`` by how much they drive the ``target`` class for this image.

    Args:
        model: a classifier returning ``(N, classes)`` logits.
        image: ``CHW`` or ``NCHW`` image in the model's input range.
        target: class index (or one per image).
        layer: a module or dotted name whose output is ``(N, C, h, w)`` (or ``(N, C)``), or in another layout
            (:mod:`optim.layouts`): a token layer's channels are its hidden units, its positions the patch
            tokens on their grid (prefix tokens left out).
        top_k: how many channels to return (all of them if the layer has fewer).
        absolute: rank by ``|score|`` (channels that argue against the class too) instead of by score.
        layout: keyword-only; the layer's layout (``None``: inferred, see :func:`optim.layouts.infer_layout`).

    Returns:
        A :class:`ChannelAttribution`.

    Raises:
        ValueError: a ``top_k`` below 1, an unknown layer, a ``target`` outside the model's classes, an image whose
            channel count the model refuses (naming both counts and a conversion, as :func:`attribute`).

    Example::

        >>> ca = channel_attribution(model, cat, 285, "blocks.12", top_k=5)  # cat: a [1, 3, 96, 96] photo
        >>> ca.channels
        tensor([112,  26, 127,   1,   6])
        >>> ca.scores.round(decimals=2)
        tensor([1.9700, 1.4200, 0.9800, 0.9700, 0.8100])
        >>> ca.all_scores.shape, ca.maps.shape  # every channel of blocks.12; one 3 x 3 map per top channel
        (torch.Size([192]), torch.Size([5, 3, 3]))
    """
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    module = resolve_module(model, layer)
    with autograd_context():
        x = _prepare(model, image)
    target = _check_target(target, x.shape[0])
    with autograd_context(), model_frozen(model), _channel_errors_explained(model, x):
        attr = _captum().LayerGradientXActivation(logits_module(model, target), module).attribute(x, target=target)
    resolved = infer_layout(attr, layout, module=module, model=model, where=f"layer {layer!r}")
    attr = channels_first(attr.detach(), resolved)
    if attr.dim() == 2:
        attr = attr[:, :, None, None]
    elif attr.dim() == 3:  # tokens without a grid: one row
        attr = attr[:, :, None, :]
    if attr.dim() != 4:
        raise ValueError(f"layer {layer!r} must output (N, C, h, w) or (N, C), got {tuple(attr.shape)}")
    spatial = attr.mean(dim=0)
    all_scores = spatial.sum(dim=(1, 2))
    order = torch.argsort(all_scores.abs() if absolute else all_scores, descending=True)[:top_k]
    return ChannelAttribution(order, all_scores[order], all_scores, spatial[order])


@dataclass
class ChannelBlock:
    """One channel of the Building Blocks view.

    Attributes:
        layer: the layer's dotted name.
        channel: the channel index.
        score: its activation x gradient contribution to the class.
        map: ``(h, w)`` where in the image it contributes.
        visualization: what ``render_fn(layer, channel)`` returned (usually an image tensor).
    """

    layer: str
    channel: int
    score: float
    map: torch.Tensor
    visualization: Any


def channel_blocks(
    model: nn.Module,
    image: torch.Tensor,
    target: Target,
    layer: Union[str, nn.Module],
    render_fn: Callable[[str, int], Any],
    top_k: int = 6,
    absolute: bool = False,
) -> List[ChannelBlock]:
    """The top channels for a class, each paired with its rendered feature visualization.

    Args:
        model: the classifier.
        image: ``CHW`` or ``NCHW`` image.
        target: class index.
        layer: module or dotted name.
        render_fn: called as ``render_fn(layer_name, channel)`` for each top channel; returns its
            visualization (e.g. ``lambda l, c: opt.render_vis(model, f"{l}:{c}")``, or cached images).
        top_k: number of channels.
        absolute: rank by absolute contribution.

    Returns:
        A list of :class:`ChannelBlock`, strongest first.
    """
    if not callable(render_fn):
        raise TypeError(f"render_fn must be callable as render_fn(layer, channel), got {type(render_fn).__name__}")
    name = layer if isinstance(layer, str) else module_name(model, layer)
    result = channel_attribution(model, image, target, layer, top_k=top_k, absolute=absolute)
    return [
        ChannelBlock(name, int(c), float(s), m, render_fn(name, int(c)))
        for c, s, m in zip(result.channels, result.scores, result.maps)
    ]


def _to_hwc(vis: Any) -> Any:
    """A render result (CHW/NCHW tensor or HWC array) as an HWC NumPy array for imshow."""
    import numpy as np

    if isinstance(vis, torch.Tensor):
        t = vis.detach().as_subclass(torch.Tensor).float().cpu()
        if t.dim() == 4:
            t = t[0]
        if t.dim() == 3 and t.shape[0] in (1, 3):
            t = t.permute(1, 2, 0)
        return t.clamp(0, 1).numpy()
    return np.asarray(vis)


def plot_channel_blocks(
    blocks: Sequence[ChannelBlock],
    image: Optional[torch.Tensor] = None,
    alpha: float = 0.5,
    cmap: str = "RdBu_r",
) -> Any:
    """Draw each channel's visualization above where it acts in the image.

    Args:
        blocks: the output of :func:`channel_blocks`.
        image: the photo (``CHW``/``NCHW`` in ``[0, 1]``) to show the channel maps over; ``None`` shows the
            maps alone.
        alpha: opacity of the maps over the photo.
        cmap: colormap for the signed channel maps (red: for the class, blue: against it).

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    blocks = list(blocks)
    if not blocks:
        raise ValueError("blocks is empty")
    fig, axes = plt.subplots(2, len(blocks), figsize=(2.4 * len(blocks), 5), squeeze=False)
    photo = None
    if image is not None:
        photo = image.detach().as_subclass(torch.Tensor).float().cpu()
        photo = (photo[0] if photo.dim() == 4 else photo).clamp(0, 1)
    for i, block in enumerate(blocks):
        axes[0, i].imshow(_to_hwc(block.visualization))
        axes[0, i].set_title(f"{block.layer}:{block.channel}\n{block.score:.3g}", fontsize=8)
        m = block.map.float().cpu()
        lim = float(m.abs().max().clamp_min(1e-12))
        if photo is not None:
            m = F.interpolate(m[None, None], size=photo.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
            axes[1, i].imshow(photo.permute(1, 2, 0).numpy())
        axes[1, i].imshow(m.numpy(), cmap=cmap, vmin=-lim, vmax=lim, alpha=alpha if photo is not None else 1.0)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig
