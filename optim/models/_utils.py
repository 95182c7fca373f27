"""Inspect any model: its hookable layers, their output shapes, and their activations for an input."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .._utils import model_device_dtype, named_module_map, resolve_module
from ..activations import ActivationMap, ActivationRecorder, model_frozen, record_activations

__all__ = ["LayerInfo", "get_model_layers", "get_model_layer_graph", "layer_info", "collect_activations"]

Target = Union[str, nn.Module]


class LayerInfo(NamedTuple):
    """One row of :func:`layer_info`."""

    name: str
    type: str
    shape: Optional[Tuple[int, ...]]
    channels: Optional[int]


def get_model_layers(model: nn.Module) -> List[str]:
    """Every hookable submodule of ``model`` as a dotted name (the names loss targets accept).

    Args:
        model: any network.

    Returns:
        Names in definition order, containers included, e.g. ``["conv1", "layer1", "layer1.0", ...]``.
        (Lucent's ``layer_names, dependency_graph = get_model_layers(model)`` is
        :func:`get_model_layer_graph`, which also says which layer feeds which.)

    Example:
        >>> get_model_layers(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), nn.Conv2d(4, 2, 1))))
        ['0', '1', '1.0', '1.1']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return list(named_module_map(model))


def get_model_layer_graph(
    model: nn.Module,
    input_size: Sequence[int] = (1, 3, 224, 224),
    *,
    model_input: Optional[torch.Tensor] = None,
) -> Tuple[List[str], Dict[str, List[str]]]:
    """The layer names and which layer feeds which (Lucent's ``layer_names, dependency_graph``), from one pass.

    The graph is over the *leaf* layers (modules without children: convolutions, activations, pools, ...) that
    ran in one forward pass: ``dependency_graph[a]`` lists, in execution order, the leaf layers that read
    ``a``'s output, directly or through functional code between modules (``torch.cat`` of an inception block,
    a residual ``+``, ``flatten``). Edges are found in the autograd graph of that pass, so they are the real data
    flow, whatever the module tree looks like; containers (``nn.Sequential``, blocks) are not nodes, since their
    output is one of their children's. A layer called several times is one node. Layers that read only the
    model's input have no predecessor; layers that ran but feed nothing (the classifier) map to ``[]``.

    Args:
        model: any network whose leaf layers' outputs depend on its input.
        input_size: the shape of the zero input used when ``model_input`` is not given.
        model_input: the input to run (default: zeros of ``input_size`` on the model's device and dtype).

    Returns:
        ``(layer_names, dependency_graph)``: :func:`get_model_layers`'s list (every module, containers included),
        and ``{leaf name: [names of the leaves it feeds]}`` for every leaf that ran, in execution order.

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: a bad ``input_size``.

    Example:
        >>> class Residual(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.conv = nn.Conv2d(3, 3, 3, padding=1)
        ...         self.relu = nn.ReLU()
        ...         self.head = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
        ...     def forward(self, x):
        ...         return self.head(self.relu(self.conv(x)) + x)
        >>> names, graph = get_model_layer_graph(Residual(), (1, 3, 4, 4))
        >>> names
        ['conv', 'relu', 'head', 'head.0', 'head.1']
        >>> graph
        {'conv': ['relu'], 'relu': ['head.0'], 'head.0': ['head.1'], 'head.1': []}
    """
    import contextlib

    from ..activations import autograd_context

    names = get_model_layers(model)
    modules = named_module_map(model)
    leaves = [(name, m) for name, m in modules.items() if not any(True for _ in m.children())]
    if model_input is None:
        size = tuple(int(s) for s in input_size)
        if len(size) < 1 or any(s <= 0 for s in size):
            raise ValueError(f"input_size must be positive sizes such as (1, 3, 224, 224), got {tuple(input_size)}")
        device, dtype = model_device_dtype(model)
        model_input = torch.zeros(size, device=device, dtype=dtype)
    # every call of every leaf: (call number, name, the autograd node of its output)
    calls: List[Tuple[int, str, Any]] = []
    owners: Dict[Any, List[Tuple[int, str]]] = {}

    def recorder_select(name: str):
        def select(output: Any) -> torch.Tensor:
            from ..activations import select_tensor

            t = select_tensor(output, None, name)
            node = t.grad_fn
            if node is not None:
                k = len(calls)
                calls.append((k, name, node))
                owners.setdefault(node, []).append((k, name))
            return t

        return select

    with contextlib.ExitStack() as stack:
        stack.enter_context(autograd_context())
        stack.enter_context(model_frozen(model))
        for name, module in leaves:
            # passive: one direct model(x) pass feeds every leaf's recorder
            stack.enter_context(ActivationRecorder(model, [module], stop_early=False, inplace_safe=False,
                                                   select=recorder_select(name), passive=True))
        x = model_input.detach().requires_grad_(model_input.is_floating_point())
        model(x)

    ran = []
    for _, name, _ in calls:
        if name not in ran:
            ran.append(name)
    graph: Dict[str, List[str]] = {name: [] for name in ran}

    def producer(node: Any, before: int) -> Optional[str]:
        earlier = [o for o in owners.get(node, []) if o[0] < before]
        return max(earlier)[1] if earlier else None

    for k, name, node in calls:
        found: List[str] = []
        direct = producer(node, k)  # a layer that passes its input through (an identity) shares its node
        if direct is not None:
            found.append(direct)
        else:
            pending = [n for n, _ in node.next_functions if n is not None]
            seen = set()
            while pending:
                current = pending.pop()
                if current in seen:
                    continue
                seen.add(current)
                source = producer(current, k)
                if source is not None:
                    found.append(source)
                else:
                    pending.extend(n for n, _ in current.next_functions if n is not None)
        for source in found:
            if source != name and name not in graph[source]:
                graph[source].append(name)
    order = {name: i for i, name in enumerate(ran)}
    return names, {src: sorted(dsts, key=order.__getitem__) for src, dsts in graph.items()}


