"""What the analysis readers (``model_cka``, ``ModelInspector.stream``) take as data, handed to the one loader
iterator, :func:`optim.activations.iter_activations`.

Example:
    >>> net = nn.Sequential(nn.Linear(4, 2))
    >>> [tuple(a["0"].shape) for a in stream_activations(net, ["0"], torch.ones(5, 4), batch_size=2)]
    [(2, 2), (2, 2), (1, 2)]
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from .._utils import check_positive
from ..activations import ActivationMap, iter_activations

__all__ = ["batches", "count_batches", "stream_activations"]

Data = Union[torch.Tensor, Iterable[Any]]

# keys under which a dict batch (Hugging Face datasets, dict-style collate functions) holds its input
_INPUT_KEYS = ("image", "images", "input", "inputs", "x", "pixel_values")


def _check(batch_size: int, max_batches: Optional[int]) -> None:
    check_positive(batch_size, "batch_size")
    if max_batches is not None:
        check_positive(max_batches, "max_batches")


def _input_of(batch: Any) -> Any:
    """A dict batch's input tensor; any other batch as it is (``iter_activations`` takes tensors and tuples)."""
    if isinstance(batch, dict):
        for key in _INPUT_KEYS:
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
        raise TypeError(f"a dict batch must hold its input under one of {list(_INPUT_KEYS)}, got keys {list(batch)}")
    return batch


def _tensor_chunks(data: torch.Tensor, batch_size: int, min_batch: int) -> List[torch.Tensor]:
    chunks = list(data.split(batch_size))
    if len(chunks) > 1 and chunks[-1].shape[0] < min_batch:  # a tail too short for the reader joins the last batch
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks


def batches(
    data: Data, batch_size: int = 64, max_batches: Optional[int] = None, min_batch: int = 1
) -> Iterable[Any]:
    """``data`` as the batches :func:`~optim.activations.iter_activations` takes.

    Args:
        data: an ``(N, ...)`` tensor (split into ``batch_size`` chunks), or an iterable (a DataLoader) of
            tensors, ``(inputs, labels, ...)`` tuples, or dicts with the input under ``"image"``, ``"input"``,
            ``"pixel_values"``, ...
        batch_size: the chunk size for a tensor.
        max_batches: keep only the first ``max_batches`` batches (``None``: all).
        min_batch: the fewest examples a reader can take in one batch (unbiased CKA: 4): a tensor's last chunk
            with fewer joins the one before it.

    Returns:
        An iterable of batches (tensors or tuples whose first element is the input).

    Raises:
        TypeError: for data that is neither; ValueError for a bad ``batch_size`` or ``max_batches``.
    """
    _check(batch_size, max_batches)
    if isinstance(data, torch.Tensor):
        items: Iterable[Any] = _tensor_chunks(data, batch_size, min_batch)
    elif isinstance(data, Iterable):
        items = (_input_of(b) for b in data)
    else:
        raise TypeError(f"data must be a tensor or an iterable of batches (e.g. a DataLoader), got {type(data).__name__}")
    return items if max_batches is None else itertools.islice(items, max_batches)


def count_batches(
    data: Data, batch_size: int = 64, max_batches: Optional[int] = None, min_batch: int = 1
) -> Optional[int]:
    """The number of batches :func:`batches` gives, when it is known in advance (for a progress bar)."""
    if isinstance(data, torch.Tensor):
        total: Optional[int] = len(_tensor_chunks(data, batch_size, min_batch))
    else:
        try:
            total = len(data)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if total is not None and max_batches is not None:
        total = min(total, max_batches)
    return total


def with_progress(
    items: Iterable[Any], data: Data, batch_size: int, max_batches: Optional[int], desc: str, min_batch: int = 1
) -> Iterable[Any]:
    """``items`` behind a tqdm bar sized by :func:`count_batches`."""
    from tqdm.auto import tqdm

    return tqdm(items, total=count_batches(data, batch_size, max_batches, min_batch), desc=desc, unit="batch")


def stream_activations(
    model: nn.Module,
    targets: Sequence[Union[str, nn.Module]],
    data: Data,
    batch_size: int = 64,
    max_batches: Optional[int] = None,
    progress: bool = False,
    desc: str = "activations",
    *,
    stop_early: bool = True,
) -> Iterator[ActivationMap]:
    """One :class:`~optim.activations.ActivationMap` per batch of ``data`` (see :func:`batches`), through
    :func:`~optim.activations.iter_activations`: eval mode, no gradients, inputs moved to the model's device
    and dtype, one set of hooks for the loop, the model restored afterwards. ``stop_early=False`` reads every
    batch at its own calls, for a model whose number of calls to a target changes with the input's values (see
    :func:`~optim.activations.iter_activations`).
    """
    items = batches(data, batch_size, max_batches)
    if progress:
        items = with_progress(items, data, batch_size, max_batches, desc)
    return iter_activations(model, list(targets), items, stop_early=stop_early)
