"""Where a model comes from: a registry name, a ``module:factory`` path, or a weights file; and where it runs.

The command line and the app both load models through :func:`load_model`, so both refuse the same things
the same way:

- **State dicts** are read with ``torch.load(..., weights_only=True)`` (no code runs) into a known
  architecture: a registry model (built as its factory builds it for those weights, so published files such
  as ``inception5h.pth`` fit) or a factory's model.
- **TorchScript archives** run the code inside them when used (TorchScript can read and write files), so
  they are refused unless the caller passes ``allow_torchscript=True`` for a file it trusts. The check
  reads only the archive's table of contents.
- **Factories** (``"package.module:function"``) are imported and called only when they pass the caller's
  allow-list (``allowed_factories``); the check comes before any import.
- **Downloads** that fail raise :class:`WeightsDownloadError`, naming the URL and how to load the file
  from disk instead.
- A **size limit** (``max_bytes``) is checked before a weights file is read.

>>> model = load_model("efficientnet_lite0", device="cpu")   # registry name, offline pretrained weights
>>> len(weights_hash(model))
16
>>> load_model("efficientnet_lite0", weights=b"PK\\x03\\x04", allow_torchscript=False)
Traceback (most recent call last):
...
ValueError: the uploaded file is not a weights file: ...
"""
from __future__ import annotations

import hashlib
import importlib
import io
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Collection, List, Optional, Union

import torch
import torch.nn as nn

from ._hub import DOWNLOAD_ERRORS, WeightsDownloadError, one_line

__all__ = [
    "load_model",
    "load_factory",
    "load_weights_file",
    "weights_hash",
    "is_torchscript",
    "hookable_torchscript",
    "ScriptModuleWrapper",
    "resolve_device",
    "WeightsDownloadError",
    "TORCHSCRIPT_RISK",
]

PathOrBytes = Union[str, "os.PathLike[str]", bytes]

#: What loading a TorchScript file risks, as the error messages and the app's flag help say it.
TORCHSCRIPT_RISK = "loading it runs the code stored in the file, which can read and write files on this machine"

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_FACTORY_SPEC = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*):({_IDENT}(?:\.{_IDENT})*)$")

def load_factory(spec: str, allowed: Optional[Collection[str]] = None) -> Any:
    """Import ``"package.module:function"`` and return the function (or class), if the allow-list permits it.

    Args:
        spec: the path, with exactly one colon (dotted attributes after it are followed).
        allowed: ``None`` allows any factory (the caller's own code); otherwise the exact specs allowed, or
            ``"package.module:*"`` for every attribute of one module. Checked before anything is imported.

    Returns:
        The callable (not called).

    Raises:
        ValueError: a malformed path, one outside ``allowed``, a module that does not import, a missing
            attribute, or something that is not callable.

    >>> load_factory("optim.models.efficientnet_lite:efficientnet_lite0").__name__
    'efficientnet_lite0'
    >>> load_factory("os:abort", allowed=["mypackage.nets:small_cnn"])
    Traceback (most recent call last):
    ...
    ValueError: the model factory 'os:abort' is not allowed here; allowed: 'mypackage.nets:small_cnn'
    """
    match = _FACTORY_SPEC.match(spec.strip()) if isinstance(spec, str) else None
    if match is None:
        raise ValueError(f"a model factory path looks like 'package.module:function', got {spec!r}")
    module_name, attr = match.groups()
    by_wildcard = False
    if allowed is not None:
        allowed = [str(a).strip() for a in allowed]
        by_wildcard = f"{module_name}:{attr}" not in allowed
        if by_wildcard and f"{module_name}:*" not in allowed:
            listed = ", ".join(repr(a) for a in allowed) if allowed else "none"
            raise ValueError(f"the model factory {spec!r} is not allowed here; allowed: {listed}")
        if by_wildcard and "." in attr:  # 'nets:os.abort' would reach whatever nets imports
            raise ValueError(
                f"the model factory {spec!r} is not allowed here: {module_name + ':*'!r} allows the functions and "
                f"classes defined in {module_name!r}, not attributes of what it imports"
            )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module {module_name!r} for the model factory {spec!r}: {err}") from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if by_wildcard and getattr(obj, "__module__", None) != module_name:
        raise ValueError(
            f"the model factory {spec!r} is not allowed here: {module_name + ':*'!r} allows the functions and "
            f"classes defined in {module_name!r}, and this one comes from {getattr(obj, '__module__', None)!r} "
            "(list it by its own name to allow it)"
        )
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable (it is a {type(obj).__name__})")
    return obj