def layer_info(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> List[LayerInfo]:
    """Name, class, output shape and channel count of each layer, from one forward pass.

    The pass runs on a zero input of the model's device and dtype through the activation core (eval mode,
    ``no_grad``, the model restored afterwards); a module called several times reports its last call.

    Args:
        model: any network taking one NCHW tensor.
        input_size: the input shape.

    Returns:
        One :class:`LayerInfo` per module that ran, in definition order. ``shape`` is that of the
        module's (first) output tensor; ``channels`` is ``shape[1]`` (``None`` below 2 dimensions).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> [(r.name, r.shape, r.channels) for r in layer_info(net, (1, 3, 8, 8))]
        [('0', (1, 4, 6, 6), 4), ('1', (1, 4, 6, 6), 4)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    size = tuple(int(s) for s in input_size)
    if len(size) < 1 or any(s <= 0 for s in size):
        raise ValueError(
            f"input_size must be positive sizes such as (1, 3, 224, 224), got {tuple(input_size)}"
        )
    modules = named_module_map(model)
    device, dtype = model_device_dtype(model)
    with torch.no_grad(), model_frozen(model), ActivationRecorder(model, list(modules.values()), stop_early=False,
                                                                  inplace_safe=False) as rec:
        acts = rec.run_call(lambda: model(torch.zeros(size, device=device, dtype=dtype)), missing_ok=True)
    rows = []
    for name, module in modules.items():
        if module not in acts:
            continue
        shape = tuple(acts[module].shape)
        channels = shape[1] if len(shape) >= 2 else None
        rows.append(LayerInfo(name, type(module).__name__, shape, channels))
    return rows


def collect_activations(
    model: nn.Module,
    targets: Union[Target, Sequence[Target]],
    model_input: Union[torch.Tensor, Tuple[torch.Tensor, ...], None] = None,
    requires_grad: bool = False,
    *,
    call: int = -1,
) -> ActivationMap:
    """The output of each target layer for one input, in eval mode (captum.optim's name).

    A thin door into :func:`optim.activations.record_activations`: the model runs in eval mode whatever mode
    it is in (and is left in it), outputs are recorded as produced, and the pass stops after the last target.

    Args:
        model: any network.
        targets: a module or dotted name, or a list of them.
        model_input: the input tensor (or tuple of inputs); default a zero 1x3x224x224 image on the
            model's device and dtype.
        requires_grad: keep the autograd graph (default: run under ``no_grad``).
        call: which call of a module called several times (default the last).

    Returns:
        An :class:`~optim.activations.ActivationMap`: each target, as given, by module or by dotted name.

    Raises:
        ValueError: for an unknown layer name or a target that never ran.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> acts = collect_activations(net, "0", torch.zeros(2, 3, 8, 8))
        >>> acts["0"].shape == acts[net[0]].shape == (2, 4, 6, 6)
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if model_input is None:
        device, dtype = model_device_dtype(model)
        model_input = torch.zeros(1, 3, 224, 224, device=device, dtype=dtype)
    inputs = model_input if isinstance(model_input, tuple) else (model_input,)
    return record_activations(model, targets, *inputs, requires_grad=requires_grad, call=call)


def _load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """``load_state_dict(strict=True)`` whose errors are ValueErrors naming the offending keys.

    Args:
        model: the network to fill.
        state_dict: its weights.
        source: where they come from (a path or URL), for the messages.

    Returns:
        ``model``.

    Raises:
        ValueError: for something that is not a state dict, missing or unexpected keys (each named), or
            mis-shaped tensors.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{source} does not hold a state dict (got {type(state_dict).__name__})")
    expected = set(model.state_dict())
    given = set(state_dict)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise ValueError(
            f"the weights in {source} do not fit {type(model).__name__}: "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:  # shape mismatches, each named by torch
        raise ValueError(f"the weights in {source} do not fit {type(model).__name__}: {err}") from err
    return model


def _load_pretrained(
    model: nn.Module,
    url: str,
    model_path: Optional[str] = None,
    progress: bool = True,
    sha256: Optional[str] = None,
) -> nn.Module:
    """Load weights strictly into ``model`` from ``model_path`` or, without one, from ``url``.

    The download is cached where ``torch.hub.load_state_dict_from_url`` caches it (under
    ``torch.hub.get_dir()``), and the cached file's SHA-256 is checked, before it is read, against ``sha256``
    (default ``WEIGHTS_SHA256[url]``), or against the digest recorded at its first download when none is
    published (see :mod:`optim.models._hub`). Local files are the user's own
    and are read as they are. Everything is read with ``torch.load(..., weights_only=True)``.
    """
    if model_path is None:
        from ._hub import load_verified_state_dict

        # stacklevel 4: the warning points at whoever called the model factory
        state_dict = load_verified_state_dict(url, sha256=sha256, progress=progress, stacklevel=4)
        source = url
    else:
        state_dict = torch.load(model_path, map_location="cpu", weights_only=True)
        source = str(model_path)
    return _load_state_dict_strict(model, state_dict, source)
