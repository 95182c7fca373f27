"""Choosing what to visualize in a model: its layer table, a layer's channels, a class by name.

The command line and the app share these, so a channel selection or a class name means the same in both.

>>> parse_channels("0:4,10")
[0, 1, 2, 3, 10]
>>> class_index("Egyptian cat")
285
"""
from __future__ import annotations

import difflib
import numbers
import re
from collections import abc
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

__all__ = ["parse_channels", "layer_table", "renderable_layers", "channel_count", "channel_counts", "channel_units",
           "class_index", "model_labels", "check_labels", "INDEX_TEXT"]


def parse_channels(
    text: str, num_channels: Optional[int] = None, *, layer: Optional[str] = None, unit: str = "channels"
) -> List[int]:
    """Parse a channel selection: ``"0:16"`` (a range), ``"3,5,9"``, ``"4"``, or ``"all"``.

    Args:
        text: the selection.
        num_channels: the layer's channel count (needed for ``"all"`` and an open range end).
        layer: the layer's name, for the range error (:func:`optim.loss.base.check_index`, the one index check).
        unit: what the layer's units are called there (:func:`channel_units` gives it).

    Returns:
        The sorted, de-duplicated channel indices.

    Raises:
        ValueError: malformed text, an empty selection, or channels outside the layer.

    >>> parse_channels("2:", 5)
    [2, 3, 4]
    >>> parse_channels("0:9", 6, layer="conv2")
    Traceback (most recent call last):
    ...
    ValueError: channel 6 is out of range for layer 'conv2', which has 6 channels (valid: 0..5)
    """
    if not isinstance(text, str):
        raise TypeError(f"a channel selection is a str such as '0:16', got {type(text).__name__}")
    chosen: set = set()
    for part in (p.strip() for p in text.split(",")):
        if part == "all":
            if num_channels is None:
                raise ValueError("'all' channels needs the layer's channel count")
            chosen.update(range(num_channels))
        elif re.fullmatch(r"\d+", part):
            chosen.add(int(part))
        elif re.fullmatch(r"\d*:\d*", part):
            start_text, end_text = part.split(":")
            if not end_text and num_channels is None:
                raise ValueError(f"the open range {part!r} needs the layer's channel count")
            end = int(end_text) if end_text else num_channels
            chosen.update(range(int(start_text or 0), int(end)))  # type: ignore[arg-type]
        else:
            raise ValueError(f"channels look like '0:16', '3,5,9' or 'all', got {text!r}")
    if not chosen:
        raise ValueError(f"the channel selection {text!r} is empty")
    channels = sorted(chosen)
    if num_channels is not None:
        from ..loss.base import check_index

        first_bad = next((c for c in channels if c >= num_channels), channels[-1])
        check_index(first_bad, "channel", size=num_channels, target=layer, unit=unit)
    return channels


def layer_table(model: nn.Module, size: Union[None, int, Sequence[int]] = None) -> List[Any]:
    """``opt.models.layer_info`` rows of ``model`` for a ``size`` input (an int side or ``(height, width)``;
    ``None``: the size a render of it uses, :func:`~optim.models.preprocess.render_inputs`: its native size, else
    ``DEFAULT_SIZE``), RGB or as many channels as its first convolution reads.

    >>> [r.name for r in layer_table(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), 8)]
    ['0', '1']
    """
    from ._utils import _default_input_size, layer_info

    return layer_info(model, _default_input_size(model, size))


def renderable_layers(rows: Sequence[Any]) -> List[Any]:
    """The rows of :func:`layer_table` whose units can be rendered: a known unit count and an output of rank 3
    or 4 (a feature map NCHW or NHWC, tokens ``(N, L, D)``, a sequence ``(N, C, L)``); not logits ``(N, C)``.

    >>> rows = layer_table(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), 8)
    >>> [r.name for r in renderable_layers(rows)]
    ['0']
    """
    return [r for r in rows if r.shape is not None and len(r.shape) in (3, 4) and r.channels]


