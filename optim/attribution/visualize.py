"""Show attributions: heat-map overlays on the photo and a side-by-side comparison of methods."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .methods import attribute

__all__ = ["attribution_to_heatmap", "overlay", "compare_methods"]

_SIGNS = ("absolute", "positive", "negative", "all")


def _as_batch(t: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    t = t.detach().as_subclass(torch.Tensor)
    if t.dim() == 2:
        return t[None, None]
    if t.dim() == 3:
        return t[None]
    if t.dim() == 4:
        return t
    raise ValueError(f"{name} must be HW, CHW or NCHW, got shape {tuple(t.shape)}")


def attribution_to_heatmap(
    attribution: torch.Tensor,
    size: Optional[Sequence[int]] = None,
    sign: str = "absolute",
    outlier_perc: float = 1.0,
) -> torch.Tensor:
    """Reduce an attribution to one ``[0, 1]`` map per image.

    Args:
        attribution: ``HW``, ``CHW`` or ``NCHW`` attribution (channels are summed).
        size: ``(H, W)`` to resize to (bilinear); ``None`` keeps the size.
        sign: ``"absolute"`` (sum of absolute values), ``"positive"``/``"negative"`` (that part of the
            channel sum) or ``"all"`` (signed, 0 mapped to 0.5).
        outlier_perc: the top percent of values saturates at 1, so a few extreme gradients do not wash
            out the rest of the map (as in captum's visualizations).

    Returns:
        A ``(N, 1, H, W)`` tensor in ``[0, 1]``.
    """
    if sign not in _SIGNS:
        raise ValueError(f"sign must be one of {_SIGNS}, got {sign!r}")
    if not 0 <= outlier_perc < 100:
        raise ValueError(f"outlier_perc must be in [0, 100), got {outlier_perc}")
    a = _as_batch(attribution, "attribution").float()
    if sign == "absolute":
        a = a.abs().sum(dim=1, keepdim=True)
    else:
        a = a.sum(dim=1, keepdim=True)
        a = a.clamp_min(0) if sign == "positive" else (-a).clamp_min(0) if sign == "negative" else a
    if size is not None and tuple(a.shape[-2:]) != tuple(size):
        a = F.interpolate(a, size=tuple(size), mode="bilinear", align_corners=False)
    flat = a.flatten(1).abs()
    scale = torch.quantile(flat, 1 - outlier_perc / 100, dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    if sign == "all":
        return (a / scale).clamp(-1, 1) * 0.5 + 0.5
    return (a / scale).clamp(0, 1)


def overlay(
    image: torch.Tensor,
    attribution: torch.Tensor,
    alpha: float = 0.5,
    cmap: str = "jet",
    sign: str = "absolute",
    outlier_perc: float = 1.0,
) -> Any:
    """Blend a colour-mapped attribution over the photo.

    Args:
        image: ``CHW`` or ``NCHW`` RGB image in ``[0, 1]`` (a grayscale image is repeated to RGB).
        attribution: the attribution for it (any resolution; resized to the image).
        alpha: weight of the heat map (0: only the photo, 1: only the heat map).
        cmap: matplotlib colormap name.
        sign: see :func:`attribution_to_heatmap`.
        outlier_perc: see :func:`attribution_to_heatmap`.

    Returns:
        An ``ImageTensor`` of shape ``(N, 3, H, W)`` in ``[0, 1]`` on the image's device.

    Example::

        >>> cam = opt.attribution.attribute(model, cat, 285, "gradcam", layer="blocks.15")  # [1, 1, 96, 96]
        >>> view = opt.attribution.overlay(cat, cam, alpha=0.4)
        >>> type(view).__name__, view.shape
        ('ImageTensor', torch.Size([1, 3, 96, 96]))
        >>> view.export("cat_gradcam.png")  # one PNG per image
        [PosixPath('cat_gradcam.png')]
    """
    import matplotlib

    from ..images import ImageTensor

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = _as_batch(image, "image").float()
    if img.shape[1] == 1:
        img = img.expand(-1, 3, -1, -1)
    if img.shape[1] != 3:
        raise ValueError(f"image must have 1 or 3 channels, got {img.shape[1]}")
    heat = attribution_to_heatmap(attribution, img.shape[-2:], sign, outlier_perc)
    if heat.shape[0] not in (1, img.shape[0]):
        raise ValueError(f"attribution has {heat.shape[0]} maps for {img.shape[0]} images")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}") from None
    rgb = colormap(heat[:, 0].cpu().numpy())[..., :3]
    rgb = torch.as_tensor(rgb, dtype=img.dtype, device=img.device).permute(0, 3, 1, 2)
    out = (1 - alpha) * img.clamp(0, 1) + alpha * rgb
    return ImageTensor(out.clamp(0, 1))


def compare_methods(
    model: nn.Module,
    image: torch.Tensor,
    target: Union[int, Sequence[int], torch.Tensor],
    methods: Sequence[str] = ("saliency", "guided_backprop", "smoothgrad", "integrated_gradients", "gradcam",
                              "occlusion"),
    layer: Union[str, nn.Module, None] = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    method_kwargs: Optional[Dict[str, Dict[str, Any]]] = None,
    figsize: Optional[Sequence[float]] = None,
) -> Any:
    """A matplotlib figure with the photo and several attribution methods side by side.

    Each row is one image of the batch; the first column is the photo, then one overlay per method.

    Args:
        model: the classifier.
        image: ``CHW`` or ``NCHW`` image in ``[0, 1]`` (the model must accept it as is).
        target: class index (or one per image).
        methods: method names from :data:`~optim.attribution.METHODS`.
        layer: Grad-CAM layer for the Grad-CAM variants.
        alpha: heat map weight in each overlay.
        cmap: matplotlib colormap name.
        method_kwargs: extra keyword arguments per method name, e.g. ``{"occlusion": {"window": 8}}``.
        figsize: figure size in inches (default: 2.5 per panel).

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    methods = list(methods)
    if not methods:
        raise ValueError("methods must name at least one attribution method")
    method_kwargs = dict(method_kwargs or {})
    unknown = set(method_kwargs) - set(methods)
    if unknown:
        raise ValueError(f"method_kwargs names methods not being compared: {sorted(unknown)}")
    img = _as_batch(image, "image")
    maps = {
        name: attribute(model, img, target, method=name, layer=layer, **method_kwargs.get(name, {}))
        for name in methods
    }
    rows, cols = img.shape[0], len(methods) + 1
    fig, axes = plt.subplots(rows, cols, figsize=figsize or (2.5 * cols, 2.5 * rows), squeeze=False)
    photo = img.float().clamp(0, 1).cpu()
    for r in range(rows):
        axes[r, 0].imshow(photo[r].permute(1, 2, 0).numpy())
        axes[r, 0].set_title("image")
        for c, name in enumerate(methods, start=1):
            blend = overlay(photo[r], maps[name][r].cpu(), alpha=alpha, cmap=cmap)
            axes[r, c].imshow(blend[0].as_subclass(torch.Tensor).permute(1, 2, 0).numpy())
            axes[r, c].set_title(name.replace("_", " "))
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig
