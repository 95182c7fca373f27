"""Per-step cost of the default render pipeline next to the model's own forward+backward to the target.

For torchvision resnet18 and googlenet (random weights, 224 px, batch 1) and three target depths each, this
prints the time of one optimization step (NaturalImage -> TransformationRobustness -> model up to the
target -> ChannelActivation -> Adam step) and of the bare model work it cannot avoid (forward up to the target
and backward to the input), and their ratio. Goal: ratio <= 1.15 at every depth.

The default TransformationRobustness pads by 2 pixels, so the model sees 228 x 228 inside the pipeline; after
five stride-2 stages that is 8 x 8 instead of 7 x 7 positions (+30% work in resnet18's layer4). The bare
model is therefore timed at both sizes: ``ratio`` compares the step with the bare model at the size the
model actually receives (the pipeline's own overhead), ``ratio@224`` with the bare model at 224.

Usage::

    python benchmarks/step_overhead.py [--steps 30] [--threads 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, List

import torch
import torchvision

import optim as opt
from optim.optimization.hooks import run_to_targets

TARGETS = {
    "resnet18": ["layer1", "layer3", "layer4"],
    "googlenet": ["inception3a", "inception4c", "inception5b"],
}


def build(name: str) -> torch.nn.Module:
    if name == "googlenet":
        return torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    return torchvision.models.resnet18(weights=None)


def ms_per_step(run: Callable[[int], None], steps: int, repeats: int, device: torch.device) -> float:
    """The best of ``repeats`` blocks of ``steps`` steps, in ms per step (the least disturbed block)."""
    run(3)
    blocks: List[float] = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run(steps)
        if device.type == "cuda":
            torch.cuda.synchronize()
        blocks.append((time.perf_counter() - start) * 1000 / steps)
    return min(blocks)


def bare_run(model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor) -> Callable[[int], None]:
    def run(steps: int) -> None:
        for _ in range(steps):
            x.grad = None
            act = run_to_targets(model, [layer], x)[layer]
            (-act[:, 0].mean()).backward()

    return run


def pipeline_run(model: torch.nn.Module, layer_name: str, device: torch.device) -> Callable[[int], None]:
    image = opt.images.NaturalImage((224, 224)).to(device)
    obj = opt.InputOptimization(
        model, opt.loss.ChannelActivation(layer_name, 0), image, opt.transforms.TransformationRobustness()
    )

    def run(steps: int) -> None:
        obj.optimize(opt.optimization.n_steps(steps, show_progress=False))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, best of {args.repeats} blocks of {args.steps} steps")
    print(f"{'model':<10} {'target':<12} {'bare@224':>9} {'bare@228':>9} {'step ms':>9} {'ratio':>7} {'ratio@224':>9}")
    for name, layers in TARGETS.items():
        torch.manual_seed(0)
        model = build(name).to(device).eval()
        for layer_name in layers:
            layer = opt._utils.resolve_module(model, layer_name)
            for p in model.parameters():
                p.requires_grad_(False)
            bare = {}
            for size in (224, 228):
                x = torch.rand(1, 3, size, size, device=device, requires_grad=True)
                bare[size] = ms_per_step(bare_run(model, layer, x), args.steps, args.repeats, device)
            for p in model.parameters():
                p.requires_grad_(True)
            full = ms_per_step(pipeline_run(model, layer_name, device), args.steps, args.repeats, device)
            print(
                f"{name:<10} {layer_name:<12} {bare[224]:9.2f} {bare[228]:9.2f} {full:9.2f} "
                f"{full / bare[228]:7.3f} {full / bare[224]:9.3f}"
            )


if __name__ == "__main__":
    main()