def is_torchscript(source: PathOrBytes) -> bool:
    """Whether a file (or its bytes) is a TorchScript archive rather than a state dict.

    Only the zip archive's table of contents is read (a TorchScript archive holds a ``code/`` folder); nothing
    in the file is unpickled or run.

    >>> is_torchscript(b"not a zip file")
    False
    """
    handle: Any = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with zipfile.ZipFile(handle) as archive:
            return any("/code/" in f"/{name}" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
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

    Args:
        script: the loaded TorchScript module.

    Returns:
        An ``nn.Module`` computing the same function.
    """
    if getattr(script, "original_name", "") == "Sequential":
        from collections import OrderedDict

        return nn.Sequential(OrderedDict((n, hookable_torchscript(c)) for n, c in script.named_children()))
    return ScriptModuleWrapper(script)


def _describe(source: PathOrBytes) -> str:
    return "the uploaded file" if isinstance(source, (bytes, bytearray)) else repr(str(source))


def _check_source(source: PathOrBytes, max_bytes: Optional[int]) -> str:
    """The source's description, after checking that it exists and is within ``max_bytes``."""
    what = _describe(source)
    if isinstance(source, (bytes, bytearray)):
        size = len(source)
    else:
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"weights must be a path or bytes, got {type(source).__name__}")
        if not Path(source).is_file():
            raise ValueError(f"no weights file at {what}")
        size = os.path.getsize(source)
    if max_bytes is not None and size > max_bytes:
        raise ValueError(
            f"{what} is {size / 2**20:.1f} MiB, over the limit of {max_bytes / 2**20:.1f} MiB for weights files"
        )
    return what


def _refuse_torchscript(what: str) -> ValueError:
    return ValueError(
        f"{what} is a TorchScript archive and was refused: {TORCHSCRIPT_RISK}. Save a state dict instead "
        "(torch.save(model.state_dict(), path)) and load it into its architecture; allow TorchScript only for "
        "files you trust (allow_torchscript=True; the app's --unsafe-allow-torchscript)"
    )


def _load_torchscript(source: PathOrBytes, what: str) -> nn.Module:
    handle: Any = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        script = torch.jit.load(handle, map_location="cpu")
    except Exception as err:  # torch.jit.load raises RuntimeError and others for a damaged archive
        raise ValueError(f"{what} is not a loadable TorchScript file: {one_line(err)}") from err
    return hookable_torchscript(script).eval()


def _read_state_dict(source: PathOrBytes, what: str) -> Any:
    handle: Any = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        state = torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(
            f"{what} is not a weights file: neither a TorchScript file nor a state dict readable with "
            f"weights_only=True ({one_line(err)})"
        ) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint
    if not isinstance(state, dict):
        raise ValueError(f"{what} does not hold a state dict (got {type(state).__name__})")
    return state


