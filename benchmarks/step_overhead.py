"""Per-step cost of a render next to the model's own forward+backward to the target, and Lucent's, in one run.

On pretrained EfficientNet-Lite0 (the zoo's, with its redirected ReLU6) at 224 px, batch 1, for an early, a
middle and a late target (``blocks.3`` / ``blocks.8`` / ``blocks.15`` by default), this prints in ms per step:

- ``bare``: the model alone, forward up to the target (stopped there) and backward to the input, parameters
  frozen (the floor no feature-visualization library can go under with the contiguous input renders feed);
- ``cl``: ``bare`` with a channels-last input (``optim.optimization.input_optimization.model_input_layout``,
  what ``InputOptimization(channels_last=True)`` feeds); ``cl/bare`` is what that layout saves;
- ``pipe``: ``bare`` plus the work every FFT render does whoever writes the loop: the default image
  (``default_image``: FFT spectrum, colour decorrelation, squash), the default transforms (one affine
  resampling) and the default optimizer (fused AdamW), in a hand-written loop with one bare hook. ``pipe / bare``
  is the cost of the parameterization and the transforms; ``optim / pipe`` the library's own (recorder, loss,
  loop, schedule);
- ``optim``: one ``InputOptimization`` step with the library's defaults (``default_image``,
  ``default_transforms``, ``ChannelActivation(target, 0)``, the default optimizer);
- ``-inplace``: the same step with the activation core's in-place protection off (``inplace_safe=False``), and
  ``protect``, what the protection costs (median of the per-round ratios, in percent);
- ``Lucent``: one step of Lucent's ``render_vis`` (its defaults: FFT image, standard transforms, Adam,
  hooks on every module, parameters not frozen), on a copy of the model. ``--no-lucent`` skips it; install
  with ``pip install --no-deps torch-lucent && pip install kornia decorator``.

All of them are timed in turns (``--rounds`` rounds of one ``--steps``-step block each, see
``_bench.interleaved_ms``): on this kind of machine the speed drifts by more than the 5% being measured, and
timing them one after another made ratios swing from 0.8 to 1.3. Times are medians over rounds; ratios are
medians of the per-round ratios with their interquartile range in brackets.

Goal (issue 11): ``optim / bare <= 1.05`` at every depth; the in-place protection adds less than 3%.
``--fold`` adds the same rows for ``opt.models.fold_batchnorm(model)``.

Usage::

    python benchmarks/step_overhead.py                            # 9 rounds of 5 steps
    python benchmarks/step_overhead.py --steps 1 --rounds 1 --layers blocks.3 --no-lucent   # smoke test
"""
from __future__ import annotations

import argparse
import copy
import statistics
from typing import Callable, Dict

import torch
import torch.nn as nn

import optim as opt
from _bench import (frozen, floor_steps, import_lucent, interleaved_ms, lucent_render, ratio_summary,
                    StopAt)


def optim_step(model: nn.Module, layer: str, size: int, device: torch.device,
               inplace_safe: bool = True) -> Callable[[int], None]:
    """``run(n)``: n steps of one InputOptimization with the library's defaults."""
    image = opt.optimization.default_image(size).to(device)
    obj = opt.InputOptimization(model, opt.loss.ChannelActivation(layer, 0), image,
                                opt.optimization.default_transforms(), seed=0, inplace_safe=inplace_safe)

    def run(steps: int) -> None:
        obj.optimize(opt.optimization.n_steps(steps, show_progress=False))

    return run


