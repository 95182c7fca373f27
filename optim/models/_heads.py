"""What every model factory shares: the ``num_classes`` argument and the fresh classifier head (timm's rule).

A factory is ``factory(pretrained=False, *, progress=True, model_path=None, **kwargs)``. ``num_classes`` sets
the size of the classifier output; with pretrained weights of another size, the backbone is loaded and the
classifier is replaced by a freshly initialised one (as ``timm.create_model(..., num_classes=N)`` does).
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, Optional

import torch.nn as nn

__all__ = ["pop_num_classes", "fresh_linear"]


def pop_num_classes(kwargs: Dict[str, Any], alias: Optional[str] = None) -> Optional[int]:
    """Remove ``num_classes`` (and the model class's own name for it, ``alias``) from ``kwargs``.

    Args:
        kwargs: a factory's keyword arguments (modified in place).
        alias: the model class's argument of the same meaning (``"out_features"`` for InceptionV1 / VGG16),
            accepted as a synonym.

    Returns:
        The class count asked for, or ``None`` when neither was given.

    Raises:
        TypeError: a count that is not an int.
        ValueError: a count below 1, or ``num_classes`` and ``alias`` given with different values.

    Example:
        >>> kwargs = {"num_classes": 7, "aux_logits": False}
        >>> pop_num_classes(kwargs, "out_features"), kwargs
        (7, {'aux_logits': False})
    """
    values = {key: kwargs.pop(key) for key in ("num_classes", alias) if key is not None and key in kwargs}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{key} must be an int, got {value!r} ({type(value).__name__})")
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    if len(set(values.values())) > 1:
        raise ValueError(f"num_classes and {alias} name the same thing; got {values['num_classes']} and {values[alias]}")
    return int(next(iter(values.values()))) if values else None


def fresh_linear(old: nn.Linear, num_classes: int) -> nn.Linear:
    """A freshly initialised ``nn.Linear`` replacing ``old``: same inputs, device and dtype, ``num_classes`` outputs.

    Example:
        >>> fresh_linear(nn.Linear(16, 1000), 7)
        Linear(in_features=16, out_features=7, bias=True)
    """
    return nn.Linear(
        old.in_features,
        num_classes,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
