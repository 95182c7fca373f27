"""Random parameter tables shared by the random transforms.

A transform parameter is given either as a set of choices (a list or 1-D tensor, drawn uniformly) or as a
``(min, max)`` tuple (drawn uniformly from the interval). Both are stored as a small float buffer so that
drawing a value is a couple of tensor ops on the input's device, with no host round trip.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import torch

__all__ = ["ValueSpec", "parse_values", "pick"]

ValueSpec = Union[Sequence[float], Tuple[float, float], torch.Tensor]


def parse_values(values: ValueSpec, name: str) -> Tuple[torch.Tensor, bool]:
    """Turn a choice list or a ``(min, max)`` range into a float table.

    Args:
        values: a list or 1-D tensor of choices, or a tuple ``(min, max)`` for a uniform range.
        name: the argument's name, for error messages.

    Returns:
        ``(table, is_range)``: the choices (or ``[min, max]``) as a float32 tensor and whether it is a range.

    Raises:
        TypeError: for a value that is neither a list, a tuple nor a tensor.
        ValueError: for an empty set, a tuple that is not a ``(min, max)`` pair, min > max, or a
            non-finite value.
    """
    if isinstance(values, torch.Tensor):
        if values.dim() != 1 or values.numel() == 0:
            raise ValueError(f"{name} as a tensor must be 1-D and non-empty, got shape {tuple(values.shape)}")
        table, is_range = values.detach().to("cpu", torch.float32).clone(), False
    elif isinstance(values, tuple):
        if len(values) != 2:
            raise ValueError(
                f"{name} as a tuple means a (min, max) range and needs 2 values, got {len(values)}; "
                "pass a list for a set of choices"
            )
        low, high = (float(v) for v in values)
        if low > high:
            raise ValueError(f"{name} range ({low}, {high}) has min > max")
        table, is_range = torch.tensor([low, high], dtype=torch.float32), True
    elif isinstance(values, list):
        if not values:
            raise ValueError(f"{name} needs at least one value, got an empty list")
        table, is_range = torch.tensor([float(v) for v in values], dtype=torch.float32), False
    else:
        raise TypeError(
            f"{name} must be a list of choices, a (min, max) tuple or a 1-D tensor, got {type(values).__name__}"
        )
    if not all(math.isfinite(v) for v in table.tolist()):
        raise ValueError(f"{name} must hold finite numbers, got {table.tolist()}")
    return table, is_range


def pick(table: torch.Tensor, is_range: bool, u: torch.Tensor) -> torch.Tensor:
    """Map uniform draws ``u`` in [0, 1) to values of ``table`` (a uniform choice, or a point of the range)."""
    if is_range:
        return table[0] + (table[1] - table[0]) * u
    n = table.shape[0]
    index = (u * n).long().clamp(0, n - 1)
    return table[index]
