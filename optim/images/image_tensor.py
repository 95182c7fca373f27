"""ImageTensor: a torch.Tensor subclass that knows how to open, show and export itself."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

__all__ = ["ImageTensor"]

# Ops whose result is still "the image" (moved, copied, sliced, rescaled, combined): they keep the
# subclass. Everything else (convolutions, reductions, ...) returns a plain Tensor, so activations of a
# model fed an ImageTensor are ordinary tensors and pay no subclass dispatch in the hot loop.
_KEEP_TYPE = frozenset(
    """to cpu cuda double float half bfloat16 type detach clone contiguous requires_grad_ __getitem__
    add sub mul div true_divide neg abs pow clamp clip flip roll cat stack narrow expand expand_as
    __add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __truediv__ __rtruediv__ __neg__ __pos__ __pow__
    __abs__ sigmoid lerp where permute unsqueeze squeeze""".split()
)


def _wrap(value: Any, cls: type) -> Any:
    if isinstance(value, torch.Tensor) and not isinstance(value, cls):
        return value.as_subclass(cls)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_wrap(v, cls) for v in value)
    return value


class ImageTensor(torch.Tensor):
    """A tensor holding images (CHW or NCHW, values usually in ``[0, 1]``) on any device and dtype.

    It is a genuine ``torch.Tensor`` subclass: autograd, devices and dtypes work as usual. Moving,
    copying, slicing and elementwise arithmetic keep the ``ImageTensor`` type; other operations return
    plain tensors.

    Args:
        data: a tensor (its autograd history is kept), NumPy array or nested list.
        dtype: dtype for non-tensor data (the default float dtype if None).
        device: device for non-tensor data.

    Example::

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     _ = ImageTensor(torch.rand(3, 16, 24)).export(Path(folder) / "noise.png")
        ...     image = ImageTensor.open(Path(folder) / "noise.png")  # [3, H, W] in [0, 1]
        ...     dark = (image * 0.5).export(Path(folder) / "dark.png")
        >>> type(image * 0.5).__name__, tuple(image.shape), [p.name for p in dark]
        ('ImageTensor', (3, 16, 24), ['dark.png'])
    """

    @staticmethod
    def __new__(
        cls,
        data: Any = (),
        dtype: Optional[torch.dtype] = None,
        device: Optional[Union[str, torch.device]] = None,
    ) -> "ImageTensor":
        if isinstance(data, torch.Tensor):
            tensor = data if dtype is None and device is None else data.to(device=device, dtype=dtype)
        else:
            tensor = torch.as_tensor(data, dtype=dtype or torch.get_default_dtype(), device=device)
        # as_subclass (unlike _make_subclass) keeps the autograd graph, so gradients reach the
        # parameterization through NaturalImage's output
        return tensor.as_subclass(cls)

    @classmethod
    def __torch_function__(
        cls,
        func: Callable,
        types: Tuple[type, ...],
        args: Sequence[Any] = (),
        kwargs: Optional[Dict[str, Any]] = None,
    ) -> Any:
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
        if getattr(func, "__name__", None) in _KEEP_TYPE:
            return _wrap(result, cls)
        return result

    def __deepcopy__(self, memo: Dict[int, Any]) -> "ImageTensor":
        if id(self) not in memo:
            memo[id(self)] = copy.deepcopy(self.as_subclass(torch.Tensor), memo).as_subclass(type(self))
        return memo[id(self)]

    def __repr__(self, *, tensor_contents: Any = None) -> str:
        text = repr(self.as_subclass(torch.Tensor))
        return "ImageTensor" + text[len("tensor") :] if text.startswith("tensor") else text

    @classmethod
    def open(cls, path: Union[str, Path], scale: float = 1.0, mode: Optional[str] = None) -> "ImageTensor":
        """Load an image file (PNG, JPEG, ... through Pillow) as a CHW float32 ImageTensor.

        Args:
            path: the image file.
            scale: the values are ``pixel / 255 * scale`` (so ``[0, 1]`` by default).
            mode: a Pillow mode to convert to; by default ``"RGBA"`` for images with transparency (4
                channels) and ``"RGB"`` otherwise.

        Returns:
            A ``[C, H, W]`` ImageTensor.

        Example::

            >>> import tempfile
            >>> with tempfile.TemporaryDirectory() as folder:
            ...     _ = ImageTensor(torch.rand(4, 8, 8)).export(Path(folder) / "rgba.png")
            ...     print(tuple(ImageTensor.open(Path(folder) / "rgba.png").shape))
            ...     print(tuple(ImageTensor.open(Path(folder) / "rgba.png", mode="L").shape))
            (4, 8, 8)
            (1, 8, 8)
        """
        import numpy as np
        from PIL import Image

        with Image.open(path) as img:
            if mode is None:
                has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
                mode = "RGBA" if has_alpha else "RGB"
            array = np.asarray(img.convert(mode), dtype=np.float32)
        if array.ndim == 2:
            array = array[:, :, None]
        tensor = torch.from_numpy(array.transpose(2, 0, 1).copy()) * (scale / 255.0)
        return cls(tensor)

    def show(
        self,
        figsize: Optional[Tuple[float, float]] = None,
        scale: float = 255.0,
        images_per_row: Optional[int] = None,
    ) -> None:
        """Display the image (a batch as a grid) with matplotlib.

        Args:
            figsize: figure size in inches.
            scale: multiplier that brings the values to ``[0, 255]``.
            images_per_row: grid columns for a batch.
        """
        import matplotlib.pyplot as plt

        from .display import _default_per_row, _to_uint8, make_grid_image

        plain = self.detach().as_subclass(torch.Tensor)
        if plain.dim() == 4:
            plain = make_grid_image(plain, images_per_row or _default_per_row(plain.size(0)))[0]
        elif plain.dim() != 3:
            raise ValueError(f"can only show CHW or NCHW images, got shape {tuple(self.shape)}")
        array = _to_uint8(plain, scale)
        plt.figure(figsize=figsize)
        plt.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=255)
        plt.axis("off")
        plt.show()

    def export(
        self,
        path: Union[str, Path],
        scale: float = 255.0,
        images_per_row: Optional[int] = None,
        separate: bool = False,
    ) -> List[Path]:
        """Save the image as a file; a batch becomes one grid image or one file per image.

        Args:
            path: where to write; the format follows the suffix (PNG recommended).
            scale: multiplier that brings the values to ``[0, 255]``.
            images_per_row: grid columns for a batch.
            separate: write ``stem_0.png``, ``stem_1.png`` ... instead of a grid.

        Returns:
            The paths written.
        """
        from .display import save_tensor_as_image

        return save_tensor_as_image(self, path, scale=scale, images_per_row=images_per_row, separate=separate)
