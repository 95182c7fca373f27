"""The activation core: the one place in optim that places forward hooks and reads layer outputs.

Every reader of activations (rendering, ``collect_activations``, ``ModelInspector.stream``, CKA, circuits,
attribution's layer choice, atlases, recipes) goes through :class:`ActivationRecorder` and returns an
:class:`ActivationMap`. What it guarantees, once for all of them:

- **As produced.** A recorded output is the tensor the module returned, even when a later in-place op
  (``nn.ReLU(inplace=True)`` after a conv or BatchNorm) overwrites it. The first pass clones each output and
  watches the original's version counter; later passes clone only the outputs an in-place op really touched,
  so a model without in-place ops pays nothing per step. A pass that finds an unexpected in-place write is
  run again with the clone.
- **Several calls.** A module called more than once in one pass (torchvision ResNet's ``relu`` runs twice per
  block) means its **last** call by default, as in Lucent, whose hooks keep the latest output: in ResNet,
  ``"layer4.1.relu"`` is the block's output after the residual add. ``call=k`` asks for the k-th call (0 is
  the first, negative counts from the end).
- **Any output type.** The tensor is selected from tuple, list, dict or Hugging Face ``ModelOutput`` outputs
  (:func:`select_tensor`): ``logits`` when the output holds them, else the first tensor (depth first), or
  ``select=`` a key, an index or a function. A tensor recorded inside such an output stays on the autograd path.
- **The model as it was.** The forward runs in eval mode with no parameter gradients; hooks, modes and
  ``requires_grad`` flags are restored on every exit path, a partly failed hook registration included.
- **Stops early.** Once each target has produced the call it means, the rest of the forward pass is skipped
  (for the last call this needs the call counts, which the first pass learns).

Example:
    >>> import optim as opt, torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1))
    >>> acts = opt.activations.record_activations(net, ["0", net[2]], torch.randn(2, 3, 8, 8))
    >>> bool(acts["0"].min() < 0)  # the conv's own output, not the in-place ReLU's
    True
    >>> acts[net[0]] is acts["0"], tuple(acts[net[2]].shape)
    (True, (2, 2, 6, 6))
"""
from __future__ import annotations

import contextlib
import copy as _copy
from collections.abc import Mapping
from typing import (Any, Callable, ContextManager, Dict, Hashable, Iterable, Iterator, List, Optional, Sequence, Tuple,
                    Union)

import torch
import torch.nn as nn

from ._utils import (eager_compiled, is_compiled, model_device_dtype, resolve_module, lookup_module, named_module_map,
                     strip_compiled)

__all__ = [
    "ActivationMap",
    "ActivationRecorder",
    "StopForward",
    "model_frozen",
    "record_activations",
    "iter_activations",
    "select_tensor",
    "autograd_context",
    "batch_input",
]

Target = Union[str, nn.Module]
Selector = Union[None, int, str, Callable[[Any], torch.Tensor]]


class StopForward(Exception):
    """Raised from a forward hook once every target has produced the call it means.

    ``recorder`` is the :class:`ActivationRecorder` that stopped the pass: only that recorder's run catches it.
    """

    def __init__(self, recorder: Any = None) -> None:
        super().__init__("the forward pass stopped: every target has fired")
        self.recorder = recorder


