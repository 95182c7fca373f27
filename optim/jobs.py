"""Whole-model render jobs: every channel of the chosen layers, split among the processes of a ``torchrun`` job.

OpenAI Microscope rendered every channel of every layer of InceptionV1; this is that job for any model, on
PyTorch's own distributed engine (``torch.distributed``, elastic launch with ``torchrun``; gloo on CPU, NCCL on
GPU; any number of processes and nodes).

How a job runs:

- **Work list.** Every ``(layer, channel)`` of the chosen layers, in layer order, cut into batches of
  ``batch_size`` channels of one layer. Batch ``b`` goes to rank ``b % world_size``. A batch has the same members
  whatever the number of processes, and each image has its own random stream (key: its channel), so the images
  are the same bytes whatever the number of processes or nodes.
- **Units.** Each finished channel is written atomically as ``<layer>/<channel>.png`` and its record
  ``<layer>/<channel>.json`` (layer, channel, seed, objective before and after, file, rank). A rerun, or
  ``torchrun``'s own restart after a worker died (``--max-restarts``), skips every unit whose record exists and
  re-renders the rest: nothing is lost and nothing is written twice.
- **Inputs.** The image size and input normalization are the ones every render uses
  (:func:`optim.models.preprocess.render_inputs`): ``size=None`` is the model's native size (timm, torchvision,
  Hugging Face configs), else ``DEFAULT_SIZE``; a model that declares a mean and std sees its normalized image
  (the probe pass, the render and the recorded objectives alike). The resolved ``[height, width]``, the
  normalization and the render defaults not given as arguments are part of the job's settings.
- **End.** After a barrier, rank 0 merges the records into ``index.json`` (the run: model, weights hash,
  settings; then one entry per unit in work-list order) and writes a static ``index.html`` contact sheet per
  layer (``<layer>/index.html``) that opens in a browser with no server.

A job folder belongs to one run: ``job.json`` holds its settings, and a rerun with other settings is refused.

Example (one process; ``torchrun --nproc_per_node 4 -m optim render-model ...`` for four):

    >>> import tempfile
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> with tempfile.TemporaryDirectory() as out:
    ...     summary = render_model(net, ["0", "2"], out, steps=2, size=16, progress=False, log=None)
    ...     index = json.loads((Path(out) / "index.json").read_text())
    >>> summary["units"], [(u["layer"], u["channel"]) for u in index["units"]][:3], index["run"]["size"]
    (6, [('0', 0), ('0', 1), ('0', 2)], [16, 16])
"""
from __future__ import annotations

import html
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .optimization.defaults import DEFAULT_STEPS
from .optimization.progress import StepCallback

__all__ = ["render_model", "job_units", "distributed_context"]

JOB_VERSION = 1


def _layer_dir(layer: str) -> str:
    # one folder per layer; dotted names are already safe path components once '/' and '\\' are excluded
    if not layer or layer in (".", "..") or any(c in layer for c in "/\\\0"):
        raise ValueError(f"layer name {layer!r} cannot name a folder")
    return layer


