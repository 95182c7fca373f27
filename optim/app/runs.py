"""Render-job folders in the app: find the runs under the data root and read their images and records.

A run folder is what ``optim render-model`` (:func:`optim.jobs.render_model`) writes: ``job.json`` (the run's
settings), ``<layer>/<channel>.png`` with its record ``<layer>/<channel>.json``, and, once every unit is done,
``index.json`` (the settings and every record, in work-list order) and ``<layer>/index.html``. A run still in
progress (no ``index.json`` yet) is read from the records written so far.

Like the gallery, this module needs neither Streamlit nor a model, and trusts nothing in the folder:

- With ``root=``, the run folder must lie inside that folder (symbolic links followed): the app's root is
  chosen by the operator at launch, a browser user only picks a folder inside it.
- An image is only ever the file ``<folder>/<layer>/<channel>.png`` for a layer of the run's own settings and an
  integer channel, resolved (links followed) and refused, with a warning, if it leaves the run folder or is
  not a plain file; a record whose ``file`` names anything else is refused the same way.

>>> import torch.nn as nn
>>> from optim.jobs import render_model
>>> _ = render_model(nn.Sequential(nn.Conv2d(3, 2, 3)), ["0"], "data/runs/tiny", steps=2, size=16, log=None)
>>> [p.name for p in find_runs("data")]
['tiny']
>>> run = open_run("runs/tiny", root="data")
>>> run.complete, run.layers(), [e.caption for e in run.entries()]
(True, ['0'], ['0:0', '0:1'])
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from .gallery import resolve_data_dir

__all__ = ["RenderRun", "RunEntry", "find_runs", "open_run", "size_text"]

#: The files that mark a folder as a render job.
_MARKERS = ("job.json", "index.json")


@dataclass(frozen=True)
class RunEntry:
    """One rendered channel of a run.

    Attributes:
        layer: the dotted layer name.
        channel: the channel index.
        path: the PNG (absolute, inside the run folder).
        objective_before: the channel's mean activation on the starting image (``None`` if not recorded).
        objective_after: the same on the rendered image.
        rank: the process that rendered it (``None`` if not recorded).
    """

    layer: str
    channel: int
    path: Path
    objective_before: Optional[float]
    objective_after: Optional[float]
    rank: Optional[int]

    @property
    def caption(self) -> str:
        """``"layer:channel"``, as the gallery writes it."""
        return f"{self.layer}:{self.channel}"


@dataclass(frozen=True)
class RenderRun:
    """A render job's folder, read: its settings and the units found done.

    Attributes:
        folder: the run folder (absolute, resolved).
        settings: the run's settings (``index.json``'s ``run``, else ``job.json``): model, weights hash,
            layers, steps, size, batch size, learning rate, seed, objective.
        units: the rendered channels, in work-list order (layer order, then channel).
        complete: whether the run ended (``index.json`` written); otherwise ``units`` is what is done so far.
    """

    folder: Path
    settings: Dict[str, Any]
    units: Tuple[RunEntry, ...]
    complete: bool

    @property
    def model(self) -> str:
        """The model's name as the run recorded it (the command line records the model argument)."""
        return str(self.settings.get("model", "?"))

    def layers(self) -> List[str]:
        """The run's layers that have at least one rendered channel, in the run's order."""
        present = {u.layer for u in self.units}
        return [layer for layer in self.settings.get("layers", []) if layer in present]

    def entries(self, layer: Optional[str] = None) -> List[RunEntry]:
        """The rendered channels, optionally of one layer only."""
        return [u for u in self.units if layer is None or u.layer == layer]

    def summary(self) -> str:
        """One line: model, weights, settings and progress."""
        s = self.settings
        total = "" if self.complete else " so far (in progress: no index.json yet)"
        return (f"{self.model} (weights {s.get('weights_sha256', '?')}): {len(self.units)} channels in "
                f"{len(self.layers())} layers{total}; {size_text(s.get('size'))} px, {s.get('steps')} steps, "
                f"seed {s.get('seed')}")


def size_text(size: Any) -> str:
    """A recorded image size as text: ``"160"`` for a square (an int, as older runs recorded it, or
    ``[160, 160]``), ``"224x288"`` for ``[height, width]``; anything else as it is.

    Example:
        >>> size_text(128), size_text([160, 160]), size_text((224, 288)), size_text(None)
        ('128', '160', '224x288', 'None')
    """
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"
    return str(size)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} cannot be read as JSON ({' '.join(str(err).split())})") from None


def _number(value: Any) -> Optional[float]:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _layer_ok(layer: Any) -> bool:
    return isinstance(layer, str) and bool(layer) and layer not in (".", "..") and not any(c in layer for c in "/\\\0")


