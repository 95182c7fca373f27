"""Expanded weights: the effective kernel between two layers that are not literally adjacent."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from optim._utils import model_device_dtype, module_name, resolve_module
from optim.activations import autograd_context, record_activations
from optim.transforms import center_crop
from optim.transforms.crop import _as_hw

__all__ = ["extract_expanded_weights", "crop_to_footprint"]

ModelInput = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


def _grad_ready_inputs(model_input: ModelInput) -> Tuple[torch.Tensor, ...]:
    """Detached copies of the inputs; floating ones require grad.

    An input that requires grad keeps every activation in the autograd graph even when the model's
    parameters are frozen, which is what lets us differentiate target2 with respect to target1.
    """
    inputs = model_input if isinstance(model_input, tuple) else (model_input,)
    ready = []
    for t in inputs:
        if not torch.is_tensor(t):
            raise TypeError(f"model_input must be a tensor or a tuple of tensors, got {type(t).__name__}")
        t = t.detach().clone()
        ready.append(t.requires_grad_(True) if t.is_floating_point() else t)
    return tuple(ready)


def _gradient_edge(recorded: torch.Tensor) -> Optional[torch.autograd.graph.GradientEdge]:
    """Where the gradient with respect to a recorded activation enters the autograd graph.

    The activation core hands out a copy of an output that a later in-place op (``nn.ReLU(inplace=True)``)
    overwrites, so the copy itself is not on the path to the later layers; the gradient with respect to the
    output as the module produced it flows through the copy's source, the node below the ``clone``. A copy
    is the identity, so for an output that was not copied the two gradients are the same.
    """
    fn = recorded.grad_fn
    if fn is not None and type(fn).__name__ == "CloneBackward0":
        node, index = fn.next_functions[0]
        return None if node is None else torch.autograd.graph.GradientEdge(node, index)
    if not recorded.requires_grad:
        return None
    return torch.autograd.graph.get_gradient_edge(recorded)


def crop_to_footprint(weights: torch.Tensor, crop_shape: Union[int, Sequence[int]]) -> torch.Tensor:
    """Crop expanded weights ``[C2, C1, H, W]`` to ``crop_shape`` around their footprint: the window is centred on
    the bounding box of the positions that carry weight (zero-padded where it leaves the map).

    The footprint of ``target2``'s centre neuron sits at the centre of ``target1``'s map only when every layer in
    between keeps it there: across a stride-2 convolution on an even map, or a non-overlapping pool, it is off by a
    row or a column, and a centre crop (captum's) drops real weights and keeps a zero margin. A position belongs to
    the footprint when its weights (summed over channels, in absolute value) reach ``1e-3`` of the largest
    position's, so a global op in between (a squeeze-excitation block), which gives every position a tiny weight,
    does not widen it to the whole map. The window follows the weights, not the neuron: a zero edge row (a pruned
    kernel row) moves it by one. Weights that are all zero are centre-cropped.

    Args:
        weights: ``[..., H, W]``.
        crop_shape: ``(h, w)`` or an int for a square, as :func:`~optim.transforms.center_crop` takes it.

    Raises:
        TypeError, ValueError: a bad ``crop_shape`` (``center_crop``'s rule), ``weights`` of fewer than 2 dims.

    Returns:
        ``[..., h, w]``.

    Example:
        >>> w = torch.zeros(1, 1, 6, 6)
        >>> w[..., 1:4, 0:3] = 1.0  # a 3 x 3 footprint off the centre of a 6 x 6 map
        >>> crop_to_footprint(w, 3).sum().item(), center_crop(w, 3).sum().item()
        (9.0, 6.0)
    """
    h, w = _as_hw(crop_shape, "crop_shape")
    if weights.dim() < 2:
        raise ValueError(f"weights must have at least 2 dims [..., H, W], got shape {tuple(weights.shape)}")
    mass = weights.detach().abs().reshape(-1, *weights.shape[-2:]).sum(0)
    if not bool(mass.max() > 0):
        return center_crop(weights, [h, w])
    found = (mass >= mass.max() * 1e-3).nonzero()
    (y0, x0), (y1, x1) = found.min(0).values.tolist(), found.max(0).values.tolist()
    top, left = (y0 + y1 - (h - 1)) // 2, (x0 + x1 - (w - 1)) // 2
    height, width = weights.shape[-2:]
    pad = [max(0, -left), max(0, left + w - width), max(0, -top), max(0, top + h - height)]
    padded = F.pad(weights, pad)
    top, left = top + pad[2], left + pad[0]
    return padded[..., top:top + h, left:left + w]


def extract_expanded_weights(
    model: nn.Module,
    target1: Union[str, nn.Module],
    target2: Union[str, nn.Module],
    crop_shape: Optional[Union[int, Sequence[int]]] = None,
    model_input: Optional[ModelInput] = None,
    crop_func: Optional[Callable[..., torch.Tensor]] = crop_to_footprint,
) -> torch.Tensor:
    """The expanded weights from every channel of ``target1`` into the centre neuron of ``target2``.

    Entry ``[c2, c1, y, x]`` is the gradient of channel ``c2`` of ``target2`` at its spatial centre with
    respect to ``target1``'s activation at channel ``c1`` and position ``(y, x)``. Through a purely linear
    path (use ``opt.models.googlenet(use_linear_modules_only=True)``) this is exactly the composed kernel
    of all the layers in between (Voss et al., "Visualizing Weights", Distill 2021). With a nonlinear
    model it is the local linearization at ``model_input``, averaged over its batch.

    The activations are read through the activation core (:mod:`optim.activations`): the forward pass stops
    once ``target2`` has run; it runs in eval mode with frozen parameters, and hooks, modes and
    ``requires_grad`` are restored afterwards, on errors too. ``target1`` means its output as the module
    produced it, even when an in-place op (``nn.ReLU(inplace=True)``) overwrites it later, and a module called
    several times means its last call. It works under ``torch.no_grad()`` and ``torch.inference_mode()`` (the
    input is copied outside inference mode; a model built inside it raises an error naming it).

    Args:
        model: the network.
        target1: the lower layer (a module or dotted name).
        target2: the higher layer, whose output depends on ``target1``'s; 4-D (conv) or 2-D (linear).
        crop_shape: crop the spatial dims of the result to this size (an int for a square), e.g. the
            kernel footprint, to drop the zero margin. Ignored when ``target1`` is not 4-D.
        model_input: the input (or tuple of inputs); default a zero ``1x3x224x224`` image on the model's
            device and dtype. A smaller input is faster as long as ``target1``'s output still covers the
            footprint of ``target2``'s centre neuron.
        crop_func: ``crop_func(weights, crop_shape)`` does the cropping: by default :func:`crop_to_footprint`,
            a window centred on the footprint of ``target2``'s centre neuron (``opt.transforms.center_crop``:
            captum's centre of the map, which misses the footprint after a stride-2 layer on an even map).

    Returns:
        A detached tensor ``[C2, C1, H, W]`` (``[C2, C1]`` when ``target1`` is 2-D) on the model's device.

    Raises:
        ValueError: for unknown layer names, targets that do not run, outputs of an unsupported rank, or a
            ``target2`` that does not depend on ``target1``.
        TypeError: for outputs or inputs that are not tensors.

    Example::

        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 2, 3))  # no activations
        >>> w = extract_expanded_weights(net, net[0], net[2], 5, model_input=torch.zeros(1, 3, 16, 16))
        >>> w.shape  # from each channel of net[0] into each channel of net[2]
        torch.Size([2, 4, 5, 5])
        >>> composed = nn.functional.conv2d(  # the two 3 x 3 kernels after net[0], composed into one 5 x 5
        ...     net[1].weight.transpose(0, 1), net[2].weight.flip(-1, -2), padding=2).transpose(0, 1)
        >>> torch.allclose(w, composed, atol=1e-6)
        True
    """
    module1, module2 = resolve_module(model, target1), resolve_module(model, target2)
    name1, name2 = module_name(model, module1), module_name(model, module2)
    if model_input is None:
        device, dtype = model_device_dtype(model)
        model_input = torch.zeros(1, 3, 224, 224, device=device, dtype=dtype)

    with autograd_context():
        inputs = _grad_ready_inputs(model_input)
        outputs = record_activations(model, [module1, module2], *inputs, requires_grad=True)
        activ1, activ2 = outputs[module1], outputs[module2]
        if activ2.dim() == 4:
            centre = activ2[:, :, (activ2.size(2) - 1) // 2, (activ2.size(3) - 1) // 2]
        elif activ2.dim() == 2:
            centre = activ2
        else:
            raise ValueError(f"target2 ({name2}) must give a 4-D or 2-D output, got shape {tuple(activ2.shape)}")
        edge1 = _gradient_edge(activ1)
        if edge1 is None or not centre.requires_grad:
            raise ValueError(f"{name2} does not depend on {name1} through a differentiable path")

        rows = []
        for channel in range(centre.size(1)):
            # Each sample's centre neuron depends only on that sample, so the gradient of the batch sum
            # holds every sample's row; the batch mean is the row itself for a batch of one.
            (grad,) = torch.autograd.grad(centre[:, channel].sum(), edge1, retain_graph=True, allow_unused=True)
            if grad is None:
                raise ValueError(f"{name2} does not depend on {name1}; is {name1} below {name2}?")
            rows.append(grad.mean(0))
        weights = torch.stack(rows)

    if crop_shape is not None and crop_func is not None and weights.dim() == 4:
        weights = crop_func(weights, crop_shape)
    return weights.detach()