def load_weights_file(
    source: PathOrBytes,
    model: Optional[nn.Module] = None,
    *,
    allow_torchscript: bool = False,
    max_bytes: Optional[int] = None,
) -> nn.Module:
    """``model`` with a state dict file loaded into it (strictly), or a trusted TorchScript model.

    Args:
        source: a path, or the file's bytes (an upload).
        model: the architecture for a state dict.
        allow_torchscript: load a TorchScript archive (it replaces ``model``); refused by default because
            loading it runs the code stored in it.
        max_bytes: refuse larger files before reading them.

    Returns:
        The model in eval mode (a TorchScript model through :func:`hookable_torchscript`).

    Raises:
        ValueError: a missing or oversized file, a refused TorchScript archive, a file that is no weights
            file, a state dict with no architecture, or weights that do not fit it (keys or shapes).

    >>> load_weights_file(b"garbage", nn.Linear(2, 2))
    Traceback (most recent call last):
    ...
    ValueError: the uploaded file is not a weights file: ...
    """
    what = _check_source(source, max_bytes)
    if is_torchscript(source):
        if not allow_torchscript:
            raise _refuse_torchscript(what)
        return _load_torchscript(source, what)
    state = _read_state_dict(source, what)
    if model is None:
        raise ValueError(f"{what} holds a state dict; choose the architecture it belongs to")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ValueError(f"the weights in {what} do not fit {type(model).__name__}: {' '.join(first[:3])}") from err
    return model.eval()


