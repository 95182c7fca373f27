"""Compare two models layer by layer with minibatch CKA over a data loader, and plot the CKA map."""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .._utils import module_name, resolve_module
from ..activations import iter_activations, model_frozen
from ._data import batches as data_batches, with_progress
from .cka import MinibatchCKA

__all__ = ["CKAMap", "model_cka", "cka_heatmap", "plot_cka", "default_cka_layers"]

LayerSpec = Union[str, nn.Module]


@dataclass
class CKAMap:
    """A layer-by-layer CKA matrix with the layer names along each axis.

    Attributes:
        values: ``(len(layers1), len(layers2))`` float64 tensor; ``values[i, j]`` compares
            ``layers1[i]`` of the first model with ``layers2[j]`` of the second.
        layers1: dotted layer names of the first model (rows).
        layers2: dotted layer names of the second model (columns).
    """

    values: torch.Tensor
    layers1: List[str]
    layers2: List[str]

    def plot(self, **kwargs: Any) -> Any:
        """Draw this map with :func:`plot_cka`; returns the matplotlib figure."""
        return plot_cka(self, **kwargs)


def default_cka_layers(model: nn.Module) -> List[str]:
    """The dotted names of every ``Conv2d`` and ``Linear`` module, in forward-definition order."""
    return [name for name, m in model.named_modules() if name and isinstance(m, (nn.Conv2d, nn.Linear))]


def _resolve(
    model: nn.Module, layers: Sequence[LayerSpec], which: str, other: Optional[nn.Module] = None
) -> Tuple[List[nn.Module], List[str]]:
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError(f"{which} must name at least one layer")
    modules = [resolve_module(model, layer) for layer in layers]
    inside = {id(m) for m in model.modules()}
    theirs = set() if other is None else {id(m) for m in other.modules()} - inside
    for module in modules:
        if id(module) in theirs:  # the other model's layer: it would never run in this one
            raise ValueError(f"{which} holds a {type(module).__name__} module of the other model, not of "
                             f"{type(model).__name__}; give it by name or as a module of this model")
    return modules, [module_name(model, m) for m in modules]


