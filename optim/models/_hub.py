"""Downloading published weights into ``torch.hub``'s cache with a SHA-256 check of the cached file.

``torch.hub``'s own ``check_hash`` only works for file names that embed a hash prefix
(``name-<sha256 prefix>.pth``); the files captum publishes do not, so the check here hashes the cached file
itself. With a pinned digest (``WEIGHTS_SHA256`` or ``sha256=``) a mismatch deletes the file and raises.
Without one (a file whose digest was never published), the digest of the first download that loads is
recorded next to the cached file (``<file>.sha256``) and every later load is checked against it, so a
truncated, corrupted or replaced cache is caught instead of silently loaded.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import urllib.error
import warnings
from typing import Any, Dict, Optional
from urllib.parse import urlparse

import torch

__all__ = ["WEIGHTS_SHA256", "WeightsDownloadError", "file_sha256", "load_verified_state_dict"]

# Errors of a failed download (urllib's URLError and HTTPError are OSErrors; a dropped connection can also
# surface as an http.client error that is not).
DOWNLOAD_ERRORS = (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException)


class WeightsDownloadError(OSError):
    """Pretrained weights could not be downloaded (offline, proxy, server down).

    Attributes:
        model: the registry name (``None``: a factory called directly).
        url: the file that was being downloaded (``None`` if it could not be determined).
        reason: the network error, in one line.
    """

    def __init__(self, model: Optional[str], url: Optional[str], reason: str) -> None:
        self.model, self.url, self.reason = model, url, reason
        what = "the pretrained weights" + (f" of {model!r}" if model else "")
        where = f"from {url}" if url else "(the URL is in the model factory's documentation)"
        super().__init__(
            f"cannot download {what} {where}: {reason}. Download that file on a machine with a connection and "
            "load it from disk (model_path=FILE for a factory, weights=FILE for load_model, --weights FILE on the "
            "command line), or use random weights (pretrained=False; --no-pretrained)"
        )


def one_line(err: BaseException) -> str:
    """An error's message on one line (its type's name if it has none)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__

#: Published SHA-256 digests of downloadable weights, by URL; ``None`` where no digest is published (the
#: factories register their URLs here). Pin a digest you have verified with
#: ``opt.models.WEIGHTS_SHA256[opt.models.INCEPTION5H_URL] = "<64 hex characters>"``.
WEIGHTS_SHA256: Dict[str, Optional[str]] = {}

_CHUNK = 1 << 20


def file_sha256(path: str) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks.

    Args:
        path: the file.

    Returns:
        64 lowercase hex characters.

    Example::

        >>> with open("hello.txt", "wb") as f:
        ...     _ = f.write(b"hello\\n")
        >>> file_sha256("hello.txt")
        '5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_digest(value: str) -> bool:
    """Whether ``value`` is 64 lowercase hex characters."""
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _check_digest_format(sha256: str) -> str:
    """``sha256`` lowercased and stripped, or a ValueError if it is not a SHA-256 hex digest."""
    value = sha256.strip().lower() if isinstance(sha256, str) else ""
    if not _is_digest(value):
        raise ValueError(f"sha256 must be 64 hex characters, got {sha256!r}")
    return value


def _read_record(record: str) -> Optional[str]:
    """The digest recorded in ``record``, or None if it is missing or not a digest (e.g. half-written)."""
    try:
        with open(record, encoding="ascii") as f:
            value = f.read().strip().lower()
    except (OSError, UnicodeDecodeError):
        return None
    return value if _is_digest(value) else None


def _write_record(record: str, digest: str) -> None:
    """Write ``digest`` to ``record`` atomically (a temporary file moved into place)."""
    tmp = f"{record}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(digest + "\n")
    os.replace(tmp, record)


def _discard(*paths: str) -> None:
    """Delete files, ignoring those another process already deleted."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def load_verified_state_dict(
    url: str, sha256: Optional[str] = None, progress: bool = True, stacklevel: int = 2
) -> Any:
    """Download (once, into ``torch.hub.get_dir()/checkpoints``) and load a state dict, checking its hash.

    The file lands where ``torch.hub.load_state_dict_from_url`` would put it, and its digest is checked
    before ``torch.load(..., weights_only=True)`` reads it.

    Args:
        url: where the file is published.
        sha256: its SHA-256 digest; default ``WEIGHTS_SHA256.get(url)``. Without one, the digest of the first
            download that loads is recorded in ``<file>.sha256`` and later loads must match it (a cached file
            with no valid record is downloaded again rather than trusted).
        progress: show the download's progress bar.
        stacklevel: where the note about an unpinned digest points (2: the caller).

    Returns:
        What the file holds, read with ``weights_only=True`` onto the CPU.

    Raises:
        ValueError: the cached file's digest differs from the pinned or the recorded one (the file is
            deleted, so the next call downloads it again), or ``sha256`` is not 64 hex characters.
        WeightsDownloadError: the download failed (an ``OSError`` naming the URL and the alternatives).

    Example (offline: the file is put in a fresh cache first, so nothing is downloaded)::

        >>> import os
        >>> torch.hub.set_dir("hub")  # a cache in the working directory
        >>> os.makedirs("hub/checkpoints")
        >>> torch.save({"w": torch.ones(2)}, "hub/checkpoints/tiny.pth")
        >>> url = "https://example.com/tiny.pth"  # the cached copy's name is the URL's file name
        >>> load_verified_state_dict(url, sha256=file_sha256("hub/checkpoints/tiny.pth"))
        {'w': tensor([1., 1.])}
        >>> load_verified_state_dict(url, sha256="0" * 64)  # a damaged file is deleted, never unpickled
        Traceback (most recent call last):
        ...
        ValueError: hub/checkpoints/tiny.pth (from https://example.com/tiny.pth) has SHA-256 ..., expected 000...; the file was deleted, so the next call downloads it again (or pass model_path to load a copy you trust)
        >>> os.path.exists("hub/checkpoints/tiny.pth")
        False
    """
    if sha256 is None:
        sha256 = WEIGHTS_SHA256.get(url)
    pinned = None if sha256 is None else _check_digest_format(sha256)
    model_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    file_name = os.path.basename(urlparse(url).path)
    cached = os.path.join(model_dir, file_name)
    record = cached + ".sha256"
    expected = pinned or _read_record(record)
    if expected is None:
        _discard(cached, record)  # nothing to check a cached copy against: fetch a fresh one
    if not os.path.exists(cached):
        os.makedirs(model_dir, exist_ok=True)
        # torch.hub's downloader writes to a temporary file and moves it into place when complete
        try:
            torch.hub.download_url_to_file(url, cached, hash_prefix=None, progress=progress)
        except DOWNLOAD_ERRORS as err:
            raise WeightsDownloadError(None, url, one_line(err)) from err
    # checked before it is deserialized, so a damaged cache is replaced rather than half-read
    digest = file_sha256(cached)
    if expected is not None and digest != expected:
        _discard(cached, record)
        raise ValueError(
            f"{cached} (from {url}) has SHA-256 {digest}, expected {expected}; the file was deleted, so the "
            "next call downloads it again (or pass model_path to load a copy you trust)"
        )
    try:
        state_dict = torch.load(cached, map_location="cpu", weights_only=True)
    except Exception:
        if expected is None:  # an unverified download that is no checkpoint (an error page, say): drop it
            _discard(cached)
        raise
    if expected is None:
        _write_record(record, digest)
        warnings.warn(
            f"no SHA-256 is published for {url}; recorded the digest of this download ({digest}) in {record}, "
            "and later loads are checked against it",
            stacklevel=stacklevel + 1,
        )
    return state_dict