def resolve_device(device: Union[str, torch.device, None] = None) -> torch.device:
    """The device to run on, checked to exist on this machine.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a ``torch.device``, or ``None`` for CUDA when
            available, else the CPU.

    Returns:
        The ``torch.device``.

    Raises:
        ValueError: an unknown device name, or a device this machine or this torch build does not have
            (e.g. ``"cuda"`` where ``torch.cuda.is_available()`` is False), with what is available.
        TypeError: neither a str, a ``torch.device`` nor ``None``.

    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("tpu7")
    Traceback (most recent call last):
    ...
    ValueError: unknown device 'tpu7': ...
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device.strip())
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"unknown device {device!r}: {one_line(err)} (use e.g. 'cpu', 'cuda', 'cuda:1' or 'mps')"
            ) from None
    else:
        raise TypeError(f"device must be a str, a torch.device or None, got {type(device).__name__}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device was found"
            raise ValueError(f"device {str(device)!r} is not available: {why} (torch.cuda.is_available() is False); "
                             "use 'cpu'")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {str(device)!r} is not available: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {str(device)!r} is not available (torch.backends.mps.is_available() is False); "
                             "use 'cpu'")
    elif dev.type != "cpu":
        backend = getattr(torch, dev.type, None)
        available = getattr(backend, "is_available", None)
        if callable(available) and not available():
            raise ValueError(f"device {str(device)!r} is not available (torch.{dev.type}.is_available() is False); "
                             "use 'cpu'")
    return dev


def _download_url(factory: Any) -> Optional[str]:
    """The URL a factory downloads from: the one pinned URL its module holds, else ``None``."""
    import sys

    from ._hub import WEIGHTS_SHA256

    module = sys.modules.get(getattr(factory, "__module__", ""), None)
    urls: List[str] = [v for v in vars(module).values() if isinstance(v, str) and v in WEIGHTS_SHA256] if module else []
    return urls[0] if len(urls) == 1 else None


def _registry_model(
    spec: str, weights: Optional[PathOrBytes], pretrained: bool, progress: bool
) -> nn.Module:
    from .registry import get_model, model_info

    entry = model_info(spec)  # an unknown name: the registry's error, with the closest names
    if weights is None:
        try:
            return get_model(spec, pretrained=pretrained, progress=progress)
        except WeightsDownloadError as err:  # the hub's own downloader: it knows the URL
            raise WeightsDownloadError(spec, err.url, err.reason) from err.__cause__
        except DOWNLOAD_ERRORS as err:  # another downloader a factory uses
            if not pretrained or entry.weights_offline:
                raise
            raise WeightsDownloadError(spec, _download_url(entry.factory), one_line(err)) from err
    # The factory loads the file itself (model_path=), so it builds the architecture those weights belong to
    # (a published file such as inception5h.pth fits the pretrained configuration), with weights_only=True.
    with tempfile.TemporaryDirectory(prefix="optim-weights-") as folder:
        if isinstance(weights, (bytes, bytearray)):
            path = os.path.join(folder, "upload.pt")
            with open(path, "wb") as f:
                f.write(weights)
        else:
            path = str(weights)
        what = _describe(weights)
        try:
            return get_model(spec, pretrained=pretrained, model_path=path, progress=progress)
        except ValueError as err:  # the strict load's message names the temporary path of an upload
            raise ValueError(str(err).replace(path, what)) from err
        except (ImportError, TypeError):
            raise
        except Exception as err:  # torch.load's errors for a damaged file come in many types
            raise ValueError(
                f"{what} is not a weights file: neither a TorchScript file nor a state dict readable with "
                f"weights_only=True ({one_line(err)})"
            ) from err


def load_model(
    spec: str,
    weights: Optional[PathOrBytes] = None,
    pretrained: bool = True,
    device: Union[str, torch.device, None] = None,
    *,
    allow_torchscript: bool = False,
    allowed_factories: Optional[Collection[str]] = None,
    max_bytes: Optional[int] = None,
    progress: bool = False,
) -> nn.Module:
    """Build a model from a registry name or a ``module:factory`` path, optionally with a weights file.

    Args:
        spec: a name from ``opt.models.list_models()`` or ``"package.module:function"``.
        weights: a state dict (a path or an upload's bytes) for that architecture; for a registry model the
            factory loads it (``model_path=``), so it gets the architecture of its pretrained weights when
            ``pretrained`` is True. A TorchScript file replaces the model, and only with ``allow_torchscript``.
        pretrained: for registry models, their pretrained weights (or the architecture ``weights`` fits).
        device: where to put the model (see :func:`resolve_device`; checked before anything is built);
            default CPU.
        allow_torchscript: accept a TorchScript ``weights`` file (see :data:`TORCHSCRIPT_RISK`).
        allowed_factories: the factories ``spec`` may name (see :func:`load_factory`); ``None`` for any.
        max_bytes: the size limit of ``weights``.
        progress: show a download's progress bar.

    Returns:
        The model in eval mode.

    Raises:
        ValueError: an unknown name (with close names), a bad or disallowed factory path, a factory that
            returns no ``nn.Module``, an unavailable device, or a weights file that is refused or does not fit.
        WeightsDownloadError: the pretrained weights could not be downloaded (names the URL).

    >>> load_model("efficientnet_lite7")
    Traceback (most recent call last):
    ...
    ValueError: unknown model 'efficientnet_lite7'; did you mean ...
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a model is a registry name or 'package.module:function', got {spec!r}")
    spec = spec.strip()
    dev = resolve_device(device) if device is not None else None
    model: Any
    if weights is not None:
        what = _check_source(weights, max_bytes)
        if is_torchscript(weights):
            if not allow_torchscript:
                raise _refuse_torchscript(what)
            model = _load_torchscript(weights, what)
        elif ":" in spec:
            model = load_weights_file(weights, _call_factory(spec, allowed_factories), max_bytes=max_bytes)
        else:
            model = _registry_model(spec, weights, pretrained, progress)
    elif ":" in spec:
        model = _call_factory(spec, allowed_factories)
    else:
        model = _registry_model(spec, None, pretrained, progress)
    if dev is not None:
        model = model.to(dev)
    return model.eval()


def _call_factory(spec: str, allowed: Optional[Collection[str]]) -> nn.Module:
    model = load_factory(spec, allowed)()
    if not isinstance(model, nn.Module):
        raise ValueError(f"the factory {spec!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def weights_hash(model: nn.Module) -> str:
    """A short SHA-256 of a model's architecture name and state dict (names, shapes, dtypes, values).

    Two models with the same weights hash the same, so a gallery keyed by it never serves images of
    other weights.

    Args:
        model: the network.

    Returns:
        16 hexadecimal digits.

    >>> weights_hash(nn.Linear(2, 2)) == weights_hash(nn.Linear(2, 2))   # two random initializations
    False
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
