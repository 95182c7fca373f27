"""Dimensionality reduction over channels: ``ChannelReducer`` (NMF, PCA, FastICA, t-SNE, UMAP, ...) and ``posneg``.

scikit-learn, umap-learn and openTSNE are imported only when a reducer is built (openTSNE: when fitted).

Example::

    >>> import optim as opt
    >>> acts = opt.models.collect_activations(model, "blocks.5", cat)["blocks.5"]  # cat: a [1, 3, 96, 96] photo
    >>> acts.shape
    torch.Size([1, 80, 6, 6])
    >>> reducer = opt.reducer.ChannelReducer(3, "NMF", max_iter=1000)
    >>> factors = reducer.fit_transform(acts.relu())  # NMF needs non-negative data
    >>> factors.shape, reducer.components.shape  # 3 spatial maps, and each one's direction in channel space
    (torch.Size([1, 3, 6, 6]), torch.Size([3, 80]))
"""
from ._channel_reducer import ChannelReducer
from ._opentsne import OpenTSNE
from ._posneg import posneg

__all__ = ["ChannelReducer", "OpenTSNE", "posneg"]
