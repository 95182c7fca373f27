"""captum.optim's hook names, for code written against them; the hooks themselves are placed by
:class:`optim.activations.ActivationRecorder` (the one place in optim that registers forward hooks).

- :class:`ModuleOutputsHook`: captum's recorder, ``ModuleOutputsHook(target_modules)``: call the model yourself,
  then read :attr:`~ModuleOutputsHook.outputs` or :meth:`~ModuleOutputsHook.consume_outputs`. The older optim form
  ``ModuleOutputsHook(model, targets)`` is the same object with :meth:`~ModuleOutputsHook.run`.
- :class:`ActivationFetcher`: captum's one-call reader, ``ActivationFetcher(model, targets)(input)``.
- :func:`run_to_targets`: the outputs of some modules for one input, in the caller's gradient mode.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..activations import ActivationMap, ActivationRecorder, StopForward, model_frozen, record_activations

__all__ = ["StopForward", "ModuleOutputsHook", "ActivationFetcher", "model_frozen", "run_to_targets"]

Target = Union[str, nn.Module]


class _NoModel(nn.Module):
    """Stands in for the model of a hook built from target modules alone (captum's form)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "this ModuleOutputsHook was built from target modules alone (captum's form): call your model "
            "yourself, then read hook.outputs or hook.consume_outputs(); or build it as "
            "ModuleOutputsHook(model, targets) to use run()"
        )


class ModuleOutputsHook:
    """Record the outputs of target modules (captum.optim's class), on optim's activation core.

    Two forms:

    - ``ModuleOutputsHook(target_modules)`` (captum's): forward hooks on each module; call the model however
      you like, then :attr:`outputs` holds ``{module: output}`` (``None`` for a module that has not run yet),
      :attr:`is_ready` says whether every target has run, and :meth:`consume_outputs` returns the outputs and
      forgets them for the next pass. A single module counts as one target.
    - ``ModuleOutputsHook(model, targets)``: targets may also be dotted names of ``model``'s modules, and
      :meth:`run` runs the model as far as the targets need (the pass stops after the last one by default).

    Either way the recordings are those of :class:`~optim.activations.ActivationRecorder`: each output as its
    module produced it (a later in-place op cannot change it), the last call of a module called several times
    in one pass (``call=0`` keeps the first call, as captum does; captum also warns), and the first tensor of a
    tuple or dict output. The hooks are removed by :meth:`remove_hooks`, on leaving a ``with`` block, or when
    the object is garbage-collected.

    Args:
        target_modules: the modules to record (captum's form), or the model (with ``targets``).
        targets: the modules or dotted names to record, when ``target_modules`` is the model.
        call: which call of a module called several times in one pass (see ``ActivationRecorder``).
        stop_early: stop the forward pass once every target has run (default: only for :meth:`run` of the
            ``(model, targets)`` form; never in captum's form, where you call the model yourself).
        select: which tensor of a non-tensor output to keep (see ``ActivationRecorder``).

    Raises:
        TypeError: a target that is not a module (a name needs the model), or a non-module model.
        ValueError: no target, or an unknown name.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> hook = ModuleOutputsHook([net[0], net[2]])
        >>> hook.is_ready, len(hook.hooks)
        (False, 2)
        >>> _ = net(torch.ones(4, 2))
        >>> hook.is_ready, [tuple(v.shape) for v in hook.outputs.values()]
        (True, [(4, 3), (4, 1)])
        >>> outputs = hook.consume_outputs()  # returned, and forgotten for the next pass
        >>> hook.is_ready, outputs[net[2]].shape
        (False, torch.Size([4, 1]))
        >>> hook.remove_hooks()
        >>> len(net[0]._forward_hooks)
        0
    """

    def __init__(
        self,
        target_modules: Union[nn.Module, Iterable[nn.Module]],
        targets: Optional[Union[Target, Sequence[Target]]] = None,
        *,
        call: int = -1,
        stop_early: Optional[bool] = None,
        select: Any = None,
    ) -> None:
        if targets is not None:
            if not isinstance(target_modules, nn.Module):
                raise TypeError(
                    f"ModuleOutputsHook(model, targets) needs an nn.Module model, got {type(target_modules).__name__}"
                )
            model: nn.Module = target_modules
            stop = True if stop_early is None else bool(stop_early)
            self._has_model = True
        else:
            if isinstance(target_modules, str):
                raise TypeError(
                    f"a layer name ({target_modules!r}) needs the model: ModuleOutputsHook(model, [{target_modules!r}])"
                )
            targets = [target_modules] if isinstance(target_modules, nn.Module) else list(target_modules)
            for t in targets:
                if not isinstance(t, nn.Module):
                    raise TypeError(
                        f"ModuleOutputsHook(target_modules) takes modules, got {type(t).__name__}; give the model "
                        "first to record layers by name: ModuleOutputsHook(model, targets)"
                    )
            model = _NoModel()
            stop = bool(stop_early) if stop_early is not None else False
            self._has_model = False
        # captum's form is filled by the user's own model(x) calls: a passive recorder
        self._recorder = ActivationRecorder(model, targets, call=call, stop_early=stop, select=select,
                                            passive=not self._has_model)

    # captum's interface -------------------------------------------------------------------------------------
    @property
    def outputs(self) -> Dict[Any, Optional[torch.Tensor]]:
        """``{target: output}`` in the order the targets were given; ``None`` where a target has not run yet."""
        out: Dict[Any, Optional[torch.Tensor]] = {}
        for key, slot in self._recorder._keys:
            value = slot.value
            out[key] = value if isinstance(value, torch.Tensor) else None
        return out

    @property
    def is_ready(self) -> bool:
        """Whether every target has produced an output since the last :meth:`consume_outputs`."""
        return all(isinstance(slot.value, torch.Tensor) for slot in self._recorder._slots)

    @property
    def targets(self) -> List[Any]:
        """The targets, as given."""
        return [key for key, _ in self._recorder._keys]

    @property
    def hooks(self) -> List[Any]:
        """The forward-hook handles (``torch.utils.hooks.RemovableHandle``), one per distinct target module."""
        return list(self._recorder._handles)

    def consume_outputs(self) -> Dict[Any, Optional[torch.Tensor]]:
        """Return :attr:`outputs` and forget them, so the next pass starts empty (warns if not every target ran).

        Returns:
            ``{target: output or None}``.
        """
        if not self.is_ready:
            missing = [k if isinstance(k, str) else type(k).__name__ for k, v in self.outputs.items() if v is None]
            warnings.warn(
                f"consume_outputs() before every target produced an output (still missing: {missing})",
                stacklevel=2,
            )
        outputs = self.outputs
        self._recorder.reset()
        return outputs

    def remove_hooks(self) -> None:
        """Remove every hook this object placed (harmless when called again)."""
        self._recorder.remove()

    def reset(self) -> None:
        """Forget the recorded outputs without removing the hooks."""
        self._recorder.reset()

    # optim's interface --------------------------------------------------------------------------------------
    def run(self, *inputs: Any, **kwargs: Any) -> ActivationMap:
        """Run the model (the ``(model, targets)`` form) and return the targets' outputs.

        Raises:
            TypeError: for a hook built from target modules alone.
            ValueError: a target that did not run.
        """
        if not self._has_model:
            self._recorder.model(*inputs, **kwargs)  # raises the TypeError that explains the two forms
        return self._recorder.run(*inputs, **kwargs)

    def __enter__(self) -> "ModuleOutputsHook":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove_hooks()

    def __del__(self) -> None:
        recorder = self.__dict__.get("_recorder")
        if recorder is not None:
            try:
                recorder.remove()
            except Exception:  # interpreter shutdown: nothing left to clean
                pass

    def __repr__(self) -> str:
        return f"ModuleOutputsHook({len(self._recorder._keys)} targets, ready={self.is_ready})"