def model_cka(
    model1: nn.Module,
    model2: nn.Module,
    loader: Union[torch.Tensor, Iterable[Any]],
    layers1: Sequence[LayerSpec],
    layers2: Sequence[LayerSpec],
    progress: bool = True,
    kernel: str = "linear",
    paired: bool = False,
    max_batches: Optional[int] = None,
    batch_size: int = 64,
    *,
    stop_early: bool = True,
) -> torch.Tensor:
    """Unbiased minibatch CKA between layers of two models over a data loader (Nguyen et al., 2021).

    Both models see the same batches in eval mode without gradients, read through the activation core
    (:func:`optim.activations.iter_activations`: a layer's output as the layer produced it, even when an
    in-place op such as ``nn.ReLU(inplace=True)`` overwrites it later); each model is left as it was.

    The unbiased HSIC of each batch is an estimate whose spread grows as the batch shrinks: with batches of a
    handful of images the values are noise and can be negative (Nguyen et al. use 256 a batch). Use batches of
    32 or more for numbers to read; the tiny batches of the example only show the call.

    Args:
        model1: the first network.
        model2: the second network (may be ``model1`` itself, then each batch runs once).
        loader: a DataLoader (batches are tensors, ``(inputs, labels)`` tuples or dicts), any iterable
            of such batches, or one ``(N, C, H, W)`` tensor split into ``batch_size`` chunks (a last chunk
            under 4 joins the one before). Every batch needs at least 4 examples (a DataLoader:
            ``drop_last=True`` drops a short last batch).
        layers1: layers (dotted names or modules) of ``model1``.
        layers2: layers of ``model2``.
        progress: show a tqdm progress bar over batches.
        kernel: ``"linear"`` or ``"rbf"``.
        paired: compare ``layers1[i]`` with ``layers2[i]`` only (equal lengths) and return a vector;
            otherwise every pair is compared.
        max_batches: stop after this many batches.
        batch_size: batch size used when ``loader`` is a tensor.
        stop_early: stop each pass once every layer has run, at the call counts the first batch of each input
            shape showed; ``False`` for a model whose number of calls to a layer changes with the input's
            values (see :func:`~optim.activations.iter_activations`).

    Returns:
        A float64 tensor of shape ``(len(layers1), len(layers2))``, or ``(len(layers1),)`` when ``paired``.

    Example::

        >>> dataset = torch.utils.data.TensorDataset(torch.rand(8, 3, 32, 32), torch.zeros(8))
        >>> loader = torch.utils.data.DataLoader(dataset, batch_size=4)  # (inputs, labels) batches
        >>> cka = model_cka(model, model, loader, ["blocks.3"], ["blocks.3", "blocks.10"], progress=False)
        >>> cka.shape, round(float(cka[0, 0]), 6)  # a layer with itself: 1 (blocks.10's value, on 8 images, is noise)
        (torch.Size([1, 2]), 1.0)
    """
    mods1, _ = _resolve(model1, layers1, "layers1", model2)
    mods2, _ = _resolve(model2, layers2, "layers2", model1)
    if paired and len(mods1) != len(mods2):
        raise ValueError(f"paired=True needs as many layers1 as layers2, got {len(mods1)} and {len(mods2)}")
    metric = MinibatchCKA(kernel=kernel)
    # unbiased HSIC needs 4 examples a batch: a tensor's short tail joins the batch before it
    items = data_batches(loader, batch_size=batch_size, max_batches=max_batches, min_batch=4)
    if progress:
        items = with_progress(items, loader, batch_size, max_batches, "CKA", min_batch=4)
    if model1 is model2:
        union = list(dict.fromkeys(mods1 + mods2))
        with contextlib.closing(iter_activations(model1, union, items, stop_early=stop_early)) as stream:
            for acts in stream:
                metric.update([acts[m] for m in mods1], [acts[m] for m in mods2])
    else:
        # Both models see each batch once, in lockstep (tee keeps one batch between the two). The two loops
        # finish in the order they started, not the reverse, so each restores the grad mode and flags it found
        # while the other still held them: the outer contexts save the caller's state and restore it last.
        first, second = itertools.tee(items, 2)
        with torch.no_grad(), model_frozen(model1), model_frozen(model2):
            with contextlib.closing(iter_activations(model1, mods1, first, stop_early=stop_early)) as stream1, \
                    contextlib.closing(iter_activations(model2, mods2, second, stop_early=stop_early)) as stream2:
                for acts1, acts2 in zip(stream1, stream2):
                    metric.update([acts1[m] for m in mods1], [acts2[m] for m in mods2])
    if metric.n_batches == 0:
        raise ValueError("the loader yielded no batches")
    values = metric.compute()
    return torch.diagonal(values).clone() if paired else values


