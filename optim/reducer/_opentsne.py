"""openTSNE (Poličar et al.) as a scikit-learn style estimator: a t-SNE that embeds new points (``transform``)."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from optim._utils import optional_import

__all__ = ["OpenTSNE"]


class OpenTSNE:
    """openTSNE's t-SNE with scikit-learn's ``fit`` / ``fit_transform`` / ``transform``.

    ``ChannelReducer(2, "openTSNE", ...)`` builds one. Unlike scikit-learn's ``TSNE``, the fitted embedding
    places new points (``transform``: each new point is optimized against the fixed reference embedding,
    independently of the other new points), so a t-SNE layout can be fitted on a sample and extended to the
    rest chunk by chunk. Needs the ``tsne`` extra (``pip install openTSNE``); imported when fitted.

    Args:
        n_components: the embedding's dimension.
        transform_kwargs: keyword arguments of ``TSNEEmbedding.transform`` (``perplexity``, ``n_iter``, ...).
        kwargs: keyword arguments of ``openTSNE.TSNE`` (``perplexity``, ``metric``, ``random_state``,
            ``n_jobs``, ...).

    Attributes:
        embedding_: the fitted ``openTSNE.TSNEEmbedding`` (an ``[n_samples, n_components]`` array).

    Raises:
        ImportError: naming the ``tsne`` extra, when openTSNE is not installed.

    Example:
        >>> data = np.concatenate([np.random.rand(40, 5), np.random.rand(40, 5) + 4]).astype(np.float32)
        >>> tsne = OpenTSNE(2, perplexity=10, random_state=0).fit(data)
        >>> new = tsne.transform(data[:3] + 0.01)  # new points land next to their neighbours
        >>> new.shape, bool(np.abs(new - tsne.embedding_[:3]).max() < np.ptp(tsne.embedding_) / 4)
        ((3, 2), True)
    """

    def __init__(self, n_components: int = 2, *, transform_kwargs: Optional[Dict[str, Any]] = None, **kwargs: Any) -> None:
        self.n_components = n_components
        self.transform_kwargs = dict(transform_kwargs or {})
        self.kwargs = kwargs

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"OpenTSNE(n_components={self.n_components}{', ' + args if args else ''})"

    def fit(self, X: Any, y: Any = None) -> "OpenTSNE":
        """Embed ``X`` (``[n_samples, n_features]``); the embedding is ``embedding_``."""
        open_tsne = optional_import("openTSNE", "tsne", "ChannelReducer(reduction_alg='openTSNE')")
        self.embedding_ = open_tsne.TSNE(n_components=self.n_components, **self.kwargs).fit(np.asarray(X))
        return self

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Embed ``X`` and return its ``[n_samples, n_components]`` embedding."""
        return np.asarray(self.fit(X).embedding_)

    def transform(self, X: Any) -> np.ndarray:
        """Place new points ``X`` into the fitted embedding: ``[n_samples, n_components]``.

        Raises:
            AttributeError: before :meth:`fit`.
        """
        if not hasattr(self, "embedding_"):
            raise AttributeError("OpenTSNE.transform needs a fitted embedding; call fit first")
        return np.asarray(self.embedding_.transform(np.asarray(X), **self.transform_kwargs))
