"""Channels per minute of a whole-model render job (``optim.jobs.render_model``) by processes and threads, in one run.

CPU (the default): EfficientNet-Lite0 with its pretrained weights (the zoo's, offline), the first ``--channels``
channels of each of ``--layers``, ``--size`` px, ``--steps`` steps, ``--batch-size`` channels per batch, as

- **1 x 2**: one process with two intra-op threads (``OMP_NUM_THREADS=2``);
- **1 x 1**: one process with one thread;
- **2 x 1**: ``torchrun --standalone --nproc_per_node 2`` with one thread per process,

each a fresh job in a fresh folder, started as its own program (so each pays its own start-up, outside the
timing). The figure is the job's channels over its wall time as process 0 measures it (from the work list to
the merged index, so it includes waiting for the slowest process), after a short warm-up render in every
process. It then prints the ratio 2 x 1 / 1 x 1 (issue 16's goal: >= 1.8 on a 2-core machine) and checks that
the 2 x 1 images are the same bytes as the 1 x 1 ones.

With ``--device cuda`` (when a GPU exists): channels per minute on one GPU for Lite0 (pretrained) and for
InceptionV1 with random weights (``googlenet(pretrained=False)``, ``--inception-layers``), every channel of
the layers by default (``--channels 0``) in batches of 64; with several GPUs also one process per GPU under
torchrun.

A layer is limited to its first ``--channels`` channels by rendering a view of them (a child module returning
``output[:, :k]``; the model computes exactly what it did): the objective and the images are those of the full
layer's first k channels.

Usage (run it alone on a quiet machine; the default takes a few minutes on 2 cores)::

    python benchmarks/render_model.py                      # CPU: Lite0, blocks.4 .8 .12, 32 ch each, 128 px, 32 steps
    python benchmarks/render_model.py --device cuda        # one GPU: Lite0 and InceptionV1, every channel
    python benchmarks/render_model.py --channels 4 --steps 2 --size 64    # smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve()
LITE0_LAYERS = ["blocks.4", "blocks.8", "blocks.12"]
INCEPTION_LAYERS = ["mixed3b", "mixed4b", "mixed4d", "mixed5b"]


# ----------------------------------------------------------------------------------------------- the worker


def _tapped_model(name: str, layers: Sequence[str], channels: int):
    """The model, and the layer names to render: each layer's first ``channels`` channels (0: all of them)."""
    import torch
    import torch.nn as nn

    import optim as opt

    torch.manual_seed(0)
    if name == "efficientnet_lite0":
        model = opt.models.efficientnet_lite0(pretrained=True)
    elif name == "inceptionv1":
        model = opt.models.googlenet(pretrained=False)
    else:
        raise ValueError(f"--model must be efficientnet_lite0 or inceptionv1, got {name!r}")
    if channels <= 0:
        return model.eval(), list(layers)

    class First(nn.Module):
        def __init__(self, k: int) -> None:
            super().__init__()
            self.k = k

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, : self.k]

    class Tapped(nn.Module):
        """``inner`` unchanged, with a child ``first`` that sees its first k channels (the layer rendered)."""

        def __init__(self, inner: nn.Module, k: int) -> None:
            super().__init__()
            self.inner, self.first = inner, First(k)

        def forward(self, *args, **kwargs):
            out = self.inner(*args, **kwargs)
            self.first(out)
            return out

    names = []
    for layer in layers:
        parent_name, _, child = layer.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Tapped(parent.get_submodule(child), channels))
        names.append(f"{layer}.first")
    return model.eval(), names


