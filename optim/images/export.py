"""Image conversion for files and web pages: tensors and arrays to uint8 pixels, PIL images and PNG bytes,
and atomic PNG writes.

The command line, the app and its gallery all write images through this module, so an image is converted
one way everywhere: float values are taken as ``[0, 1]`` (clipped, then rounded to 0..255), integer values
as ``0..255`` (refused outside that range), booleans as black and white; a non-finite value is refused,
never written as black.

>>> import torch
>>> to_uint8_array(torch.tensor([[[0.0, 0.5, 1.0]]])).tolist()
[[0, 128, 255]]
>>> png_bytes(torch.zeros(3, 2, 2))[:8]
b'\\x89PNG\\r\\n\\x1a\\n'
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

__all__ = ["to_uint8_array", "to_pil", "png_bytes", "save_png", "atomic_write"]

PathLike = Union[str, "os.PathLike[str]"]


def _tensor_to_array(image: Any) -> np.ndarray:
    """An HWC (or HW) NumPy array from a CHW / 1CHW / HW torch tensor (any device, any float or int dtype)."""
    t = image.detach()
    if hasattr(t, "as_subclass"):
        import torch

        t = t.as_subclass(torch.Tensor)
    t = t.cpu()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"image must be one image (CHW or 1CHW), got a batch of {t.shape[0]}: shape {tuple(t.shape)}")
        t = t[0]
    if t.dim() == 3:
        if t.shape[0] not in (1, 3, 4):
            raise ValueError(f"an image tensor must be CHW with 1, 3 or 4 channels, got shape {tuple(t.shape)}")
        t = t.permute(1, 2, 0)
    elif t.dim() != 2:
        raise ValueError(f"an image tensor must be HW, CHW or 1CHW, got shape {tuple(t.shape)}")
    if t.is_floating_point():
        t = t.double()
    return t.numpy()


def to_uint8_array(image: Any) -> np.ndarray:
    """The pixels of an image as a uint8 array: HxWx3 (RGB), HxWx4 (RGBA) or HxW (grey).

    Args:
        image: a torch tensor CHW / 1CHW / HW (channels first), a NumPy array HxW / HxWx1 / HxWx3 / HxWx4
            (channels last), or a PIL image. Floats are read as ``[0, 1]`` and clipped; integers as
            ``0..255``; booleans as 0 / 255.

    Returns:
        A C-contiguous ``uint8`` array.

    Raises:
        ValueError: a non-finite value (NaN or inf: the number of them is given), integers outside 0..255,
            a batch of more than one image, or a shape that is no image.
        TypeError: something that is neither a tensor, an array nor a PIL image.

    >>> to_uint8_array(np.array([[0, 255]], dtype=np.int64)).tolist()
    [[0, 255]]
    >>> to_uint8_array(np.array([[float("nan")]]))
    Traceback (most recent call last):
    ...
    ValueError: image holds 1 non-finite value (NaN or inf); refusing to convert it (a render that diverged?)
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        if image.mode not in ("RGB", "RGBA", "L"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    if hasattr(image, "detach") and hasattr(image, "dim"):  # a torch tensor
        array = _tensor_to_array(image)
    elif isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise ValueError(f"an image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {array.shape}")
    else:
        raise TypeError(f"image must be a torch tensor, a NumPy array or a PIL image, got {type(image).__name__}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.size == 0:
        raise ValueError(f"image is empty: shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"an integer image must hold values in 0..255, got {low}..{high} (dtype {array.dtype}); "
                "give floats in [0, 1] instead"
            )
        array = array.astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            plural = "value" if bad == 1 else "values"
            raise ValueError(
                f"image holds {bad} non-finite {plural} (NaN or inf); refusing to convert it (a render that diverged?)"
            )
        array = (np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    else:
        raise TypeError(f"image values must be numbers, got dtype {array.dtype}")
    return np.ascontiguousarray(array)


def to_pil(image: Any) -> Any:
    """A PIL image (``RGB``, ``RGBA`` or ``L``) from anything :func:`to_uint8_array` takes.

    >>> to_pil(torch.rand(3, 4, 5)).size
    (5, 4)
    """
    from PIL import Image

    array = to_uint8_array(image)
    mode = "L" if array.ndim == 2 else ("RGBA" if array.shape[2] == 4 else "RGB")
    return Image.fromarray(array, mode=mode)


def png_bytes(image: Any, metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """The PNG encoding of an image (for a web page, a download button or a database).

    Args:
        image: anything :func:`to_uint8_array` takes.
        metadata: text chunks to store in the PNG (``tEXt``), e.g. how the image was made.

    Returns:
        The PNG file's bytes.
    """
    buffer = io.BytesIO()
    _write_png(to_pil(image), buffer, metadata)
    return buffer.getvalue()


def _write_png(pil: Any, handle: Any, metadata: Optional[Mapping[str, str]]) -> None:
    info = None
    if metadata:
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        for key, value in metadata.items():
            info.add_text(str(key), str(value))
    pil.save(handle, format="PNG", pnginfo=info)


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Callable[[Any], None]) -> Path:
    """Write a file so that readers see the old file or the complete new one, never a part.

    ``write`` gets a binary file object on a temporary file in the same folder, with a name unique to this
    call (so threads and processes writing the same path never share one); the temporary file is flushed,
    synced and moved over ``path`` (``os.replace``), or deleted if ``write`` raises.

    Args:
        path: the destination (its folder must exist).
        write: ``write(file_object)`` writes the content.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OSError: the folder does not exist or is not writable (the destination is left as it was).

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write(folder / "a.txt", lambda f: f.write(b"hi")).read_bytes()
    b'hi'
    >>> oct((folder / "a.txt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # as open() would make it
    True
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 less the umask)
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def save_png(image: Any, path: PathLike, metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write an image as a PNG file atomically (see :func:`atomic_write`).

    The image is converted before anything is written, so a bad image (NaN, a batch, a wrong shape) leaves
    no file and no temporary file behind.

    Args:
        image: anything :func:`to_uint8_array` takes.
        path: the destination; its folder must exist.
        metadata: PNG text chunks.

    Returns:
        ``path`` as a ``Path``.

    >>> import tempfile, pathlib
    >>> out = save_png(torch.rand(3, 8, 8), pathlib.Path(tempfile.mkdtemp()) / "x.png")
    >>> out.read_bytes()[:4]
    b'\\x89PNG'
    """
    pil = to_pil(image)
    return atomic_write(path, lambda handle: _write_png(pil, handle, metadata))
