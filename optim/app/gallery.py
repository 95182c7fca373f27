"""A persistent gallery of renders: a SQLite index plus one PNG file per image in a user-chosen directory.

Every render is keyed by the model name, a hash of its weights, the layer, the channel and the render
settings, so the app (or a script) looks an image up before rendering it and nothing is rendered twice.
This module needs neither Streamlit nor a model: it is plain ``sqlite3`` and PIL.

Example::

    from optim.app.gallery import Gallery
    gallery = Gallery("~/optim-gallery")
    entry, hit = gallery.get_or_render(
        "efficientnet_lite0", weights_hash(model), "blocks.10", 7, {"size": 128, "steps": 256},
        lambda: opt.render_vis(model, "blocks.10:7", thresholds=(256,))[-1],
    )
    entry.path  # the PNG on disk
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

__all__ = [
    "Gallery",
    "GalleryEntry",
    "DATA_DIR_ENV",
    "default_data_dir",
    "resolve_data_dir",
    "settings_key",
    "to_pil",
]

#: Environment variable naming the gallery's data directory.
DATA_DIR_ENV = "OPTIM_DATA_DIR"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS renders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    weights_hash TEXT NOT NULL,
    layer TEXT NOT NULL,
    channel INTEGER,
    settings_key TEXT NOT NULL,
    settings TEXT NOT NULL,
    file TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    created REAL NOT NULL,
    UNIQUE (model, weights_hash, layer, channel, settings_key)
)
"""
_COLUMNS = "id, model, weights_hash, layer, channel, settings, file, width, height, created"


