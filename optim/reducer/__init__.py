"""Dimensionality reduction over channels: ``ChannelReducer`` (NMF, PCA, FastICA, t-SNE, UMAP, ...) and ``posneg``.

scikit-learn and umap-learn are imported only when a reducer is built.

Example::

    import optim as opt
    reducer = opt.reducer.ChannelReducer(3, "NMF")
    factors = reducer.fit_transform(torch.rand(1, 64, 28, 28))  # [1, 3, 28, 28]
"""
from ._channel_reducer import ChannelReducer
from ._posneg import posneg

__all__ = ["ChannelReducer", "posneg"]
