"""What a model expects as input: its native size, normalization and interpolation (its "data config").

:func:`input_config` reads what the model (or its library) declares, without running it:

- **timm**: ``model.pretrained_cfg`` (``default_cfg`` in older versions): ``input_size``, ``mean``, ``std``,
  ``interpolation``, ``fixed_input_size`` (what ``timm.data.resolve_data_config`` reads); a ViT's patch embedding
  gives the size it was built for (``img_size=``) and whether it is strict (``dynamic_img_size=True``: not).
- **torchvision**: ``image_size`` of a ``VisionTransformer`` (the only fixed-size classifier: it asserts the
  size); a weights enum (``weights=ViT_B_16_Weights.DEFAULT``) gives its ``transforms()``' crop size, mean, std
  and interpolation. A torchvision model built with ``weights=None`` does not know its normalization.
- **Hugging Face**: ``model.config.image_size`` and ``num_channels`` (``vision_config`` for CLIP-like models);
  the mean and std live in the image processor (``ViTImageProcessor``: ``image_mean``, ``image_std``, ``size``,
  ``resample``), passed as ``processor=``.
- **open_clip**: the tower's ``preprocess_cfg`` (or ``image_size`` / ``image_mean`` / ``image_std``).
- **optim's zoo** (``opt.models``): these take an RGB image in ``[0, 1]`` and normalize it themselves
  (``transform_input``), so they report no mean and std (and no native size: their renders keep the library's
  defaults), and nothing is ever normalized twice.

Unknown fields are ``None``. :func:`render_inputs` turns a config into a render's image size and
``preprocess``: every render entry point (``render_vis``, ``render_layer``, the recipes) asks it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch.nn as nn

__all__ = ["InputConfig", "input_config", "render_inputs", "RenderInputs", "normalizers"]

# optim's own model definitions: they take an RGB image in [0, 1] and normalize it themselves
_ZOO_MODULES = frozenset(
    f"optim.models.{name}" for name in ("googlenet", "googlenet_places365", "vgg", "efficientnet_lite", "clip")
)

# PIL's resampling filters by number (Hugging Face processors store ``resample`` as one).
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """A model's input contract; ``None`` where the model does not say.

    Attributes:
        size: native ``(height, width)``.
        mean: per-channel mean of the normalization ``(x - mean) / std`` applied to a ``[0, 1]`` image.
        std: per-channel standard deviation of that normalization.
        interpolation: the resize filter of its preprocessing (``"bilinear"``, ``"bicubic"``, ...).
        channels: the input channels it declares.
        fixed_size: ``True`` when the model only accepts ``size`` (a ViT's position embeddings), ``False``
            when it declares a size but accepts others, ``None`` when unknown.
        source: where the values come from: ``"timm"``, ``"torchvision"``, ``"hf"``, ``"open_clip"``,
            ``"optim"`` (a zoo model that normalizes its own input) or ``"unknown"``.
    """

    size: Optional[Tuple[int, int]] = None
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None
    interpolation: Optional[str] = None
    channels: Optional[int] = None
    fixed_size: Optional[bool] = None
    source: str = "unknown"

    def normalize(self, channels: Optional[int] = None) -> Optional[nn.Module]:
        """A :class:`~optim.transforms.Normalize` for the declared mean and std, ``None`` without both.

        Args:
            channels: the channels the model reads, when they differ from the statistics' (timm keeps RGB
                statistics in ``pretrained_cfg`` of an ``in_chans=1`` model): one channel gets their average,
                extra channels (alpha, depth) pass unchanged, fewer channels take the first statistics.

        Example:
            >>> InputConfig(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)).normalize()
            Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
            >>> InputConfig(mean=(0.25, 0.5, 0.75), std=(0.25, 0.25, 0.25)).normalize(channels=1)
            Normalize(mean=(0.5,), std=(0.25,))
            >>> print(InputConfig().normalize())
            None
        """
        if self.mean is None or self.std is None:
            return None
        from ..transforms.normalize import Normalize

        mean, std = [float(v) for v in self.mean], [float(v) for v in self.std]
        if channels is not None and len(mean) == len(std) and channels != len(mean):
            if channels == 1:
                mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
            else:
                mean = (mean + [0.0] * channels)[:channels]
                std = (std + [1.0] * channels)[:channels]
        return Normalize(mean, std)


def _pair(value: Any) -> Optional[Tuple[int, int]]:
    """An int or a (h, w) pair (or a (c, h, w) triple, timm's ``input_size``) as ``(h, w)``; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (value, value) if value > 0 else None
    if isinstance(value, (tuple, list)) and len(value) in (2, 3):
        if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            return (int(value[-2]), int(value[-1]))
    return None


def _floats(value: Any) -> Optional[Tuple[float, ...]]:
    if value is None or isinstance(value, (str, bytes)):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out or None


def _interpolation(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return _PIL_RESAMPLE.get(value)
    text = getattr(value, "value", value)  # torchvision's InterpolationMode, PIL's Resampling enum
    if isinstance(text, int):
        return _PIL_RESAMPLE.get(text)
    return str(text).lower() if isinstance(text, str) else None


def _unwrap(model: nn.Module) -> nn.Module:
    # a torch.compile'd module keeps the model it compiled as _orig_mod
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model


def _timm(model: nn.Module) -> Optional[Dict[str, Any]]:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if not isinstance(cfg, dict) or "input_size" not in cfg:
        return None
    out: Dict[str, Any] = {
        "size": _pair(cfg.get("input_size")),
        "mean": _floats(cfg.get("mean")),
        "std": _floats(cfg.get("std")),
        "interpolation": _interpolation(cfg.get("interpolation")),
        "fixed_size": cfg.get("fixed_input_size"),
        "source": "timm",
    }
    input_size = cfg.get("input_size")
    if isinstance(input_size, (tuple, list)) and len(input_size) == 3:
        out["channels"] = int(input_size[0])
    # the size the model was built for (img_size=32) wins over the pretrained config's (224)
    embed = getattr(model, "patch_embed", None)
    if embed is not None:
        built = _pair(getattr(embed, "img_size", None))
        if built is not None:
            out["size"] = built
        strict = getattr(embed, "strict_img_size", None)
        if isinstance(strict, bool):
            out["fixed_size"] = strict
    if out["fixed_size"] is not None:
        out["fixed_size"] = bool(out["fixed_size"])
    return out


def _hf_config(model: nn.Module) -> Optional[Dict[str, Any]]:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return None
    vision = getattr(config, "vision_config", None)
    for cfg in (config, vision):
        if cfg is None:
            continue
        size = _pair(getattr(cfg, "image_size", None))
        if size is not None:
            channels = getattr(cfg, "num_channels", None)
            return {
                "size": size,
                "channels": int(channels) if isinstance(channels, int) and not isinstance(channels, bool) else None,
                "source": "hf",
            }
    return None


def _processor(processor: Any) -> Dict[str, Any]:
    """Mean, std, size and interpolation of a Hugging Face image processor (or any object with those names)."""
    out: Dict[str, Any] = {}
    if getattr(processor, "do_normalize", True):
        out["mean"] = _floats(getattr(processor, "image_mean", None))
        out["std"] = _floats(getattr(processor, "image_std", None))
    size = None
    if getattr(processor, "do_center_crop", False):
        size = _size_dict(getattr(processor, "crop_size", None))
    if size is None:
        size = _size_dict(getattr(processor, "size", None))
    out["size"] = size
    out["interpolation"] = _interpolation(getattr(processor, "resample", None))
    return {k: v for k, v in out.items() if v is not None}


def _size_dict(size: Any) -> Optional[Tuple[int, int]]:
    if size is None:
        return None
    get = size.get if hasattr(size, "get") else (lambda key: getattr(size, key, None))
    height, width = get("height"), get("width")
    if isinstance(height, int) and isinstance(width, int):
        return (height, width)
    edge = get("shortest_edge")
    if isinstance(edge, int):
        return (edge, edge)
    return _pair(size)


def _open_clip(model: nn.Module) -> Optional[Dict[str, Any]]:
    for tower in (model, getattr(model, "visual", None)):
        if not isinstance(tower, nn.Module):
            continue
        cfg = getattr(tower, "preprocess_cfg", None)
        if isinstance(cfg, dict) and ("mean" in cfg or "size" in cfg):
            return {
                "size": _pair(cfg.get("size")),
                "mean": _floats(cfg.get("mean")),
                "std": _floats(cfg.get("std")),
                "interpolation": _interpolation(cfg.get("interpolation")),
                "source": "open_clip",
            }
        if hasattr(tower, "image_mean") and hasattr(tower, "image_std"):
            return {
                "size": _pair(getattr(tower, "image_size", None)),
                "mean": _floats(tower.image_mean),
                "std": _floats(tower.image_std),
                "source": "open_clip",
            }
    return None


def _torchvision(model: nn.Module, weights: Any) -> Optional[Dict[str, Any]]:
    out: Dict[str, Any] = {}
    if type(model).__module__.startswith("torchvision.models"):
        out["source"] = "torchvision"
        size = _pair(getattr(model, "image_size", None))
        if size is not None:  # VisionTransformer: asserts the size
            out["size"], out["fixed_size"] = size, True
    if weights is not None:
        make = getattr(weights, "transforms", None)
        if not callable(make):
            raise TypeError(f"weights must be a torchvision weights enum (with .transforms()), got {weights!r}")
        preset = make()
        crop = getattr(preset, "crop_size", None)  # [224] (a square) or [h, w]
        if isinstance(crop, (list, tuple)) and len(crop) == 1:
            crop = crop[0]
        out.setdefault("size", _pair(crop))
        out["mean"] = _floats(getattr(preset, "mean", None))
        out["std"] = _floats(getattr(preset, "std", None))
        out["interpolation"] = _interpolation(getattr(preset, "interpolation", None))
        out["source"] = "torchvision"
    return out or None


def input_config(model: nn.Module, processor: Any = None, *, weights: Any = None) -> InputConfig:
    """The input ``model`` expects, as its library declares it (timm's ``resolve_data_config`` for any model).

    Args:
        model: the network (a ``torch.compile``'d one is read through ``_orig_mod``).
        processor: a Hugging Face image processor (``ViTImageProcessor``, ``AutoImageProcessor``, ...): its
            ``image_mean``, ``image_std`` (when ``do_normalize``), ``crop_size`` / ``size`` and ``resample``.
            Its mean and std override the model's; the model's own size wins over the processor's.
        weights: a torchvision weights enum member (``ViT_B_16_Weights.DEFAULT``): its ``transforms()``' crop
            size, mean, std and interpolation.

    Returns:
        An :class:`InputConfig` (fields the model does not declare are ``None``).

    Raises:
        TypeError: ``model`` not an ``nn.Module``, ``weights`` without ``transforms()``.

    Example:
        >>> input_config(opt.models.efficientnet_lite0())  # normalizes its own [0, 1] input
        InputConfig(size=None, mean=None, std=None, interpolation=None, channels=None, fixed_size=None, source='optim')
        >>> import torchvision
        >>> vit = torchvision.models.VisionTransformer(32, 8, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=8)
        >>> input_config(vit).size, input_config(vit).fixed_size, input_config(vit).mean
        ((32, 32), True, None)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    model = _unwrap(model)
    fields: Dict[str, Any] = {}
    if type(model).__module__ in _ZOO_MODULES:
        fields["source"] = "optim"
    else:
        for found in (_timm(model), _hf_config(model), _open_clip(model)):
            if found is not None:
                fields = found
                break
        tv = _torchvision(model, weights)
        if tv is not None:
            for key, value in tv.items():
                if value is not None and (key not in fields or fields[key] is None or weights is not None):
                    fields[key] = value
        if not fields:
            size = _pair(getattr(model, "image_size", None))
            if size is not None:
                fields = {"size": size}
    if processor is not None:
        from_processor = _processor(processor)
        if "size" in from_processor and fields.get("size") is not None:
            del from_processor["size"]  # the model's own size is the truth
        fields.update(from_processor)
        fields.setdefault("source", "hf")
        if fields.get("source") in (None, "unknown", "optim") and fields.get("mean") is not None:
            fields["source"] = "hf"
    fields = {k: v for k, v in fields.items() if v is not None}
    return InputConfig(**fields)


@dataclasses.dataclass(frozen=True)
class RenderInputs:
    """A render's image size and preprocess, from the caller's arguments and the model's :class:`InputConfig`.

    Attributes:
        size: ``(height, width)`` of the default image.
        preprocess: applied after the transforms, before the model (``None``: nothing).
        config: the model's input config.
    """

    size: Tuple[int, int]
    preprocess: Optional[Callable[..., Any]]
    config: InputConfig


def normalizers(transforms: Any) -> List[Callable[[torch.Tensor], torch.Tensor]]:
    """The normalizations a render's transforms hold (optim's or torchvision's ``Normalize``, also inside an
    ``nn.Sequential`` or a torchvision ``Compose``), in order: what a render's reference image goes through too.

    Example:
        >>> from optim.transforms import Normalize
        >>> normalizers([nn.Identity(), nn.Sequential(Normalize((0.5,), (0.25,)))])
        [Normalize(mean=(0.5,), std=(0.25,))]
    """
    found: List[Callable[[torch.Tensor], torch.Tensor]] = []
    items = list(transforms) if isinstance(transforms, (list, tuple)) else [] if transforms is None else [transforms]
    for item in items:
        if type(item).__name__ == "Normalize":
            found.append(item)
        elif isinstance(getattr(item, "transforms", None), (list, tuple)):  # torchvision's Compose
            found.extend(normalizers(list(item.transforms)))
        elif isinstance(item, nn.Module):
            found.extend(normalizers([m for m in item.children()]))
    return found


def render_inputs(
    model: Optional[nn.Module],
    size: Union[None, int, Sequence[int]] = None,
    preprocess: Optional[Callable[..., Any]] = None,
    transforms: Any = None,
) -> RenderInputs:
    """The one place where a render learns its image size and input normalization from the model.

    - size: ``size`` when given; else the model's native size (:func:`input_config`: timm, torchvision ViT,
      Hugging Face ``config.image_size``); else ``DEFAULT_SIZE``.
    - preprocess: ``preprocess`` when given (``nn.Identity()`` for none); else :class:`~optim.transforms.Normalize`
      with the model's declared mean and std (the rendered image stays in ``[0, 1]``), unless ``transforms``
      already hold a ``Normalize`` (optim's or torchvision's: Lucent-style transform lists normalize last); else
      ``None``. optim's zoo models normalize their own input and get ``None``.

    Args:
        model: the network (``None``: the library defaults).
        size: the caller's image size (an int or ``(height, width)``), or ``None``.
        preprocess: the caller's preprocess, or ``None``.
        transforms: the render's transforms (a module, a list of them, or ``None``), only looked at for a
            ``Normalize``.

    Returns:
        A :class:`RenderInputs`.

    Example:
        >>> from optim.optimization.defaults import DEFAULT_SIZE
        >>> render_inputs(nn.Conv2d(3, 4, 3)).size == (DEFAULT_SIZE, DEFAULT_SIZE)
        True
        >>> class Declared(nn.Conv2d):  # a model with timm's pretrained_cfg
        ...     pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.25,) * 3}
        >>> got = render_inputs(Declared(3, 4, 3))
        >>> got.size, got.preprocess
        ((32, 32), Normalize(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
        >>> render_inputs(Declared(3, 4, 3), size=16, preprocess=nn.Identity()).size
        (16, 16)
    """
    from ..images.base import check_size
    from ..optimization.defaults import DEFAULT_SIZE

    config = input_config(model) if isinstance(model, nn.Module) else InputConfig()
    if size is None:
        hw = config.size if config.size is not None else (DEFAULT_SIZE, DEFAULT_SIZE)
    else:
        hw = tuple(check_size(size))  # type: ignore[assignment]
    if preprocess is None and not normalizers(transforms):
        from ..optimization.defaults import model_input_channels

        preprocess = config.normalize(model_input_channels(model) if isinstance(model, nn.Module) else None)
    return RenderInputs(size=(int(hw[0]), int(hw[1])), preprocess=preprocess, config=config)
