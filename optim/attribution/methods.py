"""One entry point for pixel attribution methods, backed by ``captum.attr``.

``attribute(model, image, target, method=...)`` runs vanilla gradients, guided backprop, SmoothGrad
(plain or guided), integrated gradients, Grad-CAM, guided Grad-CAM, occlusion or positive/negative
saliency with sensible defaults, on the model's device and dtype, and leaves the model as it was (train/eval
mode, ``requires_grad`` flags, hooks).
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._utils import eager_compiled, model_device_dtype, optional_import, resolve_module
from ..activations import ActivationRecorder, _channel_errors_explained, autograd_context, model_frozen, select_tensor
from ..layouts import channels_first, check_layout, infer_layout

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


def _spatial_size(output: Any, module: nn.Module, model: Optional[nn.Module] = None) -> Optional[Tuple[int, int]]:
    """The ``(h, w)`` of a map-like output in its layout (NCHW, NHWC, tokens on a grid), else ``None``."""
    if not isinstance(output, torch.Tensor) or output.dim() not in (3, 4):
        return None
    try:
        layout = infer_layout(output, module=module, model=model)
    except ValueError:  # a token order inference refuses to guess: not a map to default to
        return None
    if layout.is_tokens:
        return layout.grid
    if output.dim() != 4:
        return None
    return tuple(output.shape[1:3]) if layout.name == "NHWC" else tuple(output.shape[2:])


def _gradcam_site(model: nn.Module, image: torch.Tensor) -> Tuple[nn.Module, bool]:
    """``(module, read_its_input)``: where the default Grad-CAM reads (see :func:`default_gradcam_layer`)."""
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
    sizes = [_spatial_size(out, module, model) for _, _, module, out in fired]
    spatial = [i for i, size in enumerate(sizes) if size is not None and size[0] * size[1] > 1]
    if not spatial:
        raise ValueError(f"{type(model).__name__} has no layer with a spatial output; pass layer= for Grad-CAM")
    final = spatial[-1]
    last, final_size = fired[final][3], sizes[final]
    size_of = {id(module): sizes[i] for i, (_, _, module, _) in enumerate(fired)}  # a module's last call
    if isinstance(last, torch.Tensor) and last.dim() == 3:
        # Tokens: the last block (a module with children, repeated among its siblings), read at its input.
        # A class-token head reads only token 0 after the last block, so the patch tokens of the last block's
        # output get no gradient; its input tokens still reach the class token through its attention.
        parents = {id(child): parent for parent in model.modules() for child in parent.children()}
        for i in reversed(spatial):
            _, _, module, out = fired[i]
            parent = parents.get(id(module))
            if not (isinstance(out, torch.Tensor) and out.dim() == 3 and any(True for _ in module.children())
                    and parent is not None):
                continue
            if not (isinstance(parent, (nn.ModuleList, nn.Sequential))
                    or sum(type(c) is type(module) for c in parent.children()) > 1):
                continue
            # The tokens entering the last block: the output of the module that returned last before the
            # block began (the previous block, or the embedding's dropout), when it has the block's shape;
            # otherwise the block's input itself.
            inside = {id(m) for m in module.modules()}
            first = next(k for k in range(i + 1) if id(fired[k][2]) in inside)
            if first > 0:
                before = fired[first - 1][3]
                if isinstance(before, torch.Tensor) and before.shape == out.shape:
                    return fired[first - 1][2], False
            return module, True
    # every module that returned that very tensor (an in-place chain, or nested containers)
    same = [i for i in spatial if fired[i][3] is last]

    def is_stage(i: int) -> bool:
        # a module with children whose every child that ran returned a map of the final size: a stage (or a
        # block) of the last resolution, not a trunk that also holds earlier stages
        ran = [id(c) for c in fired[i][2].children() if id(c) in size_of]
        return bool(ran) and all(size_of[c] == final_size for c in ran)

    stages = [i for i in same if is_stage(i)]
    best = min(stages or same, key=lambda i: (fired[i][0], -i))  # the shallowest, the latest of equals
    return fired[best][2], False


def default_gradcam_layer(model: nn.Module, image: torch.Tensor) -> nn.Module:
    """Grad-CAM's usual layer: the output of the last stage (CNNs), the tokens entering the last block (ViTs).

    The pass finds the last spatial map: a 4-D ``(N, C, h, w)`` output with ``h * w > 1`` (or channels-last
    ``(N, h, w, C)``, see :mod:`optim.layouts`), or a token output ``(N, L, D)`` whose patch tokens form a grid.

    - Maps: among the modules that returned that very tensor (nested containers, in-place chains), the
      shallowest *stage*: a module with children each of which returned a map of that size. That is ``layer4``
      of a torchvision or timm ResNet (not a module inside its last residual branch), ``features.7`` of a
      torchvision ConvNeXt (not the whole ``features`` trunk), ``stages.3`` of a timm ConvNeXt. Without such
      a module (a head of plain layers, as on EfficientNet), the shallowest module that returned it.
    - Tokens: the tokens entering the last *block* (a module with children held in a ``ModuleList`` /
      ``Sequential`` or beside a sibling of its own class: timm ``blocks.-1``, torchvision
      ``encoder.layers.encoder_layer_-1``, Hugging Face ``vit.encoder.layer.-1``): a class-token head gives
      the patch tokens of the last block's *output* no gradient, while its input tokens reach the class
      token through its attention. That is the output of the module that returned last before the last
      block began (the block before it, ``blocks.-2``; the embeddings for a single block), which is
      returned when its shape is the block's; otherwise the last block, whose input Grad-CAM then reads.
      Grad-CAM drops the prefix tokens and puts the patch tokens on their grid (:mod:`optim.layouts`).

    A module called several times counts at its last call. Outputs are read through the activation core
    (:class:`~optim.activations.ActivationRecorder`); modules that refuse a forward hook (TorchScript) are
    skipped. The pass runs in eval mode without gradients (batch norm statistics stay untouched); the model's
    mode, ``requires_grad`` flags and hooks are restored afterwards.

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
    return _gradcam_site(model, image)[0]


