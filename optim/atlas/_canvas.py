"""Paste atlas cell images into one grid image."""
from __future__ import annotations

from typing import Callable, List, Sequence, Tuple, Union

import torch

from ._grid import GridSize, grid_shape

__all__ = ["create_atlas", "check_cells"]


def check_cells(coords: Sequence[Sequence[int]], grid_size: GridSize) -> List[Tuple[int, int]]:
    """The ``(x, y)`` of every cell coordinate (``(x, y, ...)``), checked to lie inside ``grid_size``.

    Raises:
        ValueError: a coordinate outside the grid, or a bad ``grid_size``.

    Example:
        >>> check_cells([(0, 1, 5)], 2)
        [(0, 1)]
    """
    width, height = grid_shape(grid_size)
    cells = []
    for coord in coords:
        x, y = int(coord[0]), int(coord[1])
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"cell coordinate {(x, y)} is outside the {width}x{height} grid")
        cells.append((x, y))
    return cells


def create_atlas(
    cells: Union[torch.Tensor, Sequence[torch.Tensor]],
    coords: Sequence[Sequence[int]],
    grid_size: GridSize,
    base_tensor: Callable[..., torch.Tensor] = torch.ones,
) -> torch.Tensor:
    """Paste one image per grid cell into an atlas canvas.

    Cell ``(x, y)`` goes to column ``x`` counted from the left and row ``y`` counted from the bottom, so
    the atlas shows the layout as a plot would (y up).

    Args:
        cells: an ``[n, C, h, w]`` tensor, or a list of ``[C, h, w]`` / ``[B, C, h, w]`` tensors of equal
            shape (``B`` atlases are built side by side in the batch dimension).
        coords: one ``(x, y, ...)`` per cell, e.g. from :func:`create_atlas_vectors`.
        grid_size: ``(width, height)`` in cells, or an int.
        base_tensor: builds the empty canvas from a shape (``torch.ones`` gives white, ``torch.zeros``
            black); it is called as ``base_tensor(B, C, H, W, device=..., dtype=...)``.

    Returns:
        A ``[B, C, h * height, w * width]`` tensor.

    Raises:
        ValueError: for mismatched cells and coords, unequal cell shapes, or coordinates off the grid.

    Example::

        >>> cells = torch.zeros(3, 3, 8, 8)  # three black 8 x 8 cells
        >>> atlas = create_atlas(cells, [(0, 0), (1, 0), (2, 2)], (3, 3))  # on a white canvas
        >>> atlas.shape
        torch.Size([1, 3, 24, 24])
        >>> atlas[0, 0, ::8, ::8]  # one value per cell: 0 where a cell was pasted; the top row is y = 2
        tensor([[1., 1., 0.],
                [1., 1., 1.],
                [0., 0., 1.]])
    """
    width, height = grid_shape(grid_size)
    if torch.is_tensor(cells):
        if cells.dim() != 4:
            raise ValueError(f"a cells tensor must be [n, C, h, w], got {tuple(cells.shape)}")
        cell_list: List[torch.Tensor] = [c.unsqueeze(0) for c in cells]
    else:
        cell_list = [c.unsqueeze(0) if torch.is_tensor(c) and c.dim() == 3 else c for c in cells]
    if len(cell_list) != len(coords):
        raise ValueError(f"got {len(cell_list)} cells but {len(coords)} coords")
    if not cell_list:
        raise ValueError("create_atlas needs at least one cell")
    first = cell_list[0]
    for c in cell_list:
        if not torch.is_tensor(c) or c.dim() != 4 or c.shape != first.shape:
            got = tuple(c.shape) if torch.is_tensor(c) else type(c).__name__
            raise ValueError(f"every cell must be a [B, C, h, w] tensor of shape {tuple(first.shape)}, got {got}")

    batch, channels, cell_h, cell_w = first.shape
    canvas = base_tensor(batch, channels, cell_h * height, cell_w * width, device=first.device, dtype=first.dtype)
    for img, (x, y) in zip(cell_list, check_cells(coords, (width, height))):
        row = height - 1 - y
        canvas[:, :, row * cell_h : (row + 1) * cell_h, x * cell_w : (x + 1) * cell_w] = img.to(canvas)
    return canvas
