"""The activation atlas recipe: lay out activations, average grid cells, render every cell's direction."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from .._utils import check_positive, named_module_map, resolve_module
from ..optimization.defaults import DEFAULT_LR, DEFAULT_STEPS, OptimizerArg, default_image, model_input_channels
from ..optimization.progress import StepCallback
from ._canvas import check_cells, create_atlas
from ._grid import GridSize, create_atlas_vectors, grid_shape
from ._store import ActivationStore

__all__ = ["activation_atlas", "atlas_layout", "render_atlas", "DEFAULT_FIT_SAMPLE"]

# Lucid's activation atlas layout settings (Carter et al. 2019).
_UMAP_DEFAULTS: Dict[str, Any] = {"n_neighbors": 20, "min_dist": 0.01, "metric": "cosine"}

#: vectors of a store that a reducer without ``partial_fit`` (UMAP, openTSNE, PCA, ...) is fitted on
DEFAULT_FIT_SAMPLE = 50_000

Samples = Union[torch.Tensor, ActivationStore]


def _as_samples(activations: Samples) -> Samples:
    """``[N, C]`` or ``[N, C, H, W]`` activations as ``[samples, C]`` (every spatial position a sample)."""
    if isinstance(activations, ActivationStore):
        return activations
    if not torch.is_tensor(activations) or activations.dim() not in (2, 4):
        shape = tuple(activations.shape) if torch.is_tensor(activations) else type(activations).__name__
        raise ValueError(f"dataset_activations must be [N, C] or [N, C, H, W], got {shape}")
    if activations.dim() == 4:
        activations = activations.permute(0, 2, 3, 1).reshape(-1, activations.size(1))
    return activations.detach()


def _check_layer(model: nn.Module, layer: Union[str, nn.Module]) -> None:
    """Refuse an unknown layer name before the layout and the renders. The names a render gives its image and
    transforms (``"input_param"``, ``"transform.*"``; see ``InputOptimization``) resolve inside the render."""
    if isinstance(layer, str) and layer.split(".")[0] in ("input_param", "transform") and layer not in \
            named_module_map(model):
        return
    resolve_module(model, layer)


def atlas_layout(
    samples: Samples,
    reducer: Any = "UMAP",
    *,
    fit_sample: Optional[int] = None,
    sample_seed: int = 0,
    **reducer_kwargs: Any,
) -> torch.Tensor:
    """A 2-D layout of ``[N, C]`` activation samples, in memory or streamed from an :class:`ActivationStore`.

    A tensor is laid out with ``fit_transform`` (all of it), or, with ``fit_sample``, by fitting on that many
    random rows and transforming all. A store is laid out in two streaming passes, one chunk in memory at a
    time: the fit, then ``transform`` chunk by chunk. The fit is

    - **incremental** (``partial_fit`` over every chunk) for reducers that have it, scikit-learn's
      ``"IncrementalPCA"`` and ``"MiniBatchNMF"``, unless ``fit_sample`` is given;
    - **on a sample** of ``fit_sample`` vectors (default :data:`DEFAULT_FIT_SAMPLE`, drawn uniformly with
      ``sample_seed``) for the others: ``"UMAP"``, ``"openTSNE"`` (t-SNE that embeds new points), ``"PCA"``, ...
      scikit-learn's ``"TSNE"`` cannot embed new points, so it lays out tensors only. umap-learn fitted on
      fewer than 4,096 vectors transforms by brute-force distances in Python (about 100x slower): fit it on
      more.

    Args:
        samples: ``[N, C]`` activations, or a store of them.
        reducer: ``"UMAP"`` (default settings ``n_neighbors=20, min_dist=0.01, metric="cosine"``, as in
            Lucid), ``"TSNE"``, ``"openTSNE"``, any :class:`~optim.reducer.ChannelReducer` algorithm, or a
            ``ChannelReducer``.
        fit_sample: fit on this many random vectors, then transform all of them.
        sample_seed: the seed of that sample.
        reducer_kwargs: keyword arguments for the algorithm (override the UMAP defaults).

    Returns:
        The ``[N, 2]`` layout: on ``samples``' device for a tensor; a float32 CPU tensor for a store (held in
        memory: 8 bytes a vector).

    Raises:
        ValueError: for a layout that is not 2-D, ``reducer_kwargs`` with a ``ChannelReducer``, or an
            ``n_components`` among them (a layout is 2-D).
        TypeError: for a store (or ``fit_sample``) with a reducer that cannot ``transform`` new points.

    Example:
        >>> xy = atlas_layout(torch.rand(128, 16), "TSNE", perplexity=10.0)
        >>> xy.shape
        torch.Size([128, 2])
        >>> store = ActivationStore.write("acts", [torch.rand(1000, 16)], chunk_size=256)
        >>> atlas_layout(store, "IncrementalPCA").shape  # partial_fit over 4 chunks, then 4 transforms
        torch.Size([1000, 2])
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
        if "n_components" in reducer_kwargs:
            raise ValueError(f"reducer_kwargs cannot set n_components (got {reducer_kwargs['n_components']!r}): an "
                             "atlas layout is 2-D")
        kwargs = {**_UMAP_DEFAULTS, **reducer_kwargs} if reducer == "UMAP" else reducer_kwargs
        channel_reducer = ChannelReducer(2, reducer, **kwargs)
    if fit_sample is not None and (isinstance(fit_sample, bool) or not isinstance(fit_sample, int) or fit_sample < 1):
        raise ValueError(f"fit_sample must be a positive int or None, got {fit_sample!r}")
    if isinstance(samples, ActivationStore):
        layout = _store_layout(samples, channel_reducer, fit_sample, sample_seed)
    elif fit_sample is not None and fit_sample < len(samples):
        _require_transform(channel_reducer, "fit_sample")
        rows = torch.randperm(len(samples), generator=torch.Generator().manual_seed(sample_seed))[:fit_sample]
        layout = channel_reducer.fit(samples[rows.sort().values.to(samples.device)]).transform(samples)
    else:
        layout = channel_reducer.fit_transform(samples)
    _check_layout(layout)
    return layout