def cka_heatmap(
    model1: nn.Module,
    model2: nn.Module,
    loader: Union[torch.Tensor, Iterable[Any]],
    layers1: Optional[Sequence[LayerSpec]] = None,
    layers2: Optional[Sequence[LayerSpec]] = None,
    progress: bool = True,
    kernel: str = "linear",
    max_batches: Optional[int] = None,
    batch_size: int = 64,
    *,
    stop_early: bool = True,
) -> CKAMap:
    """The full layer-by-layer CKA map of two models.

    Args:
        model1: the first network.
        model2: the second network (``model1`` again for a model's self-similarity map).
        loader: see :func:`model_cka`.
        layers1: layers of ``model1``; ``None`` takes every ``Conv2d``/``Linear`` layer.
        layers2: layers of ``model2``; ``None`` takes every ``Conv2d``/``Linear`` layer.
        progress: show a tqdm progress bar.
        kernel: ``"linear"`` or ``"rbf"``.
        max_batches: stop after this many batches.
        batch_size: batch size used when ``loader`` is a tensor.
        stop_early: stop each pass once every layer has run, at the call counts the first batch of each input
            shape showed; ``False`` for a model whose number of calls to a layer changes with the input's
            values (see :func:`~optim.activations.iter_activations`).

    Returns:
        A :class:`CKAMap`; ``.plot()`` draws it.

    Example::

        >>> layers = ["stem", "blocks.5", "head"]
        >>> cmap = cka_heatmap(model, model, torch.rand(8, 3, 32, 32), layers, layers, progress=False, batch_size=4)
        >>> cmap.layers1
        ['stem', 'blocks.5', 'head']
        >>> cmap.values.diagonal().round(decimals=4)  # each layer against itself
        tensor([1., 1., 1.], dtype=torch.float64)
        >>> fig = cmap.plot(title="self-similarity")  # a matplotlib figure
    """
    layers1 = default_cka_layers(model1) if layers1 is None else layers1
    layers2 = default_cka_layers(model2) if layers2 is None else layers2
    _, names1 = _resolve(model1, layers1, "layers1")
    _, names2 = _resolve(model2, layers2, "layers2")
    values = model_cka(
        model1, model2, loader, layers1, layers2, progress=progress, kernel=kernel,
        max_batches=max_batches, batch_size=batch_size, stop_early=stop_early,
    )
    return CKAMap(values=values, layers1=names1, layers2=names2)


def plot_cka(
    cka_map: Union[CKAMap, torch.Tensor],
    layers1: Optional[Sequence[str]] = None,
    layers2: Optional[Sequence[str]] = None,
    ax: Any = None,
    title: Optional[str] = None,
    cmap: str = "magma",
    labels: Tuple[str, str] = ("model 1", "model 2"),
    annotate: bool = False,
) -> Any:
    """Plot a CKA matrix as a heat map (rows: first model's layers, bottom to top like Kornblith et al.).

    Args:
        cka_map: a :class:`CKAMap` or a 2-D tensor of CKA values.
        layers1: row labels (taken from the :class:`CKAMap` if not given).
        layers2: column labels.
        ax: a matplotlib axes to draw in; a new figure is made if ``None``.
        title: the plot title.
        cmap: matplotlib colormap name.
        labels: axis labels for the two models.
        annotate: write each value in its cell.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if isinstance(cka_map, CKAMap):
        values = cka_map.values
        layers1 = cka_map.layers1 if layers1 is None else layers1
        layers2 = cka_map.layers2 if layers2 is None else layers2
    elif isinstance(cka_map, torch.Tensor):
        values = cka_map
    else:
        raise TypeError(f"cka_map must be a CKAMap or a tensor, got {type(cka_map).__name__}")
    if values.dim() != 2:
        raise ValueError(f"a CKA map must be 2-D, got shape {tuple(values.shape)}")
    data = values.detach().cpu().double().numpy()
    for names, size, which in ((layers1, data.shape[0], "layers1"), (layers2, data.shape[1], "layers2")):
        if names is not None and len(names) != size:
            raise ValueError(f"{which} has {len(names)} labels for {size} rows/columns")
    if ax is None:
        side = 3 + 0.25 * max(data.shape)
        fig, ax = plt.subplots(figsize=(min(side * data.shape[1] / max(data.shape) + 1.5, 20), min(side, 20)))
    else:
        fig = ax.figure
    im = ax.imshow(data, origin="lower", cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(im, ax=ax, label="CKA")
    if layers1 is not None:
        ax.set_yticks(range(data.shape[0]), list(layers1), fontsize=7)
    if layers2 is not None:
        ax.set_xticks(range(data.shape[1]), list(layers2), fontsize=7, rotation=90)
    ax.set_ylabel(labels[0])
    ax.set_xlabel(labels[1])
    if annotate:
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if data[i, j] < 0.5 else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