def default_data_dir() -> Path:
    """The gallery directory used when the user names none: ``$OPTIM_DATA_DIR``, else the per-user data
    directory (``$XDG_DATA_HOME/optim-gallery``, by default ``~/.local/share/optim-gallery``)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "optim-gallery"


def resolve_data_dir(data_dir: Union[str, os.PathLike, None] = None) -> Path:
    """The directory given by the user (a flag or a text field), else :func:`default_data_dir`.

    Args:
        data_dir: a path, or ``None`` / ``""`` for the default.

    Returns:
        The absolute path (not created).
    """
    if data_dir is None or str(data_dir).strip() == "":
        return default_data_dir().resolve()
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a path, got {type(data_dir).__name__}")
    return Path(data_dir).expanduser().resolve()


def settings_key(settings: Mapping[str, Any]) -> str:
    """A canonical string for render settings (sorted keys), so equal settings give equal keys.

    Args:
        settings: JSON-serializable values such as ``{"size": 128, "steps": 256, "seed": 0}``.

    Returns:
        The JSON text with sorted keys.
    """
    if not isinstance(settings, Mapping):
        raise TypeError(f"settings must be a mapping, got {type(settings).__name__}")
    try:
        return json.dumps(dict(settings), sort_keys=True, separators=(",", ":"))
    except TypeError as err:
        raise TypeError(f"settings must hold only JSON values (numbers, strings, lists): {err}") from err


@dataclass(frozen=True)
class GalleryEntry:
    """One stored render."""

    id: int
    model: str
    weights_hash: str
    layer: str
    channel: Optional[int]
    settings: Dict[str, Any]
    path: Path
    width: int
    height: int
    created: float

    @property
    def caption(self) -> str:
        """A short label such as ``"blocks.10:7"``."""
        return self.layer if self.channel is None else f"{self.layer}:{self.channel}"


def to_pil(image: Any) -> Any:
    """A PIL image (for saving as PNG) from a PIL image, a CHW/1CHW tensor in [0, 1] or an HWC/HW uint8/float array."""
    import numpy as np
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode not in ("RGB", "L") else image
    if hasattr(image, "detach"):  # a torch tensor
        t = image.detach().cpu().float()
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError(f"the gallery stores one image at a time, got a batch of {t.shape[0]}")
            t = t[0]
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"an image tensor must be CHW with 1 or 3 channels, got shape {tuple(t.shape)}")
        array = t.permute(1, 2, 0).numpy()
    else:
        array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"an image array must be HxW or HxWx3, got shape {array.shape}")
    return Image.fromarray(array)


class Gallery:
    """A directory of rendered PNGs indexed by SQLite (``index.sqlite`` plus ``images/``).

    Args:
        data_dir: where the index and the images live; created if missing. ``None`` means
            :func:`default_data_dir`.

    Example::

        gallery = Gallery(tmp_path)
        gallery.add("tiny", "ab12", "conv1", 0, {"steps": 8}, torch.rand(3, 32, 32))
        gallery.get("tiny", "ab12", "conv1", 0, {"steps": 8}).path.exists()  # True
    """

    def __init__(self, data_dir: Union[str, os.PathLike, None] = None) -> None:
        self.data_dir = resolve_data_dir(data_dir)
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ValueError(f"the gallery data directory {str(self.data_dir)!r} is a file, not a directory")
        self.image_dir = self.data_dir / "images"
        self.image_dir.mkdir(parents=True, exist_ok=True)
        self.index_path = self.data_dir / "index.sqlite"
        with closing(self._connect()) as conn, conn:
            conn.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # One short-lived connection per operation: Streamlit reruns the script in different threads.
        return sqlite3.connect(self.index_path, timeout=30)

    def _query(self, sql: str, params: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
        with closing(self._connect()) as conn:
            return conn.execute(sql, params).fetchall()

    def _entry(self, row: Tuple[Any, ...]) -> GalleryEntry:
        id_, model, whash, layer, channel, settings, file, width, height, created = row
        return GalleryEntry(
            id_, model, whash, layer, channel, json.loads(settings), self.image_dir / file, width, height, created
        )

    @staticmethod
    def _check(model: Any, weights_hash: Any, layer: Any, channel: Any) -> None:
        for name, value in (("model", model), ("weights_hash", weights_hash), ("layer", layer)):
            if not isinstance(value, str) or not value:
                raise TypeError(f"{name} must be a non-empty str, got {value!r}")
        if channel is not None and (not isinstance(channel, int) or isinstance(channel, bool) or channel < 0):
            raise ValueError(f"channel must be a non-negative int or None, got {channel!r}")

    def get(
        self, model: str, weights_hash: str, layer: str, channel: Optional[int], settings: Mapping[str, Any]
    ) -> Optional[GalleryEntry]:
        """The stored render for this key, or ``None`` (also when its PNG was deleted by hand).

        Args:
            model: the model's name.
            weights_hash: a hash of its weights (see ``optim.app.model_source.weights_hash``).
            layer: the dotted layer name.
            channel: the channel, or ``None`` for a whole-layer objective.
            settings: the render settings.

        Returns:
            The entry or ``None``.
        """
        self._check(model, weights_hash, layer, channel)
        sql = f"SELECT {_COLUMNS} FROM renders WHERE model=? AND weights_hash=? AND layer=? AND settings_key=? AND "
        sql += "channel IS NULL" if channel is None else "channel=?"
        params: Tuple[Any, ...] = (model, weights_hash, layer, settings_key(settings))
        rows = self._query(sql, params if channel is None else params + (channel,))
        if not rows:
            return None
        entry = self._entry(rows[0])
        return entry if entry.path.is_file() else None

    def add(
        self,
        model: str,
        weights_hash: str,
        layer: str,
        channel: Optional[int],
        settings: Mapping[str, Any],
        image: Any,
    ) -> GalleryEntry:
        """Store a render (replacing any earlier one with the same key).

        Args:
            model: the model's name.
            weights_hash: a hash of its weights.
            layer: the dotted layer name.
            channel: the channel, or ``None``.
            settings: the render settings (JSON values).
            image: a CHW / 1CHW tensor in [0, 1], an HxWx3 array or a PIL image.

        Returns:
            The new entry.
        """
        self._check(model, weights_hash, layer, channel)
        key = settings_key(settings)
        pil = to_pil(image)
        digest = hashlib.sha256(json.dumps([model, weights_hash, layer, channel, key]).encode()).hexdigest()[:24]
        file = f"{digest}.png"
        tmp = self.image_dir / f".{digest}.{os.getpid()}.tmp.png"
        pil.save(tmp, format="PNG")
        os.replace(tmp, self.image_dir / file)  # atomic: a reader never sees half a file
        with closing(self._connect()) as conn, conn:
            conn.execute(
                "INSERT OR REPLACE INTO renders (model, weights_hash, layer, channel, settings_key, settings, "
                "file, width, height, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (model, weights_hash, layer, channel, key, key, file, pil.width, pil.height, time.time()),
            )
        entry = self.get(model, weights_hash, layer, channel, settings)
        if entry is None:  # pragma: no cover - the row was just written
            raise RuntimeError(f"could not read back the render just stored in {self.index_path}")
        return entry

    def get_or_render(
        self,
        model: str,
        weights_hash: str,
        layer: str,
        channel: Optional[int],
        settings: Mapping[str, Any],
        render: Callable[[], Any],
    ) -> Tuple[GalleryEntry, bool]:
        """The stored render for this key, or ``render()``'s image stored under it.

        Args:
            model: the model's name.
            weights_hash: a hash of its weights.
            layer: the dotted layer name.
            channel: the channel, or ``None``.
            settings: the render settings.
            render: called with no argument only on a miss; returns the image.

        Returns:
            ``(entry, hit)`` where ``hit`` says whether the image came from the gallery.
        """
        entry = self.get(model, weights_hash, layer, channel, settings)
        if entry is not None:
            return entry, True
        return self.add(model, weights_hash, layer, channel, settings, render()), False

    def missing_channels(
        self, model: str, weights_hash: str, layer: str, channels: List[int], settings: Mapping[str, Any]
    ) -> List[int]:
        """The channels of ``channels`` that have no stored render with these settings yet."""
        return [c for c in channels if self.get(model, weights_hash, layer, c, settings) is None]

    def entries(
        self, model: Optional[str] = None, layer: Optional[str] = None, weights_hash: Optional[str] = None
    ) -> List[GalleryEntry]:
        """Stored renders, optionally filtered, ordered by model, layer and channel.

        Args:
            model: only this model.
            layer: only this layer.
            weights_hash: only these weights.

        Returns:
            The entries whose PNG files exist.
        """
        where, params = [], []
        for column, value in (("model", model), ("layer", layer), ("weights_hash", weights_hash)):
            if value is not None:
                where.append(f"{column}=?")
                params.append(value)
        sql = f"SELECT {_COLUMNS} FROM renders"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY model, layer, channel, created"
        entries = [self._entry(r) for r in self._query(sql, tuple(params))]
        return [e for e in entries if e.path.is_file()]

    def models(self) -> List[str]:
        """The model names that have renders."""
        return [r[0] for r in self._query("SELECT DISTINCT model FROM renders ORDER BY model")]

    def layers(self, model: str) -> List[str]:
        """The layers of ``model`` that have renders."""
        return [r[0] for r in self._query("SELECT DISTINCT layer FROM renders WHERE model=? ORDER BY layer", (model,))]

    def __len__(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM renders")[0][0])

    def __iter__(self) -> Iterator[GalleryEntry]:
        return iter(self.entries())

    def __repr__(self) -> str:
        return f"Gallery({str(self.data_dir)!r}, {len(self)} renders)"
