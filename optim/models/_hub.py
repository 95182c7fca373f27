"""Downloading published weights into ``torch.hub``'s cache with a SHA-256 check of the cached file.

``torch.hub``'s own ``check_hash`` only works for file names that embed a hash prefix
(``name-<sha256 prefix>.pth``); the files captum publishes do not, so the check here hashes the cached file
itself. With a pinned digest (``sha256=``) a mismatch deletes the file and raises. Without one (a file whose
digest was never published), the digest of the first download is recorded next to the cached file
(``<file>.sha256``) and every later load is checked against it, so a truncated, corrupted or replaced cache
is caught instead of silently loaded.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from typing import Any, Optional
from urllib.parse import urlparse

import torch

__all__ = ["file_sha256", "load_verified_state_dict"]

_CHUNK = 1 << 20


def file_sha256(path: str) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks.

    Args:
        path: the file.

    Returns:
        64 lowercase hex characters.

    Example::

        file_sha256("inception5h.pth")
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_digest_format(sha256: str) -> str:
    value = sha256.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"sha256 must be 64 hex characters, got {sha256!r}")
    return value


def _discard(*paths: str) -> None:
    for path in paths:
        if os.path.exists(path):
            os.remove(path)


def load_verified_state_dict(url: str, sha256: Optional[str] = None, progress: bool = True) -> Any:
    """Download (once, into ``torch.hub.get_dir()/checkpoints``) and load a state dict, checking its hash.

    The file lands where ``torch.hub.load_state_dict_from_url`` would put it, and its digest is checked
    before ``torch.load(..., weights_only=True)`` reads it.

    Args:
        url: where the file is published.
        sha256: its published SHA-256 digest, or ``None`` when there is none (the first download's digest
            is then recorded in ``<file>.sha256`` and later loads must match it).
        progress: show the download's progress bar.

    Returns:
        What the file holds, read with ``weights_only=True`` onto the CPU.

    Raises:
        ValueError: the cached file's digest differs from ``sha256`` or from the recorded one (the file is
            deleted, so the next call downloads it again), or ``sha256`` is not 64 hex characters.

    Example::

        state = load_verified_state_dict(INCEPTION5H_URL)
    """
    expected = None if sha256 is None else _check_digest_format(sha256)
    model_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    file_name = os.path.basename(urlparse(url).path)
    cached = os.path.join(model_dir, file_name)
    record = cached + ".sha256"
    fresh = not os.path.exists(cached)
    if fresh:
        os.makedirs(model_dir, exist_ok=True)
        # torch.hub's downloader writes to a temporary file and moves it into place when complete
        torch.hub.download_url_to_file(url, cached, hash_prefix=None, progress=progress)
    # verified before it is deserialized, so a damaged cache is replaced rather than half-read
    digest = file_sha256(cached)
    if expected is None and os.path.exists(record):
        with open(record, encoding="ascii") as f:
            expected = f.read().strip()
    if expected is not None and digest != expected:
        _discard(cached, record)
        raise ValueError(
            f"{cached} (from {url}) has SHA-256 {digest}, expected {expected}; the file was deleted, so the "
            "next call downloads it again (or pass model_path to load a copy you trust)"
        )
    if expected is None:
        with open(record, "w", encoding="ascii") as f:
            f.write(digest + "\n")
        if fresh:
            warnings.warn(
                f"no SHA-256 is published for {url}; recorded the digest of this download ({digest}) in "
                f"{record}, and later loads are checked against it",
                stacklevel=4,  # the caller of the model factory
            )
    return torch.load(cached, map_location="cpu", weights_only=True)
