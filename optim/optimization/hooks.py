"""captum.optim's hook names, kept for code written against them; the hooks themselves live in
:mod:`optim.activations` (the one place that places forward hooks).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch.nn as nn

from ..activations import ActivationMap, ActivationRecorder, StopForward, model_frozen, record_activations

__all__ = ["StopForward", "ModuleOutputsHook", "model_frozen", "run_to_targets"]

#: captum.optim's name for the recorder of module outputs.
ModuleOutputsHook = ActivationRecorder


def run_to_targets(model: nn.Module, modules: Iterable[Any], *inputs: Any) -> ActivationMap:
    """The outputs of ``modules`` for ``inputs``, keeping the caller's gradient mode (see
    :func:`optim.activations.record_activations`, which this calls).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3))
        >>> run_to_targets(net, [net[0]], torch.ones(1, 2))["0"].shape
        torch.Size([1, 3])
    """
    import torch

    return record_activations(model, list(modules), *inputs, requires_grad=torch.is_grad_enabled())
