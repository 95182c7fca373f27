"""Showing and saving image batches: a torch-only grid, a labelled matplotlib grid, PNG export."""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch

__all__ = ["make_grid_image", "show", "save_tensor_as_image"]

Images = Union[torch.Tensor, Sequence[torch.Tensor]]


@torch.jit.unused
def _check_grid_args(images_per_row: int, padding: int) -> None:
    # eager-mode type checks (a scripted call has them from the annotations)
    for name, value in (("images_per_row", images_per_row), ("padding", padding)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")


@torch.jit.unused
def _plain_tensor(x: torch.Tensor) -> torch.Tensor:
    # an ImageTensor would route every op below through its Python dispatch; the grid is a plain tensor
    return x if type(x) is torch.Tensor else x.as_subclass(torch.Tensor)


def make_grid_image(
    tiles: Union[torch.Tensor, List[torch.Tensor]],
    images_per_row: int = 4,
    padding: int = 2,
    pad_value: float = 0.0,
) -> torch.Tensor:
    """Lay images out as one image, row by row, with ``padding`` pixels around every tile.

    Compiles with ``torch.jit.script`` (as captum's does).

    Args:
        tiles: an NCHW (or a single CHW) tensor, or a list of CHW / NCHW tensors (concatenated along the
            batch; they must share C, H and W).
        images_per_row: tiles per row (fewer when the batch is smaller).
        padding: pixels between tiles and around the border.
        pad_value: value of the padding pixels.

    Returns:
        A ``[1, C, rows * (H + padding) + padding, cols * (W + padding) + padding]`` tensor.

    Raises:
        ValueError: a tensor that is not CHW/NCHW, an empty list, ``images_per_row < 1`` or ``padding < 0``.

    Example::

        >>> grid = make_grid_image(torch.rand(6, 3, 8, 8), images_per_row=3)
        >>> grid.shape
        torch.Size([1, 3, 22, 32])
        >>> make_grid_image([torch.rand(3, 8, 8), torch.rand(2, 3, 8, 8)], images_per_row=3).shape
        torch.Size([1, 3, 12, 32])
        >>> torch.jit.script(make_grid_image)(torch.ones(2, 1, 2, 2), 2, 1).shape
        torch.Size([1, 1, 4, 7])
    """
    if isinstance(tiles, torch.Tensor):
        batch = tiles
    else:
        if len(tiles) == 0:
            raise ValueError("tiles is an empty list: give at least one CHW or NCHW tensor")
        parts: List[torch.Tensor] = []
        for tile in tiles:
            if tile.dim() == 3:
                parts.append(tile.unsqueeze(0))
            elif tile.dim() == 4:
                parts.append(tile)
            else:
                raise ValueError("every tile must be a CHW or NCHW tensor, got " + str(tile.dim()) + " dimensions")
        batch = torch.cat(parts, 0)
    if not torch.jit.is_scripting():
        _check_grid_args(images_per_row, padding)
        batch = _plain_tensor(batch)
    if batch.dim() == 3:
        batch = batch.unsqueeze(0)
    if batch.dim() != 4:
        raise ValueError("tiles must be an NCHW or CHW tensor, got " + str(batch.dim()) + " dimensions")
    if images_per_row < 1:
        raise ValueError("images_per_row must be a positive int, got " + str(images_per_row))
    if padding < 0:
        raise ValueError("padding must be a non-negative int, got " + str(padding))
    n, c, h, w = batch.size(0), batch.size(1), batch.size(2), batch.size(3)
    cols = min(images_per_row, n)
    rows = (n + cols - 1) // cols
    grid = batch.new_full([1, c, rows * (h + padding) + padding, cols * (w + padding) + padding], pad_value)
    for i in range(n):
        top = padding + (i // cols) * (h + padding)
        left = padding + (i % cols) * (w + padding)
        grid[0, :, top : top + h, left : left + w] = batch[i]
    return grid


def _as_batch(images: Images) -> List[torch.Tensor]:
    """A list of CHW tensors from an NCHW/CHW tensor or a list of CHW/1CHW tensors."""
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            return [images]
        if images.dim() == 4:
            return list(images.unbind(0))
        raise ValueError(f"images must be CHW or NCHW, got shape {tuple(images.shape)}")
    if not isinstance(images, (list, tuple)) or not images:
        raise TypeError(f"images must be a tensor or a non-empty list of tensors, got {type(images).__name__}")
    out = []
    for image in images:
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"every image must be a tensor, got {type(image).__name__}")
        if image.dim() == 4 and image.size(0) == 1:
            image = image[0]
        if image.dim() != 3:
            raise ValueError(f"every image in a list must be CHW or 1CHW, got shape {tuple(image.shape)}")
        out.append(image)
    return out


def _to_uint8(image: torch.Tensor, scale: float):
    """A CHW tensor as an HWC (or HW for one channel) uint8 NumPy array."""
    channels = image.size(0)
    if channels not in (1, 3, 4):
        raise ValueError(f"can only display or save 1, 3 or 4 channel images, got {channels} channels")
    array = image.detach().as_subclass(torch.Tensor).to("cpu", torch.float64) * scale
    array = array.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[:, :, 0] if channels == 1 else array


def _default_per_row(n: int) -> int:
    return max(1, math.ceil(math.sqrt(n)))


def show(
    images: Images,
    labels: Optional[Sequence[str]] = None,
    images_per_row: Optional[int] = None,
    figsize: Optional[Tuple[float, float]] = None,
    scale: float = 255.0,
):
    """Display images as a labelled grid with matplotlib (TorchLight's ``show_images``).

    Args:
        images: an NCHW or CHW tensor, or a list of CHW tensors (sizes may differ), values in
            ``[0, 255 / scale]``.
        labels: one title per image.
        images_per_row: columns of the grid (about the square root of the count by default).
        figsize: matplotlib figure size in inches (2 inches per tile by default).
        scale: multiplier that brings the values to ``[0, 255]``.

    Returns:
        The matplotlib ``Figure`` (already shown with ``plt.show()``).

    Example::

        >>> import matplotlib
        >>> matplotlib.use("Agg")  # no window here: plt.show() returns at once
        >>> fig = show(torch.rand(4, 3, 32, 32), labels=["a", "b", "c", "d"])
        >>> [ax.get_title() for ax in fig.axes]
        ['a', 'b', 'c', 'd']
    """
    import matplotlib.pyplot as plt

    batch = _as_batch(images)
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(batch):
            raise ValueError(f"got {len(labels)} labels for {len(batch)} images")
    cols = images_per_row or _default_per_row(len(batch))
    if not isinstance(cols, int) or cols < 1:
        raise ValueError(f"images_per_row must be a positive int, got {images_per_row!r}")
    cols = min(cols, len(batch))
    rows = math.ceil(len(batch) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=figsize or (2.0 * cols, 2.0 * rows + (0.3 if labels else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(batch):
            array = _to_uint8(batch[i], scale)
            ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=255)
            if labels is not None:
                ax.set_title(str(labels[i]), fontsize=9)
    fig.tight_layout()
    plt.show()
    return fig


def save_tensor_as_image(
    x: Images,
    path: Union[str, Path],
    scale: float = 255.0,
    images_per_row: Optional[int] = None,
    separate: bool = False,
    padding: int = 2,
) -> List[Path]:
    """Save images as PNG (or any format Pillow infers from the suffix).

    A batch becomes one grid image, or one file per image named ``stem_0.png``, ``stem_1.png`` ... when
    ``separate=True``. Four channels are saved as RGBA, one as greyscale.

    Args:
        x: an NCHW or CHW tensor, or a list of CHW tensors of one size, values in ``[0, 255 / scale]``.
        path: where to write (its parent directory must exist).
        scale: multiplier that brings the values to ``[0, 255]``.
        images_per_row: grid columns (about the square root of the batch by default).
        separate: write one file per image instead of a grid.
        padding: pixels between grid tiles (black).

    Returns:
        The paths written.

    Example::

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     grid = save_tensor_as_image(torch.rand(4, 3, 32, 32), Path(folder) / "grid.png", images_per_row=2)
        ...     each = save_tensor_as_image(torch.rand(2, 3, 8, 8), Path(folder) / "x.png", separate=True)
        ...     print([p.name for p in grid], [p.name for p in each])
        ['grid.png'] ['x_0.png', 'x_1.png']
    """
    from PIL import Image

    path = Path(path)
    batch = _as_batch(x)
    if separate:
        targets = [(path.with_name(f"{path.stem}_{i}{path.suffix}"), image) for i, image in enumerate(batch)]
    elif len(batch) == 1:
        targets = [(path, batch[0])]
    else:
        if len({tuple(image.shape) for image in batch}) != 1:
            raise ValueError("images of different sizes can only be saved with separate=True")
        cols = images_per_row or _default_per_row(len(batch))
        grid = make_grid_image(torch.stack(batch), images_per_row=cols, padding=padding)
        targets = [(path, grid[0])]
    for target, image in targets:
        Image.fromarray(_to_uint8(image, scale)).save(target)
    return [target for target, _ in targets]