def job_units(
    model: nn.Module,
    layers: Sequence[str],
    size: Union[int, Sequence[int]],
    *,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> List[Tuple[str, int]]:
    """Every ``(layer, channel)`` of ``layers``, in order, from one probe forward pass at ``size`` px (an int or
    ``(height, width)``), through ``preprocess`` (the render's input normalization) when given.

    Example:
        >>> job_units(nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 3, 1)), ["1", "0"], 8)
        [('1', 0), ('1', 1), ('1', 2), ('0', 0), ('0', 1)]
    """
    from .models.selection import channel_counts

    if isinstance(layers, str) or not layers:
        raise ValueError(f"layers must be a non-empty list of dotted layer names, got {layers!r}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers names a layer twice: {list(layers)}")
    counts = channel_counts(model, list(layers), size, preprocess=preprocess)
    units = [(layer, c) for layer, n in zip(layers, counts) for c in range(n)]
    return units


class distributed_context:  # noqa: N801 (a context manager read as a function)
    """Join the ``torchrun`` job described by the environment (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``, ...).

    The job needs no collective, only its rank and two barriers, so it meets the other processes through
    torch.distributed's key-value store (the ``TCPStore`` that ``torchrun``'s agent hosts, under a prefix per
    restart attempt) rather than a gloo or NCCL process group: a restarted group then has nothing to reconnect
    but the store (gloo's full-mesh connect after a restart hung now and then on a loaded machine). Inside a
    program that already initialized a process group, that group's barrier is used. Without ``WORLD_SIZE`` (a
    plain ``python`` run) it is a job of one process.

    Returns (as the context value) itself, with ``rank``, ``world_size`` and ``barrier(name)``.
    """

    def __init__(self, timeout_s: float = 1800.0) -> None:
        self.timeout_s = timeout_s
        self.rank, self.world_size = 0, 1
        self._store: Any = None
        self._pg = False

    def __enter__(self) -> "distributed_context":
        import datetime

        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            self.rank, self.world_size, self._pg = dist.get_rank(), dist.get_world_size(), True
            return self
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return self
        self.rank, self.world_size = int(os.environ["RANK"]), world
        # torchrun's agent hosts the store; under a launcher without one, rank 0 hosts it
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
            is_master=(self.rank == 0 and not agent_store), timeout=datetime.timedelta(seconds=self.timeout_s),
        )
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "job")
        self._store = dist.PrefixStore(f"optim.jobs/{run_id}/{self._round(store, run_id)}", store)
        return self

    def _round(self, store: Any, run_id: str) -> int:
        """The number every rank of this (re)start agrees on, for a fresh key prefix.

        Each rank counts its own starts (torchrun's TORCHELASTIC_RESTART_COUNT is counted per node: a healthy
        node's ranks would reuse old keys). A rank that died before it got here in an earlier round (killed while
        loading its model) is behind the others: it catches up to the highest count. A count is agreed when every
        rank's count equals it and every rank has said so (an arrival under that count): equal counts alone can be
        stale ones of ranks that have not restarted yet, but no rank arrives at a count that any rank has passed.
        Before this, the ranks of one round could use two prefixes and wait for each other for ever.
        """
        import time

        def key(rank: int) -> str:
            return f"optim.jobs/{run_id}/starts/{rank}"

        mine, arrived = store.add(key(self.rank), 1), 0
        while True:
            counts = [store.add(key(rank), 0) for rank in range(self.world_size)]
            if max(counts) > mine:
                mine = store.add(key(self.rank), max(counts) - mine)
                continue
            if min(counts) == mine:
                arrivals = f"optim.jobs/{run_id}/arrived/{mine}"
                if arrived != mine:
                    store.add(arrivals, 1)
                    arrived = mine
                if store.add(arrivals, 0) >= self.world_size:
                    return mine
            time.sleep(0.2)  # a rank of this round has not started yet; a dead one ends the job through torchrun

    def barrier(self, name: str) -> None:
        """Wait until every process of the job has called ``barrier(name)``."""
        if self._pg:
            import torch.distributed as dist

            dist.barrier()
        elif self._store is not None:
            import datetime

            if self._store.add(f"{name}/count", 1) == self.world_size:
                self._store.set(f"{name}/done", b"1")
            while True:  # other ranks may still have long work; a dead rank ends the job through torchrun
                try:
                    self._store.wait([f"{name}/done"], datetime.timedelta(seconds=self.timeout_s))
                    return
                except RuntimeError as err:  # a timeout: wait again
                    if "timeout" not in str(err).lower() and "timed out" not in str(err).lower():
                        raise

    def __exit__(self, *exc: Any) -> None:
        self._store = None


def _write_json(path: Path, data: Any) -> None:
    from .images.export import atomic_write

    text = json.dumps(data, indent=1, sort_keys=True).encode()
    atomic_write(path, lambda f: f.write(text))


def _read_record(path: Path) -> Optional[Dict[str, Any]]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    png = path.with_suffix(".png")
    return record if isinstance(record, dict) and png.is_file() else None