def channel_units(
    model: nn.Module,
    layers: Sequence[Union[str, nn.Module]],
    size: Union[None, int, Sequence[int]] = None,
    *,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> List[Tuple[int, str]]:
    """The number of channels of each layer's output and what they are called (``"channels"``, ``"hidden units"``,
    ``"outputs"``: :func:`optim.layouts.units`), from one forward pass on a grey image.

    Channels are units as :func:`optim.layouts.unit_count` counts them: C of an NCHW map, the hidden units
    ``D`` of a token layer ``(N, L, D)``, the last dim of a channels-last stage. The probe has the model's input
    channels (its first convolution's), device and dtype; ``preprocess`` (a render's input normalization) is
    applied to it first. Its ``size`` is an int side or ``(height, width)``;
    ``None``: the size a render of it uses (:func:`~optim.models.preprocess.render_inputs`: its native size, else
    ``DEFAULT_SIZE``).

    Raises:
        ValueError: for an unknown layer (listing close names) or one without a channel dimension.

    >>> channel_units(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 5)), ["0", "2"], 8)
    [(4, 'channels'), (5, 'outputs')]
    """
    from .._utils import model_device_dtype
    from ..activations import record_activations
    from ..layouts import units
    from ..optimization.defaults import model_input_channels
    from .preprocess import render_inputs

    hw = render_inputs(model, size).size
    device, dtype = model_device_dtype(model)
    probe = torch.full((1, model_input_channels(model), *hw), 0.5, device=device, dtype=dtype)
    if preprocess is not None:
        probe = preprocess(probe)
    acts = record_activations(model, list(layers), probe)
    counts = []
    for layer in layers:
        out = acts[layer]
        if out.dim() < 2:
            shown = layer if isinstance(layer, str) else type(layer).__name__
            raise ValueError(f"layer {shown!r} has no channel dimension (output shape {tuple(out.shape)})")
        counts.append(units(out, module=acts.module_of(layer), model=model))
    return counts


def channel_counts(
    model: nn.Module,
    layers: Sequence[Union[str, nn.Module]],
    size: Union[None, int, Sequence[int]] = None,
    *,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> List[int]:
    """The number of channels of each layer's output (see :func:`channel_units`).

    >>> channel_counts(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1)), ["1", "0"], 8)
    [2, 4]
    """
    return [count for count, _ in channel_units(model, layers, size, preprocess=preprocess)]


def channel_count(
    model: nn.Module, layer: Union[str, nn.Module], size: Union[None, int, Sequence[int]] = None
) -> int:
    """The number of channels of ``layer``'s output (see :func:`channel_counts`).

    >>> channel_count(nn.Sequential(nn.Conv2d(3, 4, 3)), "0", 8)
    4
    """
    return channel_counts(model, [layer], size)[0]


def _normalize(name: str) -> str:
    # Places365's names are paths ("/a/airfield", "/b/bakery/shop"): the letter folder is not part of the name
    name = re.sub(r"^/[a-z]/", "", name.strip().lower()).replace("/", " ")
    return " ".join(name.replace("_", " ").split())


#: A class given as text that is an index rather than a name: ASCII digits, optionally signed (``"285"``, ``"-1"``).
INDEX_TEXT = re.compile(r"[+-]?[0-9]+")

# Hugging Face fills id2label with these when a config names no classes
_PLACEHOLDER_LABEL = re.compile(r"LABEL_[0-9]+")


def check_labels(labels: Any, name: str = "labels") -> List[str]:
    """Validate a model's class names: a sequence of str in output order, or a mapping ``{index: name}`` over
    ``0..n-1`` (a Hugging Face ``config.id2label``, whose keys may be str).

    Raises:
        TypeError: a str, or anything else that is neither; a name that is not a str.
        ValueError: no names, or a mapping whose keys are not ``0..n-1``.

    Example:
        >>> check_labels({1: "dog", 0: "cat"}), check_labels(("cat", "dog"))
        (['cat', 'dog'], ['cat', 'dog'])
        >>> check_labels("cat")
        Traceback (most recent call last):
        ...
        TypeError: labels must be a sequence of class names or a mapping {index: name}, got 'cat' (str)
    """
    if isinstance(labels, abc.Mapping):
        try:
            ordered = sorted((int(k), v) for k, v in labels.items())
        except (TypeError, ValueError):
            raise ValueError(f"{name} as a mapping must have the output indices 0..n-1 as keys, got "
                             f"{list(labels)[:5]!r}") from None
        if [k for k, _ in ordered] != list(range(len(ordered))):
            raise ValueError(f"{name} as a mapping must have the output indices 0..n-1 as keys, got "
                             f"{[k for k, _ in ordered][:5]!r}...")
        names = [v for _, v in ordered]
    elif isinstance(labels, (str, bytes)) or not isinstance(labels, abc.Sequence):
        raise TypeError(f"{name} must be a sequence of class names or a mapping {{index: name}}, got {labels!r} "
                        f"({type(labels).__name__})")
    else:
        names = list(labels)
    if not names:
        raise ValueError(f"{name} is empty: give the model's class names in output order")
    bad = next((n for n in names if not isinstance(n, str)), None)
    if bad is not None:
        raise TypeError(f"{name} must hold class names (str), got {bad!r} ({type(bad).__name__})")
    return names


def model_labels(model: Any) -> Optional[List[str]]:
    """The class names a model declares for its outputs, in output order, or ``None`` for one that declares none.

    - a Hugging Face model: its ``config.id2label``, unless those are the ``LABEL_0``, ``LABEL_1`` ... that Hugging
      Face writes when a config names no classes;
    - a model of optim's zoo (built by a registry factory of optim, such as ``opt.models.googlenet``, also under
      ``torch.compile``): its registry entry's labels (Lucid's 1008 inception5h names for InceptionV1, Places365's
      for its Places network), when every entry whose factory lives in the model's module agrees on them;
    - anything else (timm, torchvision, your own): ``None``.

    The names say nothing of the head actually built (``num_classes=7``): :class:`~optim.loss.ClassLogit`'s
    ``num_classes`` checks the output against them.

    Example:
        >>> model_labels(nn.Linear(4, 2)) is None
        True
        >>> from optim.models import googlenet
        >>> model_labels(googlenet())[:2]
        ['dummy', 'kit fox']
    """
    from .preprocess import _unwrap

    model = _unwrap(model)
    config = getattr(model, "config", None)
    id2label = getattr(config, "id2label", None) if hasattr(config, "to_dict") else None
    if isinstance(id2label, abc.Mapping) and id2label:
        try:
            names = check_labels(id2label, "config.id2label")
        except (TypeError, ValueError):
            return None
        return None if all(_PLACEHOLDER_LABEL.fullmatch(n) for n in names) else names
    return _zoo_labels(model)


def _zoo_labels(model: Any) -> Optional[List[str]]:
    from .registry import list_models, model_info

    module = type(model).__module__
    if not module.startswith("optim.models."):
        return None
    entries = []
    for name in list_models():
        entry = model_info(name)
        ref = entry.factory_ref
        where = ref.partition(":")[0] if isinstance(ref, str) else getattr(ref, "__module__", None)
        if where == module:
            entries.append(entry)
    if not entries or len({e.label_set for e in entries}) != 1:
        return None
    return list(entries[0].labels)


def class_index(name: Union[str, int], labels: Optional[Sequence[str]] = None) -> int:
    """The output index of a class, by name (case and ``_`` / space insensitive) or by number.

    Args:
        name: a class name such as ``"Egyptian cat"`` / ``"egyptian_cat"``, or its index (``285`` or ``"285"``).
        labels: the model's class names, in output order, or a mapping ``{index: name}`` (see
            :func:`check_labels`; default ``opt.models.IMAGENET_CLASSES``; a registry model's are
            ``opt.models.model_info(name).labels``, a model's own :func:`model_labels`).

    Returns:
        The index.

    Raises:
        TypeError: a class that is neither a str nor an int, or bad ``labels``.
        ValueError: an unknown name (with the closest names), a name the labels list more than once (Lucid's
            inception5h labels have two "crane"s, the bird and the machine: give the index), or an index that is
            negative or outside the labels.

    >>> class_index("ESPRESSO")
    967
    >>> class_index("egyptain cat")
    Traceback (most recent call last):
    ...
    ValueError: unknown class name 'egyptain cat'; close names: 'Egyptian cat'...
    >>> from optim.models import INCEPTION5H_CLASSES
    >>> class_index("crane", INCEPTION5H_CLASSES)
    Traceback (most recent call last):
    ...
    ValueError: class name 'crane' is ambiguous: outputs 429 and 545 are all called that; give the class index
    """
    from ._labels import IMAGENET_CLASSES

    names = list(IMAGENET_CLASSES) if labels is None else check_labels(labels)
    if isinstance(name, bool) or not isinstance(name, (str, numbers.Integral)):
        raise TypeError(f"a class is a name or an index, got {name!r} ({type(name).__name__})")
    text = str(int(name)) if isinstance(name, numbers.Integral) else name.strip()
    if INDEX_TEXT.fullmatch(text):
        index = int(text)
        if index < 0:
            raise ValueError(f"class indices must be >= 0, got {index}")
        if index >= len(names):
            raise ValueError(f"class index {index} is out of range: the model has {len(names)} classes")
        return index
    wanted = _normalize(text)
    normalized = [_normalize(n) for n in names]
    if wanted in normalized:
        found = [i for i, n in enumerate(normalized) if n == wanted]
        if len(found) > 1:
            outputs = ", ".join(map(str, found[:-1])) + f" and {found[-1]}"
            raise ValueError(f"class name {name!r} is ambiguous: outputs {outputs} are all called that; give the class "
                             "index")
        return found[0]
    close = difflib.get_close_matches(wanted, list(dict.fromkeys(normalized)), n=3, cutoff=0.6)
    if close:
        hint = "close names: " + ", ".join(repr(names[normalized.index(c)]) for c in close)
    else:
        where = "opt.models.IMAGENET_CLASSES" if names == list(IMAGENET_CLASSES) else "the model's labels"
        hint = f"no name is close to it (see {where}, or give the class index)"
    raise ValueError(f"unknown class name {name!r}; {hint}")