def select_tensor(output: Any, select: Selector = None, where: str = "the module") -> torch.Tensor:
    """The tensor of a module's output that objectives read.

    Args:
        output: a tensor, or a tuple / list / dict / ``ModelOutput`` holding tensors.
        select: ``None`` for the default: ``output["logits"]`` when the output is a mapping (a Hugging Face
            ``ModelOutput``, a dict) holding a ``logits`` tensor, even when a ``loss`` comes first; otherwise the
            first tensor, depth first (a base model's ``last_hidden_state``; ask for ``"pooler_output"`` or
            ``"hidden_states"`` by name). An int index or a str key (attribute or item) of the output, or a
            function of the output.
        where: who produced the output, for the error message.

    Returns:
        The selected tensor.

    Raises:
        ValueError: when the output holds no tensor or the key/index does not exist.

    Example:
        >>> select_tensor((torch.ones(2), {"a": torch.zeros(1)}), select=1)
        Traceback (most recent call last):
        ...
        ValueError: output element 1 of the module is a dict, not a tensor; give select= a key inside it or a function
        >>> select_tensor({"hidden": torch.zeros(1, 4)}).shape
        torch.Size([1, 4])
        >>> select_tensor({"loss": torch.tensor(0.5), "logits": torch.ones(1, 3)}).shape  # a classifier's output
        torch.Size([1, 3])
    """
    if select is None:
        if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
            return output["logits"]
        found = _first_tensor(output)
        if found is None:
            raise ValueError(f"{where} returned {type(output).__name__}, which holds no tensor")
        return found
    if callable(select):
        value = select(output)
    elif isinstance(select, str):
        if isinstance(output, Mapping) and select in output:
            value = output[select]
        elif hasattr(output, select):
            value = getattr(output, select)
        else:
            raise ValueError(f"{where} returned {type(output).__name__}, which has no key or attribute {select!r}")
    elif isinstance(select, int) and not isinstance(select, bool):
        if isinstance(output, Mapping):
            output = list(output.values())
        if not isinstance(output, (tuple, list)) or not -len(output) <= select < len(output):
            raise ValueError(f"select={select} is no index of the output of {where} ({type(output).__name__})")
        value = output[select]
    else:
        raise TypeError(f"select must be None, an int, a str or a function, got {type(select).__name__}")
    if not isinstance(value, torch.Tensor):
        raise ValueError(
            f"output element {select} of {where} is a {type(value).__name__}, not a tensor; "
            "give select= a key inside it or a function"
        )
    return value


