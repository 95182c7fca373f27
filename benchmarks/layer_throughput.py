"""Channels per minute for rendering one layer, beside the floor (the model alone) and Lucent, in one run.

On pretrained EfficientNet-Lite0 (the zoo's, with its redirected ReLU6) this renders ``--channels`` channels
of ``--layer`` with the library's defaults and prints channels per minute for:

- **floor**: the model alone, forward up to the layer (stopped there) and backward to the input, same batch
  size, same step count, parameters frozen: what any renderer must pay. Timed at ``--size`` and at the size
  the model actually receives inside a render (the default transforms pad, 128 -> 132 px);
- **optim batched**: ``render_layer`` with ``--batch-size`` channels per optimization;
- **optim one by one**: ``render_layer`` with ``batch_size=1`` on the first ``--single`` channels (0: skip);
- the floor and the batched render again on ``opt.models.fold_batchnorm(model)`` (BatchNorm folded into the
  convolutions; ``--no-fold`` skips them);
- **Lucent**: its batched ``render_vis`` of the same channels (one channel per batch image), on a copy of the
  model (Lucent hooks every module), with the model fed at ``--size`` (``--lucent-upsample``:
  Lucent's own default, upsampling to 224). ``--no-lucent`` skips it; install with
  ``pip install --no-deps torch-lucent && pip install kornia decorator``.

``x floor`` is a render's time over the floor's at ``--size`` (same channels, same steps). Goal (issue 11):
batched render_layer at most 1.15x the floor on Lite0 blocks.8, 16 channels, 128 px, 32 steps.

Every figure is the best of ``--repeats`` runs (Lucent: one run, it is slow). Run it on a quiet machine.

Usage::

    python benchmarks/layer_throughput.py                      # blocks.8, 16 channels, 128 px, 32 steps
    python benchmarks/layer_throughput.py --steps 2 --channels 2 --batch-size 2 --single 1 --size 64  # smoke
"""
from __future__ import annotations

import argparse
import copy
from typing import Dict, List, Optional, Tuple

import torch

import optim as opt
from _bench import batch_sizes, best_seconds, floor_steps, frozen, import_lucent, lucent_render, sync


def render_seconds(model: torch.nn.Module, layer: str, channels: List[int], batch_size: int, steps: int, size: int,
                   repeats: int, device: torch.device) -> float:
    def run() -> None:
        tiles = opt.render_layer(model, layer, channels=channels, batch_size=batch_size, steps=steps, size=size,
                                 progress=False, seed=0)
        if tiles.shape[0] != len(channels):
            raise RuntimeError(f"expected {len(channels)} tiles, got {tiles.shape[0]}")

    return best_seconds(run, repeats, device)


def floor_seconds(model: torch.nn.Module, layer: str, channels: List[int], batch_size: int, steps: int, size: int,
                  repeats: int, device: torch.device) -> float:
    """Bare forward+backward time of the whole job: every batch of ``channels``, ``steps`` steps each."""
    module = opt._utils.resolve_module(model, layer)
    total = 0.0
    start = 0
    with frozen(model):
        for b in batch_sizes(len(channels), batch_size):
            run = floor_steps(model, module, b, size, channels[start:start + b], device)
            run(2)  # warm-up
            total += best_seconds(lambda: run(steps), repeats, device)
            start += b
    return total


