"""Inspect any model: its hookable layers, their output shapes, and their activations for an input."""
from __future__ import annotations

import operator
import warnings
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .._utils import eager_compiled, model_device_dtype, named_module_map, resolve_module
from ..activations import ActivationMap, ActivationRecorder, model_frozen, record_activations

__all__ = [
    "LayerInfo",
    "PASSTHROUGH_CLASS_NAMES",
    "get_model_layers",
    "get_model_layer_graph",
    "layer_info",
    "collect_activations",
]

Target = Union[str, nn.Module]


class LayerInfo(NamedTuple):
    """One row of :func:`layer_info`: a layer's name, class, output shape and unit count.

    ``channels`` counts the layer's units, the range of ``"layer:unit"``: channels for NCHW / NHWC outputs,
    hidden units (the last dim) for token outputs ``(N, L, D)`` (:func:`optim.layouts.unit_count`). ``error`` is
    set, and ``shape`` and ``channels`` are ``None``, for a layer whose forward raised during the probe pass (a
    fixed-size attention pool at a small input): ``"ExceptionType: message"``, or ``"failed inside <name>"`` for
    the modules around the one that raised.
    """

    name: str
    type: str
    shape: Optional[Tuple[int, ...]]
    channels: Optional[int]
    error: Optional[str] = None

    def __repr__(self) -> str:
        extra = "" if self.error is None else f", error={self.error!r}"
        return (f"LayerInfo(name={self.name!r}, type={self.type!r}, shape={self.shape!r}, "
                f"channels={self.channels!r}{extra})")


#: Modules that return their input unchanged in eval mode (a render on them is a render on the layer before),
#: left out of :func:`get_model_layers` unless ``passthrough=True``: ``nn.Identity``, every ``nn.Dropout*``, and
#: the stochastic-depth modules of torchvision (``StochasticDepth``) and timm (``DropPath``), matched by class
#: name so neither library is imported.
PASSTHROUGH_CLASS_NAMES = frozenset({"StochasticDepth", "DropPath"})


def _is_passthrough(module: nn.Module) -> bool:
    return isinstance(module, (nn.Identity, nn.modules.dropout._DropoutNd)) or any(
        cls.__name__ in PASSTHROUGH_CLASS_NAMES for cls in type(module).__mro__
    )


def _never_runs(model: nn.Module) -> set:
    """ids of modules that a forward pass never calls, whatever the input.

    A module without a ``forward`` of its own (``nn.ModuleList``, ``nn.ModuleDict``: containers that only hold
    layers) cannot be called; ``nn.MultiheadAttention`` reads its ``out_proj`` weights functionally
    (``F.multi_head_attention_forward``), so that ``Linear`` never runs either.
    """
    out = set()
    for m in model.modules():
        if type(m).forward is nn.Module.forward:
            out.add(id(m))
        if isinstance(m, nn.MultiheadAttention):
            out.add(id(m.out_proj))
    return out


def _default_input_size(model: nn.Module, size: Union[None, int, Sequence[int]] = None) -> Tuple[int, ...]:
    """The probe shape when none is given: one image of the size a render of ``model`` uses (``size``, else
    :func:`~optim.models.preprocess.render_inputs`: its native size, else ``DEFAULT_SIZE``), with as many
    channels as its first convolution reads (:func:`~optim.optimization.defaults.model_input_channels`)."""
    from ..optimization.defaults import model_input_channels
    from .preprocess import render_inputs

    return (1, model_input_channels(model), *render_inputs(model, size).size)