def _render_defaults() -> Dict[str, Any]:
    """The render defaults a job does not take as arguments (the ``DEFAULT_*`` constants other than size, lr and
    steps: spectrum decay, lr schedule, the transforms' scale range, weight decay; the default image's module types
    and the default optimizer's class), as JSON values: a job resumed under other defaults would mix two kinds of
    images, so they are in its settings."""
    from .optimization import defaults

    # the job's own size, lr, steps and iterate averaging (``_job_average``) replace these
    given = {"DEFAULT_SIZE", "DEFAULT_LR", "DEFAULT_STEPS", "DEFAULT_AVERAGE"}
    names = [n for n in defaults.__all__ if n.startswith("DEFAULT_") and n not in given]
    described: Dict[str, Any] = {
        n[len("DEFAULT_"):].lower(): json.loads(json.dumps(getattr(defaults, n))) for n in sorted(names)
    }
    # what no constant names: the default image's pieces (its squash changed in issue 12) and optimizer; built
    # aside so that the caller's random stream is untouched
    with torch.random.fork_rng(devices=[]):
        described["image"] = [type(m).__name__ for m in defaults.default_image(4).modules()]
    described["optimizer"] = type(defaults.make_optimizer(None, [torch.zeros(1, requires_grad=True)])).__name__
    return described


def _job_average(average: Optional[float]) -> Dict[str, Any]:
    """The iterate averaging a job's renders use (their images start from noise), as recorded: the weighting and its
    window, so that ``None`` and the default written out resume one another, and a job an older optim began with an
    exponential moving average (``average`` was its decay) is not resumed with a window of the same number."""
    from .optimization.defaults import resolve_average

    return {"weights": "polynomial", "window": resolve_average(average)}


def _normalization(preprocess: Any) -> Optional[Dict[str, Any]]:
    """How a job's images are normalized before the model, as JSON values (``None``: not at all)."""
    if preprocess is None:
        return None
    mean, std = getattr(preprocess, "mean", None), getattr(preprocess, "std", None)
    if mean is None or std is None:
        return {"preprocess": repr(preprocess)}
    return {"mean": [float(v) for v in torch.as_tensor(mean).flatten()],
            "std": [float(v) for v in torch.as_tensor(std).flatten()]}


#: The default image and optimizer of the render defaults that recorded neither (issue 12's weight decay and
#: 1/f^1.5 came with them), so a job begun then resumes.
_UNRECORDED_PIECES = {"image": ["NaturalImage", "ToRGB", "AlgebraicSigmoid", "FFTImage"], "optimizer": "AdamW"}


def _upgrade_settings(old: Dict[str, Any]) -> Dict[str, Any]:
    """An older job.json read as this version writes it: an int ``size`` is the square ``[size, size]``; render
    defaults with issue 12's weight decay but no record of the image and optimizer had ``_UNRECORDED_PIECES``; an
    ``average`` recorded as a number was an exponential moving average's decay (0: the last image, which is a
    polynomial window of 0 too; none recorded: older than averaging, the last image), and ``render_defaults``
    repeated it."""
    size = old.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        old = {**old, "size": [size, size]}
    recorded = old.get("render_defaults")
    if isinstance(recorded, dict) and "weight_decay" in recorded and not set(_UNRECORDED_PIECES) & set(recorded):
        recorded = {**recorded, **_UNRECORDED_PIECES}
        old = {**old, "render_defaults": recorded}
    if isinstance(recorded, dict) and "average" in recorded:
        old = {**old, "render_defaults": {k: v for k, v in recorded.items() if k != "average"}}
    average = old.get("average", 0.0)  # a job older than averaging rendered the last image
    if isinstance(average, (int, float)) and not isinstance(average, bool):
        old = {**old, "average": {"weights": "polynomial", "window": 0.0} if average == 0 else
               {"weights": "exponential", "decay": average}}
    return old


_NOT_RECORDED = object()


def _shown(value: Any) -> str:
    if value is _NOT_RECORDED:
        return "not recorded"
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."  # a long layer list would fill the screen


