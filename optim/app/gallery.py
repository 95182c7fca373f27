"""A persistent gallery of renders: a SQLite index plus one PNG file per image in a user-chosen directory.

Every render is keyed by the model name, a hash of its weights, the layer, the channel and the render
settings, so the app (or a script) looks an image up before rendering it and nothing is rendered twice.
This module needs neither Streamlit nor a model: it is plain ``sqlite3`` and PIL.

Safety and durability:

- With ``root=``, the data directory must lie inside that folder (the app's root is chosen by the
  operator at launch; a browser user only picks a folder inside it): a path that leaves it is refused.
- Every image path, including the ``file`` column of the index, is resolved (symbolic links followed) and
  refused, with a warning, if it leaves the gallery's ``images`` folder: such a row is never served.
- Writes are atomic and unique per writer (a temporary file per call, moved into place), so any number of
  threads and processes may add the same key at once: every stored PNG is complete. The index uses SQLite's
  write-ahead log (``index.sqlite-wal`` and ``-shm`` appear while it is open), so keep the gallery on a local
  disk, as SQLite advises for any database with concurrent writers.
- A damaged ``index.sqlite`` raises :class:`GalleryIndexError` naming the file and how to recover; nothing
  is deleted. :meth:`Gallery.recover` moves the damaged index aside and rebuilds it from the images (each
  PNG carries its key in a text chunk).

>>> import torch
>>> gallery = Gallery("my-gallery")
>>> entry, hit = gallery.get_or_render("tiny", "ab12", "conv1", 0, {"steps": 8}, lambda: torch.rand(3, 16, 16))
>>> hit, entry.caption, entry.path.parent.name
(False, 'conv1:0', 'images')
>>> gallery.get_or_render("tiny", "ab12", "conv1", 0, {"steps": 8}, lambda: torch.rand(3, 16, 16))[1]
True
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import warnings
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

__all__ = [
    "Gallery",
    "GalleryEntry",
    "GalleryIndexError",
    "DATA_DIR_ENV",
    "default_data_dir",
    "resolve_data_dir",
    "settings_key",
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
_SCHEMA_COLUMNS = ("id", "model", "weights_hash", "layer", "channel", "settings_key", "settings", "file", "width",
                   "height", "created")

#: The PNG text chunk holding an image's gallery key (what :meth:`Gallery.recover` rebuilds the index from).
PNG_KEY_CHUNK = "optim-gallery"


def __getattr__(name: str) -> Any:
    # to_pil moved to optim.images.export (imported on use: this module stays free of torch)
    if name == "to_pil":
        from ..images.export import to_pil

        return to_pil
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class GalleryIndexError(ValueError):
    """The gallery's ``index.sqlite`` cannot be read (damaged, or not a gallery index). Nothing was changed.

    Attributes:
        index_path: the index file.
    """

    def __init__(self, index_path: Path, reason: str) -> None:
        self.index_path = index_path
        data_dir = index_path.parent
        super().__init__(
            f"the gallery index {index_path} cannot be read ({reason}); nothing was changed and the images in "
            f"{data_dir / 'images'} are untouched. To recover, run: python -c \"from optim.app import Gallery; "
            f"Gallery.recover({str(data_dir)!r})\" (it moves the damaged index aside and rebuilds the index from "
            "the images), or move index.sqlite elsewhere to start an empty gallery there"
        )


def _is_damage(err: sqlite3.DatabaseError) -> bool:
    """Whether SQLite's error says the index file itself is bad (corrupt, not a database, not a gallery index)."""
    name = getattr(err, "sqlite_errorname", None) or ""  # Python >= 3.11; the text for older ones and for
    # the errors SQLite files under SQLITE_ERROR (a table or column that is missing)
    text = str(err)
    return (name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB"
            or any(w in text for w in ("malformed", "not a database", "no such table", "no such column",
                                   "has no column named")))