def received_size(size: int) -> int:
    """The side of the image the model receives inside a render with the default transforms."""
    with torch.no_grad():
        return int(opt.optimization.default_transforms()(torch.rand(1, 3, size, size)).shape[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="blocks.8")
    parser.add_argument("--channels", type=int, default=16, help="channels rendered (0 .. N-1)")
    parser.add_argument("--batch-size", type=int, default=16, help="channels per optimization (batched runs)")
    parser.add_argument("--single", type=int, default=2, help="channels rendered one by one (slow; 0 skips)")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs (not Lucent)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-fold", action="store_true", help="skip the fold_batchnorm rows")
    parser.add_argument("--no-lucent", action="store_true", help="skip Lucent")
    parser.add_argument("--lucent-upsample", action="store_true",
                        help="let Lucent upsample to 224 as it does by default (more model work than the others)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    channels = list(range(args.channels))
    seen = received_size(args.size)

    torch.manual_seed(0)
    model = opt.models.efficientnet_lite0(pretrained=True).to(device).eval()
    models: Dict[str, torch.nn.Module] = {"": model}
    if not args.no_fold:
        models["folded"] = opt.models.fold_batchnorm(model)
    # warm-up: the first optimization pays for allocations and kernel selection
    for m in models.values():
        opt.render_layer(m, args.layer, channels=channels[: args.batch_size], batch_size=args.batch_size, steps=2,
                         size=args.size, progress=False, seed=0)

    rows: List[Tuple[str, Optional[float], str]] = []  # (label, seconds for the whole job, note)
    floors: Dict[str, float] = {}
    for tag, m in models.items():
        suffix = ", folded BN" if tag else ""
        f = floor_seconds(m, args.layer, channels, args.batch_size, args.steps, args.size, args.repeats, device)
        floors[tag] = f
        rows.append((f"floor @{args.size} px{suffix}", f, "model alone, fwd+bwd to the layer"))
        if seen != args.size:
            f_seen = floor_seconds(m, args.layer, channels, args.batch_size, args.steps, seen, args.repeats, device)
            rows.append((f"floor @{seen} px{suffix}", f_seen, "the size the model receives in a render"))
        r = render_seconds(m, args.layer, channels, args.batch_size, args.steps, args.size, args.repeats, device)
        rows.append((f"optim render_layer batched ({args.batch_size}/render){suffix}", r, ""))
        if not tag and args.single > 0:
            n = min(args.single, len(channels))
            one = render_seconds(m, args.layer, channels[:n], 1, args.steps, args.size, args.repeats, device)
            rows.append((f"optim render_layer one by one ({n} channels)", one * len(channels) / n, "extrapolated"))

    lucent_note = None if args.no_lucent else import_lucent(device)
    if not args.no_lucent and lucent_note is None:
        lucent_model = copy.deepcopy(model)  # Lucent hooks every module
        fixed = None if args.lucent_upsample else args.size
        total = 0.0
        start = 0
        torch.manual_seed(0)
        lucent_render(lucent_model, args.layer, channels[:1], args.size, 1, fixed)  # warm-up
        for b in batch_sizes(len(channels), args.batch_size):
            sync(device)
            total += best_seconds(
                lambda: lucent_render(lucent_model, args.layer, channels[start:start + b], args.size, args.steps, fixed),
                1, device,
            )
            start += b
        where = "upsampled to 224 (its default)" if args.lucent_upsample else f"fed at {args.size} px"
        rows.append((f"Lucent render_vis batched ({args.batch_size}/render)", total, f"model {where}"))

    print(f"EfficientNet-Lite0 (pretrained) {args.layer}: {len(channels)} channels, {args.size} px (the model "
          f"receives {seen} px), {args.steps} steps, torch {torch.__version__}, {device}, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    print(f"  {'':<50} {'channels/min':>12} {'x floor':>8}   note")
    for label, seconds, note in rows:
        per_min = 60.0 * len(channels) / seconds
        print(f"  {label:<50} {per_min:12.1f} {seconds / floors['']:8.2f}   {note}")
    if lucent_note:
        print(f"  Lucent: skipped: {lucent_note}")
    batched = next(s for label, s, _ in rows if label.startswith("optim render_layer batched") and "folded" not in label)
    print(f"batched render_layer / floor @{args.size}: {batched / floors['']:.2f}x (goal <= 1.15)")
    if "folded" in floors:
        folded = next(s for label, s, _ in rows if label.startswith("optim render_layer batched") and "folded" in label)
        print(f"folded: render / its own floor {folded / floors['folded']:.2f}x; folding lowers the floor "
              f"{floors[''] / floors['folded']:.2f}x and the render {batched / folded:.2f}x")


if __name__ == "__main__":
    main()