class ActivationFetcher:
    """Read the outputs of some layers for one input (captum.optim's class): ``ActivationFetcher(model, targets)(x)``.

    A thin door into :func:`optim.activations.record_activations`: one forward pass in eval mode (the model's
    mode and ``requires_grad`` flags are restored afterwards), in the caller's gradient mode (under
    ``torch.no_grad()`` the outputs are detached), stopping after the last target. The hooks exist only during
    the call, so one fetcher can be called any number of times (captum's works once).

    Args:
        model: the network.
        targets: a module or dotted name, or a list of them.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
        >>> acts = ActivationFetcher(net, [net[0], "2"])(torch.zeros(1, 3, 8, 8))
        >>> tuple(acts[net[0]].shape), tuple(acts["2"].shape)
        ((1, 4, 6, 6), (1, 2, 6, 6))
    """

    def __init__(self, model: nn.Module, targets: Union[Target, Sequence[Target]]) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.targets = [targets] if isinstance(targets, (str, nn.Module)) else list(targets)
        if not self.targets:
            raise ValueError("targets must name at least one layer")

    def __call__(self, input_t: Any) -> ActivationMap:
        """Run ``model(input_t)`` (a tuple is passed as one argument, as captum does) and return the outputs.

        Returns:
            An :class:`~optim.activations.ActivationMap`: each target as given, by module or by dotted name.
        """
        return record_activations(self.model, self.targets, input_t, requires_grad=torch.is_grad_enabled())


def run_to_targets(model: nn.Module, modules: Iterable[Any], *inputs: Any) -> ActivationMap:
    """The outputs of ``modules`` for ``inputs``, keeping the caller's gradient mode (see
    :func:`optim.activations.record_activations`, which this calls).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3))
        >>> run_to_targets(net, [net[0]], torch.ones(1, 2))["0"].shape
        torch.Size([1, 3])
    """
    return record_activations(model, list(modules), *inputs, requires_grad=torch.is_grad_enabled())
