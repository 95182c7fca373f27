"""The activation atlas recipe: lay out activations, average grid cells, render every cell's direction."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..optimization.defaults import DEFAULT_LR, DEFAULT_SIZE, DEFAULT_STEPS, OptimizerArg, default_image
from ..optimization.progress import StepCallback
from ._canvas import create_atlas
from ._grid import GridSize, create_atlas_vectors

__all__ = ["activation_atlas", "atlas_layout"]

# Lucid's activation atlas layout settings (Carter et al. 2019).
_UMAP_DEFAULTS: Dict[str, Any] = {"n_neighbors": 20, "min_dist": 0.01, "metric": "cosine"}


def _as_samples(activations: torch.Tensor) -> torch.Tensor:
    """``[N, C]`` or ``[N, C, H, W]`` activations as ``[samples, C]`` (every spatial position a sample)."""
    if not torch.is_tensor(activations) or activations.dim() not in (2, 4):
        shape = tuple(activations.shape) if torch.is_tensor(activations) else type(activations).__name__
        raise ValueError(f"dataset_activations must be [N, C] or [N, C, H, W], got {shape}")
    if activations.dim() == 4:
        activations = activations.permute(0, 2, 3, 1).reshape(-1, activations.size(1))
    return activations.detach()


def atlas_layout(samples: torch.Tensor, reducer: Any = "UMAP", **reducer_kwargs: Any) -> torch.Tensor:
    """A 2-D layout of ``[N, C]`` activation samples.

    Args:
        samples: ``[N, C]`` activations.
        reducer: ``"UMAP"`` (default settings ``n_neighbors=20, min_dist=0.01, metric="cosine"``, as in
            Lucid), ``"TSNE"``, any :class:`~optim.reducer.ChannelReducer` algorithm, or a ``ChannelReducer``.
        reducer_kwargs: keyword arguments for the algorithm (override the UMAP defaults).

    Returns:
        The ``[N, 2]`` layout on ``samples``' device.

    Example::

        >>> xy = atlas_layout(torch.rand(128, 16), "TSNE", perplexity=10.0)
        >>> xy.shape
        torch.Size([128, 2])
    """
    from optim.reducer import ChannelReducer

    if isinstance(reducer, ChannelReducer):
        if reducer_kwargs:
            raise ValueError(
                f"reducer_kwargs {sorted(reducer_kwargs)} cannot be applied to a ChannelReducer instance; "
                "set them on its estimator"
            )
        channel_reducer = reducer
    else:
        kwargs = {**_UMAP_DEFAULTS, **reducer_kwargs} if reducer == "UMAP" else reducer_kwargs
        channel_reducer = ChannelReducer(2, reducer, **kwargs)
    layout = channel_reducer.fit_transform(samples)
    if layout.dim() != 2 or layout.size(1) != 2:
        raise ValueError(f"the reducer must give a 2-D layout, got shape {tuple(layout.shape)}")
    return layout


def _direction_loss(layer: Union[str, nn.Module], vec: torch.Tensor, batch_index: int, cossim_pow: float) -> Any:
    from optim.loss import Direction

    return Direction(layer, vec, cossim_pow=cossim_pow, batch_index=batch_index)


def activation_atlas(
    model: nn.Module,
    layer: Union[str, nn.Module],
    dataset_activations: torch.Tensor,
    grid_size: GridSize = 8,
    reducer: Any = "UMAP",
    reducer_kwargs: Optional[Dict[str, Any]] = None,
    layout: Optional[torch.Tensor] = None,
    min_density: int = 8,
    image_size: Union[int, Sequence[int]] = DEFAULT_SIZE,
    batch_size: int = 16,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    transforms: Optional[Union[nn.Module, Sequence[nn.Module]]] = None,
    cossim_pow: float = 0.0,
    loss_fn: Optional[Callable[[Union[str, nn.Module], torch.Tensor, int], Any]] = None,
    base_tensor: Callable[..., torch.Tensor] = torch.ones,
    progress: bool = True,
    *,
    optimizer: OptimizerArg = None,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    seed: Optional[int] = None,
    callback: Optional[StepCallback] = None,
) -> torch.Tensor:
    """Render an activation atlas of ``layer`` (Carter et al., "Activation Atlas", Distill 2019).

    The activations are laid out in 2-D (UMAP by default), binned into a ``grid_size`` grid, and every cell
    holding at least ``min_density`` samples is averaged into a direction. The directions are rendered by the
    render core's batched render, :func:`optim.optimization.render_batches`, with its defaults
    (:mod:`optim.optimization.defaults`: :func:`~optim.optimization.default_image`, the default transforms,
    Adam at ``DEFAULT_LR``): a ``Direction`` loss per cell, ``batch_size`` cells per optimization, one progress
    bar over all of them, and one random stream per cell keyed by its grid position, so a cell's render
    depends on the seed and the cell, not on ``batch_size`` or the other cells. The renders are pasted into one
    image at their cells' positions (y up).

    Args:
        model: the network.
        layer: the layer the activations come from (a module or dotted name).
        dataset_activations: ``[N, C]`` or ``[N, C, H, W]`` activations of ``layer`` over a dataset (e.g.
            from ``opt.models.collect_activations``); each spatial position is one sample.
        grid_size: ``(width, height)`` in cells, or an int.
        reducer: the layout algorithm, ``"UMAP"`` (needs the ``umap`` extra), ``"TSNE"``, ... (see
            :func:`atlas_layout`). Ignored when ``layout`` is given.
        reducer_kwargs: keyword arguments for the layout algorithm.
        layout: a precomputed ``[samples, 2]`` layout, skipping the reducer.
        min_density: cells with fewer samples stay empty.
        image_size: the size of each cell's render, an int or ``(h, w)``.
        batch_size: cells rendered per optimization.
        steps: optimization steps per cell.
        lr: the learning rate.
        transforms: robustness transforms, as ``render_vis`` takes them (``None``: the default transforms,
            ``[]``: none).
        cossim_pow: the ``Direction`` loss's cosine similarity power (higher: match the direction more
            than the magnitude).
        loss_fn: ``loss_fn(layer, vec, batch_index) -> Loss`` replaces the ``Direction`` loss.
        base_tensor: the empty canvas (``torch.ones``: white).
        progress: one progress bar over all batches.
        optimizer: an optimizer class or a function ``params -> optimizer`` (default Adam).
        preprocess: applied after the transforms and before the model (e.g. input normalization).
        seed: seed for a reproducible atlas (``None``: drawn from torch's global generator).
        callback: ``callback(step, loss, images)`` after every step of every batch.

    Returns:
        The atlas, an ``ImageTensor`` of shape ``[1, 3, h * height, w * width]``.

    Raises:
        ValueError: for bad shapes, a bad ``batch_size``, or when no cell reaches ``min_density``.

    Example::

        >>> acts = opt.models.collect_activations(model, "blocks.10", torch.rand(8, 3, 64, 64))["blocks.10"]
        >>> layout = atlas_layout(acts.permute(0, 2, 3, 1).reshape(-1, 112), "PCA")  # or "UMAP" (default)
        >>> atlas = activation_atlas(model, "blocks.10", acts, grid_size=2, layout=layout, min_density=4,
        ...                          image_size=32, steps=4, progress=False)  # tiny budget; real atlases use 128+
        >>> type(atlas).__name__, atlas.shape
        ('ImageTensor', torch.Size([1, 3, 64, 64]))
        >>> atlas.export("atlas.png")
        [PosixPath('atlas.png')]
    """
    from optim.images import ImageTensor
    from optim.optimization.batched import render_batches

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    samples = _as_samples(dataset_activations)
    if layout is None:
        layout = atlas_layout(samples, reducer, **(reducer_kwargs or {}))
    vectors, coords = create_atlas_vectors(layout, samples, grid_size, min_density=min_density)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    make_loss = loss_fn or (lambda target, vec, index: _direction_loss(target, vec, index, cossim_pow))
    objectives = [lambda i, vec=vec: make_loss(layer, vec, i) for vec in vectors]
    renders = render_batches(
        model,
        objectives,
        [(int(x), int(y)) for x, y, _ in coords],  # a cell's random stream: its grid position
        lambda n: default_image(size, batch=n),
        batch_size=batch_size,
        steps=steps,
        transforms=transforms,
        preprocess=preprocess,
        optimizer=optimizer,
        lr=lr,
        progress=progress,
        seed=seed,
        callback=callback,
    )
    atlas = create_atlas(renders, coords, grid_size, base_tensor=base_tensor)
    return ImageTensor(atlas)
