"""Turn a DataLoader, a tensor or any iterable of batches into a stream of input tensors."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, List, Optional, Union

import torch
import torch.nn as nn

from .._utils import model_device_dtype
from ..optimization.hooks import run_to_targets

__all__ = ["iter_inputs", "count_batches", "layer_outputs"]


def _first_tensor(batch: Any) -> torch.Tensor:
    # Labelled datasets yield (inputs, labels) tuples or dicts; the model only sees the inputs.
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("image", "images", "input", "inputs", "x", "pixel_values"):
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
    raise TypeError(
        "each batch must be a tensor, a (inputs, labels, ...) tuple/list or a dict with an 'image'/'input' "
        f"tensor, got {type(batch).__name__}"
    )


def iter_inputs(
    data: Union[torch.Tensor, Iterable[Any]], batch_size: int = 64, max_batches: Optional[int] = None
) -> Iterator[torch.Tensor]:
    """Yield input tensors from a tensor (split into batches), a DataLoader or any iterable of batches.

    Args:
        data: an ``(N, ...)`` tensor, or an iterable whose items are tensors, tuples whose first item is
            the input tensor, or dicts with an ``"image"``/``"input"`` entry.
        batch_size: batch size used to split a tensor.
        max_batches: stop after this many batches (``None``: all of them).

    Returns:
        An iterator of input tensors.
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
    if isinstance(data, torch.Tensor):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batches: Iterable[Any] = data.split(batch_size)
    elif isinstance(data, Iterable):
        batches = data
    else:
        raise TypeError(
            f"data must be a tensor or an iterable of batches (e.g. a DataLoader), got {type(data).__name__}"
        )
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            return
        yield _first_tensor(batch)


def count_batches(
    data: Union[torch.Tensor, Iterable[Any]], batch_size: int = 64, max_batches: Optional[int] = None
) -> Optional[int]:
    """The number of batches :func:`iter_inputs` will yield, when it is known in advance (for tqdm)."""
    if isinstance(data, torch.Tensor):
        total: Optional[int] = -(-data.shape[0] // batch_size)
    else:
        try:
            total = len(data)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if total is not None and max_batches is not None:
        total = min(total, max_batches)
    return total


def layer_outputs(model: nn.Module, modules: List[nn.Module], x: torch.Tensor) -> List[torch.Tensor]:
    """The output of each module for the input batch ``x``, running the model only as far as needed.

    ``x`` is moved to the model's device (and floating dtype). A module returning a tuple or list (e.g.
    attention) contributes its first output.

    Args:
        model: the network (the caller decides on eval mode and gradients).
        modules: submodules of ``model``.
        x: one input batch.

    Returns:
        One tensor per module, in the order of ``modules``.
    """
    device, dtype = model_device_dtype(model)
    x = x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)
    outputs = run_to_targets(model, modules, x)
    return [out[0] if isinstance(out, (tuple, list)) else out for out in (outputs[m] for m in modules)]
