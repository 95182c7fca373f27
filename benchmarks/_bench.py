"""Shared pieces of the speed benchmarks: timing, the bare-model floor, and Lucent (for comparison).

The *floor* of a render step is the work no feature-visualization library can avoid: the model's forward
pass up to the target layer (stopped there) and the backward pass from the objective to the input image,
with the model's parameters frozen. It is timed here with one bare forward hook, no parameterization, no
transforms and no optimizer.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from optim.optimization.input_optimization import model_input_layout

LUCENT_INSTALL = "pip install --no-deps torch-lucent && pip install kornia decorator"


class Stop(Exception):
    """Raised by :class:`StopAt`'s forward hook once the target layer produced its output."""


class StopAt:
    """A bare forward to one layer, the way the floors run it: ``with StopAt(layer) as to_layer:`` places one hook
    (no recorder, no copy) that keeps the layer's output and stops the pass; ``to_layer(model, x)`` returns that
    output. Hand-written loops share it so that they differ only in what they time.
    """

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.out: Optional[torch.Tensor] = None

    def _hook(self, _m: nn.Module, _i: object, out: torch.Tensor) -> None:
        self.out = out
        raise Stop

    def __enter__(self) -> "StopAt":
        self.handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        try:
            model(x)
        except Stop:
            pass
        out, self.out = self.out, None
        if out is None:
            raise RuntimeError("the model returned without running the target layer")
        return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """The least disturbed of ``repeats`` timed calls of ``run`` (seconds)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def interleaved_ms(
    runs: Dict[str, Callable[[int], None]], steps: int, rounds: int, device: torch.device, warmup: int = 3
) -> Dict[str, List[float]]:
    """ms per step of each of ``runs``, timed in turns: ``rounds`` rounds, each one block of ``steps`` steps per run.

    On a shared or virtual machine the speed drifts by more than the differences worth measuring (10-30% between
    blocks of the same code here); timing the candidates in alternation, and comparing them within a round, lets
    both see the same machine. The order rotates every round so no run always follows the same one.

    Returns:
        ``{name: [ms per step in round 0, round 1, ...]}``.
    """
    names = list(runs)
    for name in names:
        runs[name](warmup)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(max(1, rounds)):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(1000.0 * best_seconds(lambda: runs[name](steps), 1, device) / steps)
    return times


def ratio_summary(numerator: List[float], denominator: List[float]) -> str:
    """Median of the per-round ratios with their interquartile range, e.g. ``1.062 [1.041-1.080]``."""
    ratios = sorted(n / d for n, d in zip(numerator, denominator))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return f"{statistics.median(ratios):.3f} [{q[0]:.3f}-{q[2]:.3f}]"


class frozen:
    """Freeze the model's parameters (``requires_grad`` off) inside the block, as every render does."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.flags = [p.requires_grad for p in self.model.parameters()]
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self.model

    def __exit__(self, *exc: object) -> None:
        for p, flag in zip(self.model.parameters(), self.flags):
            p.requires_grad_(flag)


def floor_steps(
    model: nn.Module, layer: nn.Module, batch: int, size: int, channels: Sequence[int], device: torch.device,
    *, layout: bool = False,
) -> Callable[[int], None]:
    """``run(n)``: n bare steps, forward to ``layer`` (stopped there) and backward to a ``batch`` of inputs.

    The objective is a render's: image ``i`` maximises the mean of channel ``channels[i]``. The model must be
    in eval mode with frozen parameters (see :class:`frozen`). ``layout``: the input in the memory layout of
    ``InputOptimization(channels_last=True)`` (``model_input_layout``: channels-last for float32 on the CPU);
    default: contiguous, as renders feed it by default.
    """
    if len(channels) != batch:
        raise ValueError(f"one channel per image: batch {batch}, got {len(channels)} channels")
    x = torch.rand(batch, 3, size, size, device=device, requires_grad=True)
    rows = torch.arange(batch, device=device)
    cols = torch.tensor(list(channels), device=device)

    def run(n: int) -> None:
        with StopAt(layer) as to_layer:
            for _ in range(n):
                x.grad = None
                fed = model_input_layout(x) if layout else x
                (-to_layer(model, fed)[rows, cols].mean(dim=(1, 2)).sum()).backward()

    return run


def batch_sizes(n: int, batch_size: int) -> List[int]:
    """The batch sizes ``n`` items take, ``batch_size`` at a time (the last may be smaller)."""
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]


def import_lucent(device: torch.device) -> Optional[str]:
    """None if Lucent can run here on ``device``; else why not (printed instead of its figures)."""
    try:
        import kornia
        import lucent.optvis.render  # noqa: F401
    except ImportError as exc:
        return f"Lucent not installed ({exc}); install it with: {LUCENT_INSTALL}"
    for name in ("get_rotation_matrix2d", "warp_affine"):
        if not hasattr(kornia, name):
            # Lucent 0.1.8 calls these top-level names, which newer kornia keeps only in kornia.geometry.transform
            setattr(kornia, name, getattr(kornia.geometry.transform, name))
    lucent_device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.type != lucent_device:
        return f"Lucent always runs on {lucent_device} here (it picks cuda:0 when CUDA exists), not on {device}"
    return None


def lucent_render(
    model: nn.Module,
    layer_name: str,
    channels: Sequence[int],
    size: int,
    steps: int,
    fixed_image_size: Optional[int],
) -> None:
    """One Lucent ``render_vis`` of ``channels`` of ``layer_name`` (dotted), one channel per batch image.

    Lucent as its README runs it: ``model.eval()`` (parameters keep ``requires_grad``), FFT + decorrelated
    image, its standard transforms, Adam lr 0.05, hooks on every module. Lucent never removes its hooks: they
    are cleared here after the call, every forward hook of ``model`` with them, so pass a copy.
    ``fixed_image_size`` is the size the model receives (Lucent's own default, ``None``, upsamples images
    smaller than 224 to 224).
    """
    from lucent.optvis import objectives, param, render

    name = layer_name.replace(".", "_")
    objective = objectives.channel(name, channels[0], batch=0)
    for i, c in enumerate(channels[1:], start=1):
        objective = objective + objectives.channel(name, c, batch=i)
    try:
        render.render_vis(
            model,
            objective,
            param_f=lambda: param.image(size, batch=len(channels)),
            thresholds=(steps,),
            progress=False,
            show_image=False,
            fixed_image_size=fixed_image_size,
        )
    finally:
        # render_vis never removes the hook it puts on every module; without this, each call would add one more
        for m in model.modules():
            m._forward_hooks.clear()
