"""Small helpers shared by every subpackage: optional imports and module lookup by name."""
from __future__ import annotations

import difflib
import importlib
import itertools
from types import ModuleType
from typing import Dict, Tuple, Union

import torch
import torch.nn as nn

__all__ = [
    "optional_import",
    "named_module_map",
    "resolve_module",
    "lookup_module",
    "module_name",
    "model_device_dtype",
]


def optional_import(module: str, extra: str, feature: str = "") -> ModuleType:
    """Import an optional dependency, or explain which extra installs it.

    Args:
        module: the importable module name, e.g. ``"umap"``.
        extra: the optim-vis extra that provides it, e.g. ``"umap"``.
        feature: what needs it, for the error message.

    Returns:
        The imported module.

    Raises:
        ImportError: naming the extra to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        what = feature or "this feature"
        raise ImportError(
            f"{what} needs the optional dependency {module!r}; "
            f'install it with: pip install "optim-vis[{extra}]"'
        ) from err


def named_module_map(model: nn.Module) -> Dict[str, nn.Module]:
    """Every submodule of ``model`` by dotted name (the root module is left out)."""
    return {name: m for name, m in model.named_modules() if name}


def resolve_module(model: nn.Module, target: Union[str, nn.Module]) -> nn.Module:
    """Turn a dotted module name (or a module) into a submodule of ``model``.

    Args:
        model: the network to look in.
        target: a dotted name such as ``"layer3.1.conv2"``, or a module (returned as is).

    Returns:
        The module.

    Raises:
        ValueError: for an unknown name, listing the closest valid names.
        TypeError: for a target that is neither a string nor a module.
    """
    if isinstance(target, nn.Module):
        return target
    if not isinstance(target, str):
        raise TypeError(f"a target must be an nn.Module or a dotted module name, got {type(target).__name__}")
    return lookup_module(target, named_module_map(model), type(model).__name__)


def lookup_module(name: str, modules: Dict[str, nn.Module], owner: str) -> nn.Module:
    """Look ``name`` up in a name -> module map; an unknown name raises a ValueError with close matches.

    Args:
        name: the dotted name.
        modules: the valid names.
        owner: what the names belong to, for the message.

    Returns:
        The module.
    """
    if name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, list(modules), n=5, cutoff=0.5)
    hint = f"; closest names: {', '.join(close)}" if close else ""
    raise ValueError(f"no module named {name!r} in {owner}{hint}")


def module_name(model: nn.Module, module: nn.Module) -> str:
    """The dotted name of ``module`` inside ``model`` (its class name if it is not inside)."""
    for name, m in model.named_modules():
        if m is module:
            return name or type(model).__name__
    return type(module).__name__


def model_device_dtype(model: nn.Module) -> Tuple[torch.device, torch.dtype]:
    """The device and floating dtype of a model's first parameter or buffer (CPU/float32 if it has none)."""
    # a lazy chain stops at the first floating tensor instead of listing every weight of a large model
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32