def find_runs(root: Union[str, os.PathLike], max_depth: int = 3, limit: int = 200) -> List[Path]:
    """The run folders under ``root``: folders holding ``job.json`` or ``index.json``, at most ``max_depth``
    levels down (``root`` itself is level 0), not following symbolic links, never inside another run.

    Args:
        root: the folder to search (the app's data root).
        max_depth: how deep to look.
        limit: stop after this many runs.

    Returns:
        The folders, resolved, sorted by path.
    """
    base = Path(root).expanduser().resolve()
    found: List[Path] = []
    if not base.is_dir():
        return found
    for folder, dirs, files in os.walk(base, followlinks=False):
        here = Path(folder)
        if any(m in files for m in _MARKERS):
            found.append(here)
            dirs[:] = []  # a run's layer folders hold no runs
            if len(found) >= limit:
                break
            continue
        depth = len(here.relative_to(base).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < max_depth else []
    return sorted(found)


def open_run(folder: Union[str, os.PathLike], *, root: Union[str, os.PathLike, None] = None) -> RenderRun:
    """Read a render job's folder.

    Args:
        folder: the run folder (relative to ``root`` when given).
        root: confine ``folder`` to this folder (see :func:`optim.app.gallery.resolve_data_dir`).

    Returns:
        The :class:`RenderRun`: from ``index.json`` when the run ended, else from ``job.json`` and the unit
        records written so far. Units whose PNG is missing or refused are left out (refusals warn).

    Raises:
        ValueError: ``folder`` leaves ``root``, is not a folder, holds no render job, or its ``job.json`` /
            ``index.json`` is not a run's.
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be a path, got {type(folder).__name__}")
    path = resolve_data_dir(folder, root=root, what="run folder")
    if not path.is_dir():
        raise ValueError(f"the run folder {str(folder)!r} is not a folder ({path})")
    index_path, job_path = path / "index.json", path / "job.json"
    if index_path.is_file():
        index = _read_json(index_path)
        if not isinstance(index, dict) or not isinstance(index.get("run"), dict) or not isinstance(
                index.get("units"), list):
            raise ValueError(f"{index_path} is not a render job's index (it needs 'run' and 'units')")
        settings, records, complete = index["run"], index["units"], True
    elif job_path.is_file():
        settings, complete = _read_json(job_path), False
        if not isinstance(settings, dict):
            raise ValueError(f"{job_path} is not a render job's settings")
        records = []
        for layer in settings.get("layers", []) if isinstance(settings.get("layers"), list) else []:
            if not _layer_ok(layer) or not (path / layer).is_dir():
                continue
            for record_path in (path / layer).glob("*.json"):
                try:
                    records.append(_read_json(record_path))
                except ValueError:
                    continue  # a record being written by a running job; its unit shows up once it is done
    else:
        raise ValueError(f"{path} holds no render job (neither index.json nor job.json); run 'optim render-model "
                         f"... --out {path}' first")
    layers = settings.get("layers")
    if not isinstance(layers, list) or not all(_layer_ok(layer) for layer in layers):
        raise ValueError(f"the run in {path} names no valid layers (settings 'layers': {layers!r})")
    order = {layer: i for i, layer in enumerate(layers)}
    units: Dict[Tuple[str, int], RunEntry] = {}
    for record in records:
        entry = _entry(path, record, order)
        if entry is not None:
            units.setdefault((entry.layer, entry.channel), entry)
    ordered = sorted(units.values(), key=lambda u: (order[u.layer], u.channel))
    return RenderRun(path, dict(settings), tuple(ordered), complete)


def _entry(folder: Path, record: Any, order: Dict[str, int]) -> Optional[RunEntry]:
    if not isinstance(record, dict):
        return None
    layer, channel = record.get("layer"), record.get("channel")
    if layer not in order or isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
        warnings.warn(f"refused a record of {folder}: layer {layer!r}, channel {channel!r} is not a unit of the run",
                      UserWarning, stacklevel=3)
        return None
    expected = f"{layer}/{channel}.png"
    png = (folder / layer / f"{channel}.png").resolve()
    if record.get("file", expected) != expected:
        warnings.warn(f"refused the unit {layer}:{channel} of {folder}: its file {record.get('file')!r} is not "
                      f"{expected!r} inside the run folder", UserWarning, stacklevel=3)
        return None
    if png.parent.parent != folder or png.parent.name != layer:
        warnings.warn(f"refused the unit {layer}:{channel} of {folder}: {expected} is a link to {png}, outside "
                      f"{folder / layer}", UserWarning, stacklevel=3)
        return None
    if not png.is_file():
        return None
    rank = record.get("rank")
    return RunEntry(layer, channel, png, _number(record.get("objective_before")),
                    _number(record.get("objective_after")), rank if isinstance(rank, int) else None)
