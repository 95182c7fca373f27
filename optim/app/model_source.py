"""Where the command line and the app get a model from: the registry, a ``module:factory`` path, or a file.

Example::

    from optim.app.model_source import load_model, weights_hash
    model = load_model("efficientnet_lite0")               # registry name, pretrained weights
    model = load_model("mypackage.nets:small_cnn")          # any factory returning an nn.Module
    model = load_model("efficientnet_lite0", weights="finetuned.pt")  # a state dict for that architecture
    weights_hash(model)  # '3f0c9a...' (16 hex digits)
"""
from __future__ import annotations

import hashlib
import importlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn as nn

__all__ = [
    "load_model",
    "load_factory",
    "load_weights_file",
    "weights_hash",
    "is_torchscript",
    "hookable_torchscript",
    "ScriptModuleWrapper",
]

PathOrBytes = Union[str, os.PathLike, bytes]


def load_factory(spec: str) -> Any:
    """Import ``"package.module:function"`` and return the function (or class).

    Args:
        spec: the path, with exactly one colon.

    Returns:
        The callable.

    Raises:
        ValueError: for a malformed path, a module that does not import or a missing attribute.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr or ":" in attr:
        raise ValueError(f"a model factory path looks like 'package.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module {module_name!r} for the model factory {spec!r}: {err}") from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable (it is a {type(obj).__name__})")
    return obj


def is_torchscript(source: PathOrBytes) -> bool:
    """Whether a file (or its bytes) is a TorchScript archive rather than a pickled state dict."""
    handle: Any = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with zipfile.ZipFile(handle) as archive:
            return any(name.endswith("/code/") or "/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


class ScriptModuleWrapper(nn.Module):
    """A Python module around a TorchScript module, so that forward hooks can record its output.

    TorchScript modules refuse forward hooks, so the scripted module is kept out of ``named_modules()``
    (hooks are only ever put on the wrapper); its parameters are frozen at load time.

    Args:
        script: the TorchScript module.
    """

    def __init__(self, script: torch.jit.ScriptModule) -> None:
        super().__init__()
        object.__setattr__(self, "script", script)  # not a registered submodule: see above
        script.eval()
        for p in script.parameters():
            p.requires_grad_(False)

    def forward(self, *args: Any) -> Any:
        return self.script(*args)

    def _apply(self, fn: Any, recurse: bool = True) -> "ScriptModuleWrapper":
        self.script._apply(fn)  # .to(device) and friends reach the hidden module
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"script={getattr(self.script, 'original_name', type(self.script).__name__)}"


def hookable_torchscript(script: torch.jit.ScriptModule) -> nn.Module:
    """A hookable module tree for a TorchScript model.

    A scripted ``nn.Sequential`` becomes an ``nn.Sequential`` of its converted children (so every stage is a
    layer to visualize); any other scripted module is opaque and becomes one :class:`ScriptModuleWrapper`.
    For full access to the layers of other architectures, upload a state dict with its architecture.

    Args:
        script: the loaded TorchScript module.

    Returns:
        An ``nn.Module`` computing the same function.
    """
    if getattr(script, "original_name", "") == "Sequential":
        from collections import OrderedDict

        return nn.Sequential(OrderedDict((n, hookable_torchscript(c)) for n, c in script.named_children()))
    return ScriptModuleWrapper(script)


def load_weights_file(source: PathOrBytes, model: Optional[nn.Module] = None) -> nn.Module:
    """A model from a TorchScript file, or ``model`` with a state dict file loaded into it.

    Args:
        source: a path, or the file's bytes (an upload).
        model: the architecture for a state dict (ignored for TorchScript).

    Returns:
        The model in eval mode (a TorchScript model through :func:`hookable_torchscript`).

    Raises:
        ValueError: a state dict with no architecture, or weights that do not fit it.
    """
    what = "the uploaded file" if isinstance(source, bytes) else repr(str(source))
    handle: Any = io.BytesIO(source) if isinstance(source, bytes) else source
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise ValueError(f"no weights file at {what}")
    if is_torchscript(source):
        if isinstance(handle, io.BytesIO):
            handle.seek(0)
        return hookable_torchscript(torch.jit.load(handle, map_location="cpu")).eval()
    if model is None:
        raise ValueError(f"{what} holds a state dict; choose the architecture it belongs to")
    try:
        state = torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"{what} is neither a TorchScript file nor a state dict: {err}") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint
    if not isinstance(state, dict):
        raise ValueError(f"{what} does not hold a state dict (got {type(state).__name__})")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ValueError(f"the weights in {what} do not fit {type(model).__name__}: {' '.join(first[:3])}") from err
    return model.eval()


def load_model(
    spec: str, weights: Optional[PathOrBytes] = None, pretrained: bool = True, device: Optional[str] = None
) -> nn.Module:
    """Build a model from a registry name or a ``module:factory`` path, optionally with a weights file.

    Args:
        spec: a name from ``opt.models.list_models()`` or ``"package.module:function"``.
        weights: a state dict (loaded into the built model) or TorchScript file (which replaces it).
        pretrained: for registry models, load their pretrained weights (ignored with ``weights``).
        device: where to put the model, e.g. ``"cuda"``; default CPU.

    Returns:
        The model in eval mode.

    Raises:
        ValueError: an unknown name, a bad factory path, or a factory that returns no ``nn.Module``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a model is a registry name or 'package.module:function', got {spec!r}")
    if weights is not None and is_torchscript(weights):
        model = load_weights_file(weights)
    else:
        if ":" in spec:
            model = load_factory(spec)()
        else:
            from ..models import get_model, list_models

            if spec not in list_models():
                raise ValueError(f"unknown model {spec!r}; registered models: {', '.join(list_models())}")
            model = get_model(spec, pretrained=pretrained and weights is None)
        if not isinstance(model, nn.Module):
            raise ValueError(f"the factory {spec!r} returned a {type(model).__name__}, not an nn.Module")
        if weights is not None:
            model = load_weights_file(weights, model)
    if device is not None:
        model = model.to(device)
    return model.eval()


def weights_hash(model: nn.Module) -> str:
    """A short SHA-256 of a model's architecture name and state dict (names, shapes, dtypes, values).

    Two models with the same weights hash the same, so a gallery keyed by it never serves images of
    other weights.

    Args:
        model: the network.

    Returns:
        16 hexadecimal digits.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    digest = hashlib.sha256(type(model).__name__.encode())
    state = dict(model.state_dict())
    for prefix, module in model.named_modules():
        if isinstance(module, ScriptModuleWrapper):
            state.update({f"{prefix}.script.{k}": v for k, v in module.script.state_dict().items()})
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tuple(tensor.shape)}|{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]
