"""Random parameter tables shared by the random transforms.

A transform parameter is given either as a set of choices (a list or 1-D tensor, drawn uniformly) or as a
``(min, max)`` tuple (drawn uniformly from the interval). Tables are kept as host lists of floats: the
transforms draw their uniforms from torch's CPU generator and do the little parameter arithmetic on the
host, so a step launches no tiny device kernels and never waits for the device.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch

__all__ = ["ValueSpec", "parse_values", "pick", "split_distribution", "sample_distribution"]

ValueSpec = Union[Sequence[float], Tuple[float, float], torch.Tensor, torch.distributions.Distribution]


def split_distribution(values: ValueSpec, name: str) -> Tuple[ValueSpec, Optional[torch.distributions.Distribution]]:
    """Separate a ``torch.distributions`` object from a table spec (captum accepts one wherever it takes a range).

    Returns:
        ``(spec, None)`` for a table, or ``([], distribution)`` for a distribution.

    Raises:
        ValueError: a distribution of non-scalar samples (one scale or angle per draw is needed).
    """
    if not isinstance(values, torch.distributions.Distribution):
        return values, None
    if values.batch_shape != torch.Size([]) or values.event_shape != torch.Size([]):
        raise ValueError(
            f"{name} as a torch.distributions object must draw one number at a time, got batch_shape "
            f"{tuple(values.batch_shape)} and event_shape {tuple(values.event_shape)}"
        )
    return [], values


def sample_distribution(distribution: torch.distributions.Distribution, u: float) -> float:
    """The value of ``distribution`` at the uniform draw ``u`` in ``[0, 1)``: its inverse CDF where it has one,
    else one ``sample()`` from torch's CPU generator seeded with ``u`` (so a draw still depends only on ``u``,
    i.e. on the transform's random stream, and replays exactly).

    Example::

        >>> sample_distribution(torch.distributions.Uniform(2.0, 4.0), 0.25)
        2.5
    """
    eps = 1e-7
    p = torch.tensor(min(max(u, eps), 1.0 - eps), dtype=torch.float64)
    try:
        return float(distribution.icdf(p.to(torch.get_default_dtype())))
    except NotImplementedError:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(u * 2**53))
            return float(distribution.sample())


def parse_values(values: ValueSpec, name: str) -> Tuple[List[float], bool]:
    """Turn a choice list or a ``(min, max)`` range into a list of floats.

    Args:
        values: a list or 1-D tensor of choices, or a tuple ``(min, max)`` for a uniform range.
        name: the argument's name, for error messages.

    Returns:
        ``(table, is_range)``: the choices (or ``[min, max]``) and whether they describe a range.

    Raises:
        TypeError: for a value that is neither a list, a tuple nor a tensor.
        ValueError: for an empty set, a tuple that is not a ``(min, max)`` pair, min > max, or a
            non-finite value.
    """
    if isinstance(values, torch.Tensor):
        if values.dim() != 1 or values.numel() == 0:
            raise ValueError(f"{name} as a tensor must be 1-D and non-empty, got shape {tuple(values.shape)}")
        table, is_range = [float(v) for v in values.detach().cpu().tolist()], False
    elif isinstance(values, tuple):
        if len(values) != 2:
            raise ValueError(
                f"{name} as a tuple means a (min, max) range and needs 2 values, got {len(values)}; "
                "pass a list for a set of choices"
            )
        table, is_range = [float(values[0]), float(values[1])], True
        if table[0] > table[1]:
            raise ValueError(f"{name} range {tuple(table)} has min > max")
    elif isinstance(values, list):
        if not values:
            raise ValueError(f"{name} needs at least one value, got an empty list")
        table, is_range = [float(v) for v in values], False
    else:
        raise TypeError(
            f"{name} must be a list of choices, a (min, max) tuple or a 1-D tensor, got {type(values).__name__}"
        )
    if not all(math.isfinite(v) for v in table):
        raise ValueError(f"{name} must hold finite numbers, got {table}")
    return table, is_range


def pick(table: List[float], is_range: bool, u: float) -> float:
    """Map a uniform draw ``u`` in [0, 1) to a value: a point of the range, or a uniformly chosen entry."""
    if is_range:
        return table[0] + (table[1] - table[0]) * u
    n = len(table)
    return table[min(int(u * n), n - 1)]
