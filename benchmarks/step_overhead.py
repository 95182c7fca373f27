"""Per-step cost of a render next to the model's own forward+backward to the target, and Lucent's, in one run.

On pretrained EfficientNet-Lite0 (the zoo's, with its redirected ReLU6) at 224 px, batch 1, for an early, a
middle and a late target (``blocks.3`` / ``blocks.8`` / ``blocks.15`` by default), this prints in ms per step:

- ``bare``: the model alone, forward up to the target (stopped there) and backward to the input, parameters
  frozen; timed at 224 and at the size the model receives inside a render (the default transforms pad,
  224 -> 228 px);
- ``optim``: one ``InputOptimization`` step with the library's defaults (``default_image``,
  ``default_transforms``, ``ChannelActivation(target, 0)``, Adam);
- ``optim -inplace``: the same step with the activation core's in-place protection switched off, and the
  protection's cost in percent (see the marked block in ``optim_step``; "n/a" until the option exists);
- ``Lucent``: one step of Lucent's ``render_vis`` (its defaults: FFT image, standard transforms, Adam,
  hooks on every module, parameters not frozen), on a copy of the model. ``--no-lucent`` skips it; install
  with ``pip install --no-deps torch-lucent && pip install kornia decorator``.

Ratios: ``ratio`` = optim over bare at the size the model receives (the pipeline's own overhead: the
parameterization, the transforms, the hooks, the optimizer), ``@224`` = over bare at 224. Goal (issue 11):
``ratio@224 <= 1.05`` at every depth; the in-place protection adds less than 3%.
``--fold`` adds the same rows for ``opt.models.fold_batchnorm(model)``.

Usage::

    python benchmarks/step_overhead.py                          # 20 steps, best of 3 blocks
    python benchmarks/step_overhead.py --steps 2 --repeats 1    # smoke test
"""
from __future__ import annotations

import argparse
import copy
import inspect
from typing import Callable, Dict, List, Optional

import torch

import optim as opt
from _bench import best_seconds, floor_steps, frozen, import_lucent, lucent_render, ms_per_step


def optim_step(model: torch.nn.Module, layer: str, size: int, device: torch.device,
               inplace_safe: bool = True) -> Optional[Callable[[int], None]]:
    """``run(n)``: n steps of one InputOptimization with the defaults; None if the option does not exist."""
    kwargs = {}
    # --- IN-PLACE PROTECTION SWITCH (lead: activation core) ------------------------------------------------
    # The step with the protection off is timed through InputOptimization(..., inplace_safe=False), the name
    # ActivationRecorder uses. If the lead gives the option another name or another home, change only this
    # block; until it exists the "-inplace" column prints n/a.
    if not inplace_safe:
        if "inplace_safe" not in inspect.signature(opt.InputOptimization.__init__).parameters:
            return None
        kwargs["inplace_safe"] = False
    # --------------------------------------------------------------------------------------------------------
    image = opt.optimization.default_image(size).to(device)
    obj = opt.InputOptimization(model, opt.loss.ChannelActivation(layer, 0), image,
                                opt.optimization.default_transforms(), seed=0, **kwargs)

    def run(steps: int) -> None:
        obj.optimize(opt.optimization.n_steps(steps, show_progress=False))

    return run


def received_size(size: int) -> int:
    with torch.no_grad():
        return int(opt.optimization.default_transforms()(torch.rand(1, 3, size, size)).shape[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", nargs="+", default=["blocks.3", "blocks.8", "blocks.15"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many blocks")
    parser.add_argument("--lucent-steps", type=int, default=None, help="steps per Lucent block (default --steps)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fold", action="store_true", help="also time opt.models.fold_batchnorm(model)")
    parser.add_argument("--no-lucent", action="store_true", help="skip Lucent")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    seen = received_size(args.size)

    torch.manual_seed(0)
    model = opt.models.efficientnet_lite0(pretrained=True).to(device).eval()
    models: Dict[str, torch.nn.Module] = {"Lite0": model}
    if args.fold:
        models["Lite0 folded"] = opt.models.fold_batchnorm(model)
    lucent_note = None if args.no_lucent else import_lucent(device)
    lucent_model = copy.deepcopy(model) if lucent_note is None and not args.no_lucent else None

    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, batch 1, {args.size} px "
          f"(the model receives {seen} px), best of {args.repeats} blocks of {args.steps} steps; ms per step")
    print(f"{'model':<13} {'target':<10} {'bare@' + str(args.size):>9} {'bare@' + str(seen):>9} {'optim':>8} "
          f"{'ratio':>6} {'@' + str(args.size):>6} {'-inplace':>9} {'protect':>8} {'Lucent':>8} {'L@' + str(args.size):>6}")
    worst: List[float] = []
    for label, m in models.items():
        for layer in args.layers:
            module = opt._utils.resolve_module(m, layer)
            bare = {}
            with frozen(m):
                for s in (args.size, seen):
                    bare[s] = ms_per_step(floor_steps(m, module, 1, s, [0], device), args.steps, args.repeats, device)
            step = ms_per_step(optim_step(m, layer, args.size, device), args.steps, args.repeats, device)
            worst.append(step / bare[args.size])
            off_run = optim_step(m, layer, args.size, device, inplace_safe=False)
            if off_run is None:
                off_txt, protect_txt = f"{'n/a':>9}", f"{'n/a':>8}"
            else:
                off = ms_per_step(off_run, args.steps, args.repeats, device)
                off_txt, protect_txt = f"{off:9.2f}", f"{100 * (step / off - 1):7.1f}%"
            lucent_txt = f"{'-':>8} {'-':>6}"
            if lucent_model is not None and m is model:
                n = args.lucent_steps or args.steps
                lucent_render(lucent_model, layer, [0], args.size, 1, None)  # warm-up
                ms = 1000 * best_seconds(lambda: lucent_render(lucent_model, layer, [0], args.size, n, None),
                                         args.repeats, device) / n
                lucent_txt = f"{ms:8.2f} {ms / bare[args.size]:6.2f}"
            print(f"{label:<13} {layer:<10} {bare[args.size]:9.2f} {bare[seen]:9.2f} {step:8.2f} "
                  f"{step / bare[seen]:6.3f} {step / bare[args.size]:6.3f} {off_txt} {protect_txt} {lucent_txt}")
    if lucent_note:
        print(f"Lucent skipped: {lucent_note}")
    print(f"worst optim step / bare@{args.size}: {max(worst):.3f}x (goal <= 1.05)")


if __name__ == "__main__":
    main()
