"""Class visualizations with the library defaults: do they hold at native size, and on another network?

For each seed, renders one image per class on EfficientNet-Lite0 with the library's defaults (exactly
``optim.recipes.class_visualization``'s path: ``render_vis`` with ``default_image`` and the default transforms,
learning rate and optimizer), all classes in one batched render, and keeps the images at every step budget
of ``--steps`` (one render, snapshots at each budget). Each image is then judged:

- ``L0@224``: Lite0 itself on the image resized to its native 224 px (self-consistency at native size);
- ``L2@260``: EfficientNet-Lite2, a network never used in the render, at its native 260 px;
- ``L0@render`` / ``L2@render``: both networks on the image as rendered (its own size);
- ``clip``: the share of colour values that export to exactly 0 or 255 (saturated, posterized areas);
- ``s/step``: wall seconds per optimization step of the batched render (all classes).

``--cost N`` also times the unit of issue 12's cost goal, a render of one class (batch 1): each renderer N times,
interleaved (renderer by renderer within each repeat, a different class each repeat), after one warm-up render
each; it prints the median seconds per step and each renderer's ratio to the others. The batched ``s/step`` above
grows faster than the pixel count on a CPU (the activations of 30 images outgrow the caches), so it overstates
what one render costs.

Two class sets: the ten used to tune the defaults of session 2 (``old``) and ten held out (``new``, chosen before
the tuning of issue 12; sessions 6 and 7 then chose among candidate defaults on them, so they are no longer
unseen). ``--fresh`` adds a third ten, every hundredth class from 50, fixed after the defaults were chosen; the
candidate changes checked on it since were all rejected, so the defaults still owe it nothing, but it has been
looked at. ``--lucent`` adds Lucent's ``render_vis`` with its README defaults (224 px FFT image, its standard
transforms, Adam 0.05) on the same classes, and ``--previous`` the defaults before issue 12 (128 px, 1/f^1.5, lr
0.05, transforms that grow the image 4 px), both in the same run, so wall times compare directly. ``--average``
adds the defaults with ``render_vis(average=FRACTION)`` (iterate averaging over about that fraction of the last
steps; ``--average 0``: the last image of the same trajectory, beside the defaults' average of it).

Goal (issue 12), at 48 steps: Lite2 at 260 px names >= 9/10 classes of each set, Lite0 at 224 px 10/10; at
128 steps 10/10 for both; clipped values <= 2%; a render costs no more wall time than Lucent's at the same
budget, and no more than 1.5x the previous defaults.

Usage::

    python benchmarks/class_transfer.py --steps 32 48 64 128 --seeds 0 1 2 [--lucent] [--previous]
        [--threads 2] [--device cuda] [--grid out.png] [--per-class] [--fresh] [--average 0 0.25] [--cost 5]
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

import optim as opt
from optim.images.export import to_uint8_array
from optim.loss.base import sum_loss_list
from optim.optimization.averaging import check_average
from optim.recipes.classes import class_logits
from optim.models.efficientnet_lite import EFFICIENTNET_LITE_CONFIGS

#: The ten classes of the earlier tuning (distinctive shapes, colours and textures).
OLD_CLASSES: List[int] = [1, 9, 130, 291, 309, 327, 417, 937, 949, 980]
#: Ten held-out classes, chosen before issue 12's tuning: bald eagle, tarantula, hummingbird, king penguin,
#: tiger, zebra, giant panda, container ship, banana, bubble.
NEW_CLASSES: List[int] = [22, 76, 94, 145, 292, 340, 388, 510, 954, 971]
#: A third set (``--fresh``), every hundredth class from 50, fixed after the defaults were chosen (the ``new`` ten
#: had been used to choose among candidate defaults by then): American alligator, sea lion, Siberian
#: husky, ibex, bobsled, espresso maker, microphone, quilt, teddy, orange.
FRESH_CLASSES: List[int] = list(range(50, 1000, 100))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clipped_fraction(images: torch.Tensor) -> float:
    """The share of colour values that export (``to_uint8_array``) to exactly 0 or 255."""
    values = [to_uint8_array(image) for image in images.detach().cpu()]
    return float(sum(((v == 0) | (v == 255)).sum() for v in values) / sum(v.size for v in values))


def top1(model: nn.Module, images: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """The model's top-1 class of each image, resized (bilinear, antialiased) to ``size`` when given."""
    x = images if size is None else F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                                                  antialias=True)
    with torch.no_grad():
        return model(x).argmax(1)


def render_optim(model: nn.Module, classes: Sequence[int], steps: Sequence[int], seed: int,
                 average: Optional[float] = None) -> List[torch.Tensor]:
    """The library defaults, as ``recipes.class_visualization`` runs them, with a snapshot at each budget
    (``average``: ``render_vis``'s iterate averaging; ``None``: its default)."""
    loss = sum_loss_list(class_logits(model, list(classes)))
    image = functools.partial(opt.render.default_image, batch=len(classes))
    outs = opt.render_vis(model, loss, image=image, thresholds=tuple(steps), progress=False, seed=seed,
                          average=average)
    return [o.as_subclass(torch.Tensor) for o in outs]


