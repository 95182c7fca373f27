"""NaturalImage: parameterization -> colour recorrelation -> squash -> ImageTensor."""

import copy
from typing import Callable, Optional, Sequence, Type, Union

import torch
import torch.nn as nn

from .base import ImageParameterization, check_wrapped_geometry, prepare_init, reset_inner
from .decorrelation import ToRGB
from .fft import FFTImage
from .image_tensor import ImageTensor

__all__ = ["NaturalImage", "logit"]

# shown in the signature as the documented default; copied per instance so no two images share it
_DEFAULT_DECORRELATION = ToRGB("klt")


def logit(p: torch.Tensor, epsilon: float = 1e-6) -> torch.Tensor:
    """The inverse of ``torch.sigmoid``, with ``p`` clamped to ``[epsilon, 1 - epsilon]``.

    Example::

        >>> torch.sigmoid(logit(torch.tensor([0.25])))
        tensor([0.2500])
    """
    p = p.clamp(epsilon, 1.0 - epsilon)
    return torch.log(p) - torch.log1p(-p)


class _Squash(nn.Module):
    """Holds a squash function as a submodule so that ``NaturalImage`` scripts.

    ``torch.sigmoid`` and ``None`` (no squash) compile; TorchScript cannot keep an arbitrary Python
    callable, so a scripted ``NaturalImage`` with one fails when called (wrap it in an ``nn.Module``).
    """

    def __init__(self, func: Optional[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        super().__init__()
        self.func = func
        self.kind = "sigmoid" if func is torch.sigmoid else ("identity" if func is None else "python")

    @torch.jit.unused
    def _call_python(self, x: torch.Tensor) -> torch.Tensor:
        return self.func(x)  # type: ignore[misc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "sigmoid":
            return torch.sigmoid(x)
        if self.kind == "identity":
            return x
        return self._call_python(x)


class NaturalImage(ImageParameterization):
    """An optimizable image in ``[0, 1]``: parameterization -> ``ToRGB`` -> squash -> ``ImageTensor``.

    With the defaults (``FFTImage``, KLT colour decorrelation, sigmoid) the image is fully decorrelated
    in space and colour, which preconditions the optimizer (Olah et al., Distill 2017). ``channels=4``
    adds an alpha channel that ``ToRGB`` passes through.

    With ``init``, the image is inverted through the pipeline (logit when the squash is
    ``torch.sigmoid``, the module's ``inverse`` method for a squash module that has one, such as
    ``AlgebraicSigmoid``, the inverse colour transform when ``decorrelate_init``, then the
    parameterization's own ``init``), so ``NaturalImage(init=img)()`` reproduces ``img`` (within about
    1e-5 away from the clamped extremes 0 and 1). Other squash functions receive no inverse.

    Under ``torch.jit.script`` ``forward`` returns a plain tensor (TorchScript cannot build a tensor
    subclass) with the same values.

    Args:
        size: ``(height, width)`` of the image (ignored when ``init`` is given).
        channels: 3 (RGB) or 4 (RGB + alpha) with the default ``ToRGB`` decorrelation, or what a custom
            ``decorrelation_module`` expects.
        batch: number of images; a single-image ``init`` is repeated to this many.
        init: a CHW or NCHW image in ``[0, 1]`` to start from.
        parameterization: (keyword-only) an ``ImageParameterization`` class or a factory called like one
            (with the keywords ``size``, ``channels``, ``batch`` and, when given, ``init``; e.g.
            ``functools.partial(FFTImage, decay_power=1.5)``), or a ready instance (then ``init`` must be None, and ``size``,
            ``channels`` and ``batch`` are read from it: a value other than the default that disagrees
            with the instance raises).
        squash_func: (keyword-only) maps the recorrelated values to ``[0, 1]`` (a function or an
            ``nn.Module``); None for no squashing. ``torch.sigmoid``, None and scriptable modules keep the
            image scriptable; a plain Python function does not.
        decorrelation_module: (keyword-only) colour recorrelation with ``forward(x, inverse=False)``;
            None for none.
        decorrelate_init: (keyword-only) apply the inverse colour transform to ``init``.

    Raises:
        ValueError: channels other than 3 or 4 with ``ToRGB``; ``init`` with a ready instance; a
            ``size``, ``channels`` or ``batch`` that a ready instance does not have.
        TypeError: a ``parameterization``, ``squash_func`` or ``decorrelation_module`` of the wrong kind.

    Example::

        >>> image = NaturalImage((128, 128), batch=2)
        >>> x = image()  # an ImageTensor in [0, 1]
        >>> tuple(x.shape), bool(0 <= x.min() and x.max() <= 1)
        ((2, 3, 128, 128), True)
    """

    def __init__(
        self,
        size: Sequence[int] = (224, 224),
        channels: int = 3,
        batch: int = 1,
        init: Optional[torch.Tensor] = None,
        *,
        parameterization: Union[Type[nn.Module], Callable[..., nn.Module], nn.Module] = FFTImage,
        squash_func: Optional[Callable[[torch.Tensor], torch.Tensor]] = torch.sigmoid,
        decorrelation_module: Optional[nn.Module] = _DEFAULT_DECORRELATION,
        decorrelate_init: bool = True,
    ) -> None:
        super().__init__()
        if squash_func is not None and not callable(squash_func):
            raise TypeError(f"squash_func must be callable or None, got {type(squash_func).__name__}")
        if decorrelation_module is not None and not isinstance(decorrelation_module, nn.Module):
            raise TypeError(
                f"decorrelation_module must be an nn.Module or None, got {type(decorrelation_module).__name__}"
            )
        if decorrelation_module is _DEFAULT_DECORRELATION:
            decorrelation_module = copy.deepcopy(decorrelation_module)
        self.decorrelate: nn.Module = decorrelation_module if decorrelation_module is not None else nn.Identity()
        self.squash: nn.Module = squash_func if isinstance(squash_func, nn.Module) else _Squash(squash_func)

        if isinstance(parameterization, nn.Module):
            if init is not None:
                raise ValueError("init can only be used with a parameterization class or factory, not an instance")
            reference = check_wrapped_geometry(parameterization, size, channels, batch, "NaturalImage")
            self._check_channels(reference.size(1))
            self.parameterization = parameterization
            return
        is_class = isinstance(parameterization, type)
        if (is_class and not issubclass(parameterization, nn.Module)) or not callable(parameterization):
            raise TypeError(
                "parameterization must be an ImageParameterization class, a factory called like one, or an "
                f"instance, got {parameterization!r}"
            )
        kwargs = {"size": size, "channels": channels, "batch": batch}
        if init is not None:
            init = prepare_init(init, batch)
            self._check_channels(init.size(1))
            kwargs["init"] = self._invert(init, squash_func, decorrelate_init)
        else:
            self._check_channels(channels)
        built = parameterization(**kwargs)
        if not isinstance(built, nn.Module):
            raise TypeError(f"the parameterization factory must return an nn.Module, got {type(built).__name__}")
        self.parameterization = built

    # a Python-level attribute: TorchScript leaves it out
    __jit_unused_properties__ = ["squash_func"]

    @property
    def squash_func(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The squash applied after the colour recorrelation (captum's attribute): the function or module
        given as ``squash_func`` (``torch.sigmoid`` by default), or an identity module when it was None.

        Example:
            >>> NaturalImage((8, 8)).squash_func is torch.sigmoid
            True
            >>> NaturalImage((8, 8), squash_func=None).squash_func(torch.tensor([2.0]))
            tensor([2.])
        """
        squash = self.squash
        if isinstance(squash, _Squash):
            return squash.func if squash.func is not None else squash
        return squash

    def _check_channels(self, channels: int) -> None:
        if isinstance(self.decorrelate, ToRGB) and channels not in (3, 4):
            raise ValueError(
                f"channels must be 3 (RGB) or 4 (RGB + alpha) with the ToRGB colour decorrelation, got "
                f"{channels!r}; pass decorrelation_module=None (or your own) for other channel counts"
            )

    def reset_parameters(self, generators: Optional[Sequence[torch.Generator]] = None) -> None:
        """Reset the inner parameterization (image ``i`` from ``generators[i]``); the colour
        decorrelation and squash hold no random state.

        See :meth:`ImageParameterization.reset_parameters`.
        """
        reset_inner(self.parameterization, generators, "NaturalImage")

    def _invert(
        self,
        image: torch.Tensor,
        squash_func: Optional[Callable[[torch.Tensor], torch.Tensor]],
        decorrelate_init: bool,
    ) -> torch.Tensor:
        """Map an image in ``[0, 1]`` back to the parameterization's space."""
        if squash_func is torch.sigmoid or isinstance(squash_func, nn.Sigmoid):
            image = logit(image)
        elif isinstance(squash_func, nn.Module) and callable(getattr(squash_func, "inverse", None)):
            image = squash_func.inverse(image)
        if decorrelate_init and not isinstance(self.decorrelate, nn.Identity):
            image = self.decorrelate(image, inverse=True)
        return image

    @torch.jit.unused
    def _to_image_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return ImageTensor(x)

    def forward(self) -> torch.Tensor:
        """Returns:
        The ``[B, C, H, W]`` image in ``[0, 1]`` as an ``ImageTensor`` (a plain tensor when scripted)."""
        image = self.squash(self.decorrelate(self.parameterization()))
        if torch.jit.is_scripting():
            return image
        return self._to_image_tensor(image)
