"""Activation atlas layout: bin a 2-D layout of activations into grid cells and average each cell."""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import torch

__all__ = ["normalize_grid", "calc_grid_indices", "compute_avg_cell_samples", "create_atlas_vectors", "grid_shape"]

GridSize = Union[int, Sequence[int]]
CellCoord = Tuple[int, int, int]


def grid_shape(grid_size: GridSize) -> Tuple[int, int]:
    """``grid_size`` as ``(width, height)`` in cells (an int means a square grid).

    Raises:
        ValueError: unless it is a positive int or a pair of them.
    """
    size = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"grid_size must be a positive int or a (width, height) pair of them, got {grid_size!r}")
    return size[0], size[1]


def _check_points(xy_grid: torch.Tensor) -> None:
    if not torch.is_tensor(xy_grid) or xy_grid.dim() != 2 or xy_grid.size(1) != 2:
        shape = tuple(xy_grid.shape) if torch.is_tensor(xy_grid) else type(xy_grid).__name__
        raise ValueError(f"xy_grid must be an [n_points, 2] tensor, got {shape}")


def normalize_grid(
    xy_grid: torch.Tensor,
    min_percentile: float = 0.01,
    max_percentile: float = 0.99,
    relative_margin: float = 0.1,
) -> torch.Tensor:
    """Clip outliers of a 2-D layout and rescale each axis to ``[0, 1]`` (Lucid's ``normalize_layout``).

    Each axis is clipped to its ``[min_percentile, max_percentile]`` quantile range widened by
    ``relative_margin`` of that range on both sides, then shifted and scaled so it spans ``[0, 1]``.

    Args:
        xy_grid: ``[n_points, 2]`` coordinates (e.g. a UMAP layout).
        min_percentile: lower quantile, in ``[0, 1]``.
        max_percentile: upper quantile, in ``[0, 1]`` and above ``min_percentile``.
        relative_margin: how far beyond the quantiles points are kept, relative to their spread.

    Returns:
        The ``[n_points, 2]`` normalized coordinates (an axis with no spread becomes all zeros).

    Raises:
        ValueError: for a tensor that is not ``[n, 2]`` or bad percentiles.

    Example::

        >>> xy = normalize_grid(torch.randn(1000, 2))
        >>> xy.shape, float(xy.min()), float(xy.max())
        (torch.Size([1000, 2]), 0.0, 1.0)
    """
    _check_points(xy_grid)
    if not 0.0 <= min_percentile < max_percentile <= 1.0:
        raise ValueError(
            "percentiles need 0 <= min_percentile < max_percentile <= 1, "
            f"got min_percentile={min_percentile}, max_percentile={max_percentile}"
        )
    xy = xy_grid.float() if not xy_grid.is_floating_point() else xy_grid
    mins = torch.quantile(xy, min_percentile, dim=0)
    maxs = torch.quantile(xy, max_percentile, dim=0)
    margin = relative_margin * (maxs - mins)
    clipped = torch.max(torch.min(xy, maxs + margin), mins - margin)
    shifted = clipped - clipped.min(0).values
    span = shifted.max(0).values
    return shifted / torch.where(span > 0, span, torch.ones_like(span))


def calc_grid_indices(
    xy_grid: torch.Tensor,
    grid_size: GridSize,
    x_extent: Tuple[float, float] = (0.0, 1.0),
    y_extent: Tuple[float, float] = (0.0, 1.0),
) -> List[List[torch.Tensor]]:
    """Group point indices by the grid cell each point falls in.

    The extents are split into ``width x height`` equal cells. Cells are half-open ``[lo, hi)`` except the
    last one on each axis, which also takes points exactly on the upper extent, so every point inside the
    extents lands in exactly one cell; points outside are left out.

    Args:
        xy_grid: ``[n_points, 2]`` coordinates.
        grid_size: ``(width, height)`` in cells, or an int for a square grid.
        x_extent: the ``(min, max)`` x range the grid covers.
        y_extent: the ``(min, max)`` y range the grid covers.

    Returns:
        ``indices[x][y]``: a 1-D long tensor of the indices of the points in cell ``(x, y)`` (possibly empty),
        ascending.

    Raises:
        ValueError: for a bad ``xy_grid``, ``grid_size`` or an empty extent.

    Example::

        >>> idx = calc_grid_indices(torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.2, 0.7]]), (2, 2))
        >>> idx[0][1]  # the points in cell x = 0, y = 1 (top left)
        tensor([0, 2])
        >>> idx[1][0], idx[1][1]
        (tensor([1]), tensor([], dtype=torch.int64))
    """
    _check_points(xy_grid)
    width, height = grid_shape(grid_size)
    for name, (lo, hi) in (("x_extent", x_extent), ("y_extent", y_extent)):
        if not hi > lo:
            raise ValueError(f"{name} must be (min, max) with max > min, got {(lo, hi)}")
    x_pos = (xy_grid[:, 0].double() - x_extent[0]) / (x_extent[1] - x_extent[0]) * width
    y_pos = (xy_grid[:, 1].double() - y_extent[0]) / (y_extent[1] - y_extent[0]) * height
    inside = (x_pos >= 0) & (x_pos <= width) & (y_pos >= 0) & (y_pos <= height)
    x_bin = x_pos.floor().long().clamp(0, width - 1)
    y_bin = y_pos.floor().long().clamp(0, height - 1)
    cell = torch.where(inside, x_bin * height + y_bin, torch.full_like(x_bin, -1))

    # One stable sort groups the points of every cell, keeping their indices ascending.
    order = torch.argsort(cell, stable=True)
    counts = torch.bincount(cell[inside], minlength=width * height).tolist()
    groups = torch.split(order[int((~inside).sum()) :], counts)
    return [[groups[x * height + y] for y in range(height)] for x in range(width)]


