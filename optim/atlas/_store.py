"""Activation vectors streamed to disk in bounded memory: :class:`ActivationStore` and :func:`stream_activations`.

A store is a folder of NumPy ``.npy`` chunks (``chunk_000000.npy``, ...; each ``[rows, channels]`` float32)
and one JSON manifest, ``store.json``. Writing holds at most one chunk in memory (a preallocated buffer that
is saved and reused as soon as it fills); reading loads one chunk at a time. Every file is written to a
temporary name and renamed into place, and the manifest is written last, so a folder with a manifest is a
complete store and an interrupted stream leaves none.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from .._utils import check_positive

__all__ = ["ActivationStore", "stream_activations", "DEFAULT_CHUNK_SIZE"]

FORMAT = "optim.ActivationStore"
VERSION = 1
MANIFEST = "store.json"
#: rows per chunk: 65,536 rows of 112 float32 channels (EfficientNet-Lite0 ``blocks.10``) are 29 MB
DEFAULT_CHUNK_SIZE = 65536

PathLike = Union[str, "os.PathLike[str]"]


def _chunk_name(index: int) -> str:
    return f"chunk_{index:06d}.npy"


def _save_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


class ActivationStore:
    """Activation vectors on disk, ``[rows, channels]`` float32 in ``.npy`` chunks; read one chunk at a time.

    Open a finished store with ``ActivationStore(path)``; create one with :func:`stream_activations` (a model
    over a data loader) or :meth:`ActivationStore.write` (any iterable of ``[n, channels]`` blocks). The
    atlas functions (:func:`~optim.atlas.atlas_layout`, :func:`~optim.atlas.create_atlas_vectors`,
    :func:`~optim.atlas.activation_atlas`) take a store wherever they take an activation tensor, and then
    stream it.

    Attributes:
        path: the folder.
        channels: the length of every vector.
        chunk_rows: the number of rows of each chunk, in order.
        metadata: the manifest's free-form ``"metadata"`` dict (layer, model, seed, ... for a streamed store).

    Raises:
        FileNotFoundError: when ``path`` holds no manifest (not a store, or its writing did not finish).
        ValueError: for a manifest of another format or version.

    Example:
        >>> store = ActivationStore.write("acts", [torch.ones(3, 4), torch.zeros(2, 4)], chunk_size=4)
        >>> len(store), store.channels, store.chunk_rows  # 5 vectors of 4 channels, in chunks of 4 rows
        (5, 4, [4, 1])
        >>> [tuple(chunk.shape) for chunk in ActivationStore("acts").chunks()]
        [(4, 4), (1, 4)]
        >>> store.read()[:, 0]
        tensor([1., 1., 1., 0., 0.])
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(
                f"{str(self.path)!r} holds no {MANIFEST}: it is not an activation store, or the stream that "
                "wrote it did not finish"
            )
        meta = json.loads(manifest.read_text())
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(
                f"{manifest} is format {meta.get('format')!r} version {meta.get('version')!r}; "
                f"expected {FORMAT!r} version {VERSION}"
            )
        self.channels: int = int(meta["channels"])
        self.chunk_rows: List[int] = [int(c["rows"]) for c in meta["chunks"]]
        self._files: List[str] = [self._chunk_file(manifest, c.get("file")) for c in meta["chunks"]]
        self.metadata: Dict[str, Any] = dict(meta.get("metadata", {}))

    @staticmethod
    def _chunk_file(manifest: Path, name: Any) -> str:
        # the store writes bare file names; a manifest that points elsewhere ('../x.npy', an absolute path) would
        # read files outside the store
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(
                f"{manifest} lists a chunk file {name!r}: chunk files must be plain file names inside the store"
            )
        return name

    def __len__(self) -> int:
        return sum(self.chunk_rows)

    @property
    def shape(self) -> tuple:
        """``(rows, channels)``."""
        return (len(self), self.channels)

    @property
    def nbytes(self) -> int:
        """The size of the vectors in bytes (float32)."""
        return len(self) * self.channels * 4

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r}, rows={len(self)}, channels={self.channels}, chunks={len(self._files)})"

    # -- reading -----------------------------------------------------------------------------------------
    def _load(self, index: int) -> np.ndarray:
        arr = np.load(self.path / self._files[index])
        if arr.shape != (self.chunk_rows[index], self.channels) or arr.dtype != np.float32:
            raise ValueError(
                f"{self.path / self._files[index]} holds {arr.dtype} {arr.shape}, but the manifest says float32 "
                f"{(self.chunk_rows[index], self.channels)}"
            )
        return arr

    def chunks(self) -> Iterator[torch.Tensor]:
        """The chunks in order, each a ``[rows, channels]`` float32 CPU tensor, loaded one at a time."""
        for index in range(len(self._files)):
            yield torch.from_numpy(self._load(index))

    def read(self) -> torch.Tensor:
        """All vectors as one ``[rows, channels]`` tensor (for stores that fit in memory)."""
        out = np.empty((len(self), self.channels), dtype=np.float32)
        start = 0
        for index, rows in enumerate(self.chunk_rows):
            out[start : start + rows] = self._load(index)
            start += rows
        return torch.from_numpy(out)

    def take(self, indices: Union[Sequence[int], np.ndarray, torch.Tensor]) -> torch.Tensor:
        """The rows at ``indices`` (any order, repeats allowed), reading each chunk at most once.

        Returns:
            A ``[len(indices), channels]`` tensor, rows in the order of ``indices``.

        Raises:
            IndexError: for an index outside ``[0, len(self))``.
        """
        idx = np.asarray(indices.cpu() if torch.is_tensor(indices) else indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"store indices must lie in [0, {len(self)}), got {int(idx.min())}..{int(idx.max())}")
        out = np.empty((idx.size, self.channels), dtype=np.float32)
        bounds = np.cumsum([0] + self.chunk_rows)
        chunk_of = np.searchsorted(bounds, idx, side="right") - 1
        for index in np.unique(chunk_of):
            where = np.nonzero(chunk_of == index)[0]
            out[where] = self._load(int(index))[idx[where] - bounds[index]]
        return torch.from_numpy(out)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` distinct rows drawn uniformly (in store order), the same for the same ``seed``; all if ``n >= len``.

        Example:
            >>> store = ActivationStore.write("acts", [torch.arange(10.0).view(10, 1)], chunk_size=3)
            >>> store.sample(4, seed=1)[:, 0]
            tensor([3., 4., 6., 9.])
        """
        check_positive(n, "n")
        if n >= len(self):
            return self.read()
        rng = np.random.default_rng(seed)
        return self.take(np.sort(rng.choice(len(self), size=n, replace=False)))

    # -- writing -----------------------------------------------------------------------------------------
    @classmethod
    def write(
        cls,
        path: PathLike,
        blocks: Iterable[Union[torch.Tensor, np.ndarray]],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        overwrite: bool = False,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> "ActivationStore":
        """Write ``[n, channels]`` blocks (tensors or arrays, any ``n``) into a new store, one chunk at a time.

        Rows are copied into one preallocated ``[chunk_size, channels]`` float32 buffer, saved as a chunk as
        soon as it fills, so memory holds one chunk plus the block being consumed, whatever the total.

        Args:
            path: the store's folder (created; it must be empty or absent, or a store with ``overwrite``).
            blocks: the vectors, block by block; consumed lazily (a generator streams).
            chunk_size: rows per chunk (the last chunk holds the rest).
            overwrite: replace an existing store at ``path`` (its chunks and manifest only; a folder that is not
                a store is never emptied).
            metadata: a JSON-serializable dict saved in the manifest; read at the end of the stream, so a
                generator may still fill it in.

        Returns:
            The new store.

        Raises:
            ValueError: for a non-empty ``path``, blocks of different widths or not 2-D, no rows at all, or a
                bad ``chunk_size``.
        """
        check_positive(chunk_size, "chunk_size")
        folder = Path(path)
        _prepare_folder(folder, overwrite)
        meta = {} if metadata is None else metadata
        buffer: Optional[np.ndarray] = None
        filled = 0
        chunks: List[Dict[str, Any]] = []

        def flush(rows: int) -> None:
            name = _chunk_name(len(chunks))
            _save_atomic(folder / name, lambda f: np.save(f, buffer[:rows]))
            chunks.append({"file": name, "rows": rows})

        for block in blocks:
            arr = block.detach().cpu().numpy() if torch.is_tensor(block) else np.asarray(block)
            if arr.ndim != 2:
                raise ValueError(f"every block must be [n, channels], got shape {arr.shape}")
            if buffer is None:
                if arr.shape[1] < 1:
                    raise ValueError(f"blocks need at least one channel, got shape {arr.shape}")
                buffer = np.empty((chunk_size, arr.shape[1]), dtype=np.float32)
            elif arr.shape[1] != buffer.shape[1]:
                raise ValueError(f"a block of {arr.shape[1]} channels follows blocks of {buffer.shape[1]}")
            start = 0
            while start < arr.shape[0]:
                take = min(chunk_size - filled, arr.shape[0] - start)
                buffer[filled : filled + take] = arr[start : start + take]
                filled, start = filled + take, start + take
                if filled == chunk_size:
                    flush(filled)
                    filled = 0
        if buffer is None or (not chunks and filled == 0):
            raise ValueError("the blocks held no rows: nothing to store")
        if filled:
            flush(filled)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "channels": int(buffer.shape[1]),
            "dtype": "float32",
            "rows": sum(c["rows"] for c in chunks),
            "chunk_size": chunk_size,
            "chunks": chunks,
            "metadata": meta,
        }
        text = json.dumps(manifest, indent=1).encode()
        _save_atomic(folder / MANIFEST, lambda f: f.write(text))
        return cls(folder)


def _prepare_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path {str(folder)!r} is a file; an activation store is a folder")
    entries = list(folder.iterdir()) if folder.exists() else []
    if entries:
        if not (folder / MANIFEST).is_file():
            raise ValueError(f"path {str(folder)!r} is a non-empty folder that is not an activation store")
        if not overwrite:
            raise ValueError(f"path {str(folder)!r} already holds an activation store; pass overwrite=True")
        for entry in entries:  # only the store's own files
            if entry.name.startswith("chunk_") or entry.name.startswith(MANIFEST):
                entry.unlink()
    folder.mkdir(parents=True, exist_ok=True)


def _image_vectors(acts: torch.Tensor, first_image: int, positions_per_image: Optional[int], seed: int) -> torch.Tensor:
    """``[B, C, H, W]`` (or ``[B, C]``) activations as ``[vectors, C]``: every, or ``k`` random, positions per image."""
    if acts.dim() == 2:
        return acts
    if acts.dim() != 4:
        raise ValueError(f"streamed activations must be [N, C] or [N, C, H, W], got {tuple(acts.shape)}")
    batch, channels, height, width = acts.shape
    positions = acts.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
    if positions_per_image is not None and positions_per_image < height * width:
        picks = [
            np.sort(np.random.default_rng([seed, first_image + i]).choice(height * width, positions_per_image, replace=False))
            for i in range(batch)
        ]
        index = torch.as_tensor(np.stack(picks), device=acts.device)
        positions = positions.gather(1, index.unsqueeze(-1).expand(-1, -1, channels))
    return positions.reshape(-1, channels)


def stream_activations(
    model: nn.Module,
    layer: Union[str, nn.Module],
    batches: Iterable[Any],
    path: PathLike,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    positions_per_image: Optional[int] = None,
    seed: int = 0,
    overwrite: bool = False,
    call: int = -1,
    select: Any = None,
    stop_early: bool = True,
) -> ActivationStore:
    """Run ``model`` over a data loader and stream ``layer``'s activation vectors to an :class:`ActivationStore`.

    The batches go through :func:`optim.activations.iter_activations` (eval mode, no gradients, one set of
    hooks; the forward stops at ``layer``). Each spatial position of each image is one vector (the channels at
    that position), in the order image, row, column, as :class:`~optim.reducer.ChannelReducer` and
    :func:`~optim.atlas.activation_atlas` read a ``[N, C, H, W]`` tensor; ``[N, C]`` outputs give one vector
    per image. Memory holds one batch's activations and one chunk, whatever the size of the dataset.

    Args:
        model: the network.
        layer: the layer (a module or dotted name).
        batches: an iterable of input tensors, ``(input, label)`` pairs or dicts (a ``DataLoader``).
        path: the store's folder (absent or empty; or an existing store with ``overwrite``).
        chunk_size: vectors per chunk file.
        positions_per_image: keep only this many spatial positions of each image, drawn without replacement
            and kept in row-major order (fewer, decorrelated vectors per image; all of them when the map is
            not larger). Image ``i`` (counted from the first image of the loader) draws from
            ``numpy.random.default_rng([seed, i])``, so its positions do not depend on the batch size.
        seed: the seed of those draws.
        overwrite: replace an existing store at ``path``.
        call: which call of a module called several times (see :class:`~optim.activations.ActivationRecorder`).
        select: which tensor of a non-tensor output (see :func:`~optim.activations.select_tensor`).
        stop_early: stop each pass once ``layer`` has run, at the call counts the first batch of each input shape
            showed; ``False`` for a model whose number of calls to ``layer`` changes with the input's values (see
            :func:`~optim.activations.iter_activations`).

    Returns:
        The store; its ``metadata`` records ``layer``, ``model`` (the class name), ``images``,
        ``positions_per_image``, ``seed`` and ``activation_shape`` (one image's ``[C, H, W]``).

    Raises:
        ValueError: for a bad ``path``, ``chunk_size`` or ``positions_per_image``, an empty loader, or
            activations that are not ``[N, C]`` / ``[N, C, H, W]``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        >>> loader = torch.utils.data.DataLoader(torch.rand(10, 3, 4, 4), batch_size=4)
        >>> store = stream_activations(net, "1", loader, "relu_acts", chunk_size=64)
        >>> store.shape, store.chunk_rows  # 10 images x 16 positions, 8 channels
        ((160, 8), [64, 64, 32])
        >>> with torch.no_grad():
        ...     expected = torch.cat([net(batch) for batch in loader])  # [10, 8, 4, 4]
        >>> torch.equal(store.read(), expected.permute(0, 2, 3, 1).reshape(-1, 8))
        True
        >>> stream_activations(net, "1", loader, "few", positions_per_image=3).shape  # 3 positions per image
        (30, 8)
    """
    from optim._utils import module_name
    from optim.activations import iter_activations

    if positions_per_image is not None:
        check_positive(positions_per_image, "positions_per_image")
    check_positive(chunk_size, "chunk_size")
    metadata: Dict[str, Any] = {
        "layer": layer if isinstance(layer, str) else module_name(model, layer),
        "model": type(model).__name__,
        "positions_per_image": positions_per_image,
        "seed": seed,
        "images": 0,
        "activation_shape": None,
    }

    def blocks() -> Iterator[torch.Tensor]:
        for acts in iter_activations(model, layer, batches, call=call, select=select, stop_early=stop_early):
            out = acts[layer]
            if metadata["activation_shape"] is None:
                metadata["activation_shape"] = list(out.shape[1:])
            vectors = _image_vectors(out, metadata["images"], positions_per_image, seed)
            metadata["images"] += out.size(0)
            yield vectors.float()

    return ActivationStore.write(path, blocks(), chunk_size=chunk_size, overwrite=overwrite, metadata=metadata)