def _first_tensor(out: Any) -> Optional[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else ()
    for v in values:
        t = _first_tensor(v)
        if t is not None:
            return t
    return None


def _replace_tensor(out: Any, old: torch.Tensor, new: torch.Tensor) -> Any:
    """``out`` with every occurrence of the tensor ``old`` (found by identity) replaced by ``new``.

    Rebuilds tuples (named ones too), lists and dicts (``OrderedDict``, Hugging Face ``ModelOutput``) without
    touching the module's own output object; ``None`` when ``old`` is not inside or the container cannot be
    rebuilt. Every occurrence: an output holding the recorded tensor twice must not pass the recording itself
    downstream in the second place, where an in-place op would change it unseen.
    """
    if out is old:
        return new
    if isinstance(out, (tuple, list)):
        items = list(out)
        found = False
        for i, value in enumerate(out):
            replaced = _replace_tensor(value, old, new)
            if replaced is not None:
                items[i], found = replaced, True
        if not found:
            return None
        try:
            if isinstance(out, tuple) and hasattr(out, "_fields"):
                return type(out)(*items)
            return type(out)(items)
        except Exception:  # a container type that cannot be built from its items
            return None
    if isinstance(out, dict):
        changes = {}
        for key, value in out.items():
            replaced = _replace_tensor(value, old, new)
            if replaced is not None:
                changes[key] = replaced
        if not changes:
            return None
        try:
            rebuilt = _copy.copy(out)
            for key, replaced in changes.items():
                rebuilt[key] = replaced  # a ModelOutput sets the attribute too
        except Exception:
            return None
        for key, replaced in changes.items():
            if rebuilt[key] is not replaced or (hasattr(rebuilt, key) and getattr(rebuilt, key) is not replaced):
                return None
        return rebuilt
    return None


def _tensors_in(inputs: Any) -> Iterator[torch.Tensor]:
    """The tensors of a module's arguments, also those inside list, tuple and dict arguments, in order."""
    if isinstance(inputs, torch.Tensor):
        yield inputs
    elif isinstance(inputs, (list, tuple)):
        for x in inputs:
            yield from _tensors_in(x)
    elif isinstance(inputs, dict):
        for x in inputs.values():
            yield from _tensors_in(x)


def _aliases_an_input(t: torch.Tensor, inputs: Any) -> bool:
    """Whether ``t`` shares storage with one of a module's input tensors: positional and keyword, and those
    inside a list, tuple or dict argument (an FPN / YOLO ``feats[i]`` selector returns one of them)."""
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without storage (meta, some subclasses)
        return True
    for x in _tensors_in(inputs):
        try:
            if x.untyped_storage().data_ptr() == ptr:
                return True
        except (RuntimeError, NotImplementedError):
            return True
    return False


class ActivationMap(Mapping):
    """Recorded activations: target -> tensor, answering the module, its dotted name or the key as given.

    Iteration yields the targets as the caller gave them, so ``dict(acts)`` and ``acts.items()`` read like the
    request; ``acts[module]``, ``acts["dotted.name"]`` and ``acts[key_as_given]`` all reach one tensor. Every
    reader in optim returns this type, so every loss evaluates on every reader's output.

    Args:
        entries: ``(key, module, name, tensor)`` per target.
        model: the model the modules belong to (``None``: unknown); kept as ``.model`` for layout inference,
            which reads a module's ancestors (:func:`optim.layouts.infer_layout`).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> acts = ActivationMap([(net[0], net[0], "0", torch.ones(1, 2))])
        >>> acts["0"].tolist(), list(acts) == [net[0]], acts.name_of(net[0])
        ([[1.0, 1.0]], True, '0')
    """

    def __init__(
        self, entries: Iterable[Tuple[Hashable, nn.Module, str, torch.Tensor]], model: Optional[nn.Module] = None
    ) -> None:
        self.model = model
        # layouts inferred for this map's tensors (BaseLoss._layout_of): one inference per layer per pass, not one
        # per loss term (a batched render reads one layer with 16 terms every step)
        self._layouts: Dict[Any, Any] = {}
        self._by_key: Dict[Any, torch.Tensor] = {}
        self._by_module: Dict[int, torch.Tensor] = {}
        self._by_name: Dict[str, torch.Tensor] = {}
        self._names: Dict[int, str] = {}
        self._modules: Dict[Any, nn.Module] = {}  # key as given and dotted name -> module (module_of)
        for key, module, name, value in entries:
            self._by_key[key] = value
            self._by_module[id(module)] = value
            self._names[id(module)] = name
            try:
                self._modules[key] = module
            except TypeError:  # an unhashable key: found by name only
                pass
            if name:
                # a compiled model's raw name ("_orig_mod.0") and the plain one ("0") are one module
                for alias in (name, strip_compiled(name)):
                    self._modules[alias] = module
                    self._by_name[alias] = value

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, nn.Module):
            if id(key) in self._by_module:
                return self._by_module[id(key)]
        elif isinstance(key, str):
            for alias in (key, strip_compiled(key)):
                if alias in self._by_name:
                    return self._by_name[alias]
        try:
            return self._by_key[key]
        except (KeyError, TypeError):
            pass
        shown = key if isinstance(key, str) else type(key).__name__
        recorded = sorted({n for n in self._names.values() if n})
        raise KeyError(f"no activation recorded for {shown!r}; recorded: {recorded}")

    def __iter__(self) -> Iterator[Any]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def name_of(self, module: nn.Module) -> str:
        """The dotted name a recorded module was found under."""
        return self._names[id(module)]

    def module_of(self, key: Any) -> Optional[nn.Module]:
        """The module recorded under ``key`` (a module, its dotted name or the key as given), or ``None``.

        Layout inference reads it (:func:`optim.layouts.infer_layout`'s channels-last rule).
        """
        if isinstance(key, nn.Module):
            return key
        try:
            found = self._modules.get(key)
        except TypeError:
            return None
        return self._modules.get(strip_compiled(key)) if found is None and isinstance(key, str) else found

    def detach(self) -> "ActivationMap":
        """The same map with every tensor detached (for storing outside the autograd graph)."""
        out = ActivationMap([], self.model)
        out._by_key = {k: v.detach() for k, v in self._by_key.items()}
        out._by_module = {k: v.detach() for k, v in self._by_module.items()}
        out._by_name = {k: v.detach() for k, v in self._by_name.items()}
        out._names = dict(self._names)
        out._modules = dict(self._modules)
        return out

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(self._by_module[i].shape)}" for i, n in self._names.items() if n)
        return f"ActivationMap({shapes})"


