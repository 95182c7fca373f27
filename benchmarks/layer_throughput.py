"""Channels per minute for rendering one layer: batched ``render_layer`` against one channel at a time.

On pretrained EfficientNet-Lite0 at 128 px on CPU, this renders the same channels of one layer twice with
the library's defaults and the same step budget: once ``--batch-size`` channels per optimization, once one
channel per optimization, and prints channels per minute for each and the speed-up. Goal: batched is
faster.

Usage::

    python benchmarks/layer_throughput.py [--layer blocks.10] [--channels 16] [--single 4] [--steps 16]
        [--size 128] [--batch-size 16] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch

import optim as opt


def channels_per_minute(model: torch.nn.Module, layer: str, channels: list, batch_size: int, steps: int,
                        size: int) -> float:
    start = time.perf_counter()
    tiles = opt.render_layer(model, layer, channels=channels, batch_size=batch_size, steps=steps, size=size,
                             progress=False, seed=0)
    elapsed = time.perf_counter() - start
    if tiles.shape[0] != len(channels):
        raise RuntimeError(f"expected {len(channels)} tiles, got {tiles.shape[0]}")
    return 60.0 * len(channels) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="blocks.10")
    parser.add_argument("--channels", type=int, default=16, help="channels rendered batched")
    parser.add_argument("--single", type=int, default=4, help="channels rendered one by one (it is slow)")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = opt.models.efficientnet_lite0(pretrained=True).eval()
    # warm-up: the first optimization pays for allocations and kernel selection
    opt.render_layer(model, args.layer, channels=[0], steps=2, size=args.size, progress=False)
    batched = channels_per_minute(model, args.layer, list(range(args.channels)), args.batch_size, args.steps,
                                  args.size)
    single = channels_per_minute(model, args.layer, list(range(args.single)), 1, args.steps, args.size)
    print(f"EfficientNet-Lite0 {args.layer}, {args.size} px, {args.steps} steps, {args.threads} threads (CPU)")
    print(f"  batched ({args.batch_size}/render, {args.channels} channels): {batched:8.1f} channels/min")
    print(f"  one by one ({args.single} channels):               {single:8.1f} channels/min")
    print(f"  speed-up: {batched / single:.2f}x")


if __name__ == "__main__":
    main()
