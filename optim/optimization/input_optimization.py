"""``InputOptimization``: optimize an image parameterization so that a loss on a model's activations rises."""
from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, List, Optional, Type, Union

import torch
import torch.nn as nn

from .._utils import model_device_dtype
from ..loss.base import Loss, default_loss_summarize, target_name
from .hooks import ModuleOutputsHook, StopForward, model_frozen
from .stop_criteria import _coerce

__all__ = ["InputOptimization"]

OptimizerArg = Union[None, torch.optim.Optimizer, Type[torch.optim.Optimizer]]


class _Activations(dict):
    """module -> output, where a target's dotted name also works as a key."""

    def __init__(self, outputs: Dict[nn.Module, Any], names: Dict[str, nn.Module]) -> None:
        super().__init__(outputs)
        self._names = names

    def __missing__(self, key: Any) -> Any:
        if isinstance(key, str) and key in self._names and self._names[key] in self:
            return self[self._names[key]]
        raise KeyError(f"no activation recorded for target {target_name(key)}")


class InputOptimization:
    """Render an input that optimizes ``loss_function`` on ``model``.

    Each step runs ``model(transform(input_param()))``, records the output of every target of the loss with
    forward hooks (stopping the forward pass as soon as the last target has fired), and takes an optimizer
    step on the parameterization. The model is never changed: during :meth:`optimize` it is in eval mode with
    ``requires_grad`` off, and hooks exist only inside :meth:`optimize`; all of it is restored on every exit
    path.

    Args:
        model: the network (``None`` for a loss on the image or transforms alone).
        loss_function: the objective; its targets may be modules of the model, of the transform or of the
            parameterization, or dotted names of the model's modules (``"layer3.1.conv2"``), or
            ``"input_param.<name>"`` / ``"transform.<name>"``.
        input_param: the image parameterization (default: ``NaturalImage((224, 224))``); it is moved to the
            model's device and dtype.
        transform: applied to the image before the model (default: ``TransformationRobustness()``).

    Example::

        image = opt.images.NaturalImage((224, 224))
        obj = opt.InputOptimization(model, opt.loss.ChannelActivation(model.mixed4a, 465), image,
                                    opt.transforms.TransformationRobustness())
        history = obj.optimize(opt.optimization.n_steps(512))
        image().export("mixed4a_465.png")
    """

    def __init__(
        self,
        model: Optional[nn.Module],
        loss_function: Loss,
        input_param: Optional[nn.Module] = None,
        transform: Optional[nn.Module] = None,
    ) -> None:
        if not isinstance(loss_function, Loss):
            raise TypeError(f"loss_function must be an optim.loss.Loss, got {type(loss_function).__name__}")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module or None, got {type(model).__name__}")
        if input_param is None:
            from ..images import NaturalImage

            input_param = NaturalImage((224, 224))
        if transform is None:
            from ..transforms import TransformationRobustness

            transform = TransformationRobustness()
        for name, value in (("input_param", input_param), ("transform", transform)):
            if not isinstance(value, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(value).__name__}")
        self.model = model if model is not None else nn.Identity()
        self.loss_function = loss_function
        self.input_param = input_param
        self.transform = transform
        if any(True for _ in self.model.parameters()) or any(True for _ in self.model.buffers()):
            device, dtype = model_device_dtype(self.model)
            self.input_param.to(device=device, dtype=dtype)
            self.transform.to(device=device)
        self._optimizer: Optional[torch.optim.Optimizer] = None

    def parameters(self) -> List[nn.Parameter]:
        """The trainable tensors: those of the image parameterization."""
        return [p for p in self.input_param.parameters() if p.requires_grad]

    def _name_map(self) -> Dict[str, nn.Module]:
        names: Dict[str, nn.Module] = {"input_param": self.input_param, "transform": self.transform}
        for prefix, root in (("input_param.", self.input_param), ("transform.", self.transform)):
            names.update({prefix + n: m for n, m in root.named_modules() if n})
        names.update({n: m for n, m in self.model.named_modules() if n})
        return names

    def _resolve_targets(self) -> tuple:
        names = self._name_map()
        known = set(map(id, self.model.modules())) | set(map(id, self.input_param.modules()))
        known |= set(map(id, self.transform.modules()))
        modules: List[nn.Module] = []
        for target in self.loss_function.targets:
            if isinstance(target, str):
                if target not in names:
                    close = difflib.get_close_matches(target, list(names), n=5, cutoff=0.5)
                    hint = f"; closest names: {', '.join(close)}" if close else ""
                    raise ValueError(f"the loss targets {target!r}, which is no module of the model{hint}")
                modules.append(names[target])
            elif id(target) in known:
                modules.append(target)
            else:
                raise ValueError(
                    f"the loss targets a {type(target).__name__} module that is not part of the model, the "
                    "transform or the image parameterization"
                )
        if not modules:
            raise ValueError(f"the loss {self.loss_function!r} has no targets")
        return modules, {n: m for n, m in names.items() if any(m is t for t in modules)}

    def _forward(self, hook: ModuleOutputsHook) -> None:
        hook.reset()
        try:
            image = self.input_param()
            if type(image) is not torch.Tensor:
                # ImageTensor's per-op Python dispatch is pure overhead inside transforms and the model.
                image = image.as_subclass(torch.Tensor)
            self.model(self.transform(image))
        except StopForward:
            pass

    def _check_fired(self, hook: ModuleOutputsHook, modules: List[nn.Module]) -> None:
        missing = [m for m in modules if m not in hook.outputs]
        if missing:
            raise ValueError(
                "these loss targets produced no output in the forward pass: "
                + ", ".join(type(m).__name__ for m in missing)
            )

    def loss(self, loss_summarize_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """Evaluate the summarized loss of the current image once (model untouched afterwards).

        Args:
            loss_summarize_fn: reduces the loss tensor to a scalar (default ``-mean``).

        Returns:
            The scalar loss (with a graph to the parameterization).
        """
        summarize = loss_summarize_fn or default_loss_summarize
        modules, names = self._resolve_targets()
        with model_frozen(self.model), ModuleOutputsHook(modules, stop_when_done=True) as hook:
            self._forward(hook)
            self._check_fired(hook, modules)
            return summarize(self.loss_function(_Activations(hook.outputs, names)))

    def _make_optimizer(self, optimizer: OptimizerArg, lr: float) -> torch.optim.Optimizer:
        if isinstance(optimizer, torch.optim.Optimizer):
            return optimizer
        if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
            return optimizer(self.parameters(), lr=lr)
        if optimizer is not None:
            raise TypeError(
                "optimizer must be a torch.optim.Optimizer, an Optimizer class or None, "
                f"got {type(optimizer).__name__}"
            )
        # Continuing a render keeps Adam's moment estimates; only the learning rate follows the call.
        if self._optimizer is None:
            params = self.parameters()
            # The fused kernel is several times faster per step on CPU and GPU; older builds lack it.
            try:
                self._optimizer = torch.optim.Adam(params, lr=lr, fused=True)
            except (RuntimeError, TypeError, ValueError):
                self._optimizer = torch.optim.Adam(params, lr=lr)
        for group in self._optimizer.param_groups:
            group["lr"] = lr
        return self._optimizer

    def optimize(
        self,
        stop_criteria: Optional[Callable[..., bool]] = None,
        optimizer: OptimizerArg = None,
        loss_summarize_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        lr: float = 0.025,
    ) -> torch.Tensor:
        """Optimize the parameterization; call again to continue.

        Args:
            stop_criteria: ``(step, obj, history, optimizer) -> bool``; default ``n_steps(512)``; an int
                means that many steps.
            optimizer: an optimizer over :meth:`parameters`, an optimizer class (built with ``lr``), or
                ``None`` for Adam.
            loss_summarize_fn: reduces the loss tensor to the scalar to minimize (default ``-mean``).
            lr: the learning rate of a default or class-given optimizer.

        Returns:
            The summarized loss of every step, a 1-D tensor.
        """
        stop = _coerce(stop_criteria)
        summarize = loss_summarize_fn or default_loss_summarize
        opt = self._make_optimizer(optimizer, lr)
        modules, names = self._resolve_targets()
        history: List[torch.Tensor] = []
        step = 0
        try:
            with model_frozen(self.model), ModuleOutputsHook(modules, stop_when_done=True) as hook:
                while stop(step, self, history, opt):
                    opt.zero_grad(set_to_none=True)
                    self._forward(hook)
                    if step == 0:
                        self._check_fired(hook, modules)
                    loss_value = summarize(self.loss_function(_Activations(hook.outputs, names)))
                    loss_value.backward()
                    opt.step()
                    history.append(loss_value.detach())
                    step += 1
                hook.reset()
        finally:
            close = getattr(stop, "close", None)
            if callable(close):
                close()
        if not history:
            return torch.empty(0)
        return torch.stack(history).cpu()