@contextlib.contextmanager
def model_frozen(model: nn.Module, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter, restored on exit (errors included).

    Args:
        model: the network.
        eval_mode: also switch every submodule to eval mode.

    Example:
        >>> net = nn.Sequential(nn.BatchNorm1d(2)).train()
        >>> with model_frozen(net):
        ...     net.training, net[0].weight.requires_grad
        (False, False)
        >>> net.training, net[0].weight.requires_grad
        (True, True)
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


INFERENCE_MODE_HELP = (
    "this needs autograd, which torch.inference_mode() forbids for tensors created inside it; call it outside "
    "inference mode (torch.no_grad() is fine), and build the model, image and inputs outside it too"
)


@contextlib.contextmanager
def autograd_context() -> Iterator[None]:
    """Gradients on, whatever the caller's ``torch.no_grad()`` / ``torch.inference_mode()`` said.

    A render or an attribution needs autograd even inside a validation loop under ``no_grad``. Inside
    ``inference_mode`` autograd works on tensors made outside it; one made inside it (an "inference tensor")
    cannot be saved for backward, and that error is replaced by one that names inference mode.
    """
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    except RuntimeError as err:
        if "nference tensor" in str(err):
            raise RuntimeError(f"{INFERENCE_MODE_HELP} (torch said: {err})") from err
        raise


class _Slot:
    """What the recorder keeps for one target module."""

    __slots__ = ("module", "name", "key", "calls", "value", "watch", "clone", "error", "leak", "record_copy")

    def __init__(self, module: nn.Module, name: str, key: Any) -> None:
        self.module = module
        self.name = name
        self.key = key
        self.calls = 0
        self.value: Optional[torch.Tensor] = None
        # (original tensor, its version when recorded) for the in-place check after the pass
        self.watch: Optional[Tuple[torch.Tensor, int]] = None
        # None: not known yet (clone, then learn); True: an in-place op follows (always clone); False: never
        self.clone: Optional[bool] = None
        # why the wanted output could not be read (no tensor in it), raised only if the caller needs it
        self.error: Optional[str] = None
        # (recorded tensor, its version) when a rebuilt output went downstream: a place the rebuild could not
        # reach (a dataclass holding it) may still pass the recording on, and an in-place op there changes it
        self.leak: Optional[Tuple[torch.Tensor, int]] = None
        # set once that happened: record a copy and pass the output on untouched
        self.record_copy = False


class ActivationRecorder:
    """Forward hooks that record the outputs of ``targets``; a context manager, removed on exit.

    Args:
        model: the network the dotted names refer to.
        targets: modules or dotted names (one or a list); also modules outside ``model`` (a transform's).
        call: which call of a module called several times in one pass: ``-1`` the last (default, Lucent's
            meaning), ``k >= 0`` the k-th, ``-k`` the k-th from the end.
        stop_early: skip the rest of the forward pass once every target produced the call it means.
        select: which tensor of a non-tensor output to keep (see :func:`select_tensor`).
        names: extra ``name -> module`` entries to resolve names against (besides ``model``'s own).
        inplace_safe: protect recordings against later in-place ops (default on; off only to measure it).
        passive: also record the passes the caller runs by calling the model itself (captum's usage: read
            :meth:`recorded` afterwards); such passes are never stopped early. By default a recorder records
            only inside its own :meth:`run` / :meth:`run_call`, so a module shared by two models recorded at
            once is not disturbed by the other model's passes. On a ``torch.compile``d model, use a passive
            recorder as a context manager: inside the ``with`` block compiled modules run eagerly
            (:func:`~optim._utils.eager_compiled`), without it their compiled graph skips the hooks.

    Raises:
        ValueError: for an unknown name, an empty target list, or a target that refuses a forward hook
            (a TorchScript submodule); hooks already placed are removed first.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> with ActivationRecorder(net, "1") as rec:
        ...     acts = rec.run(torch.ones(1, 3))
        >>> acts["1"].shape
        torch.Size([1, 3])
    """

    def __init__(
        self,
        model: nn.Module,
        targets: Union[Target, Sequence[Target]],
        *,
        call: int = -1,
        stop_early: bool = True,
        select: Selector = None,
        names: Optional[Dict[str, nn.Module]] = None,
        inplace_safe: bool = True,
        passive: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(call, bool) or not isinstance(call, int):
            raise TypeError(f"call must be an int (0 the first call, -1 the last), got {call!r}")
        if not isinstance(stop_early, bool):
            raise TypeError(f"stop_early must be True or False, got {stop_early!r} ({type(stop_early).__name__})")
        target_list = [targets] if isinstance(targets, (str, nn.Module)) else list(targets)
        if not target_list:
            raise ValueError("targets must name at least one layer")
        name_map = named_module_map(model)
        if names:
            name_map = {**names, **name_map}
        slots: Dict[int, _Slot] = {}
        self._keys: List[Tuple[Any, _Slot]] = []
        for t in target_list:
            if isinstance(t, str):
                module = lookup_module(t, name_map, type(model).__name__)
            elif isinstance(t, nn.Module):
                module = t
            else:
                raise TypeError(f"a target must be an nn.Module or a dotted module name, got {type(t).__name__}")
            slot = slots.get(id(module))
            if slot is None:
                name = t if isinstance(t, str) else next((n for n, m in name_map.items() if m is module), "")
                slot = slots[id(module)] = _Slot(module, name, t)
            self._keys.append((t, slot))
        self.model = model
        # decided once: the walk over every module costs about 0.1 ms, and run_call is once per render step
        self._compiled = is_compiled(model)
        self.call = call
        self.stop_early = stop_early
        self.select = select
        self.inplace_safe = inplace_safe
        self._slots = list(slots.values())
        #: calls per target in one full pass, learned on the first pass that ran to the end (with ``stop_early``)
        self.call_counts: Optional[Dict[int, int]] = None
        #: the shapes of the model's input tensors (positional and keyword) that ``call_counts`` were learned at
        self.count_shapes: Any = None
        self._handles: List[Any] = []
        self._model_called = False
        self._running = False
        self.passive = bool(passive)
        self._eager: Optional[Any] = None
        if self.passive and call < -1:
            raise ValueError(
                f"a passive recorder keeps the last call (-1) or call k >= 0, got call={call}: it cannot know when "
                "the caller's pass ends"
            )
        self._register()

    # hooks ------------------------------------------------------------------------------------------------
    def _register(self) -> None:
        try:
            for slot in self._slots:
                try:
                    # with_kwargs: an output that aliases a keyword input must be recognised as one (see _protect)
                    self._handles.append(slot.module.register_forward_hook(self._make_hook(slot), with_kwargs=True))
                except (RuntimeError, AttributeError, TypeError) as err:
                    raise ValueError(
                        f"cannot record {slot.name or type(slot.module).__name__!r}: its module "
                        f"({type(slot.module).__name__}) refuses a forward hook ({err}); target a Python "
                        "module around it instead"
                    ) from err
        except BaseException:
            self.remove()
            raise

    def _on_model_call(self, _mod: nn.Module, args: Any, kwargs: Dict[str, Any]) -> None:
        # How often a module runs can depend on the input size (a pooling loop, a size-changing transform in a
        # render): counts learned at other shapes would stop the pass at the wrong call, so they are relearned.
        if not self._running or self._model_called:
            return None  # the first call of the model in a pass decides (a root called twice is one pass)
        self._model_called = True
        shapes = tuple(tuple(x.shape) for x in _tensors_in((args, kwargs)))
        if shapes != self.count_shapes:
            self.count_shapes = shapes
            self.call_counts = None
        return None

    def _wanted(self, slot: _Slot, k: int) -> bool:
        """Whether call number ``k`` (0-based) of ``slot`` is the one to keep."""
        if self.call >= 0:
            return k == self.call
        counts = self.call_counts
        if counts is None:
            return True  # not known yet: keep every call, the last one kept wins (-1), see _finish_pass
        return k == counts[id(slot.module)] + self.call

    def _make_hook(self, slot: _Slot) -> Callable:
        def hook(_mod: nn.Module, args: Any, kwargs: Dict[str, Any], out: Any) -> Any:
            if not (self._running or self.passive):  # another recorder's pass (a module shared by two models)
                return None
            k = slot.calls
            slot.calls += 1
            replaced = None
            if self._wanted(slot, k):
                replaced = self._store(slot, out, args + tuple(kwargs.values()) if kwargs else args)
            if self.stop_early and self._running and self._done():
                raise StopForward(self)
            return replaced

        return hook

    def _store(self, slot: _Slot, out: Any, inputs: Any = ()) -> Any:
        """Record the wanted tensor of ``out``; return the module output to pass on (``None``: ``out`` itself)."""
        where = slot.name or type(slot.module).__name__
        try:
            t = select_tensor(out, self.select, where)
        except ValueError as err:
            slot.value, slot.error = None, str(err)
            return None
        slot.error = None
        recorded, passed_on = self._protect(slot, t, out, inputs)
        if self.call < -1 and self.call_counts is None:
            # keep the last -call outputs until the count is known
            history = slot.value if isinstance(slot.value, list) else []
            history.append(recorded)
            slot.value = history[self.call :]  # type: ignore[assignment]
        else:
            slot.value = recorded
        return passed_on

    def _protect(self, slot: _Slot, t: torch.Tensor, out: Any, inputs: Any = ()) -> Tuple[torch.Tensor, Any]:
        """The tensor to record and the output to pass downstream.

        Where a copy is needed, the copy goes downstream (a tuple / dict output is rebuilt around it) and the
        original is recorded: later in-place ops then write into the copy, and the recording stays on the
        autograd path between the input and the model's output (``autograd.grad`` with respect to it works,
        as ``FacetLoss`` needs). An output that shares memory with one of the module's inputs
        (``ReLU(inplace=True)``, ``nn.Identity``, eval-mode Dropout: the caller still holds that memory) is
        handled the same way, and watched: if the caller changes it in place, the pass runs again recording a
        copy and passing the output on untouched. Where that check cannot run (a passive recorder; inference
        tensors, which have no version counter), a copy is recorded and the output passes on untouched.
        """
        if not self.inplace_safe:
            return t, None
        slot.leak = None  # this recording replaces the last one (history mode copies: see below)
        inference = t.is_inference()  # no version counter to watch: always copy
        if not inference:
            slot.watch = (t, t._version)
        # the policy was learned on the one recording a pass keeps; a history (call < -1 before the counts are known,
        # every pass with stop_early=False) keeps earlier calls too, which later ops in the pass may overwrite
        history = self.call < -1 and self.call_counts is None
        if slot.clone is False and not inference and not history and (
                torch.is_grad_enabled() or not _aliases_an_input(t, inputs)):
            # nothing in the pass writes into it; but a reader under no_grad keeps its maps across passes, and
            # the caller's memory (a loader refilling one input buffer) may change before the next one
            return t, None
        aliases = _aliases_an_input(t, inputs)
        if aliases:
            # Recording the caller's memory itself pays only where the recording must stay on the autograd path,
            # and is safe only where the leak check after the pass covers it: one recording per pass (not the
            # history of call < -1), in a pass the recorder runs, with gradients on (a reader under no_grad keeps a
            # copy, so a loader that refills one input buffer cannot change it).
            untouched = inference or self.passive or history or not torch.is_grad_enabled()
        else:
            # a tuple / list / dict / ModelOutput is rebuilt around the copy, so the recording stays on the
            # autograd path there too (FacetLoss on a module returning (x, aux)); where the leak check after the
            # pass cannot run (a passive recorder: the caller's pass; inference tensors: no version counter) a view
            # of the recording left in it (``(y, y[:, :2])``) would go unseen, so the output passes on untouched
            untouched = out is not t and (inference or self.passive)
        copy = t.clone()
        passed_on = None if slot.record_copy or untouched else copy if out is t else _replace_tensor(out, t, copy)
        if passed_on is None:
            return copy, None
        if not inference:
            slot.watch = (copy, copy._version)  # an in-place op downstream now writes into the copy
            if aliases or passed_on is not copy:
                # the caller's memory, or a place the rebuild could not reach, may still change the recording
                slot.leak = (t, t._version)
        return t, passed_on

    def _done(self) -> bool:
        if self.call >= 0:
            return all(s.calls > self.call for s in self._slots)
        counts = self.call_counts
        if counts is None:
            return False
        return all(s.calls >= counts[id(s.module)] for s in self._slots)

    def remove(self) -> None:
        """Remove every hook this recorder placed."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "ActivationRecorder":
        if self.passive and self._compiled and self._eager is None:
            # the caller's own passes inside the block must run the compiled modules eagerly, or the hooks placed
            # after compilation are skipped and nothing is recorded (see _utils.eager_compiled)
            self._eager = eager_compiled(self.model)
            self._eager.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.remove()
        finally:
            eager, self._eager = self._eager, None
            if eager is not None:
                eager.__exit__(None, None, None)

    # passes -----------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the last pass's outputs (the learned call counts and in-place policy stay)."""
        self._model_called = False
        for slot in self._slots:
            slot.calls = 0
            slot.value = None
            slot.watch = None
            slot.leak = None
            slot.error = None

    def _finish_pass(self, completed: bool) -> List[_Slot]:
        """Learn call counts and the in-place policy; return the slots an in-place op corrupted."""
        if completed and self.call_counts is None and self.call < 0:
            if self.stop_early:  # without early stopping every pass keeps every call: no count to trust or learn
                self.call_counts = {id(s.module): s.calls for s in self._slots}
            if self.call < -1:
                for s in self._slots:
                    if isinstance(s.value, list):  # a plain tensor was chosen under counts that held: kept
                        s.value = s.value[self.call] if len(s.value) >= -self.call else None
        corrupted = []
        for slot in self._slots:
            if slot.leak is not None and slot.leak[0]._version != slot.leak[1]:
                slot.record_copy = True  # the rebuilt output still carried the recording somewhere
                corrupted.append(slot)
                continue
            if slot.watch is None:
                continue
            original, version = slot.watch
            touched = original._version != version
            if slot.clone is None:
                slot.clone = touched
            elif touched and slot.clone is False:
                slot.clone = True
                corrupted.append(slot)
        return corrupted

    def run_call(self, forward: Callable[[], Any], *, missing_ok: bool = False) -> ActivationMap:
        """Run ``forward()`` (which must call the model) with the hooks recording, and return what they saw.

        A pass stopped by :class:`StopForward` counts as done. If an in-place op unexpectedly overwrote a
        recording that was not copied, the pass runs once more with the copy.

        Early stopping uses the number of calls each target made in the last full pass; those counts belong to the
        shapes of the model's input tensors (positional and keyword) and are learned again, on a pass run to the
        end, when the shapes change (a pooling loop, a size-changing transform). A model whose number of calls
        changes with the input's values at one shape (early exit) needs ``stop_early=False``.

        Args:
            forward: runs the model.
            missing_ok: leave out targets that did not run (or gave no tensor) instead of raising.

        Raises:
            ValueError: when a target did not produce the call asked for; its name, and the calls it made.
        """
        if self._running:
            raise RuntimeError("an ActivationRecorder cannot run inside its own forward pass")
        # a pass that found a recording corrupted runs again under the stricter policy it learned: copy instead of
        # share (clone), then record a copy where a rebuilt output still carried the recording (record_copy)
        for _ in range(3):
            self.reset()
            completed = True
            self._running = True
            # placed for the recorder's own pass only (a passive recorder never learns counts): nothing stays on
            # the model between passes, whatever the caller does with the targets' handles
            try:
                model_hook = self.model.register_forward_pre_hook(self._on_model_call, with_kwargs=True)
            except (RuntimeError, AttributeError, TypeError):
                model_hook = None  # a TorchScript root: the learned counts then hold for every input shape
            try:
                # hooks in a torch.compile'd model: run it eagerly (_utils.eager_compiled)
                with eager_compiled(self.model) if self._compiled else contextlib.nullcontext():
                    forward()
            except StopForward as stop:
                if stop.recorder is not self and stop.recorder is not None:
                    raise
                completed = False
            finally:
                self._running = False
                if model_hook is not None:
                    model_hook.remove()
            if not self._finish_pass(completed):
                break
        if missing_ok:
            return self.recorded()
        missing = [s for s in self._slots if not isinstance(s.value, torch.Tensor)]
        for s in missing:
            if s.error is not None:
                raise ValueError(s.error)
        if missing:
            said = ", ".join(f"{s.name or type(s.module).__name__} ({s.calls} calls)" for s in missing)
            which = "ran" if all(s.calls == 0 for s in missing) else f"made call {self.call}"
            raise ValueError(f"these targets never {which} in the forward pass: {said}")
        return ActivationMap(((key, slot.module, slot.name, slot.value) for key, slot in self._keys), self.model)

    def recorded(self) -> ActivationMap:
        """What the hooks hold now (targets without a recording are left out): for passive recorders."""
        return ActivationMap(
            ((key, slot.module, slot.name, slot.value) for key, slot in self._keys
             if isinstance(slot.value, torch.Tensor)),
            self.model,
        )

    def run(self, *inputs: Any, **kwargs: Any) -> ActivationMap:
        """``model(*inputs, **kwargs)`` as far as the targets need; see :meth:`run_call`.

        The call counts learned to stop early are kept per input shape (:meth:`run_call`).
        """
        return self.run_call(lambda: self.model(*inputs, **kwargs))


def record_activations(
    model: nn.Module,
    targets: Union[Target, Sequence[Target]],
    *inputs: Any,
    requires_grad: bool = False,
    call: int = -1,
    select: Selector = None,
) -> ActivationMap:
    """The outputs of ``targets`` for one input, in eval mode; the model is left exactly as it was.

    Args:
        model: any network.
        targets: a module or dotted name, or a list of them.
        inputs: the model's inputs (tensors are used as given; move them to the model's device first).
        requires_grad: keep the autograd graph to ``inputs`` (works under ``torch.no_grad()``); without it
            the pass runs under ``no_grad`` and the tensors are detached.
        call: which call of a module called several times (see :class:`ActivationRecorder`).
        select: which tensor of a non-tensor output (see :func:`select_tensor`).

    Returns:
        An :class:`ActivationMap`.

    Raises:
        ValueError: unknown names (with close matches), a target that never ran; an image batch whose channel count
            the model refuses (naming both counts and the conversion, raised from torch's error).
        RuntimeError: ``requires_grad=True`` on inference tensors (names ``torch.inference_mode``).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> acts = record_activations(net, "0", torch.zeros(1, 3, 5, 5))
        >>> acts["0"].shape, acts[net[0]].requires_grad
        (torch.Size([1, 8, 3, 3]), False)
    """
    grad = contextlib.nullcontext() if requires_grad else torch.no_grad()
    outer = autograd_context() if requires_grad else contextlib.nullcontext()
    # an image batch of the wrong channel count is explained as every reader explains it (iter_activations)
    explained = _channel_errors_explained(model, inputs[0]) if len(inputs) == 1 and torch.is_tensor(inputs[0]) \
        else contextlib.nullcontext()
    with outer, grad, model_frozen(model), explained, \
            ActivationRecorder(model, targets, call=call, select=select) as rec:
        return rec.run(*inputs)


def iter_activations(
    model: nn.Module,
    targets: Union[Target, Sequence[Target]],
    batches: Iterable[Any],
    *,
    call: int = -1,
    select: Selector = None,
    stop_early: bool = True,
) -> Iterator[ActivationMap]:
    """Activations batch by batch over a data loader, detached, with one set of hooks for the whole loop.

    Args:
        model: any network.
        targets: modules or dotted names.
        batches: an iterable of input tensors, or of tuples / lists whose first element is the input (what a
            ``DataLoader`` of ``(image, label)`` pairs yields); moved to the model's device and dtype.
        call: which call of a module called several times (see :class:`ActivationRecorder`).
        select: which tensor of a non-tensor output.
        stop_early: stop each pass once every target has run, at the call counts the first batch of each input
            shape showed (see :class:`ActivationRecorder`). A model whose number of calls to a target changes with
            the input's values at one shape (an early exit, a loop until convergence) needs ``False``: otherwise a
            later batch may be read at an earlier call than ``call`` means.

    Yields:
        One :class:`ActivationMap` per batch. Each batch's pass runs in eval mode without gradients, and the
        model's mode and flags are restored before the batch is yielded: the loop body runs as the caller set it up.

    Raises:
        ValueError: an image batch whose channel count the model refuses (RGB images for a grayscale model),
            naming both counts and the conversion, raised from torch's error. Other errors pass unchanged.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 2))
        >>> [tuple(a["0"].shape) for a in iter_activations(net, "0", [torch.ones(3, 4), (torch.ones(1, 4), 0)])]
        [(3, 2), (1, 2)]
    """
    device, dtype = model_device_dtype(model)
    with ActivationRecorder(model, targets, call=call, select=select, stop_early=stop_early) as rec:
        for batch in batches:
            x = batch_input(batch)
            x = x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)
            # frozen and gradient-free for the pass only: the caller's loop body runs as the caller set it up
            with torch.no_grad(), model_frozen(model), _channel_errors_explained(model, x):
                acts = rec.run(x)
            yield acts


def _channel_errors_explained(model: nn.Module, x: torch.Tensor) -> ContextManager[None]:
    """For an image batch (NCHW) from the caller's data: a model that refuses its channel count raises the
    renders' ``ValueError`` naming both counts and the conversion (:func:`optim.render.explained_input_errors`)."""
    if x.dim() != 4 or not x.is_floating_point():
        return contextlib.nullcontext()
    from .render import explained_input_errors  # optim.render reads activations through this module

    return explained_input_errors(model, (int(x.shape[-2]), int(x.shape[-1])), channels=int(x.shape[1]))


#: the keys a dict batch (Hugging Face datasets, torchvision v2 samples) may hold its images under
BATCH_INPUT_KEYS = ("pixel_values", "image", "images", "input", "inputs", "x")


def batch_input(batch: Any) -> torch.Tensor:
    """The model input of one batch of a data loader: the batch itself, its first element, or a dict entry.

    Args:
        batch: a tensor; a tuple / list whose first element is the input (``(image, label)`` pairs); or a
            mapping holding it under one of :data:`BATCH_INPUT_KEYS`.

    Raises:
        TypeError: for anything else.

    Example:
        >>> batch_input({"pixel_values": torch.zeros(2, 3), "labels": torch.ones(2)}).shape
        torch.Size([2, 3])
    """
    x = batch
    if isinstance(batch, (tuple, list)) and batch:
        x = batch[0]
    elif isinstance(batch, Mapping):
        key = next((k for k in BATCH_INPUT_KEYS if k in batch), None)
        if key is None:
            raise TypeError(f"a dict batch must hold its input under one of {BATCH_INPUT_KEYS}, got keys {list(batch)}")
        x = batch[key]
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"each batch must be a tensor, a tuple starting with one, or a dict holding one, got {type(x).__name__}"
        )
    return x
