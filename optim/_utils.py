"""Small helpers shared by every subpackage: optional imports, module lookup by name, and the count check."""
from __future__ import annotations

import contextlib
import difflib
import importlib
import itertools
import numbers
import threading
from types import ModuleType
from typing import Any, Dict, Iterator, List, Tuple, Union

import torch
import torch.nn as nn

__all__ = [
    "optional_import",
    "named_module_map",
    "resolve_module",
    "lookup_module",
    "module_name",
    "model_device_dtype",
    "strip_compiled",
    "COMPILED_PREFIX",
    "is_compiled",
    "eager_compiled",
    "is_out_of_memory",
    "check_positive",
]

# ``torch.compile(module)`` returns an ``OptimizedModule`` that holds the original as ``_orig_mod``, so every
# name under it gains this component ("layer3" becomes "_orig_mod.layer3"); names here leave it out
COMPILED_PREFIX = "_orig_mod"


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


def strip_compiled(name: str) -> str:
    """A dotted module name without the ``_orig_mod`` components that ``torch.compile`` wrappers add.

    Args:
        name: a name from ``named_modules()``.

    Returns:
        The name the uncompiled model gives the same module (``""`` for a compiled root's original).

    Example:
        >>> strip_compiled("_orig_mod.layer3.5"), strip_compiled("layer3._orig_mod.0"), strip_compiled("_orig_mod")
        ('layer3.5', 'layer3.0', '')
    """
    if COMPILED_PREFIX not in name:
        return name
    return ".".join(part for part in name.split(".") if part != COMPILED_PREFIX)


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` is, or holds, a ``torch.compile``d module (an ``OptimizedModule`` with ``_orig_mod``).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> is_compiled(net), is_compiled(torch.compile(net))
        (False, True)
    """
    return any(
        type(m).__name__ == "OptimizedModule" and isinstance(getattr(m, COMPILED_PREFIX, None), nn.Module)
        for m in model.modules()
    )


@contextlib.contextmanager
def eager_compiled(model: nn.Module) -> Iterator[None]:
    """Run ``torch.compile``d modules inside ``model`` eagerly for the duration (``torch.compiler.set_stance(
    "force_eager")``); a no-op for a model without any.

    Forward hooks and a compiled graph do not mix: dynamo traces the hooks present when it compiles (each one a
    graph break where it records or stops the pass) and, by default (``torch._dynamo.config.
    skip_nnmodule_hook_guards``), does not notice hooks added later, so a graph compiled while a render hooked
    ``layer3`` silently skips the hooks of a later render on ``layer4`` (or captum's). Passes that record
    activations therefore run the compiled model's original modules eagerly; plain calls outside them keep the
    compiled graph. See ``docs/architecture.md`` ("Any model") and ``benchmarks/model_zoo_smoke.py --compile``.

    Example:
        >>> net = torch.compile(nn.Sequential(nn.Linear(2, 2)), backend="eager")
        >>> with eager_compiled(net):
        ...     net(torch.ones(1, 2)).shape
        torch.Size([1, 2])
    """
    if not is_compiled(model):
        yield
        return
    _enter_eager()
    try:
        yield
    finally:
        _exit_eager()


# ``set_stance`` contexts restore the stance they saw on entry, so two overlapping ones left out of order (two
# passive recorders closed in the order they were opened) would leave ``force_eager`` on for good: one stance
# context is held while any ``eager_compiled`` block is open, entered by the first and left by the last.
_EAGER_LOCK = threading.Lock()
_EAGER_OPEN: List[Any] = []  # [the held stance context, number of open blocks]


def _enter_eager() -> None:
    with _EAGER_LOCK:
        if not _EAGER_OPEN:
            stance = torch.compiler.set_stance("force_eager")
            stance.__enter__()
            _EAGER_OPEN[:] = [stance, 0]
        _EAGER_OPEN[1] += 1


def _exit_eager() -> None:
    with _EAGER_LOCK:
        _EAGER_OPEN[1] -= 1
        if _EAGER_OPEN[1] == 0:
            stance = _EAGER_OPEN[0]
            _EAGER_OPEN.clear()
            stance.__exit__(None, None, None)


def named_module_map(model: nn.Module) -> Dict[str, nn.Module]:
    """Every submodule of ``model`` by dotted name (the root module is left out).

    Names are those of the uncompiled model: a ``torch.compile``d model (or submodule) is listed through its
    ``_orig_mod``, without that component, so ``"layer3"`` names the same module compiled or not.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        >>> list(named_module_map(net)) == list(named_module_map(torch.compile(net)))
        True
    """
    out: Dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        name = strip_compiled(name)
        if name and name not in out:
            out[name] = m
    return out


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
    plain = strip_compiled(name)
    if plain in modules:
        return modules[plain]
    close = difflib.get_close_matches(name, list(modules), n=5, cutoff=0.5)
    hint = f"; closest names: {', '.join(close)}" if close else ""
    raise ValueError(f"no module named {name!r} in {owner}{hint}")


def module_name(model: nn.Module, module: nn.Module) -> str:
    """The dotted name of ``module`` inside ``model`` (its class name if it is not inside); names under a
    ``torch.compile`` wrapper leave out ``_orig_mod`` (see :func:`named_module_map`)."""
    for name, m in model.named_modules():
        if m is module:
            return strip_compiled(name) or type(model).__name__
    return type(module).__name__


def model_device_dtype(model: nn.Module) -> Tuple[torch.device, torch.dtype]:
    """The device and floating dtype of a model's first parameter or buffer (CPU/float32 if it has none)."""
    # a lazy chain stops at the first floating tensor instead of listing every weight of a large model
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure (``torch.OutOfMemoryError`` on a GPU, ``MemoryError``, or the
    allocator's own message on the CPU): no fault of the input's shape, so it is never explained as one.

    Example:
        >>> is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")), is_out_of_memory(
        ...     RuntimeError("shape mismatch"))
        (True, False)
    """
    text = str(err).lower()
    return isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or any(
        t in text for t in ("out of memory", "can't allocate memory", "not enough memory")
    )


def check_positive(value: Any, name: str, *, zero: bool = False) -> int:
    """Validate a count argument (``steps``, ``batch_size``, ``channels`` ...): an int ``>= 1`` (``>= 0`` with
    ``zero``), never a bool.

    Raises:
        ValueError: anything else, naming the argument and the value.

    Example:
        >>> check_positive(2.5, "steps")
        Traceback (most recent call last):
        ...
        ValueError: steps must be a positive int, got 2.5
        >>> check_positive(0, "steps", zero=True)
        0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < (0 if zero else 1):
        raise ValueError(f"{name} must be {'an int >= 0' if zero else 'a positive int'}, got {value!r}")
    return int(value)