def render_previous(model: nn.Module, classes: Sequence[int], steps: Sequence[int], seed: int) -> List[torch.Tensor]:
    """The defaults before issue 12: 128 px, 1/f^1.5 FFT image, lr 0.05, captum's transforms (+4 px), the last
    image and the true gradient."""
    from optim.images import FFTImage, NaturalImage
    from optim.transforms import TransformationRobustness

    loss = sum_loss_list(class_logits(model, list(classes)))
    image = functools.partial(NaturalImage, (128, 128), batch=len(classes),
                              parameterization=functools.partial(FFTImage, decay_power=1.5))
    outs = opt.render_vis(model, loss, image=image, transforms=TransformationRobustness(), lr=0.05,
                          optimizer=torch.optim.Adam, thresholds=tuple(steps), progress=False, seed=seed, average=0,
                          residual_gradient=1.0)
    return [o.as_subclass(torch.Tensor) for o in outs]


def render_lucent(model: nn.Module, classes: Sequence[int], steps: Sequence[int], seed: int) -> List[torch.Tensor]:
    """Lucent's ``render_vis`` with its README defaults at 224 px (hooks cleared afterwards: pass a copy)."""
    from lucent.optvis import objectives, param, render, transform

    torch.manual_seed(seed)
    objective = sum(objectives.channel("classifier", c, batch=i) for i, c in enumerate(classes))
    try:
        # preprocess=False: optim's Lite0 normalizes its [0, 1] input itself
        outs = render.render_vis(model, objective, lambda: param.image(224, batch=len(classes)),
                                 transforms=transform.standard_transforms, thresholds=tuple(steps),
                                 preprocess=False, progress=False, show_image=False)
    finally:
        for m in model.modules():
            m._forward_hooks.clear()
    return [torch.from_numpy(o).permute(0, 3, 1, 2).contiguous() for o in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[32, 48, 64, 128],
                        help="step budgets: one render per seed, a snapshot at each (default: 32 48 64 128)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds, one render each (default: 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--lucent", action="store_true", help="Lucent side by side (pip install --no-deps "
                        "torch-lucent && pip install kornia decorator)")
    parser.add_argument("--previous", action="store_true", help="the defaults before issue 12, side by side")
    parser.add_argument("--average", type=float, nargs="+", default=[], metavar="FRACTION",
                        help="also render with render_vis(average=FRACTION) (iterate averaging; 0: the last image), "
                        "side by side")
    parser.add_argument("--cost", type=int, default=0, metavar="REPEATS",
                        help="also time one-class renders (batch 1) of every renderer, REPEATS times interleaved, "
                        "at the largest budget (default: 0, not timed)")
    parser.add_argument("--fresh", action="store_true", help="judge a third class set, FRESH_CLASSES, as well")
    parser.add_argument("--per-class", action="store_true", help="print, for each budget and class set, how many "
                        "seeds' renders Lite2 at its native size names correctly, class by class")
    parser.add_argument("--grid", default=None, help="write the renders of the first seed at the largest budget, "
                        "labelled with each judge's top-1 and Lite2's probability of the class, to this PNG")
    args = parser.parse_args()
    if args.cost < 0:
        parser.error(f"--cost must be a count of repeats >= 0, got {args.cost}")
    for fraction in args.average:  # before the models load
        check_average(fraction)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = sorted(set(args.steps))

    lite0 = opt.models.efficientnet_lite0(pretrained=True).eval().to(device)
    lite2 = opt.models.efficientnet_lite2(pretrained=True).eval().to(device)
    native0 = EFFICIENTNET_LITE_CONFIGS["efficientnet_lite0"]["input_size"]
    native2 = EFFICIENTNET_LITE_CONFIGS["efficientnet_lite2"]["input_size"]
    class_sets = {"old": OLD_CLASSES, "new": NEW_CLASSES, **({"fresh": FRESH_CLASSES} if args.fresh else {})}
    classes = [c for members in class_sets.values() for c in members]
    sets, start = {}, 0
    for set_name, members in class_sets.items():
        sets[set_name], start = slice(start, start + len(members)), start + len(members)
    labels = opt.models.IMAGENET_CLASSES
    target = torch.tensor(classes, device=device)
    for set_name, members in class_sets.items():
        print(f"{set_name}: {', '.join(labels[c] for c in members)}")
    print(f"torch {torch.__version__}, {args.threads} threads, device {device}")

    renderers = {"optim": render_optim}
    for fraction in args.average:
        renderers[f"avg{fraction:g}"] = functools.partial(render_optim, average=fraction)
    if args.previous:
        renderers["previous"] = render_previous
    if args.lucent:
        from _bench import import_lucent

        why_not = import_lucent(device)
        if why_not:
            print(f"lucent: skipped ({why_not})")
        else:
            import copy

            lucent_model = copy.deepcopy(lite0)
            renderers["lucent"] = lambda _, cls, budgets, seed: render_lucent(lucent_model, cls, budgets, seed)

    judges = {f"L0@{native0}": (lite0, native0), f"L2@{native2}": (lite2, native2),
              "L0@render": (lite0, None), "L2@render": (lite2, None)}
    results: Dict[str, Dict[int, List[dict]]] = {name: {s: [] for s in steps} for name in renderers}
    grid_images: Dict[str, torch.Tensor] = {}
    for name, render in renderers.items():
        for seed in args.seeds:
            _sync(device)
            start = time.perf_counter()
            outs = render(lite0, classes, steps, seed)
            _sync(device)
            per_step = (time.perf_counter() - start) / max(steps)
            for budget, images in zip(steps, outs):
                images = images.to(device).float()
                row = {"clip": clipped_fraction(images), "s/step": per_step}
                for judge, (model, size) in judges.items():
                    row[judge] = (top1(model, images, size) == target).tolist()
                results[name][budget].append(row)
            if seed == args.seeds[0]:
                grid_images[name] = outs[-1]

    print(f"\n{'renderer':9s} {'steps':>5s} | " + " | ".join(f"{j:>11s}" for j in judges)
          + f" |  clip | s/step     (classes named of 10 in each set, {'/'.join(sets)}; mean over seeds"
          + ("; min in brackets)" if len(args.seeds) > 1 else ")"))
    for name in renderers:
        for budget in steps:
            rows = results[name][budget]
            cells = []
            for judge in judges:
                per_set = {k: [sum(r[judge][sl]) for r in rows] for k, sl in sets.items()}
                mean = "/".join(f"{statistics.mean(v):.1f}" for v in per_set.values())
                low = "/".join(str(min(v)) for v in per_set.values())
                cells.append(f"{mean:>9s} ({low})" if len(rows) > 1 else f"{mean:>11s}")
            clip = statistics.mean(r["clip"] for r in rows) * 100
            sps = statistics.mean(r["s/step"] for r in rows)
            print(f"{name:9s} {budget:5d} | " + " | ".join(cells) + f" | {clip:4.1f}% | {sps:.3f}")
    if args.cost:
        _print_cost(renderers, lite0, classes, max(steps), args.cost, device)
    if args.per_class:
        for name in renderers:
            for budget in steps:
                rows = results[name][budget]
                hits = [sum(r[f"L2@{native2}"][i] for r in rows) for i in range(len(classes))]
                for set_name, members in sets.items():
                    print(f"{name} {budget} steps, {set_name}, L2@{native2} hits of {len(rows)} seed(s): "
                          + ", ".join(f"{labels[c]} {h}" for c, h in zip(classes[members], hits[members])))
    if args.grid:
        _write_grid(args.grid, grid_images, classes, lite2, native2, lite0, native0, max(steps), args.seeds[0])


