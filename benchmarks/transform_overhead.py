"""Time TransformationRobustness per call (forward + backward) on a 1x3x224x224 input: fused vs sequential.

Usage::

    python benchmarks/transform_overhead.py [--device cpu|cuda] [--iters 50] [--threads N]

Prints milliseconds per call for the fused single-resampling path, the module-by-module path, and the
parameter sampling plus the affine matrix alone (the per-step Python overhead of the fused path).
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Tuple

import torch

from optim.transforms import TransformationRobustness

__all__ = ["time_ms", "main"]


def time_ms(fn: Callable[[], None], iters: int, device: torch.device) -> Tuple[float, float, float]:
    """Wall-clock median, wall-clock best and process-CPU-time median of ``fn``, in ms per call.

    On a shared machine the best wall time and the CPU time are the ones to compare: other processes only
    add waiting to the wall clock. (For CUDA only the wall clock is meaningful.)
    """
    for _ in range(5):
        fn()
    wall, cpu = [], []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    wall.sort()
    cpu.sort()
    return wall[len(wall) // 2], wall[0], cpu[len(cpu) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 224, 224, device=device, requires_grad=True)

    def step(module: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            x.grad = None
            module(x).sum().backward()

        return run

    fused = TransformationRobustness().to(device)
    sequential = TransformationRobustness(fused=False).to(device)
    scripted = torch.jit.script(TransformationRobustness().to(device))
    results = {
        "fused": time_ms(step(fused), args.iters, device),
        "fused, TorchScript": time_ms(step(scripted), args.iters, device),
        "sequential": time_ms(step(sequential), args.iters, device),
        "parameters + matrix": time_ms(
            lambda: fused.affine_matrix(*fused.sample_params(), [224, 224], [228, 228]), args.iters, device
        ),
    }
    print(f"TransformationRobustness, 1x3x224x224, forward+backward, {device} "
          f"(torch {torch.__version__}, {torch.get_num_threads()} CPU threads)")
    print(f"  {'ms per call':<20s} {'median':>8s} {'best':>8s} {'CPU time':>9s}")
    for name, (median, best, cpu) in results.items():
        print(f"  {name:<20s} {median:8.3f} {best:8.3f} {cpu:9.3f}")
    speedup = results["sequential"][1] / results["fused"][1]
    print(f"  speed-up fused vs sequential (best times): {speedup:.1f}x")


if __name__ == "__main__":
    main()