def _check_input_size(model: nn.Module, input_size: Any) -> Tuple[int, ...]:
    """Validate ``input_size``: the full input shape, batch first, of positive ints.

    Any rank is allowed (tokens ``(N, L, D)``, audio ``(N, T, F)``, video ``(N, T, C, H, W)`` models may hold a
    ``Conv2d``); a 3-entry shape that starts with the first ``Conv2d``'s input channels is most likely an
    unbatched image, which ``Conv2d`` accepts and which would list every shape without its batch dimension:
    that gets a warning naming the batched shape."""
    example = "such as (1, 3, 224, 224) for images or (1, 5, 16) for tokens"
    if isinstance(input_size, (str, bytes)):
        raise TypeError(f"input_size must be the full input shape, batch first, {example}, got {input_size!r}")
    try:
        given = tuple(input_size)
    except TypeError:
        raise TypeError(
            f"input_size must be the full input shape, batch first, {example}, got {input_size!r} "
            f"({type(input_size).__name__})"
        ) from None
    try:
        size = tuple(operator.index(s) for s in given if not isinstance(s, bool))
    except TypeError:
        size = ()
    if not given or len(size) != len(given) or any(s <= 0 for s in size):
        raise ValueError(f"input_size must be positive sizes, batch first, {example}, got {given!r}")
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if len(size) == 3 and first_conv is not None and size[0] == first_conv.in_channels:
        warnings.warn(
            f"input_size {given!r} looks like one unbatched image of {type(model).__name__} (its first Conv2d reads "
            f"{first_conv.in_channels} channels): the shapes listed will lack the batch dimension; give "
            f"{(1, *size)!r}, or the input itself as model_input=",
            UserWarning,
            stacklevel=3,
        )
    return size


def _probe_input(
    model: nn.Module, input_size: Optional[Sequence[int]], model_input: Optional[torch.Tensor]
) -> torch.Tensor:
    if model_input is not None:
        if not isinstance(model_input, torch.Tensor):
            raise TypeError(f"model_input must be a tensor, got {type(model_input).__name__}")
        return model_input
    size = _default_input_size(model) if input_size is None else _check_input_size(model, input_size)
    device, dtype = model_device_dtype(model)
    return torch.zeros(size, device=device, dtype=dtype)


def _failing_modules(err: BaseException, modules: Dict[str, nn.Module]) -> List[str]:
    """The names of the model's modules whose ``forward`` was running when ``err`` was raised, innermost last."""
    by_id = {id(m): name for name, m in modules.items()}
    names: List[str] = []
    tb = err.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        name = by_id.get(id(owner)) if tb.tb_frame.f_code.co_name == "forward" else None
        if name is not None and name not in names:
            names.append(name)
        tb = tb.tb_next
    return names


def _probe(
    model: nn.Module, x: torch.Tensor, modules: Dict[str, nn.Module]
) -> Tuple[ActivationMap, Dict[str, str]]:
    """One forward pass of ``x`` recording every module (eval mode, ``no_grad``, the model restored).

    Returns the recorded outputs and ``{name: error}`` for the modules that were running when the pass raised
    (empty when it did not): the pass does not abort the listing.
    """
    failed: Dict[str, str] = {}
    if not modules:  # a model without submodules has no layers to list
        return ActivationMap((), model), failed
    with torch.no_grad(), model_frozen(model), ActivationRecorder(model, list(modules.values()), stop_early=False,
                                                                  inplace_safe=False) as rec:
        try:
            rec.run_call(lambda: model(x), missing_ok=True)
        except Exception as err:  # a layer that fails at this input: list what ran, name the failing layers
            stack = _failing_modules(err, modules)
            message = f"{type(err).__name__}: {err}".strip()
            if stack:
                inner = stack[-1]
                failed = {name: f"failed inside {inner}" for name in stack[:-1]}
                failed[inner] = message
            warnings.warn(
                f"the probe pass of {type(model).__name__} on an input of shape {tuple(x.shape)} failed"
                + (f" in {stack[-1]!r}" if stack else "")
                + f" ({message.splitlines()[0] if message else type(err).__name__}); modules after it are not "
                "listed (try the model's native input size)",
                stacklevel=3,
            )
        acts = rec.recorded()
    return acts, failed