def _print_cost(renderers: Dict[str, object], model: nn.Module, classes: Sequence[int], budget: int, repeats: int,
                device: torch.device) -> None:
    """Median wall seconds per step of one-class renders, interleaved so that load on the machine hits all alike."""
    times: Dict[str, List[float]] = {name: [] for name in renderers}
    for name, render in renderers.items():  # warm-up: first-call allocations and kernel selection
        render(model, classes[:1], [2], 0)
    for rep in range(repeats):
        for name, render in renderers.items():
            _sync(device)
            start = time.perf_counter()
            render(model, [classes[rep % len(classes)]], [budget], rep)
            _sync(device)
            times[name].append((time.perf_counter() - start) / budget)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"\none-class render (batch 1), {budget} steps, median of {repeats} interleaved, s/step:")
    for name, median in medians.items():
        ratios = ", ".join(f"{median / other:.2f}x {o}" for o, other in medians.items() if o != name)
        print(f"  {name:9s} {median:.4f}" + (f"  ({ratios})" if ratios else ""))


def _write_grid(path: str, grid_images: Dict[str, torch.Tensor], classes: Sequence[int], lite2: nn.Module,
                native2: int, lite0: nn.Module, native0: int, steps: int, seed: int) -> None:
    """One labelled grid: a row block per renderer; each tile names the class, each judge's top-1 and p(class)."""
    import matplotlib

    matplotlib.use("Agg")
    labels = opt.models.IMAGENET_CLASSES
    tiles, titles = [], []
    for name, images in grid_images.items():
        device = next(lite2.parameters()).device
        x = images.to(device).float()
        resized = F.interpolate(x, size=(native2, native2), mode="bilinear", align_corners=False, antialias=True)
        with torch.no_grad():
            probs = lite2(resized).softmax(1)
        first0 = top1(lite0, x, native0)
        for i, c in enumerate(classes):
            guess = int(probs[i].argmax())
            mark = "ok" if guess == c else f"-> {labels[guess][:14]}"
            judged0 = "ok" if first0[i] == c else "miss"
            titles.append(f"{name}: {labels[c][:14]}\nL2 p={probs[i, c]:.2f} {mark}\nL0 {judged0}")
            tiles.append(images[i].detach().cpu().float())
    fig = opt.show(tiles, labels=titles, images_per_row=10, figsize=(22, 2.9 * len(tiles) / 10))
    fig.suptitle(f"class visualizations, {steps} steps, seed {seed}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # a strip above the tiles for the title
    fig.savefig(path, dpi=80)
    print(f"grid written to {path}")


if __name__ == "__main__":
    main()
