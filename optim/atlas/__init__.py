"""Activation atlases: lay activations out in 2-D, average grid cells, render and tile their directions.

Example (a tiny atlas; a real one lays out many thousands of samples with UMAP and renders for 128+ steps)::

    >>> import optim as opt
    >>> images = torch.rand(8, 3, 64, 64)  # stand-in for a dataset
    >>> acts = opt.models.collect_activations(model, "blocks.10", images)["blocks.10"]
    >>> acts.shape  # every spatial position is one sample: 8 * 4 * 4 = 128
    torch.Size([8, 112, 4, 4])
    >>> atlas = opt.atlas.activation_atlas(model, "blocks.10", acts, grid_size=2, reducer="PCA", min_density=4,
    ...                                    image_size=32, steps=4)
    >>> atlas.shape  # 2 x 2 cells of 32 x 32 pixels
    torch.Size([1, 3, 64, 64])

At scale (more vectors than memory holds), stream the activations over a data loader to disk, chunk by chunk,
and give the store wherever a tensor goes: the layout is fitted incrementally (``"IncrementalPCA"``,
``"MiniBatchNMF"``) or on a sample (``"UMAP"``, ``"openTSNE"``) and transformed chunk by chunk, and the grid
cells are averaged in one streaming pass::

    >>> loader = torch.utils.data.DataLoader(torch.rand(16, 3, 64, 64), batch_size=8)
    >>> store = opt.atlas.stream_activations(model, "blocks.10", loader, "acts", chunk_size=100)
    >>> store.shape, store.chunk_rows  # 16 images x 4 x 4 positions, 112 channels
    ((256, 112), [100, 100, 56])
    >>> atlas = opt.atlas.activation_atlas(model, "blocks.10", store, grid_size=2, reducer="IncrementalPCA",
    ...                                    min_density=4, image_size=32, steps=2, progress=False)
    >>> atlas.shape
    torch.Size([1, 3, 64, 64])
"""
from ._canvas import create_atlas
from ._grid import (
    CellAccumulator,
    calc_grid_indices,
    compute_avg_cell_samples,
    create_atlas_vectors,
    grid_shape,
    normalize_grid,
)
from ._recipe import DEFAULT_FIT_SAMPLE, activation_atlas, atlas_layout, render_atlas
from ._store import DEFAULT_CHUNK_SIZE, ActivationStore, stream_activations

__all__ = [
    "normalize_grid",
    "calc_grid_indices",
    "compute_avg_cell_samples",
    "create_atlas_vectors",
    "create_atlas",
    "activation_atlas",
    "atlas_layout",
    "render_atlas",
    "grid_shape",
    "CellAccumulator",
    "ActivationStore",
    "stream_activations",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_FIT_SAMPLE",
]
