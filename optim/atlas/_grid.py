"""Activation atlas layout: bin a 2-D layout of activations into grid cells and average each cell."""
from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

import torch

from .._utils import check_positive

if TYPE_CHECKING:
    from ._store import ActivationStore

__all__ = [
    "normalize_grid",
    "calc_grid_indices",
    "compute_avg_cell_samples",
    "create_atlas_vectors",
    "grid_shape",
    "CellAccumulator",
]

GridSize = Union[int, Sequence[int]]
CellCoord = Tuple[int, int, int]


def grid_shape(grid_size: GridSize) -> Tuple[int, int]:
    """``grid_size`` as ``(width, height)`` in cells (an int means a square grid).

    Raises:
        ValueError: unless it is a positive int or a pair of them.
    """
    bad = ValueError(f"grid_size must be a positive int or a (width, height) pair of them, got {grid_size!r}")
    if isinstance(grid_size, numbers.Integral):
        size: Tuple[Any, ...] = (grid_size, grid_size)
    elif isinstance(grid_size, (tuple, list)):
        size = tuple(grid_size)
    else:
        raise bad
    if len(size) != 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in size):
        raise bad
    return int(size[0]), int(size[1])


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


def _check_extents(x_extent: Tuple[float, float], y_extent: Tuple[float, float]) -> None:
    for name, (lo, hi) in (("x_extent", x_extent), ("y_extent", y_extent)):
        if not hi > lo:
            raise ValueError(f"{name} must be (min, max) with max > min, got {(lo, hi)}")


def _cell_ids(
    xy_grid: torch.Tensor,
    grid_size: Tuple[int, int],
    x_extent: Tuple[float, float],
    y_extent: Tuple[float, float],
) -> torch.Tensor:
    """The cell of every point, ``x * height + y``, or -1 outside the extents (the binning of the atlas)."""
    _check_points(xy_grid)
    _check_extents(x_extent, y_extent)
    width, height = grid_size
    x_pos = (xy_grid[:, 0].double() - x_extent[0]) / (x_extent[1] - x_extent[0]) * width
    y_pos = (xy_grid[:, 1].double() - y_extent[0]) / (y_extent[1] - y_extent[0]) * height
    inside = (x_pos >= 0) & (x_pos <= width) & (y_pos >= 0) & (y_pos <= height)
    x_bin = x_pos.floor().long().clamp(0, width - 1)
    y_bin = y_pos.floor().long().clamp(0, height - 1)
    return torch.where(inside, x_bin * height + y_bin, torch.full_like(x_bin, -1))


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
    width, height = grid_shape(grid_size)
    cell = _cell_ids(xy_grid, (width, height), x_extent, y_extent)
    inside = cell >= 0

    # One stable sort groups the points of every cell, keeping their indices ascending.
    order = torch.argsort(cell, stable=True)
    counts = torch.bincount(cell[inside], minlength=width * height).tolist()
    groups = torch.split(order[int((~inside).sum()) :], counts)
    return [[groups[x * height + y] for y in range(height)] for x in range(width)]