def _layer(model: nn.Module, layer: Union[str, nn.Module, None], x: torch.Tensor) -> Tuple[nn.Module, bool]:
    """The Grad-CAM layer and whether to read its input (the default on token models)."""
    return _gradcam_site(model, x) if layer is None else (resolve_module(model, layer), False)


def _gradcam_map(
    model: nn.Module, x: torch.Tensor, target: Target, layer: LayerArg, kw: Dict[str, Any]
) -> torch.Tensor:
    """Grad-CAM at the layer's resolution, ``(N, 1, h, w)``, in any activation layout.

    Selvaraju et al.: per channel (hidden unit), the gradient of the target's score averaged over the
    positions weights the activation; the weighted sum over channels, ReLU'd (``relu_attributions``). The
    activation and its gradient are read channels-first (:func:`optim.layouts.channels_first`): a token
    layer's patch tokens on their grid, prefix tokens dropped; ``layout=`` overrides the inference.
    """
    from captum._utils.common import _format_additional_forward_args
    from captum._utils.gradient import compute_layer_gradients_and_eval

    layout = check_layout(kw.pop("layout", None))
    relu = kw.pop("relu_attributions", True)
    summation = kw.pop("attr_dim_summation", True)
    on_input = kw.pop("attribute_to_layer_input", None)
    extra = _format_additional_forward_args(kw.pop("additional_forward_args", None))
    if kw:
        raise TypeError(
            f"unexpected keyword arguments for Grad-CAM: {', '.join(sorted(kw))} (allowed: upsample, layout, "
            "relu_attributions, attr_dim_summation, attribute_to_layer_input, additional_forward_args)"
        )
    module, default_input = _layer(model, layer, x)
    on_input = default_input if on_input is None else bool(on_input)
    grads, evals = compute_layer_gradients_and_eval(
        model, module, (x,), target, extra, attribute_to_layer_input=on_input
    )
    where = f"the {'input' if on_input else 'output'} of {type(module).__name__}"
    resolved = infer_layout(evals[0], layout, module=None if on_input else module, model=model, where=where)
    grad, act = channels_first(grads[0], resolved), channels_first(evals[0], resolved)
    if resolved.is_tokens and act.dim() == 3:
        grad, act = grad.unsqueeze(2), act.unsqueeze(2)  # tokens without a grid: one row
    if grad.dim() > 2:
        grad = grad.mean(dim=tuple(range(2, grad.dim())), keepdim=True)
    cam = grad * act
    if summation:
        cam = cam.sum(dim=1, keepdim=True)
    return F.relu(cam) if relu else cam