def _differences(keys: Sequence[str], old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """``key: old in the job, new now`` for each key; a nested dict (``render_defaults``) names its own keys."""
    lines = []
    for key in keys:
        before, now = old.get(key, _NOT_RECORDED), new.get(key, _NOT_RECORDED)
        if isinstance(before, dict) and isinstance(now, dict):
            inner = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            lines += [f"{key}.{k}: {_shown(before.get(k, _NOT_RECORDED))} in the job, "
                      f"{_shown(now.get(k, _NOT_RECORDED))} now" for k in inner]
        else:
            lines.append(f"{key}: {_shown(before)} in the job, {_shown(now)} now")
    return lines


def _settings_file(out: Path, settings: Dict[str, Any]) -> None:
    path = out / "job.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError as err:
            raise ValueError(f"{path} is damaged ({err}); move it away to start the job afresh") from err
        if not isinstance(old, dict):
            raise ValueError(f"{path} is damaged (not a JSON object); move it away to start the job afresh")
        old = _upgrade_settings(old)
        # a setting an older version did not record (None here) is the same as a missing one
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            library = (" (render_defaults are the library's own: the optim version that began the job resumes it)"
                       if "render_defaults" in changed else "")
            if isinstance(old.get("average"), dict) and old["average"].get("weights") == "exponential":
                library += (" (its average is an exponential moving average's decay, as optim before polynomial "
                            "averaging recorded it: that version resumes the job)")
            raise ValueError(
                f"{out} holds a job with other settings ({'; '.join(_differences(changed, old, settings))}); use "
                f"another folder or the same settings to resume it{library}"
            )
        return
    _write_json(path, settings)


def _channel_objective(
    model: nn.Module,
    layer: str,
    channels: Sequence[int],
    images: torch.Tensor,
    preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> List[float]:
    """Each image's mean activation of its own channel (the objective ``render_layer`` maximizes, read through the
    layer's layout: a hidden unit of a token layer, the last dim of a channels-last one), untransformed but through
    the render's ``preprocess`` (the model's input normalization)."""
    from ._utils import model_device_dtype
    from .activations import record_activations
    from .loss import ChannelActivation

    device, dtype = model_device_dtype(model)
    images = images.to(device=device, dtype=dtype)
    if preprocess is not None:
        images = preprocess(images)
    acts = record_activations(model, layer, images)
    return [float(ChannelActivation(layer, c, batch_index=i)(acts).mean()) for i, c in enumerate(channels)]


def _contact_sheet(out: Path, layer: str, units: List[Dict[str, Any]], title: str) -> None:
    from .images.export import atomic_write

    cells = "\n".join(
        f'<figure><img src="{html.escape(Path(u["file"]).name)}" alt="{html.escape(layer)} channel {u["channel"]}" '
        f'loading="lazy"><figcaption>{u["channel"]}<br><small>{u["objective_after"]:.3g}</small></figcaption></figure>'
        for u in units
    )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)} {html.escape(layer)}</title>
