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
"""
from ._canvas import create_atlas
from ._grid import calc_grid_indices, compute_avg_cell_samples, create_atlas_vectors, grid_shape, normalize_grid
from ._recipe import activation_atlas, atlas_layout

__all__ = [
    "normalize_grid",
    "calc_grid_indices",
    "compute_avg_cell_samples",
    "create_atlas_vectors",
    "create_atlas",
    "activation_atlas",
    "atlas_layout",
    "grid_shape",
]