def worker(args: argparse.Namespace) -> None:
    """One process of a job: render it into ``args.worker`` and (process 0) write ``result.json`` there."""
    import torch

    from optim.cli import job_device
    from optim.jobs import render_model
    from optim.render import render_layer

    threads = int(os.environ.get("OMP_NUM_THREADS", "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    device = job_device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model, layers = _tapped_model(args.model, args.layers, args.channels)
    model.to(device)
    # warm-up: the first render of a process pays one-time costs (thread pools, allocator, kernels)
    render_layer(model, layers[0], channels=[0], steps=2, size=args.size, progress=False)
    summary = render_model(model, layers, args.worker, steps=args.steps, size=args.size, batch_size=args.batch_size,
                           seed=0, progress=False, log=None, model_name=args.model)
    if summary["rank"] == 0:
        result = {"units": summary["units"], "seconds": summary["seconds"], "world_size": summary["world_size"]}
        (Path(args.worker) / "result.json").write_text(json.dumps(result))


# ----------------------------------------------------------------------------------------------- the driver


def run_job(name: str, out: Path, args: argparse.Namespace, model: str, layers: Sequence[str], processes: int,
            threads: Optional[int], device: str) -> Dict[str, float]:
    """Run one job as its own program (under torchrun for several processes); returns its figures."""
    job = [str(HERE), "--worker", str(out), "--model", model, "--layers", *layers, "--channels", str(args.channels),
           "--size", str(args.size), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--device", device]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   *job]
    else:
        command = [sys.executable, *job]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers
        proc.communicate()
        raise SystemExit(f"{name}: no result after {args.timeout} s (--timeout)")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{output[-4000:]}")
    result = json.loads((out / "result.json").read_text())
    result["wall"] = wall
    result["per_minute"] = 60.0 * result["units"] / result["seconds"]
    print(f"  {name:34s} {result['units']:5d} channels in {result['seconds']:7.1f} s = "
          f"{result['per_minute']:8.1f} channels/min   (program wall {wall:.1f} s with start-up)", flush=True)
    return result


def same_pngs(a: Path, b: Path) -> List[str]:
    """The PNGs (relative paths) that differ between two job folders, or are in one only."""
    files_a = {p.relative_to(a) for p in a.rglob("*.png")}
    files_b = {p.relative_to(b) for p in b.rglob("*.png")}
    differ = sorted(str(p) for p in files_a ^ files_b)
    differ += sorted(str(p) for p in files_a & files_b if (a / p).read_bytes() != (b / p).read_bytes())
    return differ


def describe(args: argparse.Namespace, model: str, layers: Sequence[str]) -> str:
    what = "pretrained" if model == "efficientnet_lite0" else "random weights"
    first = f"first {args.channels} channels of each" if args.channels > 0 else "every channel"
    return (f"{model} ({what}), layers {' '.join(layers)} ({first}), {args.size} px, {args.steps} steps, "
            f"batch {args.batch_size}")


def main_cpu(args: argparse.Namespace, root: Path) -> None:
    cores = os.cpu_count()
    print(f"render_model benchmark, CPU: {describe(args, 'efficientnet_lite0', args.layers)}; {cores} CPU cores, "
          f"load average {os.getloadavg()[0]:.2f} at start", flush=True)
    configs = [("1 process x 2 threads", "1x2", 1, 2), ("1 process x 1 thread", "1x1", 1, 1),
               ("2 processes x 1 thread (torchrun)", "2x1", 2, 1)]
    results = {}
    for name, key, processes, threads in configs:
        results[key] = run_job(name, root / key, args, "efficientnet_lite0", args.layers, processes, threads, "cpu")
    ratio = results["2x1"]["per_minute"] / results["1x1"]["per_minute"]
    print(f"  ratio 2x1 / 1x1: {ratio:.2f} (goal >= 1.8); 1x2 / 1x1: "
          f"{results['1x2']['per_minute'] / results['1x1']['per_minute']:.2f}")
    differ = same_pngs(root / "1x1", root / "2x1")
    n = len(list((root / "1x1").rglob("*.png")))
    print(f"  2x1 images: {'the same bytes as 1x1' if not differ else 'DIFFER from 1x1: ' + ', '.join(differ[:5])} "
          f"({n} PNGs)")
    if differ:
        raise SystemExit(1)


def main_cuda(args: argparse.Namespace, root: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (torch.cuda.is_available() is False)")
    gpus = torch.cuda.device_count()
    print(f"render_model benchmark, GPU: {torch.cuda.get_device_name(0)} x {gpus}", flush=True)
    for model, layers in (("efficientnet_lite0", args.layers), ("inceptionv1", args.inception_layers)):
        print(f" {describe(args, model, layers)}", flush=True)
        run_job("1 process, 1 GPU", root / f"{model}-1", args, model, layers, 1, None, "cuda")
        if gpus > 1:
            run_job(f"{gpus} processes, one per GPU (torchrun)", root / f"{model}-{gpus}", args, model, layers, gpus,
                    None, "cuda")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu: 1x2, 1x1, 2x1; cuda: one GPU")
    p.add_argument("--layers", nargs="+", default=LITE0_LAYERS, help="EfficientNet-Lite0 layers")
    p.add_argument("--inception-layers", nargs="+", default=INCEPTION_LAYERS, help="InceptionV1 layers (cuda)")
    p.add_argument("--channels", type=int, default=None,
                   help="the first channels of each layer (0: all; default 32 on CPU, all on cuda)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=None, help="default 16 on CPU, 64 on cuda")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per job before it is killed")
    p.add_argument("--keep", default=None, metavar="DIR", help="keep the job folders in DIR (default: a temporary "
                   "folder, deleted)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default="efficientnet_lite0", help=argparse.SUPPRESS)
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    cuda = args.device == "cuda"
    if args.channels is None:
        args.channels = 0 if cuda else 32
    if args.batch_size is None:
        args.batch_size = 64 if cuda else 16
    if args.worker is not None:
        worker(args)
        return
    with tempfile.TemporaryDirectory(prefix="render-model-bench-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if any((d / "job.json").exists() for d in root.iterdir()):
            raise SystemExit(f"{root} holds jobs already (a rerun would skip their channels): give --keep an empty "
                             "folder")
        (main_cuda if cuda else main_cpu)(args, root)


if __name__ == "__main__":
    main()