<style>body{{font-family:sans-serif;margin:1em}} main{{display:flex;flex-wrap:wrap;gap:6px}}
figure{{margin:0;text-align:center;font-size:12px}} img{{width:128px;height:auto;image-rendering:pixelated}}</style>
</head><body><h1>{html.escape(title)}: {html.escape(layer)}</h1>
<p>{len(units)} channels; the number under each image is its objective (mean activation) after rendering.</p>
<main>
{cells}
</main></body></html>
"""
    atomic_write(out / _layer_dir(layer) / "index.html", lambda f: f.write(page.encode()))


def render_model(
    model: nn.Module,
    layers: Sequence[str],
    out: Union[str, os.PathLike],
    *,
    steps: int = DEFAULT_STEPS,
    size: Union[None, int, Sequence[int]] = None,
    batch_size: int = 16,
    lr: Optional[float] = None,
    seed: int = 0,
    average: Optional[float] = None,
    progress: bool = True,
    log: Optional[Callable[[str], None]] = print,
    model_name: Optional[str] = None,
    callback: Optional[StepCallback] = None,
) -> Dict[str, Any]:
    """Render every channel of ``layers`` into ``out``; run under ``torchrun`` to split the work among processes.

    Args:
        model: the network (left as it was), already on this process's device.
        layers: dotted layer names.
        out: the job folder (created); rerun into it to resume.
        steps: optimization steps per channel.
        size: image side in pixels, or ``(height, width)``; ``None``: the model's native size, else
            ``DEFAULT_SIZE`` (:func:`optim.models.preprocess.render_inputs`, as every render). The resolved size is
            recorded as ``[height, width]`` in ``job.json`` and ``index.json``.
        batch_size: channels of one layer rendered together; part of the job's identity (the images are
            the same bytes whatever the number of processes, for one batch size).
        lr: learning rate at the first step (``None``: ``DEFAULT_LR``; it decays as in every render).
        seed: the job's seed.
        average: iterate averaging, as :func:`~optim.render.render_vis` takes it (``None``: its default).
        progress: a line per finished batch on each rank (units done / total, channels per minute).
        log: where progress lines go (``None``: nowhere).
        model_name: how the index names the model (default its class name). It is part of the job's settings:
            a job the CLI began (which names the model as given, ``efficientnet_lite0`` or ``module:attr``)
            resumes from Python with the same ``model_name``.
        callback: ``callback(step, loss, images)`` after every step of every batch this process renders (as
            :func:`~optim.render.render_layer` calls it: one batch is one ``render_layer`` call, whose steps count
            from 0); not part of the job's identity.

    Returns:
        ``{"units": total units, "rendered": units this process rendered, "skipped": units found done,
        "seconds": wall time, "rank": r, "world_size": n}``.

    Raises:
        ValueError: unknown layers, a folder holding a job with other settings, ``out`` naming a file, bad
            arguments.
        TypeError: an ``out`` that is no path, a ``model_name`` that is no str.
    """
    from .images.base import check_elements
    from .images.export import save_png
    from .models.loading import weights_hash
    from .models.preprocess import render_inputs
    from .optimization.defaults import DEFAULT_LR, check_lr, default_image, model_input_channels
    from .optimization.averaging import check_average
    from .optimization.streams import check_seed, image_generators
    from .render import render_layer
    from ._utils import check_positive, model_device_dtype

    check_positive(steps, "steps")
    check_positive(batch_size, "batch_size")
    check_seed(seed)
    if seed is None:
        raise ValueError("a render job needs an int seed (its images must be reproducible), got None")
    lr = DEFAULT_LR if lr is None else check_lr(lr)
    average = check_average(average)
    if model_name is not None and not isinstance(model_name, str):
        raise TypeError(f"model_name must be a str or None, got {model_name!r} ({type(model_name).__name__})")
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path (str or os.PathLike), got {type(out).__name__}")
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"out must be a folder (the job's), got the file {str(out)!r}")
    inputs = render_inputs(model, size)  # the model's native size and normalization, as every render
    hw, preprocess = inputs.size, inputs.preprocess
    check_elements(3 * hw[0] * hw[1], "size")  # before the probe pass allocates anything
    out = Path(out)
    device, dtype = model_device_dtype(model)
    start = time.perf_counter()
    say = log or (lambda _line: None)
    with distributed_context() as group:
        rank, world = group.rank, group.world_size
        units = job_units(model, layers, hw, preprocess=preprocess)
        settings = {
            "version": JOB_VERSION,
            "model": model_name or type(model).__name__,
            "weights_sha256": weights_hash(model),
            "layers": list(layers),
            "steps": steps,
            "size": list(hw),
            "normalize": _normalization(preprocess),
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "average": _job_average(average),
            "render_defaults": _render_defaults(),
            "objective": "ChannelActivation(layer, channel): mean activation of the channel",
        }
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            for stale in out.glob(".*.tmp"):
                stale.unlink()
            for layer in layers:
                (out / _layer_dir(layer)).mkdir(exist_ok=True)
                # a worker killed while writing leaves its temporary file; every rank waits below meanwhile
                for stale in (out / _layer_dir(layer)).glob(".*.tmp"):
                    stale.unlink()
            _settings_file(out, settings)
        group.barrier("setup")
        if rank != 0:
            _settings_file(out, settings)  # refuses a mismatch on every rank, after rank 0 wrote it
        batches: List[Tuple[str, List[int]]] = []
        for layer in layers:
            channels = [c for l, c in units if l == layer]
            batches.extend((layer, channels[i : i + batch_size]) for i in range(0, len(channels), batch_size))
        # only batches with missing units are dealt out (round-robin), so a resumed job stays balanced; every
        # rank reads the folder before any rank writes to it again (the barrier below)
        missing_at_start = {(l, c) for l, c in units if _read_record(out / _layer_dir(l) / f"{c}.json") is None}
        pending = [b for b in batches if any((b[0], c) in missing_at_start for c in b[1])]
        group.barrier("scanned")
        mine = [b for i, b in enumerate(pending) if i % world == rank]
        total = sum(len(c) for _, c in mine)
        done = rendered = 0
        # units found finished: counted once, by rank 0, for the batches nobody renders again
        skipped = sum(len(b[1]) for b in batches if b not in pending) if rank == 0 else 0
        for layer, channels in mine:
            folder = out / _layer_dir(layer)
            todo = [c for c in channels if _read_record(folder / f"{c}.json") is None]
            if not todo:
                done += len(channels)
                skipped += len(channels)
                continue
            if rendered == 0:
                first = time.perf_counter()
            # the whole batch is rendered again, so the images written keep the batch's exact bytes
            tiles = render_layer(model, layer, channels=channels, batch_size=len(channels), steps=steps, size=hw,
                                 lr=lr, preprocess=preprocess, progress=False, seed=seed, average=average,
                                 callback=callback).as_subclass(torch.Tensor)
            with torch.no_grad():
                start_image = default_image(hw, channels=model_input_channels(model), batch=len(channels))
                start_image = start_image.to(device=device, dtype=dtype)
                start_image.reset_parameters(image_generators(seed, channels))
                initial = start_image().as_subclass(torch.Tensor)
                before = _channel_objective(model, layer, channels, initial, preprocess)
                after = _channel_objective(model, layer, channels, tiles, preprocess)
            for i, c in enumerate(channels):
                if c not in todo:
                    continue
                save_png(tiles[i], folder / f"{c}.png")
                record = {"layer": layer, "channel": c, "file": f"{_layer_dir(layer)}/{c}.png", "seed": seed,
                          "objective_before": before[i], "objective_after": after[i], "rank": rank}
                _write_json(folder / f"{c}.json", record)
            done += len(channels)
            rendered += len(todo)
            skipped += len(channels) - len(todo)
            if progress:
                minutes = (time.perf_counter() - first) / 60
                say(f"[rank {rank}/{world}] {done}/{total} units, {rendered / max(minutes, 1e-9):.1f} channels/min")
                sys.stdout.flush()
        group.barrier("rendered")
        seconds = time.perf_counter() - start
        if rank == 0:
            records = []
            missing = []
            for layer, c in units:
                record = _read_record(out / _layer_dir(layer) / f"{c}.json")
                if record is None:
                    missing.append(f"{layer}:{c}")
                else:
                    records.append(record)
            if missing:
                raise RuntimeError(f"the job ended with {len(missing)} units missing ({missing[:5]}...); rerun it")
            _write_json(out / "index.json", {"run": settings, "units": records})
            for layer in layers:
                _contact_sheet(out, layer, [r for r in records if r["layer"] == layer], settings["model"])
            say(f"render-model: {len(units)} unit{'s' if len(units) != 1 else ''} in {len(layers)} "
                f"layer{'s' if len(layers) != 1 else ''}, {world} process{'es' if world > 1 else ''}, {seconds:.1f} s: "
                f"{len(missing_at_start)} rendered, {len(units) - len(missing_at_start)} already done")
        return {"units": len(units), "rendered": rendered, "skipped": skipped, "seconds": seconds, "rank": rank,
                "world_size": world}
