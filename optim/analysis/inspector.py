"""Model surgery and inspection: layer listing, weight access, checkpoint swapping, activation streaming.

After the CelebA & Lucid toolkit: read a layer's weights as ``insp.weights["conv1"].w``, swap in another
checkpoint with ``switch_to`` without rebuilding the network, overwrite one channel with another model's
weights (``set_weights("conv1:3", other)``), and collect activations over a whole DataLoader (through the
activation core, :func:`optim.activations.iter_activations`).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from .._utils import model_device_dtype, module_name, resolve_module
from ..activations import ActivationMap
from ..models._utils import LayerInfo, layer_info as _layer_info
from ._data import stream_activations

# the layer table is optim.models.LayerInfo (one layer table in optim)
__all__ = ["LayerWeights", "ModelInspector"]

_MODES = ("both", "weight", "bias")


class LayerWeights:
    """A live view of one module's ``weight`` and ``bias``, with attribute/item access to submodules.

    ``.w`` and ``.b`` are detached tensors sharing memory with the parameters (``.b`` is ``None`` for a
    layer without bias). ``view.layer1`` / ``view["layer1.0.conv1"]`` descend into submodules.
    """

    def __init__(self, module: nn.Module, name: str = "") -> None:
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_name", name)

    @property
    def module(self) -> nn.Module:
        """The module this view reads from."""
        return self._module

    @property
    def w(self) -> torch.Tensor:
        """The module's weight (detached, shares memory)."""
        weight = getattr(self._module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise AttributeError(f"layer {self._name or type(self._module).__name__!r} has no weight")
        return weight.detach()

    @property
    def b(self) -> Optional[torch.Tensor]:
        """The module's bias (detached, shares memory), or ``None``."""
        bias = getattr(self._module, "bias", None)
        return bias.detach() if isinstance(bias, torch.Tensor) else None

    def __getitem__(self, name: str) -> "LayerWeights":
        sub = resolve_module(self._module, str(name))
        return LayerWeights(sub, f"{self._name}.{name}" if self._name else str(name))

    def __getattr__(self, name: str) -> "LayerWeights":
        if name.startswith("_"):
            raise AttributeError(name)
        if name == "w":
            # the property raised AttributeError (no weight); Python then falls back here
            raise AttributeError(f"layer {self._name or type(self._module).__name__!r} has no weight")
        try:
            return self[name]
        except ValueError as err:
            raise AttributeError(str(err)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("LayerWeights is read-only; use ModelInspector.set_weights to change weights")

    def __dir__(self) -> List[str]:
        return ["w", "b", "module"] + [n for n, _ in self._module.named_children()]

    def __repr__(self) -> str:
        shape = tuple(self.w.shape) if isinstance(getattr(self._module, "weight", None), torch.Tensor) else None
        return f"LayerWeights({self._name or type(self._module).__name__!r}, weight shape={shape})"


class ModelInspector:
    """Inspect and operate on a network in place.

    Args:
        model: the network; it is never rebuilt or wrapped, so other references to it see every change.

    Example::

        >>> insp = ModelInspector(model)  # EfficientNet-Lite0
        >>> insp
        ModelInspector(EfficientNetLite, 99 layers)
        >>> insp.layer_info()[0]
        LayerInfo(name='stem.conv', type='Conv2d...', shape=None, channels=32)
        >>> insp.weights["stem.conv"].w.shape
        torch.Size([32, 3, 3, 3])
        >>> other = opt.models.efficientnet_lite0()  # same architecture, random weights
        >>> _ = insp.set_weights("stem.conv:0", other)  # one output channel from another model
        >>> torch.equal(model.stem.conv.weight[0], other.stem.conv.weight[0])
        True
        >>> torch.save(other.state_dict(), "checkpoint.pt")
        >>> _ = insp.switch_to("checkpoint.pt")  # another checkpoint, loaded into the same tensors
        >>> torch.equal(model.stem.conv.weight, other.stem.conv.weight)
        True
        >>> loader = torch.utils.data.DataLoader(torch.rand(4, 3, 64, 64), batch_size=2)
        >>> insp.stream(loader, layers=["blocks.2"])["blocks.2"].shape
        torch.Size([4, 24, 16, 16])
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        #: what the last :meth:`stream` returned (an empty map before the first)
        self.activations = ActivationMap([], model)

    # -- listing and reading ---------------------------------------------------------------------------
    def layer_info(self, input_size: Optional[Sequence[int]] = None) -> List[LayerInfo]:
        """Every module that owns a ``weight`` tensor, as rows of the one layer table,
        :class:`optim.models.LayerInfo` ``(name, type, shape, channels)``.

        Args:
            input_size: without it (default) nothing runs: ``shape`` is ``None`` and ``channels`` is the
                weight's output channel count (``weight.shape[0]``). With an input shape such as
                ``(1, 3, 224, 224)``, one forward pass fills in each output shape and ``channels = shape[1]``,
                as :func:`optim.models.layer_info` does (modules that did not run are left out).

        Returns:
            A list of :class:`~optim.models.LayerInfo` in definition order.
        """
        weighted = {}
        for name, m in self.model.named_modules():
            weight = m._parameters.get("weight") if name else None
            if isinstance(weight, torch.Tensor) and weight.dim() >= 1:
                weighted[name] = LayerInfo(name, type(m).__name__, None, int(weight.shape[0]))
        if input_size is None:
            return list(weighted.values())
        return [row for row in _layer_info(self.model, input_size) if row.name in weighted]

    @property
    def weights(self) -> LayerWeights:
        """Weight access: ``insp.weights["layer1.0.conv1"].w``, ``insp.weights.conv1.b``."""
        return LayerWeights(self.model)

    # -- checkpoints ---------------------------------------------------------------------------------
    def switch_to(
        self, checkpoint: Union[Mapping[str, torch.Tensor], str, "os.PathLike[str]", nn.Module], strict: bool = True
    ) -> "ModelInspector":
        """Load another checkpoint into the same parameter tensors (no rebuilding, no new objects).

        Args:
            checkpoint: a state dict, a path to one saved with ``torch.save`` (loaded with
                ``weights_only=True``; a ``{"state_dict": ...}`` wrapper is unwrapped), or a model of the
                same architecture.
            strict: require the keys to match exactly (see ``nn.Module.load_state_dict``).

        Returns:
            ``self``, for chaining.
        """
        if isinstance(checkpoint, nn.Module):
            state = checkpoint.state_dict()
        elif isinstance(checkpoint, (str, os.PathLike)):
            device, _ = model_device_dtype(self.model)
            state = torch.load(checkpoint, map_location=device, weights_only=True)
        elif isinstance(checkpoint, Mapping):
            state = checkpoint
        else:
            raise TypeError(
                f"checkpoint must be a state dict, a file path or an nn.Module, got {type(checkpoint).__name__}"
            )
        if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise TypeError(f"the checkpoint does not hold a state dict but a {type(state).__name__}")
        # load_state_dict copies into the existing tensors, so optimizers and hooks keep working.
        self.model.load_state_dict(state, strict=strict)
        return self

    # -- surgery ------------------------------------------------------------------------------------
    def _parse_spec(self, spec: str) -> tuple:
        if not isinstance(spec, str):
            raise TypeError(f"the layer spec must be a string 'layer' or 'layer:channel', got {type(spec).__name__}")
        name, sep, chan = spec.partition(":")
        module = resolve_module(self.model, name)
        if not sep:
            return name, module, None
        try:
            channels = [int(c) for c in chan.split(",")]
        except ValueError:
            raise ValueError(f"bad channel in {spec!r}: expected 'layer:3' or 'layer:3,5'") from None
        return name, module, channels

    def set_weights(
        self,
        spec: str,
        source: Union[nn.Module, "ModelInspector", float, int, torch.Tensor],
        mode: str = "both",
    ) -> "ModelInspector":
        """Overwrite a layer's (or some output channels') weight and/or bias in place.

        Args:
            spec: ``"layer"`` for the whole layer or ``"layer:channel"`` (``"layer:3,7"`` for several)
                for chosen output channels (index 0 of the weight and bias).
            source: a model of the same architecture (or a :class:`ModelInspector` of one) to copy the same
                layer from, or a number / tensor broadcast into the selected entries.
            mode: ``"both"``, ``"weight"`` or ``"bias"`` (with ``"both"``, a layer without bias only gets
                its weight changed).

        Returns:
            ``self``, for chaining.

        Raises:
            ValueError: for an unknown layer, a channel out of range, an unknown mode, a layer missing the
                requested parameter, or a source layer of another shape.
        """
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        name, module, channels = self._parse_spec(spec)
        kinds = ["weight", "bias"] if mode == "both" else [mode]
        params = {k: module._parameters.get(k) for k in kinds}
        params = {k: p for k, p in params.items() if isinstance(p, torch.Tensor)}
        if not params:
            raise ValueError(f"layer {name!r} ({type(module).__name__}) has no {' or '.join(kinds)} to set")
        if mode == "bias" and "bias" not in params:
            raise ValueError(f"layer {name!r} has no bias")
        if isinstance(source, ModelInspector):
            source = source.model
        src_module = resolve_module(source, name) if isinstance(source, nn.Module) else None
        if src_module is None and not isinstance(source, (int, float, torch.Tensor)):
            raise TypeError(
                f"source must be an nn.Module, a ModelInspector, a number or a tensor, got {type(source).__name__}"
            )
        index: Any = slice(None)
        if channels is not None:
            n_out = next(iter(params.values())).shape[0]
            bad = [c for c in channels if not -n_out <= c < n_out]
            if bad:
                raise ValueError(f"channel(s) {bad} out of range for layer {name!r} with {n_out} channels")
            index = torch.tensor(channels, dtype=torch.long)
        with torch.no_grad():
            for kind, param in params.items():
                if src_module is not None:
                    src = src_module._parameters.get(kind)
                    if not isinstance(src, torch.Tensor) or src.shape != param.shape:
                        got = None if not isinstance(src, torch.Tensor) else tuple(src.shape)
                        raise ValueError(
                            f"source layer {name!r} {kind} has shape {got}, expected {tuple(param.shape)}"
                        )
                    value = src.detach()[index]
                else:
                    value = torch.as_tensor(source)
                param[index] = value.to(device=param.device, dtype=param.dtype)
        return self

    # -- activations ----------------------------------------------------------------------------------
    def stream(
        self,
        data: Union[torch.Tensor, Iterable[Any]],
        layers: Optional[Sequence[Union[str, nn.Module]]] = None,
        batch_size: int = 64,
        max_batches: Optional[int] = None,
        progress: bool = False,
        device: Union[str, torch.device, None] = "cpu",
        *,
        stop_early: bool = True,
    ) -> ActivationMap:
        """Run the model over a tensor or a DataLoader and keep the chosen layers' outputs.

        The batches go through the one loader iterator, :func:`optim.activations.iter_activations`: eval mode
        without gradients, only as far as the deepest chosen layer, each output as its layer produced it (an
        in-place op such as ``nn.ReLU(inplace=True)`` after a conv does not change the conv's recording), a
        module called several times read at its last call; the model's mode, ``requires_grad`` flags and hooks
        are restored afterwards. Results replace :attr:`activations`.

        Args:
            data: an ``(N, C, H, W)`` tensor, a DataLoader or any iterable of batches (tensors,
                ``(inputs, labels)`` tuples or dicts with an ``"image"`` entry).
            layers: dotted names or modules; ``None`` takes every layer of :meth:`layer_info`.
            batch_size: batch size used to split a tensor.
            max_batches: stop after this many batches.
            progress: show a tqdm progress bar.
            device: where to keep the collected activations (``None``: where the model computed them).
            stop_early: stop each pass once every layer has run, at the call counts the first batch of each input
                shape showed; ``False`` for a model whose number of calls to a layer changes with the input's
                values (see :func:`~optim.activations.iter_activations`).

        Returns:
            :attr:`activations`, an :class:`~optim.activations.ActivationMap`: each layer's outputs
            concatenated over batches along dim 0, keyed by dotted name (iteration yields the names) and
            answering the module too.

        Raises:
            ValueError: for an unknown layer, no layers, or data that yields no batches.
        """
        if layers is None:
            layers = [row.name for row in self.layer_info()]
        if isinstance(layers, (str, nn.Module)):
            layers = [layers]
        modules = [resolve_module(self.model, layer) for layer in layers]
        if not modules:
            raise ValueError("stream needs at least one layer")
        names = [layer if isinstance(layer, str) else module_name(self.model, layer) for layer in layers]
        chunks: Dict[str, List[torch.Tensor]] = {name: [] for name in names}
        owner = dict(zip(names, modules))
        for acts in stream_activations(self.model, modules, data, batch_size, max_batches, progress, "stream",
                                       stop_early=stop_early):
            for name, module in owner.items():
                out = acts[module]
                chunks[name].append(out.to(device) if device is not None else out)
        if not any(chunks.values()):
            raise ValueError("the data yielded no batches")
        self.activations = ActivationMap(
            ((name, owner[name], name, torch.cat(parts)) for name, parts in chunks.items()), self.model
        )
        return self.activations

    @property
    def neurons(self) -> ActivationMap:
        """Alias of :attr:`activations` (the CelebA & Lucid name)."""
        return self.activations

    def __repr__(self) -> str:
        return f"ModelInspector({type(self.model).__name__}, {len(self.layer_info())} layers)"
