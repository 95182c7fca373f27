"""Forward hooks: the only place in optim that registers hooks on a model.

``ModuleOutputsHook`` records the outputs of chosen modules during a forward pass and can stop the pass
as soon as every one of them has fired (so a render of an early layer never pays for the rest of the
network). ``model_frozen`` puts a model in eval mode with no parameter gradients and restores both on
every exit path.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

import torch
import torch.nn as nn

__all__ = ["StopForward", "ModuleOutputsHook", "model_frozen", "run_to_targets"]


class StopForward(Exception):
    """Raised from a forward hook once every watched module has produced its output."""


class ModuleOutputsHook:
    """Record the outputs of ``modules`` during forward passes.

    Args:
        modules: the modules to watch.
        stop_when_done: raise :class:`StopForward` from the hook once every watched module has fired
            since the last :meth:`reset`, skipping the rest of the forward pass.

    Example::

        with ModuleOutputsHook([model.layer1]) as hook:
            model(x)
            act = hook.outputs[model.layer1]
    """

    def __init__(self, modules: Iterable[nn.Module], stop_when_done: bool = False) -> None:
        self.modules: List[nn.Module] = list(dict.fromkeys(modules))
        self.stop_when_done = stop_when_done
        self.outputs: Dict[nn.Module, Any] = {}
        self._handles = [m.register_forward_hook(self._make_hook(m)) for m in self.modules]

    def _make_hook(self, module: nn.Module) -> Callable:
        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            # A module called twice in one pass keeps its first output: that is the one targets mean.
            if module not in self.outputs:
                self.outputs[module] = out
            if self.stop_when_done and len(self.outputs) == len(self.modules):
                raise StopForward()

        return hook

    def reset(self) -> None:
        """Forget the outputs of the last forward pass."""
        self.outputs = {}

    def remove(self) -> None:
        """Remove every hook this object registered."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "ModuleOutputsHook":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


@contextlib.contextmanager
def model_frozen(model: nn.Module, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter, restored on exit (errors included).

    Args:
        model: the network.
        eval_mode: also switch every submodule to eval mode.
    """
    grads = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in grads:
            p.requires_grad_(False)
        if eval_mode:
            model.eval()
        yield model
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        for m, flag in modes:
            m.training = flag


def run_to_targets(model: nn.Module, modules: Iterable[nn.Module], *inputs: Any) -> Dict[nn.Module, Any]:
    """Run ``model(*inputs)`` only as far as needed for every module in ``modules`` to fire.

    Args:
        model: the network.
        modules: the modules whose outputs are wanted.
        inputs: the model's inputs.

    Returns:
        A dict module -> output.

    Raises:
        ValueError: if some module never fired during the forward pass.
    """
    modules = list(modules)
    with ModuleOutputsHook(modules, stop_when_done=True) as hook:
        try:
            model(*inputs)
        except StopForward:
            pass
        missing = [type(m).__name__ for m in modules if m not in hook.outputs]
        if missing:
            raise ValueError(f"these target modules never ran in the forward pass: {missing}")
        return dict(hook.outputs)
