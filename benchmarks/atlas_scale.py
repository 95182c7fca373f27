"""An activation atlas from N activation vectors, streamed: time and peak memory of every stage, and how they grow.

For each N of ``--sizes`` (default 100k, 300k and 1M vectors), in a fresh process, on pretrained
EfficientNet-Lite0 (the ``zoo`` extra: offline weights):

1. **stream**: random crops of scikit-image's photos (``skimage.data``: astronaut, chelsea, coffee, rocket,
   hubble_deep_field, immunohistochemistry, retina, colorwheel; ``--crop`` px squares at random scales and
   places, flipped at random; crop ``i`` depends only on ``--seed`` and ``i``) through a ``DataLoader`` and
   ``opt.atlas.stream_activations`` to an ``ActivationStore`` on disk: ``--layer`` (``blocks.10``: 112
   channels, 8 x 8 positions at 128 px), every position one vector (``--positions`` per image instead: a
   random subset); ``ceil(N / positions)`` crops. The model has its BatchNorms folded into the convolutions
   (``opt.models.fold_batchnorm``: the same activations within float rounding, about 20% faster;
   ``--no-fold``: as loaded);
2. **fit**: the layout reducer, incrementally over the chunks (``IncrementalPCA``, ``MiniBatchNMF``) or on a
   ``--fit-sample`` of the vectors (``UMAP`` with Lucid's settings, the default; ``openTSNE``; ``PCA``);
3. **transform**: every chunk into 2-D (``opt.atlas.atlas_layout`` does 2 and 3 in one call; the boundary is
   its first ``transform``);
4. **grid**: ``opt.atlas.create_atlas_vectors`` over the store: the ``--grid-size`` cell means in one
   streaming pass;
5. **render**: ``opt.atlas.render_atlas`` (the render core's ``render_batches``): every cell with at least
   ``--min-density`` vectors, ``--image-size`` px, ``--render-steps`` steps, ``--render-batch`` cells a batch.

It prints seconds and peak RSS (MiB) per stage (peak RSS per stage: Linux's ``VmHWM``, reset between stages
through ``/proc/self/clear_refs``; where that is not allowed, the process's running peak), then for each stage
the exponent ``k`` of ``time ~ N^k`` between consecutive sizes (1: linear; render does not depend on N, only
on the number of cells). The store lives in ``--workdir`` (a temporary folder by default, deleted at the end):
about ``N * 112 * 4`` bytes (448 MB at 1M).

Goal (issue 16): 1M vectors in <= 20 min with peak RSS <= 4 GB on the 2-core CPU machine, alone on it.

Usage::

    python benchmarks/atlas_scale.py                              # 100k, 300k, 1M with UMAP: run it alone
    python benchmarks/atlas_scale.py --sizes 5000 --reducer IncrementalPCA --grid-size 4 --image-size 32 \\
        --render-steps 2                                          # smoke test, seconds
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

STAGES = ("stream", "fit", "transform", "grid", "render")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "colorwheel")
GOAL_SECONDS, GOAL_MIB = 20 * 60, 4096


class PeakRSS:
    """Peak resident memory per stage: ``VmHWM`` reset through ``/proc/self/clear_refs`` (Linux)."""

    def __init__(self) -> None:
        self.resettable = self.reset()

    @staticmethod
    def reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def mib(self) -> float:
        if self.resettable:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class PhotoCrops(torch.utils.data.Dataset):
    """``n`` random ``size`` px crops of scikit-image's colour photos, in [0, 1]; crop ``i`` from (seed, i) only.

    Each photo is kept at every scale whose short side is ``2**k * size`` (and at its own size): a crop picks a
    photo, a scale and a square of side ``size`` to ``2 * size`` px there, resized to ``size`` (cheap: at most
    2x), flipped half the time. Crops cover each photo from its full view down to its own pixels.
    """

    def __init__(self, n: int, size: int, seed: int) -> None:
        import skimage.data

        self.levels: List[torch.Tensor] = []
        for name in PHOTOS:
            photo = torch.from_numpy(getattr(skimage.data, name)()[..., :3].copy()).permute(2, 0, 1)[None].float()
            short = min(photo.shape[2:])
            side = 2 * size
            while side < short:
                scale = side / short
                small = torch.nn.functional.interpolate(photo, scale_factor=scale, mode="bilinear", antialias=True)
                self.levels.append(small[0].round().clamp(0, 255).to(torch.uint8))
                side *= 2
            self.levels.append(photo[0].to(torch.uint8))
        self.n, self.size, self.seed = n, size, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        image = self.levels[int(torch.randint(len(self.levels), (1,), generator=g))]
        h, w = image.shape[1:]
        high = min(2 * self.size, h, w)
        side = int(torch.randint(min(self.size, high), high + 1, (1,), generator=g))
        top = int(torch.randint(h - side + 1, (1,), generator=g))
        left = int(torch.randint(w - side + 1, (1,), generator=g))
        crop = image[None, :, top : top + side, left : left + side].float() / 255
        if side != self.size:
            crop = torch.nn.functional.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True)
        crop = crop[0].clamp(0, 1)
        return crop.flip(-1) if bool(torch.rand((), generator=g) < 0.5) else crop


def run_one(args: argparse.Namespace, n_vectors: int) -> Dict[str, object]:
    """All five stages for one N, in this process; returns seconds and peak MiB per stage."""
    import optim as opt
    from optim.atlas._recipe import _UMAP_DEFAULTS

    torch.set_num_threads(args.threads)
    model = opt.models.efficientnet_lite0(pretrained=True).eval()
    if not args.no_fold:
        model = opt.models.fold_batchnorm(model)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="atlas_scale_"))
    store_dir = workdir / f"store_{n_vectors}"
    peak = PeakRSS()
    seconds: Dict[str, float] = {}
    mib: Dict[str, float] = {}
    clock = {"start": 0.0}

    def begin() -> None:
        peak.reset()
        clock["start"] = time.perf_counter()

    def end(stage: str) -> None:
        seconds[stage] = time.perf_counter() - clock["start"]
        mib[stage] = peak.mib()

    try:
        # positions per crop at this layer, from one probe crop
        probe = opt.activations.record_activations(model, args.layer, torch.rand(1, 3, args.crop, args.crop))
        positions = probe[args.layer].shape[2] * probe[args.layer].shape[3]
        per_image = min(args.positions or positions, positions)
        loader = torch.utils.data.DataLoader(PhotoCrops(math.ceil(n_vectors / per_image), args.crop, args.seed),
                                             batch_size=args.batch_size)

        begin()
        store = opt.atlas.stream_activations(model, args.layer, loader, store_dir, chunk_size=args.chunk_size,
                                             positions_per_image=args.positions, seed=args.seed, overwrite=True)
        end("stream")

        kwargs = dict(_UMAP_DEFAULTS) if args.reducer == "UMAP" else {}
        kwargs.update(json.loads(args.reducer_kwargs))
        reducer = opt.reducer.ChannelReducer(2, args.reducer, **kwargs)
        transform = reducer.transform

        def timed_transform(*a, **kw):  # the fit ends where the first transform starts
            if "fit" not in seconds:
                end("fit")
                begin()
            return transform(*a, **kw)

        reducer.transform = timed_transform
        begin()
        layout = opt.atlas.atlas_layout(store, reducer, fit_sample=args.fit_sample)
        end("transform")

        begin()
        vectors, coords = opt.atlas.create_atlas_vectors(layout, store, args.grid_size, min_density=args.min_density)
        end("grid")

        begin()
        atlas = opt.atlas.render_atlas(model, args.layer, vectors, coords, args.grid_size, image_size=args.image_size,
                                       steps=args.render_steps, batch_size=args.render_batch, progress=False,
                                       seed=args.seed)
        end("render")
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            atlas.export(str(Path(args.out) / f"atlas_{len(store)}.png"))
        return {"n": len(store), "images": store.metadata["images"], "store_mb": store.nbytes / 1e6,
                "cells": len(coords), "seconds": seconds, "mib": mib, "peak_resettable": peak.resettable,
                "process_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def report(results: List[Dict[str, object]]) -> None:
    print(f"\n{'N':>9} {'crops':>7} {'cells':>5}  " + "  ".join(f"{s:>16}" for s in STAGES) + f"  {'total':>8}  {'peak':>9}")
    print(f"{'':>9} {'':>7} {'':>5}  " + "  ".join(f"{'s':>7} {'MiB':>8}" for _ in STAGES) + f"  {'s':>8}  {'MiB':>9}")
    for r in results:
        sec, mib = r["seconds"], r["mib"]
        total = sum(sec.values())
        print(f"{r['n']:>9} {r['images']:>7} {r['cells']:>5}  "
              + "  ".join(f"{sec[s]:>7.1f} {mib[s]:>8.0f}" for s in STAGES)
              + f"  {total:>8.1f}  {r['process_peak_mib']:>9.0f}")
    if not results[0]["peak_resettable"]:
        print("(peak RSS per stage could not be reset here: each figure is the process's peak so far)")
    if len(results) > 1:
        print("\ngrowth, k in time ~ N^k between consecutive sizes:")
        for a, b in zip(results, results[1:]):
            ratio = math.log(b["n"] / a["n"])
            ks = [math.log(max(b["seconds"][s], 1e-6) / max(a["seconds"][s], 1e-6)) / ratio for s in STAGES]
            total = math.log(sum(b["seconds"].values()) / sum(a["seconds"].values())) / ratio
            print(f"  {a['n']:>9} -> {b['n']:<9} " + "  ".join(f"{s} {k:.2f}" for s, k in zip(STAGES, ks))
                  + f"  total {total:.2f}")
    last = results[-1]
    total, peak_mib = sum(last["seconds"].values()), last["process_peak_mib"]
    goal = f"the goal for 1M vectors (<= {GOAL_SECONDS // 60} min, <= {GOAL_MIB} MiB on the 2-core machine)"
    if last["n"] >= 1_000_000:
        verdict = "meets" if total <= GOAL_SECONDS and peak_mib <= GOAL_MIB else "misses"
        print(f"\nN = {last['n']}: {total / 60:.1f} min, peak RSS {peak_mib:.0f} MiB -> {verdict} {goal}")
    else:
        print(f"\nN = {last['n']}: {total / 60:.1f} min, peak RSS {peak_mib:.0f} MiB ({goal} needs a 1M run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000],
                        help="numbers of activation vectors")
    parser.add_argument("--layer", default="blocks.10")
    parser.add_argument("--crop", type=int, default=128, help="crop size in px")
    parser.add_argument("--positions", type=int, default=None, help="random positions kept per crop (default all)")
    parser.add_argument("--batch-size", type=int, default=64, help="crops per forward pass")
    parser.add_argument("--no-fold", action="store_true", help="keep the BatchNorms (do not fold them)")
    parser.add_argument("--chunk-size", type=int, default=65536, help="vectors per store chunk")
    parser.add_argument("--reducer", default="UMAP", help="UMAP, openTSNE, IncrementalPCA, MiniBatchNMF, PCA, ...")
    parser.add_argument("--reducer-kwargs", default="{}", help="JSON keyword arguments of the reducer")
    parser.add_argument("--fit-sample", type=int, default=None,
                        help="vectors a reducer without partial_fit is fitted on (default opt.atlas.DEFAULT_FIT_SAMPLE)")
    parser.add_argument("--grid-size", type=int, default=16)
    parser.add_argument("--min-density", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--render-steps", type=int, default=64)
    parser.add_argument("--render-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the stores go (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="save each atlas as a PNG in this folder")
    parser.add_argument("--one-size", type=int, default=None, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()

    if args.one_size is not None:
        print("RESULT " + json.dumps(run_one(args, args.one_size)), flush=True)
        return
    results = []
    for n in args.sizes:  # each size in a fresh process: its peak RSS is its own
        argv = [a for a in sys.argv[1:]]
        proc = subprocess.run([sys.executable, __file__, *argv, "--one-size", str(n)], stdout=subprocess.PIPE,
                              text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"N = {n} failed (exit status {proc.returncode})")
        results.append(json.loads(lines[-1][len("RESULT "):]))
        r = results[-1]
        print(f"N = {r['n']}: " + ", ".join(f"{s} {r['seconds'][s]:.1f} s / {r['mib'][s]:.0f} MiB" for s in STAGES),
              flush=True)
    report(results)


if __name__ == "__main__":
    main()
