"""Do class visualizations rendered on EfficientNet-Lite0 transfer to EfficientNet-Lite2?

Renders one image per class for 10 ImageNet classes on Lite0 with the library's defaults
(``optim.recipes.class_visualization``: ``render_vis``'s default image, transforms, learning rate and optimizer),
all 10 in one batched render, for each step budget given, then asks EfficientNet-Lite2 (another network,
never used in the render) to classify them. Prints, per budget, how often Lite2 puts the intended class
first and in its top 5, Lite0's own top-1, and the time per step.

Lite2 sees the image as rendered (both networks are fully convolutional with global pooling); the line
below adds Lite2 on the image resized to its native 260 px, where objects drawn at Lite0's 128 px scale
appear twice too large (a harder, scale-shifted test).

Goal: Lite2 top-1 for >= 9/10 classes at 64 steps and 10/10 at 128.

Usage::

    python benchmarks/class_transfer.py --steps 32 64 128 [--seed 0] [--threads 2] [--save out_dir]
"""
from __future__ import annotations

import argparse
import time
from typing import List

import torch
import torch.nn.functional as F

import optim as opt
from optim import recipes
from optim.models.efficientnet_lite import EFFICIENTNET_LITE_CONFIGS

#: Ten ImageNet classes with distinctive shapes, colours and textures (chosen once, before tuning).
CLASSES: List[int] = [1, 9, 130, 291, 309, 327, 417, 937, 949, 980]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", default=None, help="folder to write each budget's image grid to")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    lite0 = opt.models.efficientnet_lite0(pretrained=True).eval()
    lite2 = opt.models.efficientnet_lite2(pretrained=True).eval()
    judge_size = EFFICIENTNET_LITE_CONFIGS["efficientnet_lite2"]["input_size"]
    names = [opt.models.IMAGENET_CLASSES[c] for c in CLASSES]
    target = torch.tensor(CLASSES)
    print(f"classes: {', '.join(f'{c} {n}' for c, n in zip(CLASSES, names))}")
    for steps in args.steps:
        start = time.perf_counter()
        images = recipes.class_visualization(lite0, CLASSES, steps=steps, progress=False, seed=args.seed)
        per_step = (time.perf_counter() - start) / steps
        x = images.as_subclass(torch.Tensor)
        with torch.no_grad():
            self_top1 = (lite0(x).argmax(1) == target).sum().item()
            as_rendered = lite2(x).softmax(1)
            native = lite2(F.interpolate(x, size=(judge_size, judge_size), mode="bilinear", align_corners=False))
        print(f"steps {steps:4d} | {per_step * 1000:.0f} ms/step for the batch of 10 ({x.shape[-1]} px) | "
              f"Lite0 top-1 {self_top1}/10")
        for label, probs in ((f"Lite2 at {x.shape[-1]} px", as_rendered), (f"Lite2 at {judge_size} px", native)):
            top5 = probs.topk(5, dim=1).indices
            top1_hits = (top5[:, 0] == target).tolist()
            top5_hits = (top5 == target[:, None]).any(1).tolist()
            misses = [f"{n} -> {opt.models.IMAGENET_CLASSES[int(top5[i, 0])]}" for i, n in enumerate(names)
                      if not top1_hits[i]]
            print(f"    {label}: top-1 {sum(top1_hits)}/10, top-5 {sum(top5_hits)}/10"
                  + (f"   (missed: {'; '.join(misses)})" if misses else ""))
        if args.save:
            from pathlib import Path

            Path(args.save).mkdir(parents=True, exist_ok=True)
            opt.images.save_tensor_as_image(x, f"{args.save}/steps{steps}.png", images_per_row=5)


if __name__ == "__main__":
    main()