def pipeline_steps(model: nn.Module, layer: nn.Module, size: int, device: torch.device) -> Callable[[int], None]:
    """``run(n)``: n steps of the unavoidable render work, hand-written: default image -> default transforms ->
    model to ``layer`` (one bare hook, stopped there) -> channel 0's mean -> backward -> fused Adam step.

    The model must be in eval mode with frozen parameters (see :class:`_bench.frozen`).
    """
    image = opt.optimization.default_image(size).to(device)
    transforms = opt.optimization.default_transforms()
    optimizer = opt.optimization.make_optimizer(None, list(image.parameters()), opt.optimization.DEFAULT_LR)

    def run(steps: int) -> None:
        with StopAt(layer) as to_layer:
            for _ in range(steps):
                optimizer.zero_grad()
                (-to_layer(model, transforms(image()))[:, 0].mean()).backward()
                optimizer.step()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", nargs="+", default=["blocks.3", "blocks.8", "blocks.15"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=9, help="rounds of one block per candidate")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fold", action="store_true", help="also time opt.models.fold_batchnorm(model)")
    parser.add_argument("--no-lucent", action="store_true", help="skip Lucent")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = opt.models.efficientnet_lite0(pretrained=True).to(device).eval()
    models: Dict[str, nn.Module] = {"Lite0": model}
    if args.fold:
        models["Lite0 folded"] = opt.models.fold_batchnorm(model)
    lucent_note = "skipped (--no-lucent)" if args.no_lucent else import_lucent(device)
    lucent_model = copy.deepcopy(model) if lucent_note is None else None

    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, batch 1, {args.size} px, "
          f"{args.rounds} rounds of {args.steps}-step blocks in turns; median ms per step, "
          f"ratios: median [interquartile range] of the per-round ratios")
    print(f"{'model':<13} {'target':<10} {'bare':>7} {'cl':>7} {'pipe':>7} {'optim':>7} {'-inplace':>8} "
          f"{'Lucent':>7} | {'cl/bare':>21} {'optim/bare':>21} {'pipe/bare':>21} {'optim/pipe':>21} "
          f"{'protect':>8} {'Lucent/bare':>11}")
    worst = 0.0
    for label, m in models.items():
        for layer in args.layers:
            module = opt._utils.resolve_module(m, layer)
            with frozen(m):
                runs: Dict[str, Callable[[int], None]] = {
                    "bare": floor_steps(m, module, 1, args.size, [0], device),
                    "cl": floor_steps(m, module, 1, args.size, [0], device, layout=True),
                    "pipe": pipeline_steps(m, module, args.size, device),
                    "optim": optim_step(m, layer, args.size, device),
                    "-inplace": optim_step(m, layer, args.size, device, inplace_safe=False),
                }
                if lucent_model is not None and m is model:
                    runs["Lucent"] = lambda n, layer=layer: lucent_render(lucent_model, layer, [0], args.size, n, None)
                t = interleaved_ms(runs, args.steps, args.rounds, device)
            med = {name: statistics.median(v) for name, v in t.items()}
            protect = statistics.median(o / f - 1 for o, f in zip(t["optim"], t["-inplace"]))
            ratios = sorted(o / b for o, b in zip(t["optim"], t["bare"]))
            worst = max(worst, statistics.median(ratios))
            lucent = (f"{med['Lucent']:7.2f}", f"{statistics.median(a / b for a, b in zip(t['Lucent'], t['bare'])):11.2f}") \
                if "Lucent" in t else (f"{'-':>7}", f"{'-':>11}")
            print(f"{label:<13} {layer:<10} {med['bare']:7.2f} {med['cl']:7.2f} {med['pipe']:7.2f} "
                  f"{med['optim']:7.2f} {med['-inplace']:8.2f} {lucent[0]} | "
                  f"{ratio_summary(t['cl'], t['bare']):>21} {ratio_summary(t['optim'], t['bare']):>21} "
                  f"{ratio_summary(t['pipe'], t['bare']):>21} {ratio_summary(t['optim'], t['pipe']):>21} "
                  f"{100 * protect:7.1f}% {lucent[1]}", flush=True)
    if lucent_note:
        print(f"Lucent: {lucent_note}")
    print(f"worst median optim / bare: {worst:.3f}x (goal <= 1.05)")


if __name__ == "__main__":
    main()
