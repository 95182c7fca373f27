"""One entry point for pixel attribution methods, backed by ``captum.attr``.

``attribute(model, image, target, method=...)`` runs vanilla gradients, guided backprop, SmoothGrad
(plain or guided), integrated gradients, Grad-CAM, guided Grad-CAM, occlusion or positive/negative
saliency with sensible defaults, on the model's device and dtype, and leaves the model as it was (train/eval
mode, ``requires_grad`` flags, hooks).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._utils import model_device_dtype, optional_import, resolve_module
from ..activations import ActivationRecorder, autograd_context, model_frozen, select_tensor

__all__ = ["METHODS", "attribute", "default_gradcam_layer"]

Target = Union[int, Sequence[int], torch.Tensor]
LayerArg = Union[str, nn.Module, None]


def _captum() -> Any:
    return optional_import("captum.attr", "attr", "opt.attribution")


def _is_relu_like(module: nn.Module) -> bool:
    # Custom ReLU modules (optim's RedirectedReLU layers, timm's, ...) follow the same guided rule.
    if isinstance(module, (nn.ReLU, nn.ReLU6)):
        return True
    return "relu" in type(module).__name__.lower() and not any(True for _ in module.children())


def _guided_backprop(model: nn.Module) -> Any:
    """captum's GuidedBackprop, extended from ``nn.ReLU`` to every ReLU-like leaf module.

    captum only hooks ``nn.ReLU``; EfficientNet-Lite uses ReLU6 (or optim's redirected ReLU6 layers), where
    guided backprop would otherwise silently degrade into plain gradients.
    """
    attr = _captum()
    from captum._utils.common import _register_backward_hook

    class _GuidedBackprop(attr.GuidedBackprop):
        def _register_hooks(self, module: nn.Module) -> None:
            if _is_relu_like(module):
                self.backward_hooks.extend(_register_backward_hook(module, self._backward_hook, self))

    return _GuidedBackprop(model)


def default_gradcam_layer(model: nn.Module, image: torch.Tensor) -> nn.Module:
    """Grad-CAM's usual layer: the output of the last convolutional stage, found with one forward pass.

    That is the shallowest module whose output is the last spatial ``(N, C, h, w)`` activation (``h * w > 1``)
    of the pass: ``layer4`` of a torchvision ResNet (not a module inside its last residual block), the head
    of an EfficientNet. Containers finish after their children, so it is the last module to return a spatial
    map; a module called several times counts at its last call. Outputs are read through the activation core
    (:class:`~optim.activations.ActivationRecorder`); modules that refuse a forward hook (TorchScript) are
    skipped.

    The pass runs in eval mode without gradients (batch norm statistics stay untouched); the model's mode,
    ``requires_grad`` flags and hooks are restored afterwards.

    Args:
        model: the network.
        image: an ``NCHW`` input it accepts (moved to the model's device and dtype).

    Returns:
        The module (a submodule of ``model``, never ``model`` itself).

    Raises:
        ValueError: if no module outputs a spatial map larger than 1 x 1.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()),
        ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> default_gradcam_layer(net, torch.rand(1, 3, 16, 16)) is net[1]  # the stage, not its ReLU
        True
    """
    device, dtype = model_device_dtype(model)
    image = image.detach().as_subclass(torch.Tensor).to(device=device, dtype=dtype)
    # (depth, name, module, output) in the order the modules returned
    fired: List[Tuple[int, str, nn.Module, Any]] = []

    def logger(name: str, module: nn.Module) -> Callable[[Any], torch.Tensor]:
        def select(output: Any) -> torch.Tensor:
            fired.append((name.count("."), name, module, output))
            return select_tensor(output, None, name)

        return select

    with torch.no_grad(), model_frozen(model), contextlib.ExitStack() as stack:
        for name, module in model.named_modules():
            if not name:
                continue
            try:
                stack.enter_context(ActivationRecorder(model, module, stop_early=False, inplace_safe=False,
                                                       select=logger(name, module), passive=True))
            except ValueError:
                continue  # refuses a hook: captum could not hook it for Grad-CAM either
        model(image)
    spatial = [i for i, (_, _, _, out) in enumerate(fired)
               if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2] * out.shape[-1] > 1]
    if not spatial:
        raise ValueError(f"{type(model).__name__} has no layer with a spatial output; pass layer= for Grad-CAM")
    last = fired[spatial[-1]][3]
    # every module that returned that very tensor (an in-place chain, or nested containers); the shallowest,
    # the latest of equals
    same = [i for i in spatial if fired[i][3] is last]
    best = min(same, key=lambda i: (fired[i][0], -i))
    return fired[best][2]


def _layer(model: nn.Module, layer: Union[str, nn.Module, None], x: torch.Tensor) -> nn.Module:
    return default_gradcam_layer(model, x) if layer is None else resolve_module(model, layer)


def _upsample(attr_map: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(attr_map, size=tuple(size), mode="bilinear", align_corners=False)


def _noise_stdev(x: torch.Tensor, kwargs: Dict[str, Any]) -> None:
    # SmoothGrad's noise is set relative to the input's range (Smilkov et al. use 10-20%).
    noise_level = kwargs.pop("noise_level", 0.15)
    if "stdevs" not in kwargs:
        kwargs["stdevs"] = float(noise_level * (x.detach().max() - x.detach().min()).clamp_min(1e-8))
    kwargs.setdefault("nt_samples", 16)
    kwargs.setdefault("nt_samples_batch_size", 8)


def _saliency(
    model: nn.Module, x: torch.Tensor, target: Target, layer: LayerArg, kw: Dict[str, Any]
) -> torch.Tensor:
    kw.setdefault("abs", False)
    return _captum().Saliency(model).attribute(x, target=target, **kw)


def _guided(
    model: nn.Module, x: torch.Tensor, target: Target, layer: LayerArg, kw: Dict[str, Any]
) -> torch.Tensor:
    return _guided_backprop(model).attribute(x, target=target, **kw)


def _noise_tunnel(make_base: Callable[[nn.Module], Any], **base_defaults: Any) -> Callable[..., torch.Tensor]:
    """SmoothGrad over the gradient method built by ``make_base``."""

    def method(
        model: nn.Module, x: torch.Tensor, target: Target, layer: LayerArg, kw: Dict[str, Any]
    ) -> torch.Tensor:
        _noise_stdev(x, kw)
        kw.setdefault("nt_type", "smoothgrad")
        for key, value in base_defaults.items():
            kw.setdefault(key, value)
        return _captum().NoiseTunnel(make_base(model)).attribute(x, target=target, **kw)

    return method


def _integrated_gradients(
    model: nn.Module, x: torch.Tensor, target: Target, layer: LayerArg, kw: Dict[str, Any]
) -> torch.Tensor:
    kw.setdefault("n_steps", 32)
    kw.setdefault("internal_batch_size", 16)
    return _captum().IntegratedGradients(model).attribute(x, target=target, **kw)


def _gradcam(
    model: nn.Module, x: torch.Tensor, target: Target, layer: LayerArg, kw: Dict[str, Any]
) -> torch.Tensor:
    upsample = kw.pop("upsample", True)
    kw.setdefault("relu_attributions", True)
    cam = _captum().LayerGradCam(model, _layer(model, layer, x)).attribute(x, target=target, **kw)
    return _upsample(cam, x.shape[-2:]) if upsample else cam


def _guided_gradcam(
    model: nn.Module, x: torch.Tensor, target: Target, layer: LayerArg, kw: Dict[str, Any]
) -> torch.Tensor:
    kw.setdefault("interpolate_mode", "bilinear")
    method = _captum().GuidedGradCam(model, _layer(model, layer, x))
    method.guided_backprop = _guided_backprop(model)
    return method.attribute(x, target=target, **kw)


def _occlusion(
    model: nn.Module, x: torch.Tensor, target: Target, layer: LayerArg, kw: Dict[str, Any]
) -> torch.Tensor:
    height, width = x.shape[-2:]
    window = kw.pop("window", (max(1, height // 8), max(1, width // 8)))
    window = (window, window) if isinstance(window, int) else tuple(window)
    kw.setdefault("sliding_window_shapes", (x.shape[1],) + window)
    kw.setdefault("strides", (x.shape[1], max(1, window[0] // 2), max(1, window[1] // 2)))
    kw.setdefault("perturbations_per_eval", 16)
    return _captum().Occlusion(model).attribute(x, target=target, **kw)


def _signed_saliency(sign: float) -> Callable[..., torch.Tensor]:
    def method(
        model: nn.Module, x: torch.Tensor, target: Target, layer: LayerArg, kw: Dict[str, Any]
    ) -> torch.Tensor:
        # Springenberg-style positive/negative saliency: the guided gradient's positive (or negative)
        # part, scaled to [0, 1] per example.
        grads = sign * _guided(model, x, target, layer, kw)
        part = grads.clamp_min(0)
        peak = part.flatten(1).amax(dim=1).clamp_min(1e-12)
        return part / peak.view(-1, *([1] * (part.dim() - 1)))

    return method


_METHODS: Dict[str, Callable[..., torch.Tensor]] = {
    "saliency": _saliency,
    "guided_backprop": _guided,
    # signed gradients, like "saliency" (captum's Saliency would average absolute values)
    "smoothgrad": _noise_tunnel(lambda model: _captum().Saliency(model), abs=False),
    "guided_smoothgrad": _noise_tunnel(_guided_backprop),
    "integrated_gradients": _integrated_gradients,
    "gradcam": _gradcam,
    "guided_gradcam": _guided_gradcam,
    "occlusion": _occlusion,
    "positive_saliency": _signed_saliency(1.0),
    "negative_saliency": _signed_saliency(-1.0),
}

#: Names accepted by :func:`attribute`.
METHODS: List[str] = list(_METHODS)


def _prepare(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a tensor (or ImageTensor), got {type(image).__name__}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4:
        raise ValueError(f"image must be CHW or NCHW, got shape {tuple(image.shape)}")
    device, dtype = model_device_dtype(model)
    # captum works on plain tensors; the ImageTensor subclass would leak into every result.
    return image.detach().as_subclass(torch.Tensor).to(device=device, dtype=dtype).clone().requires_grad_(True)


def _check_target(target: Target, batch: int) -> Target:
    if isinstance(target, bool) or not isinstance(target, (int, list, tuple, torch.Tensor)):
        raise TypeError(f"target must be a class index, a list of them or a tensor, got {type(target).__name__}")
    if isinstance(target, (list, tuple)) and len(target) != batch:
        raise ValueError(f"got {len(target)} targets for a batch of {batch} images")
    return target


def attribute(
    model: nn.Module,
    image: torch.Tensor,
    target: Target,
    method: str = "gradcam",
    layer: Union[str, nn.Module, None] = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Attribute the model's output for ``target`` to the input pixels with one of several methods.

    Methods (all from ``captum.attr``):

    - ``"saliency"``: vanilla gradients (signed; pass ``abs=True`` for Simonyan et al.'s map).
    - ``"guided_backprop"``: guided backpropagation (the gradient through every ReLU-like module, ReLU6
      and optim's redirected ReLUs included, clamped at 0).
    - ``"smoothgrad"`` / ``"guided_smoothgrad"``: gradients / guided gradients averaged over noisy copies
      (``noise_level=0.15`` of the input range, ``nt_samples=16``).
    - ``"integrated_gradients"``: path integral from a black baseline (``n_steps=32``).
    - ``"gradcam"``: Grad-CAM at ``layer`` (default: :func:`default_gradcam_layer`), ReLU'd and bilinearly
      upsampled to the image size (``upsample=False`` keeps the layer's resolution).
    - ``"guided_gradcam"``: guided backprop times the upsampled Grad-CAM.
    - ``"occlusion"``: output drop when sliding a black patch (``window`` defaults to 1/8 of the image).
    - ``"positive_saliency"`` / ``"negative_saliency"``: positive / negative part of the guided gradient,
      scaled to ``[0, 1]`` per image.

    Args:
        model: a classifier returning ``(N, classes)`` logits.
        image: a ``CHW`` or ``NCHW`` tensor or ImageTensor in the model's input range.
        target: the class index (or one per image).
        method: one of :data:`METHODS`.
        layer: the convolutional layer (module or dotted name) for Grad-CAM variants.
        kwargs: passed on to the captum method's ``attribute`` (e.g. ``n_steps``, ``baselines``,
            ``sliding_window_shapes``, ``nt_samples``, ``stdevs``).

    Returns:
        A plain tensor on the model's device: ``(N, 1, H, W)`` for ``"gradcam"``, ``(N, C, H, W)`` (the
        image's shape) for every other method.

    Raises:
        ValueError: for an unknown method (listing the valid ones) or a bad image shape.

    Example::

        >>> cam = attribute(model, cat, 285, method="gradcam", layer="blocks.15")  # cat: a [1, 3, 96, 96] photo
        >>> cam.shape, bool(cam.min() >= 0)  # upsampled to the image, ReLU'd
        (torch.Size([1, 1, 96, 96]), True)
        >>> attribute(model, cat, 285, method="guided_backprop").shape
        torch.Size([1, 3, 96, 96])
    """
    if method not in _METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of: {', '.join(METHODS)}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    with autograd_context():  # works under torch.no_grad() and for inputs made under torch.inference_mode()
        x = _prepare(model, image)
    target = _check_target(target, x.shape[0])
    with autograd_context(), model_frozen(model), warnings.catch_warnings():
        # captum announces its (always removed) ReLU hooks on every call
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        result = _METHODS[method](model, x, target, layer, dict(kwargs))
    return result.detach()