def compute_avg_cell_samples(
    grid_indices: List[List[torch.Tensor]],
    raw_samples: torch.Tensor,
    grid_size: GridSize,
    min_density: int = 8,
) -> Tuple[torch.Tensor, List[CellCoord]]:
    """Average the samples of every grid cell holding at least ``min_density`` of them.

    Carter et al., "Activation Atlas", Distill 2019.

    Args:
        grid_indices: ``indices[x][y]`` from :func:`calc_grid_indices`.
        raw_samples: ``[n_samples, n_channels]`` activations (or attributions) in the layout's order.
        grid_size: ``(width, height)`` in cells, or an int.
        min_density: cells with fewer samples are left empty.

    Returns:
        ``(vectors, coords)``: the ``[n_cells, n_channels]`` cell means, and one ``(x, y, n_samples)`` per
        vector, in x-major order.

    Raises:
        ValueError: for mismatched shapes, or when no cell reaches ``min_density``.

    Example::

        >>> xy = torch.tensor([[0.1, 0.1], [0.2, 0.2], [0.9, 0.9]])
        >>> acts = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
        >>> vecs, coords = compute_avg_cell_samples(calc_grid_indices(xy, 2), acts, 2, min_density=1)
        >>> vecs
        tensor([[2., 1.],
                [5., 5.]])
        >>> coords  # (x, y, number of samples)
        [(0, 0, 2), (1, 1, 1)]
    """
    width, height = grid_shape(grid_size)
    if not torch.is_tensor(raw_samples) or raw_samples.dim() != 2:
        got = tuple(raw_samples.shape) if torch.is_tensor(raw_samples) else type(raw_samples).__name__
        raise ValueError(f"raw_samples must be an [n_samples, n_channels] tensor, got {got}")
    if len(grid_indices) != width or any(len(column) != height for column in grid_indices):
        raise ValueError(f"grid_indices must be {width} lists of {height} index tensors (indices[x][y])")
    vectors, coords = [], []
    for x in range(width):
        for y in range(height):
            idx = grid_indices[x][y]
            if len(idx) >= min_density and len(idx) > 0:
                vectors.append(raw_samples[idx.to(raw_samples.device)].mean(0))
                coords.append((x, y, len(idx)))
    if not vectors:
        raise ValueError(
            f"no grid cell holds min_density={min_density} samples; lower min_density or use a coarser grid"
        )
    return torch.stack(vectors), coords


def create_atlas_vectors(
    xy_grid: torch.Tensor,
    raw_activations: torch.Tensor,
    grid_size: GridSize,
    min_density: int = 8,
    normalize: bool = True,
    x_extent: Tuple[float, float] = (0.0, 1.0),
    y_extent: Tuple[float, float] = (0.0, 1.0),
) -> Tuple[torch.Tensor, List[CellCoord]]:
    """Cell direction vectors of an atlas: normalize the layout, bin it, and average every dense cell.

    Args:
        xy_grid: ``[n_points, 2]`` layout of the activations (UMAP, t-SNE, ...).
        raw_activations: ``[n_points, n_channels]`` activations in the same order.
        grid_size: ``(width, height)`` in cells, or an int.
        min_density: cells with fewer points are left empty.
        normalize: rescale the layout with :func:`normalize_grid` first.
        x_extent: the x range the grid covers.
        y_extent: the y range the grid covers.

    Returns:
        ``(vectors, coords)`` as in :func:`compute_avg_cell_samples`.

    Raises:
        ValueError: for mismatched shapes or when no cell reaches ``min_density``.

    Example::

        >>> layout = torch.randn(500, 2)  # e.g. a UMAP layout of 500 activation samples
        >>> acts = torch.rand(500, 16)
        >>> vecs, coords = create_atlas_vectors(layout, acts, (4, 4), min_density=5)
        >>> vecs.shape  # 14 of the 16 cells hold at least 5 samples
        torch.Size([14, 16])
        >>> coords[:3]
        [(0, 0, 5), (0, 1, 11), (0, 2, 10)]
    """
    _check_points(xy_grid)
    if not torch.is_tensor(raw_activations) or raw_activations.dim() != 2:
        got = tuple(raw_activations.shape) if torch.is_tensor(raw_activations) else type(raw_activations).__name__
        raise ValueError(f"raw_activations must be an [n_points, n_channels] tensor, got {got}")
    if raw_activations.size(0) != xy_grid.size(0):
        raise ValueError(
            f"xy_grid has {xy_grid.size(0)} points but raw_activations has {raw_activations.size(0)} rows"
        )
    if normalize:
        xy_grid = normalize_grid(xy_grid)
    indices = calc_grid_indices(xy_grid, grid_size, x_extent=x_extent, y_extent=y_extent)
    return compute_avg_cell_samples(indices, raw_activations, grid_size, min_density)
