"""The base class of image parameterizations and the argument checks they share."""
from __future__ import annotations

import inspect
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .._utils import check_positive

__all__ = ["InputParameterization", "ImageParameterization", "check_generators", "normal_noise"]


class InputParameterization(nn.Module):
    """The base class of every optimizable input (captum.optim's): ``forward()`` takes no argument and
    returns the input the model reads. Image parameterizations derive from :class:`ImageParameterization`.

    Example:
        >>> class Tokens(InputParameterization):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.embedding = nn.Parameter(torch.zeros(1, 4, 8))
        ...     def forward(self):
        ...         return self.embedding
        >>> Tokens()().shape
        torch.Size([1, 4, 8])
        >>> issubclass(ImageParameterization, InputParameterization)
        True
    """

    def forward(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")


class ImageParameterization(InputParameterization):
    """An optimizable image: ``forward()`` takes no argument and returns an NCHW tensor.

    Subclasses keep every parameter a real tensor (a spectrum carries a trailing dimension of 2), so
    ``module.to(dtype)`` and ``module.to(device)`` are always safe.

    The shared constructor is ``(size, channels, batch, init, *, knobs...)``: ``size`` is ``(height,
    width)`` (an int for a square), ``channels`` and ``batch`` positive ints, ``init`` a CHW or NCHW tensor
    to start from (None for random noise), and every other argument keyword-only. Wrappers built from
    ready parameterizations (``StackImage``) read the geometry from them instead.

    Every parameterization implements :meth:`reset_parameters`, which its ``__init__`` calls, so the
    random initial state has one code path and a render can re-draw it with one random stream per image.

    Example (a subclass)::

        >>> import torch, torch.nn as nn
        >>> from optim.images import ImageParameterization
        >>> from optim.images.base import normal_noise
        >>> class Noise(ImageParameterization):
        ...     def __init__(self, size=(8, 8), channels=3, batch=1, init=None):
        ...         super().__init__()
        ...         self.image = nn.Parameter(torch.empty(batch, channels, *size))
        ...         self.reset_parameters()
        ...     def reset_parameters(self, generators=None):
        ...         with torch.no_grad():
        ...             self.image.copy_(normal_noise(self.image.shape, generators))
        ...     def forward(self):
        ...         return self.image
        >>> a = Noise(batch=2)
        >>> a.reset_parameters([torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
        >>> b = Noise(batch=1)
        >>> b.reset_parameters([torch.Generator().manual_seed(2)])
        >>> torch.equal(a()[1], b()[0])
        True
    """

    # the parameter values an init-started parameterization returns to: a plain attribute, so it is
    # neither in the state dict nor compiled by TorchScript
    __jit_ignored_attributes__ = ["_initial_state"]
    _initial_state: Optional[List[torch.Tensor]] = None

    def forward(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def starts_from_init(self) -> bool:
        """Whether it, or a parameterization it holds (a ``NaturalImage``'s Fourier image), was built from an
        ``init`` image (a photo, or an earlier render) rather than from noise.

        Example:
            >>> from optim.images import NaturalImage, PixelImage
            >>> PixelImage((8, 8)).starts_from_init(), PixelImage(init=torch.rand(3, 8, 8)).starts_from_init()
            (False, True)
            >>> NaturalImage(init=torch.rand(3, 8, 8)).starts_from_init()
            True
        """
        return built_from_init(self)

    def _remember_initial_state(self, values: Optional[Sequence[torch.Tensor]]) -> None:
        """Record the values :meth:`reset_parameters` restores (None: the state is random)."""
        self._initial_state = None if values is None else [v.detach().clone() for v in values]

    def _restore_initial_state(self, params: Sequence[torch.Tensor]) -> bool:
        """Copy the recorded initial values back into ``params``; False when there are none."""
        if self._initial_state is None:
            return False
        for param, value in zip(params, self._initial_state):
            assign_(param, value)
        return True

    def reset_parameters(self, generators: Optional[Sequence[torch.Generator]] = None) -> None:
        """Re-draw the random initial state (in place: the ``Parameter`` objects, devices and dtypes stay).

        Args:
            generators: None to draw from torch's global generator, or one CPU ``torch.Generator`` per
                image of the batch: image ``i``'s noise is then drawn from ``generators[i]`` alone, on the
                CPU in float32, and copied into the parameters, so image ``i`` is the same alone or in a
                batch (``torch.equal``) and on CPU or GPU. A parameterization started from ``init`` goes
                back to exactly that ``init`` (no noise is drawn).

        Raises:
            ValueError: ``generators`` does not hold one generator per image, or one is not on the CPU.
            TypeError: ``generators`` is not a sequence of ``torch.Generator``.
            NotImplementedError: a subclass that does not implement it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement reset_parameters(generators=None): implement it to "
            "re-draw the image's random initial state in place, image i's noise from generators[i] when "
            "generators are given (see optim.images.base.normal_noise), so that renders can seed each image"
        )


def check_generators(
    generators: Optional[Sequence[torch.Generator]], batch: int, owner: str = "reset_parameters"
) -> Optional[List[torch.Generator]]:
    """Validate ``generators``: None, or exactly ``batch`` CPU ``torch.Generator`` objects.

    Args:
        generators: the argument to check.
        batch: the number of images it must cover.
        owner: who is checking (named in the error).

    Returns:
        The generators as a list (None stays None).

    Raises:
        TypeError: ``generators`` is not a sequence, or an element is not a ``torch.Generator``.
        ValueError: its length is not ``batch``, or a generator is not on the CPU.

    Example::

        >>> check_generators([torch.Generator()], 2)
        Traceback (most recent call last):
        ...
        ValueError: reset_parameters: generators must hold one torch.Generator per image (2), got 1
    """
    if generators is None:
        return None
    if isinstance(generators, (torch.Generator, torch.Tensor, str, bytes)) or not isinstance(generators, Sequence):
        raise TypeError(
            f"{owner}: generators must be a sequence of CPU torch.Generator, one per image, or None; "
            f"got {type(generators).__name__}"
        )
    generators = list(generators)
    for i, g in enumerate(generators):
        if not isinstance(g, torch.Generator):
            raise TypeError(f"{owner}: generators[{i}] must be a torch.Generator, got {type(g).__name__}")
        if g.device.type != "cpu":
            raise ValueError(f"{owner}: generators[{i}] must be a CPU torch.Generator, got one on {g.device}")
    if len(generators) != batch:
        raise ValueError(
            f"{owner}: generators must hold one torch.Generator per image ({batch}), got {len(generators)}"
        )
    return generators


def normal_noise(
    shape: Sequence[int],
    generators: Optional[Sequence[torch.Generator]] = None,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Standard normal noise of ``shape`` (batch first) on the CPU: the one noise source of ``optim.images``.

    Args:
        shape: ``[B, ...]``.
        generators: None to draw the whole tensor at once from torch's global generator (in ``dtype``),
            or ``B`` CPU generators: row ``i`` is ``torch.randn(shape[1:], generator=generators[i])`` in
            float32, so it does not depend on the other rows.
        dtype: the dtype of a draw from the global generator (default: torch's default dtype); draws
            from ``generators`` are always float32.

    Returns:
        A CPU tensor of ``shape``; the caller scales it and copies it into its parameter.

    Raises:
        ValueError / TypeError: bad ``generators`` (see :func:`check_generators`).

    Example::

        >>> a = normal_noise((2, 3), [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)])
        >>> torch.equal(a[1], torch.randn(3, generator=torch.Generator().manual_seed(1)))
        True
    """
    shape = [int(s) for s in shape]
    if generators is None:
        return torch.randn(shape, dtype=dtype if dtype is not None else torch.get_default_dtype(), device="cpu")
    generators = check_generators(generators, shape[0], owner="normal_noise")
    if not generators:
        return torch.empty(shape, dtype=torch.float32)
    return torch.stack([torch.randn(shape[1:], generator=g, dtype=torch.float32, device="cpu") for g in generators])


@torch.no_grad()
def assign_(param: torch.Tensor, value: torch.Tensor) -> None:
    """Copy ``value`` into ``param`` in place, keeping ``param``'s object, device and dtype."""
    param.copy_(value)


def reset_inner(module: Any, generators: Optional[Sequence[torch.Generator]], owner: str) -> None:
    """Delegate :meth:`ImageParameterization.reset_parameters` to a wrapped parameterization.

    Raises:
        NotImplementedError: ``module`` has no ``reset_parameters(generators)``.
    """
    reset = getattr(module, "reset_parameters", None)
    if not callable(reset) or not (isinstance(module, ImageParameterization) or _takes_generators(reset)):
        raise NotImplementedError(
            f"{owner} cannot reset its inner {type(module).__name__}: give an ImageParameterization, or "
            "implement reset_parameters(generators=None) on it"
        )
    reset(generators)


def _takes_generators(func: Any) -> bool:
    try:
        return "generators" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def check_size(size: Sequence[int], name: str = "size") -> Tuple[int, int]:
    """Validate an image ``(height, width)`` (an int means a square).

    Example:
        >>> check_size(8), check_size([8, 6])
        ((8, 8), (8, 6))
        >>> check_size("64")
        Traceback (most recent call last):
        ...
        TypeError: size must be an int or (height, width), got '64' (str)
    """
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    # a str is iterable too: its characters would be reported as the size ('6', '4')
    bad = TypeError(f"{name} must be an int or (height, width), got {size!r} ({type(size).__name__})")
    if isinstance(size, (str, bytes)) or not isinstance(size, Iterable):
        raise bad
    try:
        size = tuple(size)
    except TypeError:  # iterable by type but not by value (a 0-d tensor)
        raise bad from None
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"{name} must be a positive int or (height, width) of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


#: The largest image batch (``batch * channels * height * width`` values) a parameterization will allocate:
#: 2**28 float32 values is 1 GiB before gradients and optimizer state (several times that in all). Raise it for
#: a larger render: ``optim.images.base.MAX_IMAGE_ELEMENTS = 2**30``.
MAX_IMAGE_ELEMENTS = 2**28


def check_elements(count: int, name: str) -> int:
    """Refuse an image batch larger than :data:`MAX_IMAGE_ELEMENTS`, before anything is allocated.

    Example:
        >>> check_elements(3 * 100000 * 100000, "size")
        Traceback (most recent call last):
        ...
        ValueError: size asks for an image of 30000000000 values (batch x channels x height x width), more than the limit of 268435456; render smaller images or raise optim.images.base.MAX_IMAGE_ELEMENTS
    """
    if count > MAX_IMAGE_ELEMENTS:
        raise ValueError(
            f"{name} asks for an image of {count} values (batch x channels x height x width), more than the limit "
            f"of {MAX_IMAGE_ELEMENTS}; render smaller images or raise optim.images.base.MAX_IMAGE_ELEMENTS"
        )
    return count


def built_from_init(module: nn.Module) -> bool:
    """Whether ``module`` is, or holds, an image parameterization built from an ``init`` image (the one test behind
    :meth:`ImageParameterization.starts_from_init` and ``optim.optimization.starts_from_photo``)."""
    return any(isinstance(m, ImageParameterization) and m._initial_state is not None for m in module.modules())


def _numpy_hint(value: Any) -> str:
    shape = tuple(getattr(value, "shape", ()))
    if len(shape) == 3 and _looks_channels_last(shape):
        return " (a NumPy image is HWC: torch.from_numpy(image).permute(2, 0, 1))"
    if len(shape) == 4 and _looks_channels_last(shape):
        return " (NumPy images are NHWC: torch.from_numpy(images).permute(0, 3, 1, 2))"
    return " (torch.from_numpy(array) makes one)"


def _looks_channels_last(shape: Sequence[int]) -> bool:
    # 1, 3 or 4 values last, at least 16 x 16 before: a photo read as HWC. As CHW it would be an image with 16 or
    # more channels and at most 4 pixels wide; a feature map that small is not a start image
    return shape[-1] in (1, 3, 4) and min(shape[-3], shape[-2]) >= 16


def as_image_batch(image: Any, name: str = "image") -> torch.Tensor:
    """The one check of a start or reference image: a CHW or NCHW tensor, returned as a detached floating NCHW
    tensor in ``[0, 1]`` units (a view or the input itself where nothing changes; copy before writing to it).

    An integer image (a ``uint8`` photo, say) is read as ``0..255`` and divided by 255, as
    ``torchvision.transforms.functional.to_dtype(..., scale=True)`` does; integer values outside ``0..255`` are
    refused. A floating image is taken as it is (``[0, 1]``). Non-finite values are refused. A float16 or bfloat16
    image is read in float32 (image parameterizations compute in float32; a render casts the image to the model's
    dtype).

    Args:
        image: the tensor.
        name: the argument's name, for the errors.

    Raises:
        TypeError: not a tensor (a NumPy array: with the conversion that fixes it). ValueError: wrong rank,
        channels last (1, 3 or 4 values last and at least 16 x 16 before them: with the permute that fixes it),
        empty, non-finite, or integers outside 0..255.

    Example:
        >>> as_image_batch(torch.full((3, 2, 2), 128, dtype=torch.uint8))[0, 0, 0, 0].item()
        0.501960813999176
        >>> as_image_batch(torch.rand(32, 48, 3), "photo")
        Traceback (most recent call last):
        ...
        ValueError: photo of shape (32, 48, 3) looks channels-last (HWC / NHWC); pass photo.permute(2, 0, 1), ...
    """
    if not isinstance(image, torch.Tensor):
        hint = _numpy_hint(image) if type(image).__module__ == "numpy" else ""
        raise TypeError(f"{name} must be a torch.Tensor (CHW or NCHW), got {type(image).__name__}{hint}")
    if image.dim() not in (3, 4) or image.numel() == 0:
        raise ValueError(f"{name} must be a non-empty CHW or NCHW tensor, got shape {tuple(image.shape)}")
    if _looks_channels_last(image.shape):
        order = "(2, 0, 1)" if image.dim() == 3 else "(0, 3, 1, 2)"
        raise ValueError(f"{name} of shape {tuple(image.shape)} looks channels-last (HWC / NHWC); pass "
                         f"{name}.permute{order}, a CHW or NCHW image")
    image = image.detach().as_subclass(torch.Tensor)
    if image.dtype == torch.bool:
        image = image.to(torch.get_default_dtype())
    elif not image.is_floating_point():
        low, high = int(image.min()), int(image.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"an integer {name} is read as 0..255 (divided by 255), got values in {low}..{high}; pass a "
                "float image in [0, 1] instead"
            )
        image = image.to(torch.get_default_dtype()) / 255.0
    elif not bool(torch.isfinite(image).all()):
        raise ValueError(f"{name} holds NaN or infinite values; a start image must be finite (in [0, 1])")
    elif image.dtype in (torch.float16, torch.bfloat16):
        # images compute in float32 (FFTs have no bfloat16 and, on CPU, no float16 kernels); a render casts
        # the image to a low-precision model's dtype just before the model
        image = image.float()
    return image.unsqueeze(0) if image.dim() == 3 else image


def count_channels(n: int) -> str:
    """``'1 channel'``, ``'3 channels'``: a channel count for messages."""
    return f"{n} channel" if n == 1 else f"{n} channels"


def channel_advice(have: int, want: int, name: str = "photo") -> str:
    """How to turn a ``have``-channel CHW or NCHW image into the ``want`` channels a model reads.

    Example:
        >>> channel_advice(3, 1)
        'a 1-channel image (photo.mean(-3, keepdim=True) for a grayscale model)'
        >>> channel_advice(1, 3)
        'a 3-channel image (photo.repeat_interleave(3, dim=-3) for a grayscale photo)'
    """
    if want == 1:
        how = f" ({name}.mean(-3, keepdim=True) for a grayscale model)"
    elif have == 1:
        how = f" ({name}.repeat_interleave({want}, dim=-3) for a grayscale photo)"
    elif (have, want) == (4, 3):
        how = f" ({name}[..., :3, :, :] drops alpha from RGBA)"
    else:
        how = ""
    return f"a {want}-channel image{how}"


def prepare_init(init: Optional[torch.Tensor], batch: int) -> Optional[torch.Tensor]:
    """Turn a CHW or NCHW ``init`` into a detached floating NCHW copy in ``[0, 1]`` units (:func:`as_image_batch`).

    A single image is repeated to ``batch`` images; an init with its own batch keeps it.

    Raises:
        TypeError, ValueError: as :func:`as_image_batch`, and an image too large (``MAX_IMAGE_ELEMENTS``).

    Example:
        >>> prepare_init(torch.full((3, 2, 2), 128, dtype=torch.uint8), 2).shape
        torch.Size([2, 3, 2, 2])
    """
    if init is None:
        return None
    if isinstance(init, torch.Tensor) and init.dim() in (3, 4):
        # before any conversion allocates: a huge init is refused by its size
        check_elements(init.numel() // (init.shape[0] if init.dim() == 4 else 1) * max(batch, 1), "init")
    init = as_image_batch(init, "init")
    if init.size(0) == 1 and batch > 1:
        init = init.expand(batch, -1, -1, -1)
    return init.clone()


class ImageGeometry(NamedTuple):
    """The validated ``(batch, channels, height, width)`` of a parameterization, and its prepared ``init``."""

    batch: int
    channels: int
    height: int
    width: int
    init: Optional[torch.Tensor]
    dtype: torch.dtype
    device: Optional[torch.device]


def image_geometry(
    size: Sequence[int], channels: int, batch: int, init: Optional[torch.Tensor]
) -> ImageGeometry:
    """Check the arguments every pixel-grid parameterization takes; an ``init`` fixes the geometry.

    Args:
        size: ``(height, width)`` (an int for a square), used without ``init``.
        channels: channels per image, used without ``init``.
        batch: number of images; a single-image ``init`` is repeated to this many.
        init: a CHW or NCHW tensor, or None.

    Returns:
        An :class:`ImageGeometry`: the shape, the NCHW ``init`` from :func:`prepare_init`, and the dtype
        and device to create parameters with (the default dtype and device without ``init``).
    """
    batch = check_positive(batch, "batch")
    init = prepare_init(init, batch)
    if init is None:
        height, width = check_size(size)
        check_elements(batch * channels * height * width, "size")
        channels = check_positive(channels, "channels")
        return ImageGeometry(batch, channels, height, width, None, torch.get_default_dtype(), None)
    b, c, h, w = (int(s) for s in init.shape)
    return ImageGeometry(b, c, h, w, init, init.dtype, init.device)


DEFAULT_GEOMETRY = ((224, 224), 3, 1)
"""The defaults of ``(size, channels, batch)`` shared by every parameterization."""


def check_wrapped_geometry(
    module: nn.Module, size: Sequence[int], channels: int, batch: int, owner: str
) -> torch.Tensor:
    """Run a ready parameterization once (without gradients) and return its ``[B, C, H, W]`` output.

    A wrapper given an instance takes its geometry from it; ``size``, ``channels`` or ``batch`` left at
    their defaults (``DEFAULT_GEOMETRY``) are not checked, any other value must agree.

    Raises:
        ValueError: the instance does not return an NCHW tensor, or an explicit value disagrees.
    """
    with torch.no_grad():
        out = module()
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{owner}: the parameterization must return an NCHW tensor, got {got}")
    b, c, h, w = (int(s) for s in out.shape)
    default_size, default_channels, default_batch = DEFAULT_GEOMETRY
    if size != default_size and check_size(size) not in (default_size, (h, w)):
        raise ValueError(
            f"{owner}: size {size!r} disagrees with the given parameterization, which makes {h}x{w} images "
            "(with an instance, leave size out: it is read from the instance)"
        )
    if channels != default_channels and channels != c:
        raise ValueError(
            f"{owner}: channels {channels!r} disagrees with the given parameterization, which makes {c} "
            "channels (with an instance, leave channels out: it is read from the instance)"
        )
    if batch != default_batch and batch != b:
        raise ValueError(
            f"{owner}: batch {batch!r} disagrees with the given parameterization, which makes {b} images "
            "(with an instance, leave batch out: it is read from the instance)"
        )
    return out