def get_model_layers(
    model: nn.Module,
    input_size: Optional[Sequence[int]] = None,
    *,
    model_input: Optional[torch.Tensor] = None,
    passthrough: bool = False,
) -> List[str]:
    """The layers of ``model`` that can be rendered or recorded, as dotted names (the names loss targets accept).

    Without an input, the listing is static: every submodule in definition order, containers that run
    (``nn.Sequential``, blocks) included, but not modules that never run (``nn.ModuleList`` / ``nn.ModuleDict``,
    which have no ``forward``; the ``out_proj`` of ``nn.MultiheadAttention``, whose weights it reads
    functionally). With ``input_size`` or ``model_input``, one probe forward pass (through the activation core,
    eval mode, the model restored) keeps only the modules that actually ran (and those that were running when
    the pass failed, see :func:`layer_info`). Modules that return their input unchanged in eval mode
    (``nn.Identity``, dropout, stochastic depth: :data:`PASSTHROUGH_CLASS_NAMES`) are left out unless
    ``passthrough=True``: a render on one is a render on the layer before it. Every module stays targetable by
    name. Names under a ``torch.compile`` wrapper leave out ``_orig_mod``.

    Args:
        model: any network.
        input_size: the shape of a zero probe input (e.g. ``(1, 3, 224, 224)``); ``None``: no probe.
        model_input: the probe input itself (instead of ``input_size``).
        passthrough: keep identity-like modules.

    Returns:
        Names in definition order, e.g. ``["conv1", "bn1", "relu", "maxpool", "layer1", "layer1.0", ...]``.
        (Lucent's ``layer_names, dependency_graph = get_model_layers(model)`` is
        :func:`get_model_layer_graph`, which also says which layer feeds which.)

    Raises:
        TypeError: ``model`` is not a module, or ``input_size`` is not a shape (an int, a str).
        ValueError: a bad ``input_size`` (empty, or a size below 1).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(), nn.Sequential(nn.ReLU(), nn.Conv2d(4, 2, 1)))
        >>> get_model_layers(net)
        ['0', '2', '2.0', '2.1']
        >>> get_model_layers(net, passthrough=True)
        ['0', '1', '2', '2.0', '2.1']
        >>> mha = nn.MultiheadAttention(8, 2)
        >>> get_model_layers(nn.ModuleDict({"attn": mha, "blocks": nn.ModuleList([nn.Linear(8, 8)])}))
        ['attn', 'blocks.0']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if input_size is None and model_input is None:
        return list(_listed_modules(model, passthrough))
    rows = layer_info(model, input_size, model_input=model_input, passthrough=passthrough)
    return [row.name for row in rows]


def _listed_modules(model: nn.Module, passthrough: bool) -> Dict[str, nn.Module]:
    """The static listing of :func:`get_model_layers`: name -> module."""
    never = _never_runs(model)
    return {
        name: m
        for name, m in named_module_map(model).items()
        if id(m) not in never and (passthrough or not _is_passthrough(m))
    }


def get_model_layer_graph(
    model: nn.Module,
    input_size: Optional[Sequence[int]] = None,
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
        input_size: the full shape, batch first, of the zero input used when ``model_input`` is not given
            (``None``: one image of the size a render of ``model`` uses, as :func:`layer_info` probes).
        model_input: the input to run (default: zeros of ``input_size`` on the model's device and dtype).

    Returns:
        ``(layer_names, dependency_graph)``: :func:`get_model_layers`'s static list (containers included),
        and ``{leaf name: [names of the leaves it feeds]}`` for every leaf that ran, in execution order.

    Raises:
        TypeError: ``model`` is not a module, or ``input_size`` is not a shape.
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
    model_input = _probe_input(model, input_size, model_input)
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
        with eager_compiled(model):  # hooks and a compiled graph: see optim._utils.eager_compiled
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


def layer_info(
    model: nn.Module,
    input_size: Optional[Sequence[int]] = None,
    *,
    model_input: Optional[torch.Tensor] = None,
    passthrough: bool = True,
) -> List[LayerInfo]:
    """Name, class, output shape and unit count of each layer that runs, from one probe forward pass.

    The pass runs on a zero input of the model's device and dtype through the activation core (eval mode,
    ``no_grad``, the model restored afterwards); a module called several times reports its last call. The rows
    are every module that ran, modules returning their input unchanged (``nn.Identity``, dropout) included
    unless ``passthrough=False`` (then they are :func:`get_model_layers`'s probe listing). Modules that never run
    are not listed: ``nn.ModuleList`` / ``nn.ModuleDict``, the ``out_proj`` of ``nn.MultiheadAttention``, layers
    read functionally, and layers whose work a fused kernel does (an eval-mode ``nn.TransformerEncoderLayer``'s
    fast path).
    ``channels`` counts units with :func:`optim.layouts.unit_count`: channels for NCHW (and channels-last)
    outputs, hidden units for token outputs ``(N, L, D)``.

    A layer that raises (open_clip RN50's attention pool below its native size) does not abort the table: the
    rows of everything that ran before it are returned, the failing module's row (and those of the modules
    around it) carries the error with ``shape=None``, and a ``UserWarning`` says so; modules after it, which
    never ran, are not listed.

    Args:
        model: any network taking one tensor.
        input_size: the full input shape, batch first: ``(N, C, H, W)`` for a model with an ``nn.Conv2d``
            (e.g. ``(1, 3, 224, 224)``), ``(N, L, D)`` for tokens. Default: one image of the size a render of
            ``model`` uses (:func:`~optim.models.preprocess.render_inputs`: its native size, else
            ``DEFAULT_SIZE``), with the channels its first convolution reads (what ``optim layers`` lists).
        model_input: the probe input itself (instead of a zero tensor of ``input_size``).
        passthrough: list the modules that ran but return their input unchanged (default; see
            :func:`get_model_layers`).

    Returns:
        One :class:`LayerInfo` per module that ran (or failed), in definition order. ``shape`` is that of the
        module's (first) output tensor; ``channels`` its unit count (``None`` below 2 dimensions).

    Raises:
        TypeError: ``model`` is not a module, or ``input_size`` is not a shape (an int, a str).
        ValueError: a bad ``input_size`` (empty, or a size below 1).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> [(r.name, r.shape, r.channels) for r in layer_info(net, (1, 3, 8, 8))]
        [('0', (1, 4, 6, 6), 4), ('1', (1, 4, 6, 6), 4)]
        >>> tokens = nn.Sequential(nn.Linear(16, 24), nn.GELU())  # (N, L, D) in, (N, L, D) out
        >>> [(r.name, r.shape, r.channels) for r in layer_info(tokens, (1, 5, 16))]  # hidden units, not tokens
        [('0', (1, 5, 24), 24), ('1', (1, 5, 24), 24)]
        >>> class Pool(nn.Module):  # a fixed-size head, as an attention pool at a small input
        ...     def forward(self, x):
        ...         if x.shape[-1] != 7:
        ...             raise ValueError(f"expected 7 but got {x.shape[-1]}")
        ...         return x
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     rows = layer_info(nn.Sequential(nn.Conv2d(3, 4, 3), Pool()), (1, 3, 8, 8))
        >>> rows[0].shape, rows[1].error
        ((1, 4, 6, 6), 'ValueError: expected 7 but got 6')
    """
    from ..layouts import unit_count

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    x = _probe_input(model, input_size, model_input)
    modules = _listed_modules(model, passthrough)
    acts, failed = _probe(model, x, modules)
    rows = []
    for name, module in modules.items():
        if name in failed:
            rows.append(LayerInfo(name, type(module).__name__, None, None, failed[name]))
            continue
        if module not in acts:
            continue
        act = acts[module]
        shape = tuple(act.shape)
        channels = unit_count(act, module=module, model=model) if act.dim() >= 2 else None
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
        model_input: the input tensor (or tuple of inputs); default a zero 224 x 224 image with the channels the
            model's first ``Conv2d`` reads (3 without one), on the model's device and dtype.
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
        model_input = torch.zeros(_default_input_size(model, 224), device=device, dtype=dtype)
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
