"""Activation atlases: lay activations out in 2-D, average grid cells, render and tile their directions.

Example::

    import optim as opt
    acts = opt.models.collect_activations(model, "mixed4c", images)["mixed4c"]
    atlas = opt.atlas.activation_atlas(model, "mixed4c", acts, grid_size=10, min_density=4)
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