def default_data_dir() -> Path:
    """The gallery directory used when the user names none: ``$OPTIM_DATA_DIR``, else the per-user data
    directory (``$XDG_DATA_HOME/optim-gallery``, by default ``~/.local/share/optim-gallery``)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "optim-gallery"


def resolve_data_dir(
    data_dir: Union[str, os.PathLike, None] = None,
    root: Union[str, os.PathLike, None] = None,
    *,
    what: str = "gallery directory",
) -> Path:
    """The gallery directory a user named (a flag or a text field), resolved.

    Args:
        data_dir: a path, or ``None`` / ``""`` for the default: ``root`` when given, else
            :func:`default_data_dir`.
        root: confine the result to this folder: ``data_dir`` is then taken relative to it, and refused if it
            resolves (symbolic links followed) outside it, e.g. ``"../x"`` or an absolute path elsewhere.
        what: how the error names the folder (the app's run browser confines run folders alike).

    Returns:
        The absolute path (not created).

    Raises:
        ValueError: ``data_dir`` leaves ``root``.
        TypeError: ``data_dir`` is not a path.

    >>> resolve_data_dir("a/b", root="/srv/gallery").as_posix()
    '/srv/gallery/a/b'
    >>> resolve_data_dir("../x", root="/srv/gallery")
    Traceback (most recent call last):
    ...
    ValueError: the gallery directory '../x' leaves the data root '/srv/gallery': choose a folder inside it
    """
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a path, got {type(data_dir).__name__}")
    empty = data_dir is None or str(data_dir).strip() == ""
    if root is None:
        return default_data_dir().resolve() if empty else Path(data_dir).expanduser().resolve()  # type: ignore[arg-type]
    base = Path(root).expanduser().resolve()
    if empty:
        return base
    text = str(data_dir).strip()
    candidate = (base / text).resolve()  # an absolute `text` replaces `base`: caught just below
    if candidate != base and base not in candidate.parents:
        raise ValueError(
            f"the {what} {text!r} leaves the data root {str(base)!r}: choose a folder inside it"
        )
    return candidate


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


class Gallery:
    """A directory of rendered PNGs indexed by SQLite (``index.sqlite`` plus ``images/``).

    Args:
        data_dir: where the index and the images live; created if missing. ``None`` means ``root``, or
            :func:`default_data_dir` without one.
        root: confine ``data_dir`` to this folder (see :func:`resolve_data_dir`).

    A folder this user cannot write is opened read-only (browsing works; adding raises ``PermissionError``).

    Raises:
        ValueError: ``data_dir`` leaves ``root`` or is a file.
        GalleryIndexError: ``index.sqlite`` exists and cannot be read (damaged, or not a gallery index).
        sqlite3.OperationalError: here and in every method, as SQLite raised it, when the index is fine but
            cannot be used now: busy past the 60 s timeout, read-only, a full disk, an I/O error.

    >>> import torch
    >>> gallery = Gallery("demo")
    >>> _ = gallery.add("tiny", "ab12", "conv1", 0, {"steps": 8}, torch.rand(3, 32, 32))
    >>> gallery.get("tiny", "ab12", "conv1", 0, {"steps": 8}).path.is_file()
    True
    >>> Gallery("../elsewhere", root=".")
    Traceback (most recent call last):
    ...
    ValueError: the gallery directory '../elsewhere' leaves the data root ...
    """

    def __init__(
        self, data_dir: Union[str, os.PathLike, None] = None, *, root: Union[str, os.PathLike, None] = None
    ) -> None:
        self.data_dir = resolve_data_dir(data_dir, root=root)
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ValueError(f"the gallery data directory {str(self.data_dir)!r} is a file, not a directory")
        self.image_dir = self.data_dir / "images"
        self.image_dir.mkdir(parents=True, exist_ok=True)
        self._image_root = self.image_dir.resolve()
        if self._image_root.parent != self.data_dir:
            raise ValueError(f"{str(self.image_dir)!r} is a link out of the gallery directory; refusing to use it")
        self.index_path = self.data_dir / "index.sqlite"
        # A folder this user cannot write (read-only media, another user's gallery) is browsed read-only. A
        # write-ahead-log index is read through its -shm file, which such a folder may not hold unless its owner
        # has the index open: then SQLite is told the file is immutable (no lock files; a write the owner makes
        # meanwhile is not seen).
        self._read_only = self.index_path.exists() and not os.access(self.data_dir, os.W_OK)
        self._immutable = False
        if self._read_only:
            try:
                with closing(self._connect()) as conn:
                    conn.execute("PRAGMA schema_version").fetchone()
            except sqlite3.OperationalError as err:
                self._immutable = not _is_damage(err)
        if not self._read_only:
            new_index = not self.index_path.exists() or self.index_path.stat().st_size == 0
            with self._database() as conn:
                self._use_write_ahead_log(conn, new_index)
            with self._transaction() as conn:
                conn.execute(_SCHEMA)
        with self._database() as conn:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(renders)")}
        missing = [c for c in _SCHEMA_COLUMNS if c not in columns]
        if missing:
            raise GalleryIndexError(self.index_path, f"not a gallery index: its table 'renders' lacks {missing}")

    def _use_write_ahead_log(self, conn: sqlite3.Connection, new_index: bool) -> None:
        """Put the index in SQLite's write-ahead-log mode (stored in the file, so once per index).

        Readers then never meet a writer's rollback journal, which under many concurrent writers (threads and
        processes) surfaced as sporadic "disk I/O error"s. Switching rewrites the file's header, so an index an
        older version wrote passes SQLite's integrity check first: a damaged one raises and stays byte for byte
        as it was. Where the file refuses the switch (read-only) the index keeps its mode.
        """
        if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        if not new_index:
            problems = [" ".join(row[0].split()) for row in conn.execute("PRAGMA integrity_check(5)").fetchall()]
            if problems != ["ok"]:
                raise GalleryIndexError(self.index_path, "; ".join(problems) + ", integrity_check")
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as err:
            if not (getattr(err, "sqlite_errorname", None) or "SQLITE_READONLY").startswith("SQLITE_READONLY"):
                raise

    def _connect(self) -> sqlite3.Connection:
        # One short-lived connection per operation: Streamlit reruns the script in different threads.
        # IMMEDIATE: a write transaction takes the write lock as it begins, where SQLite waits for it (up to the
        # timeout); a deferred one would have to upgrade a read lock later, which SQLite refuses at once if
        # another writer committed in between.
        if self._read_only:
            flags = "mode=ro&immutable=1" if self._immutable else "mode=ro"
            return sqlite3.connect(f"{self.index_path.as_uri()}?{flags}", uri=True, timeout=60,
                                   isolation_level="IMMEDIATE")
        return sqlite3.connect(self.index_path, timeout=60, isolation_level="IMMEDIATE")

    @contextmanager
    def _database(self) -> Iterator[sqlite3.Connection]:
        """A connection whose errors about a damaged index become :class:`GalleryIndexError`."""
        try:
            with closing(self._connect()) as conn:
                yield conn
        except sqlite3.DatabaseError as err:
            if not _is_damage(err):
                raise  # busy, read-only, full disk, I/O: the index may be fine, so no advice to rebuild it
            text = " ".join(str(err).split())
            name = getattr(err, "sqlite_errorname", None)
            raise GalleryIndexError(self.index_path, f"{text}, {name}" if name else text) from err

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._database() as conn, conn:
            yield conn

    def _query(self, sql: str, params: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
        with self._database() as conn:
            return conn.execute(sql, params).fetchall()

    def _image_path(self, file: Any, row_id: Any = None) -> Optional[Path]:
        """The image file a row names, or None (with a warning) if it is not a plain file inside ``images/``."""
        path = None
        if isinstance(file, str) and file and "\x00" not in file:
            candidate = (self.image_dir / file).resolve()
            if candidate.parent == self._image_root:
                path = candidate
        if path is None:
            warnings.warn(
                f"refused row {row_id} of {self.index_path}: its file {file!r} is not inside {self._image_root}",
                UserWarning,
                stacklevel=3,
            )
        return path

    def _entry(self, row: Tuple[Any, ...]) -> Optional[GalleryEntry]:
        id_, model, whash, layer, channel, settings, file, width, height, created = row
        path = self._image_path(file, id_)
        if path is None:
            return None
        try:
            values = json.loads(settings)
        except (TypeError, ValueError):
            warnings.warn(f"skipped row {id_} of {self.index_path}: its settings are not JSON", UserWarning,
                          stacklevel=3)
            return None
        return GalleryEntry(id_, model, whash, layer, channel, values, path, width, height, created)

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

        Raises:
            GalleryIndexError: the index cannot be read.
        """
        self._check(model, weights_hash, layer, channel)
        sql = f"SELECT {_COLUMNS} FROM renders WHERE model=? AND weights_hash=? AND layer=? AND settings_key=? AND "
        sql += "channel IS NULL" if channel is None else "channel=?"
        params: Tuple[Any, ...] = (model, weights_hash, layer, settings_key(settings))
        rows = self._query(sql, params if channel is None else params + (channel,))
        if not rows:
            return None
        entry = self._entry(rows[0])
        return entry if entry is not None and entry.path.is_file() else None

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

        Raises:
            ValueError: an image with non-finite values or of a wrong shape (nothing is written).
            GalleryIndexError: the index cannot be read (the image file is written, the index unchanged).
            PermissionError: the gallery folder is read-only for this user (nothing is written).
        """
        from ..images.export import save_png, to_pil

        self._check(model, weights_hash, layer, channel)
        if self.read_only:
            raise PermissionError(f"the gallery {self.data_dir} is read-only for this user: nothing can be added")
        key = settings_key(settings)
        pil = to_pil(image)
        digest = hashlib.sha256(json.dumps([model, weights_hash, layer, channel, key]).encode()).hexdigest()[:24]
        file = f"{digest}.png"
        # Atomic and unique per writer: each call writes its own temporary file and moves it into place, so
        # concurrent adds of one key (threads or processes) leave one complete PNG, never a mix.
        record = {"model": model, "weights_hash": weights_hash, "layer": layer, "channel": channel,
                  "settings": json.loads(key)}
        save_png(pil, self.image_dir / file, metadata={PNG_KEY_CHUNK: json.dumps(record, sort_keys=True)})
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO renders (model, weights_hash, layer, channel, settings_key, settings, "
                "file, width, height, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (model, weights_hash, layer, channel, key, key, file, pil.width, pil.height, time.time()),
            )
        entry = self.get(model, weights_hash, layer, channel, settings)
        if entry is None:  # pragma: no cover - the row was just written
            raise RuntimeError(f"could not read back the render just stored in {self.index_path}")
        return entry

    @classmethod
    def recover(
        cls, data_dir: Union[str, os.PathLike], *, root: Union[str, os.PathLike, None] = None
    ) -> Tuple["Gallery", int, List[Path]]:
        """Rebuild a damaged (or lost) index from the images, deleting nothing.

        The old ``index.sqlite`` (and its journal files) is renamed to ``index.sqlite.damaged-<time>``, a new
        index is created, and every PNG in ``images/`` whose text chunk holds its gallery key is indexed again.

        Args:
            data_dir: the gallery directory.
            root: as for :class:`Gallery`.

        Returns:
            ``(gallery, indexed, skipped)``: the gallery, the number of images indexed, and the PNGs that carry
            no key (written by an older version; they stay where they are).

        >>> import torch
        >>> _ = Gallery("g").add("m", "h", "l", 1, {"steps": 2}, torch.rand(3, 4, 4))
        >>> _ = Path("g/index.sqlite").write_bytes(b"garbage")
        >>> Gallery("g")
        Traceback (most recent call last):
        ...
        optim.app.gallery.GalleryIndexError: the gallery index ... cannot be read (file is not a database...); ...
        >>> gallery, indexed, skipped = Gallery.recover("g")
        >>> indexed, skipped, len(gallery), sorted(p.name.split("-")[0] for p in Path("g").glob("index.sqlite*"))
        (1, [], 1, ['index.sqlite', 'index.sqlite.damaged'])
        """
        from PIL import Image

        folder = resolve_data_dir(data_dir, root=root)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-journal", "-wal", "-shm"):
            old = folder / f"index.sqlite{suffix}"
            if old.exists():
                target = folder / f"index.sqlite.damaged-{stamp}{suffix}"
                n = 1
                while target.exists():
                    target = folder / f"index.sqlite.damaged-{stamp}.{n}{suffix}"
                    n += 1
                os.replace(old, target)
        gallery = cls(folder)
        indexed, skipped = 0, []
        for path in sorted(gallery.image_dir.glob("*.png")):
            if path.name.startswith("."):
                continue
            try:
                with Image.open(path) as im:
                    record = json.loads(im.text.get(PNG_KEY_CHUNK, "null"))  # type: ignore[attr-defined]
                    width, height = im.size
                key = settings_key(record["settings"])
                row = (record["model"], record["weights_hash"], record["layer"], record["channel"], key, key,
                       path.name, width, height, path.stat().st_mtime)
            except (OSError, ValueError, TypeError, KeyError):
                skipped.append(path)
                continue
            with gallery._transaction() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO renders (model, weights_hash, layer, channel, settings_key, settings, "
                    "file, width, height, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row,
                )
            indexed += 1
        return gallery, indexed, skipped

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
        if self.read_only:  # before the render: its result could not be stored
            raise PermissionError(f"the gallery {self.data_dir} is read-only for this user: {layer}:{channel} is "
                                  "not in it and a new render cannot be stored")
        return self.add(model, weights_hash, layer, channel, settings, render()), False

    @property
    def read_only(self) -> bool:
        """Whether this user can only browse the gallery (its folder is not writable)."""
        return self._read_only

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
        return [e for e in entries if e is not None and e.path.is_file()]

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
