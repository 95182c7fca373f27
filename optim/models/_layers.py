"""Layers and model surgery for feature visualization.

``RedirectedReLU`` keeps gradients flowing through dead ReLUs (Lucid's trick), ``scale_gradient`` and
``residual_gradient`` weaken the gradient through residual branches during a render (SGM), ``SkipLayer`` and
``skip_layers`` remove nonlinearities for circuit work, ``replace_layers`` swaps one layer class for
another in place, ``MaxPool2dRelaxed`` gives max pooling a smooth gradient and ``Conv2dSame`` reproduces
TensorFlow's ``"SAME"`` padding (needed to run TensorFlow-trained weights unchanged).
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "RedirectedReLU",
    "RedirectedReluLayer",
    "RedirectedReLU6",
    "RedirectedRelu6Layer",
    "ScaleGradient",
    "scale_gradient",
    "residual_gradient",
    "SkipLayer",
    "skip_layers",
    "replace_layers",
    "MaxPool2dRelaxed",
    "Conv2dSame",
]

_IntOrPair = Union[int, Tuple[int, int]]


def _redirect_per_example(
    normal_grad: torch.Tensor, redirected_grad: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """Use ``redirected_grad()`` only for the batch elements where ``normal_grad`` is all zero.

    An example (a slice along dim 0) is dead when every element of its gradient is zero. The test is
    ``amax == 0 and amin == 0`` per example: one vectorised max reduction answers it for every example
    that has a positive gradient somewhere (about 10x cheaper on the CPU than ``eq(0).all()``, which
    writes and then reduces a boolean copy of the gradient), and the ``amin`` pass runs only when some
    example's maximum is exactly zero. A NaN anywhere makes an example not dead, as with ``eq(0).all()``,
    so the mask, and with it the gradient, is bit-identical to that test.
    """
    if normal_grad.dim() == 0:
        return redirected_grad() if bool(normal_grad == 0) else normal_grad
    if normal_grad.numel() == 0:
        return normal_grad  # nothing to redirect; the redirected gradient would be empty too
    n = normal_grad.shape[0]
    # One flag per example (dim 0), broadcast back over the remaining dimensions.
    if normal_grad.is_contiguous():
        per_example = normal_grad.view(n, -1)
        dims: Any = 1
    else:  # reduce in place over the other dims rather than copying a strided gradient
        per_example = normal_grad
        dims = tuple(range(1, normal_grad.dim()))
    maybe_dead = per_example.amax(dim=dims) == 0  # NaN != 0: not dead
    # Usually no example is dead. On the CPU, checking that costs no device synchronisation and saves
    # both the amin pass and building the redirected gradient, which otherwise takes most of the layer's
    # backward time.
    on_cpu = normal_grad.device.type == "cpu"
    if on_cpu and not bool(maybe_dead.any()):
        return normal_grad
    dead = maybe_dead & (per_example.amin(dim=dims) == 0)
    if on_cpu and not bool(dead.any()):
        return normal_grad
    dead = dead.reshape((-1,) + (1,) * (normal_grad.dim() - 1))
    return torch.where(dead, redirected_grad(), normal_grad)


class RedirectedReLU(torch.autograd.Function):
    """ReLU whose backward pass cannot get stuck at zero (Lucid's ``redirected_relu_grad``).

    Forward: ``x.clamp(min=0)``. Backward: the ordinary ReLU gradient ``grad * (x > 0)``; but for any
    batch element whose ReLU gradient is all zero, the redirected gradient is used instead: ``grad``
    everywhere except where the input is already non-positive and the gradient would push it further
    down (``x <= 0`` and ``grad > 0``, as an optimizer descends along the gradient). A random start can
    therefore climb out of a region where every unit of the target is dead.

    See https://github.com/tensorflow/lucid/blob/master/lucid/misc/redirected_relu_grad.py

    Example::

        >>> x = torch.tensor([[-1.0, 2.0], [-1.0, -2.0]], requires_grad=True)  # example 1 is all dead
        >>> y = RedirectedReLU.apply(x)
        >>> y
        tensor([[0., 2.],
                [0., 0.]], grad_fn=<RedirectedReLUBackward>)
        >>> y.backward(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        >>> x.grad  # example 0: the ReLU gradient; example 1: redirected (a push further down is dropped)
        tensor([[ 0.,  1.],
                [ 0., -1.]])
    """

    @staticmethod
    def forward(ctx: Any, input_tensor: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(input_tensor)
        return input_tensor.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        relu_grad = torch.ops.aten.threshold_backward(grad_output, x, 0)  # grad where x > 0, one kernel

        def redirected() -> torch.Tensor:
            return grad_output.masked_fill((x <= 0) & (grad_output > 0), 0)

        return _redirect_per_example(relu_grad, redirected)


class RedirectedReLU6(torch.autograd.Function):
    """ReLU6 (``clamp(x, 0, 6)``) with the redirected gradient of :class:`RedirectedReLU`.

    Backward: the ordinary gradient ``grad * (0 < x < 6)``; for a batch element where that is all zero,
    ``grad`` passes everywhere except where it would push a clamped input further into its flat region
    (``x <= 0`` with ``grad > 0``, or ``x >= 6`` with ``grad < 0``).

    Example::

        >>> x = torch.tensor([[-1.0, 3.0, 7.0], [-1.0, 7.0, 7.0]], requires_grad=True)
        >>> y = RedirectedReLU6.apply(x)
        >>> y
        tensor([[0., 3., 6.],
                [0., 6., 6.]], grad_fn=<RedirectedReLU6Backward>)
        >>> y.backward(torch.tensor([[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0]]))
        >>> x.grad  # example 1 is all clamped: its gradient is redirected
        tensor([[ 0.,  1.,  0.],
                [-1.,  1.,  0.]])
    """

    @staticmethod
    def forward(ctx: Any, input_tensor: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(input_tensor)
        return input_tensor.clamp(min=0, max=6)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        relu6_grad = torch.ops.aten.hardtanh_backward(grad_output, x, 0.0, 6.0)  # grad where 0 < x < 6

        def redirected() -> torch.Tensor:
            deeper = ((x <= 0) & (grad_output > 0)) | ((x >= 6) & (grad_output < 0))
            return grad_output.masked_fill(deeper, 0)

        return _redirect_per_example(relu6_grad, redirected)


class ScaleGradient(torch.autograd.Function):
    """The identity, whose backward pass multiplies the gradient by ``factor`` (the forward value is untouched).

    Example::

        >>> x = torch.ones(2, requires_grad=True)
        >>> ScaleGradient.apply(x, 0.25).sum().backward()
        >>> x.grad
        tensor([0.2500, 0.2500])
    """

    @staticmethod
    def forward(ctx: Any, input_tensor: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return input_tensor.view_as(input_tensor)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Tuple[torch.Tensor, None]:
        return grad_output * ctx.factor, None


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x``, with its gradient multiplied by ``factor`` on the way back (:class:`ScaleGradient`); ``x`` itself
    for ``factor == 1`` or outside autograd (nothing is recorded).

    Example::

        >>> x = torch.ones(3)
        >>> scale_gradient(x, 0.5) is x
        True
    """
    if factor == 1.0 or not (torch.is_grad_enabled() and x.requires_grad):
        return x
    return ScaleGradient.apply(x, factor)


@contextlib.contextmanager
def residual_gradient(model: nn.Module, factor: float) -> Iterator[List[nn.Module]]:
    """Inside the block, the gradient through every residual branch of ``model`` is multiplied by ``factor``;
    the skip connections carry theirs unchanged, and every forward value is the model's own.

    This is the Skip Gradient Method (Wu et al. 2020, "Skip Connections Matter: On the Transferability of
    Adversarial Examples Generated with ResNets", ICLR, arXiv:2002.05990), there for transfer: an image optimized
    through the weakened branches leans on the features the skips carry from earlier layers, and other networks
    recognise it more often (renders use it from noise: ``optim.optimization.DEFAULT_RESIDUAL_GRADIENT``).

    The blocks that take part are the modules with a float attribute ``residual_gradient`` that their forward
    pass applies to the branch (:func:`scale_gradient` before the addition): the zoo's EfficientNet-Lite blocks.
    Other models are left as they are: their gradient is the true one.

    Args:
        model: the network.
        factor: the branches' gradient factor (1: the true gradient), as the caller validated it.

    Yields:
        The blocks changed (empty for a model without such blocks); each gets its own value back on exit,
        errors included.

    Example::

        >>> from optim.models.efficientnet_lite import MBConvBlock
        >>> block = MBConvBlock(4, 4, 3, 1, 2)
        >>> x = torch.rand(1, 4, 8, 8, requires_grad=True)
        >>> with residual_gradient(block, 0.0) as changed:
        ...     block(x).sum().backward()
        >>> len(changed), bool((x.grad == 1).all()), block.residual_gradient
        (1, True, 1.0)
    """
    blocks = [m for m in model.modules() if isinstance(getattr(m, "residual_gradient", None), float)]
    saved = [m.residual_gradient for m in blocks]
    try:
        for m in blocks:
            m.residual_gradient = float(factor)
        yield blocks
    finally:
        for m, value in zip(blocks, saved):
            m.residual_gradient = value


class RedirectedReluLayer(nn.Module):
    """``nn.ReLU`` replacement that applies :class:`RedirectedReLU`.

    Under TorchScript it is a plain ReLU (same forward; custom autograd functions cannot be scripted).

    Example::

        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> replace_layers(net, nn.ReLU, RedirectedReluLayer)
        >>> net[1]
        RedirectedReluLayer()
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Accepts and ignores nn.ReLU's arguments (``inplace``) so replace_layers can pass them on.
        super().__init__()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return F.relu(input)
        return RedirectedReLU.apply(input)


class RedirectedRelu6Layer(nn.Module):
    """``nn.ReLU6`` replacement that applies :class:`RedirectedReLU6` (plain ReLU6 under TorchScript).

    Example::

        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6())
        >>> replace_layers(net, nn.ReLU6, RedirectedRelu6Layer)
        >>> net[1](torch.tensor([-1.0, 3.0, 7.0]))
        tensor([0., 3., 6.])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return F.hardtanh(input, 0.0, 6.0)
        return RedirectedReLU6.apply(input)


class SkipLayer(nn.Module):
    """An identity layer that accepts and ignores any extra constructor or forward arguments.

    Meant to take the place of a layer to skip (a ReLU when computing expanded weights, say); the
    replaced layer must keep its input's shape. A scripted model may contain it (it runs as Python), but
    such a scripted model cannot be saved: use ``nn.Identity`` for that.

    Example::

        >>> skip = SkipLayer(inplace=True)  # takes nn.ReLU's arguments, and ignores them
        >>> x = torch.randn(2, 3)
        >>> skip(x) is x
        True
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    @torch.jit.ignore
    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return x


def _as_type_tuple(layer_types: Any, what: str) -> Tuple[type, ...]:
    """Normalize a class or an iterable of classes to a tuple of ``nn.Module`` subclasses."""
    types = (layer_types,) if isinstance(layer_types, type) else tuple(layer_types)
    if not types:
        raise ValueError(f"{what} must name at least one layer class")
    for t in types:
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise TypeError(f"{what} must be nn.Module subclasses, got {t!r}")
    return types


def _constructor_vars(old: nn.Module, new_type: Type[nn.Module]) -> dict:
    """The public attributes of ``old`` that are named constructor arguments of ``new_type``."""
    try:
        params = inspect.signature(new_type.__init__).parameters.values()
    except (TypeError, ValueError):
        return {}
    names = {
        p.name
        for p in params
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return {k: v for k, v in vars(old).items() if not k.startswith("_") and k in names}


def replace_layers(
    model: nn.Module,
    layer1: Union[Type[nn.Module], Iterable[Type[nn.Module]]],
    layer2: Type[nn.Module],
    transfer_vars: bool = False,
    **kwargs: Any,
) -> None:
    """Replace, in place and recursively, every submodule of class ``layer1`` by a new ``layer2``.

    Args:
        model: the network to edit (the root module itself is never replaced).
        layer1: the layer class (or classes) to replace; subclasses match too.
        layer2: the class to build in their place.
        transfer_vars: copy the old instance's attributes that are named constructor arguments of
            ``layer2`` (``kernel_size``, ``stride``, ... from ``nn.MaxPool2d`` to ``nn.AvgPool2d``).
            Parameters are not copied.
        kwargs: further constructor arguments for ``layer2``; they win over transferred ones.

    Raises:
        TypeError: if ``layer1``/``layer2`` are not ``nn.Module`` classes.

    Example::

        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2, stride=2))
        >>> replace_layers(net, nn.MaxPool2d, nn.AvgPool2d, transfer_vars=True)  # keeps kernel_size, stride
        >>> net[2]
        AvgPool2d(kernel_size=2, stride=2, padding=0)
    """
    old_types = _as_type_tuple(layer1, "layer1")
    if not (isinstance(layer2, type) and issubclass(layer2, nn.Module)):
        raise TypeError(f"layer2 must be an nn.Module subclass, got {layer2!r}")
    for name, child in list(model._modules.items()):
        if child is None:
            continue
        if isinstance(child, old_types):
            args = {**_constructor_vars(child, layer2), **kwargs} if transfer_vars else dict(kwargs)
            setattr(model, name, layer2(**args))
        else:
            replace_layers(child, old_types, layer2, transfer_vars, **kwargs)


def skip_layers(model: nn.Module, layer_types: Union[Type[nn.Module], Iterable[Type[nn.Module]]]) -> None:
    """Replace every layer of the given class(es) by a :class:`SkipLayer`, in place.

    Args:
        model: the network to edit.
        layer_types: a layer class or several, e.g. ``[nn.ReLU, nn.ReLU6]``.

    Raises:
        ValueError: no layer of ``model`` is of those classes (nothing would change, and a model believed
            linear would not be); the message names the model's activation layer classes. A pretrained zoo
            model's ReLU6s are ``RedirectedRelu6Layer``: skip that class, or build the model with
            ``use_linear_modules_only=True``.

    Example::

        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU6())
        >>> skip_layers(net, [nn.ReLU, nn.ReLU6])  # a linear model, for expanded weights
        >>> [type(m).__name__ for m in net]
        ['Conv2d', 'SkipLayer', 'Conv2d', 'SkipLayer']
        >>> skip_layers(nn.Sequential(nn.Conv2d(3, 8, 3), RedirectedRelu6Layer()), nn.ReLU6)
        Traceback (most recent call last):
        ...
        ValueError: skip_layers found no ReLU6 in Sequential, so nothing would be skipped; its activation layers are ['RedirectedRelu6Layer'] (layer classes: ['Conv2d', 'RedirectedRelu6Layer']). Skip those classes, or build a zoo model with use_linear_modules_only=True
    """
    types = _as_type_tuple(layer_types, "layer_types")
    if not any(isinstance(m, types) for m in model.modules() if m is not model):
        present = sorted({type(m).__name__ for m in model.modules() if m is not model and not list(m.children())})
        markers = ("relu", "gelu", "sigmoid", "tanh", "silu", "swish", "elu", "softplus")
        activations = [n for n in present if any(k in n.lower() for k in markers)]
        raise ValueError(
            f"skip_layers found no {' or '.join(t.__name__ for t in types)} in {type(model).__name__}, so nothing "
            f"would be skipped; its activation layers are {activations or 'none'} (layer classes: {present}). "
            "Skip those classes, or build a zoo model with use_linear_modules_only=True"
        )
    replace_layers(model, types, SkipLayer)


class MaxPool2dRelaxed(nn.Module):
    """Max pooling forward, average pooling backward.

    The output equals ``nn.MaxPool2d``; the gradient is that of an ``nn.AvgPool2d`` of the same
    geometry, a continuous relaxation that spreads attribution over the whole window instead of one
    arg-max position.

    Args:
        kernel_size: pooling window.
        stride: window stride (default ``kernel_size``).
        padding: implicit padding on both sides.
        ceil_mode: use ceil instead of floor for the output size.

    Example::

        >>> pool = MaxPool2dRelaxed(2)
        >>> x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], requires_grad=True)
        >>> y = pool(x)
        >>> y.flatten()  # the maximum
        tensor([4.], grad_fn=<ViewBackward0>)
        >>> y.sum().backward()
        >>> x.grad  # the gradient of the average
        tensor([[[[0.2500, 0.2500],
                  [0.2500, 0.2500]]]])
    """

    def __init__(
        self,
        kernel_size: _IntOrPair,
        stride: Optional[_IntOrPair] = None,
        padding: _IntOrPair = 0,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.maxpool = nn.MaxPool2d(kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode)
        self.avgpool = nn.AvgPool2d(kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # value: max pool; gradient: avg pool (the two detached terms cancel in value only)
        return self.maxpool(x.detach()) + self.avgpool(x) - self.avgpool(x.detach())


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``"SAME"`` padding, computed from the input size at run time.

    The output size is ``ceil(input / stride)``; when the total padding is odd the extra row/column goes
    to the bottom/right, as in TensorFlow (PyTorch's own ``padding="same"`` is symmetric and stride 1 only).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel size.
        stride: stride.
        dilation: dilation.
        groups: groups.
        bias: add a learnable bias.

    Example::

        >>> conv = Conv2dSame(3, 64, kernel_size=7, stride=2)
        >>> conv(torch.rand(1, 3, 224, 224)).shape  # ceil(224 / 2)
        torch.Size([1, 64, 112, 112])
        >>> conv(torch.rand(1, 3, 225, 225)).shape  # ceil(225 / 2)
        torch.Size([1, 64, 113, 113])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntOrPair,
        stride: _IntOrPair = 1,
        dilation: _IntOrPair = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)

    @staticmethod
    def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
        out = (size + stride - 1) // stride
        return max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2], x.shape[-1]
        kh, kw = self.weight.shape[-2], self.weight.shape[-1]
        pad_h = self._same_pad(ih, kh, self.stride[0], self.dilation[0])
        pad_w = self._same_pad(iw, kw, self.stride[1], self.dilation[1])
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
