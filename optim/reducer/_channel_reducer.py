"""ChannelReducer: scikit-learn style dimensionality reduction over the channel dimension of a tensor."""
from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch

from optim._utils import optional_import

__all__ = ["ChannelReducer"]

# Estimators that reject negative data; checked by class name so no scikit-learn import is needed.
_NONNEGATIVE_ALGS = frozenset({"NMF", "MiniBatchNMF", "LatentDirichletAllocation"})


def _algorithm_class(name: str) -> type:
    """Find a reduction algorithm class by name in umap or scikit-learn."""
    if name == "UMAP":
        return optional_import("umap", "umap", "ChannelReducer(reduction_alg='UMAP')").UMAP
    if name == "openTSNE":
        from ._opentsne import OpenTSNE

        return OpenTSNE
    import sklearn.decomposition
    import sklearn.manifold

    for module in (sklearn.decomposition, sklearn.manifold):
        cls = getattr(module, name, None)
        if isinstance(cls, type) and hasattr(cls, "fit"):
            return cls
    known = sorted(
        n
        for module in (sklearn.decomposition, sklearn.manifold)
        for n in dir(module)
        if n[:1].isupper() and hasattr(getattr(module, n), "fit")
    )
    raise ValueError(
        f"unknown reduction algorithm {name!r}; use 'UMAP', 'openTSNE', a scikit-learn decomposition/manifold class "
        f"name ({', '.join(known)}), an estimator class, or an estimator instance"
    )


def _needs_nonnegative(estimator: Any) -> bool:
    return any(c.__name__ in _NONNEGATIVE_ALGS for c in type(estimator).__mro__)


def _channels_last(channels_last: bool, swap_2nd_and_last_dims: Optional[bool]) -> bool:
    """Resolve captum's ``swap_2nd_and_last_dims`` (True: channels on dim 1) against ``channels_last``."""
    if swap_2nd_and_last_dims is None:
        return bool(channels_last)
    if channels_last and swap_2nd_and_last_dims:
        raise ValueError(
            "channels_last=True and swap_2nd_and_last_dims=True contradict each other (captum's "
            "swap_2nd_and_last_dims=True means the channels are on dim 1): give one of them"
        )
    return not swap_2nd_and_last_dims