def _check_layout(layout: torch.Tensor) -> None:
    if layout.dim() != 2 or layout.size(1) != 2:
        raise ValueError(f"the reducer must give a 2-D layout, got shape {tuple(layout.shape)}")


def _require_transform(channel_reducer: Any, why: str) -> None:
    if not hasattr(channel_reducer.reducer, "transform"):
        raise TypeError(
            f"{type(channel_reducer.reducer).__name__} cannot embed new points (it has no transform()), which "
            f"{why} needs; use 'UMAP', 'openTSNE', 'IncrementalPCA', 'MiniBatchNMF' or 'PCA'"
        )


def _fit_blocks(store: ActivationStore, min_rows: int) -> Any:
    """The store's chunks for ``partial_fit``; a last chunk under ``min_rows`` rows is joined to the one before."""
    previous = None
    for chunk in store.chunks():
        if previous is not None and len(chunk) < min_rows:
            chunk = torch.cat([previous, chunk])
        elif previous is not None:
            yield previous
        previous = chunk
    if previous is not None:
        yield previous


def _store_layout(store: ActivationStore, channel_reducer: Any, fit_sample: Optional[int], seed: int) -> torch.Tensor:
    """Fit on the store (incrementally, or on a sample), then transform it chunk by chunk."""
    _require_transform(channel_reducer, "laying out an ActivationStore")
    if fit_sample is None and hasattr(channel_reducer.reducer, "partial_fit"):
        channel_reducer.partial_fit(_fit_blocks(store, max(int(channel_reducer.n_components), 1)))
    else:
        channel_reducer.fit(store.sample(min(fit_sample or DEFAULT_FIT_SAMPLE, len(store)), seed=seed))
    layout = torch.empty(len(store), 2)
    start = 0
    for chunk in store.chunks():
        part = channel_reducer.transform(chunk)
        _check_layout(part)
        layout[start : start + len(chunk)] = part
        start += len(chunk)
    return layout


def _direction_loss(layer: Union[str, nn.Module], vec: torch.Tensor, batch_index: int, cossim_pow: float) -> Any:
    from optim.loss import Direction

    return Direction(layer, vec, cossim_pow=cossim_pow, batch_index=batch_index)