class CellAccumulator:
    """Grid-cell averaging in one streaming pass: per-cell sums and counts, fed chunk by chunk.

    Each :meth:`add` bins a chunk's layout points into the grid (as :func:`calc_grid_indices` does) and adds
    its samples to their cells' sums (float64, on the samples' device) and counts. Sums are added row by row
    in order, so on the CPU the means are bit-identical however the rows are split into chunks (one chunk is
    the in-memory case: :func:`compute_avg_cell_samples` and :func:`create_atlas_vectors` use this class).
    Memory: ``width * height * channels`` float64 sums, whatever the number of samples.

    Args:
        grid_size: ``(width, height)`` in cells, or an int.
        x_extent: the x range the grid covers (points outside it are left out).
        y_extent: the y range the grid covers.

    Raises:
        ValueError: for a bad ``grid_size`` or extent.

    Example:
        >>> acc = CellAccumulator(2)
        >>> acc.add(torch.tensor([[0.1, 0.1], [0.9, 0.9]]), torch.tensor([[1.0, 0.0], [5.0, 5.0]]))
        >>> acc.add(torch.tensor([[0.2, 0.2]]), torch.tensor([[3.0, 2.0]]))  # the next chunk
        >>> acc.counts.view(2, 2)  # counts[x][y]
        tensor([[2, 0],
                [0, 1]])
        >>> acc.means(min_density=1)
        (tensor([[2., 1.],
                [5., 5.]]), [(0, 0, 2), (1, 1, 1)])
    """

    def __init__(
        self,
        grid_size: GridSize,
        x_extent: Tuple[float, float] = (0.0, 1.0),
        y_extent: Tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.grid_size = grid_shape(grid_size)
        _check_extents(x_extent, y_extent)
        self.x_extent, self.y_extent = tuple(x_extent), tuple(y_extent)
        width, height = self.grid_size
        self.counts = torch.zeros(width * height, dtype=torch.long)
        self.sums: Optional[torch.Tensor] = None
        self.dtype: torch.dtype = torch.float32

    def add(self, xy: torch.Tensor, samples: torch.Tensor) -> None:
        """Add one chunk: ``[n, 2]`` layout points and their ``[n, channels]`` samples (same order).

        Raises:
            ValueError: for shapes that do not match each other or the earlier chunks.
        """
        _check_points(xy)
        if not torch.is_tensor(samples) or samples.dim() != 2:
            got = tuple(samples.shape) if torch.is_tensor(samples) else type(samples).__name__
            raise ValueError(f"samples must be an [n_samples, n_channels] tensor, got {got}")
        if samples.size(0) != xy.size(0):
            raise ValueError(f"xy has {xy.size(0)} points but samples has {samples.size(0)} rows")
        self._add_cells(_cell_ids(xy, self.grid_size, self.x_extent, self.y_extent), samples)

    def _add_cells(self, cells: torch.Tensor, samples: torch.Tensor) -> None:
        if self.sums is None:
            self.sums = torch.zeros(len(self.counts), samples.size(1), dtype=torch.float64, device=samples.device)
            self.dtype = samples.dtype if samples.is_floating_point() else torch.float32
        elif samples.size(1) != self.sums.size(1):
            raise ValueError(f"samples of {samples.size(1)} channels follow samples of {self.sums.size(1)}")
        inside = cells >= 0
        cells = cells[inside]
        self.sums.index_add_(0, cells.to(self.sums.device), samples[inside.to(samples.device)].to(torch.float64))
        self.counts += torch.bincount(cells.cpu(), minlength=len(self.counts))

    def means(self, min_density: int = 8) -> Tuple[torch.Tensor, List[CellCoord]]:
        """The mean of every cell holding at least ``min_density`` samples.

        Returns:
            ``(vectors, coords)``: ``[n_cells, channels]`` means in the samples' dtype, and one
            ``(x, y, n_samples)`` per vector, in x-major order.

        Raises:
            ValueError: when no cell reaches ``min_density``, or ``min_density`` is not a positive int.
        """
        keep = (self.counts >= check_positive(min_density, "min_density")).nonzero().view(-1)
        if self.sums is None or not len(keep):
            raise ValueError(
                f"no grid cell holds min_density={min_density} samples; lower min_density or use a coarser grid"
            )
        counts = self.counts[keep]
        vectors = self.sums[keep.to(self.sums.device)] / counts.to(self.sums.device, torch.float64).unsqueeze(1)
        height = self.grid_size[1]
        coords = [(c // height, c % height, n) for c, n in zip(keep.tolist(), counts.tolist())]
        return vectors.to(self.dtype), coords


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

    The means are sums in float64 divided by counts, cast to ``raw_samples``' dtype (see
    :class:`CellAccumulator`).

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
    rows = [torch.as_tensor(grid_indices[x][y], dtype=torch.long).view(-1) for x in range(width) for y in range(height)]
    cells = torch.repeat_interleave(torch.arange(width * height), torch.tensor([len(r) for r in rows]))
    acc = CellAccumulator((width, height))
    acc._add_cells(cells, raw_samples[torch.cat(rows).to(raw_samples.device)])
    return acc.means(min_density)


def create_atlas_vectors(
    xy_grid: torch.Tensor,
    raw_activations: Union[torch.Tensor, "ActivationStore"],
    grid_size: GridSize,
    min_density: int = 8,
    normalize: bool = True,
    x_extent: Tuple[float, float] = (0.0, 1.0),
    y_extent: Tuple[float, float] = (0.0, 1.0),
) -> Tuple[torch.Tensor, List[CellCoord]]:
    """Cell direction vectors of an atlas: normalize the layout, bin it, and average every dense cell.

    Args:
        xy_grid: ``[n_points, 2]`` layout of the activations (UMAP, t-SNE, ...).
        raw_activations: ``[n_points, n_channels]`` activations in the same order, or an
            :class:`~optim.atlas.ActivationStore` of them, averaged in one streaming pass, chunk by chunk
            (:class:`CellAccumulator`; the layout is held in memory, 8 bytes a point).
        grid_size: ``(width, height)`` in cells, or an int.
        min_density: cells with fewer points are left empty.
        normalize: rescale the layout with :func:`normalize_grid` first.
        x_extent: the x range the grid covers.
        y_extent: the y range the grid covers.

    Returns:
        ``(vectors, coords)`` as in :func:`compute_avg_cell_samples`.

    Raises:
        ValueError: for mismatched shapes, a ``min_density`` that is not a positive int, or when no cell reaches
            ``min_density``.

    Example::

        >>> layout = torch.randn(500, 2)  # e.g. a UMAP layout of 500 activation samples
        >>> acts = torch.rand(500, 16)
        >>> vecs, coords = create_atlas_vectors(layout, acts, (4, 4), min_density=5)
        >>> vecs.shape  # 14 of the 16 cells hold at least 5 samples
        torch.Size([14, 16])
        >>> coords[:3]
        [(0, 0, 5), (0, 1, 11), (0, 2, 10)]
    """
    from ._store import ActivationStore

    _check_points(xy_grid)
    streamed = isinstance(raw_activations, ActivationStore)
    if not streamed and (not torch.is_tensor(raw_activations) or raw_activations.dim() != 2):
        got = tuple(raw_activations.shape) if torch.is_tensor(raw_activations) else type(raw_activations).__name__
        raise ValueError(f"raw_activations must be an [n_points, n_channels] tensor or an ActivationStore, got {got}")
    rows = len(raw_activations) if streamed else raw_activations.size(0)
    if rows != xy_grid.size(0):
        raise ValueError(f"xy_grid has {xy_grid.size(0)} points but raw_activations has {rows} rows")
    acc = CellAccumulator(grid_size, x_extent=x_extent, y_extent=y_extent)
    if normalize:
        xy_grid = normalize_grid(xy_grid)
    chunks = raw_activations.chunks() if streamed else [raw_activations]
    start = 0
    for chunk in chunks:
        acc.add(xy_grid[start : start + len(chunk)], chunk)
        start += len(chunk)
    return acc.means(min_density)