class ChannelReducer:
    """Reduce the channel dimension of a tensor with NMF, PCA, FastICA, t-SNE, UMAP or any sklearn-style model.

    Every spatial (and batch) position is one sample and the channels are its features: an input of shape
    ``[N, C, H, W]`` becomes ``N * H * W`` samples of ``C`` features, and the output is
    ``[N, n_components, H, W]``. Inputs of any rank >= 2 work, with channels on dim 1 (or on the last dim
    with ``channels_last=True``). Outputs are torch tensors on the input's device.

    Olah et al., "The Building Blocks of Interpretability", Distill 2018.

    Args:
        n_components: the number of channels to reduce to.
        reduction_alg: ``"NMF"``, ``"PCA"``, ``"FastICA"``, ``"TSNE"``, ``"UMAP"`` (needs the ``umap``
            extra), ``"openTSNE"`` (a t-SNE with ``transform``, :class:`~optim.reducer.OpenTSNE`; needs the
            ``tsne`` extra), any other class name from ``sklearn.decomposition`` / ``sklearn.manifold`` (e.g.
            ``"MiniBatchNMF"``, ``"IncrementalPCA"`` for :meth:`partial_fit`), an estimator class
            (built with ``n_components`` and ``kwargs``), or an estimator instance (used as is).
        kwargs: keyword arguments for the estimator class.

    Raises:
        ValueError: for an unknown algorithm name, or ``kwargs`` given with an estimator instance.
        TypeError: for a ``reduction_alg`` that is not a name, a class, or an estimator.

    captum's keyword ``swap_2nd_and_last_dims`` is accepted by :meth:`fit`, :meth:`fit_transform`,
    :meth:`transform` and :meth:`inverse_transform`: ``True`` (captum's default) means channels on dim 1, i.e.
    ``channels_last=False``; ``False`` means channels last.

    Example::

        >>> acts = torch.einsum("kc,nkhw->nchw", torch.rand(3, 16), torch.rand(1, 3, 8, 8))  # 16 channels, rank 3
        >>> reducer = ChannelReducer(3, "NMF", max_iter=1000)
        >>> factors = reducer.fit_transform(acts)
        >>> factors.shape, reducer.components.shape
        (torch.Size([1, 3, 8, 8]), torch.Size([3, 16]))
        >>> rebuilt = torch.einsum("nkhw,kc->nchw", factors, reducer.components)
        >>> torch.allclose(rebuilt, acts, atol=0.01)
        True
    """

    def __init__(self, n_components: int = 3, reduction_alg: Any = "NMF", **kwargs: Any) -> None:
        if isinstance(reduction_alg, str):
            reduction_alg = _algorithm_class(reduction_alg)
        if isinstance(reduction_alg, type):
            estimator = reduction_alg(n_components=n_components, **kwargs)
        elif hasattr(reduction_alg, "fit") or hasattr(reduction_alg, "fit_transform"):
            if kwargs:
                raise ValueError(
                    f"keyword arguments {sorted(kwargs)} cannot be applied to an estimator instance; "
                    "set them on the instance or pass its class"
                )
            estimator = reduction_alg
            n_components = getattr(estimator, "n_components", n_components)
        else:
            raise TypeError(
                "reduction_alg must be an algorithm name, an estimator class or an estimator instance, "
                f"got {type(reduction_alg).__name__}"
            )
        self.n_components = n_components
        self.reducer = estimator
        self._device: Optional[torch.device] = None
        self._dtype: torch.dtype = torch.float32

    def __repr__(self) -> str:
        return f"ChannelReducer(n_components={self.n_components}, reducer={self.reducer!r})"

    # -- reshaping ---------------------------------------------------------------------------------------
    def _samples(self, x: Any, channels_last: bool) -> Tuple[np.ndarray, Callable[[Any], torch.Tensor]]:
        """Flatten ``x`` to a ``[samples, channels]`` array, plus a function that restores the layout."""
        if not torch.is_tensor(x):
            x = torch.as_tensor(np.asarray(x))
        if x.dim() < 2:
            raise ValueError(f"ChannelReducer needs an input of rank >= 2 (samples and channels), got {tuple(x.shape)}")
        moved = x if channels_last else x.movedim(1, -1)
        lead_shape = moved.shape[:-1]
        flat = moved.detach().reshape(-1, moved.shape[-1])
        if flat.dtype not in (torch.float32, torch.float64):
            flat = flat.float()  # numpy has no bfloat16, and estimators expect float input
        if _needs_nonnegative(self.reducer) and flat.numel() and bool((flat < 0).any()):
            raise ValueError(
                f"{type(self.reducer).__name__} needs non-negative input, but the smallest value is "
                f"{float(flat.min()):.4g}; split signed data with opt.reducer.posneg(x, dim=1) or use "
                "another algorithm such as 'PCA'"
            )
        device = x.device
        dtype = x.dtype if x.is_floating_point() else torch.float32
        self._device, self._dtype = device, dtype

        def restore(out: Any) -> torch.Tensor:
            t = torch.as_tensor(np.asarray(out), device=device).to(dtype)
            t = t.reshape(*lead_shape, -1)
            return t if channels_last else t.movedim(-1, 1)

        return flat.cpu().numpy(), restore

    # -- estimator API -----------------------------------------------------------------------------------
    def fit(
        self, x: torch.Tensor, channels_last: bool = False, *, swap_2nd_and_last_dims: Optional[bool] = None
    ) -> "ChannelReducer":
        """Fit the algorithm on ``x`` (channels on dim 1, or last with ``channels_last``).

        Returns:
            ``self``.
        """
        channels_last = _channels_last(channels_last, swap_2nd_and_last_dims)
        data, _ = self._samples(x, channels_last)
        self.reducer.fit(data)
        return self

    def fit_transform(
        self, x: torch.Tensor, channels_last: bool = False, *, swap_2nd_and_last_dims: Optional[bool] = None
    ) -> torch.Tensor:
        """Fit on ``x`` and return it with its channels reduced to ``n_components``.

        Returns:
            A tensor of ``x``'s layout with ``n_components`` channels, on ``x``'s device.
        """
        channels_last = _channels_last(channels_last, swap_2nd_and_last_dims)
        data, restore = self._samples(x, channels_last)
        if hasattr(self.reducer, "fit_transform"):
            return restore(self.reducer.fit_transform(data))
        return restore(self.reducer.fit(data).transform(data))

    def transform(
        self, x: torch.Tensor, channels_last: bool = False, *, swap_2nd_and_last_dims: Optional[bool] = None
    ) -> torch.Tensor:
        """Reduce the channels of ``x`` with the already fitted algorithm.

        Raises:
            TypeError: for algorithms without ``transform`` (t-SNE embeds only the data it was fit on).
        """
        channels_last = _channels_last(channels_last, swap_2nd_and_last_dims)
        self._require("transform", "use fit_transform instead")
        data, restore = self._samples(x, channels_last)
        return restore(self.reducer.transform(data))

    def inverse_transform(
        self, y: torch.Tensor, channels_last: bool = False, *, swap_2nd_and_last_dims: Optional[bool] = None
    ) -> torch.Tensor:
        """Map reduced channels back to the original channel space (PCA, NMF, FastICA, ...).

        Raises:
            TypeError: for algorithms without ``inverse_transform``.
        """
        channels_last = _channels_last(channels_last, swap_2nd_and_last_dims)
        self._require("inverse_transform", "this algorithm cannot reconstruct its input")
        data, restore = self._samples(y, channels_last)
        return restore(self.reducer.inverse_transform(data))

    def partial_fit(
        self, batches: Union[torch.Tensor, Iterable[torch.Tensor]], channels_last: bool = False
    ) -> "ChannelReducer":
        """Fit incrementally on one batch or an iterator of batches (for activations too large to hold).

        Use an algorithm with ``partial_fit``, such as ``"MiniBatchNMF"`` or ``"IncrementalPCA"``.

        Args:
            batches: a tensor, or an iterable of tensors (e.g. activations collected per data loader batch).
            channels_last: channels are on the last dim instead of dim 1.

        Returns:
            ``self``.

        Raises:
            TypeError: if the algorithm has no ``partial_fit``.
        """
        self._require("partial_fit", "use 'MiniBatchNMF' or 'IncrementalPCA'")
        for batch in [batches] if torch.is_tensor(batches) else batches:
            data, _ = self._samples(batch, channels_last)
            self.reducer.partial_fit(data)
        return self

    def _require(self, method: str, hint: str) -> None:
        if not hasattr(self.reducer, method):
            raise TypeError(f"{type(self.reducer).__name__} has no {method}(); {hint}")

    # -- fitted attributes -------------------------------------------------------------------------------
    @property
    def components(self) -> torch.Tensor:
        """The fitted ``components_`` (``[n_components, channels]``), on the last input's device and dtype."""
        return self.__getattr__("components")

    def __getattr__(self, name: str) -> Any:
        # Fitted sklearn attributes (``explained_variance_ratio_``...) are readable without the underscore.
        if name.startswith("_") or "reducer" not in self.__dict__:
            raise AttributeError(name)
        reducer = self.__dict__["reducer"]
        if not hasattr(reducer, name + "_"):
            raise AttributeError(
                f"{type(reducer).__name__} has no fitted attribute {name + '_'!r} (is it fitted? does this "
                "algorithm provide it?)"
            )
        value = getattr(reducer, name + "_")
        if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
            tensor = torch.as_tensor(value, device=self.__dict__.get("_device"))
            # Float attributes follow the input's dtype so they combine with activations without casts.
            return tensor.to(self.__dict__.get("_dtype", torch.float32)) if value.dtype.kind == "f" else tensor
        return value

    def __dir__(self) -> List[str]:
        fitted = [n[:-1] for n in dir(self.reducer) if n.endswith("_") and not n.startswith("_")]
        return sorted(set(super().__dir__()) | set(fitted))