def activation_atlas(
    model: nn.Module,
    layer: Union[str, nn.Module],
    dataset_activations: Samples,
    grid_size: GridSize = 8,
    reducer: Any = "UMAP",
    reducer_kwargs: Optional[Dict[str, Any]] = None,
    layout: Optional[torch.Tensor] = None,
    min_density: int = 8,
    image_size: Union[None, int, Sequence[int]] = None,
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
    fit_sample: Optional[int] = None,
    average: Optional[float] = None,
) -> torch.Tensor:
    """Render an activation atlas of ``layer`` (Carter et al., "Activation Atlas", Distill 2019).

    The activations are laid out in 2-D (UMAP by default), binned into a ``grid_size`` grid, and every cell
    holding at least ``min_density`` samples is averaged into a direction. The directions are rendered by the
    render core's batched render, :func:`optim.optimization.render_batches`, with its defaults
    (:mod:`optim.optimization.defaults`: :func:`~optim.optimization.default_image`, the default transforms,
    AdamW at ``DEFAULT_LR``): a ``Direction`` loss per cell, ``batch_size`` cells per optimization, one progress
    bar over all of them, and one random stream per cell keyed by its grid position, so a cell's render
    depends on the seed and the cell, not on ``batch_size`` or the other cells. The renders are pasted into one
    image at their cells' positions (y up).

    Args:
        model: the network.
        layer: the layer the activations come from (a module or dotted name).
        dataset_activations: ``[N, C]`` or ``[N, C, H, W]`` activations of ``layer`` over a dataset (e.g.
            from ``opt.models.collect_activations``); each spatial position is one sample. Or an
            :class:`ActivationStore` (from :func:`stream_activations`), for more vectors than memory holds:
            laid out and cell-averaged in streaming passes (see :func:`atlas_layout`).
        grid_size: ``(width, height)`` in cells, or an int.
        reducer: the layout algorithm, ``"UMAP"`` (needs the ``umap`` extra), ``"TSNE"``, ... (see
            :func:`atlas_layout`). Ignored when ``layout`` is given.
        reducer_kwargs: keyword arguments for the layout algorithm.
        layout: a precomputed ``[samples, 2]`` layout, skipping the reducer.
        min_density: cells with fewer samples stay empty.
        image_size: the size of each cell's render, an int or ``(h, w)``; ``None``: the model's native size, else
            ``DEFAULT_SIZE`` (:func:`~optim.models.preprocess.render_inputs`, as ``render_vis``).
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
        optimizer: an optimizer class or a function ``params -> optimizer`` (default AdamW with weight decay).
        preprocess: applied after the transforms and before the model (``None``: the normalization the model
            declares, as ``render_vis``; ``nn.Identity()``: none).
        seed: seed for a reproducible atlas (``None``: drawn from torch's global generator).
        callback: ``callback(step, loss, images)`` after every step of every batch.
        fit_sample: fit the layout on this many random vectors and transform the rest (see
            :func:`atlas_layout`; a store's default for reducers without ``partial_fit``:
            :data:`DEFAULT_FIT_SAMPLE`).
        average: iterate averaging of each cell's render, as :func:`~optim.render.render_vis` takes it (``None``:
            its rule, an average weighted towards the last sixth of the steps).

    Returns:
        The atlas, an ``ImageTensor`` of shape ``[1, C, h * height, w * width]`` (``C``: the model's input
        channels, :func:`~optim.optimization.model_input_channels`; 3 for RGB models).

    Raises:
        ValueError: for bad shapes, a bad ``batch_size``, ``min_density``, ``grid_size`` or ``layout``, or an
            unknown ``layer`` (all checked before the layout is computed), or when no cell reaches ``min_density``.

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
    # everything checkable is checked before the layout and the renders, which take minutes at real sizes
    check_positive(batch_size, "batch_size")
    check_positive(min_density, "min_density")
    grid_shape(grid_size)
    _check_layer(model, layer)
    if layout is not None and not (torch.is_tensor(layout) and layout.dim() == 2 and layout.size(1) == 2):
        got = tuple(layout.shape) if torch.is_tensor(layout) else type(layout).__name__
        raise ValueError(f"layout must be an [n_samples, 2] tensor (torch.from_numpy(array) for a NumPy layout), "
                         f"got {got}")
    samples = _as_samples(dataset_activations)
    if layout is None:
        layout = atlas_layout(samples, reducer, fit_sample=fit_sample, **(reducer_kwargs or {}))
    vectors, coords = create_atlas_vectors(layout, samples, grid_size, min_density=min_density)
    return render_atlas(
        model, layer, vectors, coords, grid_size, image_size=image_size, batch_size=batch_size, steps=steps,
        lr=lr, transforms=transforms, cossim_pow=cossim_pow, loss_fn=loss_fn, base_tensor=base_tensor,
        progress=progress, optimizer=optimizer, preprocess=preprocess, seed=seed, callback=callback, average=average,
    )


def render_atlas(
    model: nn.Module,
    layer: Union[str, nn.Module],
    vectors: torch.Tensor,
    coords: Sequence[Sequence[int]],
    grid_size: GridSize,
    *,
    image_size: Union[None, int, Sequence[int]] = None,
    batch_size: int = 16,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    transforms: Optional[Union[nn.Module, Sequence[nn.Module]]] = None,
    cossim_pow: float = 0.0,
    loss_fn: Optional[Callable[[Union[str, nn.Module], torch.Tensor, int], Any]] = None,
    base_tensor: Callable[..., torch.Tensor] = torch.ones,
    progress: bool = True,
    optimizer: OptimizerArg = None,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    seed: Optional[int] = None,
    callback: Optional[StepCallback] = None,
    average: Optional[float] = None,
) -> torch.Tensor:
    """Render the cell directions of an atlas and paste them at their cells: :func:`activation_atlas`'s last step.

    For cell vectors computed apart (e.g. :func:`create_atlas_vectors` over an :class:`ActivationStore`).
    Every argument after ``grid_size`` means what it means in :func:`activation_atlas`.

    Args:
        model: the network.
        layer: the layer the vectors live in.
        vectors: ``[n_cells, C]`` directions.
        coords: one ``(x, y, ...)`` per vector.
        grid_size: ``(width, height)`` in cells, or an int.

    Returns:
        The atlas, an ``ImageTensor`` of shape ``[1, C, h * height, w * width]`` (``C``: the model's input
        channels, :func:`~optim.optimization.model_input_channels`; 3 for RGB models).

    Raises:
        ValueError: for a bad ``batch_size`` or ``grid_size``, vectors and coords of different lengths, a coordinate
            outside the grid, or an unknown ``layer`` (all before any render).

    Example:
        >>> vectors = torch.rand(2, 112)  # two directions of blocks.10, in cells (0, 0) and (1, 1)
        >>> atlas = render_atlas(model, "blocks.10", vectors, [(0, 0), (1, 1)], 2, image_size=32, steps=2,
        ...                      progress=False)
        >>> atlas.shape, bool((atlas[..., :32, :32] == 1).all())  # the empty top-left cell stays white
        (torch.Size([1, 3, 64, 64]), True)
    """
    from optim.images import ImageTensor
    from optim.optimization.batched import render_batches

    check_positive(batch_size, "batch_size")
    if len(vectors) != len(coords):
        raise ValueError(f"got {len(vectors)} vectors but {len(coords)} coords")
    check_cells(coords, grid_size)  # before the renders
    _check_layer(model, layer)
    from optim.models.preprocess import render_inputs

    inputs = render_inputs(model, image_size, preprocess, transforms)  # native size and normalization
    size, preprocess = inputs.size, inputs.preprocess
    in_channels = model_input_channels(model)
    make_loss = loss_fn or (lambda target, vec, index: _direction_loss(target, vec, index, cossim_pow))
    objectives = [lambda i, vec=vec: make_loss(layer, vec, i) for vec in vectors]
    renders = render_batches(
        model,
        objectives,
        [(int(c[0]), int(c[1])) for c in coords],  # a cell's random stream: its grid position
        lambda n: default_image(size, channels=in_channels, batch=n),
        batch_size=batch_size,
        steps=steps,
        transforms=transforms,
        preprocess=preprocess,
        optimizer=optimizer,
        lr=lr,
        progress=progress,
        seed=seed,
        callback=callback,
        average=average,
    )
    atlas = create_atlas(renders, coords, grid_size, base_tensor=base_tensor)
    return ImageTensor(atlas)