def _upsample(attr_map: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(attr_map, size=tuple(size), mode="bilinear", align_corners=False)


def _image_slice(value: Any, i: int, batch: int) -> Any:
    """Image ``i``'s part of a per-batch argument (a target list or tensor, a tensor forward argument)."""
    if isinstance(value, list) and len(value) == batch:
        return [value[i]]
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value[i:i + 1]
    if isinstance(value, tuple) and any(isinstance(v, torch.Tensor) for v in value):  # forward arguments
        return tuple(_image_slice(v, i, batch) for v in value)
    return value


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
        noise_level = kw.pop("noise_level", 0.15)
        kw.setdefault("nt_samples", 16)
        kw.setdefault("nt_samples_batch_size", 8)
        kw.setdefault("nt_type", "smoothgrad")
        for key, value in base_defaults.items():
            kw.setdefault(key, value)
        tunnel = _captum().NoiseTunnel(make_base(model))
        if "stdevs" in kw:
            return tunnel.attribute(x, target=target, **kw)
        # Smilkov et al. set each image's noise from its own range (10-20%): one tunnel per image, so an image's
        # map does not depend on the others in its batch (captum's stdevs is one number for the whole batch)
        extra = kw.pop("additional_forward_args", None)
        maps = []
        for i in range(x.shape[0]):
            image = x[i:i + 1]
            stdev = float(noise_level * (image.detach().max() - image.detach().min()).clamp_min(1e-8))
            maps.append(tunnel.attribute(image, target=_image_slice(target, i, x.shape[0]), stdevs=stdev,
                                         additional_forward_args=_image_slice(extra, i, x.shape[0]), **kw))
        return torch.cat(maps)

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
    cam = _gradcam_map(model, x, target, layer, kw)
    return _upsample(cam, x.shape[-2:]) if upsample else cam


def _guided_gradcam(
    model: nn.Module, x: torch.Tensor, target: Target, layer: LayerArg, kw: Dict[str, Any]
) -> torch.Tensor:
    # captum's GuidedGradCam: guided backprop times the Grad-CAM map upsampled to the image (bilinearly, as
    # Selvaraju et al. and this module's "gradcam" do; captum's default is nearest)
    mode = kw.pop("interpolate_mode", "bilinear")
    extra = kw.get("additional_forward_args")
    cam = _gradcam_map(model, x, target, layer, {**kw, "relu_attributions": True})
    guided = _guided_backprop(model).attribute(x, target=target, additional_forward_args=extra)
    return guided * F.interpolate(cam, size=tuple(x.shape[2:]), mode=mode)


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


class _SelectedOutput(nn.Module):
    """``model`` whose output is read by :func:`~optim.activations.select_tensor` (a Hugging Face
    ``ModelOutput``'s ``logits``, a dict's or tuple's first tensor), for captum, which needs a tensor.

    It lists ``model``'s modules under ``model``'s own names (``named_modules`` is ``model``'s), so a layer
    name, Grad-CAM's default layer and guided backprop's ReLU hooks mean the same as on ``model``.
    """

    def __init__(self, model: nn.Module, target: Optional[Target] = None) -> None:
        super().__init__()
        self.model = model
        self.target = target
        self._classes = _class_indices(target)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        logits = select_tensor(self.model(*args, **kwargs), None, f"{type(self.model).__name__}'s output")
        _check_target_range(logits, self.target, self._classes)
        return logits

    def named_modules(self, memo: Any = None, prefix: str = "", remove_duplicate: bool = True) -> Any:
        return self.model.named_modules(memo, prefix, remove_duplicate)


@functools.lru_cache(maxsize=None)
def _selected_output_class(name: str) -> type:
    # named after the model's class, so that messages about "the model" (an unknown layer name, no spatial
    # layer) name the user's model, not the wrapper
    return type(name, (_SelectedOutput,), {"__module__": __name__})


def logits_module(model: nn.Module, target: Optional[Target] = None) -> nn.Module:
    """``model`` with its output read by :func:`~optim.activations.select_tensor` (``logits`` of a Hugging Face
    ``ModelOutput``), as captum needs; the same module names, modules and parameters as ``model``.

    With ``target``, each output is checked to have its class indices (a ``ValueError`` naming ``target``, the
    value and the number of classes, instead of captum's ``IndexError``).

    Example:
        >>> class Dict(nn.Module):
        ...     def forward(self, x):
        ...         return {"logits": x.flatten(1) * 2}
        >>> logits_module(Dict())(torch.ones(1, 2)).tolist(), type(logits_module(Dict())).__name__
        ([[2.0, 2.0]], 'Dict')
    """
    return _selected_output_class(type(model).__name__)(model, target)


# methods that rewrite the backward pass of the model's ReLU modules: they need an nn.Module
_GUIDED = ("guided_backprop", "guided_smoothgrad", "guided_gradcam", "positive_saliency", "negative_saliency")


def _forward_function(func: Callable[..., Any], target: Optional[Target] = None) -> Callable[..., torch.Tensor]:
    classes = _class_indices(target)

    def forward(*args: Any) -> torch.Tensor:
        logits = select_tensor(func(*args), None, "the function's output")
        _check_target_range(logits, target, classes)
        return logits

    return forward


def _prepare(model: Any, image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a tensor (or ImageTensor), got {type(image).__name__}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4:
        raise ValueError(f"image must be CHW or NCHW, got shape {tuple(image.shape)}")
    if isinstance(model, nn.Module):
        device, dtype = model_device_dtype(model)
    else:  # a function: the image's own device (and dtype, if floating)
        device, dtype = image.device, image.dtype if image.is_floating_point() else torch.float32
    # captum works on plain tensors; the ImageTensor subclass would leak into every result.
    return image.detach().as_subclass(torch.Tensor).to(device=device, dtype=dtype).clone().requires_grad_(True)


def _class_indices(target: Optional[Target]) -> List[int]:
    """The class indices in ``target``: an int, a list of ints, an integer tensor of at most one dimension
    (read once, not on every forward pass). Tuples (an index into a multi-dimensional output) are left to captum.
    """
    if isinstance(target, torch.Tensor):
        if target.dim() > 1 or target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            return []
        return [int(t) for t in target.reshape(-1).tolist()]
    items = target if isinstance(target, list) else [target]
    return [t for t in items if isinstance(t, int) and not isinstance(t, bool)]


def _check_target_range(logits: torch.Tensor, target: Optional[Target], classes: List[int]) -> None:
    """Refuse class indices outside ``[0, number of classes)``: captum's ``IndexError`` (or a negative index,
    counted from the end for an int but refused by ``gather`` for a list) becomes a ``ValueError``; so does a tuple
    whose length is not the output's number of non-batch dims (captum's ``AssertionError``)."""
    if isinstance(target, tuple):
        if len(target) != logits.dim() - 1:
            raise ValueError(
                f"target={target!r} is a tuple: captum reads it as one index into each non-batch dim of the output, "
                f"which has shape {tuple(logits.shape)}; pass a list for one class per image"
            )
        for dim, index in enumerate(target, start=1):
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < logits.shape[dim]:
                raise ValueError(
                    f"target={target!r}: entry {dim - 1} must be an index from 0 to {logits.shape[dim] - 1} "
                    f"(output shape {tuple(logits.shape)}), got {index!r}"
                )
        return
    if not classes or logits.dim() < 2:
        return
    count = int(logits.shape[1])
    bad = [t for t in classes if not 0 <= t < count]
    if bad:
        where = "" if isinstance(target, int) else f" in target={target!r}"
        raise ValueError(
            f"target must be a class index from 0 to {count - 1} (the model's output has {count} classes), "
            f"got {bad[0]}{where}"
        )


def _check_target(target: Target, batch: int) -> Target:
    if isinstance(target, bool) or not isinstance(target, (int, list, tuple, torch.Tensor)):
        raise TypeError(f"target must be a class index, a list of them or a tensor, got {type(target).__name__}")
    if isinstance(target, list) and len(target) != batch:
        raise ValueError(f"got {len(target)} targets for a batch of {batch} images")
    return target  # a tuple is captum's one index into every non-batch dim: checked against the output


def attribute(
    model: Union[nn.Module, Callable[..., Any]],
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
      (``noise_level=0.15`` of each image's own range, so a map does not depend on its batch; ``nt_samples=16``).
    - ``"integrated_gradients"``: path integral from a black baseline (``n_steps=32``).
    - ``"gradcam"``: Grad-CAM at ``layer`` (default: :func:`default_gradcam_layer`), ReLU'd and bilinearly
      upsampled to the image size (``upsample=False`` keeps the layer's resolution). Any activation layout
      (:mod:`optim.layouts`; ``layout=`` overrides the inference): a token layer's patch tokens are put back
      on their grid.
    - ``"guided_gradcam"``: guided backprop times the Grad-CAM map upsampled bilinearly, as Selvaraju et al.
      upsample it (captum's ``GuidedGradCam`` defaults to nearest: ``interpolate_mode="nearest"`` gives its
      numbers).
    - ``"occlusion"``: output drop when sliding a black patch (``window`` defaults to 1/8 of the image).
    - ``"positive_saliency"`` / ``"negative_saliency"``: positive / negative part of the guided gradient,
      scaled to ``[0, 1]`` per image.

    Args:
        model: a classifier returning ``(N, classes)`` logits: a tensor, or a Hugging Face ``ModelOutput``, dict
            or tuple read by :func:`~optim.activations.select_tensor` (``logits`` when present, else the first
            tensor); or any callable ``image -> logits`` (captum's ``forward_func``, e.g. a function that
            normalizes and then calls a model). A function gets no default Grad-CAM layer (pass ``layer=`` a
            module it runs), cannot use the guided methods (they rewrite an ``nn.Module``'s ReLUs), and runs on
            the image's device and dtype.
        image: a ``CHW`` or ``NCHW`` tensor or ImageTensor in the model's input range.
        target: the class index, from 0 to the number of classes - 1, a list (or 1-D tensor) of one per image,
            or, as captum reads it, a tuple indexing every non-batch dim of a multi-dimensional output.
        method: one of :data:`METHODS`.
        layer: the convolutional layer (module or dotted name) for Grad-CAM variants.
        kwargs: passed on to the captum method's ``attribute`` (e.g. ``n_steps``, ``baselines``,
            ``sliding_window_shapes``, ``nt_samples``, ``stdevs``).

    Returns:
        A plain tensor on the model's device: ``(N, 1, H, W)`` for ``"gradcam"``, ``(N, C, H, W)`` (the
        image's shape) for every other method. The model is attributed in eval mode (dropout off, batch norm on
        its running statistics), then put back in the mode it was in.

    Raises:
        ValueError: for an unknown method (listing the valid ones), a bad image shape, a ``target`` outside the
            model's classes, an image whose channel count the model refuses (naming both counts and a
            conversion); Grad-CAM on a function without a layer module. TypeError: a model that is not
            callable, a guided method on a function.

    Example::

        >>> cam = attribute(model, cat, 285, method="gradcam", layer="blocks.15")  # cat: a [1, 3, 96, 96] photo
        >>> cam.shape, bool(cam.min() >= 0)  # upsampled to the image, ReLU'd
        (torch.Size([1, 1, 96, 96]), True)
        >>> attribute(model, cat, 285, method="guided_backprop").shape
        torch.Size([1, 3, 96, 96])
    """
    if method not in _METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of: {', '.join(METHODS)}")
    if isinstance(model, nn.Module):
        frozen: Any = model_frozen(model)
    elif callable(model):
        if method in _GUIDED:
            raise TypeError(
                f"method {method!r} needs an nn.Module (guided backprop rewrites the gradient of its ReLU modules), "
                f"got a {type(model).__name__}; with a function use one of: "
                f"{', '.join(m for m in METHODS if m not in _GUIDED)}"
            )
        if method == "gradcam" and not isinstance(layer, nn.Module):
            raise ValueError(
                "Grad-CAM on a function needs layer= a module that the function runs (there is no model to find a "
                f"default layer in, nor to look a name up in), got layer={layer!r}"
            )
        frozen = contextlib.nullcontext()
    else:
        raise TypeError(f"model must be an nn.Module or a callable returning logits, got {type(model).__name__}")
    with autograd_context():  # works under torch.no_grad() and for inputs made under torch.inference_mode()
        x = _prepare(model, image)
    target = _check_target(target, x.shape[0])
    # the target's range is checked against the logits of each forward pass
    forward: Any = logits_module(model, target) if isinstance(model, nn.Module) else _forward_function(model, target)
    # eager_compiled: captum's hooks on a torch.compile'd model need its modules run eagerly (see optim._utils)
    eager = eager_compiled(model) if isinstance(model, nn.Module) else contextlib.nullcontext()
    with autograd_context(), frozen, eager, warnings.catch_warnings(), _channel_errors_explained(model, x):
        # captum announces its (always removed) ReLU hooks on every call
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        result = _METHODS[method](forward, x, target, layer, dict(kwargs))
    return result.detach()
